//! Writing image tarballs that `docker load`, `skopeo docker-archive:` and our own import
//! read: the layout `docker save` writes since Docker 25, an OCI image layout
//! (`oci-layout`, `index.json`, `blobs/sha256/<hex>`) with Docker's `manifest.json`
//! (`Config`, `RepoTags`, `Layers`, naming files under `blobs/`) beside it. A reader of
//! either format finds what it needs, and the manifest blob is kept byte for byte, so the
//! image keeps its digest through a save and an OCI import.
//!
//! [`plan`] decides the members (pure, tested); [`write`] streams them, blob after blob,
//! from a [`BlobSource`] into an async writer, checking each blob's size and digest as it
//! passes: an image is never held in memory.

use std::future::Future;
use std::io;
use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::config::{self, Manifest};
use crate::digest::Digest;

/// A blob's bytes as they arrive.
pub type BlobStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// Where blobs are read from (the controllers, a directory).
pub trait BlobSource: Send + Sync {
    /// Opens blob `digest` of `size` bytes; an error names the blob and the source.
    fn open(
        &self,
        digest: &Digest,
        size: u64,
    ) -> impl Future<Output = io::Result<BlobStream>> + Send;
}

/// The blobs of an image store's layout (`ROOT/blobs/sha256/<hex>`), read from files.
#[derive(Debug, Clone)]
pub struct DirSource(pub std::path::PathBuf);

impl BlobSource for DirSource {
    async fn open(&self, digest: &Digest, _size: u64) -> io::Result<BlobStream> {
        let path = self.0.join("blobs/sha256").join(digest.hex());
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Ok(Box::pin(file_stream(file)))
    }
}

