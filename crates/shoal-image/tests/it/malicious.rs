//! Malicious images, each a test: every one is a real `docker save`
//! tarball built here. Each is refused with an error naming the layer and
//! the entry, or neutralised, and no file of the host changes: a directory
//! this test owns stands for the host, and its files' modes, contents and
//! link counts are compared before and after.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shoal_image::limits::Limits;
use shoal_image::{ImageError, ImageStore, testimage};

/// A directory standing for the host: `secret` (0600, "secret") inside a
/// 0700 directory. Removed with the tempdir.
struct Host {
    _t: tempfile::TempDir,
    dir: PathBuf,
    before: Vec<(PathBuf, u32, u64, Vec<u8>)>,
}

impl Host {
    fn new() -> Self {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("host");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        let secret = dir.join("secret");
        fs::write(&secret, b"secret").unwrap();
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
        let mut h = Self {
            _t: t,
            dir,
            before: Vec::new(),
        };
        h.before = h.snapshot();
        h
    }

    fn snapshot(&self) -> Vec<(PathBuf, u32, u64, Vec<u8>)> {
        let mut out = Vec::new();
        let m = fs::symlink_metadata(&self.dir).unwrap();
        out.push((self.dir.clone(), m.mode(), m.nlink(), Vec::new()));
        let mut names: Vec<PathBuf> = fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            let m = fs::symlink_metadata(&p).unwrap();
            let data = if m.is_file() {
                fs::read(&p).unwrap()
            } else {
                Vec::new()
            };
            out.push((p, m.mode(), m.nlink(), data));
        }
        out
    }

    /// Panics unless every host file has the mode, link count and content
    /// it had, and no file appeared.
    fn assert_unchanged(&self) {
        let now = self.snapshot();
        assert_eq!(
            now.iter()
                .map(|(p, m, n, _)| (p, *m, *n))
                .collect::<Vec<_>>(),
            self.before
                .iter()
                .map(|(p, m, n, _)| (p, *m, *n))
                .collect::<Vec<_>>(),
            "host files changed (path, mode, links)"
        );
        for ((p, _, _, a), (_, _, _, b)) in now.iter().zip(&self.before) {
            assert_eq!(a, b, "content of {} changed", p.display());
        }
    }
}

struct Hdr {
    name: String,
    kind: tar::EntryType,
    mode: u32,
    link: String,
    data: Vec<u8>,
    dev: Option<(u32, u32)>,
}

fn e(name: &str, kind: tar::EntryType, mode: u32) -> Hdr {
    Hdr {
        name: name.into(),
        kind,
        mode,
        link: String::new(),
        data: Vec::new(),
        dev: None,
    }
}

fn dir(name: &str, mode: u32) -> Hdr {
    e(name, tar::EntryType::Directory, mode)
}

fn file(name: &str, mode: u32, data: &[u8]) -> Hdr {
    Hdr {
        data: data.to_vec(),
        ..e(name, tar::EntryType::Regular, mode)
    }
}

fn link(name: &str, kind: tar::EntryType, target: &str) -> Hdr {
    Hdr {
        link: target.into(),
        ..e(name, kind, 0o777)
    }
}

/// One raw tar header (names written as they are: tar::Builder refuses
/// `..` and absolute names, which are exactly what an attacker sends).
fn header(h: &Hdr) -> tar::Header {
    let mut t = tar::Header::new_gnu();
    t.set_entry_type(h.kind);
    t.set_mode(h.mode);
    t.set_size(h.data.len() as u64);
    t.set_mtime(1_700_000_000);
    if let Some((ma, mi)) = h.dev {
        t.set_device_major(ma).unwrap();
        t.set_device_minor(mi).unwrap();
    }
    let old = t.as_old_mut();
    old.name[..h.name.len()].copy_from_slice(h.name.as_bytes());
    old.linkname[..h.link.len()].copy_from_slice(h.link.as_bytes());
    t.set_cksum();
    t
}

