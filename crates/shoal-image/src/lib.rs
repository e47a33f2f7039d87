//! Images: import of `docker save` and OCI-layout tarballs, content digests,
//! the blob store, layer unpacking that cannot escape its directory, and pulling
//! from registries ([`registry`]: the OCI distribution API over HTTP(S), tokio and
//! hyper; the rest of the crate is synchronous).
//!
//! Crate rules: this crate owns everything about image *content* (blobs,
//! manifests, configs, layers on disk). It must never depend on the runtime,
//! the network code, the controller, the agent or the proto: the controller
//! (which stores and serves images) and the runtime (which runs them) both
//! depend on it, so that the controller does not link the container runtime.
//! Layer unpacking treats every tarball as hostile: see [`layer`] and
//! `docs/security.md`.
//!
//! The image store, layout under its root:
//! `blobs/sha256/<hex>` (manifests, configs, layer tarballs as imported),
//! `layers/<hex>/` (the layer blob `<hex>` unpacked with overlayfs whiteouts),
//! `refs.json` (`name:tag` → manifest digest), `tmp/` (staging; an import
//! writes everything there first and moves it into place only when all of it
//! verified).
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod archive;
pub mod config;
pub mod digest;
pub mod layer;
pub mod limits;
pub mod pull;
pub mod registry;
pub mod testimage;
pub mod zstd;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use self::config::ImageConfig;
use self::config::{Descriptor, DockerSaveEntry, Index, Manifest};
use crate::digest::{Digest, HashingReader, HashingWriter};

/// Errors of the image store.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// Path involved.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// A layer entry would escape the layer directory or is otherwise unsafe.
    #[error("layer {layer}: entry {entry:?} rejected: {reason}")]
    UnsafeEntry {
        /// The layer (digest or archive path).
        layer: String,
        /// The entry's path as stored in the tarball.
        entry: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The archive is not a `docker save` or OCI-layout tarball we understand.
    #[error("{archive}: {message}")]
    Format {
        /// The archive or member.
        archive: String,
        /// What is wrong.
        message: String,
    },
    /// An image is over one of its [`limits::Limits`].
    #[error(
        "layer {layer}: entry {entry:?}: the image is over the limit of {limit} {what} (raise it with {flag})"
    )]
    LimitExceeded {
        /// The layer (digest or archive path).
        layer: String,
        /// The entry being read when the limit was reached.
        entry: String,
        /// What is counted.
        what: String,
        /// The limit.
        limit: u64,
        /// The flag that raises it.
        flag: &'static str,
    },
    /// Content does not match its digest.
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// Which content.
        what: String,
        /// The digest it should have.
        expected: Digest,
        /// The digest it has.
        actual: Digest,
    },
    /// No image by that name or digest.
    #[error("image {0:?} not found")]
    NotFound(String),
    /// A malformed image reference.
    #[error("invalid image reference {0:?}: expected NAME[:TAG] or sha256:<hex>")]
    InvalidReference(String),
}

fn io_err(path: &Path, source: io::Error) -> ImageError {
    ImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `data` to `path` atomically and durably, private to root (0600): the one
/// helper every crate uses (`shoal-files`).
fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    shoal_files::write_atomic(path, data, shoal_files::FILE_MODE)
}

/// A name (or digest) imported or tagged, with the manifest it points to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    /// `name:tag`, or the digest when the archive carried no name.
    pub name: String,
    /// The manifest digest (the image id).
    pub digest: Digest,
}

/// An image resolved for running.
#[derive(Clone, Debug)]
pub struct Image {
    /// The manifest digest.
    pub digest: Digest,
    /// The config blob digest.
    pub config_digest: Digest,
    /// The run configuration.
    pub config: ImageConfig,
    /// Layer blob digests, bottom first.
    pub layers: Vec<Digest>,
    /// Unpacked layer directories, bottom first.
    pub layer_dirs: Vec<PathBuf>,
}

/// One line of `list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSummary {
    /// `name:tag`.
    pub name: String,
    /// The manifest digest.
    pub digest: Digest,
    /// Sum of the layer blob sizes.
    pub size: u64,
}

/// What `gc` removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs deleted.
    pub blobs_removed: usize,
    /// Unpacked layer directories deleted.
    pub layers_removed: usize,
}

