//! The replicated state machine: objects in sled tree `state`, last applied log id, membership
//! and the current snapshot in tree `sm_meta`; applied changes go to the watch hub.

// openraft's trait methods return `StorageError`; helpers return it too, unboxed.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::StoreError;
use crate::backup::Backup;
use crate::types::{ApplyResult, Command, EventType, TypeConfig, Write, WriteOutcome};
use crate::watch::{SharedEvent, WatchHub, WatchStream};

const LAST_APPLIED: &[u8] = b"last_applied";
const MEMBERSHIP: &[u8] = b"membership";
const SNAPSHOT_META: &[u8] = b"snapshot_meta";
const SNAPSHOT_DATA: &[u8] = b"snapshot_data";

/// How many log indexes a request id is remembered for deduplication.
pub const DEDUP_WINDOW: u64 = 20_000;

/// A remembered request: where it was applied and what it returned.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RequestRecord {
    index: u64,
    result: ApplyResult,
}

pub(crate) type Membership = StoredMembership<u64, BasicNode>;
type StoredSnapshot = (SnapshotMeta<u64, BasicNode>, Vec<u8>);

/// The serialized form of a snapshot. Objects and request records stay raw JSON (as the
/// trees store them): a snapshot is built, sent and installed without parsing every object
/// into a `Value` tree, which took ten times the snapshot's size in memory.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotBody {
    last_applied: Option<LogId<u64>>,
    membership: Membership,
    objects: Vec<(String, Box<RawValue>)>,
    /// Remembered request ids (see [`DEDUP_WINDOW`]), each a [`RequestRecord`].
    #[serde(default)]
    requests: Vec<(String, Box<RawValue>)>,
}

/// The part of a raw [`RequestRecord`] its index needs.
#[derive(Deserialize)]
struct RecordIndex {
    index: u64,
}

fn raw(b: &[u8]) -> Result<Box<RawValue>, serde_json::Error> {
    serde_json::from_slice(b)
}

#[derive(Debug)]
struct Applied {
    last_applied: Option<LogId<u64>>,
    membership: Membership,
}

#[derive(Debug)]
struct Shared {
    db: sled::Db,
    state: sled::Tree,
    sm_meta: sled::Tree,
    /// request id -> [`RequestRecord`].
    requests: sled::Tree,
    /// big-endian index -> request id, for evicting old records in order.
    request_index: sled::Tree,
    /// Held for writing while applying or installing, for reading while listing: a list sees
    /// one revision exactly.
    applied: RwLock<Applied>,
    hub: Mutex<WatchHub>,
}

/// The state machine handle; clones share the state (it is also the snapshot builder).
#[derive(Debug, Clone)]
pub struct SledStateMachine {
    shared: Arc<Shared>,
}

fn sm_err(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::write_state_machine(&std::io::Error::other(e.to_string())).into()
}

fn read_err(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::read_state_machine(&std::io::Error::other(e.to_string())).into()
}

fn lock_poisoned() -> StorageError<u64> {
    sm_err("state machine lock poisoned")
}

/// The revision stored in an object's `metadata.resourceVersion`.
pub(crate) fn revision_of(obj: &Value) -> u64 {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn metadata_mut(obj: &mut Value) -> Option<&mut serde_json::Map<String, Value>> {
    let map = obj.as_object_mut()?;
    let md = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()));
    if !md.is_object() {
        *md = Value::Object(Default::default());
    }
    md.as_object_mut()
}

/// Stamps server-owned metadata on `obj` written at `index` over `prev`.
fn stamp(mut obj: Value, index: u64, prev: Option<&Value>) -> Value {
    let spec_changed = prev.is_none_or(|p| p.get("spec") != obj.get("spec"));
    let Some(md) = metadata_mut(&mut obj) else {
        return obj;
    };
    md.insert("resourceVersion".into(), Value::String(index.to_string()));
    match prev {
        Some(p) => {
            for f in ["uid", "creationTimestamp"] {
                match p.pointer(&format!("/metadata/{f}")) {
                    Some(v) => md.insert(f.into(), v.clone()),
                    None => md.remove(f),
                };
            }
            let g = p
                .pointer("/metadata/generation")
                .and_then(Value::as_u64)
                .unwrap_or(1);
            md.insert(
                "generation".into(),
                Value::from(if spec_changed { g + 1 } else { g }),
            );
        }
        None => {
            md.insert("generation".into(), Value::from(1u64));
        }
    }
    obj
}