/// A file as a stream of 256 KiB chunks.
fn file_stream(file: tokio::fs::File) -> impl Stream<Item = io::Result<Bytes>> + Send {
    futures::stream::unfold(Some(file), |state| async move {
        use tokio::io::AsyncReadExt;
        let mut file = state?;
        let mut buf = vec![0u8; 256 << 10];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

/// One image to write.
#[derive(Debug, Clone)]
pub struct SavedImage {
    /// `name:tag` references (`RepoTags`, and one `index.json` entry each).
    pub names: Vec<String>,
    /// The manifest's digest.
    pub digest: Digest,
    /// The manifest as stored (written unchanged).
    pub manifest_bytes: Vec<u8>,
    /// The manifest, parsed.
    pub manifest: Manifest,
}

impl SavedImage {
    /// Parses `manifest_bytes`, checking them against `digest`.
    pub fn new(
        names: Vec<String>,
        digest: Digest,
        manifest_bytes: Vec<u8>,
    ) -> Result<Self, String> {
        let actual = Digest::of_bytes(&manifest_bytes);
        if actual != digest {
            return Err(format!("manifest {digest}: the bytes hash to {actual}"));
        }
        let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| format!("manifest {digest}: {e}"))?;
        Ok(Self {
            names,
            digest,
            manifest_bytes,
            manifest,
        })
    }

    fn media_type(&self) -> &str {
        if self.manifest.media_type.is_empty() {
            config::OCI_MANIFEST
        } else {
            &self.manifest.media_type
        }
    }
}

/// One member of the tarball.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Member {
    /// A small file written from memory (`oci-layout`, `index.json`, `manifest.json`, a
    /// manifest blob).
    File {
        /// Path in the tarball.
        path: String,
        /// Content.
        data: Vec<u8>,
    },
    /// A blob streamed from the [`BlobSource`].
    Blob {
        /// Path in the tarball (`blobs/sha256/<hex>`).
        path: String,
        /// The blob.
        digest: Digest,
        /// Its size in bytes.
        size: u64,
    },
}

impl Member {
    /// Path in the tarball.
    pub fn path(&self) -> &str {
        match self {
            Member::File { path, .. } | Member::Blob { path, .. } => path,
        }
    }
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// The members of a tarball of `images`, in order: `oci-layout`, every blob once (configs
/// and layers streamed, manifests from memory), `index.json`, then (`docker`) Docker's
/// `manifest.json`. Without `docker` the tarball is an OCI layout only, which our import
/// reads keeping the manifest digest (it rebuilds a manifest from a `manifest.json`).
pub fn plan(images: &[SavedImage], docker: bool) -> Vec<Member> {
    let mut out = vec![Member::File {
        path: "oci-layout".into(),
        data: br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    }];
    let mut seen: Vec<Digest> = Vec::new();
    for img in images {
        for d in std::iter::once(&img.manifest.config).chain(&img.manifest.layers) {
            if !seen.contains(&d.digest) {
                seen.push(d.digest.clone());
                out.push(Member::Blob {
                    path: blob_path(&d.digest),
                    digest: d.digest.clone(),
                    size: d.size,
                });
            }
        }
        if !seen.contains(&img.digest) {
            seen.push(img.digest.clone());
            out.push(Member::File {
                path: blob_path(&img.digest),
                data: img.manifest_bytes.clone(),
            });
        }
    }
    let mut manifests = Vec::new();
    for img in images {
        let desc = |annotations: Option<(&str, &str)>| {
            let mut d = json!({
                "mediaType": img.media_type(),
                "digest": img.digest.to_string(),
                "size": img.manifest_bytes.len(),
            });
            if let Some((full, tag)) = annotations {
                d["annotations"] = json!({
                    "io.containerd.image.name": full,
                    "org.opencontainers.image.ref.name": tag,
                });
            }
            d
        };
        if img.names.is_empty() {
            manifests.push(desc(None));
        }
        for n in &img.names {
            let full = full_name(n);
            let tag = full.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
            manifests.push(desc(Some((&full, tag))));
        }
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": config::OCI_INDEX,
        "manifests": manifests,
    });
    out.push(Member::File {
        path: "index.json".into(),
        data: index.to_string().into_bytes(),
    });
    if docker {
        let entries: Vec<Value> = images
            .iter()
            .map(|img| {
                json!({
                    "Config": blob_path(&img.manifest.config.digest),
                    "RepoTags": if img.names.is_empty() { Value::Null } else { json!(img.names) },
                    "Layers": img.manifest.layers.iter().map(|l| blob_path(&l.digest)).collect::<Vec<_>>(),
                })
            })
            .collect();
        out.push(Member::File {
            path: "manifest.json".into(),
            data: Value::Array(entries).to_string().into_bytes(),
        });
    }
    out
}

/// `busybox:1` → `docker.io/library/busybox:1`, `h:5000/a:b` unchanged (containerd's
/// image name, which `io.containerd.image.name` holds).
pub fn full_name(name: &str) -> String {
    let first = name.split('/').next().unwrap_or(name);
    let has_registry =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_registry {
        name.to_string()
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    }
}

/// Why writing a tarball failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Reading a blob from its source failed.
    #[error("reading blob {digest}: {source}")]
    Source {
        /// The blob.
        digest: Digest,
        /// Cause (names the source).
        source: io::Error,
    },
    /// A blob's content does not match its descriptor.
    #[error("blob {digest}: {message}")]
    Corrupt {
        /// The blob.
        digest: Digest,
        /// What is wrong.
        message: String,
    },
    /// Writing the tarball failed.
    #[error("writing the archive: {0}")]
    Write(io::Error),
}

/// A ustar header for a regular file (mode 0644, mtime 0, owner root).
pub fn tar_header(path: &str, size: u64) -> io::Result<[u8; 512]> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path)?;
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut out = [0u8; 512];
    out.copy_from_slice(h.as_bytes());
    Ok(out)
}

fn padding(size: u64) -> usize {
    ((512 - size % 512) % 512) as usize
}

/// Called after each blob is written, with the member and whether it was streamed.
pub type Progress<'a> = &'a mut (dyn FnMut(&Member) + Send);

