#!/usr/bin/env bash
# fresh-check: proves the README's two commands on a fresh machine.
#
# Builds a clean Debian 12 root file system (mmdebstrap, minbase + what a new
# machine of this kind has: gcc, libc6-dev, python3, git, ca-certificates),
# binds this machine's Rust toolchain in read-only, copies in the host's CA
# bundle (the package registries are reached through this machine's trust
# store), clones the repository's committed HEAD into it (uncommitted changes
# are not seen: a file you forgot to add fails here), and runs there, in a
# private mount namespace (chroot):
#     scripts/demo.sh ; scripts/demo.sh down ; scripts/test.sh
# Run as root. Prints each step's time; exits non-zero on the first failure.
#
#   scripts/fresh-check.sh [--keep] [--demo-only] [--dir DIR]
#     --keep       keep the root file system afterwards (default: removed)
#     --demo-only  run only the first command (a quicker check while working)
#     --dir DIR    where to build the root (default: a new /var/tmp/shoal-fresh.XXXXXX)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
KEEP=0 DEMO_ONLY=0 DIR=
while (($#)); do
    case "$1" in
        --keep) KEEP=1 ;;
        --demo-only) DEMO_ONLY=1 ;;
        --dir) DIR=${2:?--dir needs a directory}; shift ;;
        -h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "fresh-check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[[ $(id -u) == 0 ]] || { echo "fresh-check: run as root (chroot, mounts, network namespaces)" >&2; exit 1; }
RUSTUP_HOME=${RUSTUP_HOME:-$HOME/.rustup}
CARGO_BIN=${CARGO_HOME:-$HOME/.cargo}/bin
[[ -d $RUSTUP_HOME && -x $CARGO_BIN/cargo ]] ||
    { echo "fresh-check: no Rust toolchain at $RUSTUP_HOME and $CARGO_BIN" >&2; exit 1; }
command -v mmdebstrap >/dev/null || {
    echo "fresh-check: installing mmdebstrap"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null
}

if [[ -z $DIR ]]; then DIR=$(mktemp -d /var/tmp/shoal-fresh.XXXXXX); else mkdir -p "$DIR"; fi
ROOT=$DIR/root
cleanup() {
    local rc=$?
    # Processes the checks left behind inside the root (there should be none:
    # the demo's `down` and every test clean up after themselves) are reported
    # and stopped, so that the root can be removed.
    local left=() p i
    for i in $(seq 50); do # processes being killed take a moment to go
        left=()
        for p in /proc/[0-9]*; do
            [[ $(readlink "$p/root" 2>/dev/null) == "$ROOT" ]] || continue
            [[ $(awk '{print $3}' "$p/stat" 2>/dev/null) == Z ]] && continue
            left+=("${p#/proc/}")
        done
        ((${#left[@]})) || break
        sleep 0.1
    done
    if ((${#left[@]})); then
        echo "fresh-check: processes left in the root: ${left[*]}" >&2
        ps -o pid,args -p "$(IFS=,; echo "${left[*]}")" >&2 || true
        kill -9 "${left[@]}" 2>/dev/null || true
        rc=1
    fi
    if ((KEEP)); then
        echo "fresh-check: root kept at $ROOT"
    else
        rm -rf --one-file-system "$DIR"
    fi
    exit $rc
}
trap cleanup EXIT

t0=$(date +%s)
step() { echo "fresh-check: [$(($(date +%s) - t0)) s] $*"; }

step "building a Debian 12 root in $ROOT"
[[ -e $ROOT ]] && { echo "fresh-check: $ROOT exists; pass an empty --dir" >&2; exit 1; }
mmdebstrap --quiet --variant=minbase --include=ca-certificates,git,gcc,libc6-dev,python3 bookworm "$ROOT"
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
mkdir -p "$ROOT/root/.rustup" "$ROOT/root/.cargo/bin"
step "cloning $REPO (HEAD $(git -C "$REPO" rev-parse --short HEAD)) into the root"
git clone -q "$REPO" "$ROOT/root/shoal"

# The commands run one after the other in ONE private mount namespace (its /run
# holds the demo cluster's state and namespaces, which `demo.sh down` needs), each
# as a new user would type it, with a clean environment.
cmds=("scripts/demo.sh" "scripts/demo.sh down")
((DEMO_ONLY)) || cmds+=("scripts/test.sh")
unshare --mount --propagation private -- bash -euo pipefail -c '
    ROOT=$1 RUSTUP=$2 CARGOBIN=$3 TIMES=$4 T0=$5
    shift 5
    # The root must be a mount point: `ip netns exec` makes / a slave mount.
    mount --bind "$ROOT" "$ROOT"
    mount -t proc proc "$ROOT/proc"
    mount --rbind /sys "$ROOT/sys"
    mount --rbind /dev "$ROOT/dev"
    mount -t tmpfs -o mode=755 tmpfs "$ROOT/run"
    mount -t tmpfs -o mode=1777 tmpfs "$ROOT/tmp"
    mount --bind "$RUSTUP" "$ROOT/root/.rustup"
    mount -o remount,bind,ro "$ROOT/root/.rustup"
    mount --bind "$CARGOBIN" "$ROOT/root/.cargo/bin"
    mount -o remount,bind,ro "$ROOT/root/.cargo/bin"
    for cmd in "$@"; do
        start=$(date +%s)
        echo "fresh-check: [$((start - T0)) s] running '\''$cmd'\''"
        chroot "$ROOT" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
            PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            RUSTUP_HOME=/root/.rustup CARGO_HOME=/root/.cargo RUSTUP_AUTO_INSTALL=0 \
            /bin/bash -c "cd /root/shoal && $cmd" || {
            echo "fresh-check: '\''$cmd'\'' FAILED" >&2
            exit 1
        }
        took=$(($(date +%s) - start))
        echo "fresh-check: [$(($(date +%s) - T0)) s] '\''$cmd'\'' passed in $took s"
        echo "$cmd: $took" >>"$TIMES"
    done
' fresh-check "$ROOT" "$RUSTUP_HOME" "$CARGO_BIN" "$DIR/times" "$t0" "${cmds[@]}"
step "passed: $(paste -sd, "$DIR/times" | sed 's/,/, /g') (seconds)"