impl SledStateMachine {
    /// Opens the state trees of `db`; `watch_history` bounds the resumable event history.
    pub fn open(
        db: &sled::Db,
        watch_history: usize,
        watch_history_bytes: usize,
    ) -> Result<Self, StoreError> {
        let state = db.open_tree("state")?;
        let sm_meta = db.open_tree("sm_meta")?;
        let requests = db.open_tree("requests")?;
        let request_index = db.open_tree("request_index")?;
        let get = |k: &[u8]| -> Result<Option<sled::IVec>, StoreError> { Ok(sm_meta.get(k)?) };
        let decode = |what: &str, b: &[u8]| -> Result<_, StoreError> {
            serde_json::from_slice::<Value>(b)
                .map_err(|e| StoreError::Storage(format!("sm_meta/{what}: {e}")))
        };
        let last_applied: Option<LogId<u64>> = match get(LAST_APPLIED)? {
            Some(b) => serde_json::from_value(decode("last_applied", &b)?)
                .map_err(|e| StoreError::Storage(format!("sm_meta/last_applied: {e}")))?,
            None => None,
        };
        let membership: Membership = match get(MEMBERSHIP)? {
            Some(b) => serde_json::from_value(decode("membership", &b)?)
                .map_err(|e| StoreError::Storage(format!("sm_meta/membership: {e}")))?,
            None => Membership::default(),
        };
        let sm = Self {
            shared: Arc::new(Shared {
                db: db.clone(),
                state,
                sm_meta,
                requests,
                request_index,
                applied: RwLock::new(Applied {
                    last_applied,
                    membership: membership.clone(),
                }),
                hub: Mutex::new(WatchHub::new(
                    watch_history,
                    watch_history_bytes,
                    last_applied.map_or(0, |l| l.index),
                )),
            }),
        };
        // A crash in the middle of installing a snapshot: redo the install from the stored copy.
        if let Some((meta, data)) = sm
            .stored_snapshot()
            .map_err(|e| StoreError::Storage(e.to_string()))?
            && meta.last_log_id > last_applied
        {
            let body: SnapshotBody = serde_json::from_slice(&data)
                .map_err(|e| StoreError::Storage(format!("sm_meta/snapshot_data: {e}")))?;
            let body = SnapshotBody {
                last_applied: meta.last_log_id,
                membership: meta.last_membership,
                objects: body.objects,
                requests: body.requests,
            };
            sm.replace_state(&body)
                .map_err(|e| StoreError::Storage(e.to_string()))?;
            let mut a = sm
                .shared
                .applied
                .write()
                .map_err(|_| StoreError::Storage("lock poisoned".into()))?;
            *a = Applied {
                last_applied: body.last_applied,
                membership: body.membership,
            };
            drop(a);
            sm.hub()?.reset(body.last_applied.map_or(0, |l| l.index));
        }
        Ok(sm)
    }

