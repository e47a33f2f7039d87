//! The `Images` gRPC service: a controller receives an image tarball, verifies it with the
//! runtime's image store, keeps its blobs on disk ([`crate::blobs`]) with a second copy on
//! another controller, and records the image and where its blobs are through Raft; agents
//! pull only the blobs they lack, from any controller (which fetches a blob it lacks from
//! a holder once).
//!
//! Store objects (cluster-scoped, empty namespace):
//! - `BlobMeta//<hex>`: `{kind: "BlobMeta", digest, size, holders: [controller ids]}`;
//!   written only once every holder has the blob synced on disk
//! - `Image//<manifest hex>`: `{kind: "Image", names, digest, configDigest, layers,
//!   layerSizes, size, config, mediaType}`; written last, in one batch that also re-asserts
//!   every BlobMeta it uses (an `Update` with its revision), so an Image never refers to a
//!   blob a concurrent remove deleted.
//! - `Blob//<hex>.<NNNNN>`: base64 chunks of blobs imported by versions before blobs left
//!   the Raft log (a BlobMeta with `chunks` and no `holders`); still served and removed.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use shoal_image::ImageError;
use shoal_image::ImageStore;
use shoal_image::config::Manifest;
use shoal_image::digest::Digest;
use shoal_proto::images_server::{Images, ImagesServer};
use shoal_proto::{
    BlobChunk, BlobRequest, BlobUpload, ImageInfo, ImageListRequest, ImageListResponse,
    ImageRemoveRequest, ImageRemoveResponse, ImportChunk, ImportResponse, PutBlobResponse,
    ResolveRequest, TagRequest,
};
use shoal_store::{Consistency, Store, StoreError, Write};

use crate::blobs::{BlobStore, BlobWriter, Peers, copies_wanted, peer_order};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// How many times an import or remove re-reads and retries after a concurrent change.
const ATTEMPTS: usize = 5;

/// Largest gRPC message accepted on the Images service (import chunks).
const MAX_MESSAGE_BYTES: usize = 8 << 20;

/// What can go wrong serving the Images API.
#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    /// The request is malformed (bad reference, bad digest, misplaced tag).
    #[error("{0}")]
    Invalid(String),
    /// An imported archive is larger than `--max-image-size`.
    #[error(
        "import: the image archive is larger than the limit of {limit} bytes ({}); \
         raise it with the controller's --max-image-size",
        human_size(*limit)
    )]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// No image or blob by that reference.
    #[error("{0}")]
    NotFound(String),
    /// A blob offset past its end.
    #[error("offset {offset} is beyond the end of blob {digest} ({size} bytes)")]
    OutOfRange {
        /// The blob.
        digest: String,
        /// Requested offset.
        offset: u64,
        /// The blob's size.
        size: u64,
    },
    /// The archive was rejected by the image store (format, digest, unsafe layer entry).
    #[error("image import rejected: {0}")]
    Import(#[from] ImageError),
    /// A local file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// Stored data does not match its digest or shape.
    #[error("blob {digest}: {message}")]
    Corrupt {
        /// The blob or image digest.
        digest: String,
        /// What is wrong.
        message: String,
    },
    /// The replicated store failed or refused a write.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The client's request stream failed.
    #[error("receiving the import stream: {0}")]
    Stream(Status),
    /// A blob's content does not match the digest it was sent or asked for under.
    #[error("digest mismatch: expected {expected}, the {size} bytes received hash to {actual}")]
    DigestMismatch {
        /// The digest the blob was given under.
        expected: String,
        /// The digest of the bytes.
        actual: String,
        /// How many bytes were received.
        size: u64,
    },
    /// Another controller refused or failed a blob transfer.
    #[error("controller {addr}: {message}")]
    Peer {
        /// The other controller's address.
        addr: String,
        /// What it said (or why it could not be reached).
        message: String,
    },
    /// No second controller could take a copy of a blob.
    #[error("{0}")]
    Replication(String),
    /// A blocking task panicked or was cancelled.
    #[error("internal task failed: {0}")]
    Task(String),
}

/// Default of the controller's `--max-image-size`: 1 GiB per imported archive.
pub const DEFAULT_MAX_IMAGE_SIZE: u64 = 1 << 30;