fn layer(entries: &[Hdr]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for h in entries {
        b.append(&header(h), &h.data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

/// Writes a docker-save tarball of `layers` and imports it into a fresh
/// store with `limits`.
fn import(
    layers: &[Vec<u8>],
    limits: Limits,
) -> (tempfile::TempDir, ImageStore, Result<(), ImageError>) {
    let t = tempfile::tempdir().unwrap();
    let archive = t.path().join("evil.tar");
    testimage::write_docker_save(&archive, "evil:1", layers, &["sh"]).unwrap();
    let store = ImageStore::open(t.path().join("images"))
        .unwrap()
        .with_limits(limits);
    let r = store.import(&archive, None).map(|_| ());
    (t, store, r)
}

fn assert_refused(r: Result<(), ImageError>, entry: &str, wanted: &str) -> String {
    let err = r.expect_err("the image must be refused");
    let msg = err.to_string();
    println!("refused: {msg}");
    assert!(
        msg.contains("layer sha256:"),
        "error names the layer: {msg}"
    );
    assert!(
        msg.contains(&format!("{entry:?}")),
        "error names entry {entry:?}: {msg}"
    );
    assert!(msg.contains(wanted), "error says {wanted:?}: {msg}");
    msg
}

/// Nothing of a refused import stays in the store (staging removed).
fn assert_store_empty(store: &ImageStore) {
    assert!(store.list().unwrap().is_empty());
    let layers: Vec<_> = fs::read_dir(store.root().join("layers")).unwrap().collect();
    assert!(layers.is_empty(), "no layer kept: {layers:?}");
}

#[test]
fn symlink_then_chmod_through_a_child_is_refused() {
    let host = Host::new();
    let target = host.dir.to_str().unwrap();
    let l = layer(&[
        dir("d/", 0o755),
        link("d", tar::EntryType::Symlink, target),
        file("d/secret", 0o4777, b"pwned"),
    ]);
    let (_t, store, r) = import(&[l], Limits::default());
    assert_refused(r, "d/secret", "is a symlink or not a directory");
    host.assert_unchanged();
    assert_store_empty(&store);
}

#[test]
fn symlink_then_chmod_of_the_directory_is_neutralised() {
    // The reproducer: the directory entry's mode used to be applied at the
    // end through the path, i.e. through the symlink, to the host.
    let host = Host::new();
    let target = host.dir.to_str().unwrap();
    let l = layer(&[
        dir("d/", 0o7777),
        dir("d/sub/", 0o7777),
        link("d", tar::EntryType::Symlink, target),
    ]);
    let (_t, store, r) = import(&[l], Limits::default());
    r.expect("a symlink replacing a directory is a valid layer");
    host.assert_unchanged();
    let img = store.resolve("evil:1").unwrap();
    let d = img.layer_dirs[0].join("d");
    assert_eq!(
        fs::read_link(&d).unwrap(),
        host.dir,
        "d is the symlink, inert in the layer"
    );
}

#[test]
fn directory_reentry_after_symlink_stays_in_the_layer() {
    // A directory entry over the symlink replaces the symlink by a real
    // directory (the OCI rule: a later entry replaces an earlier one) and
    // its mode lands on that directory, not on the host.
    let host = Host::new();
    let target = host.dir.to_str().unwrap();
    let l = layer(&[
        dir("d/", 0o755),
        link("d", tar::EntryType::Symlink, target),
        dir("d/", 0o4777),
        file("d/secret", 0o644, b"in the layer"),
    ]);
    let (_t, store, r) = import(&[l], Limits::default());
    r.expect("valid layer");
    host.assert_unchanged();
    let img = store.resolve("evil:1").unwrap();
    let d = img.layer_dirs[0].join("d");
    let m = fs::symlink_metadata(&d).unwrap();
    assert!(m.is_dir());
    assert_eq!(m.mode() & 0o7777, 0o4777);
    assert_eq!(fs::read(d.join("secret")).unwrap(), b"in the layer");
}

#[test]
fn hardlinks_out_of_the_layer_are_refused() {
    let host = Host::new();
    let secret = host.dir.join("secret");
    let target = host.dir.to_str().unwrap();
    let cases: Vec<(Vec<Hdr>, &str, &str)> = vec![
        (
            vec![link(
                "h",
                tar::EntryType::Link,
                "../../../../../../etc/passwd",
            )],
            "h",
            "'..'",
        ),
        (
            vec![link("h", tar::EntryType::Link, secret.to_str().unwrap())],
            "h",
            "absolute path",
        ),
        (
            vec![
                link("d", tar::EntryType::Symlink, target),
                link("h", tar::EntryType::Link, "d/secret"),
            ],
            "h",
            "not a directory of the layer",
        ),
        (
            vec![
                link("s", tar::EntryType::Symlink, secret.to_str().unwrap()),
                link("h", tar::EntryType::Link, "s"),
                file("h", 0o4777, b"pwned"),
            ],
            // The link to the symlink links the symlink itself; the file
            // entry then replaces it: neither touches the host.
            "",
            "",
        ),
    ];
    for (i, (entries, entry, wanted)) in cases.into_iter().enumerate() {
        let (_t, store, r) = import(&[layer(&entries)], Limits::default());
        if entry.is_empty() {
            r.unwrap_or_else(|e| panic!("case {i}: {e}"));
        } else {
            assert_refused(r, entry, wanted);
            assert_store_empty(&store);
        }
        host.assert_unchanged();
    }
}

#[test]
fn dotdot_and_absolute_paths_are_refused() {
    let host = Host::new();
    let rel = format!("../../../../../../../..{}/escape", host.dir.display());
    let abs = format!("{}/escape", host.dir.display());
    for (name, wanted) in [
        (rel.as_str(), "'..'"),
        ("a/../../escape", "'..'"),
        (abs.as_str(), "absolute path"),
    ] {
        let (_t, store, r) = import(&[layer(&[file(name, 0o4777, b"pwned")])], Limits::default());
        assert_refused(r, name, wanted);
        assert_store_empty(&store);
        host.assert_unchanged();
    }
    // Relative symlinks that climb out are refused too.
    let (_t, _store, r) = import(
        &[layer(&[link(
            "x/evil",
            tar::EntryType::Symlink,
            "../../../../etc",
        )])],
        Limits::default(),
    );
    assert_refused(r, "x/evil", "outside the layer");
}

#[test]
#[ignore = "requires root: whiteouts are character devices"]
fn device_nodes_and_fifos_are_dropped() {
    let mut blk = e("dev/sda", tar::EntryType::Block, 0o666);
    blk.dev = Some((8, 0));
    let mut chr = e("dev/mem", tar::EntryType::Char, 0o666);
    chr.dev = Some((1, 1));
    let fifo = e("run/fifo", tar::EntryType::Fifo, 0o666);
    let l = layer(&[
        dir("dev/", 0o755),
        blk,
        chr,
        fifo,
        file("etc/gone", 0o644, b"x"),
        file("etc/.wh.gone", 0o644, b""),
        file("etc/kept", 0o644, b"kept"),
    ]);
    let (_t, store, r) = import(&[l], Limits::default());
    r.expect("devices are dropped, not an error");
    let root = &store.resolve("evil:1").unwrap().layer_dirs[0];
    for p in ["dev/sda", "dev/mem", "run/fifo"] {
        assert!(
            fs::symlink_metadata(root.join(p)).is_err(),
            "{p} must not exist in the layer"
        );
    }
    // The whiteout is still an overlayfs whiteout (0/0 character device).
    let wh = fs::symlink_metadata(root.join("etc/gone")).unwrap();
    use std::os::unix::fs::FileTypeExt;
    assert!(wh.file_type().is_char_device());
    assert_eq!(wh.rdev(), 0);
    assert_eq!(fs::read(root.join("etc/kept")).unwrap(), b"kept");
}

/// A GNU sparse entry of `real` bytes holding one byte of data at the end:
/// 512 bytes in the tarball, `real` bytes once unpacked.
fn sparse_layer(name: &str, real: u64) -> Vec<u8> {
    let mut t = tar::Header::new_gnu();
    t.set_entry_type(tar::EntryType::GNUSparse);
    t.set_mode(0o644);
    t.set_size(1);
    t.set_mtime(1_700_000_000);
    t.set_path(name).unwrap();
    let g = t.as_gnu_mut().unwrap();
    g.set_real_size(real);
    g.sparse[0].set_offset(real - 1);
    g.sparse[0].set_length(1);
    t.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&t, &b"x"[..]).unwrap();
    b.into_inner().unwrap()
}

#[test]
fn a_10_gb_sparse_file_is_refused_before_writing() {
    let host = Host::new();
    let l = sparse_layer("big", 10 << 30);
    assert!(l.len() < 8192, "the tarball is tiny: {} bytes", l.len());
    let started = Instant::now();
    let (_t, store, r) = import(&[l], Limits::default());
    let msg = assert_refused(r, "big", "--image-max-unpacked-bytes");
    assert!(
        msg.contains(&(1u64 << 30).to_string()),
        "names the limit: {msg}"
    );
    println!("refused in {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_store_empty(&store);
    let used = fs_usage(store.root());
    assert!(
        used < 10 << 20,
        "store uses {used} bytes: nothing was written"
    );
    host.assert_unchanged();
}

/// Bytes allocated on disk under `dir`.
fn fs_usage(dir: &Path) -> u64 {
    let mut total = 0;
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = fs::symlink_metadata(e.path()).unwrap();
        total += m.blocks() * 512;
        if m.is_dir() {
            total += fs_usage(&e.path());
        }
    }
    total
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    g.write_all(data).unwrap();
    g.finish().unwrap()
}

/// 1,000 compressed members (gzip) or frames (zstd) of 10 MiB of zeros each: 10 GiB
/// once inflated, a few MB compressed. The first starts with a real tar entry;
/// everything after is zeros (the tar ends at the first zero block, the rest is still
/// read for the digest, through the limit).
fn assert_bomb_stopped(what: &str, compress: fn(&[u8]) -> Vec<u8>) {
    let mut first = layer(&[file("a", 0o644, b"a")]);
    first.resize(10 << 20, 0);
    let zeros = compress(&vec![0u8; 10 << 20]);
    let mut blob = compress(&first);
    for _ in 1..1000 {
        blob.extend_from_slice(&zeros);
    }
    println!(
        "{what} bomb: {} bytes compressed, 10 GiB inflated",
        blob.len()
    );
    let limit = 64 << 20;
    let limits = Limits {
        max_unpacked_bytes: limit,
        ..Limits::default()
    };
    let started = Instant::now();
    let (_t, store, r) = import(&[blob], limits);
    let elapsed = started.elapsed();
    let msg = assert_refused(r, "a", "--image-max-unpacked-bytes");
    assert!(msg.contains(&limit.to_string()), "names the limit: {msg}");
    println!("stopped after {elapsed:?}");
    assert_store_empty(&store);
    // Inflating all 10 GiB takes minutes here; 64 MiB takes about a second.
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
}

#[test]
fn a_gzip_bomb_is_stopped_early() {
    assert_bomb_stopped("gzip", gzip);
}

#[test]
fn a_zstd_bomb_is_stopped_early() {
    // Registries serve `tar+zstd` layers.
    assert_bomb_stopped("zstd", |data| {
        ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
    });
}

#[test]
fn a_gzip_bomb_of_many_files_is_refused_at_the_limit() {
    // Files of 8 MiB each, under the limit one by one, over it together.
    let chunk = vec![0u8; 8 << 20];
    let entries: Vec<Hdr> = (0..12)
        .map(|i| file(&format!("f{i}"), 0o644, &chunk))
        .collect();
    let blob = gzip(&layer(&entries));
    let limits = Limits {
        max_unpacked_bytes: 64 << 20,
        ..Limits::default()
    };
    let (_t, store, r) = import(&[blob], limits);
    assert_refused(r, "f7", "--image-max-unpacked-bytes");
    assert_store_empty(&store);
}

/// A million empty-file entries as gzip members of 1,000 entries each (all
/// members alike, so the tarball is small and quick to build).
fn million_entries_layer() -> Vec<u8> {
    let mut chunk = Vec::with_capacity(1000 * 512);
    for i in 0..1000 {
        let h = header(&file(&format!("many/{i:04}"), 0o644, b""));
        chunk.extend_from_slice(h.as_bytes());
    }
    let member = gzip(&chunk);
    let mut blob = Vec::with_capacity(member.len() * 1000);
    for _ in 0..1000 {
        blob.extend_from_slice(&member);
    }
    blob
}

#[test]
fn a_million_tiny_entries_are_refused_by_the_entry_limit() {
    let blob = million_entries_layer();
    println!("1,000,000 entries in {} bytes", blob.len());
    // The default is 500,000; a lower limit keeps the test quick (the rule
    // is the same).
    let limits = Limits {
        max_entries: 5_000,
        ..Limits::default()
    };
    let started = Instant::now();
    let (_t, store, r) = import(&[blob], limits);
    let msg = assert_refused(r, "many/0000", "--image-max-entries");
    assert!(msg.contains("5000 entries"), "names the limit: {msg}");
    println!("refused after {:?}", started.elapsed());
    assert_store_empty(&store);
}

#[test]
fn overlong_paths_are_refused() {
    let long = format!("{}/f", "d".repeat(200)).repeat(30);
    let limits = Limits {
        max_path_len: 1024,
        ..Limits::default()
    };
    let mut t = tar::Header::new_gnu();
    t.set_entry_type(tar::EntryType::Regular);
    t.set_size(0);
    t.set_mode(0o644);
    let mut b = tar::Builder::new(Vec::new());
    b.append_data(&mut t, &long, &[][..]).unwrap();
    let (_t, _store, r) = import(&[b.into_inner().unwrap()], limits);
    let err = r.expect_err("refused");
    assert!(err.to_string().contains("over the limit of 1024"), "{err}");
}

#[test]
#[ignore = "requires root: files owned by other users"]
fn a_normal_image_keeps_its_modes_and_owners() {
    let t = tempfile::tempdir().unwrap();
    let archive = shoal_testkit::image::busybox(t.path(), "busybox:ok");
    // A second layer with other owners and set-id bits, as real images have.
    let mut extra = vec![dir("home/user/", 0o700), file("usr/bin/su", 0o4755, b"su")];
    let mut b = tar::Builder::new(Vec::new());
    for h in extra.drain(..) {
        let mut hd = header(&h);
        if h.name.starts_with("home/user") {
            hd.set_uid(1000);
            hd.set_gid(1000);
            hd.set_cksum();
        }
        b.append(&hd, &h.data[..]).unwrap();
    }
    let extra = b.into_inner().unwrap();
    let store = ImageStore::open(t.path().join("images")).unwrap();
    store.import(&archive, None).expect("busybox imports");
    let bb = store.resolve("busybox:ok").unwrap();
    let root = &bb.layer_dirs[0];
    let check = |p: &str, mode: u32, uid: u32| {
        let m = fs::symlink_metadata(root.join(p)).unwrap();
        assert_eq!((p, m.mode() & 0o7777, m.uid()), (p, mode, uid));
        assert_eq!(m.mtime(), 1_700_000_000, "{p}: mtime");
    };
    check("bin/busybox", 0o755, 0);
    check("etc/passwd", 0o644, 0);
    check("tmp", 0o1777, 0);
    check("usr/bin", 0o755, 0);
    assert_eq!(
        fs::read_link(root.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    let mut bin = Vec::new();
    fs::File::open(root.join("bin/busybox"))
        .unwrap()
        .read_to_end(&mut bin)
        .unwrap();
    assert_eq!(bin, fs::read(testimage::BUSYBOX).unwrap());

    let (_t2, store2, r) = import(&[extra], Limits::default());
    r.expect("imports");
    let root = &store2.resolve("evil:1").unwrap().layer_dirs[0];
    let home = fs::metadata(root.join("home/user")).unwrap();
    assert_eq!(
        (home.mode() & 0o7777, home.uid(), home.gid()),
        (0o700, 1000, 1000)
    );
    let su = fs::metadata(root.join("usr/bin/su")).unwrap();
    assert_eq!(su.mode() & 0o7777, 0o4755, "set-uid kept after chown");
}

#[test]
fn an_archive_over_the_limit_is_refused_while_staging() {
    // The docker-save tarball itself (not a layer) is held to the limit.
    let big = layer(&[file("f", 0o644, &vec![7u8; 3 << 20])]);
    let limits = Limits {
        max_unpacked_bytes: 2 << 20,
        ..Limits::default()
    };
    let (_t, store, r) = import(&[big], limits);
    let err = r.expect_err("refused");
    let msg = err.to_string();
    assert!(
        msg.contains("(archive)") && msg.contains("layer.tar"),
        "{msg}"
    );
    assert!(msg.contains("--image-max-unpacked-bytes"), "{msg}");
    assert_store_empty(&store);
}
