#!/usr/bin/env bash
# Container create -> start -> exit -> delete of /bin/true from the same busybox
# rootfs: shoal-agent vs crun vs runc, interleaved (A B C A B C ...), as root.
#   scripts/bench-runtime.sh [RUNS]        (default 50)
# shoal: `shoal-agent runtime run --rm -- /bin/true` (new pod netns, overlayfs
#        over the image layer, cgroup, supervisor; everything removed after).
# crun/runc: `run` of an OCI bundle (default `crun spec`: pid, net, ipc, uts,
#        mount namespaces) whose rootfs is a copy of the same unpacked layer.
#        crun 1.8 refuses hybrid cgroups: it runs in a private mount namespace
#        with the unified mount hidden (see FACTS.md); that wrapper's own cost
#        is measured too ("unshare wrapper").
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-50}
[[ $(id -u) == 0 ]] || { echo "bench-runtime: run as root" >&2; exit 1; }
for t in crun runc unshare; do command -v $t >/dev/null || { echo "bench-runtime: $t missing (scripts/setup.sh)" >&2; exit 1; }; done
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p shoal-agent
AGENT=$TARGET/release/shoal-agent

WORK=$(mktemp -d /tmp/shoal-bench-runtime.XXXXXX)
cleanup() {
    "$AGENT" runtime --data-dir "$WORK/data" ps >/dev/null 2>&1 || true
    for id in $(ls "$WORK/data/containers" 2>/dev/null); do "$AGENT" runtime --data-dir "$WORK/data" rm "$id" >/dev/null 2>&1 || true; done
    crun delete -f bench-crun >/dev/null 2>&1 || true
    runc delete -f bench-runc >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

D="$WORK/data"
"$AGENT" runtime --data-dir "$D" image build-busybox "$WORK/busybox.tar"
"$AGENT" runtime --data-dir "$D" image import "$WORK/busybox.tar" >/dev/null
LAYER=$(ls -d "$D"/images/layers/*/ | head -1)
mkdir -p "$WORK/bundle"
cp -a "$LAYER" "$WORK/bundle/rootfs"
(cd "$WORK/bundle" && crun spec && sed -i 's/"terminal": true/"terminal": false/; s/^\(\s*\)"sh"$/\1"\/bin\/true"/' config.json)
grep -q '"/bin/true"' "$WORK/bundle/config.json" || { echo "bench-runtime: could not edit config.json" >&2; exit 1; }

now() { date +%s%N; }
run_shoal() { "$AGENT" runtime --data-dir "$D" run --image busybox:latest --rm -- /bin/true; }
run_crun() { unshare -m sh -c "umount /sys/fs/cgroup/unified 2>/dev/null; exec crun run -b '$WORK/bundle' bench-crun" </dev/null; }
run_runc() { runc run -b "$WORK/bundle" bench-runc </dev/null; }
run_wrap() { unshare -m sh -c "umount /sys/fs/cgroup/unified 2>/dev/null; exec true"; }

# Warm-up (page cache, first cgroup creation).
for f in run_shoal run_crun run_runc run_wrap; do $f; $f; done

declare -A T
for ((i = 0; i < RUNS; i++)); do
    for f in run_shoal run_crun run_runc run_wrap; do
        s=$(now); $f; e=$(now)
        T[$f]+="$(( (e - s) / 1000 )) "
    done
done

stats() { # microsecond samples -> "median p99" in ms
    tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {
        m = (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2;
        k = int(NR * 0.99); if (k < NR * 0.99) k++; if (k < 1) k = 1;
        printf "%.1f %.1f", m / 1000, a[k] / 1000 }'
}
read -r sm sp <<<"$(stats <<<"${T[run_shoal]}")"
read -r cm cp <<<"$(stats <<<"${T[run_crun]}")"
read -r rm_ rp <<<"$(stats <<<"${T[run_runc]}")"
read -r wm wp <<<"$(stats <<<"${T[run_wrap]}")"
echo
echo "$RUNS runs each, interleaved; wall time per create+start+exit+delete of /bin/true"
echo
echo "| runtime | median | p99 | shoal / this (median) | shoal / this (p99) |"
echo "|---|---|---|---|---|"
printf "| shoal-agent runtime run --rm | %s ms | %s ms | 1.00 | 1.00 |\n" "$sm" "$sp"
printf "| crun run (in unshare wrapper) | %s ms | %s ms | %.2f | %.2f |\n" "$cm" "$cp" "$(echo "$sm / $cm" | bc -l)" "$(echo "$sp / $cp" | bc -l)"
printf "| runc run | %s ms | %s ms | %.2f | %.2f |\n" "$rm_" "$rp" "$(echo "$sm / $rm_" | bc -l)" "$(echo "$sp / $rp" | bc -l)"
printf "| (unshare wrapper alone) | %s ms | %s ms | | |\n" "$wm" "$wp"
echo
echo "Where shoal's time goes: median of 20 runs with --timing (ms; phases of one step overlap nothing)"
echo
for ((i = 0; i < 20; i++)); do
    "$AGENT" runtime --data-dir "$D" run --image busybox:latest --rm --timing -- /bin/true 2>&1
done | awk '
    /^ *\[/ { key = $0; sub(/: [0-9.]+ ms$/, "", key); sub(/^ */, "", key); v = $0; sub(/ ms$/, "", v); sub(/.*: /, "", v) }
    /^ *[0-9.]+ ms  / { key = $0; sub(/^ *[0-9.]+ ms  /, "(cumulative) ", key); v = $1 }
    { if (!(key in n)) order[++k] = key; vals[key, ++n[key]] = v }
    END {
        print "| phase | median ms |"; print "|---|---|"
        for (i = 1; i <= k; i++) {
            key = order[i]; m = n[key]
            for (a = 1; a <= m; a++) s[a] = vals[key, a] + 0
            for (a = 1; a <= m; a++) for (b = a + 1; b <= m; b++) if (s[b] < s[a]) { t = s[a]; s[a] = s[b]; s[b] = t }
            med = (m % 2) ? s[(m + 1) / 2] : (s[m / 2] + s[m / 2 + 1]) / 2
            printf "| %s | %.2f |\n", key, med
        }
    }'