    fn hub(&self) -> Result<std::sync::MutexGuard<'_, WatchHub>, StoreError> {
        self.shared
            .hub
            .lock()
            .map_err(|_| StoreError::Storage("watch hub lock poisoned".into()))
    }

    /// Watch streams of this member that are still open.
    pub fn watchers(&self) -> usize {
        self.hub().map(|h| h.watchers()).unwrap_or(0)
    }

    /// The keys under `prefix` (values are not read).
    pub fn keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for k in self.shared.state.scan_prefix(prefix.as_bytes()).keys() {
            out.push(String::from_utf8_lossy(&k?).into_owned());
        }
        Ok(out)
    }

    /// Bytes of events the watch history holds now.
    pub fn watch_history_bytes(&self) -> usize {
        self.hub().map(|h| h.history_bytes()).unwrap_or(0)
    }

    /// The index of the last applied entry (0 before any).
    pub fn last_applied_index(&self) -> u64 {
        self.shared
            .applied
            .read()
            .map(|a| a.last_applied.map_or(0, |l| l.index))
            .unwrap_or(0)
    }

    /// Reads one object.
    pub fn get(&self, key: &str) -> Result<Option<Value>, StoreError> {
        let _a = self
            .shared
            .applied
            .read()
            .map_err(|_| StoreError::Storage("lock poisoned".into()))?;
        match self.shared.state.get(key.as_bytes())? {
            None => Ok(None),
            Some(b) => {
                Ok(Some(serde_json::from_slice(&b).map_err(|e| {
                    StoreError::Storage(format!("state/{key}: {e}"))
                })?))
            }
        }
    }

    /// Lists every object whose key starts with `prefix`, with the revision the list reflects.
    pub fn list(&self, prefix: &str) -> Result<(Vec<Value>, u64), StoreError> {
        let (items, rev) = self.list_keyed(prefix)?;
        Ok((items.into_iter().map(|(_, v)| v).collect(), rev))
    }

    /// Like [`SledStateMachine::list`], with each object's key.
    pub fn list_keyed(&self, prefix: &str) -> Result<(Vec<(String, Value)>, u64), StoreError> {
        let a = self
            .shared
            .applied
            .read()
            .map_err(|_| StoreError::Storage("lock poisoned".into()))?;
        let mut out = Vec::new();
        for kv in self.shared.state.scan_prefix(prefix.as_bytes()) {
            let (k, v) = kv?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let value = serde_json::from_slice(&v)
                .map_err(|e| StoreError::Storage(format!("state/{key}: {e}")))?;
            out.push((key, value));
        }
        Ok((out, a.last_applied.map_or(0, |l| l.index)))
    }

    /// Starts a watch (see [`crate::Store::watch`]).
    pub fn watch(&self, prefix: &str, after: Option<u64>) -> Result<WatchStream, StoreError> {
        // Taking the read lock first orders this against apply (which holds the write lock
        // while publishing), so `current` is exact.
        let a = self
            .shared
            .applied
            .read()
            .map_err(|_| StoreError::Storage("lock poisoned".into()))?;
        let current = a.last_applied.map_or(0, |l| l.index);
        let mut hub = self.hub()?;
        hub.subscribe(prefix, after, current)
    }

    /// Every object and the revision the copy reflects, read under the apply lock (one
    /// consistent cut).
    pub fn export(&self) -> Result<Backup, StoreError> {
        let a = self
            .shared
            .applied
            .read()
            .map_err(|_| StoreError::Storage("lock poisoned".into()))?;
        let mut objects = Vec::new();
        for kv in self.shared.state.iter() {
            let (k, v) = kv?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let obj = serde_json::from_slice(&v)
                .map_err(|e| StoreError::Storage(format!("state/{key}: {e}")))?;
            objects.push((key, obj));
        }
        Ok(Backup {
            revision: a.last_applied.map_or(0, |l| l.index),
            objects,
        })
    }

    /// Stores `backup` as this (empty) database's current Raft snapshot at `log_id` with
    /// `membership`; [`SledStateMachine::open`] then installs it like a snapshot whose
    /// install was interrupted, so a restore goes through the tested install path.
    pub(crate) fn seed(
        db: &sled::Db,
        backup: &Backup,
        log_id: LogId<u64>,
        membership: Membership,
    ) -> Result<(), StoreError> {
        let sm_meta = db.open_tree("sm_meta")?;
        let mut objects = Vec::with_capacity(backup.objects.len());
        for (k, v) in &backup.objects {
            let v = serde_json::value::to_raw_value(v)
                .map_err(|e| StoreError::Storage(format!("encoding restored {k}: {e}")))?;
            objects.push((k.clone(), v));
        }
        let body = SnapshotBody {
            last_applied: Some(log_id),
            membership: membership.clone(),
            objects,
            requests: Vec::new(),
        };
        let meta = SnapshotMeta {
            last_log_id: Some(log_id),
            last_membership: membership,
            snapshot_id: format!("restored-{}", log_id.index),
        };
        let enc = |what: &str, r: serde_json::Result<Vec<u8>>| {
            r.map_err(|e| StoreError::Storage(format!("encoding restored {what}: {e}")))
        };
        let mut batch = sled::Batch::default();
        batch.insert(
            SNAPSHOT_META,
            enc("snapshot meta", serde_json::to_vec(&meta))?,
        );
        batch.insert(SNAPSHOT_DATA, enc("snapshot", serde_json::to_vec(&body))?);
        sm_meta.apply_batch(batch)?;
        Ok(())
    }

    fn stored_snapshot(&self) -> Result<Option<StoredSnapshot>, StorageError<u64>> {
        let m = self.shared.sm_meta.get(SNAPSHOT_META).map_err(read_err)?;
        let d = self.shared.sm_meta.get(SNAPSHOT_DATA).map_err(read_err)?;
        match (m, d) {
            (Some(m), Some(d)) => {
                let meta = serde_json::from_slice(&m).map_err(read_err)?;
                Ok(Some((meta, d.to_vec())))
            }
            _ => Ok(None),
        }
    }

    /// Replaces every object and the applied state with a snapshot body (atomically in sled).
    fn replace_state(&self, body: &SnapshotBody) -> Result<(), StorageError<u64>> {
        let encoded: Vec<(&str, &[u8])> = body
            .objects
            .iter()
            .map(|(k, v)| (k.as_str(), v.get().as_bytes()))
            .collect();
        let la = serde_json::to_vec(&body.last_applied).map_err(sm_err)?;
        let mem = serde_json::to_vec(&body.membership).map_err(sm_err)?;
        let mut reqs = Vec::with_capacity(body.requests.len());
        for (id, rec) in &body.requests {
            let RecordIndex { index } = serde_json::from_str(rec.get()).map_err(sm_err)?;
            reqs.push((id.as_str(), index, rec.get().as_bytes()));
        }
        self.shared.requests.clear().map_err(sm_err)?;
        self.shared.request_index.clear().map_err(sm_err)?;
        for (id, index, rec) in reqs {
            self.shared
                .requests
                .insert(id.as_bytes(), rec)
                .map_err(sm_err)?;
            self.shared
                .request_index
                .insert(index.to_be_bytes(), id.as_bytes())
                .map_err(sm_err)?;
        }
        let old_keys: Vec<sled::IVec> = self
            .shared
            .state
            .iter()
            .keys()
            .collect::<Result<_, _>>()
            .map_err(sm_err)?;
        use sled::Transactional;
        (&self.shared.state, &self.shared.sm_meta)
            .transaction(|(s, m)| {
                for k in &old_keys {
                    s.remove(k)?;
                }
                for (k, v) in &encoded {
                    s.insert(k.as_bytes(), *v)?;
                }
                m.insert(LAST_APPLIED, la.as_slice())?;
                m.insert(MEMBERSHIP, mem.as_slice())?;
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| sm_err(format!("{e:?}")))?;
        Ok(())
    }

    /// Applies one command against `overlay` (pending writes of this apply call) and the tree.
    fn apply_command(
        &self,
        overlay: &mut BTreeMap<String, Option<Value>>,
        index: u64,
        cmd: Command,
        events: &mut Vec<SharedEvent>,
        requests: &mut BTreeMap<String, RequestRecord>,
    ) -> Result<ApplyResult, StorageError<u64>> {
        if let Some(id) = &cmd.request_id {
            if let Some(rec) = requests.get(id) {
                return Ok(rec.result.clone());
            }
            if let Some(b) = self.shared.requests.get(id.as_bytes()).map_err(read_err)? {
                let rec: RequestRecord = serde_json::from_slice(&b).map_err(read_err)?;
                if index.saturating_sub(rec.index) <= DEDUP_WINDOW {
                    return Ok(rec.result);
                }
            }
        }
        let request_id = cmd.request_id.clone();
        let result = self.apply_writes(overlay, index, cmd, events)?;
        if let Some(id) = request_id {
            requests.insert(
                id,
                RequestRecord {
                    index,
                    result: result.clone(),
                },
            );
        }
        Ok(result)
    }

    /// Applies the writes of one command, all or nothing.
    fn apply_writes(
        &self,
        overlay: &mut BTreeMap<String, Option<Value>>,
        index: u64,
        cmd: Command,
        events: &mut Vec<SharedEvent>,
    ) -> Result<ApplyResult, StorageError<u64>> {
        let mut local: BTreeMap<String, Option<Value>> = BTreeMap::new();
        let mut outcomes = Vec::with_capacity(cmd.writes.len());
        let mut evs = Vec::with_capacity(cmd.writes.len());
        for w in cmd.writes {
            let key = w.key().to_owned();
            let current: Option<Value> = match local.get(&key).or_else(|| overlay.get(&key)) {
                Some(v) => v.clone(),
                None => match self.shared.state.get(key.as_bytes()).map_err(read_err)? {
                    Some(b) => Some(serde_json::from_slice(&b).map_err(read_err)?),
                    None => None,
                },
            };
            let check = |expected: Option<u64>, cur: &Value| -> Result<(), StoreError> {
                match expected {
                    Some(e) if e != revision_of(cur) => Err(StoreError::Conflict {
                        key: key.clone(),
                        expected: e,
                        actual: revision_of(cur),
                    }),
                    _ => Ok(()),
                }
            };
            if let Write::Check {
                expected_revision, ..
            } = &w
            {
                // A precondition only: no change, no event, no outcome.
                let res = match &current {
                    None => Err(StoreError::NotFound { key: key.clone() }),
                    Some(cur) => check(*expected_revision, cur),
                };
                if let Err(e) = res {
                    return Ok(Err(e));
                }
                continue;
            }
            // The old version travels with a Modified event (selector watches need it).
            let prev = match (&w, &current) {
                (Write::Update { .. } | Write::Put { .. } | Write::Bind { .. }, Some(c)) => {
                    Some(serde_json::to_vec(c).map_err(sm_err)?)
                }
                _ => None,
            };
            let res: Result<(Option<Value>, WriteOutcome, EventType), StoreError> =
                match (w, current) {
                    (Write::Create { .. }, Some(_)) => {
                        Err(StoreError::AlreadyExists { key: key.clone() })
                    }
                    (Write::Create { object, .. }, None) | (Write::Put { object, .. }, None) => {
                        let obj = stamp(object, index, None);
                        Ok((
                            Some(obj.clone()),
                            outcome(&key, index, obj, true),
                            EventType::Added,
                        ))
                    }
                    (Write::Update { .. }, None)
                    | (Write::Delete { .. }, None)
                    | (Write::Bind { .. }, None)
                    | (Write::Check { .. }, _) => Err(StoreError::NotFound { key: key.clone() }),
                    (
                        Write::Update {
                            object,
                            expected_revision,
                            ..
                        },
                        Some(cur),
                    ) => check(expected_revision, &cur).map(|()| {
                        let obj = stamp(object, index, Some(&cur));
                        (
                            Some(obj.clone()),
                            outcome(&key, index, obj, false),
                            EventType::Modified,
                        )
                    }),
                    (
                        Write::Bind {
                            node_name,
                            expected_revision,
                            condition,
                            ..
                        },
                        Some(cur),
                    ) => check(expected_revision, &cur)
                        .and_then(|()| bind(&key, &cur, &node_name, condition))
                        .map(|obj| {
                            let obj = stamp(obj, index, Some(&cur));
                            (
                                Some(obj.clone()),
                                outcome(&key, index, obj, false),
                                EventType::Modified,
                            )
                        }),
                    (Write::Put { object, .. }, Some(cur)) => {
                        let obj = stamp(object, index, Some(&cur));
                        Ok((
                            Some(obj.clone()),
                            outcome(&key, index, obj, false),
                            EventType::Modified,
                        ))
                    }
                    (
                        Write::Delete {
                            expected_revision, ..
                        },
                        Some(mut cur),
                    ) => check(expected_revision, &cur).map(|()| {
                        if let Some(md) = metadata_mut(&mut cur) {
                            md.insert("resourceVersion".into(), Value::String(index.to_string()));
                        }
                        (None, outcome(&key, index, cur, false), EventType::Deleted)
                    }),
                };
            match res {
                Err(e) => return Ok(Err(e)),
                Ok((new, out, et)) => {
                    evs.push(SharedEvent::new(
                        index,
                        et,
                        key.clone(),
                        serde_json::to_vec(&out.object).map_err(sm_err)?,
                        prev,
                    ));
                    local.insert(key, new);
                    outcomes.push(out);
                }
            }
        }
        overlay.extend(local);
        events.extend(evs);
        Ok(Ok(outcomes))
    }
}

