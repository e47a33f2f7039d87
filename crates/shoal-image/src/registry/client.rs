//! The pull: for each endpoint of the image's registry in turn (mirrors first), fetch
//! the manifest (an index picks this node's platform), then the config and layer blobs
//! the store lacks, several at once, each streamed into a partial file that a retry
//! resumes with `Range`, hashed while it arrives and rejected if its digest differs;
//! then the store registers the image (layers unpacked and checked against the
//! config's `diff_ids`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use http::{Method, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use rustls::ClientConfig;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use super::auth::{Challenge, TokenResponse, parse_challenge, token_url};
use super::credentials::{Credentials, Keyring};
use super::hosts::{Endpoint, RegistriesConfig};
use super::http::{IDLE_TIMEOUT, Url, send, tls_config};
use super::reference::Reference;
use super::{RegistryError, host_platform, most_telling};
use crate::config::{self, Descriptor, Index, Manifest};
use crate::digest::Digest;
use crate::{Image, ImageStore};

/// Docker's schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker's schema 1 manifests (not supported).
const DOCKER_SCHEMA1: [&str; 2] = [
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];
/// Layer media types we unpack (gzip and zstd are recognised by their magic bytes).
const LAYER_TYPES: [&str; 6] = [
    config::OCI_LAYER_TAR,
    config::OCI_LAYER_GZIP,
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
    "",
];
/// Config media types of container images.
const CONFIG_TYPES: [&str; 3] = [
    config::OCI_CONFIG,
    "application/vnd.docker.container.image.v1+json",
    "",
];
/// Largest manifest or token answer read into memory.
const MAX_DOCUMENT: usize = 4 << 20;
/// Attempts per blob; each resumes where the previous one stopped.
const BLOB_ATTEMPTS: usize = 4;
/// Redirects followed (blob downloads are often redirected to a CDN).
const MAX_REDIRECTS: usize = 5;

/// A pulled image.
#[derive(Debug)]
pub struct Pulled {
    /// The image as stored (its digest is the platform manifest's).
    pub image: Image,
    /// The endpoint it came from.
    pub endpoint: String,
    /// Blob bytes downloaded (0 when the store had them all).
    pub downloaded: u64,
}

/// An image fetched by [`RegistryClient::download`]: its blobs and manifest are in the
/// store's blob directory.
#[derive(Debug)]
pub struct Downloaded {
    /// The platform manifest's digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// The manifest.
    pub manifest: Manifest,
    /// The endpoint it came from.
    pub endpoint: String,
    /// Blob bytes downloaded.
    pub downloaded: u64,
}

/// Told about each blob as its download completes: the blob and the bytes downloaded (0:
/// the store had it).
pub type BlobProgress = Arc<dyn Fn(&Descriptor, u64) + Send + Sync>;

/// Pulls images from registries with a node's `registries.yaml`.
#[derive(Debug)]
pub struct RegistryClient {
    config: RegistriesConfig,
    tls: Mutex<HashMap<String, Arc<ClientConfig>>>,
    /// One lock per partial file: two pulls of the same blob at once must not append to
    /// the same file.
    blob_locks: Mutex<HashMap<std::path::PathBuf, Arc<tokio::sync::Mutex<()>>>>,
    /// Blobs downloaded at once.
    pub parallel: usize,
    progress: Option<Progress>,
    /// Where credentials come from, for the message when a registry wants some.
    credentials_hint: &'static str,
}

struct Progress(BlobProgress);

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress")
    }
}

impl RegistryClient {
    /// A client with the node's mirrors and host settings.
    pub fn new(config: RegistriesConfig) -> Self {
        Self {
            config,
            tls: Mutex::new(HashMap::new()),
            blob_locks: Mutex::new(HashMap::new()),
            parallel: 3,
            progress: None,
            credentials_hint: "imagePullSecrets, or configs in --registries",
        }
    }

    /// The same client naming `hint` as where credentials come from (in the error when a
    /// registry asks for some and there are none).
    pub fn with_credentials_hint(mut self, hint: &'static str) -> Self {
        self.credentials_hint = hint;
        self
    }

    /// The same client telling `progress` about each blob.
    pub fn with_progress(mut self, progress: BlobProgress) -> Self {
        self.progress = Some(Progress(progress));
        self
    }