/// Normalises a reference: `busybox` → `busybox:latest`,
/// `docker.io/library/busybox:1` → `busybox:1`. Digests pass unchanged.
pub fn normalize_reference(name: &str) -> Result<String, ImageError> {
    if name.starts_with("sha256:") {
        return name
            .parse::<Digest>()
            .map(|d| d.to_string())
            .map_err(|_| ImageError::InvalidReference(name.to_string()));
    }
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/:@".contains(&b))
        && !name.starts_with(['/', ':', '.', '-'])
        && !name.contains("..");
    if !ok {
        return Err(ImageError::InvalidReference(name.to_string()));
    }
    let stripped = name
        .strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("docker.io/"))
        .unwrap_or(name);
    let last = stripped.rsplit('/').next().unwrap_or(stripped);
    if last.contains(':') {
        Ok(stripped.to_string())
    } else {
        Ok(format!("{stripped}:latest"))
    }
}

/// The content-addressed image store.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
    limits: limits::Limits,
}

#[derive(Default, Serialize, Deserialize)]
struct Refs {
    refs: BTreeMap<String, Digest>,
}

/// One image of an archive: names, manifest bytes, manifest, (digest, staged file) of its blobs.
type ArchiveImage = (Vec<String>, Vec<u8>, Manifest, Vec<(Digest, PathBuf)>);

/// A regular file of the archive, staged under `tmp/`.
struct Staged {
    path: PathBuf,
    digest: Digest,
    size: u64,
}

struct StagedArchive {
    dir: PathBuf,
    files: HashMap<String, Staged>,
    symlinks: HashMap<String, String>,
    name: String,
}

impl StagedArchive {
    fn get(&self, member: &str) -> Result<&Staged, ImageError> {
        let mut key = normalize_member(member);
        for _ in 0..8 {
            if let Some(s) = self.files.get(&key) {
                return Ok(s);
            }
            match self.symlinks.get(&key) {
                Some(t) => key = t.clone(),
                None => break,
            }
        }
        Err(ImageError::Format {
            archive: self.name.clone(),
            message: format!("member {member:?} is missing"),
        })
    }

    fn read(&self, member: &str) -> Result<Vec<u8>, ImageError> {
        let s = self.get(member)?;
        fs::read(&s.path).map_err(|e| io_err(&s.path, e))
    }

    fn blob(&self, d: &Digest) -> Result<&Staged, ImageError> {
        let s = self.get(&format!("blobs/sha256/{}", d.hex()))?;
        Ok(s)
    }
}

impl Drop for StagedArchive {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn normalize_member(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in Path::new(p).components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str().unwrap_or("")),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    parts.join("/")
}

/// Opens a possibly gzip- or zstd-compressed file as a byte stream.
fn open_maybe_gzip(path: &Path) -> Result<(Box<dyn Read>, bool), ImageError> {
    let mut f = File::open(path).map_err(|e| io_err(path, e))?;
    let mut magic = [0u8; 4];
    let n = read_up_to(&mut f, &mut magic).map_err(|e| io_err(path, e))?;
    f.rewind().map_err(|e| io_err(path, e))?;
    if n >= 2 && magic[..2] == [0x1f, 0x8b] {
        Ok((
            Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(f))),
            true,
        ))
    } else if n == 4 && magic == zstd::MAGIC {
        Ok((Box::new(zstd::ZstdReader::new(BufReader::new(f))), true))
    } else {
        Ok((Box::new(BufReader::new(f)), false))
    }
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let r = f.read(&mut buf[n..])?;
        if r == 0 {
            break;
        }
        n += r;
    }
    Ok(n)
}

