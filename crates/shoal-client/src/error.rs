//! The client's error type.

use tonic::Code;

/// Everything that can go wrong talking to the controllers.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A malformed endpoint entry.
    #[error("invalid server address {addr:?}: {reason}")]
    BadAddress {
        /// The entry as given.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The client configuration (`SHOAL_CONFIG`, admin.conf) is missing or unusable.
    #[error("{path}: {message}")]
    Config {
        /// The file (or the setting) that is wrong.
        path: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// Joining the cluster with a token failed.
    #[error("joining through {addr}: {message}")]
    Join {
        /// The controller asked.
        addr: String,
        /// Why (refused token, CA hash mismatch, unreachable).
        message: String,
    },
    /// The endpoint list was empty.
    #[error("no controller address given")]
    NoAddress,
    /// No member accepted a connection.
    #[error("cannot reach any controller (tried {tried}): {reason}")]
    Unreachable {
        /// The addresses tried, comma-separated.
        tried: String,
        /// Why they could not be reached (one reason when all failed alike).
        reason: String,
    },
    /// A member answered with an error status (or the connection to it failed and no
    /// other member could be tried).
    #[error("{addr}: {}", one_line(.status.message()))]
    Status {
        /// The member that answered (or whose connection failed).
        addr: String,
        /// Its answer.
        status: tonic::Status,
    },
    /// An object did not decode.
    #[error("{what}: {message}")]
    Decode {
        /// Which object.
        what: String,
        /// Why.
        message: String,
    },
    /// A watch failed this many times in a row without delivering anything.
    #[error("{addr}: the watch broke {breaks} times in a row without delivering a change ({last})")]
    WatchGaveUp {
        /// The member tried last.
        addr: String,
        /// Consecutive failures.
        breaks: usize,
        /// The last failure.
        last: String,
    },
}

impl ClientError {
    /// The gRPC code, when a member answered.
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Status { status, .. } => Some(status.code()),
            _ => None,
        }
    }

    /// The error as a status whose message names the member (for callers that map
    /// statuses to their own wording). Transport failures and `Unreachable` become
    /// UNAVAILABLE.
    pub fn to_status(&self) -> tonic::Status {
        match self {
            ClientError::Status { addr, status } => {
                let msg = if crate::retry::classify(status).is_retryable() {
                    format!("{addr}: {}", status.message())
                } else {
                    status.message().to_string()
                };
                tonic::Status::new(status.code(), msg)
            }
            ClientError::Unreachable { .. } | ClientError::WatchGaveUp { .. } => {
                tonic::Status::unavailable(self.to_string())
            }
            ClientError::BadAddress { .. }
            | ClientError::NoAddress
            | ClientError::Config { .. }
            | ClientError::Join { .. } => tonic::Status::invalid_argument(self.to_string()),
            ClientError::Decode { .. } => tonic::Status::internal(self.to_string()),
        }
    }
}

/// Builds the "cannot reach any controller" error; one reason if all failed alike.
pub fn unreachable(failures: &[(String, String)]) -> ClientError {
    let tried = failures
        .iter()
        .map(|(a, _)| a.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let first = failures
        .first()
        .map(|(_, r)| r.as_str())
        .unwrap_or("no address to try");
    let reason = if failures.iter().all(|(_, r)| r == first) {
        first.to_string()
    } else {
        failures
            .iter()
            .map(|(a, r)| format!("{a}: {r}"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    ClientError::Unreachable { tried, reason }
}

/// A short reason for a failed connection attempt, from the deepest useful cause.
pub fn connect_reason(e: &(dyn std::error::Error + 'static)) -> String {
    use std::io::ErrorKind;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut deepest = e.to_string();
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            let r = match io.kind() {
                ErrorKind::ConnectionRefused => "connection refused",
                ErrorKind::TimedOut => "connection timed out",
                ErrorKind::ConnectionReset => "connection reset",
                ErrorKind::ConnectionAborted => "connection aborted",
                ErrorKind::HostUnreachable => "host unreachable",
                ErrorKind::NetworkUnreachable => "network unreachable",
                ErrorKind::AddrNotAvailable => "address not available",
                _ => "",
            };
            if !r.is_empty() {
                return r.to_string();
            }
        }
        let s = err.to_string();
        if !s.is_empty() {
            deepest = s;
        }
        cur = err.source();
    }
    let lower = deepest.to_lowercase();
    if lower.contains("timed out") || lower.contains("timeout") {
        "connection timed out".into()
    } else if lower.contains("failed to lookup") || lower.contains("dns error") {
        format!("cannot resolve host ({})", one_line(&deepest))
    } else {
        one_line(&lower)
    }
}

/// Collapses a (possibly multi-line) message onto one line.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_message_collapses_equal_reasons() {
        let f = vec![
            (
                "127.0.0.1:7001".to_string(),
                "connection refused".to_string(),
            ),
            (
                "127.0.0.1:7002".to_string(),
                "connection refused".to_string(),
            ),
        ];
        assert_eq!(
            unreachable(&f).to_string(),
            "cannot reach any controller (tried 127.0.0.1:7001, 127.0.0.1:7002): connection refused"
        );
        let f = vec![
            ("a:1".to_string(), "connection refused".to_string()),
            ("b:2".to_string(), "connection timed out".to_string()),
        ];
        assert_eq!(
            unreachable(&f).to_string(),
            "cannot reach any controller (tried a:1, b:2): a:1: connection refused; b:2: connection timed out"
        );
    }

    #[test]
    fn io_causes_become_short_reasons() {
        let e = std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        );
        assert_eq!(connect_reason(&e), "connection refused");
    }
}