/// Writes `members` as a tar stream to `out`, blobs from `source` (size and digest checked
/// as they pass). Returns the bytes written. `out` is flushed but not synced.
pub async fn write<W, S>(
    out: &mut W,
    members: &[Member],
    source: &S,
    progress: Progress<'_>,
) -> Result<u64, ArchiveError>
where
    W: AsyncWrite + Unpin + Send,
    S: BlobSource,
{
    let mut written = 0u64;
    let zeros = [0u8; 1024];
    for m in members {
        match m {
            Member::File { path, data } => {
                let h = tar_header(path, data.len() as u64).map_err(ArchiveError::Write)?;
                out.write_all(&h).await.map_err(ArchiveError::Write)?;
                out.write_all(data).await.map_err(ArchiveError::Write)?;
                let pad = padding(data.len() as u64);
                out.write_all(&zeros[..pad])
                    .await
                    .map_err(ArchiveError::Write)?;
                written += 512 + data.len() as u64 + pad as u64;
            }
            Member::Blob { path, digest, size } => {
                let h = tar_header(path, *size).map_err(ArchiveError::Write)?;
                out.write_all(&h).await.map_err(ArchiveError::Write)?;
                let mut stream =
                    source
                        .open(digest, *size)
                        .await
                        .map_err(|source| ArchiveError::Source {
                            digest: digest.clone(),
                            source,
                        })?;
                let mut hasher = Sha256::new();
                let mut got = 0u64;
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|source| ArchiveError::Source {
                        digest: digest.clone(),
                        source,
                    })?;
                    got += chunk.len() as u64;
                    if got > *size {
                        return Err(ArchiveError::Corrupt {
                            digest: digest.clone(),
                            message: format!("longer than the {size} bytes its manifest says"),
                        });
                    }
                    hasher.update(&chunk);
                    out.write_all(&chunk).await.map_err(ArchiveError::Write)?;
                }
                if got != *size {
                    return Err(ArchiveError::Corrupt {
                        digest: digest.clone(),
                        message: format!("{got} bytes, its manifest says {size}"),
                    });
                }
                let actual = hex::encode(hasher.finalize());
                if actual != digest.hex() {
                    return Err(ArchiveError::Corrupt {
                        digest: digest.clone(),
                        message: format!("the bytes hash to sha256:{actual}"),
                    });
                }
                let pad = padding(*size);
                out.write_all(&zeros[..pad])
                    .await
                    .map_err(ArchiveError::Write)?;
                written += 512 + size + pad as u64;
            }
        }
        progress(m);
    }
    out.write_all(&zeros).await.map_err(ArchiveError::Write)?;
    out.flush().await.map_err(ArchiveError::Write)?;
    Ok(written + 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Descriptor;
    use std::collections::BTreeMap;
    use std::io::Read;

    /// Blobs from memory.
    struct Mem(BTreeMap<Digest, Vec<u8>>);

    impl BlobSource for Mem {
        async fn open(&self, d: &Digest, _size: u64) -> io::Result<BlobStream> {
            let data = self
                .0
                .get(d)
                .cloned()
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no {d}")))?;
            // Two chunks, to exercise the streaming.
            let half = data.len() / 2;
            let parts = vec![
                Ok(Bytes::copy_from_slice(&data[..half])),
                Ok(Bytes::copy_from_slice(&data[half..])),
            ];
            Ok(Box::pin(futures::stream::iter(parts)))
        }
    }

    fn desc(mt: &str, data: &[u8]) -> Descriptor {
        Descriptor {
            media_type: mt.into(),
            digest: Digest::of_bytes(data),
            size: data.len() as u64,
            platform: None,
            annotations: Default::default(),
        }
    }

    fn image(
        names: &[&str],
        layers: &[&[u8]],
        blobs: &mut BTreeMap<Digest, Vec<u8>>,
    ) -> SavedImage {
        let cfg = br#"{"rootfs":{"type":"layers","diff_ids":[]}}"#;
        blobs.insert(Digest::of_bytes(cfg), cfg.to_vec());
        for l in layers {
            blobs.insert(Digest::of_bytes(l), l.to_vec());
        }
        let m = Manifest {
            schema_version: 2,
            media_type: config::OCI_MANIFEST.into(),
            config: desc(config::OCI_CONFIG, cfg),
            layers: layers
                .iter()
                .map(|l| desc(config::OCI_LAYER_TAR, l))
                .collect(),
        };
        let bytes = serde_json::to_vec(&m).unwrap();
        SavedImage::new(
            names.iter().map(|s| s.to_string()).collect(),
            Digest::of_bytes(&bytes),
            bytes,
        )
        .unwrap()
    }

    #[test]
    fn plans_both_layouts_with_each_blob_once() {
        let mut blobs = BTreeMap::new();
        let a = image(
            &["busybox:latest", "busybox:1"],
            &[b"one", b"two"],
            &mut blobs,
        );
        let b = image(&[], &[b"two", b"three"], &mut blobs);
        let members = plan(&[a.clone(), b.clone()], true);
        let paths: Vec<&str> = members.iter().map(Member::path).collect();
        assert_eq!(paths[0], "oci-layout");
        assert_eq!(paths[paths.len() - 2], "index.json");
        assert_eq!(paths[paths.len() - 1], "manifest.json");
        // config (shared), one, two, manifest a, three, manifest b
        assert_eq!(paths.len(), 1 + 6 + 2, "{paths:?}");
        let mut unique = paths.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), paths.len(), "{paths:?}");
        let Member::File { data, .. } = &members[members.len() - 1] else {
            panic!()
        };
        let docker: Value = serde_json::from_slice(data).unwrap();
        assert_eq!(
            docker[0]["RepoTags"],
            json!(["busybox:latest", "busybox:1"])
        );
        assert_eq!(
            docker[0]["Config"],
            format!("blobs/sha256/{}", a.manifest.config.digest.hex())
        );
        assert_eq!(docker[0]["Layers"].as_array().unwrap().len(), 2);
        assert_eq!(docker[1]["RepoTags"], Value::Null);
        let Member::File { data, .. } = &members[members.len() - 2] else {
            panic!()
        };
        let index: Value = serde_json::from_slice(data).unwrap();
        let m = index["manifests"].as_array().unwrap();
        assert_eq!(m.len(), 3, "one entry per name, one for the unnamed image");
        assert_eq!(
            m[0]["annotations"]["io.containerd.image.name"],
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            m[1]["annotations"]["org.opencontainers.image.ref.name"],
            "1"
        );
        assert_eq!(m[2]["digest"], b.digest.to_string());
        assert!(m[2].get("annotations").is_none());
        // OCI only.
        let oci = plan(&[a], false);
        assert!(oci.iter().all(|m| m.path() != "manifest.json"));
    }

    #[test]
    fn names_as_containerd_writes_them() {
        assert_eq!(full_name("busybox:1"), "docker.io/library/busybox:1");
        assert_eq!(full_name("team/app:v1"), "docker.io/team/app:v1");
        assert_eq!(full_name("127.0.0.1:5000/app:v1"), "127.0.0.1:5000/app:v1");
        assert_eq!(full_name("localhost/app:v1"), "localhost/app:v1");
    }

    #[tokio::test]
    async fn writes_a_tarball_that_tar_reads_back_and_checks_blobs() {
        let mut blobs = BTreeMap::new();
        let a = image(&["app:v1"], &[&[7u8; 1000], b"x"], &mut blobs);
        let members = plan(std::slice::from_ref(&a), true);
        let source = Mem(blobs.clone());
        let mut out = Vec::new();
        let mut seen = Vec::new();
        let n = write(&mut out, &members, &source, &mut |m: &Member| {
            seen.push(m.path().to_string())
        })
        .await
        .unwrap();
        assert_eq!(n, out.len() as u64);
        assert_eq!(seen.len(), members.len());
        let mut ar = tar::Archive::new(&out[..]);
        let mut got = BTreeMap::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let p = e.path().unwrap().display().to_string();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            got.insert(p, data);
        }
        for (d, data) in &blobs {
            assert_eq!(&got[&format!("blobs/sha256/{}", d.hex())], data);
        }
        assert_eq!(
            &got[&format!("blobs/sha256/{}", a.digest.hex())],
            &a.manifest_bytes
        );
        assert!(got.contains_key("manifest.json") && got.contains_key("index.json"));

        // A source whose bytes differ from the digest: refused, naming the blob.
        let layer = a.manifest.layers[0].digest.clone();
        let mut bad = blobs.clone();
        bad.insert(layer.clone(), vec![8u8; 1000]);
        let e = write(&mut Vec::new(), &members, &Mem(bad), &mut |_: &Member| {})
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!("blob {layer}: the bytes hash to")),
            "{e}"
        );
        let mut short = blobs;
        short.insert(layer.clone(), vec![7u8; 10]);
        let e = write(&mut Vec::new(), &members, &Mem(short), &mut |_: &Member| {})
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("10 bytes, its manifest says 1000"), "{e}");
    }

    #[test]
    fn refuses_manifest_bytes_that_do_not_match_the_digest() {
        let e = SavedImage::new(vec![], Digest::of_bytes(b"a"), b"b".to_vec()).unwrap_err();
        assert!(e.contains("hash to"), "{e}");
    }
}
