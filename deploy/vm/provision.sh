#!/bin/sh
# provision.sh: makes this machine a Shoal node. The one provisioning script
# of both local VM clusters: deploy/vm-cluster runs it inside each of its VMs
# at boot (from deploy/vm/vm-boot.sh), and deploy/vagrant/Vagrantfile runs it
# as the shell provisioner of each Vagrant machine.
#
#   provision.sh --role controller --address IP --id N [--join HOST:PORT]
#   provision.sh --role agent --address IP --name NAME --controllers H:P[,H:P...]
#                [--labels k=v,...] [--upstream-dns ADDR]
#   common: [--bin-dir DIR] [--set KEY=VALUE]... [--join-file FILE] [--packages] [--no-start]
#
# It installs the binaries and systemd units with deploy/install.sh (next to
# this script's directory; an unchanged file is left alone), writes
# /etc/shoal/ROLE.yaml from the arguments (provisioning owns that file: it is
# rewritten every run) and enables and (re)starts shoal-ROLE.service. --set
# appends one more flag (its long name without dashes) to the config file.
# --packages installs the Debian packages a node needs at run time first
# (Vagrant boxes; the vm-cluster image has them). --join-file FILE: the output
# of `shoalctl token create` (its `token:` and `ca-hash:` lines) becomes the
# join-token and ca-hash keys (Vagrant; vm-cluster passes them with --set). A
# joining controller is added with `shoalctl cluster add-member` by an admin
# afterwards (Vagrant's and vm-cluster's host side do it). Idempotent.
set -eu

PROG=provision.sh
HERE=$(cd "$(dirname "$0")" && pwd)
DEPLOY=$(cd "$HERE/.." && pwd)
die() { echo "$PROG: error: $*" >&2; exit 1; }

ROLE= ADDRESS= ID= JOIN= NAME= CONTROLLERS= LABELS= DNS= BIN_DIR= PACKAGES=false START=true JOIN_FILE=
SETS=
while [ $# -gt 0 ]; do
    case $1 in
        --role) ROLE=${2:?--role needs controller or agent}; shift 2 ;;
        --address) ADDRESS=${2:?--address needs an IP}; shift 2 ;;
        --id) ID=${2:?--id needs a number}; shift 2 ;;
        --join) JOIN=${2:?--join needs HOST:PORT}; shift 2 ;;
        --name) NAME=${2:?--name needs a node name}; shift 2 ;;
        --controllers) CONTROLLERS=${2:?--controllers needs HOST:PORT[,...]}; shift 2 ;;
        --labels) LABELS=${2:?--labels needs k=v[,...]}; shift 2 ;;
        --upstream-dns) DNS=${2:?--upstream-dns needs an address}; shift 2 ;;
        --bin-dir) BIN_DIR=${2:?--bin-dir needs a directory}; shift 2 ;;
        --set)
            case ${2:-} in *=*) ;; *) die "--set '${2:-}': expected KEY=VALUE" ;; esac
            SETS="$SETS${SETS:+
}$2"; shift 2 ;;
        --packages) PACKAGES=true; shift ;;
        --no-start) START=false; shift ;;
        --join-file) JOIN_FILE=${2:?--join-file needs a file}; shift 2 ;;
        -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done
case $ROLE in controller|agent) ;; *) die "--role '$ROLE': expected controller or agent" ;; esac
case $ADDRESS in ''|*[!0-9.]*) die "--address '$ADDRESS': expected an IPv4 address" ;; esac
if [ "$ROLE" = controller ]; then
    case $ID in ''|*[!0-9]*) die "--id '$ID': a controller needs its Raft id (1, 2, ...)" ;; esac
else
    [ -n "$NAME" ] || die "--name: an agent needs its node name"
    [ -n "$CONTROLLERS" ] || die "--controllers: an agent needs the controllers' HOST:PORT list"
fi
[ "$(id -u)" -eq 0 ] || die "run as root"
if [ -n "$JOIN_FILE" ]; then
    [ -r "$JOIN_FILE" ] || die "--join-file $JOIN_FILE: cannot read it"
    t=$(awk '/^token:/ {print $2}' "$JOIN_FILE")
    h=$(awk '/^ca-hash:/ {print $2}' "$JOIN_FILE")
    [ -n "$t" ] && [ -n "$h" ] || die "--join-file $JOIN_FILE: no 'token:' and 'ca-hash:' lines (expected the output of shoalctl token create)"
    SETS="$SETS${SETS:+
}join-token=$t
ca-hash=$h"
fi

if $PACKAGES; then
    # What the agent runs at run time: nft (service load-balancing), wg
    # (wg show), ip; the kernel's WireGuard module comes with the kernel.
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends nftables wireguard-tools iproute2 kmod procps >/dev/null
fi

if [ -n "$BIN_DIR" ]; then
    "$DEPLOY/install.sh" --bin-dir "$BIN_DIR" --node-name "${NAME:-$(hostname)}" | grep -v '^unchanged' || true
fi
command -v /usr/local/bin/shoal-$ROLE >/dev/null || die "/usr/local/bin/shoal-$ROLE is missing: pass --bin-dir DIR"

conf=/etc/shoal/$ROLE.yaml
tmp=$(mktemp "$conf.XXXXXX")
{
    echo "# Written by $PROG (deploy/vm/provision.sh); rewritten at every provisioning."
    if [ "$ROLE" = controller ]; then
        echo "id: $ID"
        echo "listen: $ADDRESS:7000"
        echo "data-dir: /var/lib/shoal/controller"
        [ -z "$JOIN" ] || echo "join: $JOIN"
    else
        echo "name: $NAME"
        echo "controller: $CONTROLLERS"
        echo "listen: $ADDRESS:7100"
        echo "data-dir: /var/lib/shoal/agent"
        [ -z "$LABELS" ] || echo "labels: $LABELS"
        [ -z "$DNS" ] || echo "upstream-dns: $DNS"
    fi
    [ -z "$SETS" ] || echo "$SETS" | sed 's/=/: /'
} >"$tmp"
chmod 0600 "$tmp"
mv -f "$tmp" "$conf"
echo "$PROG: wrote $conf"

if $START; then
    systemctl enable --quiet "shoal-$ROLE.service"
    # --no-block: this may run from a unit during boot.
    systemctl restart --no-block "shoal-$ROLE.service"
    echo "$PROG: shoal-$ROLE.service enabled and (re)started"
fi
