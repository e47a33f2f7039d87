//! [`ValueCodec`]: how a member seals objects before they are proposed to Raft and opens
//! them when they are read, so that some values (the controller's Secrets) are
//! encrypted in the log, the state machine, snapshots and backups. The codec (and its
//! key) is local to a member: it never travels through the log.

use serde_json::Value;

use crate::StoreError;

/// Seals objects before a write and opens them after a read. Both are called for every
/// key: an implementation leaves keys it does not own unchanged, and `open` must accept
/// values that were never sealed (written before sealing began).
pub trait ValueCodec: Send + Sync + std::fmt::Debug {
    /// The form stored for `object` at `key`.
    fn seal(&self, key: &str, object: Value) -> Result<Value, StoreError>;
    /// The object of the stored form `stored` at `key`.
    fn open(&self, key: &str, stored: Value) -> Result<Value, StoreError>;
    /// False when the objects at `key` are stored as they are (`open` would return them
    /// unchanged), so readers may use the stored JSON directly. The default is the safe
    /// answer.
    fn seals(&self, key: &str) -> bool {
        let _ = key;
        true
    }
}
