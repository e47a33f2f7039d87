//! Command-line errors (no mount, no root needed).

use std::process::Command;

fn run(backing: &std::path::Path, mount: &std::path::Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal-lazyfs"))
        .arg(backing)
        .arg(mount)
        .output()
        .expect("run shoal-lazyfs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_missing_backing_directory_is_named() {
    let d = tempfile::tempdir().expect("tempdir");
    let missing = d.path().join("no-such-backing");
    let (ok, err) = run(&missing, d.path());
    assert!(!ok, "must fail; stderr: {err}");
    assert!(
        err.contains(&format!("backing directory {}", missing.display())),
        "stderr must name the backing directory: {err}"
    );
}

#[test]
fn a_missing_mount_point_is_named() {
    let d = tempfile::tempdir().expect("tempdir");
    let missing = d.path().join("no-such-mount");
    let (ok, err) = run(d.path(), &missing);
    assert!(!ok, "must fail; stderr: {err}");
    assert!(
        err.contains(&format!("mount point {}", missing.display())),
        "stderr must name the mount point: {err}"
    );
}

#[test]
fn a_file_as_backing_is_refused() {
    let d = tempfile::tempdir().expect("tempdir");
    let file = d.path().join("file");
    std::fs::write(&file, b"x").expect("write");
    let (ok, err) = run(&file, d.path());
    assert!(!ok, "must fail; stderr: {err}");
    assert!(
        err.contains("not a directory") && err.contains(&file.display().to_string()),
        "{err}"
    );
}
