//! The built-in registry: every controller serves the OCI distribution API (pull and push)
//! on `--registry-listen` (default port 7050), over TLS with its cluster certificate, for
//! `docker`, `skopeo`, `crane` and any OCI client (docs/images.md "The built-in registry").
//!
//! Images pushed here are the cluster's images (the same `Image` records and blobs as
//! `shoalctl image import`), so a pod can use them by name at once. Credentials: a
//! registry token (`shoalctl token create --usage registry --user U --role R`) as the
//! password of `docker login`, exchanged at `/v2/token` for a short bearer token; or a
//! client certificate of the cluster. Pull needs view, push needs edit in the repository's
//! namespace ([`plan::repo_namespace`]). The routing, rights, tokens and manifest checks are
//! pure ([`plan`]); this module is the HTTP around them.

pub mod plan;

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST, LOCATION, RANGE};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};
use shoal_image::digest::Digest;
use shoal_pki::Identity;
use shoal_store::Store;
use tokio::sync::Mutex as AsyncMutex;
use tokio_stream::StreamExt;

use crate::blobs::BlobWriter;
use crate::images::{ImageRecord, ImagesError, ImagesService};
use plan::{BearerKey, Code, RegistryError, Route};

/// How long a bearer token from `/v2/token` is valid.
pub const TOKEN_TTL: Duration = Duration::from_secs(300);

/// An upload session idle for this long is dropped (with its bytes).
const UPLOAD_IDLE: Duration = Duration::from_secs(3600);

/// Largest manifest or image config accepted.
const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// The `service` of the bearer challenge.
const SERVICE: &str = "shoal-registry";

type Body = UnsyncBoxBody<Bytes, io::Error>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// One upload in progress.
#[derive(Debug)]
struct Session {
    repo: String,
    writer: Arc<AsyncMutex<Option<BlobWriter>>>,
    touched: Instant,
}

/// The registry of one controller.
#[derive(Debug, Clone)]
pub struct Registry {
    images: ImagesService,
    store: Store,
    key: BearerKey,
    uploads: Arc<Mutex<HashMap<String, Session>>>,
    max_blob: u64,
}

fn from_images(e: ImagesError, not_found: Code) -> RegistryError {
    match e {
        ImagesError::NotFound(m) => RegistryError::new(not_found, m),
        ImagesError::Invalid(m) => RegistryError::new(Code::NameInvalid, m),
        e @ ImagesError::DigestMismatch { .. } => {
            RegistryError::new(Code::DigestInvalid, e.to_string())
        }
        e @ (ImagesError::Peer { .. } | ImagesError::Replication(_)) => {
            RegistryError::new(Code::Unavailable, e.to_string())
        }
        ImagesError::Store(s) if s.is_retryable() => {
            RegistryError::new(Code::Unavailable, s.to_string())
        }
        e => RegistryError::new(Code::Unavailable, e.to_string()),
    }
}

