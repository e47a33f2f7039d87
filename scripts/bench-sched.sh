#!/usr/bin/env bash
# Scheduler end to end (docs/benchmarks.md "Scheduler end to end"): forms a fresh 3-member
# controller cluster (mutual TLS, members 2 and 3 joined with tokens), runs
# `shoal-bench sched` against it with the given arguments, prints its JSON line and the
# load average before and after and each member's resident memory at the end, and removes
# everything it started.
# Usage: scripts/bench-sched.sh [shoal-bench sched args…]
#   e.g. scripts/bench-sched.sh --nodes 1000 --pods 10000 --batch 100 --clients 8
# SKIP_BUILD=1 uses the binaries as they are; CTL=PATH another shoalctl; LEADER_ONLY=1 sends
# every request to member 1 (the first leader), so no write is forwarded.
# CONTROLLER_ARGS="--flag=value ..." adds flags to every controller (e.g. longer election
# timeouts for a heap profile, which slows member 1).
# SETTLE_SECS=N prints the members' resident memory again after N idle seconds.
# HEAP_PROFILE=DIR runs member 1 (the first leader) under heaptrack and leaves its profile in
# DIR (build the controller with `--features system-allocator` first: heaptrack hooks malloc,
# not jemalloc); read it with `heaptrack_print -f DIR/heaptrack.*.zst`. Member 1 is killed
# after the run (and SETTLE_SECS), so the profile's "leaked" memory is what it held then.
# Processes are stopped by PID and the temp directory removed on exit, also on failure.
# Traffic stays on 127.0.0.1 (ports 17401-17403).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -n "${SKIP_BUILD:-}" ]] || cargo build --release -p shoal-controller -p shoalctl -p shoal-bench
BIN=${CARGO_TARGET_DIR:-target}/release
CTL=${CTL:-$BIN/shoalctl}
WORK=$(mktemp -d /tmp/shoal-bench-sched.XXXXXX)
PIDS=()
BENCH=
cleanup() {
  set +e
  if [[ -n $BENCH ]]; then kill -TERM "$BENCH" 2>/dev/null; wait "$BENCH" 2>/dev/null; fi
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
say() { echo "bench-sched: $*" >&2; }
retry() {
  local secs=$1 what=$2 out; shift 2
  local end=$((SECONDS + secs))
  until out=$("$@" 2>&1); do
    ((SECONDS < end)) || { say "gave up after ${secs}s: $what: $out"; return 1; }
    sleep 0.2
  done
  printf '%s' "$out"
}
SH=(127.0.0.1:17401 127.0.0.1:17402 127.0.0.1:17403)
for a in "${SH[@]}"; do
  if (exec 3<>"/dev/tcp/$a") 2>/dev/null; then say "$a is in use"; exit 1; fi
done
export SHOAL_CONFIG=$WORK/s1/admin.conf
for i in 1 2 3; do
  JOIN=()
  if [[ $i != 1 ]]; then
    out=$(retry 30 "controller join token" "$CTL" --server "${SH[0]}" token create \
      --usage controller --uses 1 --ttl 1h --description "bench-sched controller $i")
    TOKEN=$(awk '/^token:/ {print $2}' <<<"$out")
    CA_HASH=$(awk '/^ca-hash:/ {print $2}' <<<"$out")
    JOIN=(--join "${SH[0]}" --join-token "$TOKEN" --ca-hash "$CA_HASH")
  fi
  WRAP=()
  if [[ $i == 1 && -n "${HEAP_PROFILE:-}" ]]; then
    mkdir -p "$HEAP_PROFILE"; WRAP=(heaptrack -o "$HEAP_PROFILE/heaptrack.leader")
  fi
  "${WRAP[@]}" "$BIN/shoal-controller" --id $i --listen "${SH[$((i-1))]}" --registry-listen none \
    --metrics-listen none --data-dir "$WORK/s$i" --node-timeout 600 \
    "${JOIN[@]}" ${CONTROLLER_ARGS:-} >"$WORK/s$i.log" 2>&1 &
  PIDS+=($!)
  if [[ $i == 1 ]]; then
    retry 30 "controller 1 to write $SHOAL_CONFIG" test -s "$SHOAL_CONFIG" >/dev/null
  else
    retry 60 "adding controller $i" "$CTL" --server "${SH[0]}" cluster add-member "$i=${SH[$((i-1))]}" >/dev/null
  fi
done
say "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
E=$(IFS=,; echo "${SH[*]}")
# LEADER_ONLY=1: every client talks to member 1 (the first leader): no forwarded writes.
[[ -z "${LEADER_ONLY:-}" ]] || E=${SH[0]}
"$BIN/shoal-bench" sched --endpoints "$E" "$@" & BENCH=$!
wait "$BENCH"; BENCH=
say "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
# Resident memory of each member with everything still stored (the memory target of issue 12).
rss() {
  for i in 1 2 3; do
    pid=${PIDS[$((i-1))]}
    # under heaptrack the controller is the wrapper script's child
    [[ $i != 1 || -z "${HEAP_PROFILE:-}" ]] || pid=$(pgrep -P "$pid" -f shoal-controller | head -1)
    say "controller $i$1: $(awk '/^VmRSS/ {printf "%.1f MB", $2/1024}' "/proc/$pid/status")"
  done
}
rss ""
# SETTLE_SECS=N: again after N idle seconds (jemalloc returns freed pages after ≈10 s).
if [[ -n "${SETTLE_SECS:-}" ]]; then
  sleep "$SETTLE_SECS"
  rss " after ${SETTLE_SECS} s idle"
fi
if [[ -n "${HEAP_PROFILE:-}" ]]; then
  # SIGKILL, not SIGTERM: nothing is freed on the way out, so heaptrack's "leaked" is what
  # member 1 held at this moment (heaptrack_print --print-leaks 1, or -F with
  # --flamegraph-cost-type leaked); heaptrack still finishes its file.
  kill -KILL "$(pgrep -P "${PIDS[0]}" -f shoal-controller | head -1)" 2>/dev/null || true
  timeout 60 tail --pid="${PIDS[0]}" -f /dev/null || say "heaptrack did not finish in 60 s"
  say "heap profile: $(ls "$HEAP_PROFILE"/heaptrack.leader*)"
fi
