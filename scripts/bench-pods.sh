#!/usr/bin/env bash
# Pod start latency and memory: a 1-member shoal-controller and one shoal-agent on loopback
# (real containers), 100 one-container busybox pods created one at a time, interleaved
# (A B A B ...) with `docker run -d` of the same image tarball on Debian's docker.io; then
# VmRSS of controller, agent and container supervisors, idle and with the pods running.
# Two rounds: pods pre-bound with spec.nodeName, then bound by the scheduler.
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
  fi
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

# Docker engine: ours only if none runs (then we stop exactly that PID at the end).
if ! "$DOCKER" info >/dev/null 2>&1; then
  dockerd >"$WORK/dockerd.log" 2>&1 &
  DPID=$!
  wait_for 60 dockerd "$DOCKER" info
fi

"$BIN/shoal-controller" --listen "$CTRL" --data-dir "$WORK/controller" >"$WORK/controller.log" 2>&1 &
CPID=$!
wait_for 30 "the controller" "$BIN/shoalctl" --server "$CTRL" get nodes
"$BIN/shoal-agent" --name bench --controller "$CTRL" --data-dir "$WORK/agent" \
  --listen 127.0.0.1:$APORT >"$WORK/agent.log" 2>&1 &
APID=$!
wait_for 30 "node bench to be Ready" sh -c "'$BIN/shoalctl' --server '$CTRL' get nodes | grep -w bench | grep -qw Ready"

# The same busybox image for both.
"$BIN/shoal-agent" runtime --data-dir "$WORK/build" image build-busybox "$WORK/busybox.tar" --name busybox:latest
"$BIN/shoalctl" --server "$CTRL" image import "$WORK/busybox.tar"
"$DOCKER" image inspect busybox:latest >/dev/null 2>&1 || LOADED_IMAGE=busybox:latest  # removed on exit
"$DOCKER" load -i "$WORK/busybox.tar"
# Warm-up, not measured: the agent pulls the image from the controller once, docker runs once.
"$BIN/shoal-bench" pods --endpoint "$CTRL" --count 2 --node bench --docker "$DOCKER" --agent-data-dir "$WORK/agent" --tag warm >/dev/null

echo "# machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), $(uname -r), $("$DOCKER" version -f 'docker {{.Server.Version}}')"
COMMON=(--endpoint "$CTRL" --count "$COUNT" --docker "$DOCKER" --controller-pid "$CPID" --agent-pid "$APID" --agent-data-dir "$WORK/agent")
echo "# pre-bound (spec.nodeName=bench)"
"$BIN/shoal-bench" pods "${COMMON[@]}" --node bench --tag bound
echo "# through the scheduler"
"$BIN/shoal-bench" pods "${COMMON[@]}" --tag sched
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