/// The pod `cur` bound to `node` with `condition` set (see [`Write::Bind`]).
fn bind(key: &str, cur: &Value, node: &str, mut condition: Value) -> Result<Value, StoreError> {
    let bound = cur
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty());
    if let Some(b) = bound
        && b != node
    {
        return Err(StoreError::AlreadyBound {
            key: key.to_owned(),
            node: b.to_owned(),
        });
    }
    let mut obj = cur.clone();
    let Some(map) = obj.as_object_mut() else {
        return Err(StoreError::Invalid(format!("bind of {key}: not an object")));
    };
    let spec = map
        .entry("spec")
        .or_insert_with(|| Value::Object(Default::default()));
    let Some(spec) = spec.as_object_mut() else {
        return Err(StoreError::Invalid(format!(
            "bind of {key}: spec is not an object"
        )));
    };
    spec.insert("nodeName".into(), Value::String(node.to_owned()));
    let status = map
        .entry("status")
        .or_insert_with(|| Value::Object(Default::default()));
    if !status.is_object() {
        *status = Value::Object(Default::default());
    }
    let conditions = status
        .as_object_mut()
        .map(|s| {
            s.entry("conditions")
                .or_insert_with(|| Value::Array(Vec::new()))
        })
        .filter(|c| c.is_array());
    let Some(Value::Array(conditions)) = conditions else {
        return Err(StoreError::Invalid(format!(
            "bind of {key}: status.conditions is not a list"
        )));
    };
    let type_ = condition.get("type").cloned();
    match conditions
        .iter_mut()
        .find(|c| c.get("type") == type_.as_ref())
    {
        Some(old) => {
            // Same status: the transition time stays the one of the last transition.
            if old.get("status") == condition.get("status")
                && let (Some(t), Some(c)) =
                    (old.get("lastTransitionTime"), condition.as_object_mut())
            {
                c.insert("lastTransitionTime".into(), t.clone());
            }
            *old = condition;
        }
        None => conditions.push(condition),
    }
    Ok(obj)
}

