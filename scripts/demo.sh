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
scripts/setup.sh demo
# Only the three binaries the demo runs (not the benchmark crate, whose etcd-client needs protoc).
cargo build -p shoal-controller -p shoal-agent -p shoalctl --bins
BIN=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug
deploy/netns-cluster --name "$NAME" down >/dev/null 2>&1 || true
# An assignment, not eval "$(…)": eval of a failed substitution would succeed and hide the failure.
exports=$(deploy/netns-cluster --name "$NAME" --bin-dir "$BIN" up --controllers "$CONTROLLERS" --agents "$AGENTS")
eval "$exports"
export SHOAL_SERVER SHOAL_CONFIG
CTL="$BIN/shoalctl"
echo "+ shoalctl config get-contexts   (admin.conf: the cluster CA and an admin certificate; every call is mutual TLS)"; "$CTL" config get-contexts
echo "+ shoalctl cluster status"; "$CTL" cluster status
if [[ "$AGENTS" -gt 0 ]]; then
    echo "+ shoalctl get nodes -o wide"; "$CTL" get nodes -o wide
    IMG=$(mktemp -d)/busybox.tar
    "$BIN/shoal-agent" runtime image build-busybox "$IMG" --name busybox:latest
    echo "+ shoalctl image import $IMG"; "$CTL" image import "$IMG"
fi
echo "+ shoalctl apply -f examples/web.yaml"; "$CTL" apply -f examples/web.yaml
if [[ "$AGENTS" -gt 0 ]]; then
    # Wait (up to 60 s) until the three replicas and the client run.
    for _ in $(seq 120); do
        [[ $("$CTL" get pods 2>/dev/null | grep -c ' Running ') -ge 4 ]] && break
        sleep 0.5
    done
fi
echo "+ shoalctl get pods -o wide"; "$CTL" get pods -o wide
echo "+ shoalctl get deployments"; "$CTL" get deployments
echo "+ shoalctl get svc -o wide"; "$CTL" get svc -o wide
if [[ "$AGENTS" -gt 0 ]]; then
    echo "+ shoalctl exec client -- wget -qO- http://web.default.svc.shoal.local/   (x3: the Service spreads over the replicas)"
    for _ in 1 2 3; do "$CTL" exec client -- wget -qO- http://web.default.svc.shoal.local/ || true; done
    echo "+ shoalctl exec client -- wget -qO- http://www.world.test/   (the way out: the cluster's outside-world namespace, reached masqueraded)"
    "$CTL" exec client -- wget -qO- http://www.world.test/ || true
    echo "+ deploy/netns-cluster exec node1 -- wg show wg-node1"
    deploy/netns-cluster --name "$NAME" exec node1 -- wg show wg-node1 || true
fi
cat <<EOT

The cluster '$NAME' is running. Try:
  export SHOAL_SERVER=$SHOAL_SERVER
  export SHOAL_CONFIG=$SHOAL_CONFIG
  $CTL get pods -o wide
  $CTL exec client -- ping -c1 <IP of a web pod on another node>
  $CTL exec client -- wget -qO- http://web/
  $CTL exec client -- wget -qO- http://www.world.test/
  deploy/netns-cluster --name $NAME world
  deploy/netns-cluster --name $NAME exec node2 -- busybox wget -qO- http://<node1 InternalIP>:30080/
  deploy/netns-cluster --name $NAME status
  scripts/demo.sh down
EOT
