//! The Raft log, the vote, the committed index and the purge point in a write-ahead log of
//! our own ([`crate::wal`], design note 0013), with one `fdatasync` per appended group.

// openraft's trait methods return `StorageError`; helpers return it too, unboxed.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::{Entry, LogId, OptionalSend, StorageError, StorageIOError, Vote};

use crate::StoreError;
use crate::types::TypeConfig;
use crate::wal::{Record, Wal};

/// Durations of the log's flushes to disk (`fdatasync` of appended groups, truncations and
/// purges; `fsync` of votes): the
/// controller serves them as `shoal_raft_log_flush_duration_seconds`. One per process.
pub fn log_flush_histogram() -> &'static prometheus_client::metrics::histogram::Histogram {
    static H: std::sync::OnceLock<prometheus_client::metrics::histogram::Histogram> =
        std::sync::OnceLock::new();
    H.get_or_init(|| {
        // 50 µs … ~1.6 s.
        prometheus_client::metrics::histogram::Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.00005, 2.0, 16),
        )
    })
}

/// The log's directory inside a member's data dir.
pub(crate) const LOG_DIR: &str = "raft-log";
const MIGRATING_DIR: &str = "raft-log.migrating";
/// A new segment is started once the last one holds this many bytes.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// The sled trees of the log before it moved to the WAL.
const OLD_LOG: &str = "log";
const OLD_META: &str = "meta";

/// The log store over the WAL. Cloning shares it (it is also the log reader).
#[derive(Debug, Clone)]
pub struct WalLogStore {
    wal: Arc<Mutex<Wal>>,
}

fn sync_err(e: std::io::Error) -> StoreError {
    StoreError::Storage(format!("raft log: syncing: {e}"))
}

/// How a write is made durable.
#[derive(Clone, Copy)]
enum Sync {
    /// Not now (the next synced write or segment start carries it).
    Lazy,
    /// `fdatasync`: the data and the file size.
    Data,
    /// `fsync`: everything (the vote).
    All,
}

