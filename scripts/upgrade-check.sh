#!/usr/bin/env bash
# Rolling upgrade check: a 3-member controller cluster formed with OLD (the controller
# binary of an earlier release or commit) is upgraded one member at a time to NEW, as
# docs/operations.md "Upgrades" says (followers first, the leader last; SIGTERM, same
# flags and data directory). Before and after each step it writes ConfigMaps through
# every live member (a follower forwards to the leader); at the end every ConfigMap is
# read back from every member, and the members' logs are searched for the moment one
# version refused the other's payload.
#
# Usage: scripts/upgrade-check.sh OLD_CONTROLLER [NEW_CONTROLLER]   (default NEW:
#   target/release/shoal-controller; shoalctl from target/release)
# An old binary: git worktree add /tmp/shoal-old REV &&
#   cargo build --release -p shoal-controller --manifest-path /tmp/shoal-old/Cargo.toml
#   (then OLD=/tmp/shoal-old/target/release/shoal-controller)
# Everything it starts (processes, by PID; its temp directory) is removed on exit, also on
# failure or SIGINT/SIGTERM. Traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=${1:?usage: scripts/upgrade-check.sh OLD_CONTROLLER [NEW_CONTROLLER]}
NEW=${2:-target/release/shoal-controller}
CTL=${SHOALCTL:-target/release/shoalctl}
for b in "$OLD" "$NEW" "$CTL"; do [[ -x $b ]] || { echo "upgrade-check: $b is not an executable" >&2; exit 1; }; done
WORK=$(mktemp -d /tmp/shoal-upgrade.XXXXXX)
declare -A PID
cleanup() {
  set +e
  for p in "${PID[@]}"; do kill -9 "$p" 2>/dev/null; done
  for p in "${PID[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
say() { echo "upgrade-check: $*" >&2; }
fail() { say "FAILED: $*"; for i in 1 2 3; do say "--- member $i log (tail)"; tail -20 "$WORK/s$i.log" >&2; done; exit 1; }
retry() {
  local secs=$1 what=$2 out; shift 2
  local end=$((SECONDS + secs))
  until out=$("$@" 2>&1); do
    ((SECONDS < end)) || fail "gave up after ${secs}s: $what: $out"
    sleep 0.2
  done
  printf '%s' "$out"
}
SH=(127.0.0.1:17401 127.0.0.1:17402 127.0.0.1:17403)
for a in "${SH[@]}"; do
  if (exec 3<>"/dev/tcp/${a%:*}/${a#*:}") 2>/dev/null; then say "port ${a#*:} is in use"; exit 1; fi
done
export SHOAL_CONFIG=$WORK/s1/admin.conf
JOIN2=() JOIN3=()
start() { # start I BIN: member I with BIN, its join flags on the first start only
  local i=$1 bin=$2 join=()
  if [[ $i == 2 ]]; then join=("${JOIN2[@]}"); JOIN2=(); fi
  if [[ $i == 3 ]]; then join=("${JOIN3[@]}"); JOIN3=(); fi
  if [[ $i != 1 ]]; then join=(--join "${SH[0]}" "${join[@]}"); fi
  SHOAL_LOG=info "$bin" --id "$i" --listen "${SH[$((i-1))]}" --registry-listen none --metrics-listen none \
    --data-dir "$WORK/s$i" "${join[@]}" >>"$WORK/s$i.log" 2>&1 &
  PID[$i]=$!
}
stop() { kill -TERM "${PID[$1]}"; wait "${PID[$1]}" 2>/dev/null || true; unset "PID[$1]"; }
leader_id() { "$CTL" --server "${SH[0]},${SH[1]},${SH[2]}" cluster status 2>/dev/null | awk '/^Leader:/ {print $2}'; }
leader_other_than() { local l; l=$(leader_id); [[ $l =~ ^[0-9]+$ && $l != "$1" ]]; }
N=0
write_all() { # one ConfigMap through each live member
  local i
  for i in "${!PID[@]}"; do
    N=$((N + 1))
    retry 30 "writing cm-$N through member $i" "$CTL" --server "${SH[$((i-1))]}" create configmap "cm-$N" \
      --from-literal "step=$1" --from-literal "via=$i" >/dev/null
  done
}

say "forming the cluster with $OLD"
start 1 "$OLD"
retry 30 "member 1 to write admin.conf" test -s "$SHOAL_CONFIG" >/dev/null
for i in 2 3; do
  out=$(retry 30 "join token" "$CTL" --server "${SH[0]}" token create --usage controller --uses 1 --ttl 1h \
    --description "upgrade-check member $i")
  tok=(--join-token "$(awk '/^token:/ {print $2}' <<<"$out")" --ca-hash "$(awk '/^ca-hash:/ {print $2}' <<<"$out")")
  if [[ $i == 2 ]]; then JOIN2=("${tok[@]}"); else JOIN3=("${tok[@]}"); fi
  start "$i" "$OLD"
  retry 60 "adding member $i" "$CTL" --server "${SH[0]}" cluster add-member "$i=${SH[$((i-1))]}" >/dev/null
done
retry 60 "a cluster of 3 that takes writes" "$CTL" --server "${SH[0]}" create configmap warm --from-literal a=b >/dev/null
write_all old
"$CTL" --server "${SH[0]}" cluster status >&2
# Upgrade the followers first, the leader (member 1, which formed the cluster) last.
for i in 3 2 1; do
  say "upgrading member $i to $NEW"
  stop "$i"
  write_all "member-$i-down"
  start "$i" "$NEW"
  retry 60 "member $i back" "$CTL" --server "${SH[$((i-1))]}" get configmap warm >/dev/null
  write_all "member-$i-upgraded"
  if [[ $i == 3 ]]; then
    # A new leader with old followers: restart the leader until member 3 wins an election.
    say "making the upgraded member 3 the leader of the old members 1 and 2"
    for _ in $(seq 12); do
      l=$(retry 30 "a leader" leader_id)
      say "leader: member $l"
      [[ $l == 3 ]] && break
      stop "$l"
      retry 30 "a leader other than member $l" leader_other_than "$l" >/dev/null
      start "$l" "$OLD"
      retry 60 "member $l back" "$CTL" --server "${SH[$((l-1))]}" get configmap warm >/dev/null
    done
    [[ $(leader_id) == 3 ]] || fail "member 3 did not become the leader in 12 elections"
    write_all "new-leader-old-followers"
    grep -q "refused a binary Raft payload.*member=[12]" "$WORK/s3.log" ||
      fail "member 3 leads old members but never fell back to JSON for them"
  fi
  "$CTL" --server "${SH[0]},${SH[1]},${SH[2]}" cluster status >&2 || true
done
say "reading back $N ConfigMaps (plus warm) from every member"
for i in 1 2 3; do
  got=$("$CTL" --server "${SH[$((i-1))]}" get configmaps -o name | grep -c '^configmap/cm-' || true)
  [[ $got == "$N" ]] || fail "member $i lists $got ConfigMaps named cm-*, expected $N"
done
for n in $(seq 1 "$N"); do
  "$CTL" --server "${SH[$((n % 3))]}" get configmap "cm-$n" -o json | grep -q '"step"' || fail "cm-$n has no data"
done
refused=$(grep -h "refused a binary Raft payload" "$WORK"/s*.log | wc -l)
say "members that fell back to JSON for an older member: $refused log lines"
grep -h "refused a binary Raft payload" "$WORK"/s*.log | head -3 >&2 || true
echo "upgrade-check: passed ($N writes through old, mixed and new members, all read back from all 3)"