    fn report(&self, d: &Descriptor, downloaded: u64) {
        if let Some(p) = &self.progress {
            (p.0)(d, downloaded);
        }
    }

    /// The node's registry settings.
    pub fn config(&self) -> &RegistriesConfig {
        &self.config
    }

    fn blob_lock(&self, partial: &Path) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.blob_locks.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(partial.to_path_buf()).or_default().clone()
    }

    fn tls_for(&self, host: &str, r: &Reference) -> Result<Arc<ClientConfig>, RegistryError> {
        let mut cache = self.tls.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cache.get(host) {
            return Ok(c.clone());
        }
        let ep = Endpoint {
            scheme: super::hosts::Scheme::Https,
            host: host.to_string(),
        };
        let c = tls_config(self.config.host_config(&ep, r).and_then(|h| h.tls.as_ref()))?;
        cache.insert(host.to_string(), c.clone());
        Ok(c)
    }

    /// Pulls `image` into `store` under `names` (partial downloads live in `partial_dir`),
    /// trying each endpoint in turn; the error is the most telling of theirs.
    pub async fn pull(
        &self,
        image: &str,
        keyring: &Keyring,
        store: &ImageStore,
        partial_dir: &Path,
        names: &[String],
    ) -> Result<Pulled, RegistryError> {
        let d = self.download(image, keyring, store, partial_dir).await?;
        let (store2, digest, names) = (store.clone(), d.digest.clone(), names.to_vec());
        let image = tokio::task::spawn_blocking(move || store2.register_pulled(&digest, &names))
            .await
            .map_err(|e| RegistryError::Protocol {
                endpoint: d.endpoint.clone(),
                message: format!("registering the image: {e}"),
            })??;
        Ok(Pulled {
            image,
            endpoint: d.endpoint,
            downloaded: d.downloaded,
        })
    }

    /// Fetches `image`'s manifest (this platform's) and blobs into `store`'s blob
    /// directory without registering or unpacking it (`shoalctl image pull` makes an OCI
    /// layout of them), trying each endpoint in turn; the error is the most telling of
    /// theirs.
    pub async fn download(
        &self,
        image: &str,
        keyring: &Keyring,
        store: &ImageStore,
        partial_dir: &Path,
    ) -> Result<Downloaded, RegistryError> {
        let r = Reference::parse(image)?;
        let mut errors = Vec::new();
        for ep in self.config.endpoints(&r) {
            let creds = keyring.credentials(&ep, &r, &self.config)?;
            let session = Session {
                client: self,
                base: Url {
                    scheme: ep.scheme,
                    host: ep.host.clone(),
                    path: "/".into(),
                },
                r: &r,
                creds,
                auth: Mutex::new(None),
            };
            match session.download(store, partial_dir).await {
                Ok(p) => return Ok(p),
                Err(e) => {
                    tracing::debug!(image, endpoint = %ep, "pull failed: {e}");
                    errors.push(e);
                }
            }
        }
        Err(
            most_telling(errors).unwrap_or_else(|| RegistryError::Unreachable {
                endpoint: r.registry.clone(),
                message: "no endpoint to ask: the registry's own is off \
                          (--disable-default-registry-endpoint) and --registries has no mirror \
                          for it"
                    .into(),
            }),
        )
    }
}

/// One endpoint, its credentials and the authorization it earned.
struct Session<'a> {
    client: &'a RegistryClient,
    base: Url,
    r: &'a Reference,
    creds: Option<Credentials>,
    auth: Mutex<Option<String>>,
}

/// A manifest as fetched: bytes, digest, media type.
struct Fetched {
    bytes: Vec<u8>,
    digest: Digest,
    media_type: String,
}