impl ImageStore {
    /// Opens (creating) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, ImageError> {
        let root = root.into();
        for d in ["blobs/sha256", "layers", "tmp"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(|e| io_err(&p, e))?;
        }
        Ok(Self {
            root,
            limits: limits::Limits::default(),
        })
    }

    /// The same store with other unpacking limits (from the
    /// `--image-max-unpacked-bytes` and `--image-max-entries` flags).
    pub fn with_limits(mut self, limits: limits::Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The unpacking limits.
    pub fn limits(&self) -> limits::Limits {
        self.limits
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of a blob (whether or not it exists).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    /// Directory of an unpacked layer blob.
    pub fn layer_dir(&self, d: &Digest) -> PathBuf {
        self.root.join("layers").join(d.hex())
    }

    /// Whether the store holds the blob.
    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    fn lock(&self) -> Result<File, ImageError> {
        let p = self.root.join("lock");
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| io_err(&p, e))?;
        // SAFETY: valid fd owned by `f` for the duration of the call.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io_err(&p, io::Error::last_os_error()));
        }
        Ok(f)
    }

    fn staging_dir(&self, what: &str) -> Result<PathBuf, ImageError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let p = self
            .root
            .join("tmp")
            .join(format!("{what}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&p).map_err(|e| io_err(&p, e))?;
        Ok(p)
    }

    fn read_refs(&self) -> Result<Refs, ImageError> {
        let p = self.root.join("refs.json");
        match fs::read(&p) {
            Ok(data) => serde_json::from_slice(&data).map_err(|e| ImageError::Format {
                archive: p.display().to_string(),
                message: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Refs::default()),
            Err(e) => Err(io_err(&p, e)),
        }
    }

    fn write_refs(&self, refs: &Refs) -> Result<(), ImageError> {
        let p = self.root.join("refs.json");
        let data = serde_json::to_vec_pretty(refs).map_err(|e| io_err(&p, io::Error::other(e)))?;
        write_atomic(&p, &data).map_err(|e| io_err(&p, e))
    }

    /// Adds a blob read from `reader`, verifying it against `expected`.
    pub fn import_blob(
        &self,
        expected: &Digest,
        reader: &mut dyn Read,
    ) -> Result<PathBuf, ImageError> {
        let dir = self.staging_dir("blob")?;
        let tmp = dir.join("blob");
        let result = (|| {
            let f = File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
            let mut w = HashingWriter::new(f);
            io::copy(reader, &mut w).map_err(|e| io_err(&tmp, e))?;
            let (f, actual, _) = w.finish();
            // Durable before it is named by its digest (a torn blob would lie about it).
            f.sync_all().map_err(|e| io_err(&tmp, e))?;
            if &actual != expected {
                return Err(ImageError::DigestMismatch {
                    what: "blob".into(),
                    expected: expected.clone(),
                    actual,
                });
            }
            let dst = self.blob_path(expected);
            fs::rename(&tmp, &dst).map_err(|e| io_err(&dst, e))?;
            if let Some(parent) = dst.parent() {
                shoal_files::sync_dir(parent).map_err(|e| io_err(parent, e))?;
            }
            Ok(dst)
        })();
        let _ = fs::remove_dir_all(&dir);
        result
    }

    /// Imports a `docker save` or OCI-layout tarball (plain or gzip).
    /// `name` overrides the name(s) recorded in the archive.
    pub fn import(&self, archive: &Path, name: Option<&str>) -> Result<Vec<ImageRef>, ImageError> {
        let label = archive.display().to_string();
        let staged = self.stage_archive(archive)?;
        // (names, manifest bytes, manifest) per image
        let mut images: Vec<ArchiveImage> = Vec::new();
        if staged.files.contains_key("manifest.json") {
            let entries: Vec<DockerSaveEntry> =
                serde_json::from_slice(&staged.read("manifest.json")?).map_err(|e| {
                    ImageError::Format {
                        archive: label.clone(),
                        message: format!("manifest.json: {e}"),
                    }
                })?;
            for entry in entries {
                let cfg = staged.get(&entry.config)?;
                if let Some(hex) = hex_in_member_name(&entry.config)
                    && cfg.digest.hex() != hex
                {
                    return Err(ImageError::DigestMismatch {
                        what: entry.config.clone(),
                        expected: Digest::from_hex(&hex).map_err(|_| ImageError::Format {
                            archive: label.clone(),
                            message: "bad config name".into(),
                        })?,
                        actual: cfg.digest.clone(),
                    });
                }
                let mut layers = Vec::new();
                let mut files = Vec::new();
                for l in &entry.layers {
                    let s = staged.get(l)?;
                    if let Some(hex) = hex_in_member_name(l).filter(|_| l.starts_with("blobs/"))
                        && s.digest.hex() != hex
                    {
                        return Err(ImageError::DigestMismatch {
                            what: l.clone(),
                            expected: Digest::from_hex(&hex).map_err(|_| ImageError::Format {
                                archive: label.clone(),
                                message: "bad layer name".into(),
                            })?,
                            actual: s.digest.clone(),
                        });
                    }
                    let gz = is_gzip(&s.path).map_err(|e| io_err(&s.path, e))?;
                    layers.push(Descriptor {
                        media_type: if gz {
                            config::OCI_LAYER_GZIP
                        } else {
                            config::OCI_LAYER_TAR
                        }
                        .to_string(),
                        digest: s.digest.clone(),
                        size: s.size,
                        platform: None,
                        annotations: BTreeMap::new(),
                    });
                    files.push((s.digest.clone(), s.path.clone()));
                }
                let manifest = Manifest {
                    schema_version: 2,
                    media_type: config::OCI_MANIFEST.to_string(),
                    config: Descriptor {
                        media_type: config::OCI_CONFIG.to_string(),
                        digest: cfg.digest.clone(),
                        size: cfg.size,
                        platform: None,
                        annotations: BTreeMap::new(),
                    },
                    layers,
                };
                files.push((cfg.digest.clone(), cfg.path.clone()));
                let bytes = serde_json::to_vec(&manifest)
                    .map_err(|e| io_err(archive, io::Error::other(e)))?;
                images.push((entry.repo_tags.unwrap_or_default(), bytes, manifest, files));
            }
        } else if staged.files.contains_key("index.json") {
            let index: Index =
                serde_json::from_slice(&staged.read("index.json")?).map_err(|e| {
                    ImageError::Format {
                        archive: label.clone(),
                        message: format!("index.json: {e}"),
                    }
                })?;
            for desc in index.manifests {
                let names: Vec<String> = [
                    "io.containerd.image.name",
                    "org.opencontainers.image.ref.name",
                ]
                .iter()
                .filter_map(|k| desc.annotations.get(*k))
                .filter(|n| n.contains(':') || n.contains('/'))
                .take(1)
                .cloned()
                .collect();
                let mdesc = self.pick_manifest(&staged, &desc, &label)?;
                let s = staged.blob(&mdesc.digest)?;
                let bytes = fs::read(&s.path).map_err(|e| io_err(&s.path, e))?;
                let manifest: Manifest =
                    serde_json::from_slice(&bytes).map_err(|e| ImageError::Format {
                        archive: label.clone(),
                        message: format!("manifest {}: {e}", mdesc.digest),
                    })?;
                let mut files = vec![(mdesc.digest.clone(), s.path.clone())];
                for d in manifest
                    .layers
                    .iter()
                    .chain(std::iter::once(&manifest.config))
                {
                    let b = staged.blob(&d.digest)?;
                    files.push((d.digest.clone(), b.path.clone()));
                }
                images.push((names, bytes, manifest, files));
            }
        } else {
            return Err(ImageError::Format {
                archive: label,
                message: "neither manifest.json (docker save) nor index.json (OCI layout) found"
                    .into(),
            });
        }
        if images.is_empty() {
            return Err(ImageError::Format {
                archive: label,
                message: "the archive holds no image".into(),
            });
        }

        // Verify configs and unpack new layers into staging.
        let mut new_layers: Vec<(PathBuf, Digest)> = Vec::new();
        let mut parsed = Vec::new();
        for (names, bytes, manifest, files) in &images {
            let cfg_path = &files
                .iter()
                .find(|(d, _)| d == &manifest.config.digest)
                .ok_or_else(|| ImageError::Format {
                    archive: label.clone(),
                    message: "config blob missing".into(),
                })?
                .1;
            let cfg_bytes = fs::read(cfg_path).map_err(|e| io_err(cfg_path, e))?;
            let cfg = ImageConfig::parse(&cfg_bytes).map_err(|e| ImageError::Format {
                archive: label.clone(),
                message: format!("image config {}: {e}", manifest.config.digest),
            })?;
            if !cfg.diff_ids.is_empty() && cfg.diff_ids.len() != manifest.layers.len() {
                return Err(ImageError::Format {
                    archive: label.clone(),
                    message: format!(
                        "config lists {} diff_ids for {} layers",
                        cfg.diff_ids.len(),
                        manifest.layers.len()
                    ),
                });
            }
            let mut budget = limits::Budget::new(self.limits);
            for (i, l) in manifest.layers.iter().enumerate() {
                if self.layer_dir(&l.digest).is_dir()
                    || new_layers.iter().any(|(_, d)| d == &l.digest)
                {
                    continue;
                }
                let src = &files
                    .iter()
                    .find(|(d, _)| d == &l.digest)
                    .ok_or_else(|| ImageError::Format {
                        archive: label.clone(),
                        message: format!("layer {} missing", l.digest),
                    })?
                    .1;
                let dest = staged.dir.join("layers").join(l.digest.hex());
                fs::create_dir_all(&dest).map_err(|e| io_err(&dest, e))?;
                let (stream, _) = open_maybe_gzip(src)?;
                let mut hr = HashingReader::new(stream);
                layer::unpack_layer_with(
                    &mut hr,
                    &dest,
                    &format!("{} of {label}", l.digest),
                    &mut budget,
                )?;
                let diff_id = hr.finish().map_err(|e| io_err(src, e))?;
                if let Some(expected) = cfg.diff_ids.get(i)
                    && expected != &diff_id
                {
                    return Err(ImageError::DigestMismatch {
                        what: format!("layer {} (uncompressed)", l.digest),
                        expected: expected.clone(),
                        actual: diff_id,
                    });
                }
                new_layers.push((dest, l.digest.clone()));
            }
            let mdigest = Digest::of_bytes(bytes);
            parsed.push((names.clone(), mdigest, bytes.clone()));
        }

        // Everything verified: move into place.
        let _lock = self.lock()?;
        for (_, bytes, _, files) in &images {
            for (d, p) in files {
                let dst = self.blob_path(d);
                if !dst.exists() {
                    fs::copy(p, &dst).map_err(|e| io_err(&dst, e))?;
                }
            }
            let md = Digest::of_bytes(bytes);
            let dst = self.blob_path(&md);
            if !dst.exists() {
                write_atomic(&dst, bytes).map_err(|e| io_err(&dst, e))?;
            }
        }
        for (dir, d) in new_layers {
            let dst = self.layer_dir(&d);
            if !dst.exists() {
                fs::rename(&dir, &dst).map_err(|e| io_err(&dst, e))?;
            }
        }
        let mut refs = self.read_refs()?;
        let mut out = Vec::new();
        for (names, digest, _) in parsed {
            let names: Vec<String> = match name {
                Some(n) => vec![normalize_reference(n)?],
                None => names
                    .iter()
                    .map(|n| normalize_reference(n))
                    .collect::<Result<_, _>>()?,
            };
            if names.is_empty() {
                refs.refs.insert(digest.to_string(), digest.clone());
                out.push(ImageRef {
                    name: digest.to_string(),
                    digest: digest.clone(),
                });
            }
            for n in names {
                refs.refs.insert(n.clone(), digest.clone());
                out.push(ImageRef {
                    name: n,
                    digest: digest.clone(),
                });
            }
        }
        self.write_refs(&refs)?;
        Ok(out)
    }

    fn pick_manifest(
        &self,
        staged: &StagedArchive,
        desc: &Descriptor,
        label: &str,
    ) -> Result<Descriptor, ImageError> {
        if desc.media_type != config::OCI_INDEX && desc.media_type != config::DOCKER_LIST {
            return Ok(desc.clone());
        }
        let s = staged.blob(&desc.digest)?;
        let data = fs::read(&s.path).map_err(|e| io_err(&s.path, e))?;
        let index: Index = serde_json::from_slice(&data).map_err(|e| ImageError::Format {
            archive: label.to_string(),
            message: format!("index {}: {e}", desc.digest),
        })?;
        let arch = host_arch();
        let choice = index
            .manifests
            .iter()
            .find(|m| {
                m.platform
                    .as_ref()
                    .is_some_and(|p| p.os == "linux" && p.architecture == arch)
            })
            .or_else(|| index.manifests.iter().find(|m| m.platform.is_none()))
            .ok_or_else(|| ImageError::Format {
                archive: label.to_string(),
                message: format!("no linux/{arch} manifest in index {}", desc.digest),
            })?;
        self.pick_manifest(staged, choice, label)
    }

    fn stage_archive(&self, archive: &Path) -> Result<StagedArchive, ImageError> {
        let dir = self.staging_dir("import")?;
        let mut staged = StagedArchive {
            dir: dir.clone(),
            files: HashMap::new(),
            symlinks: HashMap::new(),
            name: archive.display().to_string(),
        };
        let files_dir = dir.join("files");
        fs::create_dir_all(&files_dir).map_err(|e| io_err(&files_dir, e))?;
        let (stream, _) = open_maybe_gzip(archive)?;
        let mut ar = tar::Archive::new(stream);
        let entries = ar.entries().map_err(|e| io_err(archive, e))?;
        // The archive itself is held to the image's limits too: its members
        // (compressed layers, configs) are staged on disk.
        let mut staged_bytes: u64 = 0;
        for (i, entry) in entries.enumerate() {
            let mut entry = entry.map_err(|e| ImageError::Format {
                archive: staged.name.clone(),
                message: format!("corrupt tar: {e}"),
            })?;
            staged_bytes = staged_bytes.saturating_add(entry.size());
            let over = if staged_bytes > self.limits.max_unpacked_bytes {
                Some((
                    "unpacked bytes",
                    self.limits.max_unpacked_bytes,
                    limits::FLAG_MAX_UNPACKED_BYTES,
                ))
            } else if i as u64 >= self.limits.max_entries {
                Some(("entries", self.limits.max_entries, limits::FLAG_MAX_ENTRIES))
            } else {
                None
            };
            if let Some((what, limit, flag)) = over {
                return Err(ImageError::LimitExceeded {
                    layer: format!("(archive) {}", staged.name),
                    entry: entry
                        .path()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    what: what.into(),
                    limit,
                    flag,
                });
            }
            let raw = entry
                .path()
                .map_err(|e| io_err(archive, e))?
                .to_string_lossy()
                .into_owned();
            let member = layer::sanitize_entry_path(Path::new(&raw)).map_err(|reason| {
                ImageError::UnsafeEntry {
                    layer: staged.name.clone(),
                    entry: raw.clone(),
                    reason,
                }
            })?;
            let Some(member) = member else { continue };
            let member = member.to_string_lossy().into_owned();
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let p = files_dir.join(i.to_string());
                    let f = File::create(&p).map_err(|e| io_err(&p, e))?;
                    let mut w = HashingWriter::new(f);
                    io::copy(&mut entry, &mut w).map_err(|e| io_err(&p, e))?;
                    let (mut f, digest, size) = w.finish();
                    f.flush().map_err(|e| io_err(&p, e))?;
                    if let Some(hex) = member.strip_prefix("blobs/sha256/")
                        && hex != digest.hex()
                    {
                        return Err(ImageError::DigestMismatch {
                            what: format!("{}: {member}", staged.name),
                            expected: Digest::from_hex(hex).map_err(|_| ImageError::Format {
                                archive: staged.name.clone(),
                                message: format!("bad blob name {member}"),
                            })?,
                            actual: digest,
                        });
                    }
                    staged.files.insert(
                        member,
                        Staged {
                            path: p,
                            digest,
                            size,
                        },
                    );
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    if let Ok(Some(t)) = entry.link_name() {
                        let t = t.to_string_lossy().into_owned();
                        let resolved = if entry.header().entry_type() == tar::EntryType::Link {
                            normalize_member(&t)
                        } else {
                            let parent = Path::new(&member)
                                .parent()
                                .map(|p| p.to_string_lossy().into_owned())
                                .unwrap_or_default();
                            normalize_member(&format!("{parent}/{t}"))
                        };
                        staged.symlinks.insert(member, resolved);
                    }
                }
                _ => {}
            }
        }
        Ok(staged)
    }

    /// Resolves a name (`busybox`, `busybox:1`, `sha256:…`) to an image.
    pub fn resolve(&self, name: &str) -> Result<Image, ImageError> {
        let key = normalize_reference(name)?;
        let refs = self.read_refs()?;
        let digest = match refs.refs.get(&key) {
            Some(d) => d.clone(),
            None if key.starts_with("sha256:")
                && refs.refs.values().any(|d| d.to_string() == key) =>
            {
                key.parse()
                    .map_err(|_| ImageError::InvalidReference(key.clone()))?
            }
            None => return Err(ImageError::NotFound(name.to_string())),
        };
        self.load(&digest)
    }

    fn read_manifest(&self, digest: &Digest) -> Result<Manifest, ImageError> {
        let p = self.blob_path(digest);
        let data = fs::read(&p).map_err(|e| io_err(&p, e))?;
        serde_json::from_slice(&data).map_err(|e| ImageError::Format {
            archive: p.display().to_string(),
            message: e.to_string(),
        })
    }

    fn load(&self, digest: &Digest) -> Result<Image, ImageError> {
        let manifest = self.read_manifest(digest)?;
        let cp = self.blob_path(&manifest.config.digest);
        let cdata = fs::read(&cp).map_err(|e| io_err(&cp, e))?;
        let config = ImageConfig::parse(&cdata).map_err(|e| ImageError::Format {
            archive: cp.display().to_string(),
            message: e.to_string(),
        })?;
        let layers: Vec<Digest> = manifest.layers.iter().map(|l| l.digest.clone()).collect();
        let layer_dirs = layers.iter().map(|d| self.layer_dir(d)).collect::<Vec<_>>();
        for d in &layer_dirs {
            if !d.is_dir() {
                return Err(io_err(
                    d,
                    io::Error::new(io::ErrorKind::NotFound, "layer not unpacked"),
                ));
            }
        }
        Ok(Image {
            digest: digest.clone(),
            config_digest: manifest.config.digest,
            config,
            layers,
            layer_dirs,
        })
    }

    /// Lists every reference with its size.
    pub fn list(&self) -> Result<Vec<ImageSummary>, ImageError> {
        let refs = self.read_refs()?;
        let mut out = Vec::new();
        for (name, digest) in refs.refs {
            let size = self
                .read_manifest(&digest)
                .map(|m| m.layers.iter().map(|l| l.size).sum())
                .unwrap_or(0);
            out.push(ImageSummary { name, digest, size });
        }
        Ok(out)
    }

    /// Points `target` at the image `source` resolves to.
    pub fn tag(&self, source: &str, target: &str) -> Result<ImageRef, ImageError> {
        let img = self.resolve(source)?;
        let name = normalize_reference(target)?;
        let _lock = self.lock()?;
        let mut refs = self.read_refs()?;
        refs.refs.insert(name.clone(), img.digest.clone());
        self.write_refs(&refs)?;
        Ok(ImageRef {
            name,
            digest: img.digest,
        })
    }

    /// Removes a reference (by name), or every reference to a digest.
    /// Blobs and layers stay until `gc`.
    pub fn remove(&self, name: &str) -> Result<(), ImageError> {
        let key = normalize_reference(name)?;
        let _lock = self.lock()?;
        let mut refs = self.read_refs()?;
        let before = refs.refs.len();
        refs.refs.retain(|n, d| n != &key && d.to_string() != key);
        if refs.refs.len() == before {
            return Err(ImageError::NotFound(name.to_string()));
        }
        self.write_refs(&refs)
    }

    /// Deletes blobs and unpacked layers that no reference uses and that
    /// are not in `keep_layers` (layers of existing containers).
    pub fn gc(&self, keep_layers: &BTreeSet<Digest>) -> Result<GcReport, ImageError> {
        let _lock = self.lock()?;
        let refs = self.read_refs()?;
        let mut live: BTreeSet<Digest> = keep_layers.clone();
        for d in refs.refs.values() {
            live.insert(d.clone());
            if let Ok(m) = self.read_manifest(d) {
                live.insert(m.config.digest.clone());
                live.extend(m.layers.into_iter().map(|l| l.digest));
            }
        }
        let mut report = GcReport::default();
        for (sub, is_layer) in [("blobs/sha256", false), ("layers", true)] {
            let dir = self.root.join(sub);
            for e in fs::read_dir(&dir).map_err(|e| io_err(&dir, e))? {
                let e = e.map_err(|e| io_err(&dir, e))?;
                let name = e.file_name().to_string_lossy().into_owned();
                let Ok(d) = Digest::from_hex(&name) else {
                    continue;
                };
                if live.contains(&d) {
                    continue;
                }
                let p = e.path();
                if is_layer {
                    fs::remove_dir_all(&p).map_err(|e| io_err(&p, e))?;
                    report.layers_removed += 1;
                } else {
                    fs::remove_file(&p).map_err(|e| io_err(&p, e))?;
                    report.blobs_removed += 1;
                }
            }
        }
        Ok(report)
    }
}

