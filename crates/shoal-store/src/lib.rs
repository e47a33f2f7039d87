//! Replicated, persistent object store: openraft drives the log, a write-ahead log of
//! our own holds the log and the vote, the state machine lives in memory with its snapshot
//! in a file; revisions and watch. Must never depend on
//! shoal-api (objects are JSON values here).
#![warn(missing_docs)]

mod backup;
mod codec;
mod error;
mod group;
mod legacy;
pub mod liveness;
mod log_store;
mod membership;
mod network;
mod reads;
mod snapshot_file;
mod state_machine;
mod store;
pub mod testing;
mod types;
mod wal;
mod watch;
mod wire;

pub use backup::{BACKUP_FORMAT, BACKUP_MAGIC, Backup};
pub use codec::ValueCodec;
pub use error::StoreError;
pub use group::entry_requests_histogram;
pub use log_store::{WalLogStore, log_flush_histogram};
pub use network::{MAX_COMMAND_BYTES, MAX_MESSAGE_BYTES, NetworkFactory, RaftGrpc, RaftPeer};
pub use reads::{lease_read_counter, read_counters};
pub use state_machine::{DEDUP_WINDOW, MemStateMachine};
pub use store::{Store, StoreConfig};
pub use types::{
    ApplyResult, ClusterStatus, Command, Consistency, EventType, MemberStatus, Object, StoreRaft,
    TypeConfig, WatchEvent, Write, WriteOutcome,
};
pub use watch::{PendingEvent, PendingStream, Trigger, WatchStream};