impl Session<'_> {
    fn endpoint(&self) -> String {
        self.base.origin()
    }

    fn protocol(&self, message: String) -> RegistryError {
        RegistryError::Protocol {
            endpoint: self.endpoint(),
            message,
        }
    }

    /// Fetches the manifest (this platform's, from an index) and every blob the store
    /// lacks into the store, without registering the image.
    async fn download(
        &self,
        store: &ImageStore,
        partial_dir: &Path,
    ) -> Result<Downloaded, RegistryError> {
        let top = self.manifest(&self.r.manifest_reference()).await?;
        if let Some(d) = &self.r.digest
            && d != &top.digest
        {
            return Err(RegistryError::DigestMismatch {
                what: format!("manifest {} from {}", self.r, self.endpoint()),
                expected: d.clone(),
                actual: top.digest,
            });
        }
        let m = if is_index(&top) {
            let index: Index = serde_json::from_slice(&top.bytes)
                .map_err(|e| self.protocol(format!("index {}: {e}", top.digest)))?;
            let chosen = pick_platform(&index, &top.digest)?;
            let m = self.manifest(&chosen.digest.to_string()).await?;
            if m.digest != chosen.digest {
                return Err(RegistryError::DigestMismatch {
                    what: format!("manifest {} of index {}", chosen.digest, top.digest),
                    expected: chosen.digest,
                    actual: m.digest,
                });
            }
            if is_index(&m) {
                return Err(self.protocol(format!("index {} points at another index", top.digest)));
            }
            m
        } else {
            top
        };
        if DOCKER_SCHEMA1.contains(&m.media_type.as_str()) {
            return Err(self.protocol(format!(
                "{}: Docker schema 1 manifests are not supported (push the image again with a current client)",
                self.r
            )));
        }
        let manifest: Manifest = serde_json::from_slice(&m.bytes)
            .map_err(|e| self.protocol(format!("manifest {}: {e}", m.digest)))?;
        check_media_types(&manifest).map_err(|e| self.protocol(format!("{}: {e}", self.r)))?;

        let blobs: Vec<Descriptor> = std::iter::once(manifest.config.clone())
            .chain(manifest.layers.iter().cloned())
            .filter(|d| !store.has_blob(&d.digest))
            .fold(Vec::new(), |mut v, d| {
                if !v.iter().any(|x: &Descriptor| x.digest == d.digest) {
                    v.push(d);
                }
                v
            });
        tokio::fs::create_dir_all(partial_dir)
            .await
            .map_err(|e| crate::io_err(partial_dir, e))?;
        // The futures are made first: a stream of closures borrowing `self` would not be
        // `Send` for every lifetime (rust-lang/rust#102211).
        let downloads: Vec<_> = blobs
            .iter()
            .map(|d| self.blob(d, store, partial_dir))
            .collect();
        let mut downloaded = 0u64;
        let mut running =
            futures::stream::iter(downloads).buffer_unordered(self.client.parallel.max(1));
        while let Some(n) = running.next().await {
            downloaded += n?;
        }
        let (store2, digest, bytes) = (store.clone(), m.digest.clone(), m.bytes.clone());
        tokio::task::spawn_blocking(move || {
            if !store2.has_blob(&digest) {
                store2.import_blob(&digest, &mut &bytes[..])?;
            }
            Ok::<_, crate::ImageError>(())
        })
        .await
        .map_err(|e| self.protocol(format!("storing the manifest: {e}")))??;
        Ok(Downloaded {
            digest: m.digest,
            media_type: m.media_type,
            manifest,
            endpoint: self.endpoint(),
            downloaded,
        })
    }

    /// GETs a manifest by tag or digest.
    async fn manifest(&self, reference: &str) -> Result<Fetched, RegistryError> {
        let path = format!("/v2/{}/manifests/{reference}", self.r.repository);
        let accept = [
            config::OCI_MANIFEST,
            DOCKER_MANIFEST,
            config::OCI_INDEX,
            config::DOCKER_LIST,
        ]
        .join(", ");
        let resp = self.get(&path, vec![(header::ACCEPT, accept)]).await?;
        let what = || {
            format!(
                "manifest {}/{}:{reference}",
                self.r.registry, self.r.repository
            )
            .replace(":sha256:", "@sha256:")
        };
        match resp.status() {
            s if s.is_success() => {}
            StatusCode::NOT_FOUND => {
                return Err(RegistryError::NotFound {
                    endpoint: self.endpoint(),
                    what: what(),
                });
            }
            s => return Err(self.status_error(s, &what(), resp).await),
        }
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
            .unwrap_or_default();
        let bytes = read_limited(resp, MAX_DOCUMENT)
            .await
            .map_err(|e| self.protocol(format!("{}: {e}", what())))?;
        let digest = Digest::of_bytes(&bytes);
        let body_type = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| {
                v.get("mediaType")
                    .and_then(|t| t.as_str().map(str::to_string))
                    .or_else(|| v.get("manifests").map(|_| config::OCI_INDEX.to_string()))
            });
        let media_type = body_type.filter(|t| !t.is_empty()).unwrap_or(content_type);
        Ok(Fetched {
            bytes,
            digest,
            media_type,
        })
    }

    /// Streams blob `d` into its partial file (resuming it), verifies it and imports it.
    /// Returns the bytes downloaded.
    async fn blob(
        &self,
        d: &Descriptor,
        store: &ImageStore,
        partial_dir: &Path,
    ) -> Result<u64, RegistryError> {
        let path = partial_dir.join(format!("{}.partial", d.digest.hex()));
        let lock = self.client.blob_lock(&path);
        let _held = lock.lock().await;
        if store.has_blob(&d.digest) {
            self.client.report(d, 0);
            return Ok(0);
        }
        let what = format!("blob {} of {}", d.digest, self.r);
        // A descriptor must give the size; without one, the unpacking limit caps the
        // download.
        let cap = if d.size > 0 {
            d.size
        } else {
            store.limits().max_unpacked_bytes
        };
        let mut last: Option<RegistryError> = None;
        let mut downloaded = 0u64;
        for attempt in 0..BLOB_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(250 << attempt)).await;
            }
            let (mut hasher, mut have) = hash_prefix(&path).await?;
            if have > cap {
                remove(&path).await;
                (hasher, have) = (Sha256::new(), 0);
            }
            let mut headers = Vec::new();
            if have > 0 && have < cap {
                headers.push((header::RANGE, format!("bytes={have}-")));
            }
            let resp = if have > 0 && have == d.size {
                None
            } else {
                match self
                    .get(
                        &format!("/v2/{}/blobs/{}", self.r.repository, d.digest),
                        headers,
                    )
                    .await
                {
                    Ok(r) => Some(r),
                    Err(e) if e.is_unreachable() => {
                        last = Some(e);
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            };
            if let Some(resp) = resp {
                match resp.status() {
                    StatusCode::PARTIAL_CONTENT if have > 0 => {}
                    StatusCode::OK => {
                        if have > 0 {
                            (hasher, have) = (Sha256::new(), 0);
                            remove(&path).await;
                        }
                    }
                    StatusCode::RANGE_NOT_SATISFIABLE => {
                        remove(&path).await;
                        last = Some(self.protocol(format!("{what}: range not satisfiable")));
                        continue;
                    }
                    StatusCode::NOT_FOUND => {
                        return Err(RegistryError::NotFound {
                            endpoint: self.endpoint(),
                            what,
                        });
                    }
                    s => return Err(self.status_error(s, &what, resp).await),
                }
                let mut f = tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .await
                    .map_err(|e| crate::io_err(&path, e))?;
                let mut body = resp.into_body();
                let mut broken = None;
                loop {
                    let frame = match tokio::time::timeout(IDLE_TIMEOUT, body.frame()).await {
                        Err(_) => {
                            broken = Some(format!("no data for {IDLE_TIMEOUT:?}"));
                            break;
                        }
                        Ok(None) => break,
                        Ok(Some(Err(e))) => {
                            broken = Some(e.to_string());
                            break;
                        }
                        Ok(Some(Ok(frame))) => frame,
                    };
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    have += data.len() as u64;
                    if have > cap {
                        drop(f);
                        remove(&path).await;
                        return Err(RegistryError::DigestMismatch {
                            what: format!(
                                "{what} from {}: more than its {cap} bytes",
                                self.endpoint()
                            ),
                            expected: d.digest.clone(),
                            actual: Digest::from_hex(&hex::encode(hasher.finalize()))
                                .map_err(|e| self.protocol(e.to_string()))?,
                        });
                    }
                    hasher.update(&data);
                    downloaded += data.len() as u64;
                    f.write_all(&data)
                        .await
                        .map_err(|e| crate::io_err(&path, e))?;
                }
                f.flush().await.map_err(|e| crate::io_err(&path, e))?;
                drop(f);
                if let Some(message) = broken {
                    last = Some(RegistryError::Unreachable {
                        endpoint: self.endpoint(),
                        message: format!("{what}: {message} after {have} bytes"),
                    });
                    continue;
                }
            }
            let actual = Digest::from_hex(&hex::encode(hasher.finalize()))
                .map_err(|e| self.protocol(e.to_string()))?;
            if actual != d.digest {
                remove(&path).await;
                return Err(RegistryError::DigestMismatch {
                    what: format!("{what} from {}", self.endpoint()),
                    expected: d.digest.clone(),
                    actual,
                });
            }
            let (store, digest, p) = (store.clone(), d.digest.clone(), path.clone());
            let res = tokio::task::spawn_blocking(move || {
                let mut f = std::fs::File::open(&p).map_err(|e| crate::io_err(&p, e))?;
                store.import_blob(&digest, &mut f)
            })
            .await
            .map_err(|e| self.protocol(format!("{what}: {e}")))?;
            remove(&path).await;
            res?;
            self.client.report(d, downloaded);
            return Ok(downloaded);
        }
        Err(last.unwrap_or_else(|| self.protocol(format!("{what}: gave up"))))
    }

    /// GET with this session's authorization; answers a 401 challenge once (basic, or a
    /// bearer token from the token server) and follows redirects (without credentials
    /// to other hosts).
    async fn get(
        &self,
        path: &str,
        headers: Vec<(header::HeaderName, String)>,
    ) -> Result<Response<Incoming>, RegistryError> {
        let start = self
            .base
            .join(path)
            .ok_or_else(|| self.protocol(format!("bad path {path}")))?;
        let mut challenged = false;
        'auth: loop {
            let mut url = start.clone();
            for _ in 0..=MAX_REDIRECTS {
                let mut h = headers.clone();
                if url.host == self.base.host
                    && let Some(a) = self.auth.lock().unwrap_or_else(|p| p.into_inner()).clone()
                {
                    h.push((header::AUTHORIZATION, a));
                }
                let tls = self.client.tls_for(&url.host, self.r)?;
                let resp = send(&tls, &url, Method::GET, &h).await?;
                let status = resp.status();
                if status.is_redirection() {
                    let next = resp
                        .headers()
                        .get(header::LOCATION)
                        .and_then(|l| l.to_str().ok())
                        .and_then(|l| url.join(l))
                        .ok_or_else(|| {
                            self.protocol(format!("{path}: redirect without a usable Location"))
                        })?;
                    url = next;
                    continue;
                }
                if status == StatusCode::UNAUTHORIZED && url.host == self.base.host && !challenged {
                    challenged = true;
                    let challenge = resp
                        .headers()
                        .get(header::WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_challenge);
                    let value = self.authorize(challenge).await?;
                    *self.auth.lock().unwrap_or_else(|p| p.into_inner()) = Some(value);
                    continue 'auth;
                }
                return Ok(resp);
            }
            return Err(self.protocol(format!("{path}: more than {MAX_REDIRECTS} redirects")));
        }
    }

    /// The `Authorization` value that answers `challenge`.
    async fn authorize(&self, challenge: Option<Challenge>) -> Result<String, RegistryError> {
        let no_creds = || RegistryError::Unauthorized {
            endpoint: self.endpoint(),
            message: format!(
                "the registry asks for credentials and none are configured for it ({})",
                self.client.credentials_hint
            ),
        };
        match challenge {
            Some(Challenge::Basic) | None => self
                .creds
                .as_ref()
                .map(Credentials::basic_header)
                .ok_or_else(no_creds),
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let scope =
                    scope.unwrap_or_else(|| format!("repository:{}:pull", self.r.repository));
                let url = Url::parse(&token_url(&realm, service.as_deref(), Some(&scope)))
                    .ok_or_else(|| self.protocol(format!("bad token realm {realm:?}")))?;
                let tls = self.client.tls_for(&url.host, self.r)?;
                fetch_token(&tls, &url, self.creds.as_ref()).await
            }
        }
    }

    /// An error for an unexpected status, with the registry's own message if it sent one.
    async fn status_error(
        &self,
        status: StatusCode,
        what: &str,
        resp: Response<Incoming>,
    ) -> RegistryError {
        status_error(
            self.endpoint(),
            self.creds.as_ref(),
            None,
            status,
            what,
            resp,
        )
        .await
    }
}

