#!/usr/bin/env bash
# Pod-network throughput between two nodes: iperf3 TCP over
#   raw       - the underlay veth itself (no encryption, MTU 1500),
#   wg-go     - wireguard-go (Debian package), MTU 1420,
#   boringtun - shoal's Overlay, engine boringtun (boringtun's device, embedded;
#               crates/shoal-net/examples/wg-node.rs), MTU 1420,
#   shoal     - shoal's Overlay, engine shoal (our batched data path,
#               crates/shoal-net/src/wg/shoal/), MTU 1420,
# all in the same run, interleaved (raw, wg-go, boringtun, shoal, raw, ...) because the
# machine is shared and noisy. Each node is a fresh network namespace; the two
# are joined by a veth pair (10.98.0.1/24 - 10.98.0.2/24). Each node has a
# bridge "pods0" holding its "pod" gateway addresses: 10.244.N.1/24 for boringtun,
# 10.245.N.1/24 for wireguard-go and 10.246.N.1/24 for shoal; the other node's /24 is routed over the
# WireGuard link with that source, exactly as the agent lays it out. iperf3
# runs between those pod addresses (raw: between the underlay addresses).
#
# "udp drops": datagrams the nodes dropped for a full socket receive buffer
# (/proc/net/snmp Udp RcvbufErrors) during the run.
# CPU: "cpu%" is the whole machine's busy time during the run (100% = one
# core, so 200% is both cores of a 2-core machine); "wg cpu s" is the CPU seconds the
# WireGuard process (both nodes together) used during the run.
#
# Usage (root):  scripts/bench-net.sh [SECONDS_PER_RUN] [ROUNDS]
#   env WG_NODE=path to a built wg-node example (default: builds it in release
#   into target-bench with cargo), KEEP=1 keeps the namespaces for inspection.
# Installs iperf3 and wireguard-go with apt-get if missing.
# Traffic stays inside the two namespaces it creates.
set -euo pipefail
umask 077

DUR=${1:-10}
ROUNDS=${2:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TAG=$$
NA=shoal-bench-$TAG-a
NB=shoal-bench-$TAG-b
WORK=$(mktemp -d /tmp/shoal-bench.XXXXXX)
PIDS=()

[ "$(id -u)" = 0 ] || { echo "bench-net.sh: must run as root" >&2; exit 1; }
for tool in iperf3 wireguard-go wg; do
    if ! command -v "$tool" >/dev/null; then
        pkg=$tool; [ "$tool" = wg ] && pkg=wireguard-tools
        apt-get install -y "$pkg" >/dev/null
    fi
done

if [ -z "${WG_NODE:-}" ]; then
    (cd "$ROOT" && CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target-bench} \
        cargo build --release -q -p shoal-net --example wg-node)
    WG_NODE=${CARGO_TARGET_DIR:-$ROOT/target-bench}/release/examples/wg-node
fi

cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
    done
    if [ -z "${KEEP:-}" ]; then
        ip netns del "$NA" 2>/dev/null || true
        ip netns del "$NB" 2>/dev/null || true
    fi
    rm -f "/var/run/wireguard/wggb$TAG"a.sock "/var/run/wireguard/wggb$TAG"b.sock
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# Wait (up to 10 s) until a command succeeds.
wait_for() {
    for _ in $(seq 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "bench-net.sh: timed out waiting for: $*" >&2; return 1
}

# --- namespaces, underlay, pod bridges ------------------------------------
ip netns add "$NA"; ip netns add "$NB"
ip -n "$NA" link add ua type veth peer name ub netns "$NB"
for n in a b; do
    ns=shoal-bench-$TAG-$n; i=$([ $n = a ] && echo 1 || echo 2); dev=u$n
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add 10.98.0.$i/24 dev $dev
    ip -n "$ns" link set $dev up
    ip -n "$ns" link add pods0 type bridge
    ip -n "$ns" addr add 10.244.$i.1/24 dev pods0
    ip -n "$ns" addr add 10.245.$i.1/24 dev pods0
    ip -n "$ns" addr add 10.246.$i.1/24 dev pods0
    ip -n "$ns" link set pods0 up
done

# --- shoal Overlay (wg-node example), one pair per engine -----------------
# overlay_pair PREFIX PORT NET [ENGINE ARGS...]: interfaces PREFIX{a,b} (names are
# unique on the host: /var/run/wireguard is shared), /24s NET.1 and NET.2 routed
# over them; sets PAIR_PIDS to the two wg-node processes.
overlay_pair() {
  local prefix=$1 port=$2 net=$3; shift 3
  local a=${prefix}a b=${prefix}b
  wg genkey > "$WORK/$a.key"; wg genkey > "$WORK/$b.key"; chmod 600 "$WORK"/*.key
  local pa pb; pa=$(wg pubkey < "$WORK/$a.key"); pb=$(wg pubkey < "$WORK/$b.key")
  ip netns exec "$NA" "$WG_NODE" "$@" "$a" "$WORK/$a.key" "$port" 1420 "$pb" 10.98.0.2:"$port" "$net.2.0/24" \
      > "$WORK/$a.out" 2>&1 & PIDS+=($!); PAIR_PIDS=($!)
  ip netns exec "$NB" "$WG_NODE" "$@" "$b" "$WORK/$b.key" "$port" 1420 "$pa" 10.98.0.1:"$port" "$net.1.0/24" \
      > "$WORK/$b.out" 2>&1 & PIDS+=($!); PAIR_PIDS+=($!)
  wait_for grep -q ready "$WORK/$a.out"; wait_for grep -q ready "$WORK/$b.out"
  ip -n "$NA" route add "$net.2.0/24" dev "$a" src "$net.1.1"
  ip -n "$NB" route add "$net.1.0/24" dev "$b" src "$net.2.1"
}
BA=wgbb${TAG}a
overlay_pair "wgbb${TAG}" 51820 10.244 --engine boringtun; BORINGTUN_PIDS=("${PAIR_PIDS[@]}")
SA=wgsb${TAG}a
overlay_pair "wgsb${TAG}" 51840 10.246 --engine shoal; SHOAL_PIDS=("${PAIR_PIDS[@]}")

# --- wireguard-go, configured the same way ---------------------------------
GA=wggb${TAG}a; GB=wggb${TAG}b
wg genkey > "$WORK/ga.key"; wg genkey > "$WORK/gb.key"; chmod 600 "$WORK"/*.key
PGA=$(wg pubkey < "$WORK/ga.key"); PGB=$(wg pubkey < "$WORK/gb.key")
WGGO_PIDS=()
for n in a b; do
    ns=shoal-bench-$TAG-$n; dev=wggb${TAG}$n
    WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 ip netns exec "$ns" wireguard-go -f "$dev" \
        > "$WORK/g$n.out" 2>&1 & PIDS+=($!); WGGO_PIDS+=($!)
    wait_for test -S "/var/run/wireguard/$dev.sock"
done
ip netns exec "$NA" wg set "$GA" private-key "$WORK/ga.key" listen-port 51830 \
    peer "$PGB" endpoint 10.98.0.2:51830 allowed-ips 10.245.2.0/24
ip netns exec "$NB" wg set "$GB" private-key "$WORK/gb.key" listen-port 51830 \
    peer "$PGA" endpoint 10.98.0.1:51830 allowed-ips 10.245.1.0/24
for n in a b; do
    ns=shoal-bench-$TAG-$n; i=$([ $n = a ] && echo 1 || echo 2); o=$((3 - i))
    ip -n "$ns" link set wggb${TAG}$n mtu 1420 up
    ip -n "$ns" route add 10.245.$o.0/24 dev wggb${TAG}$n src 10.245.$i.1
done

# --- iperf3 server and connectivity ----------------------------------------
ip netns exec "$NB" iperf3 -s > "$WORK/iperf-s.out" 2>&1 & PIDS+=($!)
wait_for ip netns exec "$NA" ping -c1 -W1 10.98.0.2
wait_for ip netns exec "$NA" ping -c1 -W1 10.244.2.1
wait_for ip netns exec "$NA" ping -c1 -W1 10.245.2.1
wait_for ip netns exec "$NA" ping -c1 -W1 10.246.2.1

cpu_busy_total() { awk '/^cpu /{b=$2+$3+$4+$7+$8+$9; print b, b+$5+$6}' /proc/stat; }
proc_ticks() { local t=0 p; for p in "$@"; do
    t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo $t; }
TCK=$(getconf CLK_TCK); NCPU=$(nproc)
# UDP datagrams dropped for a full receive buffer, both nodes together.
udp_drops() { local t=0 ns; for ns in "$NA" "$NB"; do
    t=$((t + $(ip netns exec "$ns" awk '/^Udp:/{if(h){for(i=1;i<=NF;i++)if(n[i]=="RcvbufErrors")print $i}else{h=1;for(i=1;i<=NF;i++)n[i]=$i}}' /proc/net/snmp)))
    done; echo $t; }

# run NAME DEST PIDS... -> appends "NAME gbit cpu% wgcpu drops" to results
run() {
    local name=$1 dest=$2; shift 2
    local d0; d0=$(udp_drops)
    read -r b0 t0 < <(cpu_busy_total); local p0; p0=$(proc_ticks "$@")
    wait_for ip netns exec "$NB" sh -c 'ss -ltn | grep -q ":5201"'
    ip netns exec "$NA" iperf3 -c "$dest" -t "$DUR" -J > "$WORK/run.json"
    read -r b1 t1 < <(cpu_busy_total); local p1; p1=$(proc_ticks "$@")
    local gbit; gbit=$(jq '.end.sum_received.bits_per_second / 1e9' "$WORK/run.json")
    local cpu; cpu=$(awk -v b=$((b1 - b0)) -v t=$((t1 - t0)) -v n="$NCPU" 'BEGIN{printf "%.0f", 100*n*b/t}')
    local wcpu; wcpu=$(awk -v d=$((p1 - p0)) -v k="$TCK" 'BEGIN{printf "%.1f", d/k}')
    local drops=$(( $(udp_drops) - d0 ))
    printf '%-9s %8.2f %6s %8s %10s\n' "$name" "$gbit" "$cpu" "$wcpu" "$drops" | tee -a "$WORK/results"
}

echo "# $(date -u +%FT%TZ) $(uname -r) cpus=$NCPU dur=${DUR}s rounds=$ROUNDS"
printf '%-9s %8s %6s %8s %10s\n' path Gbit/s cpu% "wg cpu s" "udp drops"
for r in $(seq "$ROUNDS"); do
    run raw 10.98.0.2
    run wg-go 10.245.2.1 "${WGGO_PIDS[@]}"
    run boringtun 10.244.2.1 "${BORINGTUN_PIDS[@]}"
    run shoal 10.246.2.1 "${SHOAL_PIDS[@]}"
done

echo
echo "median over $ROUNDS rounds:"
printf '%-9s %8s %6s %8s %10s\n' path Gbit/s cpu% "wg cpu s" "udp drops"
for name in raw wg-go boringtun shoal; do
    awk -v n=$name '$1==n' "$WORK/results" | sort -k2 -n | awk -v r="$ROUNDS" '
        {g[NR]=$2; c[NR]=$3; w[NR]=$4; d[NR]=$5}
        END{m=int((NR+1)/2); printf "%-9s %8.2f %6s %8s %10s\n", $1, g[m], c[m], w[m], d[m]}'
done
# What the standard tool shows on the Overlay's interfaces.
echo
ip netns exec "$NA" wg show "$BA" | sed -n '1,12p'
echo
ip netns exec "$NA" wg show "$SA" | sed -n '1,12p'
