//! The write-ahead log of the Raft log, the vote, the committed index and the purge point
//! (design note 0013): numbered segment files of framed records, `[len u32 LE][crc32 u32
//! LE][kind u8, payload]`, the crc (crc32fast) over kind and payload.
//!
//! Written by hand because the log openraft needs is small (append, truncate a suffix,
//! purge a prefix, a vote) and the crates that do it measured no better than one
//! `fdatasync` per group, which this does (see the note).
//!
//! - A segment starts with the state (vote, committed, purge point) at its creation, so
//!   older segments can be deleted whole once the purge point passes their last entry.
//! - Opening replays the segments in order; a torn record at the tail of the last segment
//!   (a crash mid-write) is cut off; a bad record anywhere else is an error.
//! - Truncation (a conflicting suffix) is a record: replay drops the entries it names.
//! - Entries are encoded with [`crate::wire`] (binary; logs written before it hold JSON
//!   entries, which still read back), kept as their encoded payload and decoded when read. The payloads of the
//!   log's tail (the last [`TAIL_BYTES`] written) stay in memory, where replication and
//!   apply read them; older ones, and every one replayed at open, are read back from their
//!   segment (the page cache, in practice) and checked against their crc. A stored entry
//!   holds its segment's file open, so a segment deleted after a purge still reads.
//!
//! This type does no syncing of its own beyond segment creation: callers write, then
//! sync the handle from [`Wal::sync_handle`] (outside their lock), so readers are not held
//! up by the disk.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::{Entry, LogId, Vote};

use crate::StoreError;
use crate::types::TypeConfig;

const KIND_ENTRY: u8 = 1;
const KIND_VOTE: u8 = 2;
const KIND_COMMITTED: u8 = 3;
const KIND_PURGED: u8 = 4;
const KIND_TRUNCATE: u8 = 5;
const HEADER: usize = 8;
const SUFFIX: &str = "wal";

/// Bytes of entry payloads the log keeps in memory: the most recently written ones (with
/// group commit an entry may carry a hundred objects; at 20,000 pods the whole log held
/// ≈18 MB on every member, the largest part after the objects themselves).
pub(crate) const TAIL_BYTES: usize = 8 << 20;

/// Where an entry's frame is in its segment.
#[derive(Debug, Clone)]
struct Location {
    file: Arc<File>,
    offset: u64,
    len: u32,
}

/// A log entry as the log keeps it: its id, where it is on disk (unless it was never
/// written), and its encoded payload while it is in the log's tail.
#[derive(Debug, Clone)]
pub(crate) struct StoredEntry {
    pub(crate) log_id: LogId<u64>,
    at: Option<Location>,
    payload: Option<Box<[u8]>>,
}

impl StoredEntry {
    fn from_payload(payload: &[u8]) -> Result<StoredEntry, String> {
        let log_id = crate::wire::entry_log_id(payload).map_err(|e| format!("entry: {e}"))?;
        Ok(StoredEntry {
            log_id,
            at: None,
            payload: Some(payload.into()),
        })
    }

    /// The encoded payload: from memory, or read back from the segment.
    fn payload(&self) -> Result<std::borrow::Cow<'_, [u8]>, String> {
        use std::os::unix::fs::FileExt as _;
        if let Some(j) = &self.payload {
            return Ok(std::borrow::Cow::Borrowed(j));
        }
        let i = self.log_id.index;
        let Some(at) = &self.at else {
            return Err(format!("entry {i}: neither in memory nor on disk"));
        };
        let mut frame = vec![0u8; at.len as usize];
        at.file
            .read_exact_at(&mut frame, at.offset)
            .map_err(|e| format!("entry {i}: reading it back at offset {}: {e}", at.offset))?;
        match decode(&frame).map_err(|e| format!("entry {i}: {e}"))? {
            Decoded::Record(
                Record::Stored(StoredEntry {
                    log_id,
                    payload: Some(j),
                    ..
                }),
                _,
            ) if log_id == self.log_id => Ok(std::borrow::Cow::Owned(j.into_vec())),
            Decoded::Record(..) => Err(format!(
                "entry {i}: offset {} holds another record",
                at.offset
            )),
            Decoded::Torn(why) => Err(format!(
                "entry {i}: damaged on disk at offset {} ({why})",
                at.offset
            )),
        }
    }

    /// The entry, decoded.
    pub(crate) fn decode(&self) -> Result<Entry<TypeConfig>, String> {
        crate::wire::decode(&self.payload()?)
            .map_err(|e| format!("entry {}: {e}", self.log_id.index))
    }
}

