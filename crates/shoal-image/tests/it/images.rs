//! Importing real busybox images and rejecting malicious layers.

use std::fs;
use std::path::Path;

use shoal_image::testimage;
use shoal_image::{ImageError, ImageStore};

fn busybox_layer() -> Vec<u8> {
    testimage::busybox_layer(Path::new(testimage::BUSYBOX)).expect("busybox layer")
}

#[test]
fn imports_busybox_in_both_formats() {
    let t = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::open(t.path().join("images")).expect("store");
    let layer = busybox_layer();
    let ds = t.path().join("bb.tar");
    testimage::write_docker_save(&ds, "busybox:latest", std::slice::from_ref(&layer), &["sh"])
        .expect("docker save");
    let oci = t.path().join("bb-oci.tar.gz");
    testimage::write_oci_layout_gz(&oci, "busybox:oci", &[layer], &["sh"]).expect("oci");
    store.import(&ds, None).expect("import docker save");
    store.import(&oci, None).expect("import oci");
    let a = store.resolve("busybox").expect("resolve");
    let b = store.resolve("busybox:oci").expect("resolve");
    assert_eq!(a.config.cmd, vec!["sh"]);
    assert!(a.config.env.iter().any(|e| e.starts_with("PATH=")));
    assert!(a.layer_dirs[0].join("bin/busybox").is_file());
    assert_eq!(
        fs::read_link(b.layer_dirs[0].join("bin/sh")).expect("symlink"),
        Path::new("busybox")
    );
    assert_ne!(a.layers, b.layers, "gzip and plain blobs differ");
    let names: Vec<String> = store
        .list()
        .expect("list")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, vec!["busybox:latest", "busybox:oci"]);
}

/// A tar with raw names (tar::Builder refuses '..').
fn raw_tar(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, link, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_mode(0o755);
        h.set_size(data.len() as u64);
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_cksum();
        b.append(&h, *data).expect("append");
    }
    b.into_inner().expect("tar")
}

#[test]
fn malicious_layers_are_rejected_and_write_nothing() {
    let t = tempfile::tempdir().expect("tempdir");
    let outside = t.path().join("outside");
    fs::create_dir(&outside).expect("mkdir");
    let store = ImageStore::open(t.path().join("store/images")).expect("store");
    let target = outside.display().to_string();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "dotdot",
            raw_tar(&[("../../../outside/pwned", tar::EntryType::Regular, "", b"x")]),
        ),
        (
            "absolute",
            raw_tar(&[(
                &format!("{target}/pwned"),
                tar::EntryType::Regular,
                "",
                b"x",
            )]),
        ),
        (
            "symlink-escape",
            raw_tar(&[
                ("evil", tar::EntryType::Symlink, &target, b""),
                ("evil/pwned", tar::EntryType::Regular, "", b"x"),
            ]),
        ),
        (
            "relative-symlink-out",
            raw_tar(&[(
                "bin/evil",
                tar::EntryType::Symlink,
                "../../../../../outside",
                b"",
            )]),
        ),
        (
            "hardlink-out",
            raw_tar(&[("h", tar::EntryType::Link, "../../../../etc/passwd", b"")]),
        ),
    ];
    for (name, layer) in cases {
        // A good layer first, so a partial import would leave something.
        let ds = t.path().join(format!("{name}.tar"));
        testimage::write_docker_save(
            &ds,
            &format!("evil:{name}"),
            &[busybox_layer(), layer],
            &["sh"],
        )
        .expect("docker save");
        let err = store.import(&ds, None).expect_err(name);
        assert!(
            matches!(err, ImageError::UnsafeEntry { .. }),
            "{name}: {err}"
        );
        assert!(err.to_string().contains("rejected"), "{name}: {err}");
        assert!(
            fs::read_dir(&outside).expect("outside").next().is_none(),
            "{name}: wrote outside"
        );
        for sub in ["layers", "blobs/sha256", "tmp"] {
            assert!(
                fs::read_dir(store.root().join(sub))
                    .expect("dir")
                    .next()
                    .is_none(),
                "{name}: left {sub}"
            );
        }
        assert!(store.list().expect("list").is_empty());
    }
}
