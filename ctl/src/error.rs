//! The errors of `shoalctl` and the one mapping from gRPC status codes to plain messages.

use tonic::Code;

/// Everything that can make a `shoalctl` command fail; the message is printed as `error: …`.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// No controller address answered.
    #[error("cannot reach any controller (tried {tried}): {reason}")]
    Unreachable {
        /// The addresses tried, comma-separated.
        tried: String,
        /// Why they could not be reached.
        reason: String,
    },
    /// A `--server` / `SHOAL_SERVER` entry is malformed.
    #[error("invalid server address {addr:?}: {reason}")]
    BadAddress {
        /// The offending entry.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Wrong use of the command line (bad argument combination or value).
    #[error("{0}")]
    Usage(String),
    /// A manifest was rejected client-side (already names file, document and field).
    #[error("{0}")]
    Manifest(String),
    /// Reading a file, a directory or stdin failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory (`-` for stdin).
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The dashboard could not listen on its loopback address.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// `127.0.0.1:PORT`.
        addr: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Writing the output failed.
    #[error("writing output: {0}")]
    Output(std::io::Error),
    /// The named object does not exist (the whole message).
    #[error("{0}")]
    NotFound(String),
    /// An object with this name already exists (the whole message).
    #[error("{0}")]
    AlreadyExists(String),
    /// A precondition (resourceVersion) failed: someone else changed the object.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The controller rejected the request as invalid.
    #[error("rejected by the controller: {0}")]
    Invalid(String),
    /// Several objects of one request failed, each on its own: one line per object
    /// (`pod/web: permission denied: …`).
    #[error("{}", .0.join("\n"))]
    Objects(Vec<String>),
    /// The controller is there but cannot serve (no leader, shutting down, …).
    #[error("controller unavailable: {0}")]
    Unavailable(String),
    /// The request took longer than the request timeout.
    #[error("timed out waiting for the controller: {0}")]
    Timeout(String),
    /// A watch asked for a revision the controller no longer keeps.
    #[error("resource version too old: {0}")]
    TooOld(String),
    /// Authentication or authorization failed.
    #[error("permission denied: {0}")]
    Denied(String),
    /// The controller does not implement the call.
    #[error("the controller does not support this request: {0}")]
    Unsupported(String),
    /// Any other server-side failure.
    #[error("controller error ({code}): {message}")]
    Server {
        /// The gRPC code, in words.
        code: String,
        /// The server's message.
        message: String,
    },
    /// A registry push or pull failed; the cause says how (unauthorized, not found, TLS,
    /// unreachable) and names the registry's address.
    #[error("{action} {image}: {source}")]
    Registry {
        /// `push` or `pull`.
        action: &'static str,
        /// The image reference.
        image: String,
        /// What the registry (or the connection to it) did (boxed: it is large).
        source: Box<shoal_image::registry::RegistryError>,
    },
    /// The controller answered with something that is not a valid object.
    #[error("invalid answer from the controller: {0}")]
    BadResponse(String),
    /// The remote command of `exec` ended with this non-zero exit code (shoalctl exits with it).
    #[error("command terminated with exit code {0}")]
    RemoteExit(i32),
    /// The local terminal could not be put into or out of raw mode.
    #[error("terminal: {0}")]
    Terminal(String),
    /// `cp` failed, locally or in the container (the whole message, naming the path).
    #[error("{0}")]
    Copy(String),
    /// The request cannot be served in the object's current state (the whole message).
    #[error("{0}")]
    NotPossible(String),
    /// Waiting for a condition (rollout, drain) ran out of time (the whole message).
    #[error("{0}")]
    WaitTimeout(String),
    /// `diff` found differences (exit code 1, nothing more printed).
    #[error("differences found")]
    Differences,
    /// `diff` itself failed (exit code 2, as kubectl's, so that 1 means "different").
    #[error("{0}")]
    DiffFailed(Box<CtlError>),
    /// Some objects of a multi-object command failed (each was reported already).
    #[error("{failed} of {total} {what} failed")]
    Partial {
        /// How many failed.
        failed: usize,
        /// How many were attempted.
        total: usize,
        /// What was attempted ("deletions", "creations", …).
        what: &'static str,
    },
}

