//! openraft's own storage test suite against the WAL log store and the sled state machine.

use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};
use shoal_store::{SledStateMachine, TypeConfig, WalLogStore};
use tempfile::TempDir;

struct SledBuilder;

impl StoreBuilder<TypeConfig, WalLogStore, SledStateMachine, TempDir> for SledBuilder {
    async fn build(&self) -> Result<(TempDir, WalLogStore, SledStateMachine), StorageError<u64>> {
        let dir = tempfile::Builder::new()
            .prefix("shoal-store-suite-")
            .tempdir()
            .expect("tempdir");
        let db = sled::Config::new()
            .path(dir.path().join("db"))
            .open()
            .expect("open sled");
        let log = WalLogStore::open(dir.path(), &db).expect("log");
        let sm = SledStateMachine::open(&db, 100, usize::MAX).expect("state trees");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite_passes_on_sled() {
    Suite::test_all(SledBuilder).expect("openraft storage suite");
}
