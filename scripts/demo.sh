#!/usr/bin/env bash
# The main job: build Shoal, bring up a local multi-node cluster (every node a
# network namespace) and run the example workload on it. Run as root.
#   scripts/demo.sh            # up + apply examples/web.yaml
#   scripts/demo.sh down       # tear the demo cluster down
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=${SHOAL_DEMO_NAME:-demo}
CONTROLLERS=${SHOAL_DEMO_CONTROLLERS:-3}
AGENTS=${SHOAL_DEMO_AGENTS:-3}
if [[ "${1:-up}" == down ]]; then
    exec deploy/netns-cluster --name "$NAME" down
fi
scripts/setup.sh
cargo build --workspace --bins
BIN=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug
deploy/netns-cluster --name "$NAME" down >/dev/null 2>&1 || true
eval "$(deploy/netns-cluster --name "$NAME" --bin-dir "$BIN" up --controllers "$CONTROLLERS" --agents "$AGENTS")"
export SHOAL_SERVER
CTL="$BIN/shoalctl"
echo "+ shoalctl cluster status"; "$CTL" cluster status
if [[ "$AGENTS" -gt 0 ]]; then
    echo "+ shoalctl get nodes -o wide"; "$CTL" get nodes -o wide
    IMG=$(mktemp -d)/busybox.tar
    "$BIN/shoal-agent" runtime image build-busybox "$IMG" --name busybox:latest
    echo "+ shoalctl image import $IMG"; "$CTL" image import "$IMG"
fi
echo "+ shoalctl apply -f examples/web.yaml"; "$CTL" apply -f examples/web.yaml
sleep 2
echo "+ shoalctl get pods -o wide"; "$CTL" get pods -o wide
echo "+ shoalctl get deployments,services"; "$CTL" get deployments; "$CTL" get services
cat <<EOT

The cluster '$NAME' is running. Try:
  export SHOAL_SERVER=$SHOAL_SERVER
  $CTL get pods -o wide
  deploy/netns-cluster --name $NAME status
  scripts/demo.sh down
EOT