/// The error for an unexpected `status` from `endpoint` answering `what`, with the
/// registry's own message if it sent one; `no_creds_hint` says where credentials come
/// from when none were given.
pub(super) async fn status_error(
    endpoint: String,
    creds: Option<&Credentials>,
    no_creds_hint: Option<&str>,
    status: StatusCode,
    what: &str,
    resp: Response<Incoming>,
) -> RegistryError {
    let detail = read_limited(resp, 64 << 10)
        .await
        .ok()
        .and_then(|b| registry_message(&b))
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    let code = status.as_u16();
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => RegistryError::Unauthorized {
            endpoint,
            message: match (creds, no_creds_hint) {
                (Some(c), _) => format!(
                    "{what}: the credentials of user {:?} were refused (HTTP {code}{detail})",
                    c.username
                ),
                (None, Some(hint)) => format!("{what}: HTTP {code}{detail}; {hint}"),
                (None, None) => format!("{what}: HTTP {code}{detail}"),
            },
        },
        StatusCode::NOT_FOUND => RegistryError::NotFound {
            endpoint,
            what: format!("{what} (HTTP 404{detail})"),
        },
        _ => RegistryError::Protocol {
            endpoint,
            message: format!("{what}: HTTP {code}{detail}"),
        },
    }
}

