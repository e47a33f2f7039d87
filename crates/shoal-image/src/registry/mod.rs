//! Pulling images from and pushing them to registries (the OCI distribution API, which Docker Hub, the
//! Debian `docker-registry`, Harbor, Quay … serve): references ([`reference`]), the
//! node's `registries.yaml` ([`hosts`]), credentials ([`credentials`]), auth challenges
//! ([`auth`]), HTTP ([`http`]), the pull itself ([`client`]) and the push ([`push`]). The pure parts (parsing,
//! endpoint and credential selection, platform choice, error classification) are
//! separate from the I/O and unit-tested; the pull is tested against a real registry
//! (`tests/it/registry.rs`).

pub mod auth;
pub mod client;
pub mod credentials;
pub mod hosts;
pub mod http;
pub mod push;
pub mod reference;

pub use client::{Downloaded, Pulled, RegistryClient};
pub use credentials::{Credentials, DockerConfig, Keyring};
pub use hosts::{Endpoint, RegistriesConfig};
pub use push::Pusher;
pub use reference::Reference;

use crate::ImageError;
use crate::digest::Digest;

/// Why a registry pull failed. Every message is one line and names the endpoint, image
/// or blob involved.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A malformed image reference.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        /// As written.
        reference: String,
        /// What is wrong.
        reason: String,
    },
    /// A bad `registries.yaml`, pull secret or TLS file.
    #[error("{source_name}: {message}")]
    Config {
        /// The file or Secret.
        source_name: String,
        /// What is wrong.
        message: String,
    },
    /// The registry does not have the image (or the blob).
    #[error("not found: {endpoint} has no {what}")]
    NotFound {
        /// The endpoint asked.
        endpoint: String,
        /// The manifest or blob.
        what: String,
    },
    /// The registry refused the credentials (or asked for some and had none).
    #[error("unauthorized: {endpoint}: {message}")]
    Unauthorized {
        /// The endpoint (or token server) asked.
        endpoint: String,
        /// What it said.
        message: String,
    },
    /// The TLS handshake failed (unknown CA, wrong name, plain HTTP on the port …).
    #[error("TLS: {endpoint}: {message}")]
    Tls {
        /// The endpoint.
        endpoint: String,
        /// The TLS error.
        message: String,
    },
    /// No connection (refused, no route, name unknown, timeout).
    #[error("unreachable: {endpoint}: {message}")]
    Unreachable {
        /// The endpoint.
        endpoint: String,
        /// Why.
        message: String,
    },
    /// Content does not match its digest.
    #[error("digest mismatch: {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The manifest or blob, and where it came from.
        what: String,
        /// The digest it should have.
        expected: Digest,
        /// The digest it has.
        actual: Digest,
    },
    /// An index (manifest list) without a manifest for this node's platform.
    #[error("no {platform} image in index {index} (it has: {available})")]
    NoPlatform {
        /// `linux/amd64`.
        platform: String,
        /// The index digest.
        index: Digest,
        /// The platforms it has.
        available: String,
    },
    /// An answer we do not understand or do not support.
    #[error("{endpoint}: {message}")]
    Protocol {
        /// The endpoint.
        endpoint: String,
        /// What is wrong.
        message: String,
    },
    /// Storing what was fetched failed.
    #[error(transparent)]
    Store(#[from] ImageError),
}

/// The kinds of failure a user is told about (`ErrImagePull` reasons).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FailureKind {
    /// Connection refused, no route, unknown name.
    Unreachable,
    /// TLS handshake or certificate.
    Tls,
    /// Something else (bad answer, bad config, local store).
    Other,
    /// The image or tag does not exist.
    NotFound,
    /// An index without this platform.
    NoPlatform,
    /// Credentials refused or missing.
    Unauthorized,
    /// Content does not match its digest.
    DigestMismatch,
}

impl RegistryError {
    /// What kind of failure this is.
    pub fn kind(&self) -> FailureKind {
        match self {
            Self::NotFound { .. } => FailureKind::NotFound,
            Self::Unauthorized { .. } => FailureKind::Unauthorized,
            Self::Tls { .. } => FailureKind::Tls,
            Self::Unreachable { .. } => FailureKind::Unreachable,
            Self::DigestMismatch { .. } | Self::Store(ImageError::DigestMismatch { .. }) => {
                FailureKind::DigestMismatch
            }
            Self::NoPlatform { .. } => FailureKind::NoPlatform,
            _ => FailureKind::Other,
        }
    }

    /// Whether no endpoint could be talked to at all (as opposed to an answer).
    pub fn is_unreachable(&self) -> bool {
        matches!(self.kind(), FailureKind::Unreachable | FailureKind::Tls)
    }
}

/// Of the errors of several endpoints, the one that says most: an answer (digest
/// mismatch, unauthorized, no platform, not found) over a failure to connect.
pub fn most_telling(errors: Vec<RegistryError>) -> Option<RegistryError> {
    errors.into_iter().rev().max_by_key(|e| e.kind())
}

/// The platform this node runs (`linux/amd64`, `linux/arm64`).
pub fn host_platform() -> (&'static str, &'static str) {
    ("linux", crate::host_arch())
}

/// A hint for a failed pull of `image` (as written in the pod), when it looks like a
/// Docker Hub short name and Docker Hub could not be reached.
pub fn hint(image: &str, err: &RegistryError) -> Option<String> {
    let r = Reference::parse(image).ok()?;
    (r.is_docker_hub() && err.is_unreachable()).then(|| {
        "docker.io is not reachable from this node; import the image (shoalctl image import) \
         or configure a mirror in --registries"
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_tell_more_than_connection_failures() {
        let unreachable = || RegistryError::Unreachable {
            endpoint: "https://a".into(),
            message: "connection refused".into(),
        };
        let e = most_telling(vec![
            unreachable(),
            RegistryError::NotFound {
                endpoint: "http://b".into(),
                what: "manifest x".into(),
            },
            RegistryError::Tls {
                endpoint: "https://c".into(),
                message: "x".into(),
            },
        ])
        .unwrap();
        assert_eq!(e.kind(), FailureKind::NotFound);
        assert_eq!(e.to_string(), "not found: http://b has no manifest x");
        assert!(most_telling(vec![]).is_none());
        // The first of equals wins.
        let e = most_telling(vec![
            unreachable(),
            RegistryError::Unreachable {
                endpoint: "https://z".into(),
                message: "m".into(),
            },
        ])
        .unwrap();
        assert!(e.to_string().contains("https://a"), "{e}");
    }

    #[test]
    fn hints_at_docker_hub_short_names() {
        let e = RegistryError::Unreachable {
            endpoint: "https://registry-1.docker.io".into(),
            message: "failed to lookup address".into(),
        };
        assert!(
            hint("nginx:1.14.2", &e)
                .unwrap()
                .contains("shoalctl image import")
        );
        assert!(hint("docker.io/library/nginx", &e).is_some());
        assert!(hint("127.0.0.1:5000/nginx", &e).is_none());
        let nf = RegistryError::NotFound {
            endpoint: "x".into(),
            what: "y".into(),
        };
        assert!(hint("nginx", &nf).is_none());
    }
}
