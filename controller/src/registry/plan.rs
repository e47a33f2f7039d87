//! The pure parts of the built-in registry: routes of the OCI distribution API, who may
//! pull and push where, bearer tokens, and the registry's error bodies.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use shoal_pki::{Identity, Role};

/// A request of the distribution API, by path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`: the API version check (and the login check of `docker login`).
    Base,
    /// `/v2/token`: basic credentials (or a client certificate) for a bearer token.
    Token,
    /// `/v2/_catalog`: the repositories the caller may pull.
    Catalog,
    /// `/v2/<repo>/tags/list`.
    Tags {
        /// The repository.
        repo: String,
    },
    /// `/v2/<repo>/manifests/<tag or digest>`.
    Manifest {
        /// The repository.
        repo: String,
        /// A tag or `sha256:…`.
        reference: String,
    },
    /// `/v2/<repo>/blobs/<digest>`.
    Blob {
        /// The repository.
        repo: String,
        /// `sha256:…`.
        digest: String,
    },
    /// `/v2/<repo>/blobs/uploads/`: starts an upload.
    UploadStart {
        /// The repository.
        repo: String,
    },
    /// `/v2/<repo>/blobs/uploads/<id>`: continues, finishes or cancels one.
    Upload {
        /// The repository.
        repo: String,
        /// The upload session.
        id: String,
    },
}

/// Longest repository name (the distribution spec's limit).
pub const MAX_REPO_LEN: usize = 255;

/// Checks a repository name: path components of `[a-z0-9]+([._-][a-z0-9]+)*`.
pub fn check_repo(repo: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "invalid repository name {repo:?}: lowercase letters, digits and . _ - between them, components separated by /"
        )
    };
    if repo.is_empty() || repo.len() > MAX_REPO_LEN {
        return Err(bad());
    }
    for comp in repo.split('/') {
        let b = comp.as_bytes();
        if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric()
        {
            return Err(bad());
        }
        let mut prev_sep = false;
        for &c in b {
            let sep = matches!(c, b'.' | b'_' | b'-');
            if !(c.is_ascii_lowercase() || c.is_ascii_digit() || sep)
                || (sep && prev_sep && c != b'_')
            {
                return Err(bad());
            }
            prev_sep = sep;
        }
    }
    Ok(())
}

/// Checks a tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn check_tag(tag: &str) -> Result<(), String> {
    let b = tag.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid tag {tag:?}: letters, digits, _ . - (up to 128, not starting with . or -)"
        ))
    }
}

/// Parses a request path (without the query). `None`: not a path of the API.
pub fn parse_route(path: &str) -> Option<Route> {
    let rest = path.strip_prefix("/v2")?;
    if rest.is_empty() || rest == "/" {
        return Some(Route::Base);
    }
    let rest = rest.strip_prefix('/')?;
    match rest {
        "token" => return Some(Route::Token),
        "_catalog" => return Some(Route::Catalog),
        _ => {}
    }
    if let Some(repo) = rest.strip_suffix("/tags/list") {
        return Some(Route::Tags { repo: repo.into() });
    }
    if let Some(repo) = rest
        .strip_suffix("/blobs/uploads/")
        .or(rest.strip_suffix("/blobs/uploads"))
    {
        return Some(Route::UploadStart { repo: repo.into() });
    }
    if let Some((repo, id)) = rest.rsplit_once("/blobs/uploads/") {
        return (!id.is_empty() && !id.contains('/')).then(|| Route::Upload {
            repo: repo.into(),
            id: id.into(),
        });
    }
    // A repository may be called "blobs": `x/blobs/manifests/t` falls through to manifests.
    if let Some((repo, digest)) = rest.rsplit_once("/blobs/")
        && !digest.contains('/')
    {
        return Some(Route::Blob {
            repo: repo.into(),
            digest: digest.into(),
        });
    }
    if let Some((repo, reference)) = rest.rsplit_once("/manifests/") {
        return (!reference.is_empty() && !reference.contains('/')).then(|| Route::Manifest {
            repo: repo.into(),
            reference: reference.into(),
        });
    }
    None
}

impl Route {
    /// The repository the route is about (none for the base, token and catalog routes).
    pub fn repo(&self) -> Option<&str> {
        match self {
            Route::Base | Route::Token | Route::Catalog => None,
            Route::Tags { repo }
            | Route::Manifest { repo, .. }
            | Route::Blob { repo, .. }
            | Route::UploadStart { repo }
            | Route::Upload { repo, .. } => Some(repo),
        }
    }

