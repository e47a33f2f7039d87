//! The push: the OCI distribution spec's upload protocol. For each blob of the image
//! (layers, then the config) a `HEAD /v2/<repo>/blobs/<digest>` skips those the registry
//! has; a missing one is uploaded with `POST /v2/<repo>/blobs/uploads/` and one streamed
//! `PUT <Location>?digest=<digest>` (monolithic, `Content-Length` known from the
//! manifest); then `PUT /v2/<repo>/manifests/<tag>` with the manifest's own bytes and
//! media type, so the image keeps its digest.
//!
//! Authentication is the pull's: a 401 with `Basic` gets the credentials, one with a
//! `Bearer` challenge a token from its realm, asked with the scope
//! `repository:<repo>:pull,push` whatever scope the challenge named. The first requests
//! (HEAD, POST) have no body, so they earn the authorization before a blob streams; a
//! blob's bytes come from a [`BlobSource`] and are never all in memory.
//!
//! The pure parts ([`plan_blobs`], [`upload_url`], [`push_scope`]) are unit-tested; the
//! protocol is tested against Debian's `docker-registry` (`shoalctl image push` tests).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::TryStreamExt;
use http::{Method, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use rustls::ClientConfig;

use super::RegistryError;
use super::auth::{Challenge, parse_challenge, token_url};
use super::client::fetch_token;
use super::credentials::Credentials;
use super::hosts::{Endpoint, TlsConfig};
use super::http::{RESPONSE_TIMEOUT, Url, send_body, tls_config};
use crate::archive::BlobSource;
use crate::config::{Descriptor, Manifest, OCI_MANIFEST};
use crate::digest::Digest;

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// What happened to one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobOutcome {
    /// The registry had it already.
    Exists,
    /// It was uploaded.
    Pushed,
}

/// The blobs to push, in order: layers bottom first, then the config; each once.
pub fn plan_blobs(manifest: &Manifest) -> Vec<Descriptor> {
    let mut out: Vec<Descriptor> = Vec::new();
    for d in manifest
        .layers
        .iter()
        .chain(std::iter::once(&manifest.config))
    {
        if !out.iter().any(|x| x.digest == d.digest) {
            out.push(d.clone());
        }
    }
    out
}

/// The URL that completes an upload: the `Location` of the upload session (relative or
/// absolute, maybe with its own query such as `_state=…`) with `digest=` added.
pub fn upload_url(base: &Url, location: &str, digest: &Digest) -> Option<Url> {
    let mut url = base.join(location)?;
    let sep = if url.path.contains('?') { '&' } else { '?' };
    url.path = format!(
        "{}{sep}digest={}",
        url.path,
        digest.to_string().replace(':', "%3A")
    );
    Some(url)
}

/// The token scope a push asks for.
pub fn push_scope(repository: &str) -> String {
    format!("repository:{repository}:pull,push")
}

/// Pushes images to one repository of one registry endpoint.
#[derive(Debug)]
pub struct Pusher {
    base: Url,
    repository: String,
    tls: Arc<ClientConfig>,
    creds: Option<Credentials>,
    auth: Mutex<Option<String>>,
}

impl Pusher {
    /// A pusher to `repository` at `endpoint` (TLS settings for HTTPS; `creds` for a
    /// registry that asks).
    pub fn new(
        endpoint: &Endpoint,
        repository: &str,
        tls: Option<&TlsConfig>,
        creds: Option<Credentials>,
    ) -> Result<Self, RegistryError> {
        Ok(Self {
            base: Url {
                scheme: endpoint.scheme,
                host: endpoint.host.clone(),
                path: "/".into(),
            },
            repository: repository.to_string(),
            tls: tls_config(tls)?,
            creds,
            auth: Mutex::new(None),
        })
    }

    fn endpoint(&self) -> String {
        self.base.origin()
    }

    fn protocol(&self, message: String) -> RegistryError {
        RegistryError::Protocol {
            endpoint: self.endpoint(),
            message,
        }
    }