impl WalLogStore {
    /// Opens (creates) the log in `data_dir`/raft-log.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let wal = Wal::open(&data_dir.join(LOG_DIR), SEGMENT_BYTES)?;
        Ok(Self {
            wal: Arc::new(Mutex::new(wal)),
        })
    }

    /// Creates the log of a new data dir as purged up to `log_id` (a restored snapshot
    /// stands in for it).
    pub(crate) fn seed_purged(data_dir: &Path, log_id: LogId<u64>) -> Result<(), StoreError> {
        let mut wal = Wal::open(&data_dir.join(LOG_DIR), SEGMENT_BYTES)?;
        wal.write(vec![Record::Purged(log_id)])?;
        wal.sync_handle()?.sync_data().map_err(sync_err)?;
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Wal> {
        // A panic while holding the lock leaves the WAL as written; keep using it.
        self.wal.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `records`, then syncs as asked off the async threads (outside the lock, so
    /// log readers are not held up by the disk), timing the sync.
    async fn write(&self, records: Vec<Record>, sync: Sync) -> Result<(), StoreError> {
        let file = {
            let mut wal = self.lock();
            wal.write(records)?;
            match sync {
                Sync::Lazy => return Ok(()),
                Sync::Data | Sync::All => wal.sync_handle()?,
            }
        };
        let started = std::time::Instant::now();
        tokio::task::spawn_blocking(move || match sync {
            Sync::All => file.sync_all(),
            _ => file.sync_data(),
        })
        .await
        .map_err(|e| StoreError::Storage(format!("raft log: sync task: {e}")))?
        .map_err(sync_err)?;
        log_flush_histogram().observe(started.elapsed().as_secs_f64());
        Ok(())
    }
}

/// Moves the log of a data dir whose log is still in the sled trees of `db` (before the
/// WAL) into the WAL, once: the WAL is built aside, synced, renamed into place, then the
/// old trees are dropped.
pub(crate) fn migrate_log(data_dir: &Path, db: &sled::Db) -> Result<(), StoreError> {
    let names = db.tree_names();
    let has_old = |n: &str| names.iter().any(|t| t.as_ref() == n.as_bytes());
    if !data_dir.join(LOG_DIR).exists() && (has_old(OLD_LOG) || has_old(OLD_META)) {
        migrate_from_sled(data_dir, db)?;
    }
    // A crash between the rename and the drop leaves the old trees: drop them now.
    for t in [OLD_LOG, OLD_META] {
        if has_old(t) {
            db.drop_tree(t)?;
        }
    }
    Ok(())
}

/// Copies the log, vote, committed index and purge point of the sled trees of a data dir
/// from before the WAL into a new WAL at `data_dir`/raft-log (built in raft-log.migrating,
/// synced, then renamed, so a crash leaves either no WAL or a whole one).
fn migrate_from_sled(data_dir: &Path, db: &sled::Db) -> Result<(), StoreError> {
    let tmp = data_dir.join(MIGRATING_DIR);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)
            .map_err(|e| StoreError::Storage(format!("removing {}: {e}", tmp.display())))?;
    }
    let log = db.open_tree(OLD_LOG)?;
    let meta = db.open_tree(OLD_META)?;
    let old = |key: &str| -> Result<Option<sled::IVec>, StoreError> { Ok(meta.get(key)?) };
    let bad = |what: &str, e: serde_json::Error| {
        StoreError::Storage(format!(
            "migrating the raft log from {}: sled {what} does not decode: {e}",
            data_dir.display()
        ))
    };
    let mut head = Vec::new();
    if let Some(b) = old("vote")? {
        head.push(Record::Vote(
            serde_json::from_slice(&b).map_err(|e| bad("meta/vote", e))?,
        ));
    }
    if let Some(b) = old("last_purged")? {
        let p: Option<LogId<u64>> =
            serde_json::from_slice(&b).map_err(|e| bad("meta/last_purged", e))?;
        head.extend(p.map(Record::Purged));
    }
    if let Some(b) = old("committed")? {
        head.push(Record::Committed(
            serde_json::from_slice(&b).map_err(|e| bad("meta/committed", e))?,
        ));
    }
    let mut wal = Wal::open(&tmp, SEGMENT_BYTES)?;
    wal.write(head)?;
    let mut n = 0usize;
    let mut batch = Vec::new();
    for kv in log.iter() {
        let (_, v) = kv?;
        let e: Entry<TypeConfig> = serde_json::from_slice(&v).map_err(|e| bad("log entry", e))?;
        batch.push(Record::Entry(e));
        n += 1;
        if batch.len() == 1024 {
            wal.write(std::mem::take(&mut batch))?;
        }
    }
    wal.write(batch)?;
    wal.sync_handle()?.sync_all().map_err(sync_err)?;
    drop(wal);
    let dir = data_dir.join(LOG_DIR);
    std::fs::rename(&tmp, &dir).map_err(|e| {
        StoreError::Storage(format!(
            "renaming {} to {}: {e}",
            tmp.display(),
            dir.display()
        ))
    })?;
    crate::wal::sync_dir(data_dir)?;
    tracing::info!(entries = n, dir = %dir.display(), "migrated the raft log from sled to the WAL");
    Ok(())
}

