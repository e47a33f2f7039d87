#!/usr/bin/env bash
# Image benchmark: a large image (default 300 MiB of incompressible data in one layer) into a
# 3-member controller cluster, twice — `shoalctl image import` of a docker-save tarball and
# `skopeo copy` into the built-in registry — with every controller's resident memory sampled
# every 0.2 s; then the controller that took both is killed (SIGKILL) and the images are
# pulled back from another member with skopeo, checking the digests.
# Usage: scripts/bench-images.sh [MIB]   (run as root on an otherwise idle machine)
# Prints one line per phase: wall time, throughput, and per member RSS before / peak / after.
# Everything it starts (processes, by PID; its temp directory) is removed on exit, also on
# failure or SIGINT/SIGTERM. Traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
MIB=${1:-300}
scripts/setup.sh test >/dev/null
[[ -n "${SKIP_BUILD:-}" ]] || cargo build --release -p shoal-controller -p shoalctl
BIN=${CARGO_TARGET_DIR:-target}/release
WORK=$(mktemp -d /var/tmp/shoal-bench-images.XXXXXX)
PIDS=()
SAMPLER=
cleanup() {
  set +e
  [[ -n $SAMPLER ]] && kill "$SAMPLER" 2>/dev/null && wait "$SAMPLER" 2>/dev/null
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { echo "bench-images: $*" >&2; }
retry() {
  local secs=$1 what=$2 out; shift 2
  local end=$((SECONDS + secs))
  until out=$("$@" 2>&1); do
    ((SECONDS < end)) || { say "gave up after ${secs}s: $what: $out"; return 1; }
    sleep 0.2
  done
  printf '%s' "$out"
}
for port in 17501 17502 17503 17551 17552 17553; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then say "port $port is in use"; exit 1; fi
done

# --- two images of MIB MiB of random bytes each (docker save layout) ------------------
say "making two ${MIB} MiB images"
python3 - "$WORK" "$MIB" <<'EOF'
import hashlib, io, json, os, sys, tarfile
work, mib = sys.argv[1], int(sys.argv[2])
for name in ("big-import", "big-push"):
    d = os.path.join(work, name)
    os.makedirs(d)
    data = os.path.join(d, "data.bin")
    with open(data, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
    layer = os.path.join(d, "layer.tar")
    with tarfile.open(layer, "w") as t:
        t.add(data, arcname="data.bin")
    os.remove(data)
    h = hashlib.sha256()
    with open(layer, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    diff_id = "sha256:" + h.hexdigest()
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/data.bin"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }).encode()
    chex = hashlib.sha256(config).hexdigest()
    manifest = json.dumps([{"Config": chex + ".json", "RepoTags": [name + ":1"],
                            "Layers": [h.hexdigest() + "/layer.tar"]}]).encode()
    with tarfile.open(os.path.join(work, name + ".tar"), "w") as t:
        for arc, blob in ((chex + ".json", config), ("manifest.json", manifest)):
            ti = tarfile.TarInfo(arc); ti.size = len(blob)
            t.addfile(ti, io.BytesIO(blob))
        t.add(layer, arcname=h.hexdigest() + "/layer.tar")
    os.remove(layer)
    print(name, diff_id)
EOF

# --- Shoal: 3 controllers, mutual TLS, joined with tokens -------------------------------
SH=(127.0.0.1:17501 127.0.0.1:17502 127.0.0.1:17503)
REG=(127.0.0.1:17551 127.0.0.1:17552 127.0.0.1:17553)
export SHOAL_CONFIG=$WORK/s1/admin.conf
for i in 1 2 3; do
  JOIN=()
  if [[ $i != 1 ]]; then
    out=$(retry 30 "controller join token" "$BIN/shoalctl" --server "${SH[0]}" token create \
      --usage controller --uses 1 --ttl 1h)
    TOKEN=$(awk '/^token:/ {print $2}' <<<"$out")
    CA_HASH=$(awk '/^ca-hash:/ {print $2}' <<<"$out")
    JOIN=(--join "${SH[0]}" --join-token "$TOKEN" --ca-hash "$CA_HASH")
  fi
  "$BIN/shoal-controller" --id $i --listen "${SH[$((i-1))]}" --registry-listen "${REG[$((i-1))]}" --metrics-listen none \
    --data-dir "$WORK/s$i" "${JOIN[@]}" >"$WORK/s$i.log" 2>&1 &
  PIDS+=($!)
  if [[ $i == 1 ]]; then
    retry 30 "controller 1 to write $SHOAL_CONFIG" test -s "$SHOAL_CONFIG" >/dev/null
  else
    retry 60 "adding controller $i" "$BIN/shoalctl" --server "${SH[0]}" cluster add-member "$i=${SH[$((i-1))]}" >/dev/null
  fi
done
retry 60 "a leader" "$BIN/shoalctl" --server "${SH[0]}" get nodes >/dev/null
out=$("$BIN/shoalctl" --server "${SH[0]}" token create --usage registry --user bench --role edit --ttl 1h)
RTOKEN=$(awk '/^token:/ {print $2}' <<<"$out")
mkdir -p "$WORK/certs"
cp "$WORK/s1/pki/ca.crt" "$WORK/certs/ca.crt"

# --- RSS sampler: "t pid1_kib pid2_kib pid3_kib" every 0.2 s ---------------------------
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
( while :; do
    echo "$(date +%s.%N) $(rss "${PIDS[0]}") $(rss "${PIDS[1]}") $(rss "${PIDS[2]}")"
    sleep 0.2
  done ) >"$WORK/rss.log" &
SAMPLER=$!
sleep 1

# phase NAME COMMAND...: runs COMMAND, prints wall time, MiB/s and RSS before/peak/after.
phase() {
  local name=$1; shift
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >"$WORK/$name.out" 2>&1 || { say "$name failed: $(tail -5 "$WORK/$name.out")"; exit 1; }
  t1=$(date +%s.%N)
  sleep 1
  awk -v t0="$t0" -v t1="$t1" -v mib="$MIB" -v name="$name" '
    $1 < t0 { for (i = 2; i <= 4; i++) before[i] = $i }
    $1 >= t0 && $1 <= t1 + 1 { for (i = 2; i <= 4; i++) if ($i > peak[i]) peak[i] = $i }
    { for (i = 2; i <= 4; i++) after[i] = $i }
    END {
      printf "%-22s %6.1f s %6.1f MiB/s", name, t1 - t0, mib / (t1 - t0)
      for (i = 2; i <= 4; i++)
        printf "   c%d %3d/%3d/%3d MiB", i - 1, before[i] / 1024, peak[i] / 1024, after[i] / 1024
      printf "\n"
    }' "$WORK/rss.log"
}
copies() {
  local hex=${1#sha256:} n=0
  for i in 1 2 3; do [[ -e $WORK/s$i/blobs/sha256/$hex ]] && n=$((n + 1)); done
  echo "$n"
}

echo "image of $MIB MiB (one layer of random bytes), 3 controllers; RSS before/peak/after"
phase "import (shoalctl, c1)" "$BIN/shoalctl" --server "${SH[0]}" image import "$WORK/big-import.tar"
phase "push (skopeo, c1)" skopeo copy --dest-cert-dir "$WORK/certs" --dest-creds "bench:$RTOKEN" \
  "docker-archive:$WORK/big-push.tar" "docker://${REG[0]}/default/big-push:1"
# The layer digests of the stored manifests (skopeo compresses the pushed layer, so its
# digest is not the tarball's).
for name in big-import big-push; do
  ref=big-import:1; [[ $name == big-push ]] && ref=default/big-push:1
  layer=$(skopeo inspect --raw --cert-dir "$WORK/certs" --creds "bench:$RTOKEN" "docker://${REG[0]}/$ref" |
    python3 -c 'import json,sys; m = json.load(sys.stdin); print(m["layers"][0]["digest"], m["layers"][0]["size"])')
  echo "$name: layer ${layer% *} ($(( ${layer#* } >> 20 )) MiB stored) on $(copies "${layer% *}") of 3 controllers' disks"
  echo "${layer% *}" >"$WORK/$name.layer"
done
kill -9 "${PIDS[0]}"
wait "${PIDS[0]}" 2>/dev/null || true
say "controller 1 killed (its RSS reads 0 from here on)"
for name in big-import big-push; do
  # One-component names are in namespace default: big-import:1 is what import named it.
  ref=big-import:1; [[ $name == big-push ]] && ref=default/big-push:1
  phase "pull $name (skopeo, c3)" skopeo copy --src-cert-dir "$WORK/certs" --src-creds "bench:$RTOKEN" \
    "docker://${REG[2]}/$ref" "dir:$WORK/pulled-$name"
  want=$(cat "$WORK/$name.layer")
  [[ -e $WORK/pulled-$name/${want#sha256:} ]] || { say "pulled $name lacks layer $want"; exit 1; }
  rm -rf "$WORK/pulled-$name"
done
echo "pulled both back from controller 3 with controller 1 dead; layer digests match"
