//! Builds small real images from a host `busybox` binary (Debian's
//! `busybox-static`), in `docker save` or OCI-layout format, for tests,
//! benchmarks and local clusters that cannot reach a registry.

use std::io::{self, Write};
use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::digest::Digest;

/// The default location of Debian's static busybox.
pub const BUSYBOX: &str = "/bin/busybox";

/// Builds the rootfs layer tarball: `/bin/busybox`, one symlink per applet,
/// `/etc/passwd` and `/etc/group` (root, nobody, user 1000), the usual empty
/// directories.
pub fn busybox_layer(busybox: &Path) -> io::Result<Vec<u8>> {
    let bin = std::fs::read(busybox)?;
    let out = Command::new(busybox).arg("--list").output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{} --list failed",
            busybox.display()
        )));
    }
    let applets = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut b = tar::Builder::new(Vec::new());
    let dir = |b: &mut tar::Builder<Vec<u8>>, p: &str, mode: u32| -> io::Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode);
        h.set_size(0);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, p, io::empty())
    };
    let file = |b: &mut tar::Builder<Vec<u8>>, p: &str, mode: u32, data: &[u8]| -> io::Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, p, data)
    };
    for d in [
        "bin", "etc", "dev", "proc", "sys", "root", "home", "var", "usr", "usr/bin", "data",
    ] {
        dir(&mut b, &format!("./{d}/"), 0o755)?;
    }
    dir(&mut b, "./tmp/", 0o1777)?;
    file(&mut b, "./bin/busybox", 0o755, &bin)?;
    file(&mut b, "./etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\nuser:x:1000:1000:user:/home:/bin/sh\n")?;
    file(
        &mut b,
        "./etc/group",
        0o644,
        b"root:x:0:\nnogroup:x:65534:\nuser:x:1000:\n",
    )?;
    for a in applets
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox")
    {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        h.set_mtime(1_700_000_000);
        b.append_link(&mut h, format!("./bin/{a}"), "busybox")?;
    }
    b.into_inner()
}

fn config_json(diff_ids: &[Digest], cmd: &[&str]) -> Vec<u8> {
    let ids: Vec<String> = diff_ids.iter().map(ToString::to_string).collect();
    serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": cmd,
            "WorkingDir": "/",
            "ExposedPorts": {"8080/tcp": {}}
        },
        "rootfs": {"type": "layers", "diff_ids": ids}
    }))
    .unwrap_or_default()
}

/// Writes a `docker save` tarball holding `layers` (uncompressed tars,
/// bottom first) tagged `name` to `out`.
pub fn write_docker_save(
    out: &Path,
    name: &str,
    layers: &[Vec<u8>],
    cmd: &[&str],
) -> io::Result<()> {
    let diff_ids: Vec<Digest> = layers.iter().map(|l| Digest::of_bytes(l)).collect();
    let config = config_json(&diff_ids, cmd);
    let config_digest = Digest::of_bytes(&config);
    let mut b = tar::Builder::new(std::fs::File::create(out)?);
    let mut add = |p: &str, data: &[u8]| -> io::Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, p, data)
    };
    let mut layer_paths = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        // Old-style v1 ids: not the content digest.
        let id = Digest::of_bytes(format!("layer-{i}-{}", diff_ids[i]).as_bytes());
        let p = format!("{}/layer.tar", id.hex());
        add(&p, l)?;
        layer_paths.push(p);
    }
    add(&format!("{}.json", config_digest.hex()), &config)?;
    let manifest = json!([{ "Config": format!("{}.json", config_digest.hex()), "RepoTags": [name], "Layers": layer_paths }]);
    add(
        "manifest.json",
        &serde_json::to_vec(&manifest).unwrap_or_default(),
    )?;
    b.into_inner()?.flush()
}

/// Writes a gzip-compressed OCI-layout tarball with gzip layers.
pub fn write_oci_layout_gz(
    out: &Path,
    name: &str,
    layers: &[Vec<u8>],
    cmd: &[&str],
) -> io::Result<()> {
    let diff_ids: Vec<Digest> = layers.iter().map(|l| Digest::of_bytes(l)).collect();
    let config = config_json(&diff_ids, cmd);
    let mut blobs: Vec<Vec<u8>> = Vec::new();
    let mut layer_descs = Vec::new();
    for l in layers {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(l)?;
        let data = gz.finish()?;
        layer_descs.push(json!({"mediaType": crate::config::OCI_LAYER_GZIP, "digest": Digest::of_bytes(&data).to_string(), "size": data.len()}));
        blobs.push(data);
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": crate::config::OCI_MANIFEST,
        "config": {"mediaType": crate::config::OCI_CONFIG, "digest": Digest::of_bytes(&config).to_string(), "size": config.len()},
        "layers": layer_descs,
    }))
    .unwrap_or_default();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": crate::config::OCI_MANIFEST, "digest": Digest::of_bytes(&manifest).to_string(), "size": manifest.len(),
            "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "latest"}}]
    }))
    .unwrap_or_default();
    blobs.push(config);
    blobs.push(manifest);
    let gz =
        flate2::write::GzEncoder::new(std::fs::File::create(out)?, flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    let mut add = |p: &str, data: &[u8]| -> io::Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, p, data)
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add("index.json", &index)?;
    for blob in &blobs {
        add(
            &format!("blobs/sha256/{}", Digest::of_bytes(blob).hex()),
            blob,
        )?;
    }
    b.into_inner()?.finish()?.flush()
}

/// Writes the busybox image as a `docker save` tarball.
pub fn busybox_docker_save(busybox: &Path, out: &Path, name: &str) -> io::Result<()> {
    write_docker_save(out, name, &[busybox_layer(busybox)?], &["sh"])
}
