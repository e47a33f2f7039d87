#!/usr/bin/env bash
# Pod start latency and memory: a 1-member shoal-controller and one shoal-agent on loopback
# (real containers), 100 one-container busybox pods created one at a time, interleaved
# (A B A B ...) with `docker run -d` of the same image tarball on Debian's docker.io; then
# VmRSS of controller, agent and container supervisors, idle and with the pods running.
# Two rounds: pods pre-bound with spec.nodeName, then bound by the scheduler.
# As a user runs it: the controller makes the cluster CA and DATA/admin.conf (SHOAL_CONFIG for
# shoalctl and shoal-bench), the agent joins with a node token from `shoalctl token create`.
# The agent runs with --network none (pods get a private network namespace with loopback only),
# as every agent did when the first figures were taken; docker keeps its default bridge.
# Usage: scripts/bench-pods.sh [COUNT]   (root; CARGO_TARGET_DIR is honoured, SHOAL_BIN=DIR skips the build)
# Everything it starts (processes by PID, containers, pods, temp dirs) is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-100}
[ "$(id -u)" = 0 ] || { echo "bench-pods: run as root" >&2; exit 1; }
scripts/setup.sh test >/dev/null
command -v dockerd >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq docker.io >/dev/null; }
DOCKER=/usr/bin/docker   # Debian's docker.io CLI (a /usr/local/bin/docker may shadow it)
if [ -n "${SHOAL_BIN:-}" ]; then   # prebuilt release binaries (all four) in this directory
  BIN=$(realpath "$SHOAL_BIN")
else
  cargo build --release -p shoal-controller -p shoal-agent -p shoal-bench -p shoalctl
  BIN=$(realpath "${CARGO_TARGET_DIR:-target}/release")
fi
WORK=$(mktemp -d /tmp/shoal-bench-pods.XXXXXX)
CPORT=17411 APORT=17412
CTRL=127.0.0.1:$CPORT
CPID= APID= DPID=

cleanup() {
  set +e
  if [ -n "$APID" ]; then kill "$APID" 2>/dev/null; wait "$APID" 2>/dev/null; fi
  # Stops every container and sandbox the agent made under its data dir.
  [ -d "$WORK/agent" ] && "$BIN/shoal-agent" --cleanup --data-dir "$WORK/agent" >>"$WORK/cleanup.log" 2>&1
  if [ -n "$CPID" ]; then kill "$CPID" 2>/dev/null; wait "$CPID" 2>/dev/null; fi
  if "$DOCKER" info >/dev/null 2>&1; then
    ids=$("$DOCKER" ps -aq --filter name=shoal-bench-podstart- 2>/dev/null)
    [ -n "$ids" ] && "$DOCKER" rm -f $ids >/dev/null 2>&1
    [ -n "${LOADED_IMAGE:-}" ] && "$DOCKER" rmi "$LOADED_IMAGE" >/dev/null 2>&1
  fi
  if [ -n "$DPID" ]; then
    kill "$DPID" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$DPID" 2>/dev/null
    wait "$DPID" 2>/dev/null
    # Its managed containerd normally exits with it; not if dockerd had to be killed.
    cpid=$(cat "$WORK/docker/run/containerd/containerd.pid" 2>/dev/null)
    [ -n "$cpid" ] && kill -0 "$cpid" 2>/dev/null && kill -9 "$cpid" 2>/dev/null
    [ -n "${OWN_BRIDGE:-}" ] && ip link del "$OWN_BRIDGE" 2>/dev/null
  fi
  # Overlay mounts of our engine, if it died without unmounting them.
  grep -o " $WORK/docker/[^ ]*" /proc/self/mounts 2>/dev/null | sort -r | while read -r m; do umount -l "$m"; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local secs=$1 what=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || { echo "bench-pods: timed out waiting for $what" >&2; return 1; }
    sleep 0.2
  done
}