fn hex_in_member_name(member: &str) -> Option<String> {
    let base = Path::new(member);
    let name = if base.file_name()? == "layer.tar" {
        base.parent()?.file_name()?
    } else {
        base.file_name()?
    };
    let name = name.to_str()?;
    let stem = name.strip_suffix(".json").unwrap_or(name);
    Digest::from_hex(stem).ok().map(|d| d.hex().to_string())
}

fn is_gzip(p: &Path) -> io::Result<bool> {
    let mut f = File::open(p)?;
    let mut m = [0u8; 2];
    Ok(read_up_to(&mut f, &mut m)? == 2 && m == [0x1f, 0x8b])
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_references() {
        assert_eq!(normalize_reference("busybox").unwrap(), "busybox:latest");
        assert_eq!(
            normalize_reference("docker.io/library/busybox:1.36").unwrap(),
            "busybox:1.36"
        );
        assert_eq!(
            normalize_reference("localhost:5000/x").unwrap(),
            "localhost:5000/x:latest"
        );
        assert!(normalize_reference("../x").is_err());
        assert!(normalize_reference("a b").is_err());
    }

    #[test]
    fn member_hex_names() {
        let h = "a".repeat(64);
        assert_eq!(hex_in_member_name(&format!("{h}.json")), Some(h.clone()));
        assert_eq!(
            hex_in_member_name(&format!("{h}/layer.tar")),
            Some(h.clone())
        );
        assert_eq!(hex_in_member_name(&format!("blobs/sha256/{h}")), Some(h));
        assert_eq!(hex_in_member_name("manifest.json"), None);
    }
}

