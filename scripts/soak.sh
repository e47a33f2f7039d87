#!/usr/bin/env bash
# Soak test (outside CI): a network-namespace cluster (deploy/netns-cluster, 3 controllers,
# 3 real agents) under pod churn for a long time, with node flaps, while every process's
# resident memory, open fds and threads are scraped from its /metrics endpoint and the
# host's leftovers (mounts, cgroups, veths, shoal processes) are counted.
#
#   scripts/soak.sh [--minutes 30] [--out DIR]        (root; an otherwise idle machine)
#
# 1. Measures the churn this machine sustains: batches of BATCH real pods (busybox,
#    spread over node1 and node2) created, Running, deleted and gone, as fast as possible.
# 2. For --minutes runs the same batches at 70 % of that rate (a pause after each batch),
#    with a Deployment of 3 replicas standing, and every 5 minutes a flap of node3's agent
#    (SIGTERM, 20 s down, started again with the same data).
# 3. Samples every 15 s into DIR/procs.csv (t,proc,rss_bytes,open_fds,threads) and
#    DIR/host.csv (t,mounts,cgroups,veths,processes); after `down`, counts what is left.
# 4. Writes DIR/summary.md and DIR/*.svg (scripts/soak-plot.py), which docs/reliability.md
#    shows.
# Everything it starts is removed on exit (netns-cluster down), also on failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=30 OUT=
while (($#)); do
    case "$1" in
        --minutes) MINUTES=${2:?}; shift ;;
        --out) OUT=${2:?}; shift ;;
        -h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "soak: unknown argument '$1'" >&2; exit 2 ;;
    esac
    shift
