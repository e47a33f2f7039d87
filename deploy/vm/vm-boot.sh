#!/bin/sh
# vm-boot.sh: first thing a deploy/vm-cluster VM does at every boot (unit
# shoal-vm-boot.service, before shoal-controller/shoal-agent). Everything
# node-specific comes from the kernel command line that vm-cluster gives
# QEMU, so one image serves every node of every cluster:
#   shoal.hostname=H     host name
#   shoal.ip=A/P         eth0's address;  shoal.gw=G  default gateway
#   shoal.sshkey=B64     ed25519 public key allowed to log in as root (exec)
#   shoal.arg=X          one argument of deploy/vm/provision.sh, in order
set -eu
HOSTNAME_= IP= GW= KEY=
set --
for w in $(cat /proc/cmdline); do
    case $w in
        shoal.hostname=*) HOSTNAME_=${w#*=} ;;
        shoal.ip=*) IP=${w#*=} ;;
        shoal.gw=*) GW=${w#*=} ;;
        shoal.sshkey=*) KEY=${w#*=} ;;
        shoal.arg=*) set -- "$@" "${w#*=}" ;;
    esac
done
if [ -n "$HOSTNAME_" ]; then
    echo "$HOSTNAME_" >/etc/hostname
    hostname "$HOSTNAME_"
    grep -q " $HOSTNAME_\$" /etc/hosts || echo "127.0.1.1 $HOSTNAME_" >>/etc/hosts
fi
ip link set lo up
if [ -n "$IP" ]; then
    ip link set eth0 up
    ip addr replace "$IP" dev eth0
    [ -z "$GW" ] || ip route replace default via "$GW"
fi
if [ -n "$KEY" ]; then
    install -d -m 0700 /root/.ssh
    echo "ssh-ed25519 $KEY shoal-vm-cluster" >/root/.ssh/authorized_keys
    chmod 0600 /root/.ssh/authorized_keys
fi
[ $# -eq 0 ] || /usr/local/share/shoal/deploy/vm/provision.sh "$@"
echo "shoal-vm-boot: ready"
