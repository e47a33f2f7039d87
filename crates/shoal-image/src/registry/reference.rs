//! Image references as Docker reads them: `busybox` is
//! `docker.io/library/busybox:latest`, `host:port/repo:tag`, `repo@sha256:…`.
//! Pure: no I/O.

use std::fmt;

use super::RegistryError;
use crate::digest::Digest;

/// Docker Hub's name in references.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that serves Docker Hub's registry API.
pub const DOCKER_HUB_ENDPOINT: &str = "registry-1.docker.io";

/// A parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// Registry host (with port), `docker.io` for Docker Hub.
    pub registry: String,
    /// Repository path (`library/busybox`).
    pub repository: String,
    /// Tag (`latest` when neither a tag nor a digest was given).
    pub tag: Option<String>,
    /// Digest, when pinned (`@sha256:…`); it wins over the tag.
    pub digest: Option<Digest>,
    /// Whether the registry was implied (a Docker Hub short name such as `nginx:1.14.2`).
    pub implied_registry: bool,
}

impl Reference {
    /// Parses `[registry/]repository[:tag][@digest]` like Docker does: the first path
    /// component is a registry when it has a `.` or a `:`, or is `localhost`.
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        let bad = |reason: &str| RegistryError::InvalidReference {
            reference: s.to_string(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(bad("empty"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(
                    d.parse::<Digest>()
                        .map_err(|_| bad("the digest must be sha256:<64 lower-case hex digits>"))?,
                ),
            ),
            None => (s, None),
        };
        let (registry, path, implied) = match rest.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), path.to_string(), false)
            }
            _ => (DOCKER_HUB.to_string(), rest.to_string(), true),
        };
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
            _ => registry,
        };
        let last_slash = path.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (repository, tag) = match path[last_slash..].rfind(':') {
            Some(i) => (
                path[..last_slash + i].to_string(),
                Some(path[last_slash + i + 1..].to_string()),
            ),
            None => (path.clone(), None),
        };
        if !valid_host(&registry) {
            return Err(bad("the registry must be HOST or HOST:PORT"));
        }
        if !valid_repository(&repository) {
            return Err(bad(
                "the repository must be lower-case letters, digits and separators (. _ - /)",
            ));
        }
        if let Some(t) = &tag
            && !valid_tag(t)
        {
            return Err(bad(
                "the tag must be 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
            ));
        }
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
            implied_registry: implied,
        })
    }

    /// What goes after `/manifests/`: the digest if pinned, otherwise the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// Whether the reference names Docker Hub.
    pub fn is_docker_hub(&self) -> bool {
        self.registry == DOCKER_HUB
    }

    /// The host serving the registry API by default (Docker Hub's is not `docker.io`).
    pub fn default_endpoint_host(&self) -> &str {
        if self.is_docker_hub() {
            DOCKER_HUB_ENDPOINT
        } else {
            &self.registry
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn valid_host(h: &str) -> bool {
    let (host, port) = match h.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (h, None),
    };
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && port.is_none_or(|p| p.parse::<u16>().is_ok())
}

fn valid_repository(r: &str) -> bool {
    !r.is_empty()
        && r.split('/').all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.as_bytes()[0].is_ascii_alphanumeric()
                && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
        })
}

fn valid_tag(t: &str) -> bool {
    (1..=128).contains(&t.len())
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && !t.starts_with(['.', '-'])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Reference {
        Reference::parse(s).unwrap()
    }

    #[test]
    fn parses_like_docker() {
        let r = p("busybox");
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert!(r.implied_registry);
        assert_eq!(r.default_endpoint_host(), "registry-1.docker.io");
        assert_eq!(
            p("nginx:1.14.2").to_string(),
            "docker.io/library/nginx:1.14.2"
        );
        assert_eq!(p("bitnami/redis").repository, "bitnami/redis");
        let r = p("127.0.0.1:5000/team/busybox:v1");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("127.0.0.1:5000", "team/busybox")
        );
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert!(!r.implied_registry);
        let r = p("localhost/x");
        assert_eq!(r.registry, "localhost");
        assert_eq!(r.manifest_reference(), "latest");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = p(&format!("quay.io/a/b@{d}"));
        assert_eq!(r.tag, None);
        assert_eq!(r.manifest_reference(), d);
        let r = p(&format!("host:5000/b:1@{d}"));
        assert_eq!(r.manifest_reference(), d);
        assert_eq!(r.tag.as_deref(), Some("1"));
        assert_eq!(p("index.docker.io/library/x").registry, "docker.io");
    }

    #[test]
    fn rejects_malformed_references() {
        for bad in [
            "",
            "UPPER/case",
            "a//b",
            "busybox:",
            "busybox:-x",
            "busybox@sha256:12",
            "host:99999/x",
            "x/",
        ] {
            let e = Reference::parse(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }
}
