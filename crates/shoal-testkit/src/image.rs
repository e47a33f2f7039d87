//! The busybox test image (needs Debian's `busybox-static` at `/bin/busybox`).

use std::path::{Path, PathBuf};

/// Writes a `docker save` tarball of a one-layer busybox image tagged `name` into `dir`
/// and returns its path.
///
/// # Panics
/// When `/bin/busybox` is missing or the tarball cannot be written.
pub fn busybox(dir: &Path, name: &str) -> PathBuf {
    let out = dir.join("busybox.tar");
    shoal_image::testimage::busybox_docker_save(
        Path::new(shoal_image::testimage::BUSYBOX),
        &out,
        name,
    )
    .unwrap_or_else(|e| {
        panic!(
            "build the busybox test image {} from {} (apt-get install busybox-static): {e}",
            out.display(),
            shoal_image::testimage::BUSYBOX
        )
    });
    out
}