/// One record of the log.
#[derive(Debug, Clone)]
pub(crate) enum Record {
    /// A log entry to append (an append at index i replaces everything from i on).
    Entry(Entry<TypeConfig>),
    /// A log entry as read back or kept (see [`StoredEntry`]).
    Stored(StoredEntry),
    /// The vote.
    Vote(Vote<u64>),
    /// The committed log id.
    Committed(Option<LogId<u64>>),
    /// Entries up to and including this id are purged.
    Purged(LogId<u64>),
    /// Entries from this index on are removed.
    Truncate(u64),
}

fn json_err(what: &str, e: serde_json::Error) -> StoreError {
    StoreError::Storage(format!("raft log: encoding {what}: {e}"))
}

/// Appends the framed encoding of `rec` to `buf`. Entries are binary ([`crate::wire`]);
/// the small records (vote, committed, purge point) JSON.
pub(crate) fn encode(rec: &Record, buf: &mut Vec<u8>) -> Result<(), StoreError> {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; HEADER]);
    match rec {
        Record::Entry(e) => {
            buf.push(KIND_ENTRY);
            crate::wire::encode_into(e, buf)
                .map_err(|e| StoreError::Storage(format!("raft log: encoding entry: {e}")))?;
        }
        Record::Stored(e) => {
            buf.push(KIND_ENTRY);
            buf.extend_from_slice(
                &e.payload()
                    .map_err(|e| StoreError::Storage(format!("raft log: {e}")))?,
            );
        }
        Record::Vote(v) => {
            buf.push(KIND_VOTE);
            serde_json::to_writer(&mut *buf, v).map_err(|e| json_err("vote", e))?;
        }
        Record::Committed(c) => {
            buf.push(KIND_COMMITTED);
            serde_json::to_writer(&mut *buf, c).map_err(|e| json_err("committed", e))?;
        }
        Record::Purged(p) => {
            buf.push(KIND_PURGED);
            serde_json::to_writer(&mut *buf, p).map_err(|e| json_err("purge point", e))?;
        }
        Record::Truncate(i) => {
            buf.push(KIND_TRUNCATE);
            buf.extend_from_slice(&i.to_le_bytes());
        }
    }
    let body = &buf[start + HEADER..];
    let len = u32::try_from(body.len())
        .map_err(|_| StoreError::Storage(format!("raft log: record of {} bytes", body.len())))?;
    let crc = crc32fast::hash(body);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// What decoding the start of a buffer found.
