#!/usr/bin/env bash
# Same-run A/B of the store's create path: this tree's release binaries (every connection
# mutual TLS, members joined with tokens) against release binaries of an older commit given
# as OLD_BIN (e.g. 51a6319, the last commit before access control, whose controllers speak
# plain gRPC and join with --join alone), both 3-member clusters on loopback, running side by
# side, measured interleaved with the order alternating per round (new, old; old, new; …).
# Each side is driven by its own shoal-bench (the old one speaks plain gRPC, the new one
# reads admin.conf): no insecure path is added to anything here.
# Usage: OLD_BIN=DIR scripts/bench-store-ab.sh [OPS] [ROUNDS]
#   DIR holds shoal-controller, shoalctl and shoal-bench built from the older commit, e.g.
#   git archive 51a6319 | tar -x -C /tmp/old && (cd /tmp/old && cargo build --release \
#     -p shoal-controller -p shoalctl -p shoal-bench)
# Everything it starts (processes by PID, its temp directory) is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
OPS=${1:-1500}
ROUNDS=${2:-3}
OLD=$(realpath "${OLD_BIN:?set OLD_BIN to a directory of older release binaries}")
[[ -n "${SKIP_BUILD:-}" ]] || cargo build --release -p shoal-controller -p shoalctl -p shoal-bench
NEW=$(realpath "${CARGO_TARGET_DIR:-target}/release")
WORK=$(mktemp -d /tmp/shoal-bench-store-ab.XXXXXX)
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

say() { echo "bench-store-ab: $*" >&2; }
bench() { "$@" & BENCH=$!; wait "$BENCH"; BENCH=; }
retry() { # retry SECONDS DESCRIPTION COMMAND...
  local secs=$1 what=$2 out; shift 2
  local end=$((SECONDS + secs))
  until out=$("$@" 2>&1); do
    ((SECONDS < end)) || { say "gave up after ${secs}s: $what: $out"; return 1; }
    sleep 0.2
  done
  printf '%s' "$out"
}
for port in 17401 17402 17403 17421 17422 17423; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then say "port $port is in use"; exit 1; fi
done

# New: member 1 makes the CA; 2 and 3 join with controller tokens and are added.
NA=(127.0.0.1:17401 127.0.0.1:17402 127.0.0.1:17403)
CONF=$WORK/n1/admin.conf
for i in 1 2 3; do
  JOIN=()
  if [[ $i != 1 ]]; then
    out=$(SHOAL_CONFIG=$CONF retry 30 "controller join token" "$NEW/shoalctl" --server "${NA[0]}" \
      token create --usage controller --uses 1 --ttl 1h --description "bench-store-ab $i")
    JOIN=(--join "${NA[0]}" --join-token "$(awk '/^token:/ {print $2}' <<<"$out")"
          --ca-hash "$(awk '/^ca-hash:/ {print $2}' <<<"$out")")
  fi
  "$NEW/shoal-controller" --id $i --listen "${NA[$((i-1))]}" --registry-listen none --metrics-listen none --data-dir "$WORK/n$i" "${JOIN[@]}" \
    >"$WORK/n$i.log" 2>&1 &
  PIDS+=($!)
  if [[ $i == 1 ]]; then
    retry 30 "controller 1 to write $CONF" test -s "$CONF" >/dev/null
  else
    SHOAL_CONFIG=$CONF retry 60 "adding new controller $i" "$NEW/shoalctl" --server "${NA[0]}" \
      cluster add-member "$i=${NA[$((i-1))]}" >/dev/null
  fi
done
# Old: as that commit formed clusters (--join, then add-member), plain gRPC.
OA=(127.0.0.1:17421 127.0.0.1:17422 127.0.0.1:17423)
for i in 1 2 3; do
  JOIN=()
  [[ $i == 1 ]] || JOIN=(--join "${OA[0]}")
  "$OLD/shoal-controller" --id $i --listen "${OA[$((i-1))]}" --data-dir "$WORK/o$i" "${JOIN[@]}" \
    >"$WORK/o$i.log" 2>&1 &
  PIDS+=($!)
  [[ $i == 1 ]] || retry 60 "adding old controller $i" "$OLD/shoalctl" --server "${OA[0]}" \
    cluster add-member "$i=${OA[$((i-1))]}" >/dev/null
done

NEW_EPS=$(IFS=,; echo "${NA[*]}")
OLD_EPS=$(IFS=,; echo "${OA[*]}")
new() { SHOAL_CONFIG=$CONF bench "$NEW/shoal-bench" store --target shoal --endpoints "$NEW_EPS" "$@"; }
old() { bench "$OLD/shoal-bench" store --target shoal --endpoints "$OLD_EPS" "$@"; }
SHOAL_CONFIG=$CONF retry 60 "new cluster to take writes" "$NEW/shoal-bench" store --target shoal \
  --endpoints "$NEW_EPS" --clients 4 --ops 200 --tag warm >/dev/null
retry 60 "old cluster to take writes" "$OLD/shoal-bench" store --target shoal \
  --endpoints "$OLD_EPS" --clients 4 --ops 200 --tag warm >/dev/null

echo "# machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg); new: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . || echo +changes) ($NEW), old: $OLD"
for ((round = 1; round <= ROUNDS; round++)); do
  for c in 1 64; do
    echo "# round $round, $c clients; load average $(cut -d' ' -f1-3 /proc/loadavg)"
    if ((round % 2)); then
      printf 'new '; new --clients $c --ops "$OPS" --tag "r$round-c$c"
      printf 'old '; old --clients $c --ops "$OPS" --tag "r$round-c$c"
    else
      printf 'old '; old --clients $c --ops "$OPS" --tag "r$round-c$c"
      printf 'new '; new --clients $c --ops "$OPS" --tag "r$round-c$c"
    fi
  done
done
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
