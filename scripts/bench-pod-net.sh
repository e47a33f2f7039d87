#!/usr/bin/env bash
# Pod-to-pod TCP throughput on a real Shoal cluster: deploy/netns-cluster with
# 1 controller and 2 agents (release binaries), one pod pinned on each node,
# iperf3 (the host's binary) run inside the two pods' network namespaces, so
# traffic takes the real path: pod veth → bridge → the agent's WireGuard
# overlay → underlay → the other node's overlay → bridge → pod. Beside it, in
# the same run and interleaved: iperf3 between the two nodes' underlay
# addresses (raw veth, no encryption). wireguard-go and the bare overlay are
# measured by scripts/bench-net.sh (run it right after for the same load).
#
# "agent cpu s": CPU seconds both agents (which carry the userspace
# WireGuard) used during the run; "cpu%": whole machine busy (100% = one core).
#
# Usage (root): scripts/bench-pod-net.sh [SECONDS_PER_RUN] [ROUNDS]
#   env BIN=dir with release shoal-controller/shoal-agent/shoalctl (default:
#   cargo build --release into target-bench).
set -euo pipefail
DUR=${1:-10}
ROUNDS=${2:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NAME=podbench
[ "$(id -u)" = 0 ] || { echo "bench-pod-net.sh: must run as root" >&2; exit 1; }
command -v iperf3 >/dev/null || apt-get install -y iperf3 >/dev/null
if [ -z "${BIN:-}" ]; then
    (cd "$ROOT" && CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target-bench} \
        cargo build --release -q -p shoal-controller -p shoal-agent -p shoalctl)
    BIN=${CARGO_TARGET_DIR:-$ROOT/target-bench}/release
fi
NC="$ROOT/deploy/netns-cluster --name $NAME --bin-dir $BIN"
SERVERS=()
cleanup() {
    for p in "${SERVERS[@]}"; do kill "$p" 2>/dev/null || true; done
    $NC down >/dev/null 2>&1 || true
    rm -f "${IMG:-}"
}
trap cleanup EXIT
$NC down >/dev/null 2>&1 || true
eval "$($NC up --controllers 1 --agents 2 | grep '^export')"
export SHOAL_SERVER
CTL="$BIN/shoalctl"
IMG=$(mktemp /tmp/podbench.XXXXXX.tar)
"$BIN/shoal-agent" runtime image build-busybox "$IMG" --name busybox:latest >/dev/null
"$CTL" image import "$IMG" >/dev/null
for i in 1 2; do
    printf 'apiVersion: v1\nkind: Pod\nmetadata: {name: p%s}\nspec:\n  nodeSelector: {node: node%s}\n  containers:\n  - {name: a, image: busybox:latest, command: [sleep, "100000"]}\n' "$i" "$i"
    echo ---
done | "$CTL" apply -f - >/dev/null
ip_of() { "$CTL" get pod "$1" -o json | python3 -c 'import json,sys; print(json.load(sys.stdin).get("status",{}).get("podIP",""))'; }
uid_of() { "$CTL" get pod "$1" -o json | python3 -c 'import json,sys; u=json.load(sys.stdin)["metadata"]["uid"]; print("p"+"".join(c for c in u if c.isalnum())[:16])'; }
for _ in $(seq 120); do
    [ -n "$(ip_of p1)" ] && [ -n "$(ip_of p2)" ] && break
    sleep 0.5
done
P1=$(ip_of p1); P2=$(ip_of p2)
[ -n "$P1" ] && [ -n "$P2" ] || { echo "pods got no IP" >&2; exit 1; }
NS1=/run/shoal-netns/$NAME/n1/data/pods/$(uid_of p1)/netns
NS2=/run/shoal-netns/$NAME/n2/data/pods/$(uid_of p2)/netns
U1=$(ip -n "shoal-$NAME-n1" -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1)
U2=$(ip -n "shoal-$NAME-n2" -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1)
nsenter --net="$NS2" iperf3 -s -p 5201 >/dev/null 2>&1 &
SERVERS+=($!)
ip netns exec "shoal-$NAME-n2" iperf3 -s -p 5202 >/dev/null 2>&1 &
SERVERS+=($!)
sleep 1
# Warm up the overlay (handshake).
nsenter --net="$NS1" ping -c 3 -W 2 "$P2" >/dev/null || { echo "pods cannot reach each other" >&2; exit 1; }
A1=$(awk '{print $1}' "/run/shoal-netns/$NAME/n1/pid"); A2=$(awk '{print $1}' "/run/shoal-netns/$NAME/n2/pid")
busy() { awk '/^cpu /{b=$2+$3+$4+$7+$8+$9; print b, b+$5+$6}' /proc/stat; }
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
run() { # label, command...
    local label=$1; shift
    read -r b0 t0 < <(busy); local a0=$(( $(ticks "$A1") + $(ticks "$A2") ))
    local out gbit
    out=$("$@" -t "$DUR" -J 2>/dev/null) || { echo "$label: iperf3 failed" >&2; return; }
    read -r b1 t1 < <(busy); local a1=$(( $(ticks "$A1") + $(ticks "$A2") ))
    gbit=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print("%.2f" % (d["end"]["sum_received"]["bits_per_second"]/1e9))' "$out")
    printf '%-22s %8s Gbit/s   cpu %4d%%   agent cpu s %6.1f\n' "$label" "$gbit" \
        $(( (b1 - b0) * 100 * $(nproc) / (t1 - t0 + 1) )) "$(python3 -c "print(($a1-$a0)/$HZ)")"
}
echo "pod $P1 (node1) -> pod $P2 (node2); underlay $U1 -> $U2; ${DUR}s x $ROUNDS rounds"
for r in $(seq "$ROUNDS"); do
    run "raw underlay veth" ip netns exec "shoal-$NAME-n1" iperf3 -c "$U2" -p 5202
    run "pod-to-pod (overlay)" nsenter --net="$NS1" iperf3 -c "$P2" -p 5201
done