/// Asks the token server at `url` (a bearer challenge's realm with service and scope) for
/// a token, with `creds` if any; the `Authorization` value to send.
pub(super) async fn fetch_token(
    tls: &Arc<ClientConfig>,
    url: &Url,
    creds: Option<&Credentials>,
) -> Result<String, RegistryError> {
    let mut h = Vec::new();
    if let Some(c) = creds {
        h.push((header::AUTHORIZATION, c.basic_header()));
    }
    let resp = send(tls, url, Method::GET, &h).await?;
    let status = resp.status();
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Err(RegistryError::Unauthorized {
            endpoint: url.origin(),
            message: match creds {
                Some(c) => format!(
                    "the token server refused the credentials of user {:?} (HTTP {})",
                    c.username,
                    status.as_u16()
                ),
                None => format!(
                    "the token server wants credentials (HTTP {}) and none are configured",
                    status.as_u16()
                ),
            },
        });
    }
    if !status.is_success() {
        return Err(RegistryError::Protocol {
            endpoint: url.origin(),
            message: format!("token request: HTTP {}", status.as_u16()),
        });
    }
    let body = read_limited(resp, MAX_DOCUMENT)
        .await
        .map_err(|e| RegistryError::Protocol {
            endpoint: url.origin(),
            message: format!("token answer: {e}"),
        })?;
    let token = serde_json::from_slice::<TokenResponse>(&body)
        .ok()
        .and_then(TokenResponse::into_token)
        .ok_or_else(|| RegistryError::Protocol {
            endpoint: url.origin(),
            message: "the token answer has no token".into(),
        })?;
    Ok(format!("Bearer {token}"))
}

