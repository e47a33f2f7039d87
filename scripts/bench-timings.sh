#!/usr/bin/env bash
# Latency figures that used to be upper-bound assertions in tests (they failed for load,
# not for bugs): runs the tests that report `timing: NAME MS ms (budget B ms)` lines
# (shoal_testkit::timing) N times, one after the other, and prints per figure the
# median, the worst, and how many runs were over the budget.
#
# Usage: scripts/bench-timings.sh [RUNS] [GROUP...]   (root; GROUP: controller net runtime e2e)
#        default: 3 runs of controller net runtime (e2e takes minutes per run: ask for it)
# Exit status: 0 when every median is within its budget, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
shift || true
GROUPS_=("$@")
((${#GROUPS_[@]})) || GROUPS_=(controller net runtime)
OUT=$(mktemp /tmp/shoal-bench-timings.XXXXXX)
trap 'rm -f "$OUT"' EXIT

run_group() {
  case $1 in
  controller) cargo test -q -p shoal-controller --test it -- --include-ignored --nocapture \
      network::endpoints_follow_readiness_and_scale reconcile::lost_node_is_marked ;;
  net) cargo test -q -p shoal-net --test services -- --include-ignored --nocapture ;;
  runtime) cargo test -q -p shoal-runtime --test it -- --include-ignored --nocapture supervision:: ;;
  e2e) cargo test -q -p shoal-e2e -- --include-ignored --nocapture network:: ;;
  *) echo "unknown group '$1' (controller, net, runtime, e2e)" >&2; exit 2 ;;
  esac
}

cargo build -q -p shoal-controller -p shoal-agent -p shoalctl
for ((i = 1; i <= RUNS; i++)); do
  for g in "${GROUPS_[@]}"; do
    echo "run $i/$RUNS: $g" >&2
    if ! run_group "$g" >"$OUT.log" 2>&1; then
      echo "run $i/$RUNS: tests of $g failed; output in $OUT.log" >&2
      trap - EXIT
      exit 1
    fi
    grep -oE 'timing: [a-z0-9_]+ [0-9]+ ms \(budget [0-9]+ ms\)' "$OUT.log" >>"$OUT" || true
  done
done
rm -f "$OUT.log"

# name value budget -> name n median worst over
awk '{ name=$2; v[name]=v[name] " " $3; b[name]=$6; n[name]++ }
     END { for (k in v) print k, b[k], v[k] }' "$OUT" | sort | {
  printf '%-40s %5s %10s %10s %10s %6s\n' figure runs median_ms worst_ms budget_ms over
  rc=0
  while read -r name budget values; do
    # shellcheck disable=SC2086
    sorted=$(printf '%s\n' $values | sort -n)
    count=$(wc -l <<<"$sorted")
    median=$(sed -n "$(((count + 1) / 2))p" <<<"$sorted")
    worst=$(tail -1 <<<"$sorted")
    over=$(awk -v b="$budget" '$1 > b' <<<"$sorted" | wc -l)
    printf '%-40s %5s %10s %10s %10s %6s\n' "$name" "$count" "$median" "$worst" "$budget" "$over"
    ((median <= budget)) || rc=1
  done
  exit $rc
}
