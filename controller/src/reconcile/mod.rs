//! Leader-only reconcilers: level-triggered loops (list + watch, then converge)
//! that run while this member is the Raft leader and stop when it is not.

use std::time::Duration;

use shoal_store::Store;

/// Settings of the reconcilers.
#[derive(Debug, Clone)]
pub struct ReconcileConfig {
    /// A node whose heartbeat is older than this becomes NotReady.
    pub node_timeout: Duration,
    /// Pods of a NotReady node are replaced elsewhere after this delay.
    pub eviction_delay: Duration,
}

/// Starts the reconcilers; they run whenever this member leads.
pub fn spawn(store: Store, cfg: ReconcileConfig) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _ = (store, cfg);
    })
}
