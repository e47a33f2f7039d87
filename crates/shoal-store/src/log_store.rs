//! The Raft log, the vote and the committed index in sled trees (`log`, `meta`).

// openraft's trait methods return `StorageError`; helpers return it too, unboxed.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogId, StorageError, StorageIOError, Vote};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::StoreError;
use crate::types::TypeConfig;

/// Durations of the log's flushes to disk (appends and vote/purge metadata): the
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

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

/// The log store: entries keyed by big-endian index in tree `log`; vote, committed and last
/// purged log id in tree `meta`. Cloning shares the trees (it is also the log reader).
#[derive(Debug, Clone)]
pub struct SledLogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
}

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(v)
}

fn from_json<T: DeserializeOwned>(b: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(b)
}

impl SledLogStore {
    /// Opens (creates) the log trees of `db`.
    pub fn open(db: &sled::Db) -> Result<Self, StoreError> {
        let store = Self {
            db: db.clone(),
            log: db.open_tree("log")?,
            meta: db.open_tree("meta")?,
        };
        // Finish a purge that a crash interrupted (its deletions are not flushed eagerly).
        let purged: Option<LogId<u64>> = match store.meta.get(LAST_PURGED)? {
            Some(b) => {
                from_json(&b).map_err(|e| StoreError::Storage(format!("meta/last_purged: {e}")))?
            }
            None => None,
        };
        if let Some(p) = purged {
            let mut batch = sled::Batch::default();
            for kv in store.log.range(..=p.index.to_be_bytes()) {
                batch.remove(kv?.0);
            }
            store.log.apply_batch(batch)?;
        }
        Ok(store)
    }

    /// Marks the log of an empty database as purged up to `log_id` (a restored snapshot
    /// stands in for it).
    pub(crate) fn seed_purged(db: &sled::Db, log_id: LogId<u64>) -> Result<(), StoreError> {
        let meta = db.open_tree("meta")?;
        let b = to_json(&log_id)
            .map_err(|e| StoreError::Storage(format!("encoding meta/last_purged: {e}")))?;
        meta.insert(LAST_PURGED, b)?;
        Ok(())
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError<u64>> {
        let v = self.meta.get(key).map_err(|e| StorageIOError::read(&e))?;
        match v {
            None => Ok(None),
            Some(b) => Ok(Some(from_json(&b).map_err(|e| StorageIOError::read(&e))?)),
        }
    }

    async fn put_meta<T: Serialize>(&self, key: &[u8], v: &T) -> Result<(), StorageError<u64>> {
        let b = to_json(v).map_err(|e| StorageIOError::write(&e))?;
        self.meta
            .insert(key, b)
            .map_err(|e| StorageIOError::write(&e))?;
        let started = std::time::Instant::now();
        self.db
            .flush_async()
            .await
            .map_err(|e| StorageIOError::write(&e))?;
        log_flush_histogram().observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    fn last_purged(&self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        self.get_meta(LAST_PURGED)
    }
}

fn bound_key(b: Bound<&u64>) -> Bound<[u8; 8]> {
    match b {
        Bound::Included(i) => Bound::Included(i.to_be_bytes()),
        Bound::Excluded(i) => Bound::Excluded(i.to_be_bytes()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl RaftLogReader<TypeConfig> for SledLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        let r = (bound_key(range.start_bound()), bound_key(range.end_bound()));
        let floor = self.last_purged()?.map(|l| l.index);
        let mut out = Vec::new();
        for kv in self.log.range::<[u8; 8], _>(r) {
            let (_, v) = kv.map_err(|e| StorageIOError::read_logs(&e))?;
            let e: Entry<TypeConfig> = from_json(&v).map_err(|e| StorageIOError::read_logs(&e))?;
            // Skip leftovers of a purge interrupted by a crash.
            if floor.is_some_and(|f| e.get_log_id().index <= f) {
                continue;
            }
            out.push(e);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for SledLogStore {
    type LogReader = SledLogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let last_purged = self.last_purged()?;
        let last = match self.log.last().map_err(|e| StorageIOError::read_logs(&e))? {
            Some((_, v)) => {
                let e: Entry<TypeConfig> =
                    from_json(&v).map_err(|e| StorageIOError::read_logs(&e))?;
                // Deletions of a purge are not flushed: after a crash, entries at or below the
                // purge point may linger; the purge point still bounds the log from below.
                std::cmp::max(Some(*e.get_log_id()), last_purged)
            }
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        self.put_meta(VOTE, vote)
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        self.get_meta(VOTE)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<u64>>,
    ) -> Result<(), StorageError<u64>> {
        // Flushed lazily: a lost committed index only costs re-applying on restart.
        let b = to_json(&committed).map_err(|e| StorageIOError::write(&e))?;
        self.meta
            .insert(COMMITTED, b)
            .map_err(|e| StorageIOError::write(&e))?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        Ok(self.get_meta::<Option<LogId<u64>>>(COMMITTED)?.flatten())
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
        let mut batch = sled::Batch::default();
        for e in entries {
            let id = *e.get_log_id();
            let b = to_json(&e).map_err(|err| StorageIOError::write_log_entry(id, &err))?;
            batch.insert(&id.index.to_be_bytes(), b);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        let started = std::time::Instant::now();
        let res = self
            .db
            .flush_async()
            .await
            .map(|_| ())
            .map_err(std::io::Error::other);
        log_flush_histogram().observe(started.elapsed().as_secs_f64());
        let failed = res.as_ref().err().map(StorageIOError::write_logs);
        callback.log_io_completed(res);
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let mut batch = sled::Batch::default();
        for kv in self.log.range(log_id.index.to_be_bytes()..) {
            let (k, _) = kv.map_err(|e| StorageIOError::write_logs(&e))?;
            batch.remove(k);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        self.db
            .flush_async()
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        // Record the purge point first so a crash in between never loses it.
        self.put_meta(LAST_PURGED, &log_id).await?;
        let mut batch = sled::Batch::default();
        for kv in self.log.range(..=log_id.index.to_be_bytes()) {
            let (k, _) = kv.map_err(|e| StorageIOError::write_logs(&e))?;
            batch.remove(k);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }
}