    /// Pushes the image whose manifest is `manifest_bytes` as `reference` (a tag, or the
    /// digest): the blobs the registry lacks from `source`, then the manifest. `progress`
    /// hears about each blob. Returns the manifest digest.
    pub async fn push<S: BlobSource>(
        &self,
        reference: &str,
        manifest_bytes: &[u8],
        source: &S,
        progress: &mut (dyn FnMut(&Descriptor, BlobOutcome) + Send),
    ) -> Result<Digest, RegistryError> {
        let manifest: Manifest = serde_json::from_slice(manifest_bytes)
            .map_err(|e| self.protocol(format!("the manifest to push: {e}")))?;
        for d in plan_blobs(&manifest) {
            let outcome = if self.blob_exists(&d.digest).await? {
                BlobOutcome::Exists
            } else {
                self.upload(&d, source).await?;
                BlobOutcome::Pushed
            };
            progress(&d, outcome);
        }
        let media_type = if manifest.media_type.is_empty() {
            OCI_MANIFEST
        } else {
            &manifest.media_type
        };
        self.put_manifest(reference, media_type, manifest_bytes)
            .await
    }

    /// Whether the repository has blob `d`.
    pub async fn blob_exists(&self, d: &Digest) -> Result<bool, RegistryError> {
        let path = format!("/v2/{}/blobs/{d}", self.repository);
        let what = format!("blob {d} of {}/{}", self.base.host, self.repository);
        let resp = self.request(Method::HEAD, &path, Vec::new(), None).await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(self.status_error(s, &what, resp).await),
        }
    }

    /// Uploads blob `d` from `source`: a session (`POST`), then one streamed `PUT`.
    async fn upload<S: BlobSource>(&self, d: &Descriptor, source: &S) -> Result<(), RegistryError> {
        let what = format!(
            "blob {} to {}/{}",
            d.digest, self.base.host, self.repository
        );
        let path = format!("/v2/{}/blobs/uploads/", self.repository);
        let resp = self
            .request(
                Method::POST,
                &path,
                vec![(header::CONTENT_LENGTH, "0".into())],
                None,
            )
            .await?;
        let status = resp.status();
        if status != StatusCode::ACCEPTED {
            return Err(self
                .status_error(status, &format!("upload of {what}"), resp)
                .await);
        }
        let location = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| self.protocol(format!("upload of {what}: 202 without a Location")))?;
        let url = upload_url(&self.base, &location, &d.digest)
            .ok_or_else(|| self.protocol(format!("upload of {what}: bad Location {location:?}")))?;
        let stream = source
            .open(&d.digest, d.size)
            .await
            .map_err(|e| RegistryError::Protocol {
                endpoint: "the cluster".into(),
                message: format!("reading blob {}: {e}", d.digest),
            })?;
        let body: Body = StreamBody::new(stream.map_ok(Frame::data)).boxed_unsync();
        let mut headers = vec![
            (header::CONTENT_LENGTH, d.size.to_string()),
            (header::CONTENT_TYPE, "application/octet-stream".into()),
        ];
        if url.host == self.base.host
            && let Some(a) = self.current_auth()
        {
            headers.push((header::AUTHORIZATION, a));
        }
        let resp = send_body(&self.tls, &url, Method::PUT, &headers, body, None).await?;
        match resp.status() {
            StatusCode::CREATED | StatusCode::NO_CONTENT | StatusCode::OK => Ok(()),
            s => Err(self.status_error(s, &what, resp).await),
        }
    }

    /// Puts the manifest under `reference`; checks the digest the registry reports.
    async fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Digest, RegistryError> {
        let digest = Digest::of_bytes(bytes);
        let path = format!("/v2/{}/manifests/{reference}", self.repository);
        let what = format!(
            "manifest {}/{}:{reference}",
            self.base.host, self.repository
        );
        let resp = self
            .request(
                Method::PUT,
                &path,
                vec![(header::CONTENT_TYPE, media_type.to_string())],
                Some(Bytes::copy_from_slice(bytes)),
            )
            .await?;
        let status = resp.status();
        if !status.is_success() {
            return Err(self.status_error(status, &what, resp).await);
        }
        if let Some(reported) = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok())
            && reported != digest
        {
            return Err(RegistryError::DigestMismatch {
                what: format!("{what}: the registry stored"),
                expected: digest,
                actual: reported,
            });
        }
        Ok(digest)
    }

    fn current_auth(&self) -> Option<String> {
        self.auth.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A request without a streamed body, with this pusher's authorization; answers one
    /// 401 challenge and sends it again.
    async fn request(
        &self,
        method: Method,
        path: &str,
        headers: Vec<(header::HeaderName, String)>,
        body: Option<Bytes>,
    ) -> Result<Response<Incoming>, RegistryError> {
        let url = self
            .base
            .join(path)
            .ok_or_else(|| self.protocol(format!("bad path {path}")))?;
        let mut challenged = false;
        loop {
            let mut h = headers.clone();
            if let Some(a) = self.current_auth() {
                h.push((header::AUTHORIZATION, a));
            }
            let body: Body = match &body {
                Some(b) => Full::new(b.clone()).map_err(|e| match e {}).boxed_unsync(),
                None => Empty::new().map_err(|e| match e {}).boxed_unsync(),
            };
            let resp = send_body(
                &self.tls,
                &url,
                method.clone(),
                &h,
                body,
                Some(RESPONSE_TIMEOUT),
            )
            .await?;
            if resp.status() == StatusCode::UNAUTHORIZED && !challenged {
                challenged = true;
                let challenge = resp
                    .headers()
                    .get(header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_challenge);
                let value = self.authorize(challenge).await?;
                *self.auth.lock().unwrap_or_else(|p| p.into_inner()) = Some(value);
                continue;
            }
            return Ok(resp);
        }
    }

    /// The `Authorization` value that answers `challenge` (a token with push scope).
    async fn authorize(&self, challenge: Option<Challenge>) -> Result<String, RegistryError> {
        match challenge {
            Some(Challenge::Basic) | None => self
                .creds
                .as_ref()
                .map(Credentials::basic_header)
                .ok_or_else(|| RegistryError::Unauthorized {
                    endpoint: self.endpoint(),
                    message: "the registry asks for credentials and none were given \
                                  (--creds USER:PASSWORD, or docker login)"
                        .into(),
                }),
            Some(Challenge::Bearer { realm, service, .. }) => {
                let scope = push_scope(&self.repository);
                let url = Url::parse(&token_url(&realm, service.as_deref(), Some(&scope)))
                    .ok_or_else(|| self.protocol(format!("bad token realm {realm:?}")))?;
                let tls = if url.host == self.base.host {
                    self.tls.clone()
                } else {
                    tls_config(None)?
                };
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
        super::client::status_error(
            self.endpoint(),
            self.creds.as_ref(),
            Some("no credentials were given (--creds USER:PASSWORD, or docker login)"),
            status,
            what,
            resp,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OCI_LAYER_GZIP;

    fn desc(c: u8) -> Descriptor {
        Descriptor {
            media_type: OCI_LAYER_GZIP.into(),
            digest: Digest::of_bytes(&[c]),
            size: 1,
            platform: None,
            annotations: Default::default(),
        }
    }

    #[test]
    fn pushes_layers_then_the_config_each_once() {
        let m = Manifest {
            schema_version: 2,
            media_type: OCI_MANIFEST.into(),
            config: desc(0),
            layers: vec![desc(1), desc(2), desc(1)],
        };
        let order: Vec<Digest> = plan_blobs(&m).into_iter().map(|d| d.digest).collect();
        assert_eq!(
            order,
            [desc(1).digest, desc(2).digest, desc(0).digest],
            "bottom layer first, duplicates once, config last"
        );
    }

    #[test]
    fn completes_upload_locations() {
        let base = Url::parse("http://127.0.0.1:5000").unwrap();
        let d = Digest::of_bytes(b"x");
        let hex = d.hex();
        let u = upload_url(&base, "/v2/app/blobs/uploads/abc?_state=s%3D", &d).unwrap();
        assert_eq!(u.origin(), "http://127.0.0.1:5000");
        assert_eq!(
            u.path,
            format!("/v2/app/blobs/uploads/abc?_state=s%3D&digest=sha256%3A{hex}")
        );
        let u = upload_url(&base, "https://up.example/v2/app/uploads/1", &d).unwrap();
        assert_eq!(u.origin(), "https://up.example");
        assert_eq!(u.path, format!("/v2/app/uploads/1?digest=sha256%3A{hex}"));
        assert!(upload_url(&base, "ftp://x/y", &d).is_none());
        assert_eq!(push_scope("team/app"), "repository:team/app:pull,push");
    }
}
