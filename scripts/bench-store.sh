#!/usr/bin/env bash
# Store benchmark: create throughput/latency of a 3-member Shoal controller
# cluster vs a 3-member etcd 3.4 cluster (Debian etcd-server) on loopback, in the
# same run, interleaved; then leader failover time (median of 10).
# Usage: scripts/bench-store.sh [OPS]   (run as root on an otherwise idle machine)
set -euo pipefail
cd "$(dirname "$0")/.."
OPS=${1:-3000}
scripts/setup.sh test >/dev/null
[[ -n "${SKIP_BUILD:-}" ]] || cargo build --release -p shoal-controller -p shoalctl -p shoal-bench
BIN=${CARGO_TARGET_DIR:-target}/release
WORK=$(mktemp -d /tmp/shoal-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

SH=(127.0.0.1:17101 127.0.0.1:17102 127.0.0.1:17103)
# Controller 1 forms the cluster; 2 and 3 start with --join and are added one by one.
for i in 1 2 3; do
  JOIN=()
  [[ $i == 1 ]] || JOIN=(--join "${SH[0]}")
  "$BIN/shoal-controller" --id $i --listen "${SH[$((i-1))]}" --data-dir "$WORK/s$i" \
    "${JOIN[@]}" >"$WORK/s$i.log" 2>&1 &
  PIDS+=($!)
  if [[ $i != 1 ]]; then
    for _ in $(seq 100); do
      "$BIN/shoalctl" --server "${SH[0]}" cluster add-member "$i=${SH[$((i-1))]}" >/dev/null 2>&1 && break
      sleep 0.2
    done
  fi
done
CLUSTER="e1=http://127.0.0.1:17201,e2=http://127.0.0.1:17202,e3=http://127.0.0.1:17203"
for i in 1 2 3; do
  etcd --name e$i --data-dir "$WORK/e$i" \
    --listen-client-urls http://127.0.0.1:1730$i --advertise-client-urls http://127.0.0.1:1730$i \
    --listen-peer-urls http://127.0.0.1:1720$i --initial-advertise-peer-urls http://127.0.0.1:1720$i \
    --initial-cluster "$CLUSTER" --initial-cluster-state new --initial-cluster-token shoal-bench \
    >"$WORK/e$i.log" 2>&1 &
  PIDS+=($!)
done
sleep 3
SHOAL_EPS=$(IFS=,; echo "${SH[*]}")
ETCD_EPS=127.0.0.1:17301,127.0.0.1:17302,127.0.0.1:17303
# warm-up both
"$BIN/shoal-bench" store --target shoal --endpoints "$SHOAL_EPS" --clients 4 --ops 200 --tag warm >/dev/null
"$BIN/shoal-bench" store --target etcd --endpoints "$ETCD_EPS" --clients 4 --ops 200 --tag warm >/dev/null
for round in 1 2; do
  for c in 1 64; do
    "$BIN/shoal-bench" store --target shoal --endpoints "$SHOAL_EPS" --clients $c --ops "$OPS" --tag "r$round-c$c"
    "$BIN/shoal-bench" store --target etcd --endpoints "$ETCD_EPS" --clients $c --ops "$OPS" --tag "r$round-c$c"
  done
done
echo "# failover (separate 3-member cluster)"
"$BIN/shoal-bench" failover --controller-bin "$BIN/shoal-controller" --runs 10
