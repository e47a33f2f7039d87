//! The store's error type and the conversion of store errors to and from the wire.

use serde::{Deserialize, Serialize};

/// Everything that can go wrong in the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum StoreError {
    /// The key does not exist.
    #[error("object {key} not found")]
    NotFound {
        /// The missing key.
        key: String,
    },
    /// A create found the key already present.
    #[error("object {key} already exists")]
    AlreadyExists {
        /// The existing key.
        key: String,
    },
    /// The revision precondition of an update or delete did not hold.
    #[error("conflict on {key}: expected revision {expected}, found {actual}")]
    Conflict {
        /// The key whose precondition failed.
        key: String,
        /// The revision the caller expected.
        expected: u64,
        /// The revision stored now.
        actual: u64,
    },
    /// A bind found the pod bound to another node.
    #[error("object {key} is already bound to node {node}")]
    AlreadyBound {
        /// The pod's key.
        key: String,
        /// The node it is bound to.
        node: String,
    },
    /// A watch asked to resume from a revision older than the kept history: re-list.
    #[error("revision {requested} is too old (oldest resumable revision is {oldest}): re-list")]
    TooOld {
        /// The revision the caller asked to resume after.
        requested: u64,
        /// The oldest revision one may resume after.
        oldest: u64,
    },
    /// A watcher fell too far behind and was dropped: re-list.
    #[error("watch on prefix {prefix:?} fell behind and was closed: re-list")]
    Lagged {
        /// The watched prefix.
        prefix: String,
    },
    /// No leader is known right now (election in progress); retry.
    #[error("no raft leader is known")]
    NoLeader,
    /// A transient failure (leader changed, peer unreachable) where the write was surely not
    /// applied; retry.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The outcome of a write is unknown (the leader was lost after the request was sent):
    /// it may or may not have been applied. Re-read before retrying.
    #[error("write outcome unknown: {0}")]
    Indeterminate(String),
    /// A request was malformed (bad key, object not a JSON object).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A membership change was refused (duplicate id or address, unreachable new member,
    /// last member, no quorum left, not a member); the membership is unchanged.
    #[error("membership change refused: {0}")]
    Membership(String),
    /// A local storage failure; the member cannot continue.
    #[error("storage failure: {0}")]
    Storage(String),
    /// The store was shut down.
    #[error("store is shut down")]
    Shutdown,
}

impl StoreError {
    /// True when the same request may simply be sent again later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::NoLeader | StoreError::Unavailable(_))
    }
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Storage(format!("sled: {e}"))
    }
}