#[derive(Debug)]
pub(crate) enum Decoded {
    /// A record and its framed length.
    Record(Record, usize),
    /// Not a whole, intact record: a torn write (or corruption).
    Torn(&'static str),
}

/// Decodes the record at the start of `b`. A frame whose crc holds but whose payload does
/// not decode is an error (a bug or a foreign file), not a torn write.
pub(crate) fn decode(b: &[u8]) -> Result<Decoded, String> {
    if b.len() < HEADER {
        return Ok(Decoded::Torn("short header"));
    }
    let len = u32::from_le_bytes(b[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(b[4..8].try_into().expect("4 bytes"));
    if len == 0 {
        return Ok(Decoded::Torn("empty record"));
    }
    let Some(body) = b.get(HEADER..HEADER + len) else {
        return Ok(Decoded::Torn("short record"));
    };
    if crc32fast::hash(body) != crc {
        return Ok(Decoded::Torn("checksum mismatch"));
    }
    let p = &body[1..];
    let rec = match body[0] {
        KIND_ENTRY => Record::Stored(StoredEntry::from_payload(p)?),
        KIND_VOTE => Record::Vote(serde_json::from_slice(p).map_err(|e| format!("vote: {e}"))?),
        KIND_COMMITTED => {
            Record::Committed(serde_json::from_slice(p).map_err(|e| format!("committed: {e}"))?)
        }
        KIND_PURGED => {
            Record::Purged(serde_json::from_slice(p).map_err(|e| format!("purge point: {e}"))?)
        }
        KIND_TRUNCATE => Record::Truncate(u64::from_le_bytes(
            p.try_into()
                .map_err(|_| format!("truncate: {} payload bytes", p.len()))?,
        )),
        k => return Err(format!("unknown record kind {k}")),
    };
    Ok(Decoded::Record(rec, HEADER + len))
}

/// The state the records describe.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub entries: BTreeMap<u64, StoredEntry>,
    pub vote: Option<Vote<u64>>,
    pub committed: Option<LogId<u64>>,
    pub purged: Option<LogId<u64>>,
}

impl State {
    /// Applies one record ([`Wal::write`] turns appended entries into stored ones first;
    /// an `Entry` here is encoded on the spot).
    pub(crate) fn apply(&mut self, rec: Record) -> Result<(), StoreError> {
        match rec {
            Record::Entry(e) => {
                let payload = crate::wire::encode(&e)
                    .map_err(|e| StoreError::Storage(format!("raft log: encoding entry: {e}")))?;
                return self.apply(Record::Stored(StoredEntry {
                    log_id: e.log_id,
                    at: None,
                    payload: Some(payload.into()),
                }));
            }
            Record::Stored(e) => {
                let i = e.log_id.index;
                if self.purged.is_some_and(|p| i <= p.index) {
                    return Ok(());
                }
                self.entries.split_off(&i);
                self.entries.insert(i, e);
            }
            Record::Vote(v) => self.vote = Some(v),
            Record::Committed(c) => self.committed = c,
            Record::Purged(p) => {
                self.purged = std::cmp::max(self.purged, Some(p));
                self.entries = self.entries.split_off(&(p.index + 1));
            }
            Record::Truncate(i) => {
                self.entries.split_off(&i);
            }
        }
        Ok(())
    }

    /// The records that restore this state's vote, committed and purge point (the head of a
    /// new segment).
    fn head(&self) -> Vec<Record> {
        let mut v = Vec::new();
        if let Some(x) = self.vote {
            v.push(Record::Vote(x));
        }
        if let Some(p) = self.purged {
            v.push(Record::Purged(p));
        }
        if self.committed.is_some() {
            v.push(Record::Committed(self.committed));
        }
        v
    }
}

#[derive(Debug)]
struct Segment {
    id: u64,
    /// A read handle (entries not in memory are read through it).
    read: Arc<File>,
    /// The largest entry index ever written to it (truncated ones included).
    max_index: Option<u64>,
}

/// The log: its directory, segments, the open last segment and the state.
#[derive(Debug)]
pub(crate) struct Wal {
    dir: PathBuf,
    segment_bytes: u64,
    segments: Vec<Segment>,
    active: File,
    active_len: u64,
    state: State,
    /// Entries whose payload is in memory, oldest first, with their payload's size.
    tail: std::collections::VecDeque<(u64, usize)>,
    /// Sum of the sizes in `tail`.
    tail_bytes: usize,
    /// The most `tail_bytes` may hold ([`TAIL_BYTES`]; smaller in tests).
    tail_cap: usize,
}

fn io_err(what: impl std::fmt::Display, e: std::io::Error) -> StoreError {
    StoreError::Storage(format!("raft log: {what}: {e}"))
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.{SUFFIX}"))
}

/// Makes a directory's entries (a created or deleted file) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(format_args!("syncing directory {}", dir.display()), e))
}

impl Wal {
    /// Opens the log in `dir` (creating it), replaying its segments; a new segment is started
    /// once the last one holds `segment_bytes`.
    pub(crate) fn open(dir: &Path, segment_bytes: u64) -> Result<Wal, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| io_err(format_args!("creating {}", dir.display()), e))?;
        let mut ids = Vec::new();
        let rd =
            std::fs::read_dir(dir).map_err(|e| io_err(format_args!("{}", dir.display()), e))?;
        for ent in rd {
            let ent = ent.map_err(|e| io_err(format_args!("{}", dir.display()), e))?;
            let name = ent.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".wal")) else {
                continue;
            };
            let id: u64 = stem.parse().map_err(|_| {
                StoreError::Storage(format!(
                    "raft log: unexpected file {} in {}",
                    name.to_string_lossy(),
                    dir.display()
                ))
            })?;
            ids.push(id);
        }
        ids.sort_unstable();
        let mut state = State::default();
        let mut segments = Vec::new();
        let mut last_len = 0;
        for (n, &id) in ids.iter().enumerate() {
            let path = segment_path(dir, id);
            let bytes = std::fs::read(&path)
                .map_err(|e| io_err(format_args!("reading {}", path.display()), e))?;
            let read = Arc::new(
                File::open(&path)
                    .map_err(|e| io_err(format_args!("opening {}", path.display()), e))?,
            );
            let mut at = 0;
            let mut max_index = None;
            while at < bytes.len() {
                match decode(&bytes[at..]).map_err(|e| {
                    StoreError::Storage(format!("raft log: {} at offset {at}: {e}", path.display()))
                })? {
                    Decoded::Record(mut rec, len) => {
                        if let Record::Stored(e) = &mut rec {
                            max_index = max_index.max(Some(e.log_id.index));
                            // Replayed entries are read back from disk when needed.
                            e.payload = None;
                            e.at = Some(Location {
                                file: read.clone(),
                                offset: at as u64,
                                len: len as u32,
                            });
                        }
                        state.apply(rec)?;
                        at += len;
                    }
                    Decoded::Torn(why) if n + 1 == ids.len() => {
                        tracing::warn!(
                            segment = %path.display(), offset = at, dropped = bytes.len() - at,
                            "raft log: cutting a torn tail ({why})"
                        );
                        let f = OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .map_err(|e| io_err(format_args!("opening {}", path.display()), e))?;
                        f.set_len(at as u64)
                            .and_then(|_| f.sync_all())
                            .map_err(|e| io_err(format_args!("cutting {}", path.display()), e))?;
                        break;
                    }
                    Decoded::Torn(why) => {
                        return Err(StoreError::Storage(format!(
                            "raft log: {} is damaged at offset {at} ({why}) and is not the last segment",
                            path.display()
                        )));
                    }
                }
            }
            last_len = at as u64;
            segments.push(Segment {
                id,
                read,
                max_index,
            });
        }
        let active = match segments.last() {
            Some(s) => {
                let path = segment_path(dir, s.id);
                OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(|e| io_err(format_args!("opening {}", path.display()), e))?
            }
            None => {
                let (f, read, len) = Self::create_segment(dir, 1, &state)?;
                segments.push(Segment {
                    id: 1,
                    read,
                    max_index: None,
                });
                last_len = len;
                f
            }
        };
        Ok(Wal {
            dir: dir.to_path_buf(),
            segment_bytes,
            segments,
            active,
            active_len: last_len,
            state,
            tail: Default::default(),
            tail_bytes: 0,
            tail_cap: TAIL_BYTES,
        })
    }

    /// Creates segment `id` headed by `state`'s vote, committed and purge point, durably.
    /// Returns its append handle, a read handle and its length.
    fn create_segment(
        dir: &Path,
        id: u64,
        state: &State,
    ) -> Result<(File, Arc<File>, u64), StoreError> {
        let path = segment_path(dir, id);
        let mut f = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io_err(format_args!("creating {}", path.display()), e))?;
        let mut buf = Vec::new();
        for r in state.head() {
            encode(&r, &mut buf)?;
        }
        f.write_all(&buf)
            .and_then(|_| f.sync_all())
            .map_err(|e| io_err(format_args!("writing {}", path.display()), e))?;
        sync_dir(dir)?;
        let read =
            File::open(&path).map_err(|e| io_err(format_args!("opening {}", path.display()), e))?;
        Ok((f, Arc::new(read), buf.len() as u64))
    }

    /// The state (entries, vote, committed, purge point).
    pub(crate) fn state(&self) -> &State {
        &self.state
    }

    /// Appends `records` to the last segment (page cache only: sync [`Wal::sync_handle`]
    /// afterwards for durability) and applies them. Starts a new segment first when the
    /// last one is full.
    pub(crate) fn write(&mut self, records: Vec<Record>) -> Result<(), StoreError> {
        if self.active_len >= self.segment_bytes {
            self.roll()?;
        }
        let mut buf = Vec::new();
        let mut frames = Vec::with_capacity(records.len());
        for r in &records {
            let start = buf.len();
            encode(r, &mut buf)?;
            frames.push(start..buf.len());
        }
        if let Err(e) = self.active.write_all(&buf) {
            // A partial write would leave garbage before the next record: cut it off (the
            // next open would too, but only if it stayed the tail).
            let _ = self.active.set_len(self.active_len);
            return Err(io_err("appending", e));
        }
        let base = self.active_len;
        self.active_len += buf.len() as u64;
        let seg = self.segments.last_mut().expect("an active segment");
        for (r, frame) in records.into_iter().zip(frames) {
            // An entry is kept as the payload just written, not encoded again.
            let r = match r {
                Record::Entry(e) => {
                    let payload: Box<[u8]> = buf[frame.start + HEADER + 1..frame.end].into();
                    self.tail.push_back((e.log_id.index, payload.len()));
                    self.tail_bytes += payload.len();
                    Record::Stored(StoredEntry {
                        log_id: e.log_id,
                        at: Some(Location {
                            file: seg.read.clone(),
                            offset: base + frame.start as u64,
                            len: frame.len() as u32,
                        }),
                        payload: Some(payload),
                    })
                }
                other => other,
            };
            if let Record::Stored(e) = &r {
                seg.max_index = seg.max_index.max(Some(e.log_id.index));
            }
            self.state.apply(r)?;
        }
        self.trim_tail();
        Ok(())
    }

    /// Drops the in-memory payloads of the oldest entries beyond [`TAIL_BYTES`] (they are
    /// read back from their segment when needed).
    fn trim_tail(&mut self) {
        while self.tail_bytes > self.tail_cap {
            let Some((i, len)) = self.tail.pop_front() else {
                break;
            };
            self.tail_bytes -= len;
            // The index may have been truncated or purged since, or written again (then
            // its newer payload goes to disk early: harmless).
            if let Some(e) = self.state.entries.get_mut(&i)
                && e.at.is_some()
            {
                e.payload = None;
            }
        }
    }

    /// Bytes of entry payloads held in memory.
    #[cfg(test)]
    fn payload_bytes_in_memory(&self) -> usize {
        self.state
            .entries
            .values()
            .filter_map(|e| e.payload.as_ref().map(|j| j.len()))
            .sum()
    }

    /// A handle on the last segment to `sync_data`/`sync_all` outside the caller's lock.
    pub(crate) fn sync_handle(&self) -> Result<File, StoreError> {
        self.active
            .try_clone()
            .map_err(|e| io_err("duplicating the segment handle", e))
    }

    fn roll(&mut self) -> Result<(), StoreError> {
        self.active
            .sync_data()
            .map_err(|e| io_err("syncing the full segment", e))?;
        let id = self.segments.last().map_or(1, |s| s.id + 1);
        let (f, read, len) = Self::create_segment(&self.dir, id, &self.state)?;
        self.active = f;
        self.active_len = len;
        self.segments.push(Segment {
            id,
            read,
            max_index: None,
        });
        Ok(())
    }

    /// Deletes the segments (never the last) all of whose entries are at or below the purge
    /// point; returns how many. Their vote/committed/purge records live on in the head of
    /// every later segment.
    pub(crate) fn delete_purged_segments(&mut self) -> Result<usize, StoreError> {
        let Some(p) = self.state.purged else {
            return Ok(0);
        };
        let mut n = 0;
        while self.segments.len() > 1 && self.segments[0].max_index.is_none_or(|m| m <= p.index) {
            let path = segment_path(&self.dir, self.segments[0].id);
            std::fs::remove_file(&path)
                .map_err(|e| io_err(format_args!("deleting {}", path.display()), e))?;
            self.segments.remove(0);
            n += 1;
        }
        if n > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(n)
    }

    /// How many segment files there are.
    #[cfg(test)]
    pub(crate) fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn id(term: u64, index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn entry(term: u64, index: u64) -> Record {
        Record::Entry(Entry {
            log_id: id(term, index),
            payload: EntryPayload::Blank,
        })
    }

    fn indexes(w: &Wal) -> Vec<(u64, u64)> {
        w.state()
            .entries
            .values()
            .map(|e| (e.log_id.leader_id.term, e.log_id.index))
            .collect()
    }

    fn dir() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("shoal-wal-")
            .tempdir()
            .expect("tempdir")
    }

    #[test]
    fn only_the_tail_stays_in_memory_and_the_rest_reads_back_from_disk() {
        let d = dir();
        let mut w = Wal::open(d.path(), 4 << 10).unwrap();
        w.tail_cap = 2 << 10;
        let big = |i: u64| Entry::<TypeConfig> {
            log_id: id(1, i),
            payload: EntryPayload::Normal(crate::types::Command {
                writes: vec![crate::types::Write::Put {
                    key: format!("ConfigMap/default/c{i}"),
                    object: crate::types::Object::encode(
                        &serde_json::json!({"data": {"x": "y".repeat(300), "i": i}}),
                    )
                    .unwrap(),
                }],
                request_id: Some(format!("r{i}")),
                grouped: vec![],
            }),
        };
        let as_json = |e: &Entry<TypeConfig>| serde_json::to_value(e).unwrap();
        for i in 1..=40 {
            w.write(vec![Record::Entry(big(i))]).unwrap();
        }
        let held = w.payload_bytes_in_memory();
        assert!(held <= 2 << 10, "{held} bytes of payloads in memory");
        assert!(w.segment_count() > 2, "several segments");
        for i in 1..=40 {
            let got = w.state().entries[&i].decode().unwrap();
            assert_eq!(as_json(&got), as_json(&big(i)), "entry {i}");
        }
        // A reader holding an old entry still reads it after its segment is deleted.
        let first = w.state().entries[&1].clone();
        w.write(vec![Record::Purged(id(1, 30))]).unwrap();
        assert!(w.delete_purged_segments().unwrap() > 0);
        assert_eq!(as_json(&first.decode().unwrap()), as_json(&big(1)));
        // Reopened, nothing is in memory and everything reads back.
        drop(w);
        let w = Wal::open(d.path(), 4 << 10).unwrap();
        assert_eq!(w.payload_bytes_in_memory(), 0);
        for i in 31..=40 {
            let got = w.state().entries[&i].decode().unwrap();
            assert_eq!(as_json(&got), as_json(&big(i)), "entry {i} after reopen");
        }
    }

    #[test]
    fn an_entry_damaged_on_disk_is_an_error_naming_it() {
        use std::os::unix::fs::FileExt as _;
        let d = dir();
        let mut w = Wal::open(d.path(), 1 << 20).unwrap();
        w.write((1..=3).map(|i| entry(1, i)).collect()).unwrap();
        drop(w);
        let w = Wal::open(d.path(), 1 << 20).unwrap();
        let e = w.state().entries[&2].clone();
        let at = e.at.clone().unwrap();
        // Flip a byte of entry 2's frame after the log was opened.
        let f = OpenOptions::new()
            .write(true)
            .open(segment_path(d.path(), 1))
            .unwrap();
        f.write_all_at(b"X", at.offset + HEADER as u64 + 3).unwrap();
        let err = e.decode().unwrap_err();
        assert!(err.contains("entry 2") && err.contains("damaged"), "{err}");
    }

    #[test]
    fn appends_survive_reopen() {
        let d = dir();
        let mut w = Wal::open(d.path(), 1 << 20).unwrap();
        w.write((1..=3).map(|i| entry(1, i)).collect()).unwrap();
        w.sync_handle().unwrap().sync_data().unwrap();
        w.write(vec![Record::Committed(Some(id(1, 2)))]).unwrap();
        drop(w);
        let w = Wal::open(d.path(), 1 << 20).unwrap();
        assert_eq!(indexes(&w), vec![(1, 1), (1, 2), (1, 3)]);
        assert_eq!(w.state().committed, Some(id(1, 2)));
    }

    #[test]
    fn entries_are_kept_encoded_and_decode_as_written() {
        let d = dir();
        let cmd = crate::types::Command {
            writes: vec![crate::types::Write::Create {
                key: "Pod/default/a".into(),
                object: crate::types::Object::encode(
                    &serde_json::json!({"metadata": {"name": "a"}, "spec": {"x": [1, 2]}}),
                )
                .unwrap(),
            }],
            request_id: Some("r1".into()),
            grouped: Vec::new(),
        };
        let e = Entry {
            log_id: id(2, 1),
            payload: EntryPayload::Normal(cmd),
        };
        let mut w = Wal::open(d.path(), 1 << 20).unwrap();
        w.write(vec![Record::Entry(e.clone())]).unwrap();
        let as_json = |e: &Entry<TypeConfig>| serde_json::to_value(e).unwrap();
        let kept = w.state().entries[&1].decode().unwrap();
        assert_eq!(as_json(&kept), as_json(&e));
        drop(w);
        let w = Wal::open(d.path(), 1 << 20).unwrap();
        let read = w.state().entries[&1].decode().unwrap();
        assert_eq!(as_json(&read), as_json(&e));
    }

    #[test]
    fn a_log_with_json_entries_of_an_older_version_reads_back_and_goes_on() {
        let d = dir();
        let mut w = Wal::open(d.path(), 1 << 20).unwrap();
        w.write(vec![entry(1, 1)]).unwrap();
        drop(w);
        // Entry 2 as the log wrote it before the binary encoding: JSON, object inline.
        let json = br#"{"log_id":{"leader_id":{"term":1,"node_id":1},"index":2},"payload":{"Normal":{"writes":[{"Put":{"key":"ConfigMap/ns/a","object":{"data":{"k":"v"}}}}],"request_id":"x"}}}"#;
        let mut body = vec![KIND_ENTRY];
        body.extend_from_slice(json);
        let mut frame = Vec::new();
        frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        frame.extend_from_slice(&body);
        let mut f = OpenOptions::new()
            .append(true)
            .open(segment_path(d.path(), 1))
            .unwrap();
        f.write_all(&frame).unwrap();
        drop(f);
        let mut w = Wal::open(d.path(), 1 << 20).unwrap();
        assert_eq!(indexes(&w), vec![(1, 1), (1, 2)]);
        let EntryPayload::Normal(cmd) = w.state().entries[&2].decode().unwrap().payload else {
            panic!("entry 2 is not a normal entry")
        };
        let crate::types::Write::Put { object, .. } = &cmd.writes[0] else {
            panic!("not a put")
        };
        assert_eq!(object.as_str(), r#"{"data":{"k":"v"}}"#);
        // New entries after it are binary; all three read back after a reopen.
        w.write(vec![entry(1, 3)]).unwrap();
        drop(w);
        let w = Wal::open(d.path(), 1 << 20).unwrap();
        assert_eq!(indexes(&w), vec![(1, 1), (1, 2), (1, 3)]);
        for i in 1..=3 {
            w.state().entries[&i].decode().unwrap();
        }
    }

    #[test]
    fn vote_survives_reopen_and_segment_deletion() {
        let d = dir();
        let v = Vote::new(7, 2);
        let mut w = Wal::open(d.path(), 64).unwrap();
        w.write(vec![Record::Vote(v)]).unwrap();
        for i in 1..=10 {
            w.write(vec![entry(7, i)]).unwrap();
        }
        assert!(w.segment_count() > 3, "small segments roll");
        w.write(vec![Record::Purged(id(7, 9))]).unwrap();
        assert!(w.delete_purged_segments().unwrap() > 0);
        drop(w);
        let w = Wal::open(d.path(), 64).unwrap();
        assert_eq!(
            w.state().vote,
            Some(v),
            "the vote lives on in later segment heads"
        );
        assert_eq!(w.state().purged, Some(id(7, 9)));
        assert_eq!(indexes(&w), vec![(7, 10)]);
    }

    #[test]
    fn torn_tail_is_cut_and_writing_goes_on() {
        let d = dir();
        let mut w = Wal::open(d.path(), 1 << 20).unwrap();
        w.write(vec![entry(1, 1), entry(1, 2)]).unwrap();
        drop(w);
        // A crash in the middle of the third record.
        let seg = segment_path(d.path(), 1);
        let mut buf = Vec::new();
        encode(&entry(1, 3), &mut buf).unwrap();
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&buf[..buf.len() - 3]).unwrap();
        drop(f);
        let mut w = Wal::open(d.path(), 1 << 20).unwrap();
        assert_eq!(indexes(&w), vec![(1, 1), (1, 2)]);
        w.write(vec![entry(1, 3)]).unwrap();
        drop(w);
        let w = Wal::open(d.path(), 1 << 20).unwrap();
        assert_eq!(indexes(&w), vec![(1, 1), (1, 2), (1, 3)]);
    }

    #[test]
    fn flipped_byte_in_the_tail_is_torn_but_in_an_older_segment_is_an_error() {
        let d = dir();
        let mut w = Wal::open(d.path(), 1 << 20).unwrap();
        w.write(vec![entry(1, 1), entry(1, 2)]).unwrap();
        drop(w);
        let seg = segment_path(d.path(), 1);
        let mut bytes = std::fs::read(&seg).unwrap();
        let n = bytes.len();
        bytes[n - 2] ^= 0xff;
        std::fs::write(&seg, &bytes).unwrap();
        let mut w = Wal::open(d.path(), 1).unwrap();
        assert_eq!(indexes(&w), vec![(1, 1)]);
        // Tiny segments: this write rolls to segment 2, so segment 1 is no longer the tail.
        w.write(vec![entry(1, 2)]).unwrap();
        drop(w);
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[10] ^= 0xff;
        std::fs::write(&seg, &bytes).unwrap();
        let err = Wal::open(d.path(), 1).unwrap_err().to_string();
        assert!(
            err.contains("not the last segment") && err.contains("00000000000000000001.wal"),
            "{err}"
        );
    }

    #[test]
    fn truncate_drops_the_suffix_across_reopen() {
        let d = dir();
        let mut w = Wal::open(d.path(), 1 << 20).unwrap();
        w.write((1..=5).map(|i| entry(1, i)).collect()).unwrap();
        w.write(vec![Record::Truncate(3)]).unwrap();
        assert_eq!(indexes(&w), vec![(1, 1), (1, 2)]);
        w.write(vec![entry(2, 3)]).unwrap();
        drop(w);
        let w = Wal::open(d.path(), 1 << 20).unwrap();
        assert_eq!(indexes(&w), vec![(1, 1), (1, 2), (2, 3)]);
    }

    #[test]
    fn purge_deletes_whole_segments_only() {
        let d = dir();
        let mut w = Wal::open(d.path(), 150).unwrap();
        for i in 1..=20 {
            w.write(vec![entry(1, i)]).unwrap();
        }
        w.write(vec![Record::Purged(id(1, 12))]).unwrap();
        let before = w.segment_count();
        let deleted = w.delete_purged_segments().unwrap();
        assert!(deleted > 0 && deleted < before, "{deleted} of {before}");
        assert_eq!(w.segment_count(), before - deleted);
        assert_eq!(indexes(&w).first(), Some(&(1, 13)));
        drop(w);
        let w = Wal::open(d.path(), 150).unwrap();
        assert_eq!(indexes(&w), (13..=20).map(|i| (1, i)).collect::<Vec<_>>());
        assert_eq!(w.state().purged, Some(id(1, 12)));
    }

    #[test]
    fn unknown_file_names_are_refused() {
        let d = dir();
        std::fs::write(d.path().join("x.wal"), b"").unwrap();
        let err = Wal::open(d.path(), 1 << 20).unwrap_err().to_string();
        assert!(err.contains("unexpected file x.wal"), "{err}");
    }
}