# Docker engine: ours only if none runs (then we stop exactly that PID at the end). Ours keeps
# all its state under $WORK (data, exec root, socket, its managed containerd) and leaves the
# host's firewall and ip_forward alone (no published ports here, so a container's start does
# no iptables work either way); only its default bridge docker0 is created, and removed
# again if it was not there before.
if ! "$DOCKER" info >/dev/null 2>&1; then
  ip link show docker0 >/dev/null 2>&1 || OWN_BRIDGE=docker0
  mkdir -p "$WORK/docker"
  dockerd --data-root "$WORK/docker/data" --exec-root "$WORK/docker/run" \
    --pidfile "$WORK/docker/dockerd.pid" -H "unix://$WORK/docker/docker.sock" \
    --iptables=false --ip-forward=false >"$WORK/dockerd.log" 2>&1 &
  DPID=$!
  export DOCKER_HOST=unix://$WORK/docker/docker.sock   # for this script and shoal-bench
  wait_for 60 dockerd "$DOCKER" info
fi

"$BIN/shoal-controller" --id 1 --listen "$CTRL" --registry-listen none --metrics-listen none --data-dir "$WORK/controller" >"$WORK/controller.log" 2>&1 &
CPID=$!
export SHOAL_CONFIG=$WORK/controller/admin.conf   # written by the controller on its first start
wait_for 30 "the controller's admin.conf" test -s "$SHOAL_CONFIG"
wait_for 30 "the controller" "$BIN/shoalctl" --server "$CTRL" get nodes
# A node join token for the agent (one use), as `shoalctl token create` prints it.
wait_for 30 "a node join token" sh -c 'out=$("$0" --server "$1" token create --usage node --uses 1 --ttl 1h --description bench-pods) && printf "%s\n" "$out" >"$2"' \
  "$BIN/shoalctl" "$CTRL" "$WORK/token.out"
TOKEN=$(awk '/^token:/ {print $2}' "$WORK/token.out")
CA_HASH=$(awk '/^ca-hash:/ {print $2}' "$WORK/token.out")
[ -n "$TOKEN" ] && [ -n "$CA_HASH" ] || { echo "bench-pods: unexpected token output: $(cat "$WORK/token.out")" >&2; exit 1; }
"$BIN/shoal-agent" --name bench --controller "$CTRL" --data-dir "$WORK/agent" \
  --listen 127.0.0.1:$APORT --metrics-listen none --network none --join-token "$TOKEN" --ca-hash "$CA_HASH" >"$WORK/agent.log" 2>&1 &
APID=$!
wait_for 30 "node bench to be Ready" sh -c "'$BIN/shoalctl' --server '$CTRL' get nodes | grep -w bench | grep -qw Ready"

# The same busybox image for both.
"$BIN/shoal-agent" runtime --data-dir "$WORK/build" image build-busybox "$WORK/busybox.tar" --name busybox:latest
"$BIN/shoalctl" --server "$CTRL" image import "$WORK/busybox.tar"
"$DOCKER" image inspect busybox:latest >/dev/null 2>&1 || LOADED_IMAGE=busybox:latest  # removed on exit
"$DOCKER" load -i "$WORK/busybox.tar"
# Warm-up, not measured: the agent pulls the image from the controller once, docker runs once.
"$BIN/shoal-bench" pods --endpoint "$CTRL" --count 2 --node bench --docker "$DOCKER" --agent-data-dir "$WORK/agent" --tag warm >/dev/null

echo "# machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), $(uname -r), $("$DOCKER" version -f 'docker {{.Server.Version}}'), binaries $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . || echo +changes)"
COMMON=(--endpoint "$CTRL" --count "$COUNT" --docker "$DOCKER" --controller-pid "$CPID" --agent-pid "$APID" --agent-data-dir "$WORK/agent")
echo "# pre-bound (spec.nodeName=bench)"
"$BIN/shoal-bench" pods "${COMMON[@]}" --node bench --tag bound
echo "# through the scheduler"
"$BIN/shoal-bench" pods "${COMMON[@]}" --tag sched
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
