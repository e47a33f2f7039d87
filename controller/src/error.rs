//! The controller's API errors and their one mapping to `tonic::Status`.

use shoal_store::StoreError;

/// What can go wrong serving a cluster API request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request itself is malformed (bad JSON, invalid object, bad selector).
    #[error("{0}")]
    Invalid(String),
    /// The named object does not exist.
    #[error("{kind} {name:?} not found{}", in_ns(.namespace))]
    NotFound {
        /// Kind of the object.
        kind: String,
        /// Namespace ("" for cluster-scoped kinds).
        namespace: String,
        /// Name of the object.
        name: String,
    },
    /// An object cannot be created in a namespace that does not exist.
    #[error(
        "namespace {0:?} not found: create it first (shoalctl create namespace {0}, or a Namespace in the same manifest)"
    )]
    NoNamespace(String),
    /// An object cannot be created in a namespace that is being deleted.
    #[error("namespace {0:?} is being deleted (Terminating): nothing new can be created in it")]
    NamespaceTerminating(String),
    /// A Service's or Node's addresses cannot be written as asked.
    #[error(transparent)]
    Alloc(#[from] crate::alloc::AllocError),
    /// The store refused or failed the operation.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn in_ns(ns: &str) -> String {
    if ns.is_empty() {
        String::new()
    } else {
        format!(" in namespace {ns:?}")
    }
}

/// Converts an API error to the gRPC status a client sees (the only such place).
pub fn to_status(e: &ApiError) -> tonic::Status {
    use tonic::Status;
    match e {
        ApiError::Invalid(m) => Status::invalid_argument(m.clone()),
        ApiError::NotFound { .. } | ApiError::NoNamespace(_) => Status::not_found(e.to_string()),
        ApiError::NamespaceTerminating(_) => Status::failed_precondition(e.to_string()),
        ApiError::Alloc(a) if a.is_exhausted() => Status::resource_exhausted(a.to_string()),
        ApiError::Alloc(a) => Status::invalid_argument(a.to_string()),
        ApiError::Store(s) => match s {
            StoreError::NotFound { .. } => Status::not_found(s.to_string()),
            StoreError::AlreadyExists { .. } => Status::already_exists(s.to_string()),
            StoreError::Conflict { .. } | StoreError::AlreadyBound { .. } => {
                Status::aborted(s.to_string())
            }
            StoreError::TooOld { .. } | StoreError::Lagged { .. } => {
                Status::out_of_range(s.to_string())
            }
            StoreError::Membership(_) => Status::failed_precondition(s.to_string()),
            StoreError::Invalid(_) => Status::invalid_argument(s.to_string()),
            other if other.is_retryable() => Status::unavailable(other.to_string()),
            other => Status::internal(other.to_string()),
        },
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        to_status(&e)
    }
}
