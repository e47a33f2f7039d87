#!/usr/bin/env bash
# Installs what Shoal's build, tests and local clusters need on a Debian host (run as root).
set -euo pipefail
pkgs=(protobuf-compiler busybox-static crun runc etcd-server nftables wireguard-tools wireguard-go iperf3 iputils-ping tcpdump iproute2 procps util-linux)
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
if command -v systemctl >/dev/null 2>&1; then systemctl stop etcd >/dev/null 2>&1 || true; fi
echo "setup: ok"
