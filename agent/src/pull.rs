//! Pulling an image from the controllers: Resolve, then each blob the local
//! store lacks is streamed into a partial file (resumed from its size after a
//! failure, on any controller), verified against its sha256 digest and
//! imported; finally the image is registered locally.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use shoal_proto::{BlobRequest, ResolveRequest};
use shoal_runtime::Runtime;
use shoal_runtime::digest::Digest;
use tokio::io::AsyncWriteExt;
use tonic::Code;

use shoal_client::{Client, ClientError};

/// Deadline of one image request.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why an image could not be pulled.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The controllers do not know the image.
    #[error("image {image:?} not found: {message}")]
    NotFound {
        /// The reference asked for.
        image: String,
        /// The controller's answer.
        message: String,
    },
    /// Anything else (network, verification, unpacking).
    #[error("pulling image {image:?}: {message}")]
    Failed {
        /// The reference asked for.
        image: String,
        /// What went wrong.
        message: String,
    },
}

/// One lock per blob digest: two pods pulling the same image at once must not
/// append to the same partial file.
static BLOB_LOCKS: std::sync::LazyLock<
    std::sync::Mutex<std::collections::BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
> = std::sync::LazyLock::new(Default::default);

fn blob_lock(d: &Digest) -> Arc<tokio::sync::Mutex<()>> {
    let mut m = BLOB_LOCKS.lock().unwrap_or_else(|p| p.into_inner());
    m.entry(d.to_string()).or_default().clone()
}

/// Attempts per blob (each resumes where the previous one stopped).
const BLOB_ATTEMPTS: usize = 6;

/// Makes sure `image` is in the local store; returns the manifest digest when
/// it had to be pulled, `None` when it was already there.
pub async fn ensure_image(
    ctl: &Client,
    rt: &Arc<Runtime>,
    image: &str,
    partial_dir: &Path,
) -> Result<Option<String>, PullError> {
    let failed = |message: String| PullError::Failed {
        image: image.to_string(),
        message,
    };
    let present = {
        let rt = rt.clone();
        let name = image.to_string();
        tokio::task::spawn_blocking(move || rt.images().resolve(&name).is_ok())
            .await
            .unwrap_or(false)
    };
    if present {
        return Ok(None);
    }
    let info = ctl
        .call_on(|ch| {
            let mut req = tonic::Request::new(ResolveRequest {
                name: image.to_string(),
            });
            req.set_timeout(REQUEST_TIMEOUT);
            async move { Client::images(ch).resolve(req).await }
        })
        .await
        .map_err(|e| match &e {
            ClientError::Status { status, .. } if status.code() == Code::NotFound => {
                PullError::NotFound {
                    image: image.to_string(),
                    message: e.to_string(),
                }
            }
            _ => failed(e.to_string()),
        })?;
    let parse = |d: &str| {
        d.parse::<Digest>()
            .map_err(|_| failed(format!("bad digest {d:?} from the controller")))
    };
    let manifest = parse(&info.digest)?;
    let mut blobs = vec![manifest.clone(), parse(&info.config_digest)?];
    for l in &info.layers {
        blobs.push(parse(l)?);
    }
    tokio::fs::create_dir_all(partial_dir)
        .await
        .map_err(|e| failed(format!("create {}: {e}", partial_dir.display())))?;
    for d in &blobs {
        let lock = blob_lock(d);
        let _held = lock.lock().await;
        if !rt.images().has_blob(d) {
            let t = std::time::Instant::now();
            fetch_blob(ctl, rt, d, partial_dir).await.map_err(failed)?;
            tracing::debug!(blob = %d, elapsed = ?t.elapsed(), "blob fetched");
        }
    }
    let t = std::time::Instant::now();
    let rt2 = rt.clone();
    let mut names = info.names.clone();
    names.push(image.to_string());
    let m = manifest.clone();
    tokio::task::spawn_blocking(move || rt2.images().register_pulled(&m, &names))
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(|e| failed(e.to_string()))?;
    tracing::debug!(image, elapsed = ?t.elapsed(), "image registered");
    Ok(Some(manifest.to_string()))
}

fn partial_path(dir: &Path, d: &Digest) -> PathBuf {
    dir.join(format!("{}.partial", d.hex()))
}

/// Streams blob `d` into its partial file, resuming after failures, then
/// imports it (verifying the digest).
async fn fetch_blob(ctl: &Client, rt: &Arc<Runtime>, d: &Digest, dir: &Path) -> Result<(), String> {
    let path = partial_path(dir, d);
    let mut last_error = String::new();
    for attempt in 0..BLOB_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 * attempt as u64)).await;
        }
        let offset = tokio::fs::metadata(&path)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        let stream = ctl
            .call_on(|ch| {
                let req = BlobRequest {
                    digest: d.to_string(),
                    offset,
                };
                async move { Client::images(ch).blob(req).await }
            })
            .await;
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) if e.code() == Some(Code::NotFound) => return Err(format!("blob {d}: {e}")),
            Err(e) if e.code() == Some(Code::OutOfRange) => {
                let _ = tokio::fs::remove_file(&path).await;
                last_error = e.to_string();
                continue;
            }
            Err(e) => {
                last_error = e.to_string();
                ctl.fail_over();
                continue;
            }
        };
        let mut f = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await
            .map_err(|e| format!("open {}: {e}", path.display()))?;
        let mut done = false;
        loop {
            match stream.message().await {
                Ok(Some(chunk)) => {
                    f.write_all(&chunk.data)
                        .await
                        .map_err(|e| format!("write {}: {e}", path.display()))?;
                }
                Ok(None) => {
                    done = true;
                    break;
                }
                Err(s) => {
                    last_error = format!("blob {d} from {}: {s}", ctl.address());
                    ctl.fail_over();
                    break;
                }
            }
        }
        f.flush()
            .await
            .map_err(|e| format!("write {}: {e}", path.display()))?;
        drop(f);
        if !done {
            continue;
        }
        let rt = rt.clone();
        let (p, dg) = (path.clone(), d.clone());
        let res = tokio::task::spawn_blocking(move || {
            let mut file =
                std::fs::File::open(&p).map_err(|e| format!("open {}: {e}", p.display()))?;
            rt.images()
                .import_blob(&dg, &mut file)
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?;
        let _ = tokio::fs::remove_file(&path).await;
        return res.map(|_| ());
    }
    Err(format!(
        "blob {d}: gave up after {BLOB_ATTEMPTS} attempts: {last_error}"
    ))
}