#[cfg(test)]
mod import_tests {
    use super::*;
    use crate::testimage;

    fn layer(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (p, d) in entries {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(d.len() as u64);
            b.append_data(&mut h, p, *d).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn imports_both_formats_tags_removes_and_gcs() {
        let t = tempfile::tempdir().unwrap();
        let store = ImageStore::open(t.path().join("store")).unwrap();
        let l1 = layer(&[("a/one", b"1")]);
        let l2 = layer(&[("a/two", b"2")]);
        let ds = t.path().join("ds.tar");
        testimage::write_docker_save(&ds, "demo:v1", &[l1.clone(), l2.clone()], &["sh"]).unwrap();
        let refs = store.import(&ds, None).unwrap();
        assert_eq!(refs[0].name, "demo:v1");
        let img = store.resolve("demo:v1").unwrap();
        assert_eq!(img.layer_dirs.len(), 2);
        assert_eq!(fs::read(img.layer_dirs[1].join("a/two")).unwrap(), b"2");
        assert_eq!(img.config.cmd, vec!["sh"]);
        assert_eq!(img.config.exposed_ports, vec!["8080/tcp"]);
        for l in &img.layers {
            assert!(store.has_blob(l));
        }

        let oci = t.path().join("oci.tar.gz");
        testimage::write_oci_layout_gz(&oci, "docker.io/library/other:2", &[l1], &["true"])
            .unwrap();
        let refs = store.import(&oci, None).unwrap();
        assert_eq!(refs[0].name, "other:2");
        let other = store.resolve("other:2").unwrap();
        assert_eq!(fs::read(other.layer_dirs[0].join("a/one")).unwrap(), b"1");

        store.tag("demo:v1", "demo:latest").unwrap();
        assert_eq!(store.resolve("demo").unwrap().digest, img.digest);
        assert_eq!(store.list().unwrap().len(), 3);

        store.remove("demo:v1").unwrap();
        store.remove("demo:latest").unwrap();
        assert!(matches!(
            store.resolve("demo:v1"),
            Err(ImageError::NotFound(_))
        ));
        let report = store.gc(&BTreeSet::new()).unwrap();
        assert_eq!(report.layers_removed, 2, "{report:?}");
        assert!(report.blobs_removed >= 3);
        // The other image is intact.
        store.resolve("other:2").unwrap();
        assert!(
            fs::read_dir(store.root().join("tmp"))
                .unwrap()
                .next()
                .is_none()
        );
    }

    #[test]
    fn corrupt_blob_is_rejected_and_nothing_stays() {
        let t = tempfile::tempdir().unwrap();
        let store = ImageStore::open(t.path().join("store")).unwrap();
        let l1 = layer(&[("x", b"1")]);
        let ds = t.path().join("ds.tar");
        // Claim the wrong diff_id by building the config for another layer.
        let cfg_for_other = layer(&[("y", b"2")]);
        testimage::write_docker_save(&ds, "bad:1", &[cfg_for_other], &["sh"]).unwrap();
        // Swap the layer content in place: rebuild with l1 but reuse names.
        let data = fs::read(&ds).unwrap();
        let mut ar = tar::Archive::new(&data[..]);
        let mut b = tar::Builder::new(Vec::new());
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let p = e.path().unwrap().into_owned();
            let mut content = Vec::new();
            e.read_to_end(&mut content).unwrap();
            if p.ends_with("layer.tar") {
                content = l1.clone();
            }
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(content.len() as u64);
            b.append_data(&mut h, &p, &content[..]).unwrap();
        }
        fs::write(&ds, b.into_inner().unwrap()).unwrap();
        let err = store.import(&ds, None).unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
        assert!(
            fs::read_dir(store.root().join("layers"))
                .unwrap()
                .next()
                .is_none()
        );
        assert!(
            fs::read_dir(store.root().join("blobs/sha256"))
                .unwrap()
                .next()
                .is_none()
        );
        assert!(
            fs::read_dir(store.root().join("tmp"))
                .unwrap()
                .next()
                .is_none()
        );
    }
}