    /// True when `method` on this route changes something (needs push rights).
    pub fn pushes(&self, method: &http::Method) -> bool {
        match self {
            Route::UploadStart { .. } | Route::Upload { .. } => true,
            Route::Manifest { .. } | Route::Blob { .. } => {
                !matches!(*method, http::Method::GET | http::Method::HEAD)
            }
            _ => false,
        }
    }
}

/// The namespace a repository belongs to: its first path component when it has more than
/// one (`team-a/web` → `team-a`), else `default` (`busybox` → `default`).
pub fn repo_namespace(repo: &str) -> &str {
    match repo.split_once('/') {
        Some((ns, _)) => ns,
        None => "default",
    }
}

/// May `who` pull (or push) in namespace `ns`? Pull needs view, push needs edit, in that
/// namespace (admins everywhere; controllers pull and push; nodes pull).
pub fn check_access(who: &Identity, ns: &str, push: bool) -> Result<(), String> {
    let verb = if push { "push to" } else { "pull from" };
    match who {
        Identity::Controller { .. } => Ok(()),
        Identity::Node { .. } if !push => Ok(()),
        Identity::Node { .. } => Err(format!("{who} may not {verb} the registry")),
        Identity::User {
            role: Role::Admin, ..
        } => Ok(()),
        Identity::User {
            role, namespace, ..
        } => {
            if let Some(scope) = namespace
                && scope != ns
            {
                return Err(format!(
                    "{who} may not {verb} repositories of namespace {ns} (only {scope})"
                ));
            }
            if push && *role == Role::View {
                return Err(format!(
                    "{who} may not {verb} namespace {ns}: pushing needs the edit role"
                ));
            }
            Ok(())
        }
    }
}

/// What a bearer token says: who, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// User name.
    pub sub: String,
    /// admin, edit or view.
    pub role: String,
    /// Namespace scope (none: every namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns: Option<String>,
    /// Expiry, Unix seconds.
    pub exp: i64,
}

/// Issues and checks the registry's bearer tokens: `base64url(claims).base64url(HMAC-SHA256)`,
/// keyed from the cluster's Secret encryption key (every controller has it, so a token from
/// one controller works on all; it never travels through Raft).
#[derive(Clone)]
pub struct BearerKey(Vec<u8>);

impl std::fmt::Debug for BearerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerKey(..)")
    }
}

type HmacSha256 = Hmac<Sha256>;

impl BearerKey {
    /// Derives the token key from the cluster key (HMAC with a fixed label, so that the
    /// cluster key itself never signs anything here).
    pub fn derive(cluster_key: &[u8]) -> BearerKey {
        let mut mac = HmacSha256::new_from_slice(cluster_key)
            .unwrap_or_else(|_| HmacSha256::new_from_slice(&[0u8; 32]).expect("fixed key"));
        mac.update(b"shoal registry bearer token v1");
        BearerKey(mac.finalize().into_bytes().to_vec())
    }

    fn mac(&self, payload: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(payload.as_bytes());
        mac
    }

    /// A token for a user identity valid until `exp` (Unix seconds); `None` for identities
    /// that are not users (they present their certificates every time).
    pub fn issue(&self, who: &Identity, exp: i64) -> Option<String> {
        let Identity::User {
            name,
            role,
            namespace,
        } = who
        else {
            return None;
        };
        let claims = Claims {
            sub: name.clone(),
            role: role.as_str().to_string(),
            ns: namespace.clone(),
            exp,
        };
        let payload = B64URL.encode(serde_json::to_vec(&claims).ok()?);
        let sig = B64URL.encode(self.mac(&payload).finalize().into_bytes());
        Some(format!("{payload}.{sig}"))
    }

    /// The identity a token stands for, if it is ours, intact and not expired at `now`.
    pub fn verify(&self, token: &str, now: i64) -> Result<Identity, String> {
        let (payload, sig) = token.split_once('.').ok_or("malformed bearer token")?;
        let sig = B64URL
            .decode(sig)
            .map_err(|_| "malformed bearer token".to_string())?;
        self.mac(payload)
            .verify_slice(&sig)
            .map_err(|_| "bearer token not issued by this cluster (or altered)".to_string())?;
        let claims: Claims = B64URL
            .decode(payload)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or("malformed bearer token")?;
        if claims.exp <= now {
            return Err("bearer token expired; log in again".into());
        }
        let role: Role = claims
            .role
            .parse()
            .map_err(|_| "malformed bearer token".to_string())?;
        Ok(Identity::User {
            name: claims.sub,
            role,
            namespace: claims.ns,
        })
    }
}

