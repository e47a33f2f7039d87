#!/usr/bin/env bash
# Pod network control path on one node: nftables table replacement time for
# growing numbers of services, the same with 100 network policies over 1,000 pods
# and the in-place set update of one pod change, and node DNS latency (known /
# unknown names).
# Runs shoal-net's own code in a fresh network namespace (unshare -n), which
# vanishes with the process: nothing to clean up on the host.
# Usage: scripts/bench-netctl.sh [extra shoal-bench netctl flags]   (root)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test >/dev/null
[[ -n "${SKIP_BUILD:-}" ]] || cargo build --release -p shoal-bench
BIN=${CARGO_TARGET_DIR:-target}/release
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), kernel $(uname -r), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), $(nft --version)"
exec unshare -n "$BIN/shoal-bench" netctl "$@"