/// `1073741824` -> `1 GiB`, `1536` -> `1.5 KiB`.
pub fn human_size(bytes: u64) -> String {
    let units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} bytes")
    } else if v.fract() == 0.0 {
        format!("{v:.0} {}", units[u])
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// Refuses an import once `received` bytes exceed `limit` (checked as bytes arrive, so
/// an oversized archive is stopped before it fills the disk).
pub fn check_import_size(received: u64, limit: u64) -> Result<(), ImagesError> {
    if received > limit {
        return Err(ImagesError::TooLarge { limit });
    }
    Ok(())
}

fn io_err(path: &Path, source: io::Error) -> ImagesError {
    ImagesError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Converts an images error to the gRPC status a client sees (the only such place).
pub fn to_status(e: &ImagesError) -> Status {
    match e {
        ImagesError::Invalid(_) => Status::invalid_argument(e.to_string()),
        ImagesError::TooLarge { .. } => Status::resource_exhausted(e.to_string()),
        ImagesError::NotFound(_) => Status::not_found(e.to_string()),
        ImagesError::OutOfRange { .. } => Status::out_of_range(e.to_string()),
        ImagesError::Import(ImageError::Io { .. }) => Status::internal(e.to_string()),
        ImagesError::Import(_) => Status::invalid_argument(e.to_string()),
        ImagesError::Io { .. } | ImagesError::Task(_) => Status::internal(e.to_string()),
        ImagesError::Corrupt { .. } => Status::data_loss(e.to_string()),
        ImagesError::DigestMismatch { .. } => Status::invalid_argument(e.to_string()),
        ImagesError::Peer { .. } | ImagesError::Replication(_) => {
            Status::unavailable(e.to_string())
        }
        ImagesError::Stream(s) => Status::new(s.code(), e.to_string()),
        ImagesError::Store(s) => match s {
            StoreError::Conflict { .. }
            | StoreError::AlreadyExists { .. }
            | StoreError::NotFound { .. } => {
                Status::aborted(format!("{s} (concurrent image change; retry)"))
            }
            other if other.is_retryable() => Status::unavailable(other.to_string()),
            StoreError::Invalid(_) => Status::invalid_argument(s.to_string()),
            other => Status::internal(other.to_string()),
        },
    }
}

impl From<ImagesError> for Status {
    fn from(e: ImagesError) -> Self {
        to_status(&e)
    }
}

/// Store key of chunk `index` of the blob with hex digest `hex`.
pub fn blob_key(hex: &str, index: u64) -> String {
    format!("Blob//{hex}.{index:05}")
}

/// Store key of a blob's `BlobMeta` object.
pub fn blob_meta_key(hex: &str) -> String {
    format!("BlobMeta//{hex}")
}

/// Store key of the `Image` object of a manifest digest (hex).
pub fn image_key(hex: &str) -> String {
    format!("Image//{hex}")
}

/// The `Image` object's fields (besides `kind` and `metadata`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRecord {
    /// `name:tag` references (may be empty: reachable by digest only).
    pub names: Vec<String>,
    /// Manifest digest `sha256:…`.
    pub digest: String,
    /// Config blob digest.
    pub config_digest: String,
    /// Layer blob digests, bottom first.
    pub layers: Vec<String>,
    /// Layer blob sizes, in the order of `layers`.
    pub layer_sizes: Vec<u64>,
    /// Sum of the layer sizes.
    pub size: u64,
    /// The image config JSON document.
    pub config: Value,
    /// The manifest's media type (Docker v2 or OCI); empty for images recorded before it
    /// was kept (then read from the manifest itself).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
}

impl ImageRecord {
    /// Every blob the image uses: config, layers, manifest.
    pub fn blobs(&self) -> BTreeSet<String> {
        let mut b: BTreeSet<String> = self.layers.iter().cloned().collect();
        b.insert(self.config_digest.clone());
        b.insert(self.digest.clone());
        b
    }

    fn to_object(&self) -> Value {
        let mut v = json!({"kind": "Image", "metadata": {"name": hex_of(&self.digest)}});
        if let (Some(m), Ok(Value::Object(fields))) =
            (v.as_object_mut(), serde_json::to_value(self))
        {
            m.extend(fields);
        }
        v
    }

    /// The protobuf form.
    pub fn to_info(&self) -> ImageInfo {
        ImageInfo {
            names: self.names.clone(),
            digest: self.digest.clone(),
            config_digest: self.config_digest.clone(),
            layers: self.layers.clone(),
            size: self.size,
            config_json: self.config.to_string(),
            layer_sizes: self.layer_sizes.clone(),
        }
    }
}

/// The `BlobMeta` object's fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlobMeta {
    /// Blob digest `sha256:…`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// The controllers that hold the blob on disk (synced before this was written).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holders: Vec<u64>,
    /// Legacy: number of `Blob` chunk objects in the store (0 for blobs on disk).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub chunks: u64,
    /// Legacy: raw bytes per chunk (the last may be shorter).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub chunk_size: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl BlobMeta {
    fn to_object(&self) -> Value {
        let mut object = json!({"kind": "BlobMeta", "metadata": {"name": hex_of(&self.digest)}});
        if let (Some(m), Ok(Value::Object(fields))) =
            (object.as_object_mut(), serde_json::to_value(self))
        {
            m.extend(fields);
        }
        object
    }
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

fn revision_of(v: &Value) -> u64 {
    v.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn parse_image(v: &Value) -> Result<ImageRecord, ImagesError> {
    serde_json::from_value(v.clone()).map_err(|e| ImagesError::Corrupt {
        digest: v
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string(),
        message: format!("stored Image object: {e}"),
    })
}

fn parse_meta(v: &Value) -> Result<BlobMeta, ImagesError> {
    serde_json::from_value(v.clone()).map_err(|e| ImagesError::Corrupt {
        digest: v
            .pointer("/digest")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string(),
        message: format!("stored BlobMeta object: {e}"),
    })
}

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// `name:tag`, normalized (`busybox` → `busybox:latest`).
    Name(String),
    /// A manifest digest (`sha256:…`, or the digest part of `name@sha256:…`).
    Digest(Digest),
}

/// Parses `busybox`, `busybox:1`, `docker.io/library/busybox`, `sha256:…` or `name@sha256:…`.
pub fn parse_reference(name: &str) -> Result<Reference, ImagesError> {
    let name = name.trim();
    let digest_part = name
        .strip_prefix("sha256:")
        .map(|_| name)
        .or_else(|| name.split_once('@').map(|(_, d)| d));
    if let Some(d) = digest_part {
        return d.parse::<Digest>().map(Reference::Digest).map_err(|_| {
            ImagesError::Invalid(format!(
                "invalid image reference {name:?}: expected NAME[:TAG] or sha256:<64 hex>"
            ))
        });
    }
    shoal_image::normalize_reference(name)
        .map(Reference::Name)
        .map_err(|_| {
            ImagesError::Invalid(format!(
                "invalid image reference {name:?}: expected NAME[:TAG] or sha256:<64 hex>"
            ))
        })
}

/// `HOST:PORT/team-a/web:1` → `team-a/web:1` when PORT is the built-in registry's port
/// (what a pod names after pushing there); any other reference unchanged.
pub fn strip_registry_host(name: &str, registry_port: Option<u16>) -> &str {
    let Some(port) = registry_port else {
        return name;
    };
    match name.split_once('/') {
        Some((host, rest))
            if host
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                == Some(port) =>
        {
            rest
        }
        _ => name,
    }
}

/// The writes that move `names` to the image `digest`: every other image holding one of them
/// loses it (`Update` with its revision). Pure, for tests.
pub fn plan_name_moves(
    images: &[(ImageRecord, u64)],
    digest: &str,
    names: &[String],
) -> Vec<Write> {
    let mut out = Vec::new();
    for (img, rev) in images {
        if img.digest == digest || !img.names.iter().any(|n| names.contains(n)) {
            continue;
        }
        let mut moved = img.clone();
        moved.names.retain(|n| !names.contains(n));
        out.push(Write::Update {
            key: image_key(hex_of(&img.digest)),
            object: moved.to_object(),
            expected_revision: Some(*rev),
        });
    }
    out
}

/// What tagging does: the record of the image `source` (a manifest digest) with the name
/// `target` added, and the writes that store it and take the name off any other image (none
/// when the image has the name already). Pure, for tests.
pub fn plan_tag(
    images: &[(ImageRecord, u64)],
    source: &str,
    target: &str,
) -> Result<(ImageRecord, Vec<Write>), ImagesError> {
    let Some((image, rev)) = images.iter().find(|(i, _)| i.digest == source) else {
        return Err(ImagesError::NotFound(format!("image {source:?} not found")));
    };
    let mut tagged = image.clone();
    if tagged.names.iter().any(|n| n == target) {
        return Ok((tagged, Vec::new()));
    }
    tagged.names.push(target.to_string());
    let mut writes = plan_name_moves(images, source, &[target.to_string()]);
    writes.push(Write::Update {
        key: image_key(hex_of(source)),
        object: tagged.to_object(),
        expected_revision: Some(*rev),
    });
    Ok((tagged, writes))
}

/// What removing a reference does: the image's new record (`None`: delete it) and the blobs
/// that no other image uses (to delete). Pure, for tests.
pub fn plan_remove(
    images: &[ImageRecord],
    target: &ImageRecord,
    reference: &Reference,
) -> (Option<ImageRecord>, Vec<String>) {
    if let Reference::Name(n) = reference {
        let mut left = target.clone();
        left.names.retain(|x| x != n);
        if !left.names.is_empty() {
            return (Some(left), Vec::new());
        }
    }
    let used_elsewhere: BTreeSet<String> = images
        .iter()
        .filter(|i| i.digest != target.digest)
        .flat_map(ImageRecord::blobs)
        .collect();
    (
        None,
        target
            .blobs()
            .into_iter()
            .filter(|b| !used_elsewhere.contains(b))
            .collect(),
    )
}

/// An image verified by the local image store, ready to replicate.
#[derive(Debug)]
struct Prepared {
    record: ImageRecord,
    /// (digest, file in the local image store, size), each blob once.
    blobs: Vec<(Digest, PathBuf, u64)>,
}

/// The `Images` service of one controller.
#[derive(Debug, Clone)]
pub struct ImagesService {
    store: Store,
    /// The blobs on this controller's disk.
    blobs: BlobStore,
    /// Clients of the other controllers (second copies, fetches).
    peers: Peers,
    local: ImageStore,
    upload_dir: PathBuf,
    /// Largest archive accepted by `Import` (`--max-image-size`).
    max_image_size: u64,
    /// The built-in registry's port (`HOST:PORT/…` references name cluster images).
    registry_port: Option<u16>,
    /// Imports on one controller run one at a time (they share the local image store, which
    /// is emptied after each).
    import_lock: Arc<tokio::sync::Mutex<()>>,
}

impl ImagesService {
    /// Opens the blob directory `data_dir/blobs`, the staging image store under
    /// `data_dir/images` and the upload directory `data_dir/images-upload` (created if
    /// missing); `peer_tls` reaches the other controllers.
    pub fn new(
        store: Store,
        data_dir: &Path,
        limits: shoal_image::limits::Limits,
        peer_tls: Arc<rustls::ClientConfig>,
    ) -> Result<Self, ImagesError> {
        let local = ImageStore::open(data_dir.join("images"))?.with_limits(limits);
        let upload_dir = data_dir.join("images-upload");
        shoal_files::private_dir(&upload_dir).map_err(|e| io_err(&upload_dir, e))?;
        let blobs = BlobStore::open(&data_dir.join("blobs"))?;
        Ok(Self {
            store,
            blobs,
            peers: Peers::new(peer_tls),
            local,
            upload_dir,
            max_image_size: DEFAULT_MAX_IMAGE_SIZE,
            registry_port: None,
            import_lock: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// Sets the largest archive `Import` accepts (`--max-image-size`).
    pub fn with_max_image_size(mut self, bytes: u64) -> Self {
        self.max_image_size = bytes;
        self
    }

    /// The largest archive `Import` accepts; also the largest blob a registry push may send.
    pub fn max_image_size(&self) -> u64 {
        self.max_image_size
    }

    /// The tonic server for this service (with a larger message limit for import chunks).
    pub fn into_server(self) -> ImagesServer<Self> {
        ImagesServer::new(self).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Reads `key` from this member's copy, falling back to a linearizable read if missing.
    async fn get_local_first(&self, key: &str) -> Result<Option<Value>, StoreError> {
        get_local_first(&self.store, key).await
    }

    /// Every Image object with its revision (linearizable).
    async fn images(&self) -> Result<Vec<(ImageRecord, u64)>, ImagesError> {
        let (objs, _) = self.store.list("Image/", Consistency::Linearizable).await?;
        objs.iter()
            .map(|v| Ok((parse_image(v)?, revision_of(v))))
            .collect()
    }

    /// Sets the built-in registry's port: references through it (`HOST:PORT/REPO:TAG`)
    /// name the cluster's own images.
    pub fn with_registry_port(mut self, port: Option<u16>) -> Self {
        self.registry_port = port;
        self
    }

    /// Finds the image a reference names.
    pub async fn find(&self, name: &str) -> Result<(ImageRecord, u64), ImagesError> {
        let name = strip_registry_host(name, self.registry_port);
        let reference = parse_reference(name)?;
        self.find_ref(&reference, name).await
    }

    async fn find_ref(
        &self,
        reference: &Reference,
        name: &str,
    ) -> Result<(ImageRecord, u64), ImagesError> {
        match reference {
            Reference::Digest(d) => match self
                .store
                .get(&image_key(d.hex()), Consistency::Linearizable)
                .await?
            {
                Some(v) => Ok((parse_image(&v)?, revision_of(&v))),
                None => Err(ImagesError::NotFound(format!("image {name:?} not found"))),
            },
            Reference::Name(n) => self
                .images()
                .await?
                .into_iter()
                .find(|(i, _)| i.names.contains(n))
                .ok_or_else(|| ImagesError::NotFound(format!("image {n:?} not found"))),
        }
    }

    /// Imports the tarball at `archive` (with an optional extra `tag`) and replicates it.
    pub async fn import_file(
        &self,
        archive: &Path,
        tag: Option<&str>,
    ) -> Result<Vec<ImageRecord>, ImagesError> {
        let tag = match tag.map(str::trim).filter(|t| !t.is_empty()) {
            None => None,
            Some(t) => match parse_reference(t)? {
                Reference::Name(n) => Some(n),
                Reference::Digest(_) => {
                    return Err(ImagesError::Invalid(format!(
                        "tag {t:?}: expected NAME[:TAG], not a digest"
                    )));
                }
            },
        };
        let _guard = self.import_lock.lock().await;
        let local = self.local.clone();
        let path = archive.to_path_buf();
        let prepared = tokio::task::spawn_blocking(move || prepare(&local, &path))
            .await
            .map_err(|e| ImagesError::Task(e.to_string()))
            .and_then(|r| r);
        let result = match prepared {
            Ok(mut images) => {
                tracing::info!(archive = %archive.display(), images = images.len(), "image archive verified");
                if let Some(t) = tag {
                    if images.len() != 1 {
                        Err(ImagesError::Invalid(format!(
                            "tag {t:?} given but the archive holds {} images (expected one)",
                            images.len()
                        )))
                    } else {
                        if !images[0].record.names.contains(&t) {
                            images[0].record.names.push(t);
                        }
                        self.replicate_all(&images).await
                    }
                } else {
                    self.replicate_all(&images).await
                }
            }
            Err(e) => Err(e),
        };
        // The local store is only a verifier and staging area: empty it after every import.
        let local = self.local.clone();
        let cleanup = tokio::task::spawn_blocking(move || empty_local_store(&local))
            .await
            .map_err(|e| ImagesError::Task(e.to_string()))
            .and_then(|r| r);
        if let Err(e) = cleanup {
            tracing::warn!("emptying the controller's staging image store: {e}");
        }
        result
    }

    /// Imports an archive arriving in pieces (an `Import` upload, the image a build or a
    /// commit produced), with an optional extra `tag`. An `Err` piece abandons it: nothing
    /// is imported.
    pub async fn import_stream<S>(
        &self,
        chunks: S,
        tag: &str,
    ) -> Result<Vec<ImageRecord>, ImagesError>
    where
        S: Stream<Item = Result<Vec<u8>, ImagesError>> + Send,
    {
        let mut chunks = std::pin::pin!(chunks);
        let file = tempfile::Builder::new()
            .prefix("import-")
            .suffix(".tar")
            .tempfile_in(&self.upload_dir)
            .map_err(|e| io_err(&self.upload_dir, e))?;
        let path = file.path().to_path_buf();
        let mut out = tokio::fs::File::from_std(file.reopen().map_err(|e| io_err(&path, e))?);
        let mut total = 0u64;
        while let Some(chunk) = chunks.next().await {
            let data = chunk?;
            total += data.len() as u64;
            // Stop as the bytes arrive; the temporary file goes with `file`.
            check_import_size(total, self.max_image_size)?;
            out.write_all(&data).await.map_err(|e| io_err(&path, e))?;
        }
        out.flush().await.map_err(|e| io_err(&path, e))?;
        drop(out);
        if total == 0 {
            return Err(ImagesError::Invalid(
                "import: the stream held no data".into(),
            ));
        }
        tracing::info!(bytes = total, "image archive received");
        let result = self.import_file(&path, Some(tag)).await;
        drop(file);
        result
    }

    async fn replicate_all(&self, images: &[Prepared]) -> Result<Vec<ImageRecord>, ImagesError> {
        let mut out = Vec::new();
        for p in images {
            out.push(self.replicate(p).await?);
        }
        Ok(out)
    }

    /// Uploads the blobs an image lacks in the store, then writes its Image object.
    async fn replicate(&self, p: &Prepared) -> Result<ImageRecord, ImagesError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.replicate_once(p).await {
                Err(ImagesError::Store(
                    e @ (StoreError::Conflict { .. }
                    | StoreError::NotFound { .. }
                    | StoreError::AlreadyExists { .. }),
                )) if attempt < ATTEMPTS => {
                    tracing::info!(image = %p.record.digest, "image import raced with another change ({e}); retrying");
                }
                other => return other,
            }
        }
    }

    async fn replicate_once(&self, p: &Prepared) -> Result<ImageRecord, ImagesError> {
        // Blobs first: on this disk, a copy on another controller, then recorded.
        let mut writes = Vec::new();
        let mut stored = 0usize;
        for (digest, path, size) in &p.blobs {
            let key = blob_meta_key(digest.hex());
            if let Some(v) = self.store.get(&key, Consistency::Linearizable).await? {
                let m = parse_meta(&v)?;
                if m.size != *size {
                    return Err(ImagesError::Corrupt {
                        digest: digest.to_string(),
                        message: format!(
                            "stored size {} differs from the imported size {size}",
                            m.size
                        ),
                    });
                }
                // Re-asserted in the final batch: fails if a concurrent remove deleted it.
                let rev = revision_of(&v);
                writes.push(Write::Update {
                    key,
                    object: v,
                    expected_revision: Some(rev),
                });
                continue;
            }
            self.blobs.put_file(digest, path).await?;
            let holders = self.spread(digest, *size).await?;
            let meta = BlobMeta {
                digest: digest.to_string(),
                size: *size,
                holders,
                chunks: 0,
                chunk_size: 0,
            };
            writes.push(Write::Create {
                key,
                object: meta.to_object(),
            });
            stored += 1;
        }
        if stored > 0 {
            tracing::info!(image = %p.record.digest, blobs = stored, "image blobs stored on disk and copied");
        }
        let images = self.images().await?;
        writes.extend(plan_name_moves(&images, &p.record.digest, &p.record.names));
        let mut record = p.record.clone();
        writes.push(self.image_write(&images, &mut record));
        self.store.write(writes).await?;
        tracing::info!(image = %record.digest, names = ?record.names, "image stored");
        Ok(record)
    }

    /// The write that records `record` (merging the names of an existing record of the same
    /// digest into it).
    fn image_write(&self, images: &[(ImageRecord, u64)], record: &mut ImageRecord) -> Write {
        let key = image_key(hex_of(&record.digest));
        match images.iter().find(|(i, _)| i.digest == record.digest) {
            Some((existing, rev)) => {
                let mut names = existing.names.clone();
                for n in &record.names {
                    if !names.contains(n) {
                        names.push(n.clone());
                    }
                }
                record.names = names;
                Write::Update {
                    key,
                    object: record.to_object(),
                    expected_revision: Some(*rev),
                }
            }
            None => Write::Create {
                key,
                object: record.to_object(),
            },
        }
    }

    /// Gives the local blob `d` the copies it needs: sends it to other controllers (in
    /// [`peer_order`]) until [`copies_wanted`] hold it. Returns the holders, this one first.
    pub async fn spread(&self, d: &Digest, size: u64) -> Result<Vec<u64>, ImagesError> {
        let me = self.store.node_id();
        let members = self.store.members();
        let want = copies_wanted(members.len());
        let mut holders = vec![me];
        let mut failures = Vec::new();
        let path = self.blobs.path(d);
        for (id, addr) in peer_order(&members, me) {
            if holders.len() >= want {
                break;
            }
            match self.peers.push(&addr, d, &path, size).await {
                Ok(()) => holders.push(id),
                Err(e) => {
                    tracing::warn!(blob = %d, peer = id, "copying a blob to another controller failed: {e}");
                    failures.push(format!("controller {id}: {e}"));
                }
            }
        }
        if holders.len() < want {
            return Err(ImagesError::Replication(format!(
                "blob {d}: no other controller could take a copy ({}); is a majority of the controllers up?",
                failures.join("; ")
            )));
        }
        Ok(holders)
    }

    /// Commits a blob received by the built-in registry: on this disk, copied, recorded.
    pub async fn commit_upload(
        &self,
        writer: BlobWriter,
        d: &Digest,
    ) -> Result<BlobMeta, ImagesError> {
        let size = writer.len();
        writer.commit(d).await?;
        self.record_local_blob(d, size).await
    }

    /// Records a blob that is on this disk (copying it to another controller first), unless
    /// the store already has it.
    pub async fn record_local_blob(&self, d: &Digest, size: u64) -> Result<BlobMeta, ImagesError> {
        let key = blob_meta_key(d.hex());
        if let Some(v) = self.store.get(&key, Consistency::Linearizable).await? {
            return parse_meta(&v);
        }
        let holders = self.spread(d, size).await?;
        let meta = BlobMeta {
            digest: d.to_string(),
            size,
            holders,
            chunks: 0,
            chunk_size: 0,
        };
        match self
            .store
            .write(vec![Write::Create {
                key: key.clone(),
                object: meta.to_object(),
            }])
            .await
        {
            Ok(_) => Ok(meta),
            // Recorded meanwhile by a concurrent push of the same content.
            Err(StoreError::AlreadyExists { .. }) => match self.blob_meta(d).await? {
                Some(m) => Ok(m),
                None => Err(ImagesError::NotFound(format!("blob {d} not found"))),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// A new writer in this controller's blob directory.
    pub async fn blob_writer(&self) -> Result<BlobWriter, ImagesError> {
        self.blobs.writer().await
    }

    /// The recorded blob `d`, if any (this member's copy of the store first).
    pub async fn blob_meta(&self, d: &Digest) -> Result<Option<BlobMeta>, ImagesError> {
        match self.get_local_first(&blob_meta_key(d.hex())).await? {
            Some(v) => Ok(Some(parse_meta(&v)?)),
            None => Ok(None),
        }
    }

    /// Makes sure this controller has blob `d` on disk, fetching it from a holder (then any
    /// other controller) if not. Returns its path.
    pub async fn ensure_local(&self, d: &Digest, meta: &BlobMeta) -> Result<PathBuf, ImagesError> {
        if self.blobs.size(d) == Some(meta.size) {
            return Ok(self.blobs.path(d));
        }
        let me = self.store.node_id();
        let members = self.store.members();
        let mut order: Vec<(u64, String)> = members
            .iter()
            .filter(|(id, _)| *id != me && meta.holders.contains(id))
            .cloned()
            .collect();
        order.extend(
            members
                .iter()
                .filter(|(id, _)| *id != me && !meta.holders.contains(id))
                .cloned(),
        );
        let mut failures = Vec::new();
        for (id, addr) in order {
            match self.peers.fetch(&addr, d, &self.blobs).await {
                Ok(_) => {
                    tracing::info!(blob = %d, from = id, "fetched a blob from another controller");
                    return Ok(self.blobs.path(d));
                }
                Err(e) => failures.push(format!("controller {id}: {e}")),
            }
        }
        Err(ImagesError::Replication(format!(
            "blob {d} is not on this controller and no other controller could send it ({})",
            if failures.is_empty() {
                "no other controller".to_string()
            } else {
                failures.join("; ")
            }
        )))
    }

    /// Records an image whose blobs are all recorded (the built-in registry's manifest
    /// push): moves its names from other images, merges with an existing record.
    pub async fn record_image(&self, record: &ImageRecord) -> Result<ImageRecord, ImagesError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.record_image_once(record).await {
                Err(ImagesError::Store(
                    e @ (StoreError::Conflict { .. }
                    | StoreError::NotFound { .. }
                    | StoreError::AlreadyExists { .. }),
                )) if attempt < ATTEMPTS => {
                    tracing::info!(image = %record.digest, "image record raced with another change ({e}); retrying");
                }
                other => return other,
            }
        }
    }

    async fn record_image_once(&self, record: &ImageRecord) -> Result<ImageRecord, ImagesError> {
        let mut writes = Vec::new();
        for b in record.blobs() {
            let key = blob_meta_key(hex_of(&b));
            let v = self
                .store
                .get(&key, Consistency::Linearizable)
                .await?
                .ok_or_else(|| ImagesError::NotFound(format!("blob {b} not found")))?;
            let rev = revision_of(&v);
            writes.push(Write::Update {
                key,
                object: v,
                expected_revision: Some(rev),
            });
        }
        let images = self.images().await?;
        writes.extend(plan_name_moves(&images, &record.digest, &record.names));
        let mut record = record.clone();
        writes.push(self.image_write(&images, &mut record));
        self.store.write(writes).await?;
        tracing::info!(image = %record.digest, names = ?record.names, "image stored");
        Ok(record)
    }

    /// Removes a reference: drops the name, or (last name, or a digest) deletes the image and
    /// the blobs no other image uses. Returns the deleted blob digests.
    pub async fn remove(&self, name: &str) -> Result<Vec<String>, ImagesError> {
        let reference = parse_reference(name)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.remove_once(&reference, name).await {
                Err(ImagesError::Store(
                    e @ (StoreError::Conflict { .. }
                    | StoreError::NotFound { .. }
                    | StoreError::AlreadyExists { .. }),
                )) if attempt < ATTEMPTS => {
                    tracing::info!(
                        image = name,
                        "image remove raced with another change ({e}); retrying"
                    );
                }
                other => return other,
            }
        }
    }

    async fn remove_once(
        &self,
        reference: &Reference,
        name: &str,
    ) -> Result<Vec<String>, ImagesError> {
        let (target, rev) = self.find_ref(reference, name).await?;
        let images: Vec<ImageRecord> = self.images().await?.into_iter().map(|(i, _)| i).collect();
        let (left, blobs) = plan_remove(&images, &target, reference);
        let key = image_key(hex_of(&target.digest));
        let mut writes = Vec::new();
        match left {
            Some(rec) => writes.push(Write::Update {
                key,
                object: rec.to_object(),
                expected_revision: Some(rev),
            }),
            None => writes.push(Write::Delete {
                key,
                expected_revision: Some(rev),
            }),
        }
        let mut deleted = Vec::new();
        for b in &blobs {
            let hex = hex_of(b);
            let mkey = blob_meta_key(hex);
            let Some(v) = self.store.get(&mkey, Consistency::Linearizable).await? else {
                continue;
            };
            let meta = parse_meta(&v)?;
            writes.push(Write::Delete {
                key: mkey,
                expected_revision: Some(revision_of(&v)),
            });
            for i in 0..meta.chunks {
                writes.push(Write::Delete {
                    key: blob_key(hex, i),
                    expected_revision: None,
                });
            }
            deleted.push(b.clone());
        }
        self.store.write(writes).await?;
        // This controller's copies go now; the other holders' at their next collection pass.
        for b in &deleted {
            if let Ok(d) = b.parse::<Digest>()
                && let Err(e) = self.blobs.remove(&d)
            {
                tracing::warn!(blob = %d, "removing a deleted blob's file: {e}");
            }
        }
        Ok(deleted)
    }

    /// Gives the image `source` names the name `target` too (moving it off another image),
    /// retrying after a concurrent change.
    pub async fn tag(&self, source: &str, target: &str) -> Result<ImageRecord, ImagesError> {
        let target = match parse_reference(target)? {
            Reference::Name(n) => n,
            Reference::Digest(_) => {
                return Err(ImagesError::Invalid(format!(
                    "tag {target:?}: expected NAME[:TAG], not a digest"
                )));
            }
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (image, _) = self.find(source).await?;
            let (tagged, writes) = plan_tag(&self.images().await?, &image.digest, &target)?;
            if writes.is_empty() {
                return Ok(tagged);
            }
            match self.store.write(writes).await {
                Ok(_) => {
                    tracing::info!(image = %tagged.digest, name = %target, "image tagged");
                    return Ok(tagged);
                }
                Err(
                    e @ (StoreError::Conflict { .. }
                    | StoreError::NotFound { .. }
                    | StoreError::AlreadyExists { .. }),
                ) if attempt < ATTEMPTS => {
                    tracing::info!(
                        image = source,
                        "image tag raced with another change ({e}); retrying"
                    );
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Every image, sorted by first name then digest.
    pub async fn list_images(&self) -> Result<Vec<ImageRecord>, ImagesError> {
        let mut out: Vec<ImageRecord> = self.images().await?.into_iter().map(|(i, _)| i).collect();
        out.sort_by(|a, b| (a.names.first(), &a.digest).cmp(&(b.names.first(), &b.digest)));
        Ok(out)
    }

    /// Streams a blob's bytes from `offset`: from this controller's disk, after fetching it
    /// from a holder if it is not here (unless `local_only`: a controller asking another).
    pub async fn blob_stream(
        &self,
        digest: &str,
        offset: u64,
        local_only: bool,
    ) -> Result<BlobStream, ImagesError> {
        let d: Digest = digest.parse().map_err(|_| {
            ImagesError::Invalid(format!("blob digest {digest:?}: expected sha256:<64 hex>"))
        })?;
        let meta = match self.blob_meta(&d).await? {
            Some(m) => m,
            None => return Err(ImagesError::NotFound(format!("blob {d} not found"))),
        };
        if offset > meta.size {
            return Err(ImagesError::OutOfRange {
                digest: d.to_string(),
                offset,
                size: meta.size,
            });
        }
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        if meta.holders.is_empty() && meta.chunks > 0 {
            let store = self.store.clone();
            tokio::spawn(async move {
                if let Err(e) = send_chunked(&store, &d, &meta, offset, &tx).await {
                    let _ = tx.send(Err(to_status(&e))).await;
                }
            });
            return Ok(Box::pin(ReceiverStream::new(rx)));
        }
        let path = if local_only {
            if self.blobs.size(&d) != Some(meta.size) {
                return Err(ImagesError::NotFound(format!(
                    "blob {d} is not on this controller's disk"
                )));
            }
            self.blobs.path(&d)
        } else {
            self.ensure_local(&d, &meta).await?
        };
        tokio::spawn(async move {
            if let Err(e) = send_file(&path, &d, meta.size, offset, &tx).await {
                let _ = tx.send(Err(to_status(&e))).await;
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    /// Receives a copy of a blob from another controller (`PutBlob`).
    async fn receive_copy(&self, mut stream: Streaming<BlobUpload>) -> Result<u64, ImagesError> {
        let first = match stream.next().await {
            Some(m) => m.map_err(ImagesError::Stream)?,
            None => return Err(ImagesError::Invalid("PutBlob: empty stream".into())),
        };
        let d: Digest = first.digest.parse().map_err(|_| {
            ImagesError::Invalid(format!(
                "PutBlob digest {:?}: expected sha256:<64 hex>",
                first.digest
            ))
        })?;
        let size = first.size;
        let mut w = self.blobs.writer().await?;
        w.write(&first.data).await?;
        while let Some(m) = stream.next().await {
            let m = m.map_err(ImagesError::Stream)?;
            if w.len() + m.data.len() as u64 > size {
                return Err(ImagesError::Invalid(format!(
                    "PutBlob {d}: more than the announced {size} bytes"
                )));
            }
            w.write(&m.data).await?;
        }
        if self.blobs.size(&d) == Some(size) {
            return Ok(size); // already here
        }
        w.commit(&d).await
    }

    /// Deletes local blobs that no BlobMeta names (after `grace`, so that a blob whose
    /// record is still being written survives). Returns how many went.
    pub async fn collect_garbage(&self, grace: std::time::Duration) -> usize {
        let local = self.blobs.list();
        let now = std::time::SystemTime::now();
        let mut unknown = BTreeSet::new();
        for (d, t) in &local {
            if now.duration_since(*t).unwrap_or_default() < grace {
                continue;
            }
            // Linearizable: a lagging member must not drop a blob it just has not heard of.
            match self
                .store
                .get(&blob_meta_key(d.hex()), Consistency::Linearizable)
                .await
            {
                Ok(None) => {
                    unknown.insert(d.clone());
                }
                Ok(Some(_)) => {}
                Err(_) => return 0, // no leader now: try at the next pass
            }
        }
        let gone = crate::blobs::gc_candidates(&local, now, grace, &|d| !unknown.contains(d));
        for d in &gone {
            if let Err(e) = self.blobs.remove(d) {
                tracing::warn!(blob = %d, "collecting an unused blob: {e}");
            }
        }
        if !gone.is_empty() {
            tracing::info!(blobs = gone.len(), "removed blobs no image uses");
        }
        gone.len()
    }
}

/// Runs [`ImagesService::collect_garbage`] every `every` until the task is aborted.
pub async fn collect_garbage_forever(images: ImagesService, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        images.collect_garbage(every * 2).await;
    }
}

/// Sends `size` bytes of the blob file at `path` from `offset`; verifies the digest when
/// sending it whole (a damaged local copy is deleted, so that the next request fetches a good
/// one).
async fn send_file(
    path: &Path,
    d: &Digest,
    size: u64,
    offset: u64,
    tx: &tokio::sync::mpsc::Sender<Result<BlobChunk, Status>>,
) -> Result<(), ImagesError> {
    use tokio::io::AsyncSeekExt;
    let mut f = tokio::fs::File::open(path)
        .await
        .map_err(|e| io_err(path, e))?;
    if offset > 0 {
        f.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(|e| io_err(path, e))?;
    }
    let mut hasher = (offset == 0).then(Sha256::new);
    let mut sent = offset;
    let mut first = true;
    loop {
        let mut buf = vec![0u8; crate::blobs::COPY_CHUNK];
        let n = f.read(&mut buf).await.map_err(|e| io_err(path, e))?;
        if n == 0 && !first {
            break;
        }
        buf.truncate(n);
        if let Some(h) = hasher.as_mut() {
            h.update(&buf);
        }
        sent += n as u64;
        let msg = BlobChunk {
            data: buf,
            size: if first { size } else { 0 },
        };
        first = false;
        if tx.send(Ok(msg)).await.is_err() {
            return Ok(()); // the client went away
        }
        if n == 0 {
            break;
        }
    }
    let corrupt = |message: String| {
        let _ = std::fs::remove_file(path);
        ImagesError::Corrupt {
            digest: d.to_string(),
            message,
        }
    };
    if sent != size {
        return Err(corrupt(format!(
            "the local copy holds {sent} bytes, the record says {size}; removed it"
        )));
    }
    if let Some(h) = hasher {
        let actual = hex::encode(h.finalize());
        if actual != d.hex() {
            return Err(corrupt(format!(
                "the local copy hashes to sha256:{actual}; removed it"
            )));
        }
    }
    Ok(())
}

/// The stream type of `Blob`.
pub type BlobStream = Pin<Box<dyn Stream<Item = Result<BlobChunk, Status>> + Send>>;

async fn get_local_first(store: &Store, key: &str) -> Result<Option<Value>, StoreError> {
    match store.get(key, Consistency::Local).await? {
        Some(v) => Ok(Some(v)),
        None => store.get(key, Consistency::Linearizable).await,
    }
}

/// Sends the chunks of a legacy (in-store) blob from `offset`; verifies the digest when
/// sending it whole.
async fn send_chunked(
    store: &Store,
    d: &Digest,
    meta: &BlobMeta,
    offset: u64,
    tx: &tokio::sync::mpsc::Sender<Result<BlobChunk, Status>>,
) -> Result<(), ImagesError> {
    let corrupt = |message: String| ImagesError::Corrupt {
        digest: d.to_string(),
        message,
    };
    if meta.chunk_size == 0 {
        return Err(corrupt("BlobMeta has chunkSize 0".into()));
    }
    if offset == meta.size {
        let _ = tx
            .send(Ok(BlobChunk {
                data: Vec::new(),
                size: meta.size,
            }))
            .await;
        return Ok(());
    }
    let mut hasher = (offset == 0).then(Sha256::new);
    let first_chunk = offset / meta.chunk_size;
    let mut sent = offset;
    for index in first_chunk..meta.chunks {
        let key = blob_key(d.hex(), index);
        let v = get_local_first(store, &key).await?.ok_or_else(|| {
            corrupt(format!(
                "chunk {index} of {} ({key}) is missing",
                meta.chunks
            ))
        })?;
        let data = v
            .get("data")
            .and_then(Value::as_str)
            .ok_or_else(|| corrupt(format!("chunk {index} ({key}) has no data")))?;
        let bytes = B64
            .decode(data)
            .map_err(|e| corrupt(format!("chunk {index} ({key}): bad base64: {e}")))?;
        if let Some(h) = hasher.as_mut() {
            h.update(&bytes);
        }
        let skip = if index == first_chunk {
            (offset - index * meta.chunk_size) as usize
        } else {
            0
        };
        if skip > bytes.len() {
            return Err(corrupt(format!(
                "chunk {index} ({key}) is shorter than expected"
            )));
        }
        let part = bytes[skip..].to_vec();
        sent += part.len() as u64;
        let size = if index == first_chunk { meta.size } else { 0 };
        if tx.send(Ok(BlobChunk { data: part, size })).await.is_err() {
            return Ok(()); // the client went away
        }
    }
    if sent != meta.size {
        return Err(corrupt(format!(
            "chunks hold {sent} bytes, BlobMeta says {}",
            meta.size
        )));
    }
    if let Some(h) = hasher {
        let actual = hex::encode(h.finalize());
        if actual != d.hex() {
            return Err(corrupt(format!("stored content hashes to sha256:{actual}")));
        }
    }
    Ok(())
}

/// Imports `archive` into the local store and collects what to replicate (blocking).
fn prepare(local: &ImageStore, archive: &Path) -> Result<Vec<Prepared>, ImagesError> {
    let refs = local.import(archive, None)?;
    let mut by_digest: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
    let mut order = Vec::new();
    for r in refs {
        if !by_digest.contains_key(&r.digest) {
            order.push(r.digest.clone());
        }
        let names = by_digest.entry(r.digest.clone()).or_default();
        if !r.name.starts_with("sha256:") && !names.contains(&r.name) {
            names.push(r.name);
        }
    }
    let mut out = Vec::new();
    for digest in order {
        let names = by_digest.remove(&digest).unwrap_or_default();
        let mpath = local.blob_path(&digest);
        let mbytes = std::fs::read(&mpath).map_err(|e| io_err(&mpath, e))?;
        let manifest: Manifest =
            serde_json::from_slice(&mbytes).map_err(|e| ImagesError::Corrupt {
                digest: digest.to_string(),
                message: format!("manifest: {e}"),
            })?;
        let cpath = local.blob_path(&manifest.config.digest);
        let cbytes = std::fs::read(&cpath).map_err(|e| io_err(&cpath, e))?;
        let config: Value = serde_json::from_slice(&cbytes).map_err(|e| ImagesError::Corrupt {
            digest: manifest.config.digest.to_string(),
            message: format!("config: {e}"),
        })?;
        let mut blobs: Vec<(Digest, PathBuf, u64)> = Vec::new();
        let mut add = |d: &Digest| -> Result<(), ImagesError> {
            if blobs.iter().any(|(x, _, _)| x == d) {
                return Ok(());
            }
            let p = local.blob_path(d);
            let size = std::fs::metadata(&p).map_err(|e| io_err(&p, e))?.len();
            blobs.push((d.clone(), p, size));
            Ok(())
        };
        add(&manifest.config.digest)?;
        for l in &manifest.layers {
            add(&l.digest)?;
        }
        add(&digest)?;
        let layer_sizes: Vec<u64> = manifest.layers.iter().map(|l| l.size).collect();
        let record = ImageRecord {
            names,
            digest: digest.to_string(),
            config_digest: manifest.config.digest.to_string(),
            layers: manifest
                .layers
                .iter()
                .map(|l| l.digest.to_string())
                .collect(),
            size: layer_sizes.iter().sum(),
            layer_sizes,
            config,
            media_type: if manifest.media_type.is_empty() {
                shoal_image::config::OCI_MANIFEST.to_string()
            } else {
                manifest.media_type.clone()
            },
        };
        out.push(Prepared { record, blobs });
    }
    Ok(out)
}

/// Removes every reference of the local staging store and garbage-collects it (blocking).
fn empty_local_store(local: &ImageStore) -> Result<(), ImagesError> {
    for s in local.list()? {
        match local.remove(&s.name) {
            Ok(()) | Err(ImageError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    local.gc(&BTreeSet::new())?;
    Ok(())
}

#[tonic::async_trait]
impl Images for ImagesService {
    async fn import(
        &self,
        request: Request<Streaming<ImportChunk>>,
    ) -> Result<Response<ImportResponse>, Status> {
        let mut stream = request.into_inner();
        let first = match stream.next().await {
            Some(chunk) => chunk.map_err(ImagesError::Stream)?,
            None => {
                return Err(ImagesError::Invalid("import: the stream held no data".into()).into());
            }
        };
        let tag = first.tag.clone();
        let chunks = tokio_stream::once(Ok(first.data))
            .chain(stream.map(|c| c.map(|c| c.data).map_err(ImagesError::Stream)));
        let images = self.import_stream(chunks, &tag).await?;
        Ok(Response::new(ImportResponse {
            images: images.iter().map(ImageRecord::to_info).collect(),
        }))
    }

    async fn list(
        &self,
        _request: Request<ImageListRequest>,
    ) -> Result<Response<ImageListResponse>, Status> {
        let images = self.list_images().await?;
        Ok(Response::new(ImageListResponse {
            images: images.iter().map(ImageRecord::to_info).collect(),
        }))
    }

    async fn remove(
        &self,
        request: Request<ImageRemoveRequest>,
    ) -> Result<Response<ImageRemoveResponse>, Status> {
        let deleted_blobs = ImagesService::remove(self, &request.into_inner().name).await?;
        Ok(Response::new(ImageRemoveResponse { deleted_blobs }))
    }

    async fn resolve(
        &self,
        request: Request<ResolveRequest>,
    ) -> Result<Response<ImageInfo>, Status> {
        let (rec, _) = self.find(&request.into_inner().name).await?;
        Ok(Response::new(rec.to_info()))
    }

    type BlobStream = BlobStream;

    async fn blob(
        &self,
        request: Request<BlobRequest>,
    ) -> Result<Response<Self::BlobStream>, Status> {
        let req = request.into_inner();
        Ok(Response::new(
            self.blob_stream(&req.digest, req.offset, req.local_only)
                .await?,
        ))
    }

    async fn tag(&self, request: Request<TagRequest>) -> Result<Response<ImageInfo>, Status> {
        let req = request.into_inner();
        let image = ImagesService::tag(self, &req.source, &req.target).await?;
        Ok(Response::new(image.to_info()))
    }

    async fn put_blob(
        &self,
        request: Request<Streaming<BlobUpload>>,
    ) -> Result<Response<PutBlobResponse>, Status> {
        let size = self.receive_copy(request.into_inner()).await?;
        Ok(Response::new(PutBlobResponse { size }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rec(digest: char, names: &[&str], layers: &[char]) -> ImageRecord {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        ImageRecord {
            names: names.iter().map(|s| s.to_string()).collect(),
            digest: d(digest),
            config_digest: d(digest.to_ascii_uppercase()),
            layers: layers.iter().map(|c| d(*c)).collect(),
            layer_sizes: layers.iter().map(|_| 1).collect(),
            size: layers.len() as u64,
            config: json!({}),
            media_type: String::new(),
        }
    }

    #[test]
    fn import_size_limit_names_the_limit_and_the_flag() {
        assert!(check_import_size(DEFAULT_MAX_IMAGE_SIZE, DEFAULT_MAX_IMAGE_SIZE).is_ok());
        assert!(check_import_size(300 << 20, DEFAULT_MAX_IMAGE_SIZE).is_ok());
        let e = check_import_size(DEFAULT_MAX_IMAGE_SIZE + 1, DEFAULT_MAX_IMAGE_SIZE).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("1073741824 bytes (1 GiB)"), "{msg}");
        assert!(msg.contains("--max-image-size"), "{msg}");
        assert_eq!(to_status(&e).code(), tonic::Code::ResourceExhausted);
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(10), "10 bytes");
    }

    #[test]
    fn references_normalize_like_docker() {
        assert_eq!(
            parse_reference("busybox").unwrap(),
            Reference::Name("busybox:latest".into())
        );
        assert_eq!(
            parse_reference("docker.io/library/busybox:1").unwrap(),
            Reference::Name("busybox:1".into())
        );
        let hex = "a".repeat(64);
        let d: Digest = format!("sha256:{hex}").parse().unwrap();
        assert_eq!(
            parse_reference(&format!("sha256:{hex}")).unwrap(),
            Reference::Digest(d.clone())
        );
        assert_eq!(
            parse_reference(&format!("busybox@sha256:{hex}")).unwrap(),
            Reference::Digest(d)
        );
        assert!(parse_reference("sha256:xyz").is_err());
        assert!(parse_reference("").is_err());
        assert!(parse_reference("../etc").is_err());
    }

    #[test]
    fn references_through_the_built_in_registry_name_cluster_images() {
        assert_eq!(
            strip_registry_host("10.0.0.1:7050/team-a/web:1", Some(7050)),
            "team-a/web:1"
        );
        assert_eq!(
            strip_registry_host("c1:7050/busybox", Some(7050)),
            "busybox"
        );
        assert_eq!(
            strip_registry_host("c1:5000/busybox", Some(7050)),
            "c1:5000/busybox"
        );
        assert_eq!(
            strip_registry_host("c1:7050/busybox", None),
            "c1:7050/busybox"
        );
        assert_eq!(
            strip_registry_host("team-a/web:1", Some(7050)),
            "team-a/web:1"
        );
    }

    #[test]
    fn keys_sort_chunks_in_order() {
        assert_eq!(blob_key("ab", 7), "Blob//ab.00007");
        assert!(blob_key("ab", 9) < blob_key("ab", 10));
        assert_eq!(blob_meta_key("ab"), "BlobMeta//ab");
        assert_eq!(image_key("ab"), "Image//ab");
    }

    #[test]
    fn image_object_round_trips() {
        let r = rec('a', &["busybox:latest"], &['1', '2']);
        let v = r.to_object();
        assert_eq!(v["kind"], "Image");
        assert_eq!(v["metadata"]["name"], "a".repeat(64));
        assert_eq!(v["configDigest"], r.config_digest);
        assert_eq!(v["layerSizes"], json!([1, 1]));
        assert_eq!(parse_image(&v).unwrap(), r);
        assert_eq!(r.blobs().len(), 4);
    }

    #[test]
    fn moving_a_name_updates_only_its_old_holder() {
        let old = rec('a', &["busybox:latest", "busybox:1"], &['1']);
        let other = rec('b', &["nginx:latest"], &['2']);
        let new_digest = rec('c', &[], &[]).digest;
        let w = plan_name_moves(
            &[(old.clone(), 7), (other, 8)],
            &new_digest,
            &["busybox:latest".to_string()],
        );
        assert_eq!(w.len(), 1);
        match &w[0] {
            Write::Update {
                key,
                object,
                expected_revision,
            } => {
                assert_eq!(key, &image_key(hex_of(&old.digest)));
                assert_eq!(*expected_revision, Some(7));
                assert_eq!(object["names"], json!(["busybox:1"]));
            }
            other => panic!("unexpected write {other:?}"),
        }
        // Re-importing the same image moves nothing.
        assert!(
            plan_name_moves(
                &[(old.clone(), 7)],
                &old.digest,
                &["busybox:latest".to_string()]
            )
            .is_empty()
        );
    }

    #[test]
    fn tagging_adds_the_name_and_takes_it_off_its_old_image() {
        let a = rec('a', &["busybox:latest"], &['1']);
        let b = rec('b', &["app:v1", "app:latest"], &['2']);
        let c = rec('c', &["other:1"], &['3']);
        let images = vec![(a.clone(), 4), (b.clone(), 5), (c, 6)];
        let (tagged, writes) = plan_tag(&images, &a.digest, "app:latest").unwrap();
        assert_eq!(tagged.names, ["busybox:latest", "app:latest"]);
        let mut by_key: BTreeMap<String, (Value, Option<u64>)> = BTreeMap::new();
        for w in writes {
            match w {
                Write::Update {
                    key,
                    object,
                    expected_revision,
                } => {
                    by_key.insert(key, (object, expected_revision));
                }
                other => panic!("unexpected write {other:?}"),
            }
        }
        assert_eq!(by_key.len(), 2, "{by_key:?}");
        let (obj, rev) = &by_key[&image_key(hex_of(&a.digest))];
        assert_eq!(
            (obj["names"].clone(), *rev),
            (json!(["busybox:latest", "app:latest"]), Some(4))
        );
        let (obj, rev) = &by_key[&image_key(hex_of(&b.digest))];
        assert_eq!((obj["names"].clone(), *rev), (json!(["app:v1"]), Some(5)));

        // A name the image has already: nothing to write.
        let (same, writes) = plan_tag(&images, &b.digest, "app:v1").unwrap();
        assert!(writes.is_empty());
        assert_eq!(same, b);
        // A new name nobody has: one write.
        let (_, writes) = plan_tag(&images, &b.digest, "app:v2").unwrap();
        assert_eq!(writes.len(), 1);
        // An image that went away meanwhile.
        let gone = rec('d', &[], &[]).digest;
        let e = plan_tag(&images, &gone, "x:1").unwrap_err();
        assert_eq!(to_status(&e).code(), tonic::Code::NotFound);
    }

    #[test]
    fn remove_keeps_shared_blobs_and_other_names() {
        let a = rec('a', &["x:1", "x:2"], &['1', '2']);
        let b = rec('b', &["y:1"], &['2', '3']);
        let all = vec![a.clone(), b.clone()];
        let (left, blobs) = plan_remove(&all, &a, &Reference::Name("x:1".into()));
        assert_eq!(left.unwrap().names, vec!["x:2".to_string()]);
        assert!(blobs.is_empty());
        let only = rec('a', &["x:2"], &['1', '2']);
        let (left, blobs) = plan_remove(
            &[only.clone(), b.clone()],
            &only,
            &Reference::Name("x:2".into()),
        );
        assert!(left.is_none());
        let shared = format!("sha256:{}", "2".repeat(64));
        assert!(!blobs.contains(&shared), "layer 2 is used by y:1");
        assert_eq!(blobs.len(), 3, "config, layer 1, manifest: {blobs:?}");
        let d: Digest = a.digest.parse().unwrap();
        let (left, blobs) = plan_remove(&all, &a, &Reference::Digest(d));
        assert!(left.is_none(), "removing by digest drops every name");
        assert_eq!(blobs.len(), 3);
    }
}