/// A registry error code of the distribution spec with its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 404
    BlobUnknown,
    /// 404
    BlobUploadUnknown,
    /// 400
    BlobUploadInvalid,
    /// 400
    DigestInvalid,
    /// 400
    ManifestBlobUnknown,
    /// 400
    ManifestInvalid,
    /// 404
    ManifestUnknown,
    /// 400
    NameInvalid,
    /// 404
    NameUnknown,
    /// 400
    SizeInvalid,
    /// 401
    Unauthorized,
    /// 403
    Denied,
    /// 405
    Unsupported,
    /// 413
    TooLarge,
    /// 503
    Unavailable,
}

impl Code {
    /// The spec's code string.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BlobUnknown => "BLOB_UNKNOWN",
            Code::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Code::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            Code::DigestInvalid => "DIGEST_INVALID",
            Code::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Code::ManifestInvalid => "MANIFEST_INVALID",
            Code::ManifestUnknown => "MANIFEST_UNKNOWN",
            Code::NameInvalid => "NAME_INVALID",
            Code::NameUnknown => "NAME_UNKNOWN",
            Code::SizeInvalid => "SIZE_INVALID",
            Code::Unauthorized => "UNAUTHORIZED",
            Code::Denied => "DENIED",
            Code::Unsupported => "UNSUPPORTED",
            Code::TooLarge => "SIZE_INVALID",
            Code::Unavailable => "UNAVAILABLE",
        }
    }

    /// Its HTTP status.
    pub fn status(self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            Code::BlobUnknown
            | Code::BlobUploadUnknown
            | Code::ManifestUnknown
            | Code::NameUnknown => S::NOT_FOUND,
            Code::BlobUploadInvalid
            | Code::DigestInvalid
            | Code::ManifestBlobUnknown
            | Code::ManifestInvalid
            | Code::NameInvalid
            | Code::SizeInvalid => S::BAD_REQUEST,
            Code::Unauthorized => S::UNAUTHORIZED,
            Code::Denied => S::FORBIDDEN,
            Code::Unsupported => S::METHOD_NOT_ALLOWED,
            Code::TooLarge => S::PAYLOAD_TOO_LARGE,
            Code::Unavailable => S::SERVICE_UNAVAILABLE,
        }
    }
}

/// A refused request: the code and a message naming what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryError {
    /// The spec's code.
    pub code: Code,
    /// What was wrong, for the user.
    pub message: String,
}

impl RegistryError {
    /// An error.
    pub fn new(code: Code, message: impl Into<String>) -> RegistryError {
        RegistryError {
            code,
            message: message.into(),
        }
    }

    /// The JSON body of the spec: `{"errors": [{"code", "message", "detail"}]}`.
    pub fn body(&self) -> String {
        serde_json::json!({"errors": [{
            "code": self.code.as_str(),
            "message": self.message,
            "detail": {},
        }]})
        .to_string()
    }
}

/// Parses a `Range: bytes=N-` request header (the only form blob readers send); other
/// forms read the whole blob.
pub fn range_start(header: Option<&str>) -> Option<u64> {
    let spec = header?.trim().strip_prefix("bytes=")?;
    let (start, end) = spec.split_once('-')?;
    if !end.trim().is_empty() {
        return None;
    }
    start.trim().parse().ok()
}

/// What a pushed image manifest refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedManifest {
    /// Its media type (Docker v2 schema 2 or OCI).
    pub media_type: String,
    /// The config blob (digest, size).
    pub config: (String, u64),
    /// The layer blobs (digest, size), bottom first.
    pub layers: Vec<(String, u64)>,
}

/// Media types of image manifests the registry stores.
pub const MANIFEST_TYPES: [&str; 2] = [
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
];