fn outcome(key: &str, revision: u64, object: Value, created: bool) -> WriteOutcome {
    WriteOutcome {
        key: key.to_owned(),
        revision,
        object,
        created,
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SledStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let body = {
            let a = self.shared.applied.read().map_err(|_| lock_poisoned())?;
            let mut objects = Vec::new();
            for kv in self.shared.state.iter() {
                let (k, v) = kv.map_err(read_err)?;
                objects.push((
                    String::from_utf8_lossy(&k).into_owned(),
                    raw(&v).map_err(read_err)?,
                ));
            }
            let mut requests = Vec::new();
            for kv in self.shared.requests.iter() {
                let (k, v) = kv.map_err(read_err)?;
                requests.push((
                    String::from_utf8_lossy(&k).into_owned(),
                    raw(&v).map_err(read_err)?,
                ));
            }
            SnapshotBody {
                last_applied: a.last_applied,
                membership: a.membership.clone(),
                objects,
                requests,
            }
        };
        let data = serde_json::to_vec(&body).map_err(sm_err)?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let snapshot_id = match body.last_applied {
            Some(l) => format!(
                "{}-{}-{}-{nanos}",
                l.leader_id.term, l.leader_id.node_id, l.index
            ),
            None => format!("none-{nanos}"),
        };
        let meta = SnapshotMeta {
            last_log_id: body.last_applied,
            last_membership: body.membership,
            snapshot_id,
        };
        let m = serde_json::to_vec(&meta).map_err(sm_err)?;
        let mut batch = sled::Batch::default();
        batch.insert(SNAPSHOT_META, m);
        batch.insert(SNAPSHOT_DATA, data.as_slice());
        self.shared.sm_meta.apply_batch(batch).map_err(sm_err)?;
        // The snapshot allows purging the log: make it (and the state it reflects) durable first.
        self.shared.db.flush_async().await.map_err(sm_err)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for SledStateMachine {
    type SnapshotBuilder = SledStateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, Membership), StorageError<u64>> {
        let a = self.shared.applied.read().map_err(|_| lock_poisoned())?;
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<ApplyResult>>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut a = self.shared.applied.write().map_err(|_| lock_poisoned())?;
        let mut last_applied = a.last_applied;
        let mut membership = a.membership.clone();
        let mut overlay: BTreeMap<String, Option<Value>> = BTreeMap::new();
        let mut events = Vec::new();
        let mut results = Vec::new();
        let mut requests: BTreeMap<String, RequestRecord> = BTreeMap::new();
        for entry in entries {
            last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => results.push(Vec::new()),
                EntryPayload::Normal(mut cmd) => {
                    // The entry's requests, each on its own (see `crate::group`).
                    let grouped = std::mem::take(&mut cmd.grouped);
                    let mut out = Vec::with_capacity(1 + grouped.len());
                    for c in std::iter::once(cmd).chain(grouped) {
                        out.push(self.apply_command(
                            &mut overlay,
                            entry.log_id.index,
                            c,
                            &mut events,
                            &mut requests,
                        )?);
                    }
                    results.push(out);
                }
                EntryPayload::Membership(m) => {
                    membership = StoredMembership::new(Some(entry.log_id), m);
                    results.push(Vec::new());
                }
            }
        }
        let mut encoded = Vec::with_capacity(overlay.len());
        for (k, v) in overlay {
            let v = match v {
                Some(v) => Some(serde_json::to_vec(&v).map_err(sm_err)?),
                None => None,
            };
            encoded.push((k, v));
        }
        let la = serde_json::to_vec(&last_applied).map_err(sm_err)?;
        let mem = serde_json::to_vec(&membership).map_err(sm_err)?;
        let mut new_requests = Vec::with_capacity(requests.len());
        for (id, rec) in &requests {
            new_requests.push((
                id.clone(),
                rec.index,
                serde_json::to_vec(rec).map_err(sm_err)?,
            ));
        }
        // Forget request ids older than the window (deterministic: by log index).
        let mut expired: Vec<(sled::IVec, sled::IVec)> = Vec::new();
        if let Some(cutoff) = last_applied.map(|l| l.index.saturating_sub(DEDUP_WINDOW))
            && cutoff > 0
        {
            for kv in self.shared.request_index.range(..cutoff.to_be_bytes()) {
                expired.push(kv.map_err(read_err)?);
            }
        }
        use sled::Transactional;
        (
            &self.shared.state,
            &self.shared.sm_meta,
            &self.shared.requests,
            &self.shared.request_index,
        )
            .transaction(|(s, m, rq, ri)| {
                for (k, v) in &encoded {
                    match v {
                        Some(v) => s.insert(k.as_bytes(), v.as_slice())?,
                        None => s.remove(k.as_bytes())?,
                    };
                }
                for (idx, id) in &expired {
                    ri.remove(idx)?;
                    rq.remove(id)?;
                }
                for (id, index, rec) in &new_requests {
                    rq.insert(id.as_bytes(), rec.as_slice())?;
                    ri.insert(&index.to_be_bytes(), id.as_bytes())?;
                }
                m.insert(LAST_APPLIED, la.as_slice())?;
                m.insert(MEMBERSHIP, mem.as_slice())?;
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| sm_err(format!("{e:?}")))?;
        a.last_applied = last_applied;
        a.membership = membership;
        // Published under the write lock: a concurrent list+watch sees either before or after.
        self.hub().map_err(sm_err)?.publish(events);
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let data = snapshot.into_inner();
        let body: SnapshotBody = serde_json::from_slice(&data).map_err(sm_err)?;
        // Keep the snapshot first (durably), so a crash mid-install is redone on open.
        let m = serde_json::to_vec(meta).map_err(sm_err)?;
        let mut batch = sled::Batch::default();
        batch.insert(SNAPSHOT_META, m);
        batch.insert(SNAPSHOT_DATA, data.as_slice());
        self.shared.sm_meta.apply_batch(batch).map_err(sm_err)?;
        self.shared.db.flush_async().await.map_err(sm_err)?;
        let body = SnapshotBody {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            objects: body.objects,
            requests: body.requests,
        };
        let mut a = self.shared.applied.write().map_err(|_| lock_poisoned())?;
        self.replace_state(&body)?;
        a.last_applied = body.last_applied;
        a.membership = body.membership;
        self.hub()
            .map_err(sm_err)?
            .reset(body.last_applied.map_or(0, |l| l.index));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        Ok(self.stored_snapshot()?.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use openraft::CommittedLeaderId;
    use serde_json::json;

    fn entry(index: u64, payload: EntryPayload<TypeConfig>) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload,
        }
    }

    fn create(key: &str, request_id: &str) -> EntryPayload<TypeConfig> {
        EntryPayload::Normal(Command {
            writes: vec![Write::Create {
                key: key.into(),
                object: json!({"kind": "Pod", "metadata": {"name": key, "uid": "u-1"}, "spec": {}}),
            }],
            request_id: Some(request_id.into()),
            grouped: Vec::new(),
        })
    }

    /// The results of entries that each carry one request.
    fn single(results: Vec<Vec<ApplyResult>>) -> Vec<ApplyResult> {
        results
            .into_iter()
            .map(|mut r| {
                assert_eq!(r.len(), 1, "one request per entry");
                r.remove(0)
            })
            .collect()
    }

    fn open(dir: &tempfile::TempDir) -> SledStateMachine {
        let db = sled::Config::new()
            .path(dir.path().join("db"))
            .open()
            .expect("sled");
        SledStateMachine::open(&db, 100, usize::MAX).expect("open")
    }

    #[tokio::test]
    async fn a_check_fails_the_whole_batch_and_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sm = open(&dir);
        sm.apply([entry(1, create("Namespace//team", "r1"))])
            .await
            .expect("apply");
        let batch = |index: u64, check: &str, rev: Option<u64>, id: &str| {
            entry(
                index,
                EntryPayload::Normal(Command {
                    writes: vec![
                        Write::Check {
                            key: check.into(),
                            expected_revision: rev,
                        },
                        Write::Create {
                            key: format!("Pod/team/{id}"),
                            object: json!({"kind": "Pod", "metadata": {"name": id}}),
                        },
                    ],
                    request_id: Some(id.into()),
                    grouped: Vec::new(),
                }),
            )
        };
        let out = single(
            sm.apply([
                batch(2, "Namespace//gone", None, "a"),
                batch(3, "Namespace//team", Some(7), "b"),
                batch(4, "Namespace//team", Some(1), "c"),
            ])
            .await
            .expect("apply"),
        );
        assert!(matches!(&out[0], Err(StoreError::NotFound { key }) if key == "Namespace//gone"));
        assert!(matches!(
            &out[1],
            Err(StoreError::Conflict {
                expected: 7,
                actual: 1,
                ..
            })
        ));
        let ok = out[2].as_ref().expect("the check holds");
        assert_eq!(ok.len(), 1, "a check has no outcome: {ok:?}");
        assert!(sm.get("Pod/team/a").expect("get").is_none());
        assert!(sm.get("Pod/team/b").expect("get").is_none());
        assert!(sm.get("Pod/team/c").expect("get").is_some());
        let ns = sm.get("Namespace//team").expect("get").expect("present");
        assert_eq!(ns["metadata"]["resourceVersion"], json!("1"), "unchanged");
    }

    #[tokio::test]
    async fn the_requests_of_a_grouped_entry_each_succeed_or_fail_on_their_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sm = open(&dir);
        let mut w = sm.watch("", None).expect("watch");
        sm.apply([entry(1, create("Pod/a/taken", "r0"))])
            .await
            .expect("apply");
        let EntryPayload::Normal(mut head) = create("Pod/a/x", "r1") else {
            unreachable!()
        };
        head.grouped = ["Pod/a/taken", "Pod/a/y", "Pod/a/x"]
            .iter()
            .zip(["r2", "r3", "r1"])
            .map(|(k, id)| match create(k, id) {
                EntryPayload::Normal(c) => c,
                _ => unreachable!(),
            })
            .collect();
        let out = sm
            .apply([entry(2, EntryPayload::Normal(head))])
            .await
            .expect("apply");
        assert_eq!(out.len(), 1, "one result list per entry");
        let r = &out[0];
        assert_eq!(r.len(), 4, "one result per request: {r:?}");
        assert!(r[0].is_ok());
        assert_eq!(
            r[1],
            Err(StoreError::AlreadyExists {
                key: "Pod/a/taken".into()
            }),
            "a failed request fails alone"
        );
        assert_eq!(r[2].as_ref().expect("created")[0].revision, 2);
        assert_eq!(
            r[3], r[0],
            "a resend in the same entry answers the first outcome"
        );
        for key in ["Pod/a/x", "Pod/a/y"] {
            let o = sm.get(key).expect("get").expect("present");
            assert_eq!(o["metadata"]["resourceVersion"], json!("2"));
        }
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(w.next().await.expect("ev").expect("ok").key);
        }
        assert_eq!(got, ["Pod/a/taken", "Pod/a/x", "Pod/a/y"]);
    }

    #[tokio::test]
    async fn a_resent_request_is_applied_once_and_answers_the_first_outcome() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sm = open(&dir);
        let mut w = sm.watch("", None).expect("watch");
        let first = single(
            sm.apply([entry(1, create("Pod/a/x", "r1"))])
                .await
                .expect("apply"),
        );
        let again = single(
            sm.apply([
                entry(2, create("Pod/a/x", "r1")),
                entry(3, create("Pod/a/y", "r2")),
            ])
            .await
            .expect("apply"),
        );
        assert_eq!(first[0], again[0], "the resend answers the first outcome");
        assert!(again[1].is_ok());
        let x = sm.get("Pod/a/x").expect("get").expect("present");
        assert_eq!(x["metadata"]["resourceVersion"], json!("1"));
        assert_eq!(w.next().await.expect("ev").expect("ok").revision, 1);
        assert_eq!(w.next().await.expect("ev").expect("ok").revision, 3);
        assert_eq!(sm.last_applied_index(), 3);
    }

    #[tokio::test]
    async fn request_ids_travel_in_snapshots_and_expire_after_the_window() {
        let d1 = tempfile::tempdir().expect("tempdir");
        let d2 = tempfile::tempdir().expect("tempdir");
        let mut a = open(&d1);
        let mut b = open(&d2);
        a.apply([entry(1, create("Pod/a/x", "r1"))])
            .await
            .expect("apply");
        let snap = a.build_snapshot().await.expect("snapshot");
        let mut w = b.watch("", Some(0)).expect("watch");
        b.install_snapshot(&snap.meta, snap.snapshot)
            .await
            .expect("install");
        assert!(matches!(
            w.next().await,
            Some(Err(StoreError::TooOld { oldest: 1, .. }))
        ));
        assert_eq!(
            b.get("Pod/a/x").expect("get").expect("present")["metadata"]["uid"],
            json!("u-1")
        );
        let resent = single(
            b.apply([entry(2, create("Pod/a/x", "r1"))])
                .await
                .expect("apply"),
        );
        assert!(
            resent[0].is_ok(),
            "deduplicated after a snapshot install: {resent:?}"
        );

        // Past the window the id is forgotten: the same create now conflicts.
        let blanks: Vec<_> = (3..DEDUP_WINDOW + 5)
            .map(|i| entry(i, EntryPayload::Blank))
            .collect();
        b.apply(blanks).await.expect("apply blanks");
        let late = single(
            b.apply([entry(DEDUP_WINDOW + 5, create("Pod/a/x", "r1"))])
                .await
                .expect("apply"),
        );
        assert_eq!(
            late[0],
            Err(StoreError::AlreadyExists {
                key: "Pod/a/x".into()
            })
        );
        assert_eq!(b.shared.requests.len(), 1, "old ids were evicted");
    }

    fn bind_entry(
        index: u64,
        key: &str,
        node: &str,
        rev: Option<u64>,
        request_id: &str,
    ) -> Entry<TypeConfig> {
        entry(
            index,
            EntryPayload::Normal(Command {
                writes: vec![Write::Bind {
                    key: key.into(),
                    node_name: node.into(),
                    expected_revision: rev,
                    condition: json!({"type": "PodScheduled", "status": "True",
                        "lastTransitionTime": format!("t{index}")}),
                }],
                request_id: Some(request_id.into()),
                grouped: Vec::new(),
            }),
        )
    }

    #[tokio::test]
    async fn a_bind_sets_the_node_and_condition_and_fails_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sm = open(&dir);
        let pod = |name: &str, id: &str| {
            entry(
                1,
                EntryPayload::Normal(Command {
                    writes: vec![Write::Create {
                        key: format!("Pod/a/{name}"),
                        object: json!({"kind": "Pod", "metadata": {"name": name},
                            "spec": {"containers": [{"name": "c"}]},
                            "status": {"phase": "Pending", "conditions": [
                                {"type": "Ready", "status": "False"}]}}),
                    }],
                    request_id: Some(id.into()),
                    grouped: Vec::new(),
                }),
            )
        };
        let EntryPayload::Normal(mut head) = pod("p1", "c1").payload else {
            unreachable!()
        };
        head.grouped = [("p2", "c2"), ("p3", "c3")]
            .iter()
            .map(|(n, id)| match pod(n, id).payload {
                EntryPayload::Normal(c) => c,
                _ => unreachable!(),
            })
            .collect();
        sm.apply([entry(1, EntryPayload::Normal(head))])
            .await
            .expect("apply");
        let mut w = sm.watch("", None).expect("watch");

        // One entry: ok, conflict (stale revision), missing pod, ok; each on its own.
        let EntryPayload::Normal(mut head) = bind_entry(2, "Pod/a/p1", "n1", Some(1), "b1").payload
        else {
            unreachable!()
        };
        head.grouped = vec![
            bind_entry(2, "Pod/a/p2", "n1", Some(7), "b2"),
            bind_entry(2, "Pod/a/gone", "n1", None, "b3"),
            bind_entry(2, "Pod/a/p3", "n2", None, "b4"),
        ]
        .into_iter()
        .map(|e| match e.payload {
            EntryPayload::Normal(c) => c,
            _ => unreachable!(),
        })
        .collect();
        let out = sm
            .apply([entry(2, EntryPayload::Normal(head))])
            .await
            .expect("apply");
        let r = &out[0];
        assert_eq!(r.len(), 4, "{r:?}");
        let bound = &r[0].as_ref().expect("bound")[0];
        assert_eq!(bound.revision, 2);
        assert_eq!(bound.object["spec"]["nodeName"], json!("n1"));
        assert_eq!(
            bound.object["spec"]["containers"],
            json!([{"name": "c"}]),
            "the rest of the pod is kept"
        );
        assert_eq!(
            bound.object["status"]["conditions"],
            json!([{"type": "Ready", "status": "False"},
                   {"type": "PodScheduled", "status": "True", "lastTransitionTime": "t2"}])
        );
        assert_eq!(bound.object["metadata"]["generation"], json!(2));
        assert_eq!(
            r[1],
            Err(StoreError::Conflict {
                key: "Pod/a/p2".into(),
                expected: 7,
                actual: 1
            })
        );
        assert_eq!(
            r[2],
            Err(StoreError::NotFound {
                key: "Pod/a/gone".into()
            })
        );
        assert!(r[3].is_ok());
        let p2 = sm.get("Pod/a/p2").expect("get").expect("present");
        assert!(
            p2["spec"].get("nodeName").is_none(),
            "the conflict changed nothing"
        );
        assert_eq!(p2["metadata"]["resourceVersion"], json!("1"));
        let ev = w.next().await.expect("ev").expect("ok");
        assert_eq!(
            (ev.key.as_str(), ev.event_type),
            ("Pod/a/p1", EventType::Modified)
        );
        assert!(ev.prev_object.is_some(), "a bind event carries the old pod");

        // Already bound: to another node fails; to the same node only sets the condition
        // (its transition time kept while the status is unchanged).
        let out = single(
            sm.apply([
                bind_entry(3, "Pod/a/p1", "n2", None, "b5"),
                bind_entry(4, "Pod/a/p1", "n1", Some(2), "b6"),
            ])
            .await
            .expect("apply"),
        );
        assert_eq!(
            out[0],
            Err(StoreError::AlreadyBound {
                key: "Pod/a/p1".into(),
                node: "n1".into()
            })
        );
        let again = &out[1].as_ref().expect("same node")[0];
        assert_eq!(again.object["spec"]["nodeName"], json!("n1"));
        assert_eq!(
            again.object["status"]["conditions"][1]["lastTransitionTime"],
            json!("t2")
        );
        assert_eq!(again.revision, 4);
    }

    #[tokio::test]
    async fn state_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut sm = open(&dir);
            sm.apply([entry(1, create("Pod/a/x", "r1"))])
                .await
                .expect("apply");
            sm.shared.db.flush().expect("flush");
        }
        let mut sm = open(&dir);
        let (applied, _) = sm.applied_state().await.expect("applied");
        assert_eq!(applied.map(|l| l.index), Some(1));
        let (items, rev) = sm.list("Pod/").expect("list");
        assert_eq!((items.len(), rev), (1, 1));
        assert!(matches!(
            sm.watch("", Some(0)),
            Err(StoreError::TooOld {
                requested: 0,
                oldest: 1
            })
        ));
    }
}
