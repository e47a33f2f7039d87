#!/usr/bin/env bash
# Builds the release artefacts of Shoal for x86_64 Linux:
#
#   dist/shoal-VERSION-x86_64-linux.tar.gz
#       shoal-VERSION-x86_64-linux/bin/{shoal-controller,shoal-agent,shoalctl}
#                                 (stripped; a .gnu_debuglink names the debug file)
#       shoal-VERSION-x86_64-linux/systemd/*.service
#       shoal-VERSION-x86_64-linux/config/{controller,agent}.yaml   (examples)
#       shoal-VERSION-x86_64-linux/install.sh
#       shoal-VERSION-x86_64-linux/INSTALL.md                      (docs/install.md)
#   dist/shoal-VERSION-x86_64-linux-debug.tar.gz
#       usr/lib/debug/usr/local/bin/*.debug   (unpack with tar -C /: gdb finds them)
#
# and prints the sizes. By default the binaries are linked statically against
# glibc (-C target-feature=+crt-static); --dynamic links them as cargo does by
# default. Either way the script prints what each binary needs at run time.
#
#   scripts/release.sh [--dynamic] [--out DIR] [--no-build]
#
# The build uses its own target directory (target/release-static or
# target/release-dynamic; CARGO_TARGET_DIR overrides), so it leaves the debug
# build's cache alone. A cold build takes several minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

LINK=static
OUT=$REPO/dist
BUILD=true
while [ $# -gt 0 ]; do
    case $1 in
        --dynamic) LINK=dynamic; shift ;;
        --static) LINK=static; shift ;;
        --out) OUT=${2:?--out needs a directory}; shift 2 ;;
        --no-build) BUILD=false; shift ;;
        -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "release.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

for tool in objcopy readelf tar gzip; do
    command -v "$tool" >/dev/null || { echo "release.sh: $tool is missing (apt-get install binutils tar gzip)" >&2; exit 1; }
done

TARGET=x86_64-unknown-linux-gnu
VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
[ -n "$VERSION" ] || { echo "release.sh: no version in [workspace.package] of Cargo.toml" >&2; exit 1; }
NAME=shoal-$VERSION-x86_64-linux
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target/release-$LINK}
BINARIES=(shoal-controller shoal-agent shoalctl)

if $BUILD; then
    flags=${RUSTFLAGS:-}
    # --target makes RUSTFLAGS apply to the binaries only, not to build
    # scripts and proc macros (which cannot be static).
    [ "$LINK" = static ] && flags="$flags -C target-feature=+crt-static"
    echo "release.sh: building $NAME ($LINK) in $CARGO_TARGET_DIR" >&2
    RUSTFLAGS="$flags" cargo build --release --locked --target "$TARGET" \
        -p shoal-controller -p shoal-agent -p shoalctl
fi
BUILT=$CARGO_TARGET_DIR/$TARGET/release

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
PKG=$STAGE/$NAME
DBG=$STAGE/debug/usr/lib/debug/usr/local/bin
mkdir -p "$PKG/bin" "$PKG/systemd" "$PKG/config" "$DBG"

human() { numfmt --to=iec --suffix=B --format=%.1f "$1"; }

printf '%-17s %10s %10s %10s  %s\n' binary built stripped debug "links against" >&2
for b in "${BINARIES[@]}"; do
    src=$BUILT/$b
    [ -x "$src" ] || { echo "release.sh: $src missing (run without --no-build)" >&2; exit 1; }
    # Debug info (line tables, see [profile.release]) goes to a separate file;
    # the shipped binary keeps only a .gnu_debuglink to it.
    objcopy --only-keep-debug "$src" "$DBG/$b.debug"
    chmod 0644 "$DBG/$b.debug"
    objcopy --strip-all "$src" "$PKG/bin/$b"
    (cd "$DBG" && objcopy --add-gnu-debuglink="$b.debug" "$PKG/bin/$b")
    chmod 0755 "$PKG/bin/$b"
    if readelf -d "$PKG/bin/$b" | grep -q NEEDED; then
        glibc=$(objdump -T "$PKG/bin/$b" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)
        needs="dynamic: $(readelf -d "$PKG/bin/$b" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | tr '\n' ' ')(symbols up to $glibc)"
    else
        needs="static (no shared libraries)"
    fi
    printf '%-17s %10s %10s %10s  %s\n' "$b" "$(human "$(stat -c %s "$src")")" \
        "$(human "$(stat -c %s "$PKG/bin/$b")")" "$(human "$(stat -c %s "$DBG/$b.debug")")" "$needs" >&2
done

cp deploy/systemd/shoal-controller.service deploy/systemd/shoal-agent.service "$PKG/systemd/"
cp deploy/config/controller.yaml deploy/config/agent.yaml "$PKG/config/"
cp deploy/install.sh "$PKG/install.sh"
cp docs/install.md "$PKG/INSTALL.md"
chmod 0644 "$PKG"/systemd/* "$PKG"/config/* "$PKG/INSTALL.md"
chmod 0755 "$PKG/install.sh"

mkdir -p "$OUT"
# Reproducible archives: fixed owner, order and times.
MTIME=@$(git log -1 --format=%ct 2>/dev/null || echo 0)
pack() { # pack ARCHIVE DIR ENTRY
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="$MTIME" \
        -C "$2" -cf - "$3" | gzip -n -9 >"$1"
}
pack "$OUT/$NAME.tar.gz" "$STAGE" "$NAME"
pack "$OUT/$NAME-debug.tar.gz" "$STAGE/debug" usr
for f in "$OUT/$NAME.tar.gz" "$OUT/$NAME-debug.tar.gz"; do
    printf '%-45s %10s\n' "$(basename "$f")" "$(human "$(stat -c %s "$f")")" >&2
done
echo "$OUT/$NAME.tar.gz"