done
[[ -n $OUT ]] || OUT=$(mktemp -d /var/tmp/shoal-soak.XXXXXX)
mkdir -p "$OUT"
NAME=soak
BATCH=10
NC=(deploy/netns-cluster --name "$NAME")
scripts/setup.sh test >/dev/null
[[ -n "${SKIP_BUILD:-}" ]] || cargo build -p shoal-controller -p shoal-agent -p shoalctl
BIN=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug
CTL=$BIN/shoalctl
say() { echo "soak: $(date +%T) $*" >&2; }
cleanup() {
    set +e
    "${NC[@]}" down >/dev/null 2>&1
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

host_counts() {
    local mounts cgroups veths procs
    mounts=$(grep -c shoal /proc/self/mountinfo || true)
    cgroups=$(find /sys/fs/cgroup -type d -name '*shoal*' 2>/dev/null | wc -l)
    veths=$(ip -o link show type veth 2>/dev/null | wc -l)
    procs=$(pgrep -c -f 'shoal-(controller|agent)' || true)
    echo "$mounts,$cgroups,$veths,$procs"
}
say "before: mounts,cgroups,veths,processes = $(host_counts)"
echo "$(host_counts)" >"$OUT/host-before.txt"

eval "$("${NC[@]}" up --controllers 3 --agents 3)"
export SHOAL_SERVER SHOAL_CONFIG
IMG=$OUT/busybox.tar
"$BIN/shoal-agent" runtime image build-busybox "$IMG" --name busybox:latest >/dev/null
"$CTL" image import "$IMG" >/dev/null
"$CTL" apply -f - >/dev/null <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata: {name: standing}
spec:
  replicas: 3
  selector: {matchLabels: {app: standing}}
  template:
    metadata: {labels: {app: standing}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - {name: main, image: busybox:latest, command: [sleep, "100000"],
           resources: {requests: {cpu: 10m, memory: 8Mi}}}
EOF

# One batch: BATCH pods created (one apply), all Running, deleted, all gone.
batch_file=$OUT/batch.yaml
: >"$batch_file"
for i in $(seq 1 "$BATCH"); do
    node=node$(((i % 2) + 1))
    cat >>"$batch_file" <<EOF
---
apiVersion: v1
kind: Pod
metadata: {name: churn-$i, labels: {soak: churn}}
spec:
  nodeName: $node
  terminationGracePeriodSeconds: 1
  containers:
    - {name: main, image: busybox:latest, command: [sleep, "100000"],
       resources: {requests: {cpu: 10m, memory: 8Mi}}}
EOF
done
one_batch() {
    "$CTL" apply -f "$batch_file" >/dev/null
    "$CTL" wait pod -l soak=churn --for=jsonpath='{.status.phase}'=Running --timeout 120s >/dev/null
    "$CTL" delete pod -l soak=churn >/dev/null
    local end=$((SECONDS + 120))
    while [[ -n $("$CTL" get pods -l soak=churn -o name) ]]; do
        ((SECONDS < end)) || { say "churn pods not gone after 120 s"; return 1; }
        sleep 0.2
    done
}

# The sustainable rate: the mean of 3 batches at full speed.
t0=$(date +%s.%N)
for _ in 1 2 3; do one_batch; done
t1=$(date +%s.%N)
full=$(python3 -c "print(($t1 - $t0) / 3)")
pause=$(python3 -c "print($full / 0.7 - $full)")
rate=$(python3 -c "print(round($BATCH / $full, 2))")
say "a batch of $BATCH pods takes ${full}s at full speed ($rate pods/s); soaking at 70 % (pause ${pause}s)"
echo "full_batch_seconds=$full pods_per_second=$rate pause_seconds=$pause batch=$BATCH" >"$OUT/churn.txt"

# Samples: the metrics of each process, the host's counts.
scrape() { # NODE PORT -> "rss,fds,threads,tasks"
    "${NC[@]}" exec "$1" -- bash -c "exec 3<>/dev/tcp/127.0.0.1/$2 && printf 'GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n' >&3 && cat <&3" 2>/dev/null |
        awk '/^shoal_process_resident_memory_bytes /{r=$2} /^shoal_process_open_fds /{f=$2} /^shoal_process_threads /{t=$2}
             /^shoal_process_tokio_tasks /{k=$2}
             END {printf "%d,%d,%d,%d", r, f, t, k}'
}
echo "t,proc,rss_bytes,open_fds,threads,tokio_tasks" >"$OUT/procs.csv"
echo "t,mounts,cgroups,veths,processes" >"$OUT/host.csv"
start=$SECONDS
sample() {
    local t=$((SECONDS - start)) p
    for p in c1 c2 c3; do echo "$t,$p,$(scrape "$p" 7080)" >>"$OUT/procs.csv"; done
    for p in n1 n2 n3; do echo "$t,$p,$(scrape "$p" 7180)" >>"$OUT/procs.csv"; done
    echo "$t,$(host_counts)" >>"$OUT/host.csv"
}
( while :; do sample; sleep 15; done ) &
SAMPLER=$!
trap 'kill $SAMPLER 2>/dev/null || true; cleanup' EXIT

batches=0 flaps=0 failures=0
next_flap=$((SECONDS + 300))
deadline=$((SECONDS + MINUTES * 60))
while ((SECONDS < deadline)); do
    if one_batch; then batches=$((batches + 1)); else failures=$((failures + 1)); fi
    if ((SECONDS >= next_flap)); then
        say "flap: node3 down for 20 s"
        "${NC[@]}" stop n3 >/dev/null
        sleep 20
        "${NC[@]}" start n3 >/dev/null
        flaps=$((flaps + 1))
        next_flap=$((SECONDS + 300))
    fi
    sleep "$pause"
done
kill "$SAMPLER" 2>/dev/null || true
wait "$SAMPLER" 2>/dev/null || true
sample
say "done: $batches batches ($((batches * BATCH)) pods created and deleted), $flaps flaps, $failures failed batches"
echo "batches=$batches pods=$((batches * BATCH)) flaps=$flaps failed_batches=$failures minutes=$MINUTES" >>"$OUT/churn.txt"
"${NC[@]}" down >/dev/null
sleep 2
echo "$(host_counts)" >"$OUT/host-after.txt"
say "after down: mounts,cgroups,veths,processes = $(cat "$OUT/host-after.txt") (before: $(cat "$OUT/host-before.txt"))"
python3 scripts/soak-plot.py "$OUT"
say "results in $OUT (summary.md, *.svg)"
