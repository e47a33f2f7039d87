#!/usr/bin/env bash
# stress-ci: runs the whole test suite (what scripts/test.sh runs) N times in a
# row, with a CPU hog beside it on every other run (busy loops, one per core,
# at normal priority), and prints each failure with its output (tests that use
# randomness print their seed there) and where the full log is.
#
#   scripts/stress-ci.sh [-n N] [--logs DIR] [--hog-first]
#     -n N         runs (default 5)
#     --logs DIR   keep each run's output in DIR/run-I.log (default: a new /var/tmp/shoal-stress.XXXXXX)
#     --hog-first  put the hog beside runs 1, 3, 5… instead of 2, 4, …
# Exits 0 only if every run passed. Run as root (the suite needs it).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=5 LOGS= HOG_PARITY=0
while (($#)); do
    case "$1" in
        -n) RUNS=${2:?-n needs a number}; shift ;;
        --logs) LOGS=${2:?--logs needs a directory}; shift ;;
        --hog-first) HOG_PARITY=1 ;;
        -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "stress-ci: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "stress-ci: -n '$RUNS': expected a positive integer" >&2; exit 2; }
if [[ -z $LOGS ]]; then LOGS=$(mktemp -d /var/tmp/shoal-stress.XXXXXX); else mkdir -p "$LOGS"; fi

HOG_PIDS=()
stop_hog() {
    ((${#HOG_PIDS[@]})) || return 0
    kill "${HOG_PIDS[@]}" 2>/dev/null || true
    wait "${HOG_PIDS[@]}" 2>/dev/null || true
    HOG_PIDS=()
}
trap stop_hog EXIT
start_hog() {
    local i
    for i in $(seq "$(nproc)"); do
        bash -c 'while :; do :; done' &
        HOG_PIDS+=($!)
    done
}

# The failing tests of a run, and each one's captured output.
report_failures() {
    local log=$1
    grep -E '^test .* \.\.\. FAILED$' "$log" | sed -E 's/^test (.*) \.\.\. FAILED$/\1/' | sort -u
}
print_outputs() {
    local log=$1
    # libtest prints "---- NAME stdout ----" then the output, up to the next such header or "failures:".
    awk '/^---- .* stdout ----$/ {on=1} /^failures:$/ {on=0} on {print "    " $0}' "$log"
    grep -E '^error: (test failed|[0-9]+ targets? failed)' "$log" | sed 's/^/    /' || true
}

scripts/setup.sh test
cargo build --workspace --all-targets

declare -a SUMMARY=()
failed_runs=0
for run in $(seq "$RUNS"); do
    hog=no
    if (((run + HOG_PARITY) % 2 == 0)); then hog=yes; start_hog; fi
    log=$LOGS/run-$run.log
    start=$(date +%s)
    echo "stress-ci: run $run/$RUNS (cpu hog: $hog), log $log"
    rc=0
    cargo test --workspace --no-fail-fast -- --include-ignored >"$log" 2>&1 || rc=$?
    took=$(($(date +%s) - start))
    stop_hog
    passed=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
    mapfile -t failures < <(report_failures "$log")
    if ((rc != 0 || ${#failures[@]})); then
        failed_runs=$((failed_runs + 1))
        SUMMARY+=("run $run  hog $hog  ${took}s  $passed passed  FAILED: ${failures[*]:-(cargo exit $rc, see log)}")
        echo "stress-ci: run $run FAILED (exit $rc): ${failures[*]:-see $log}"
        print_outputs "$log"
    else
        SUMMARY+=("run $run  hog $hog  ${took}s  $passed passed  ok")
        echo "stress-ci: run $run ok in ${took}s ($passed tests passed)"
    fi
done

echo
echo "stress-ci: $RUNS run(s), $failed_runs failed; logs in $LOGS"
printf '  %s\n' "${SUMMARY[@]}"
((failed_runs == 0))
