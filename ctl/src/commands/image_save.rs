//! `shoalctl image save NAME… -o FILE`: a tarball of cluster images that `docker load`,
//! `skopeo docker-archive:` and `image import` read (shoal-image's [`archive`] layout:
//! OCI layout plus Docker's `manifest.json`). Blobs stream from the controller into
//! `FILE.tmp`, which is synced and renamed to FILE once complete, so FILE is never half
//! written; `-o -` writes to stdout.

use std::path::{Path, PathBuf};

use shoal_image::archive::{self, ArchiveError, Member, SavedImage};
use shoal_image::registry::Reference as RegistryReference;

use super::image::{ClusterBlobs, blob_error, resolve};
use super::{Context, note, print};
use crate::error::CtlError;
use crate::output;

/// Runs `image save`.
pub async fn run(ctx: &mut Context, names: &[String], output: &Path) -> Result<(), CtlError> {
    let blobs = ClusterBlobs::new(ctx).await?;
    let mut images: Vec<SavedImage> = Vec::new();
    for name in names {
        let info = resolve(ctx, name).await?;
        let tag = saved_name(name, &info.names);
        match images
            .iter_mut()
            .find(|i| i.digest.to_string() == info.digest)
        {
            Some(i) => i.names.extend(tag.filter(|t| !i.names.contains(t))),
            None => images.push(blobs.image(&info, tag.into_iter().collect()).await?),
        }
    }
    let members = archive::plan(&images, true);
    let to_stdout = output.as_os_str() == "-";
    let mut progress = |m: &Member| {
        if let Member::Blob { digest, size, .. } = m {
            note(&format!(
                "saved {} {}",
                short(&digest.to_string()),
                output::size_text(*size)
            ));
        }
    };
    if to_stdout {
        let mut out = tokio::io::stdout();
        archive::write(&mut out, &members, &blobs, &mut progress)
            .await
            .map_err(|e| archive_error(e, Path::new("-")))?;
        return Ok(());
    }
    let tmp = tmp_path(output);
    let result = write_file(&tmp, output, &members, &blobs, &mut progress).await;
    match result {
        Ok(size) => print(&format!(
            "Saved {} image(s) to {} ({})\n",
            images.len(),
            output.display(),
            output::size_text(size)
        )),
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            Err(e)
        }
    }
}

/// Writes `members` to `tmp`, syncs it and renames it to `output`.
async fn write_file(
    tmp: &Path,
    output: &Path,
    members: &[Member],
    blobs: &ClusterBlobs,
    progress: &mut (dyn FnMut(&Member) + Send),
) -> Result<u64, CtlError> {
    let io = |path: &Path| {
        let shown = path.display().to_string();
        move |source| CtlError::Io {
            path: shown,
            source,
        }
    };
    let mut file = tokio::fs::File::create(tmp).await.map_err(io(tmp))?;
    let size = archive::write(&mut file, members, blobs, progress)
        .await
        .map_err(|e| archive_error(e, tmp))?;
    file.sync_all().await.map_err(io(tmp))?;
    drop(file);
    tokio::fs::rename(tmp, output).await.map_err(io(output))?;
    Ok(size)
}

/// `FILE` → `FILE.tmp` (in the same directory, so the rename is atomic).
fn tmp_path(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_os_string();
    name.push(".tmp");
    PathBuf::from(name)
}

fn archive_error(e: ArchiveError, path: &Path) -> CtlError {
    match e {
        ArchiveError::Write(source) => CtlError::Io {
            path: path.display().to_string(),
            source,
        },
        ArchiveError::Source { digest, source } => blob_error(&digest, source),
        e @ ArchiveError::Corrupt { .. } => CtlError::BadResponse(e.to_string()),
    }
}

/// The name to save an image under when it was asked for as `asked`: that name (as the
/// cluster records it) if the image has it, none when asked for by digest.
pub fn saved_name(asked: &str, names: &[String]) -> Option<String> {
    if asked.contains('@') || asked.starts_with("sha256:") {
        return None;
    }
    let normalized = shoal_image::normalize_reference(asked).ok()?;
    names
        .iter()
        .find(|n| **n == normalized)
        .cloned()
        .or_else(|| {
            // A name written another way (`docker.io/library/busybox`) that resolved.
            let key = |r: RegistryReference| (r.registry, r.repository, r.tag);
            let want = key(RegistryReference::parse(asked).ok()?);
            names
                .iter()
                .find(|n| RegistryReference::parse(n).ok().map(key).as_ref() == Some(&want))
                .cloned()
        })
}

/// `sha256:0123456789abcdef…` → `sha256:0123456789ab`.
pub fn short(digest: &str) -> String {
    digest.chars().take("sha256:".len() + 12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_under_the_name_asked_for() {
        let names = vec!["busybox:latest".to_string(), "busybox:1".to_string()];
        assert_eq!(
            saved_name("busybox", &names).as_deref(),
            Some("busybox:latest")
        );
        assert_eq!(
            saved_name("busybox:1", &names).as_deref(),
            Some("busybox:1")
        );
        assert_eq!(
            saved_name("docker.io/library/busybox:1", &names).as_deref(),
            Some("busybox:1")
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(saved_name(&d, &names), None);
        assert_eq!(saved_name(&format!("busybox@{d}"), &names), None);
        assert_eq!(
            tmp_path(Path::new("/x/b.tar")),
            PathBuf::from("/x/b.tar.tmp")
        );
        assert_eq!(short(&d), "sha256:aaaaaaaaaaaa");
    }
}
