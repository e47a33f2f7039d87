#!/usr/bin/env bash
# Installs Shoal on this machine (a Debian-like host with systemd), or into a
# staging root for packaging and tests. Idempotent: a second run changes
# nothing, and an existing config file is never overwritten.
#
#   /usr/local/bin/{shoal-controller,shoal-agent,shoalctl}              0755
#   /usr/local/lib/systemd/system/{shoal-controller,shoal-agent}.service 0644
#   /etc/shoal/                                                          0750
#   /etc/shoal/{controller,agent}.yaml   examples, only if absent        0600
#   /var/lib/shoal/                                                      0700
#
# Units go to /usr/local/lib/systemd/system, systemd's directory for units
# the administrator installs (next to /usr/local/bin): a reinstall may replace
# them there, while local changes belong in drop-ins under /etc/systemd/system
# (`systemctl edit shoal-agent`), which a reinstall never touches.
set -euo pipefail

PROG=$(basename "$0")
HERE=$(cd "$(dirname "$0")" && pwd)

usage() {
    cat <<EOF
usage: $PROG [--root DIR] [--bin-dir DIR] [--enable ROLE]... [--node-name NAME]

Installs shoal-controller, shoal-agent and shoalctl, their systemd units,
example configs in /etc/shoal (only where none exists) and /var/lib/shoal.

  --root DIR       install below DIR instead of / (also: DESTDIR=DIR);
                   no systemctl daemon-reload then
  --bin-dir DIR    where the three binaries are (default: $HERE/bin, as in
                   the release tarball)
  --enable ROLE    enable shoal-ROLE.service (controller or agent; repeat for
                   both); with --root, enabled inside DIR (systemctl --root)
  --node-name NAME the agent's node name written into a new agent.yaml
                   (default: this host's name)
  -h, --help       this text

Each line of output says what happened to one path: installed, updated,
unchanged, kept (a config that exists) or fixed (a mode).
EOF
}

die() {
    echo "$PROG: $*" >&2
    exit 1
}

ROOT=${DESTDIR:-}
BIN_DIR=
NODE_NAME=
ENABLE=()
while [ $# -gt 0 ]; do
    case $1 in
        --root) ROOT=${2:?--root needs a directory}; shift 2 ;;
        --root=*) ROOT=${1#*=}; shift ;;
        --bin-dir) BIN_DIR=${2:?--bin-dir needs a directory}; shift 2 ;;
        --bin-dir=*) BIN_DIR=${1#*=}; shift ;;
        --enable) ENABLE+=("${2:?--enable needs controller or agent}"); shift 2 ;;
        --enable=*) ENABLE+=("${1#*=}"); shift ;;
        --node-name) NODE_NAME=${2:?--node-name needs a name}; shift 2 ;;
        --node-name=*) NODE_NAME=${1#*=}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

for role in "${ENABLE[@]}"; do
    case $role in
        controller|agent) ;;
        *) die "--enable $role: expected controller or agent" ;;
    esac
done

# The staging root: empty or "/" means this machine.
if [ -n "$ROOT" ]; then
    mkdir -p "$ROOT" || die "cannot create the root $ROOT"
    ROOT=$(cd "$ROOT" && pwd -P)
fi
[ "$ROOT" = / ] && ROOT=
REAL_ROOT=false
[ -z "$ROOT" ] && REAL_ROOT=true
if $REAL_ROOT && [ "$(id -u)" -ne 0 ]; then
    die "installing into / needs root (or use --root DIR to stage elsewhere)"
fi

if [ -z "$BIN_DIR" ]; then
    BIN_DIR=$HERE/bin
    [ -d "$BIN_DIR" ] || die "no $BIN_DIR: pass --bin-dir DIR (e.g. target/release after cargo build --release)"
fi
SRC_UNITS=$HERE/systemd
SRC_CONFIG=$HERE/config
BINARIES=(shoal-controller shoal-agent shoalctl)
UNITS=(shoal-controller.service shoal-agent.service)
CONFIGS=(controller.yaml agent.yaml)

# Check every source before touching anything.
for b in "${BINARIES[@]}"; do
    [ -f "$BIN_DIR/$b" ] && [ -x "$BIN_DIR/$b" ] || die "binary $BIN_DIR/$b not found or not executable"
done
for u in "${UNITS[@]}"; do
    [ -f "$SRC_UNITS/$u" ] || die "unit $SRC_UNITS/$u not found"
done
for c in "${CONFIGS[@]}"; do
    [ -f "$SRC_CONFIG/$c" ] || die "example config $SRC_CONFIG/$c not found"
done
if [ -z "$NODE_NAME" ]; then
    NODE_NAME=$(hostname 2>/dev/null || cat /proc/sys/kernel/hostname)
