#!/usr/bin/env bash
# Makes docs/dashboard/*.png: runs the dashboard's integration test (a real controller, a
# simulated node, examples/web.yaml) with SHOAL_DASHBOARD_SCREENSHOTS=1, which has headless
# Chromium (scripts/setup.sh test) take a 1280x900 screenshot of every page.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -p shoal-controller
SHOAL_DASHBOARD_SCREENSHOTS=1 cargo test -p shoalctl --test it dashboard -- --nocapture
ls -l docs/dashboard/*.png