/// Checks a pushed manifest: an image manifest (schema 2, Docker or OCI) with a config and
/// layers given by sha256 digests. Indexes and manifest lists are refused with what to do.
pub fn parse_pushed_manifest(
    body: &[u8],
    content_type: Option<&str>,
) -> Result<PushedManifest, RegistryError> {
    let invalid = |m: String| RegistryError::new(Code::ManifestInvalid, m);
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| invalid(format!("manifest is not JSON: {e}")))?;
    let declared = v.get("mediaType").and_then(serde_json::Value::as_str);
    let header = content_type.map(|c| c.split(';').next().unwrap_or("").trim());
    if v.get("manifests").is_some()
        || declared.is_some_and(|t| t.contains("index") || t.contains("list"))
    {
        return Err(invalid(
            "image indexes and manifest lists (several platforms) are not stored: push one platform (docker push of a single image, skopeo copy without --all)".into(),
        ));
    }
    if v.get("schemaVersion").and_then(serde_json::Value::as_u64) != Some(2) {
        return Err(invalid(
            "manifest: schemaVersion 2 expected (Docker v2 schema 2 or OCI)".into(),
        ));
    }
    let media_type = declared
        .or(header.filter(|h| MANIFEST_TYPES.contains(h)))
        .unwrap_or(MANIFEST_TYPES[1])
        .to_string();
    if !MANIFEST_TYPES.contains(&media_type.as_str()) {
        return Err(invalid(format!(
            "manifest media type {media_type:?}: expected one of {}",
            MANIFEST_TYPES.join(", ")
        )));
    }
    let desc = |d: &serde_json::Value, what: &str| -> Result<(String, u64), RegistryError> {
        let digest = d
            .get("digest")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| invalid(format!("manifest: {what} has no digest")))?;
        if digest.parse::<shoal_image::digest::Digest>().is_err() {
            return Err(RegistryError::new(
                Code::DigestInvalid,
                format!("manifest: {what} digest {digest:?}: expected sha256:<64 hex>"),
            ));
        }
        let size = d
            .get("size")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| invalid(format!("manifest: {what} has no size")))?;
        Ok((digest.to_string(), size))
    };
    let config = desc(
        v.get("config")
            .ok_or_else(|| invalid("manifest: no config".into()))?,
        "config",
    )?;
    let layers = v
        .get("layers")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| invalid("manifest: no layers".into()))?
        .iter()
        .enumerate()
        .map(|(i, l)| desc(l, &format!("layer {i}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PushedManifest {
        media_type,
        config,
        layers,
    })
}