/// The first message of a distribution-spec error body (`{"errors":[{"code","message"}]}`).
pub(super) fn registry_message(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let e = v.get("errors")?.get(0)?;
    let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("");
    let msg = e.get("message").and_then(|c| c.as_str()).unwrap_or("");
    Some(format!("{code} {msg}").trim().to_string())
}

fn is_index(m: &Fetched) -> bool {
    m.media_type == config::OCI_INDEX || m.media_type == config::DOCKER_LIST
}

/// The entry of `index` for this node's platform; an error listing what it has otherwise.
pub fn pick_platform(index: &Index, digest: &Digest) -> Result<Descriptor, RegistryError> {
    let (os, arch) = host_platform();
    index
        .manifests
        .iter()
        .find(|m| {
            m.platform
                .as_ref()
                .is_some_and(|p| p.os == os && p.architecture == arch)
        })
        .cloned()
        .ok_or_else(|| RegistryError::NoPlatform {
            platform: format!("{os}/{arch}"),
            index: digest.clone(),
            available: {
                let v: Vec<String> = index
                    .manifests
                    .iter()
                    .map(|m| match &m.platform {
                        Some(p) => format!("{}/{}", p.os, p.architecture),
                        None => "unknown".into(),
                    })
                    .collect();
                if v.is_empty() {
                    "nothing".into()
                } else {
                    v.join(", ")
                }
            },
        })
}