fn in_namespace(ns: &str) -> String {
    if ns.is_empty() {
        String::new()
    } else {
        format!(" in namespace {ns:?}")
    }
}

/// The object a request was about, used to phrase NotFound / AlreadyExists messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Lower-case singular kind, e.g. `pod`.
    pub kind: String,
    /// Namespace, empty for cluster-scoped kinds.
    pub namespace: String,
    /// Object name.
    pub name: String,
}

impl Target {
    /// Builds a target from its parts.
    pub fn new(kind: &str, namespace: &str, name: &str) -> Self {
        Target {
            kind: kind.to_lowercase(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    /// The "not found" error for this object.
    pub fn not_found(&self) -> CtlError {
        CtlError::NotFound(format!(
            "{} not found{}",
            self.quoted(),
            in_namespace(&self.namespace)
        ))
    }

    fn quoted(&self) -> String {
        format!("{} {:?}", self.kind, self.name)
    }
}

/// Which service a status came from: object writes read FAILED_PRECONDITION as a
/// resourceVersion conflict, the `Proxy` and `Images` services as "not possible now".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// The `Cluster` service (objects).
    Cluster,
    /// The `Proxy` (logs, exec, stats) and `Images` services.
    Workload,
}

/// Turns a gRPC status into a plain, one-line error (the only place that looks at codes).
pub fn status_error(status: &tonic::Status, target: Option<&Target>) -> CtlError {
    service_error(status, target, Service::Cluster)
}

/// [`status_error`] for a status of the given service.
pub fn service_error(
    status: &tonic::Status,
    target: Option<&Target>,
    service: Service,
) -> CtlError {
    let msg = one_line(status.message());
    let msg_or = |default: &str| {
        if msg.is_empty() {
            default.to_string()
        } else {
            msg.clone()
        }
    };
    match status.code() {
        Code::NotFound if service == Service::Workload && !msg.is_empty() => {
            CtlError::NotFound(msg.clone())
        }
        Code::NotFound => match target {
            Some(t) => t.not_found(),
            None => CtlError::NotFound(msg_or("not found")),
        },
        Code::AlreadyExists => CtlError::AlreadyExists(match target {
            Some(t) => format!(
                "{} already exists{}",
                t.quoted(),
                in_namespace(&t.namespace)
            ),
            None => msg_or("already exists"),
        }),
        Code::FailedPrecondition if service == Service::Workload => {
            CtlError::NotPossible(msg_or("not possible in the current state"))
        }
        Code::Aborted | Code::FailedPrecondition => {
            let what = target
                .map(|t| {
                    format!(
                        "{} was changed by someone else ({})",
                        t.quoted(),
                        msg_or("resourceVersion mismatch")
                    )
                })
                .unwrap_or_else(|| msg_or("the object was changed by someone else"));
            CtlError::Conflict(what)
        }
        Code::InvalidArgument => CtlError::Invalid(msg_or("invalid request")),
        Code::Unavailable => CtlError::Unavailable(msg_or("try again later")),
        Code::DeadlineExceeded => CtlError::Timeout(msg_or("deadline exceeded")),
        Code::OutOfRange => CtlError::TooOld(msg_or("re-list and watch again")),
        Code::PermissionDenied | Code::Unauthenticated => {
            CtlError::Denied(msg_or("no credentials accepted"))
        }
        Code::Unimplemented => CtlError::Unsupported(msg_or("unimplemented")),
        // tonic reports its own client-side deadline this way.
        Code::Cancelled if msg.contains("Timeout expired") => {
            CtlError::Timeout("no answer within the request timeout".into())
        }
        Code::Cancelled => CtlError::Server {
            code: "cancelled".into(),
            message: msg_or("request cancelled"),
        },
        Code::ResourceExhausted => CtlError::Server {
            code: "overloaded".into(),
            message: msg_or("resource exhausted"),
        },
        code => CtlError::Server {
            code: code_words(code),
            message: msg_or("no details"),
        },
    }
}

/// Lower-case words for a gRPC code, e.g. `internal`, `data loss`.
fn code_words(code: Code) -> String {
    format!("{code:?}")
        .chars()
        .enumerate()
        .flat_map(|(i, c)| {
            let sep = (i > 0 && c.is_ascii_uppercase()).then_some(' ');
            sep.into_iter().chain(c.to_lowercase())
        })
        .collect()
}

/// Collapses a (possibly multi-line) message onto one line.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Status;

    #[test]
    fn workload_services_keep_their_messages() {
        let s = Status::failed_precondition("pod \"web\" is not bound to a node yet");
        assert_eq!(
            service_error(&s, None, Service::Workload).to_string(),
            "pod \"web\" is not bound to a node yet"
        );
        let s = Status::not_found("image \"busybox:9\" not found");
        assert_eq!(
            service_error(&s, Some(&pod("x")), Service::Workload).to_string(),
            "image \"busybox:9\" not found"
        );
        assert!(
            status_error(&Status::failed_precondition("x"), None)
                .to_string()
                .starts_with("conflict:")
        );
    }

    fn pod(name: &str) -> Target {
        Target::new("Pod", "default", name)
    }

    #[test]
    fn not_found_names_kind_object_and_namespace() {
        let e = status_error(&Status::not_found("key Pod/default/x"), Some(&pod("x")));
        assert_eq!(e.to_string(), r#"pod "x" not found in namespace "default""#);
        let node = Target::new("Node", "", "n1");
        let e = status_error(&Status::not_found("whatever"), Some(&node));
        assert_eq!(e.to_string(), r#"node "n1" not found"#);
        let e = status_error(&Status::not_found("pod \"y\" not found"), None);
        assert_eq!(e.to_string(), r#"pod "y" not found"#);
    }

    #[test]
    fn already_exists_and_conflict() {
        let e = status_error(&Status::already_exists("exists"), Some(&pod("web-1")));
        assert_eq!(
            e.to_string(),
            r#"pod "web-1" already exists in namespace "default""#
        );
        let e = status_error(
            &Status::aborted("expected revision 5, found 7"),
            Some(&pod("web-1")),
        );
        assert_eq!(
            e.to_string(),
            r#"conflict: pod "web-1" was changed by someone else (expected revision 5, found 7)"#
        );
        let e = status_error(&Status::failed_precondition(""), None);
        assert_eq!(
            e.to_string(),
            "conflict: the object was changed by someone else"
        );
    }

    #[test]
    fn every_other_code_has_a_plain_message() {
        let cases = [
            (
                Status::invalid_argument("object 1: spec.replicas: bad"),
                "rejected by the controller: object 1: spec.replicas: bad",
            ),
            (
                Status::unavailable("no leader\nelected yet"),
                "controller unavailable: no leader elected yet",
            ),
            (
                Status::deadline_exceeded(""),
                "timed out waiting for the controller: deadline exceeded",
            ),
            (
                Status::out_of_range("revision 3 compacted"),
                "resource version too old: revision 3 compacted",
            ),
            (Status::permission_denied("nope"), "permission denied: nope"),
            (
                Status::unauthenticated(""),
                "permission denied: no credentials accepted",
            ),
            (
                Status::unimplemented(""),
                "the controller does not support this request: unimplemented",
            ),
            (
                Status::cancelled("Timeout expired"),
                "timed out waiting for the controller: no answer within the request timeout",
            ),
            (
                Status::internal("disk full"),
                "controller error (internal): disk full",
            ),
            (
                Status::data_loss("oops"),
                "controller error (data loss): oops",
            ),
            (
                Status::unknown(""),
                "controller error (unknown): no details",
            ),
            (
                Status::resource_exhausted("queue full"),
                "controller error (overloaded): queue full",
            ),
        ];
        for (status, want) in cases {
            let got = status_error(&status, Some(&pod("a"))).to_string();
            assert_eq!(got, want, "for {status:?}");
            assert!(!got.contains('\n'));
        }
    }
}