fn error_response(e: &RegistryError) -> Response<Body> {
    let mut r = Response::new(full(e.body()));
    *r.status_mut() = e.code.status();
    r.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn header(h: &HeaderMap, name: impl http::header::AsHeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn query(uri: &http::Uri) -> HashMap<String, String> {
    uri.query()
        .map(|q| {
            url_decode_pairs(q)
                .into_iter()
                .collect::<HashMap<String, String>>()
        })
        .unwrap_or_default()
}

/// `a=1&b=x%3Ay` → pairs, percent-decoded (`+` is a space, as in forms).
fn url_decode_pairs(q: &str) -> Vec<(String, String)> {
    fn dec(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => {
                    match std::str::from_utf8(&b[i + 1..i + 3])
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                    {
                        Some(v) => {
                            out.push(v);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (dec(k), dec(v)),
            None => (dec(p), String::new()),
        })
        .collect()
}

/// `Basic base64(user:password)` → (user, password).
fn basic_credentials(h: &HeaderMap) -> Option<(String, String)> {
    let v = header(h, AUTHORIZATION)?;
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

fn bearer(h: &HeaderMap) -> Option<&str> {
    let v = header(h, AUTHORIZATION)?;
    let (scheme, rest) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

impl Registry {
    /// The registry over a controller's image service; bearer tokens keyed from `cluster_key`.
    pub fn new(images: ImagesService, store: Store, cluster_key: &[u8]) -> Registry {
        let max_blob = images.max_image_size();
        Registry {
            images,
            store,
            key: BearerKey::derive(cluster_key),
            uploads: Default::default(),
            max_blob,
        }
    }

    /// Who is calling: a bearer token, basic credentials (a registry token as password), or
    /// the TLS client certificate. `Ok(None)`: no credentials at all.
    async fn authenticate(
        &self,
        peer: Option<&Identity>,
        h: &HeaderMap,
    ) -> Result<Option<Identity>, String> {
        if let Some(t) = bearer(h) {
            return self.key.verify(t, now_unix()).map(Some);
        }
        if let Some((_, password)) = basic_credentials(h) {
            return crate::access::registry_identity(&self.store, &password)
                .await
                .map(Some);
        }
        Ok(peer.cloned())
    }

    /// Serves one request.
    pub async fn handle(&self, peer: Option<Identity>, req: Request<Incoming>) -> Response<Body> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let mut resp = match self.route(peer, req).await {
            Ok(r) => r,
            Err(e) => {
                if e.code.status().is_server_error() {
                    tracing::warn!(%method, %path, "registry: {}", e.message);
                } else {
                    tracing::debug!(%method, %path, "registry: {}", e.message);
                }
                error_response(&e)
            }
        };
        resp.headers_mut().insert(
            "Docker-Distribution-API-Version",
            http::HeaderValue::from_static("registry/2.0"),
        );
        resp
    }

    async fn route(
        &self,
        peer: Option<Identity>,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, RegistryError> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let route = plan::parse_route(&path).ok_or_else(|| {
            RegistryError::new(
                Code::NameUnknown,
                format!("{path}: not a path of the registry API (/v2/…)"),
            )
        })?;
        if route == Route::Token {
            return self.token(peer.as_ref(), req).await;
        }
        let host = header(req.headers(), HOST)
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
            .unwrap_or_default();
        let who = match self.authenticate(peer.as_ref(), req.headers()).await {
            Ok(Some(w)) => w,
            Ok(None) => return Ok(challenge(&host, &route, &method, None)),
            Err(m) => return Ok(challenge(&host, &route, &method, Some(&m))),
        };
        if let Some(repo) = route.repo() {
            plan::check_repo(repo).map_err(|m| RegistryError::new(Code::NameInvalid, m))?;
            plan::check_access(&who, plan::repo_namespace(repo), route.pushes(&method))
                .map_err(|m| RegistryError::new(Code::Denied, m))?;
        }
        let q = query(req.uri());
        match (route, method) {
            (Route::Base, Method::GET | Method::HEAD) => {
                Ok(json_response(StatusCode::OK, json!({})))
            }
            (Route::Catalog, Method::GET) => self.catalog(&who).await,
            (Route::Tags { repo }, Method::GET) => self.tags(&repo).await,
            (Route::Manifest { repo, reference }, m @ (Method::GET | Method::HEAD)) => {
                self.get_manifest(&repo, &reference, m == Method::HEAD)
                    .await
            }
            (Route::Manifest { repo, reference }, Method::PUT) => {
                self.put_manifest(&repo, &reference, req).await
            }
            (Route::Manifest { repo, reference }, Method::DELETE) => {
                self.delete_manifest(&repo, &reference).await
            }
            (Route::Blob { digest, .. }, m @ (Method::GET | Method::HEAD)) => {
                let range = header(req.headers(), RANGE).map(str::to_string);
                self.get_blob(&digest, m == Method::HEAD, range.as_deref())
                    .await
            }
            (Route::UploadStart { repo }, Method::POST) => self.start_upload(&repo, &q, req).await,
            (Route::Upload { repo, id }, Method::PATCH) => self
                .append_upload(&repo, &id, req)
                .await
                .map(|n| upload_status(StatusCode::ACCEPTED, &repo, &id, n)),
            (Route::Upload { repo, id }, Method::PUT) => {
                self.finish_upload(&repo, &id, &q, req).await
            }
            (Route::Upload { repo, id }, Method::GET) => {
                let n = self.upload_len(&repo, &id).await?;
                Ok(upload_status(StatusCode::NO_CONTENT, &repo, &id, n))
            }
            (Route::Upload { repo, id }, Method::DELETE) => {
                self.take_session(&repo, &id)?;
                Ok(empty(StatusCode::NO_CONTENT))
            }
            (_, m) => Err(RegistryError::new(
                Code::Unsupported,
                format!("{m} {path}: not supported"),
            )),
        }
    }

    /// `/v2/token`: basic credentials (GET, as `docker login` sends them), a password grant
    /// (POST form), or a user's client certificate, for a bearer token.
    async fn token(
        &self,
        peer: Option<&Identity>,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, RegistryError> {
        let unauthorized = |m: String| {
            let mut r = error_response(&RegistryError::new(Code::Unauthorized, m));
            r.headers_mut().insert(
                "WWW-Authenticate",
                http::HeaderValue::from_static("Basic realm=\"shoal-registry\""),
            );
            r
        };
        let mut password = basic_credentials(req.headers()).map(|(_, p)| p);
        if password.is_none() && req.method() == Method::POST {
            let body = read_limited(req.into_body(), 64 * 1024).await?;
            let form = url_decode_pairs(&String::from_utf8_lossy(&body));
            password = form
                .into_iter()
                .find(|(k, _)| k == "password")
                .map(|(_, v)| v);
        }
        let who = match (password, peer) {
            (Some(p), _) => match crate::access::registry_identity(&self.store, &p).await {
                Ok(w) => w,
                Err(m) => return Ok(unauthorized(m)),
            },
            (None, Some(w)) => w.clone(),
            (None, None) => {
                return Ok(unauthorized(
                    "credentials required: log in with a registry token (`shoalctl token create --usage registry --user NAME --role edit`) as the password".into(),
                ));
            }
        };
        let exp = now_unix() + TOKEN_TTL.as_secs() as i64;
        let Some(token) = self.key.issue(&who, exp) else {
            return Ok(unauthorized(format!(
                "{who} authenticates with its certificate on every request; tokens are for users"
            )));
        };
        tracing::info!(identity = %who, "registry: issued a bearer token");
        Ok(json_response(
            StatusCode::OK,
            json!({
                "token": token,
                "access_token": token,
                "expires_in": TOKEN_TTL.as_secs(),
                "issued_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            }),
        ))
    }

    async fn catalog(&self, who: &Identity) -> Result<Response<Body>, RegistryError> {
        let images = self
            .images
            .list_images()
            .await
            .map_err(|e| from_images(e, Code::NameUnknown))?;
        let mut repos: Vec<String> = images
            .iter()
            .flat_map(|i| i.names.iter())
            .map(|n| plan::repo_of(n).to_string())
            .filter(|r| plan::check_access(who, plan::repo_namespace(r), false).is_ok())
            .collect();
        repos.sort();
        repos.dedup();
        Ok(json_response(
            StatusCode::OK,
            json!({"repositories": repos}),
        ))
    }

    async fn tags(&self, repo: &str) -> Result<Response<Body>, RegistryError> {
        let images = self
            .images
            .list_images()
            .await
            .map_err(|e| from_images(e, Code::NameUnknown))?;
        let mut tags: Vec<String> = images
            .iter()
            .flat_map(|i| i.names.iter())
            .filter(|n| plan::repo_of(n) == stored_repo(repo))
            .filter_map(|n| n.rsplit_once(':').map(|(_, t)| t.to_string()))
            .collect();
        if tags.is_empty() {
            return Err(RegistryError::new(
                Code::NameUnknown,
                format!("repository {repo} not found"),
            ));
        }
        tags.sort();
        Ok(json_response(
            StatusCode::OK,
            json!({"name": repo, "tags": tags}),
        ))
    }

    /// The image a manifest reference names in `repo` (a digest must belong to the repo).
    async fn find(&self, repo: &str, reference: &str) -> Result<ImageRecord, RegistryError> {
        let unknown = || {
            RegistryError::new(
                Code::ManifestUnknown,
                format!("manifest {repo}:{reference} not found"),
            )
        };
        if reference.starts_with("sha256:") {
            let d: Digest = reference.parse().map_err(|_| {
                RegistryError::new(
                    Code::DigestInvalid,
                    format!("{reference:?}: expected sha256:<64 hex>"),
                )
            })?;
            let (rec, _) = self
                .images
                .find(&d.to_string())
                .await
                .map_err(|e| from_images(e, Code::ManifestUnknown))?;
            let in_repo = rec.names.is_empty()
                || rec
                    .names
                    .iter()
                    .any(|n| plan::repo_of(n) == stored_repo(repo));
            return if in_repo { Ok(rec) } else { Err(unknown()) };
        }
        plan::check_tag(reference).map_err(|m| RegistryError::new(Code::ManifestInvalid, m))?;
        let name = stored_name(repo, reference)?;
        match self.images.find(&name).await {
            Ok((rec, _)) => Ok(rec),
            Err(ImagesError::NotFound(_)) => Err(unknown()),
            Err(e) => Err(from_images(e, Code::ManifestUnknown)),
        }
    }

    /// A small blob (manifest, config) in memory.
    async fn read_small_blob(&self, digest: &str) -> Result<Vec<u8>, RegistryError> {
        let mut s = self
            .images
            .blob_stream(digest, 0, false)
            .await
            .map_err(|e| from_images(e, Code::BlobUnknown))?;
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            let c =
                c.map_err(|s| RegistryError::new(Code::Unavailable, s.message().to_string()))?;
            out.extend_from_slice(&c.data);
            if out.len() > MAX_MANIFEST_BYTES {
                return Err(RegistryError::new(
                    Code::ManifestInvalid,
                    format!("{digest} is larger than {MAX_MANIFEST_BYTES} bytes"),
                ));
            }
        }
        Ok(out)
    }

    async fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
        head: bool,
    ) -> Result<Response<Body>, RegistryError> {
        let rec = self.find(repo, reference).await?;
        let bytes = self.read_small_blob(&rec.digest).await?;
        let media_type = if rec.media_type.is_empty() {
            serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v.get("mediaType").and_then(Value::as_str).map(String::from))
                .unwrap_or_else(|| plan::MANIFEST_TYPES[1].to_string())
        } else {
            rec.media_type.clone()
        };
        let len = bytes.len();
        let mut r = Response::new(if head {
            full(Bytes::new())
        } else {
            full(bytes)
        });
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, hv(&media_type));
        h.insert(CONTENT_LENGTH, hv(&len.to_string()));
        h.insert("Docker-Content-Digest", hv(&rec.digest));
        Ok(r)
    }

    async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, RegistryError> {
        let content_type = header(req.headers(), CONTENT_TYPE).map(str::to_string);
        let body = read_limited(req.into_body(), MAX_MANIFEST_BYTES).await?;
        let parsed = plan::parse_pushed_manifest(&body, content_type.as_deref())?;
        let digest = Digest::of_bytes(&body);
        let tag = if reference.starts_with("sha256:") {
            if reference != digest.to_string() {
                return Err(RegistryError::new(
                    Code::DigestInvalid,
                    format!("manifest pushed as {reference} hashes to {digest}"),
                ));
            }
            None
        } else {
            plan::check_tag(reference).map_err(|m| RegistryError::new(Code::ManifestInvalid, m))?;
            Some(stored_name(repo, reference)?)
        };
        // Every blob it names must be here, with the size it says.
        for (d, size) in std::iter::once(&parsed.config).chain(parsed.layers.iter()) {
            let dd: Digest = d
                .parse()
                .map_err(|_| RegistryError::new(Code::DigestInvalid, format!("{d:?}")))?;
            match self.images.blob_meta(&dd).await {
                Ok(Some(m)) if m.size == *size => {}
                Ok(Some(m)) => {
                    return Err(RegistryError::new(
                        Code::ManifestInvalid,
                        format!("manifest says blob {d} has {size} bytes; it has {}", m.size),
                    ));
                }
                Ok(None) => {
                    return Err(RegistryError::new(
                        Code::ManifestBlobUnknown,
                        format!("blob {d} named by the manifest was not pushed"),
                    ));
                }
                Err(e) => return Err(from_images(e, Code::BlobUnknown)),
            }
        }
        let config_bytes = self.read_small_blob(&parsed.config.0).await?;
        let config: Value = serde_json::from_slice(&config_bytes).map_err(|e| {
            RegistryError::new(
                Code::ManifestInvalid,
                format!("config blob {} is not JSON: {e}", parsed.config.0),
            )
        })?;
        // The manifest itself is a blob like the others (agents and pulls read it so).
        let mut w = self
            .images
            .blob_writer()
            .await
            .map_err(|e| from_images(e, Code::BlobUnknown))?;
        w.write(&body)
            .await
            .map_err(|e| from_images(e, Code::BlobUnknown))?;
        self.images
            .commit_upload(w, &digest)
            .await
            .map_err(|e| from_images(e, Code::BlobUnknown))?;
        let layer_sizes: Vec<u64> = parsed.layers.iter().map(|l| l.1).collect();
        let record = ImageRecord {
            names: tag.into_iter().collect(),
            digest: digest.to_string(),
            config_digest: parsed.config.0.clone(),
            layers: parsed.layers.iter().map(|l| l.0.clone()).collect(),
            size: layer_sizes.iter().sum(),
            layer_sizes,
            config,
            media_type: parsed.media_type,
        };
        let rec = self
            .images
            .record_image(&record)
            .await
            .map_err(|e| from_images(e, Code::ManifestBlobUnknown))?;
        tracing::info!(%repo, reference, digest = %rec.digest, "registry: manifest pushed");
        let mut r = empty(StatusCode::CREATED);
        let h = r.headers_mut();
        h.insert(LOCATION, hv(&format!("/v2/{repo}/manifests/{digest}")));
        h.insert("Docker-Content-Digest", hv(&digest.to_string()));
        Ok(r)
    }

    async fn delete_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Response<Body>, RegistryError> {
        let rec = self.find(repo, reference).await?;
        let name = if reference.starts_with("sha256:") {
            rec.digest.clone()
        } else {
            stored_name(repo, reference)?
        };
        self.images
            .remove(&name)
            .await
            .map_err(|e| from_images(e, Code::ManifestUnknown))?;
        Ok(empty(StatusCode::ACCEPTED))
    }

    async fn get_blob(
        &self,
        digest: &str,
        head: bool,
        range: Option<&str>,
    ) -> Result<Response<Body>, RegistryError> {
        let d: Digest = digest.parse().map_err(|_| {
            RegistryError::new(
                Code::DigestInvalid,
                format!("{digest:?}: expected sha256:<64 hex>"),
            )
        })?;
        let meta = self
            .images
            .blob_meta(&d)
            .await
            .map_err(|e| from_images(e, Code::BlobUnknown))?
            .ok_or_else(|| RegistryError::new(Code::BlobUnknown, format!("blob {d} not found")))?;
        let offset = plan::range_start(range).unwrap_or(0).min(meta.size);
        let mut r = if head {
            Response::new(full(Bytes::new()))
        } else {
            let s = self
                .images
                .blob_stream(digest, offset, false)
                .await
                .map_err(|e| from_images(e, Code::BlobUnknown))?;
            let frames = s.map(|c| {
                c.map(|c| Frame::data(Bytes::from(c.data)))
                    .map_err(|s| io::Error::other(s.message().to_string()))
            });
            Response::new(BodyExt::boxed_unsync(StreamBody::new(frames)))
        };
        let h = r.headers_mut();
        h.insert(
            CONTENT_TYPE,
            http::HeaderValue::from_static("application/octet-stream"),
        );
        h.insert(CONTENT_LENGTH, hv(&(meta.size - offset).to_string()));
        h.insert("Docker-Content-Digest", hv(&d.to_string()));
        if offset > 0 && !head {
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
            r.headers_mut().insert(
                "Content-Range",
                hv(&format!(
                    "bytes {offset}-{}/{}",
                    meta.size.saturating_sub(1),
                    meta.size
                )),
            );
        }
        Ok(r)
    }

    /// `POST …/blobs/uploads/`: a cross-repository mount of a blob that is here, a
    /// monolithic upload (`?digest=`), or a new session.
    async fn start_upload(
        &self,
        repo: &str,
        q: &HashMap<String, String>,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, RegistryError> {
        if let Some(m) = q.get("mount")
            && let Ok(d) = m.parse::<Digest>()
            && let Ok(Some(_)) = self.images.blob_meta(&d).await
        {
            return Ok(blob_created(repo, &d));
        }
        self.sweep_sessions();
        let writer = self
            .images
            .blob_writer()
            .await
            .map_err(|e| from_images(e, Code::BlobUploadInvalid))?;
        let id = uuid::Uuid::new_v4().to_string();
        if let Ok(mut map) = self.uploads.lock() {
            map.insert(
                id.clone(),
                Session {
                    repo: repo.to_string(),
                    writer: Arc::new(AsyncMutex::new(Some(writer))),
                    touched: Instant::now(),
                },
            );
        }
        if q.contains_key("digest") {
            return self.finish_upload(repo, &id, q, req).await;
        }
        Ok(upload_status(StatusCode::ACCEPTED, repo, &id, 0))
    }

    fn session(
        &self,
        repo: &str,
        id: &str,
    ) -> Result<Arc<AsyncMutex<Option<BlobWriter>>>, RegistryError> {
        let unknown = || {
            RegistryError::new(
                Code::BlobUploadUnknown,
                format!("upload {id} not found (finished, cancelled or idle for an hour)"),
            )
        };
        let mut map = self.uploads.lock().map_err(|_| unknown())?;
        let s = map.get_mut(id).ok_or_else(unknown)?;
        if s.repo != repo {
            return Err(unknown());
        }
        s.touched = Instant::now();
        Ok(s.writer.clone())
    }

    fn take_session(&self, repo: &str, id: &str) -> Result<(), RegistryError> {
        self.session(repo, id)?;
        if let Ok(mut map) = self.uploads.lock() {
            map.remove(id);
        }
        Ok(())
    }

    fn sweep_sessions(&self) {
        if let Ok(mut map) = self.uploads.lock() {
            map.retain(|_, s| s.touched.elapsed() < UPLOAD_IDLE);
        }
    }

    async fn upload_len(&self, repo: &str, id: &str) -> Result<u64, RegistryError> {
        let w = self.session(repo, id)?;
        let g = w.lock().await;
        Ok(g.as_ref().map(BlobWriter::len).unwrap_or(0))
    }

    /// Appends the request body to an upload; returns its length.
    async fn append_upload(
        &self,
        repo: &str,
        id: &str,
        req: Request<Incoming>,
    ) -> Result<u64, RegistryError> {
        let w = self.session(repo, id)?;
        let mut g = w.lock().await;
        let writer = g.as_mut().ok_or_else(|| {
            RegistryError::new(Code::BlobUploadUnknown, format!("upload {id} is finished"))
        })?;
        let mut body = req.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                RegistryError::new(Code::BlobUploadInvalid, format!("reading the upload: {e}"))
            })?;
            if let Ok(data) = frame.into_data() {
                if writer.len() + data.len() as u64 > self.max_blob {
                    drop(g);
                    let _ = self.take_session(repo, id);
                    return Err(RegistryError::new(
                        Code::TooLarge,
                        format!(
                            "blob larger than the limit of {} (the controller's --max-image-size)",
                            crate::images::human_size(self.max_blob)
                        ),
                    ));
                }
                writer
                    .write(&data)
                    .await
                    .map_err(|e| from_images(e, Code::BlobUploadInvalid))?;
            }
        }
        Ok(writer.len())
    }

    /// `PUT …/uploads/<id>?digest=`: the last bytes, then checked, stored, copied, recorded.
    async fn finish_upload(
        &self,
        repo: &str,
        id: &str,
        q: &HashMap<String, String>,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, RegistryError> {
        let d: Digest = q
            .get("digest")
            .ok_or_else(|| {
                RegistryError::new(
                    Code::DigestInvalid,
                    "finishing an upload needs ?digest=sha256:…",
                )
            })?
            .parse()
            .map_err(|_| {
                RegistryError::new(Code::DigestInvalid, "?digest=: expected sha256:<64 hex>")
            })?;
        self.append_upload(repo, id, req).await?;
        let w = self.session(repo, id)?;
        let writer = w.lock().await.take();
        if let Ok(mut map) = self.uploads.lock() {
            map.remove(id);
        }
        let writer = writer.ok_or_else(|| {
            RegistryError::new(Code::BlobUploadUnknown, format!("upload {id} is finished"))
        })?;
        self.images
            .commit_upload(writer, &d)
            .await
            .map_err(|e| from_images(e, Code::BlobUploadInvalid))?;
        tracing::debug!(%repo, blob = %d, "registry: blob pushed");
        Ok(blob_created(repo, &d))
    }
}

fn hv(s: &str) -> http::HeaderValue {
    http::HeaderValue::from_str(s).unwrap_or_else(|_| http::HeaderValue::from_static(""))
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_LENGTH, hv("0"));
    r
}

fn json_response(status: StatusCode, v: Value) -> Response<Body> {
    let mut r = Response::new(full(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn blob_created(repo: &str, d: &Digest) -> Response<Body> {
    let mut r = empty(StatusCode::CREATED);
    r.headers_mut()
        .insert(LOCATION, hv(&format!("/v2/{repo}/blobs/{d}")));
    r.headers_mut()
        .insert("Docker-Content-Digest", hv(&d.to_string()));
    r
}

fn upload_status(status: StatusCode, repo: &str, id: &str, len: u64) -> Response<Body> {
    let mut r = empty(status);
    let h = r.headers_mut();
    h.insert(LOCATION, hv(&format!("/v2/{repo}/blobs/uploads/{id}")));
    h.insert("Docker-Upload-UUID", hv(id));
    h.insert("Range", hv(&format!("0-{}", len.saturating_sub(1))));
    r
}

/// 401 with the bearer challenge that sends clients to `/v2/token` on the host they dialled.
fn challenge(host: &str, route: &Route, method: &Method, why: Option<&str>) -> Response<Body> {
    let mut c = format!("Bearer realm=\"https://{host}/v2/token\",service=\"{SERVICE}\"");
    if let Some(repo) = route.repo() {
        let actions = if route.pushes(method) {
            "pull,push"
        } else {
            "pull"
        };
        c.push_str(&format!(",scope=\"repository:{repo}:{actions}\""));
    }
    let message = match why {
        Some(w) => format!("authentication failed: {w}"),
        None => "authentication required: log in with a registry token".to_string(),
    };
    let mut r = error_response(&RegistryError::new(Code::Unauthorized, message));
    r.headers_mut().insert("WWW-Authenticate", hv(&c));
    r
}

/// The stored image name of `repo:tag` (Docker's normalization, as imports use).
fn stored_name(repo: &str, tag: &str) -> Result<String, RegistryError> {
    shoal_image::normalize_reference(&format!("{repo}:{tag}"))
        .map_err(|e| RegistryError::new(Code::NameInvalid, e.to_string()))
}

/// The repository part of [`stored_name`].
fn stored_repo(repo: &str) -> String {
    stored_name(repo, "x")
        .map(|n| plan::repo_of(&n).to_string())
        .unwrap_or_else(|_| repo.to_string())
}

async fn read_limited(body: Incoming, limit: usize) -> Result<Bytes, RegistryError> {
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => Err(RegistryError::new(
            Code::SizeInvalid,
            format!("request body: {e} (at most {limit} bytes)"),
        )),
    }
}

/// Serves the registry on `listener` over TLS (`tls`: the controller's certificate, client
/// certificates optional) until `shutdown` resolves.
pub async fn serve(
    registry: Registry,
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let mut incoming = shoal_pki::tls::incoming(listener, tls);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            s = incoming.next() => match s {
                Some(Ok(s)) => s,
                Some(Err(_)) => continue,
                None => return,
            },
            _ = &mut shutdown => return,
        };
        let peer = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| Identity::from_cert_der(c.as_ref()).ok());
        let registry = registry.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let (registry, peer) = (registry.clone(), peer.clone());
                async move { Ok::<_, Infallible>(registry.handle(peer, req).await) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(io, svc)
                    .await
            {
                tracing::debug!("registry connection: {e}");
            }
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_credentials_decode() {
        let q = url_decode_pairs("mount=sha256%3Aab&from=team-a%2Fweb&x&grant_type=pass+word");
        assert_eq!(q[0], ("mount".into(), "sha256:ab".into()));
        assert_eq!(q[1], ("from".into(), "team-a/web".into()));
        assert_eq!(q[2], ("x".into(), String::new()));
        assert_eq!(q[3].1, "pass word");
        assert_eq!(url_decode_pairs("a=%")[0].1, "%");
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, hv("Basic dXNlcjpwYTpzcw=="));
        assert_eq!(basic_credentials(&h), Some(("user".into(), "pa:ss".into())));
        assert_eq!(bearer(&h), None);
        h.insert(AUTHORIZATION, hv("Bearer abc.def"));
        assert_eq!(bearer(&h), Some("abc.def"));
        assert_eq!(stored_name("busybox", "1").unwrap(), "busybox:1");
        assert_eq!(stored_repo("team-a/web"), "team-a/web");
    }
}