fn io(e: StoreError) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl RaftLogReader<TypeConfig> for WalLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        // Copied out under the lock, decoded after it.
        let stored: Vec<crate::wal::StoredEntry> = {
            let wal = self.lock();
            let r: (Bound<&u64>, Bound<&u64>) = (range.start_bound(), range.end_bound());
            wal.state()
                .entries
                .range(r)
                .map(|(_, e)| e.clone())
                .collect()
        };
        stored
            .iter()
            .map(|e| {
                e.decode().map_err(|why| {
                    StorageIOError::read_logs(&std::io::Error::other(format!("raft log: {why}")))
                        .into()
                })
            })
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for WalLogStore {
    type LogReader = WalLogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let wal = self.lock();
        let st = wal.state();
        let last = st.entries.last_key_value().map(|(_, e)| e.log_id);
        Ok(LogState {
            last_purged_log_id: st.purged,
            last_log_id: std::cmp::max(last, st.purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        self.write(vec![Record::Vote(*vote)], Sync::All)
            .await
            .map_err(|e| StorageIOError::write_vote(&io(e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        Ok(self.lock().state().vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<u64>>,
    ) -> Result<(), StorageError<u64>> {
        // Synced lazily (with the next append): a lost committed index only costs
        // re-applying on restart.
        self.write(vec![Record::Committed(committed)], Sync::Lazy)
            .await
            .map_err(|e| StorageIOError::write(&io(e)).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        Ok(self.lock().state().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let records: Vec<Record> = entries.into_iter().map(Record::Entry).collect();
        // One fdatasync for the whole group; openraft learns of it only after.
        let res = self.write(records, Sync::Data).await.map_err(io);
        let failed = res.as_ref().err().map(StorageIOError::write_logs);
        callback.log_io_completed(res);
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.write(vec![Record::Truncate(log_id.index)], Sync::Data)
            .await
            .map_err(|e| StorageIOError::write_logs(&io(e)).into())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.write(vec![Record::Purged(log_id)], Sync::Data)
            .await
            .map_err(|e| StorageIOError::write_logs(&io(e)))?;
        self.lock()
            .delete_purged_segments()
            .map_err(|e| StorageIOError::write_logs(&io(e)))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload, RaftLogReader};

    fn id(term: u64, index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn blank(term: u64, index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: id(term, index),
            payload: EntryPayload::Blank,
        }
    }

    /// Writes a log the way the sled log store before the WAL did: JSON in trees `log`
    /// (big-endian index keys) and `meta`, including a leftover of an interrupted purge.
    fn old_sled_log(db: &sled::Db) {
        let log = db.open_tree("log").unwrap();
        for i in 3u64..=6 {
            log.insert(i.to_be_bytes(), serde_json::to_vec(&blank(2, i)).unwrap())
                .unwrap();
        }
        let meta = db.open_tree("meta").unwrap();
        meta.insert("vote", serde_json::to_vec(&Vote::new(2, 1)).unwrap())
            .unwrap();
        meta.insert("committed", serde_json::to_vec(&Some(id(2, 5))).unwrap())
            .unwrap();
        meta.insert("last_purged", serde_json::to_vec(&id(2, 3)).unwrap())
            .unwrap();
        db.flush().unwrap();
    }

    #[tokio::test]
    async fn a_sled_log_is_migrated_once_and_its_trees_dropped() {
        let dir = tempfile::Builder::new()
            .prefix("shoal-log-migrate-")
            .tempdir()
            .unwrap();
        let db = sled::open(dir.path().join("store.sled")).unwrap();
        old_sled_log(&db);
        // A crash in an earlier migration left a partial copy: it is redone.
        std::fs::create_dir_all(dir.path().join(MIGRATING_DIR)).unwrap();
        std::fs::write(dir.path().join(MIGRATING_DIR).join("junk.wal"), b"x").unwrap();
        for round in 0..2 {
            migrate_log(dir.path(), &db).unwrap();
            let mut s = WalLogStore::open(dir.path()).unwrap();
            assert_eq!(
                s.read_vote().await.unwrap(),
                Some(Vote::new(2, 1)),
                "round {round}"
            );
            assert_eq!(s.read_committed().await.unwrap(), Some(id(2, 5)));
            let st = s.get_log_state().await.unwrap();
            assert_eq!(st.last_purged_log_id, Some(id(2, 3)));
            assert_eq!(st.last_log_id, Some(id(2, 6)));
            let got: Vec<u64> = s
                .try_get_log_entries(0..100)
                .await
                .unwrap()
                .iter()
                .map(|e| e.log_id.index)
                .collect();
            assert_eq!(
                got,
                vec![4, 5, 6],
                "the purged leftover 3 is not carried over"
            );
            let names = db.tree_names();
            assert!(
                !names
                    .iter()
                    .any(|t| t.as_ref() == b"log" || t.as_ref() == b"meta")
            );
            assert!(!dir.path().join(MIGRATING_DIR).exists());
            drop(s);
        }
    }

    #[tokio::test]
    async fn vote_truncate_and_purge_persist_through_the_store() {
        let dir = tempfile::Builder::new()
            .prefix("shoal-log-store-")
            .tempdir()
            .unwrap();
        {
            let mut s = WalLogStore::open(dir.path()).unwrap();
            s.save_vote(&Vote::new(3, 2)).await.unwrap();
            s.lock()
                .write((1..=5).map(|i| Record::Entry(blank(3, i))).collect())
                .unwrap();
            s.truncate(id(3, 4)).await.unwrap();
            s.purge(id(3, 1)).await.unwrap();
        }
        let mut s = WalLogStore::open(dir.path()).unwrap();
        assert_eq!(s.read_vote().await.unwrap(), Some(Vote::new(3, 2)));
        let st = s.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id, Some(id(3, 1)));
        assert_eq!(st.last_log_id, Some(id(3, 3)));
    }
}
