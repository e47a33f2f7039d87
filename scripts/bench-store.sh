#!/usr/bin/env bash
# Store benchmark: create throughput/latency of a 3-member Shoal controller cluster vs two
# 3-member etcd 3.4 clusters (Debian etcd-server), one in plain text and one with client and
# peer mutual TLS, all on loopback, in the same run, interleaved (shoal, etcd, etcd-tls, …),
# with 1, 16 and 64 clients (CLIENTS="1 64" to choose); etcd writes put-if-absent
# transactions, as a Create is (ETCD_PUT=1: plain puts, as before 2026-12-06); then leader
# failover time (30 runs).
# Shoal is formed as a user forms it: member 1 makes the cluster CA and admin.conf, members
# 2 and 3 join with a controller join token from `shoalctl token create` and are added with
# `shoalctl cluster add-member`; the load generator reads admin.conf (SHOAL_CONFIG).
# Usage: scripts/bench-store.sh [OPS]   (run as root on an otherwise idle machine)
# FAILOVER_RUNS=N: failover runs (default 30; 0 skips the failover).
# Everything it starts (processes, by PID; its temp directory) is removed on exit, also on
# failure or SIGINT/SIGTERM. Traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
OPS=${1:-3000}
scripts/setup.sh test >/dev/null
command -v openssl >/dev/null || { echo "bench-store: needs openssl (apt-get install openssl)" >&2; exit 1; }
[[ -n "${SKIP_BUILD:-}" ]] || cargo build --release -p shoal-controller -p shoalctl -p shoal-bench
BIN=${CARGO_TARGET_DIR:-target}/release
WORK=$(mktemp -d /tmp/shoal-bench-store.XXXXXX)
PIDS=()
BENCH=   # the shoal-bench process running now (it stops its own controllers on SIGTERM)
cleanup() {
  set +e
  if [[ -n $BENCH ]]; then kill -TERM "$BENCH" 2>/dev/null; wait "$BENCH" 2>/dev/null; fi
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { echo "bench-store: $*" >&2; }
# Runs shoal-bench in the background and waits for it, so that a signal to this script
# reaches the trap at once (bash defers traps while a foreground command runs).
bench() { "$BIN/shoal-bench" "$@" & BENCH=$!; wait "$BENCH"; BENCH=; }
# retry SECONDS DESCRIPTION COMMAND...: until COMMAND succeeds; its last output on failure.
retry() {
  local secs=$1 what=$2 out; shift 2
  local end=$((SECONDS + secs))
  until out=$("$@" 2>&1); do
    ((SECONDS < end)) || { say "gave up after ${secs}s: $what: $out"; return 1; }
    sleep 0.2
  done
  printf '%s' "$out"
}
for port in 17101 17102 17103 17201 17202 17203 17211 17212 17213 17301 17302 17303 17311 17312 17313; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then say "port $port is in use"; exit 1; fi
done

# --- Shoal: 3 controllers, mutual TLS, joined with tokens -------------------------------
SH=(127.0.0.1:17101 127.0.0.1:17102 127.0.0.1:17103)
export SHOAL_CONFIG=$WORK/s1/admin.conf
for i in 1 2 3; do
  JOIN=()
  if [[ $i != 1 ]]; then
    out=$(retry 30 "controller join token" "$BIN/shoalctl" --server "${SH[0]}" token create \
      --usage controller --uses 1 --ttl 1h --description "bench-store controller $i")
    TOKEN=$(awk '/^token:/ {print $2}' <<<"$out")
    CA_HASH=$(awk '/^ca-hash:/ {print $2}' <<<"$out")
    [[ -n $TOKEN && -n $CA_HASH ]] || { say "unexpected token output: $out"; exit 1; }
    JOIN=(--join "${SH[0]}" --join-token "$TOKEN" --ca-hash "$CA_HASH")
  fi
  "$BIN/shoal-controller" --id $i --listen "${SH[$((i-1))]}" --registry-listen none --metrics-listen none --data-dir "$WORK/s$i" \
    "${JOIN[@]}" >"$WORK/s$i.log" 2>&1 &
  PIDS+=($!)
  if [[ $i == 1 ]]; then
    retry 30 "controller 1 to write $SHOAL_CONFIG" test -s "$SHOAL_CONFIG" >/dev/null
  else
    retry 60 "adding controller $i" "$BIN/shoalctl" --server "${SH[0]}" cluster add-member "$i=${SH[$((i-1))]}" >/dev/null
  fi
done

# --- etcd: certificates (openssl) for the TLS cluster -----------------------------------
PKI=$WORK/etcd-pki
mkdir -p "$PKI"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=bench-etcd-ca -keyout "$PKI/ca.key" -out "$PKI/ca.crt" 2>/dev/null
# cert NAME EXTENDED-USAGE: a P-256 key and a certificate for 127.0.0.1 signed by the CA.
cert() {
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$1" \
    -keyout "$PKI/$1.key" -out "$PKI/$1.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=%s\nkeyUsage=digitalSignature,keyEncipherment\n' "$2" >"$PKI/$1.ext"
  openssl x509 -req -in "$PKI/$1.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 2 -extfile "$PKI/$1.ext" -out "$PKI/$1.crt" 2>/dev/null
}
for i in 1 2 3; do cert "e$i" serverAuth,clientAuth; done   # members serve and dial peers
cert client clientAuth

# --- etcd: plain (ports 1730x/1720x) and TLS (1731x/1721x) --------------------------------
PLAIN="e1=http://127.0.0.1:17201,e2=http://127.0.0.1:17202,e3=http://127.0.0.1:17203"
TLS="t1=https://127.0.0.1:17211,t2=https://127.0.0.1:17212,t3=https://127.0.0.1:17213"
for i in 1 2 3; do
  etcd --name e$i --data-dir "$WORK/e$i" \
    --listen-client-urls http://127.0.0.1:1730$i --advertise-client-urls http://127.0.0.1:1730$i \
    --listen-peer-urls http://127.0.0.1:1720$i --initial-advertise-peer-urls http://127.0.0.1:1720$i \
    --initial-cluster "$PLAIN" --initial-cluster-state new --initial-cluster-token shoal-bench \
    >"$WORK/e$i.log" 2>&1 &
  PIDS+=($!)
  etcd --name t$i --data-dir "$WORK/t$i" \
    --listen-client-urls https://127.0.0.1:1731$i --advertise-client-urls https://127.0.0.1:1731$i \
    --listen-peer-urls https://127.0.0.1:1721$i --initial-advertise-peer-urls https://127.0.0.1:1721$i \
    --initial-cluster "$TLS" --initial-cluster-state new --initial-cluster-token shoal-bench-tls \
    --cert-file "$PKI/e$i.crt" --key-file "$PKI/e$i.key" --trusted-ca-file "$PKI/ca.crt" --client-cert-auth \
    --peer-cert-file "$PKI/e$i.crt" --peer-key-file "$PKI/e$i.key" --peer-trusted-ca-file "$PKI/ca.crt" --peer-client-cert-auth \
    >"$WORK/t$i.log" 2>&1 &
  PIDS+=($!)
done

SHOAL_EPS=$(IFS=,; echo "${SH[*]}")
ETCD_EPS=127.0.0.1:17301,127.0.0.1:17302,127.0.0.1:17303
ETCD_TLS_EPS=127.0.0.1:17311,127.0.0.1:17312,127.0.0.1:17313
ETCD_TLS=(--cacert "$PKI/ca.crt" --cert "$PKI/client.crt" --key "$PKI/client.key")
# Warm-up of all three (also waits until each cluster takes writes).
retry 60 "Shoal to take writes" "$BIN/shoal-bench" store --target shoal --endpoints "$SHOAL_EPS" --clients 4 --ops 200 --tag warm >/dev/null
retry 60 "etcd to take writes" "$BIN/shoal-bench" store --target etcd --endpoints "$ETCD_EPS" --clients 4 --ops 200 --tag warm >/dev/null
retry 60 "etcd (TLS) to take writes" "$BIN/shoal-bench" store --target etcd --endpoints "$ETCD_TLS_EPS" "${ETCD_TLS[@]}" --clients 4 --ops 200 --tag warm >/dev/null

echo "# machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), $(etcd --version | head -1), binaries $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . || echo +changes)"
ETCD_OP=()
[[ -z "${ETCD_PUT:-}" ]] || ETCD_OP=(--etcd-put)
for round in 1 2; do
  for c in ${CLIENTS:-1 16 64}; do
    echo "# round $round, $c clients; load average $(cut -d' ' -f1-3 /proc/loadavg)"
    bench store --target shoal --endpoints "$SHOAL_EPS" --clients $c --ops "$OPS" --tag "r$round-c$c"
    bench store --target etcd --endpoints "$ETCD_EPS" "${ETCD_OP[@]}" --clients $c --ops "$OPS" --tag "r$round-c$c"
    bench store --target etcd --endpoints "$ETCD_TLS_EPS" "${ETCD_TLS[@]}" "${ETCD_OP[@]}" --clients $c --ops "$OPS" --tag "r$round-c$c"
  done
done
echo "# load average after the store rounds: $(cut -d' ' -f1-3 /proc/loadavg)"
# The store clusters are not needed for the failover: stop them first (by PID).
for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
PIDS=()
if [[ ${FAILOVER_RUNS:-30} != 0 ]]; then
  echo "# failover (separate 3-member cluster, joined with tokens)"
  bench failover --controller-bin "$BIN/shoal-controller" --runs "${FAILOVER_RUNS:-30}"
fi
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
