//! The one error type of shoal-pki.

use std::path::PathBuf;

/// What went wrong with a certificate, key, token or TLS setting.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A certificate or key could not be made, parsed or used.
    #[error("{what}: {message}")]
    Cert {
        /// Which certificate or key (a file, a field).
        what: String,
        /// Why.
        message: String,
    },
    /// A certificate or key file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A join token is malformed.
    #[error("join token: {0}")]
    Token(String),
    /// A CA hash is malformed (expected `sha256:` and 64 hex digits).
    #[error(
        "CA hash {0:?}: expected sha256: and 64 hex digits, as printed by `shoalctl token create`"
    )]
    CaHash(String),
    /// An identity name is not acceptable in a certificate.
    #[error("{what} {name:?}: {reason}")]
    Name {
        /// A node name, a user name, a namespace.
        what: &'static str,
        /// The value.
        name: String,
        /// Why it is refused.
        reason: String,
    },
}

impl PkiError {
    pub(crate) fn cert(what: impl Into<String>, message: impl std::fmt::Display) -> PkiError {
        PkiError::Cert {
            what: what.into(),
            message: message.to_string(),
        }
    }
}
