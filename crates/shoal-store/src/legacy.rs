//! Data dirs from before the write-ahead log and the in-memory state machine kept
//! everything in a sled database, `DATA_DIR/store.sled`. [`migrate`] moves such a dir to
//! today's layout once, on open: the log into the WAL ([`crate::log_store::migrate_log`]),
//! the state into the snapshot file, then `store.sled` is renamed `store.sled.migrated`
//! (kept for the operator to delete; nothing reads it again). Each step is durable before
//! the next starts, so a crash in between redoes only what is missing.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::StoreError;
use crate::snapshot_file::{self, Meta};
use crate::state_machine::{self, Membership, RequestRecord, State};
use crate::wal::sync_dir;

/// The sled database of an older data dir.
pub(crate) const SLED_DIR: &str = "store.sled";
/// Where it goes once migrated.
pub(crate) const MIGRATED_DIR: &str = "store.sled.migrated";

/// sled's page cache while migrating (its default is 1 GiB).
const CACHE_BYTES: u64 = 64 << 20;

fn open_db(path: &Path) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_BYTES)
            .open()
        {
            Ok(db) => return Ok(db),
            // A previous instance in this process may still be releasing the file lock.
            Err(sled::Error::Io(e))
                if (e.kind() == std::io::ErrorKind::WouldBlock
                    || e.to_string().contains("lock"))
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                return Err(StoreError::Storage(format!(
                    "opening {}: {e}",
                    path.display()
                )));
            }
        }
    }
}

/// Migrates `data_dir` if it still has a `store.sled` (see the module docs).
pub(crate) fn migrate(data_dir: &Path) -> Result<(), StoreError> {
    let path = data_dir.join(SLED_DIR);
    if !path.exists() {
        return Ok(());
    }
    let db = open_db(&path)?;
    crate::log_store::migrate_log(data_dir, &db)?;
    if !snapshot_file::path(data_dir).exists() {
        migrate_state(data_dir, &db)?;
    }
    drop(db);
    let dest = data_dir.join(MIGRATED_DIR);
    let moved = (|| {
        if dest.exists() {
            std::fs::remove_dir_all(&dest)?;
        }
        std::fs::rename(&path, &dest)
    })();
    moved.map_err(|e| {
        StoreError::Storage(format!(
            "renaming {} to {}: {e}",
            path.display(),
            dest.display()
        ))
    })?;
    sync_dir(data_dir)?;
    tracing::info!(dir = %data_dir.display(), "migrated the state from sled to the snapshot file");
    Ok(())
}

/// A request record as the sled tree `requests` held it.
#[derive(Deserialize)]
struct OldRecord {
    index: u64,
    result: Box<RawValue>,
}

/// Writes the state in the sled trees `state`, `sm_meta` and `requests` as the snapshot
/// file; a Raft snapshot stored in `sm_meta` that is newer than the trees (an install that a
/// crash interrupted) is written instead.
fn migrate_state(data_dir: &Path, db: &sled::Db) -> Result<(), StoreError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        StoreError::Storage(format!("migrating the state from sled: {what}: {e}"))
    };
    let sm_meta = db.open_tree("sm_meta")?;
    let last_applied: Option<openraft::LogId<u64>> = match sm_meta.get(b"last_applied")? {
        Some(b) => serde_json::from_slice(&b).map_err(|e| bad("sm_meta/last_applied", &e))?,
        None => None,
    };
    let membership: Membership = match sm_meta.get(b"membership")? {
        Some(b) => serde_json::from_slice(&b).map_err(|e| bad("sm_meta/membership", &e))?,
        None => Membership::default(),
    };
    if let (Some(m), Some(d)) = (
        sm_meta.get(b"snapshot_meta")?,
        sm_meta.get(b"snapshot_data")?,
    ) {
        let meta: Meta =
            serde_json::from_slice(&m).map_err(|e| bad("sm_meta/snapshot_meta", &e))?;
        if meta.last_log_id > last_applied {
            return snapshot_file::write(data_dir, &meta, &d);
        }
    }
    let mut objects = BTreeMap::new();
    for kv in db.open_tree("state")?.iter() {
        let (k, v) = kv?;
        let key = String::from_utf8_lossy(&k).into_owned();
        let json = String::from_utf8(v.to_vec()).map_err(|e| bad(&format!("state/{key}"), &e))?;
        objects.insert(key, Arc::from(json));
    }
    let mut requests = Vec::new();
    for kv in db.open_tree("requests")?.iter() {
        let (k, v) = kv?;
        let id = String::from_utf8_lossy(&k).into_owned();
        let r: OldRecord =
            serde_json::from_slice(&v).map_err(|e| bad(&format!("requests/{id}"), &e))?;
        let result = Arc::from(Box::<str>::from(r.result));
        requests.push((
            id,
            RequestRecord {
                index: r.index,
                result,
            },
        ));
    }
    let index = last_applied.map_or(0, |l| l.index);
    let state = State::from_parts(objects, requests, last_applied, membership);
    state_machine::persist_state(data_dir, &state, format!("migrated-{index}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_machine::MemStateMachine;
    use openraft::{CommittedLeaderId, LogId};

    /// A data dir as the sled store before this change left it: objects in `state`,
    /// applied state in `sm_meta`, a remembered request, and the log in `log`/`meta`.
    fn old_data_dir(dir: &Path) {
        let db = sled::open(dir.join(SLED_DIR)).expect("sled");
        let id = |i| LogId::new(CommittedLeaderId::new(2, 1), i);
        let state = db.open_tree("state").expect("tree");
        state
            .insert(
                "ConfigMap/default/a",
                br#"{"metadata":{"name":"a","resourceVersion":"4"}}"#.as_slice(),
            )
            .expect("insert");
        let meta = db.open_tree("sm_meta").expect("tree");
        meta.insert(
            "last_applied",
            serde_json::to_vec(&Some(id(5))).expect("json"),
        )
        .expect("insert");
        let requests = db.open_tree("requests").expect("tree");
        requests
            .insert("req-1", br#"{"index":4,"result":{"Ok":[]}}"#.as_slice())
            .expect("insert");
        let log = db.open_tree("log").expect("tree");
        let e: openraft::Entry<crate::types::TypeConfig> = openraft::Entry {
            log_id: id(6),
            payload: openraft::EntryPayload::Blank,
        };
        log.insert(6u64.to_be_bytes(), serde_json::to_vec(&e).expect("json"))
            .expect("insert");
        db.flush().expect("flush");
    }

    #[test]
    fn an_old_sled_data_dir_is_migrated_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        old_data_dir(dir.path());
        migrate(dir.path()).expect("migrate");
        assert!(!dir.path().join(SLED_DIR).exists());
        assert!(dir.path().join(MIGRATED_DIR).exists());
        assert!(dir.path().join(crate::log_store::LOG_DIR).exists());
        // Nothing left to do the second time.
        migrate(dir.path()).expect("again");
        let sm = MemStateMachine::open(dir.path(), 10, usize::MAX).expect("open");
        assert_eq!(sm.last_applied_index(), 5);
        let (items, rev) = sm.list("ConfigMap/").expect("list");
        assert_eq!(rev, 5);
        assert_eq!(items[0]["metadata"]["name"], "a");
        let (meta, data) = snapshot_file::read(dir.path())
            .expect("read")
            .expect("some");
        assert_eq!(meta.snapshot_id, "migrated-5");
        assert!(String::from_utf8_lossy(&data).contains("req-1"));
    }
}
