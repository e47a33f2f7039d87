#!/usr/bin/env bash
# The test command: installs what is needed, builds every binary, runs every
# test including the ones that need root (CI runs this as root).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
cargo build --workspace --all-targets
cargo test --workspace --no-fail-fast -- --include-ignored