fi
case $NODE_NAME in
    ''|*[!A-Za-z0-9.-]*) die "--node-name '$NODE_NAME': expected letters, digits, '.' and '-'" ;;
esac

CHANGED=0
UNITS_CHANGED=false
say() { # say VERB PATH [NOTE]
    printf '%-9s %s%s\n' "$1" "$2" "${3:+ ($3)}"
    case $1 in unchanged|kept) ;; *) CHANGED=$((CHANGED + 1)) ;; esac
}

# Owner root:root when we are root (always so on the real root).
own() {
    if [ "$(id -u)" -eq 0 ]; then chown 0:0 "$1"; fi
}

# ensure_dir PATH MODE: creates PATH (and parents, 0755) or fixes its mode.
ensure_dir() {
    local dest=$ROOT$1 mode=$2
    if [ -d "$dest" ]; then
        if [ "$(stat -c %a "$dest")" != "${mode#0}" ]; then
            chmod "$mode" "$dest"
            say fixed "$dest" "mode $mode"
        else
            say unchanged "$dest"
        fi
    else
        mkdir -p "$(dirname "$dest")"
        mkdir -m "$mode" "$dest"
        own "$dest"
        say installed "$dest"
    fi
}

# put_file SRC DEST MODE: copies SRC to DEST unless DEST already has the same
# content and mode; replaces by rename, so a running binary is not disturbed.
put_file() {
    local src=$1 dest=$ROOT$2 mode=$3
    if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
        if [ "$(stat -c %a "$dest")" != "${mode#0}" ]; then
            chmod "$mode" "$dest"
            say fixed "$dest" "mode $mode"
        else
            say unchanged "$dest"
        fi
        return
    fi
    local verb=installed
    [ -e "$dest" ] && verb=updated
    mkdir -p "$(dirname "$dest")"
    local tmp
    tmp=$(mktemp "$dest.XXXXXX")
    cp "$src" "$tmp"
    chmod "$mode" "$tmp"
    own "$tmp"
    mv -f "$tmp" "$dest"
    say "$verb" "$dest"
    case $dest in *.service) UNITS_CHANGED=true ;; esac
}

# put_config NAME: writes the example only when there is no file yet.
put_config() {
    local dest=$ROOT/etc/shoal/$1
    if [ -e "$dest" ] || [ -L "$dest" ]; then
        say kept "$dest" "exists; not overwritten"
        return
    fi
    local tmp
    tmp=$(mktemp "$dest.XXXXXX")
    sed "s/@HOSTNAME@/$NODE_NAME/" "$SRC_CONFIG/$1" >"$tmp"
    chmod 0600 "$tmp"
    own "$tmp"
    mv "$tmp" "$dest"
    say installed "$dest"
}

ensure_dir /usr/local/bin 0755
for b in "${BINARIES[@]}"; do
    put_file "$BIN_DIR/$b" "/usr/local/bin/$b" 0755
done
ensure_dir /usr/local/lib/systemd/system 0755
for u in "${UNITS[@]}"; do
    put_file "$SRC_UNITS/$u" "/usr/local/lib/systemd/system/$u" 0644
done
ensure_dir /etc/shoal 0750
for c in "${CONFIGS[@]}"; do
    put_config "$c"
done
ensure_dir /var/lib/shoal 0700

# systemd: reload only on this machine with systemd running; enabling works
# offline too (systemctl creates the symlinks), also inside a staging root.
SYSTEMD_LIVE=false
if $REAL_ROOT && [ -d /run/systemd/system ]; then SYSTEMD_LIVE=true; fi
if $SYSTEMD_LIVE; then
    if $UNITS_CHANGED; then
        systemctl daemon-reload
        say reloaded systemd "systemctl daemon-reload"
    fi
elif $REAL_ROOT; then
    echo "note: systemd is not running here (no /run/systemd/system): no systemctl daemon-reload"
else
    echo "note: installed into $ROOT, not this machine: no systemctl daemon-reload"
fi
for role in "${ENABLE[@]}"; do
    unit=shoal-$role.service
    sysctl_args=()
    $REAL_ROOT || sysctl_args=(--root="$ROOT")
    command -v systemctl >/dev/null || die "--enable $role: systemctl not found"
    if [ "$(systemctl "${sysctl_args[@]}" is-enabled "$unit" 2>/dev/null)" = enabled ]; then
        say unchanged "$unit" "enabled"
    else
        systemctl "${sysctl_args[@]}" --quiet enable "$unit"
        say enabled "$unit" "${ROOT:-/}"
    fi
done

echo "$CHANGED change(s)."
if $REAL_ROOT && [ ${#ENABLE[@]} -eq 0 ]; then
    echo "next: edit /etc/shoal/controller.yaml or agent.yaml, then: systemctl enable --now shoal-controller (or shoal-agent)"
fi
