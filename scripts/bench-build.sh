#!/usr/bin/env bash
# Build benchmark: Dockerfile 2 of docs/build.md (FROM the image Dockerfile 1 makes; ENV,
# WORKDIR, ADD of a file and of a tar.gz, CMD) built N times uncached (--no-cache) and N
# times cached with `shoalctl build` on a 1-controller, 1-agent netns cluster, and the same
# context with `docker build --network none` on a private dockerd (its own socket, data root
# and exec root; no iptables, no bridge). Prints the median and range of each, in ms.
# Usage: scripts/bench-build.sh   (root; N=5 by default; BIN=target/debug by default)
# Everything it starts is stopped by PID (dockerd, then the containerd it started) or by
# `netns-cluster down`, and its directory removed, also on failure or SIGINT/SIGTERM.
# Traffic stays on this machine: the cluster's namespaces and dockerd's unix socket.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${BIN:-target/debug}")
N=${N:-5}
NAME=bb$((RANDOM % 100000))
WORK=$(mktemp -d /tmp/shoal-bb.XXXXXX)
DK=$WORK/dk
DOCKERD_PID=
CLUSTER=
say() { echo "bench-build: $*" >&2; }
cleanup() {
  set +e
  if [[ -n $DOCKERD_PID ]]; then
    kill "$DOCKERD_PID" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$DOCKERD_PID" 2>/dev/null
    local cd_pid
    cd_pid=$(cat "$DK/exec/containerd/containerd.pid" 2>/dev/null)
    [[ -n $cd_pid ]] && kill "$cd_pid" 2>/dev/null
  fi
  grep -o " $DK[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
  [[ -n $CLUSTER ]] && deploy/netns-cluster --name "$NAME" down >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ms() { # runs "$@" quietly, prints its wall time in ms
  local s e
  s=$(date +%s%N)
  "$@" >"$WORK/last.out" 2>&1 || { cat "$WORK/last.out" >&2; return 1; }
  e=$(date +%s%N)
  echo $(((e - s) / 1000000))
}
stats() { sort -n | awk '{a[NR]=$1} END {printf "median %d ms (min %d, max %d, n=%d)", a[int((NR+1)/2)], a[1], a[NR], NR}'; }

# --- the contexts -----------------------------------------------------------------------
mkdir -p "$WORK/one" "$WORK/two" "$WORK/src"
printf 'FROM busybox:latest\nRUN echo "building super simple docker image"\nCMD echo "Hi container"\n' >"$WORK/one/Dockerfile"
cat >"$WORK/two/Dockerfile" <<'EOF'
FROM first_image
ENV GREETING=hello-env
WORKDIR /app
ADD note.txt /app/note.txt
ADD files.tar.gz /app/files/
CMD ["sh", "-c", "echo $GREETING; cat note.txt; ls files; pwd"]
EOF
echo "a note" >"$WORK/two/note.txt"
echo a >"$WORK/src/alpha.txt"
echo b >"$WORK/src/beta.txt"
tar czf "$WORK/two/files.tar.gz" -C "$WORK/src" alpha.txt beta.txt
"$BIN/shoal-agent" runtime image build-busybox "$WORK/busybox.tar" --name busybox:latest >/dev/null

# --- shoal ------------------------------------------------------------------------------
say "cluster $NAME up"
CLUSTER=1
deploy/netns-cluster --name "$NAME" --bin-dir "$BIN" up --controllers 1 --agents 1 >"$WORK/up.out"
eval "$(grep '^export SHOAL_' "$WORK/up.out")"
"$BIN/shoalctl" image import "$WORK/busybox.tar" >/dev/null
"$BIN/shoalctl" build -t first_image "$WORK/one" >/dev/null
"$BIN/shoalctl" build -t second_image "$WORK/two" >/dev/null # warm: the FROM image on the node
for _ in $(seq "$N"); do ms "$BIN/shoalctl" build --no-cache -t second_image "$WORK/two"; done | stats >"$WORK/shoal-uncached"
for _ in $(seq "$N"); do ms "$BIN/shoalctl" build -t second_image "$WORK/two"; done | stats >"$WORK/shoal-cached"
grep -q "5 steps, 5 cached" "$WORK/last.out" || { say "the cached build was not cached:"; cat "$WORK/last.out" >&2; exit 1; }

# --- docker -----------------------------------------------------------------------------
say "private dockerd in $DK"
mkdir -p "$DK"
/usr/sbin/dockerd --iptables=false --ip6tables=false --bridge=none --data-root "$DK/data" \
  --exec-root "$DK/exec" --pidfile "$DK/docker.pid" -H "unix://$DK/docker.sock" >"$DK/dockerd.log" 2>&1 &
DOCKERD_PID=$!
D=(docker -H "unix://$DK/docker.sock")
for _ in $(seq 300); do "${D[@]}" info >/dev/null 2>&1 && break; sleep 0.2; done
"${D[@]}" load -i "$WORK/busybox.tar" >/dev/null
"${D[@]}" build --network none -t first_image "$WORK/one" >/dev/null 2>&1
"${D[@]}" build --network none -t second_image "$WORK/two" >/dev/null 2>&1
for _ in $(seq "$N"); do ms "${D[@]}" build --no-cache --network none -t second_image "$WORK/two"; done | stats >"$WORK/docker-uncached"
for _ in $(seq "$N"); do ms "${D[@]}" build --network none -t second_image "$WORK/two"; done | stats >"$WORK/docker-cached"
builder=$("${D[@]}" version --format '{{.Server.Version}}')

echo "Dockerfile 2, $N builds each ($(nproc) cores; shoal binaries from $BIN; docker $builder, legacy builder)"
echo "shoalctl build --no-cache: $(cat "$WORK/shoal-uncached")"
echo "shoalctl build (cached):   $(cat "$WORK/shoal-cached")"
echo "docker build --no-cache:   $(cat "$WORK/docker-uncached")"
echo "docker build (cached):     $(cat "$WORK/docker-cached")"
