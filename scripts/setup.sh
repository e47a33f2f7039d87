#!/usr/bin/env bash
# Installs what Shoal needs on a Debian host (run as root), idempotently.
#   scripts/setup.sh demo   # what the demo (scripts/demo.sh) runs: the local cluster's tools
#   scripts/setup.sh test   # demo + everything any test or benchmark crate builds or runs with
#   scripts/setup.sh vms    # test + what deploy/vm-cluster and scripts/test-vms.sh need
# The demo builds only the three binaries, which need no protoc or system .proto files
# (shoal-proto compiles the contract with protox); the benchmark crate's etcd-client
# needs protoc *and* libprotobuf-dev (google/protobuf/*.proto), so those are test packages.
set -euo pipefail
what=${1:-test}
# make: the controller's allocator (tikv-jemalloc-sys) builds jemalloc with configure + make
demo=(make busybox-static nftables wireguard-tools iproute2 iputils-ping procps util-linux dnsmasq-base)
# docker-registry, skopeo, apache2-utils (htpasswd): the registry-client tests run a real registry;
# docker.io: the `image save` test loads the tarball into a private dockerd and runs it
# chromium: the dashboard test renders every page in headless Chromium
test=(protobuf-compiler libprotobuf-dev crun runc etcd-server wireguard-go iperf3 tcpdump systemd
      docker-registry skopeo apache2-utils docker.io chromium)
vms=(qemu-system-x86 qemu-utils mmdebstrap openssh-client)
case "$what" in
    demo) pkgs=("${demo[@]}") ;;
    test) pkgs=("${demo[@]}" "${test[@]}") ;;
    vms) pkgs=("${demo[@]}" "${test[@]}" "${vms[@]}") ;;
    *) echo "usage: scripts/setup.sh demo|test|vms" >&2; exit 2 ;;
esac
missing=()
for p in "${pkgs[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# etcd-server's package starts a system etcd on 2379 on some hosts; we never use it.
# docker-registry's starts one on :5000; the tests start their own on free ports.
# docker.io's starts the system dockerd; the tests start their own on a private socket.
if command -v systemctl >/dev/null 2>&1; then
    systemctl stop etcd >/dev/null 2>&1 || true
    systemctl stop docker-registry >/dev/null 2>&1 || true
    systemctl stop docker.service docker.socket containerd >/dev/null 2>&1 || true
fi
echo "setup: ok ($what)"
