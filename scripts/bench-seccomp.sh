#!/bin/bash
# Cost of the seccomp filter at container start, interleaved A/B (A B A B ...), as root:
#   scripts/bench-seccomp.sh [RUNS]   (default 60 per side)
# A: shoal-agent runtime run --rm -- /bin/true (default filter); B: the same with
# --seccomp-unconfined. Wall time of each command; median, p90, min per side.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) == 0 ]] || { echo "bench-seccomp: run as root" >&2; exit 1; }
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p shoal-agent
AGENT=$TARGET/release/shoal-agent
RUNS=${1:-60}
WORK=$(mktemp -d /tmp/shoal-bench-seccomp.XXXXXX)
D=$WORK/data
cleanup() {
    for id in $(ls "$D/containers" 2>/dev/null); do "$AGENT" runtime --data-dir "$D" rm "$id" >/dev/null 2>&1 || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
$AGENT runtime --data-dir $D image build-busybox $WORK/busybox.tar >/dev/null
$AGENT runtime --data-dir $D image import $WORK/busybox.tar >/dev/null
$AGENT runtime --data-dir $D run --image busybox:latest --rm -- grep Seccomp: /proc/self/status
$AGENT runtime --data-dir $D run --image busybox:latest --rm --seccomp-unconfined -- grep Seccomp: /proc/self/status
for i in 1 2 3; do $AGENT runtime --data-dir $D run --image busybox:latest --rm -- /bin/true >/dev/null; done
: > $WORK/a; : > $WORK/b
for i in $(seq $RUNS); do
  t0=$(date +%s%N); $AGENT runtime --data-dir $D run --image busybox:latest --rm -- /bin/true >/dev/null; t1=$(date +%s%N)
  echo $(( (t1-t0)/1000 )) >> $WORK/a
  t0=$(date +%s%N); $AGENT runtime --data-dir $D run --image busybox:latest --rm --seccomp-unconfined -- /bin/true >/dev/null; t1=$(date +%s%N)
  echo $(( (t1-t0)/1000 )) >> $WORK/b
done
stat() { sort -n $1 | awk '{a[NR]=$1} END {printf "median %.1f ms  p90 %.1f ms  min %.1f ms  n=%d\n", a[int(NR/2)+1]/1000, a[int(NR*0.9)]/1000, a[1]/1000, NR}'; }
echo "hardening on (default filter): $(stat $WORK/a)"
echo "seccomp off (--seccomp-unconfined): $(stat $WORK/b)"
uptime