/// Refuses manifests that are not container images we can unpack.
pub fn check_media_types(m: &Manifest) -> Result<(), String> {
    if !CONFIG_TYPES.contains(&m.config.media_type.as_str()) {
        return Err(format!(
            "not a container image (config media type {:?})",
            m.config.media_type
        ));
    }
    for l in &m.layers {
        if !LAYER_TYPES.contains(&l.media_type.as_str()) {
            return Err(format!(
                "layer {} has the unsupported media type {:?}",
                l.digest, l.media_type
            ));
        }
    }
    Ok(())
}

pub(super) async fn read_limited(
    resp: Response<Incoming>,
    limit: usize,
) -> Result<Vec<u8>, String> {
    let mut body = resp.into_body();
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(IDLE_TIMEOUT, body.frame()).await {
            Err(_) => return Err(format!("no data for {IDLE_TIMEOUT:?}")),
            Ok(None) => return Ok(out),
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(Some(Ok(f))) => {
                if let Ok(d) = f.into_data() {
                    if out.len() + d.len() > limit {
                        return Err(format!("larger than {limit} bytes"));
                    }
                    out.extend_from_slice(&d);
                }
            }
        }
    }
}

/// The hash state and length of what a partial file already holds.
async fn hash_prefix(path: &Path) -> Result<(Sha256, u64), RegistryError> {
    let p = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut h = Sha256::new();
        match std::fs::File::open(&p) {
            Ok(mut f) => {
                let n = std::io::copy(&mut f, &mut h).map_err(|e| crate::io_err(&p, e))?;
                Ok((h, n))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((h, 0)),
            Err(e) => Err(crate::io_err(&p, e).into()),
        }
    })
    .await
    .unwrap_or_else(|e| {
        Err(RegistryError::Protocol {
            endpoint: path.display().to_string(),
            message: e.to_string(),
        })
    })
}

async fn remove(path: &Path) {
    let _ = tokio::fs::remove_file(path).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Platform;

    fn desc(mt: &str, os: Option<(&str, &str)>) -> Descriptor {
        Descriptor {
            media_type: mt.into(),
            digest: Digest::of_bytes(mt.as_bytes()),
            size: 1,
            platform: os.map(|(o, a)| Platform {
                os: o.into(),
                architecture: a.into(),
            }),
            annotations: Default::default(),
        }
    }

    #[test]
    fn picks_this_platform_or_says_what_there_is() {
        let (os, arch) = host_platform();
        let want = desc("want", Some((os, arch)));
        let index = Index {
            manifests: vec![
                desc("a", Some(("linux", "s390x"))),
                desc("b", None),
                want.clone(),
            ],
        };
        let d = Digest::of_bytes(b"i");
        assert_eq!(pick_platform(&index, &d).unwrap(), want);
        let index = Index {
            manifests: vec![
                desc("a", Some(("linux", "s390x"))),
                desc("w", Some(("windows", arch))),
            ],
        };
        let e = pick_platform(&index, &d).unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "no {os}/{arch} image in index {d} (it has: linux/s390x, windows/{arch})"
            )),
            "{e}"
        );
    }

    #[test]
    fn accepts_image_media_types_only() {
        let mut m = Manifest {
            schema_version: 2,
            media_type: DOCKER_MANIFEST.into(),
            config: desc("application/vnd.docker.container.image.v1+json", None),
            layers: vec![
                desc("application/vnd.docker.image.rootfs.diff.tar.gzip", None),
                desc("application/vnd.oci.image.layer.v1.tar+zstd", None),
            ],
        };
        check_media_types(&m).unwrap();
        m.layers.push(desc(
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            None,
        ));
        assert!(check_media_types(&m).unwrap_err().contains("foreign"));
        m.layers.pop();
        m.config.media_type = "application/vnd.cncf.helm.config.v1+json".into();
        assert!(
            check_media_types(&m)
                .unwrap_err()
                .contains("not a container image")
        );
        assert_eq!(
            registry_message(
                br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#
            )
            .as_deref(),
            Some("UNAUTHORIZED authentication required")
        );
    }
}
