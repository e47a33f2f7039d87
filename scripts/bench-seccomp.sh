#!/bin/bash
# Cost of the seccomp filter at container start, interleaved A/B (A B A B ...), as root:
#   scripts/bench-seccomp.sh [RUNS]   (default 60 per side)
# A: shoal-agent runtime run --rm -- /bin/true (default filter); B: the same with
# --seccomp-unconfined. Wall time of each command; median, p90, min per side.
# With OLD_AGENT=PATH (a shoal-agent built from an older commit, e.g. c350f1d, the last one
# before the container hardening) a third side C runs the same command with that binary
# (its own data directory), interleaved A B C A B C …: the cost of all of the hardening
# (mount plan with masked and read-only paths, seccomp, capabilities, device rules, sealed
# helper copy), not only of the filter.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) == 0 ]] || { echo "bench-seccomp: run as root" >&2; exit 1; }
TARGET=${CARGO_TARGET_DIR:-target}
[[ -n "${SKIP_BUILD:-}" ]] || cargo build --release -q -p shoal-agent
AGENT=$TARGET/release/shoal-agent
OLD=${OLD_AGENT:-}
RUNS=${1:-60}
WORK=$(mktemp -d /tmp/shoal-bench-seccomp.XXXXXX)
D=$WORK/data
OD=$WORK/old
cleanup() {
    for id in $(ls "$D/containers" 2>/dev/null); do "$AGENT" runtime --data-dir "$D" rm "$id" >/dev/null 2>&1 || true; done
    if [[ -n $OLD ]]; then
        for id in $(ls "$OD/containers" 2>/dev/null); do "$OLD" runtime --data-dir "$OD" rm "$id" >/dev/null 2>&1 || true; done
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
echo "# machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), binaries $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . || echo +changes)${OLD:+, old agent $OLD}"
$AGENT runtime --data-dir $D image build-busybox $WORK/busybox.tar >/dev/null
$AGENT runtime --data-dir $D image import $WORK/busybox.tar >/dev/null
$AGENT runtime --data-dir $D run --image busybox:latest --rm -- grep Seccomp: /proc/self/status
$AGENT runtime --data-dir $D run --image busybox:latest --rm --seccomp-unconfined -- grep Seccomp: /proc/self/status
for i in 1 2 3; do $AGENT runtime --data-dir $D run --image busybox:latest --rm -- /bin/true >/dev/null; done
if [[ -n $OLD ]]; then
  "$OLD" runtime --data-dir "$OD" image import $WORK/busybox.tar >/dev/null
  "$OLD" runtime --data-dir "$OD" run --image busybox:latest --rm -- grep Seccomp: /proc/self/status
  for i in 1 2 3; do "$OLD" runtime --data-dir "$OD" run --image busybox:latest --rm -- /bin/true >/dev/null; done
fi
: > $WORK/a; : > $WORK/b; : > $WORK/c
for i in $(seq $RUNS); do
  t0=$(date +%s%N); $AGENT runtime --data-dir $D run --image busybox:latest --rm -- /bin/true >/dev/null; t1=$(date +%s%N)
  echo $(( (t1-t0)/1000 )) >> $WORK/a
  t0=$(date +%s%N); $AGENT runtime --data-dir $D run --image busybox:latest --rm --seccomp-unconfined -- /bin/true >/dev/null; t1=$(date +%s%N)
  echo $(( (t1-t0)/1000 )) >> $WORK/b
  if [[ -n $OLD ]]; then
    t0=$(date +%s%N); "$OLD" runtime --data-dir "$OD" run --image busybox:latest --rm -- /bin/true >/dev/null; t1=$(date +%s%N)
    echo $(( (t1-t0)/1000 )) >> $WORK/c
  fi
done
stat() { sort -n $1 | awk '{a[NR]=$1} END {printf "median %.1f ms  p90 %.1f ms  min %.1f ms  n=%d\n", a[int(NR/2)+1]/1000, a[int(NR*0.9)]/1000, a[1]/1000, NR}'; }
echo "hardening on (default filter): $(stat $WORK/a)"
echo "seccomp off (--seccomp-unconfined): $(stat $WORK/b)"
[[ -z $OLD ]] || echo "older agent ($OLD): $(stat $WORK/c)"
uptime
