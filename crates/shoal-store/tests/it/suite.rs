//! openraft's own storage test suite against the WAL log store and the in-memory state machine.

use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};
use shoal_store::{MemStateMachine, TypeConfig, WalLogStore};
use tempfile::TempDir;

struct MemBuilder;

impl StoreBuilder<TypeConfig, WalLogStore, MemStateMachine, TempDir> for MemBuilder {
    async fn build(&self) -> Result<(TempDir, WalLogStore, MemStateMachine), StorageError<u64>> {
        let dir = tempfile::Builder::new()
            .prefix("shoal-store-suite-")
            .tempdir()
            .expect("tempdir");
        let log = WalLogStore::open(dir.path()).expect("log");
        let sm = MemStateMachine::open(dir.path(), 100, usize::MAX).expect("state machine");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite_passes() {
    Suite::test_all(MemBuilder).expect("openraft storage suite");
}