/// The repository of a stored image name (`team-a/web:1` → `team-a/web`).
pub fn repo_of(name: &str) -> &str {
    match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => name,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn routes_of_the_distribution_api() {
        assert_eq!(parse_route("/v2/"), Some(Route::Base));
        assert_eq!(parse_route("/v2"), Some(Route::Base));
        assert_eq!(parse_route("/v2/token"), Some(Route::Token));
        assert_eq!(parse_route("/v2/_catalog"), Some(Route::Catalog));
        assert_eq!(
            parse_route("/v2/team-a/web/tags/list"),
            Some(Route::Tags {
                repo: "team-a/web".into()
            })
        );
        assert_eq!(
            parse_route("/v2/busybox/manifests/1.36"),
            Some(Route::Manifest {
                repo: "busybox".into(),
                reference: "1.36".into()
            })
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            parse_route(&format!("/v2/a/b/c/blobs/{d}")),
            Some(Route::Blob {
                repo: "a/b/c".into(),
                digest: d.clone()
            })
        );
        assert_eq!(
            parse_route("/v2/a/blobs/uploads/"),
            Some(Route::UploadStart { repo: "a".into() })
        );
        assert_eq!(
            parse_route("/v2/a/blobs/uploads/123e4567"),
            Some(Route::Upload {
                repo: "a".into(),
                id: "123e4567".into()
            })
        );
        // A repository may itself be called "blobs" or "manifests".
        assert_eq!(
            parse_route("/v2/x/blobs/manifests/latest"),
            Some(Route::Manifest {
                repo: "x/blobs".into(),
                reference: "latest".into()
            })
        );
        assert_eq!(parse_route("/v1/x"), None);
        assert_eq!(parse_route("/v2/x/other/y"), None);
        assert!(
            Route::Manifest {
                repo: "a".into(),
                reference: "t".into()
            }
            .pushes(&http::Method::PUT)
        );
        assert!(
            !Route::Blob {
                repo: "a".into(),
                digest: d
            }
            .pushes(&http::Method::HEAD)
        );
    }

    #[test]
    fn names_and_tags_are_checked() {
        for ok in ["busybox", "team-a/web", "a.b_c/d__e", "x1/y-2/z.3"] {
            assert!(check_repo(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Busybox",
            "a//b",
            "/a",
            "a/",
            "-a",
            "a-",
            "a/../b",
            "a..b",
            &"a".repeat(256),
        ] {
            assert!(check_repo(bad).is_err(), "{bad}");
        }
        assert!(check_tag("v1.2_3-rc").is_ok());
        assert!(check_tag("_x").is_ok());
        for bad in ["", ".x", "-x", "a/b", "a:b", &"a".repeat(129)] {
            assert!(check_tag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn namespaces_and_rights() {
        assert_eq!(repo_namespace("busybox"), "default");
        assert_eq!(repo_namespace("team-a/web/api"), "team-a");
        let user = |role, ns: Option<&str>| Identity::User {
            name: "u".into(),
            role,
            namespace: ns.map(String::from),
        };
        assert!(check_access(&user(Role::Admin, None), "x", true).is_ok());
        assert!(check_access(&user(Role::Edit, None), "x", true).is_ok());
        assert!(check_access(&user(Role::View, None), "x", false).is_ok());
        let e = check_access(&user(Role::View, None), "x", true).unwrap_err();
        assert!(e.contains("edit role"), "{e}");
        let e = check_access(&user(Role::Edit, Some("a")), "b", false).unwrap_err();
        assert!(e.contains("namespace b") && e.contains("only a"), "{e}");
        assert!(check_access(&user(Role::Edit, Some("a")), "a", true).is_ok());
        let node = Identity::Node { name: "n1".into() };
        assert!(check_access(&node, "x", false).is_ok());
        assert!(check_access(&node, "x", true).is_err());
    }

    #[test]
    fn bearer_tokens_round_trip_and_refuse_tampering() {
        let key = BearerKey::derive(&[7u8; 32]);
        let who = Identity::User {
            name: "alice".into(),
            role: Role::Edit,
            namespace: Some("team-a".into()),
        };
        let t = key.issue(&who, 1_000).unwrap();
        assert_eq!(key.verify(&t, 999).unwrap(), who);
        assert!(key.verify(&t, 1_000).unwrap_err().contains("expired"));
        let other = BearerKey::derive(&[8u8; 32]);
        assert!(other.verify(&t, 0).unwrap_err().contains("not issued"));
        // Raising the role in the payload breaks the signature.
        let (payload, sig) = t.split_once('.').unwrap();
        let mut claims: Claims = serde_json::from_slice(&B64URL.decode(payload).unwrap()).unwrap();
        claims.role = "admin".into();
        let forged = format!(
            "{}.{sig}",
            B64URL.encode(serde_json::to_vec(&claims).unwrap())
        );
        assert!(key.verify(&forged, 0).is_err());
        assert!(key.verify("garbage", 0).is_err());
        assert!(key.issue(&Identity::Node { name: "n".into() }, 5).is_none());
    }

    #[test]
    fn error_bodies_and_ranges() {
        let e = RegistryError::new(Code::ManifestUnknown, "manifest x:1 not found");
        let v: serde_json::Value = serde_json::from_str(&e.body()).unwrap();
        assert_eq!(v["errors"][0]["code"], "MANIFEST_UNKNOWN");
        assert_eq!(e.code.status(), http::StatusCode::NOT_FOUND);
        assert_eq!(range_start(Some("bytes=100-")), Some(100));
        assert_eq!(range_start(Some("bytes=0-10")), None);
        assert_eq!(range_start(None), None);
    }

    #[test]
    fn pushed_manifests_are_checked() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "x", "digest": d('c'), "size": 10},
            "layers": [{"mediaType": "y", "digest": d('1'), "size": 20}],
        });
        let p = parse_pushed_manifest(m.to_string().as_bytes(), None).unwrap();
        assert_eq!(p.media_type, MANIFEST_TYPES[0]);
        assert_eq!(p.config, (d('c'), 10));
        assert_eq!(p.layers, vec![(d('1'), 20)]);
        // OCI without mediaType: from the header, else OCI.
        let mut oci = m.clone();
        oci.as_object_mut().unwrap().remove("mediaType");
        let p = parse_pushed_manifest(oci.to_string().as_bytes(), None).unwrap();
        assert_eq!(p.media_type, MANIFEST_TYPES[1]);
        let index = serde_json::json!({"schemaVersion": 2, "manifests": []});
        let e = parse_pushed_manifest(index.to_string().as_bytes(), None).unwrap_err();
        assert_eq!(e.code, Code::ManifestInvalid);
        assert!(e.message.contains("one platform"), "{}", e.message);
        let mut bad = m.clone();
        bad["layers"][0]["digest"] = "sha256:xyz".into();
        let e = parse_pushed_manifest(bad.to_string().as_bytes(), None).unwrap_err();
        assert_eq!(e.code, Code::DigestInvalid);
        assert!(e.message.contains("layer 0"), "{}", e.message);
        assert!(parse_pushed_manifest(b"{", None).is_err());
        assert_eq!(repo_of("team-a/web:1"), "team-a/web");
        assert_eq!(repo_of("busybox:latest"), "busybox");
    }
}
