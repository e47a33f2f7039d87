//! The replicated state machine, in memory: objects (as their JSON), remembered request
//! ids, the last applied log id and the membership. Its durable copy is the current Raft
//! snapshot in [`crate::snapshot_file`]; on start it is rebuilt from that file and openraft
//! re-applies the log after it (design note 0014). Applied changes go to the watch hub.

// openraft's trait methods return `StorageError`; helpers return it too, unboxed.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Cursor;
use std::path::{Path, PathBuf};
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
use crate::snapshot_file::{self, Meta};
use crate::types::{ApplyResult, Command, EventType, TypeConfig, Write, WriteOutcome};
use crate::watch::{SharedEvent, WatchHub, WatchStream};

/// How many log indexes a request id is remembered for deduplication.
pub const DEDUP_WINDOW: u64 = 20_000;

/// A remembered request: where it was applied and what it returned (an [`ApplyResult`]
/// as JSON: parsed only when the request is sent again).
#[derive(Debug, Clone)]
pub(crate) struct RequestRecord {
    pub(crate) index: u64,
    pub(crate) result: Arc<str>,
}

/// A [`RequestRecord`] as a snapshot holds it.
#[derive(Debug, Serialize, Deserialize)]
struct RecordJson<R> {
    index: u64,
    result: R,
}

pub(crate) type Membership = StoredMembership<u64, BasicNode>;

/// The serialized form of a snapshot (what Raft sends and the snapshot file holds after
/// its header): objects stay raw JSON, so a snapshot is built, sent and installed without
/// parsing every object into a `Value` tree.
#[derive(Debug, Deserialize)]
struct SnapshotBody {
    #[serde(rename = "last_applied")]
    _last_applied: Option<LogId<u64>>,
    #[serde(rename = "membership")]
    _membership: Membership,
    objects: Vec<(String, Box<RawValue>)>,
    /// Remembered request ids (see [`DEDUP_WINDOW`]).
    #[serde(default)]
    requests: Vec<(String, RecordJson<Box<RawValue>>)>,
}

/// [`SnapshotBody`] as it is written: borrowed from a copy of the state.
#[derive(Serialize)]
struct SnapshotBodyRef<'a> {
    last_applied: Option<LogId<u64>>,
    membership: &'a Membership,
    objects: Vec<(&'a str, &'a RawValue)>,
    requests: Vec<(&'a str, RecordJson<&'a RawValue>)>,
}

/// Everything the state machine holds; replaced whole by a snapshot install.
#[derive(Debug, Default, Clone)]
pub(crate) struct State {
    /// key -> the object's JSON (shared with snapshot copies, never parsed in place).
    objects: BTreeMap<String, Arc<str>>,
    /// request id -> where it was applied and what it returned.
    requests: HashMap<String, RequestRecord>,
    /// (index, request id), for forgetting old ids in log order.
    request_order: BTreeSet<(u64, String)>,
    last_applied: Option<LogId<u64>>,
    membership: Membership,
}

impl State {
    /// The state a snapshot holds.
    fn from_snapshot(meta: &Meta, data: &[u8]) -> Result<State, String> {
        let body: SnapshotBody = serde_json::from_slice(data).map_err(|e| e.to_string())?;
        let objects = body
            .objects
            .into_iter()
            .map(|(k, v)| (k, Arc::from(Box::<str>::from(v))))
            .collect();
        let mut requests = HashMap::with_capacity(body.requests.len());
        let mut request_order = BTreeSet::new();
        for (id, r) in body.requests {
            request_order.insert((r.index, id.clone()));
            let result = Arc::from(Box::<str>::from(r.result));
            requests.insert(
                id,
                RequestRecord {
                    index: r.index,
                    result,
                },
            );
        }
        Ok(State {
            objects,
            requests,
            request_order,
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        })
    }

    fn revision(&self) -> u64 {
        self.last_applied.map_or(0, |l| l.index)
    }

    fn prefixed<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a String, &'a Arc<str>)> {
        self.objects
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(k, _)| k.starts_with(prefix))
    }

    fn remember(&mut self, id: String, rec: RequestRecord) {
        if let Some(old) = self.requests.get(&id) {
            self.request_order.remove(&(old.index, id.clone()));
        }
        self.request_order.insert((rec.index, id.clone()));
        self.requests.insert(id, rec);
    }

    /// Forgets request ids applied before `cutoff` (deterministic: by log index).
    fn forget_before(&mut self, cutoff: u64) {
        while let Some((index, _)) = self.request_order.first()
            && *index < cutoff
        {
            if let Some((_, id)) = self.request_order.pop_first() {
                self.requests.remove(&id);
            }
        }
    }

    /// The snapshot data of this state (see [`SnapshotBody`]).
    fn encode(&self) -> Result<Vec<u8>, String> {
        let mut objects = Vec::with_capacity(self.objects.len());
        for (k, v) in &self.objects {
            let raw: &RawValue = serde_json::from_str(v).map_err(|e| format!("{k}: {e}"))?;
            objects.push((k.as_str(), raw));
        }
        let mut requests = Vec::with_capacity(self.requests.len());
        for (id, r) in &self.requests {
            let result: &RawValue =
                serde_json::from_str(&r.result).map_err(|e| format!("request {id}: {e}"))?;
            requests.push((
                id.as_str(),
                RecordJson {
                    index: r.index,
                    result,
                },
            ));
        }
        let body = SnapshotBodyRef {
            last_applied: self.last_applied,
            membership: &self.membership,
            objects,
            requests,
        };
        serde_json::to_vec(&body).map_err(|e| e.to_string())
    }
}

fn parse(key: &str, v: &str) -> Result<Value, StoreError> {
    serde_json::from_str(v).map_err(|e| StoreError::Storage(format!("state/{key}: {e}")))
}

#[derive(Debug)]
struct Shared {
    /// Held for writing while applying or installing, for reading while listing: a list sees
    /// one revision exactly.
    state: RwLock<State>,
    hub: Mutex<WatchHub>,
    /// The member's data dir (where the snapshot file lives).
    dir: PathBuf,
    /// The last log id of the snapshot file; held while writing it, so that an older
    /// snapshot (a build racing an install) never replaces a newer one.
    file: Mutex<Option<LogId<u64>>>,
}

/// The state machine handle; clones share the state (it is also the snapshot builder).
#[derive(Debug, Clone)]
pub struct MemStateMachine {
    shared: Arc<Shared>,
}

fn sm_err(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::write_state_machine(&std::io::Error::other(e.to_string())).into()
}

fn snapshot_err(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::write_snapshot(None, &std::io::Error::other(e.to_string())).into()
}

fn read_err(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::read_state_machine(&std::io::Error::other(e.to_string())).into()
}

fn lock_poisoned() -> StorageError<u64> {
    sm_err("state machine lock poisoned")
}

fn poisoned() -> StoreError {
    StoreError::Storage("state machine lock poisoned".into())
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

impl MemStateMachine {
    /// Opens the state machine of data dir `dir`: the state of its snapshot file, empty
    /// without one (openraft then re-applies the log after it); `watch_history` and
    /// `watch_history_bytes` bound the resumable event history.
    pub fn open(
        dir: &Path,
        watch_history: usize,
        watch_history_bytes: usize,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Storage(format!("creating {}: {e}", dir.display())))?;
        let (state, file) = match snapshot_file::read(dir)? {
            Some((meta, data)) => (
                State::from_snapshot(&meta, &data).map_err(|e| {
                    StoreError::Storage(format!(
                        "snapshot file {}: {e}",
                        snapshot_file::path(dir).display()
                    ))
                })?,
                meta.last_log_id,
            ),
            None => (State::default(), None),
        };
        let revision = state.revision();
        Ok(Self {
            shared: Arc::new(Shared {
                state: RwLock::new(state),
                hub: Mutex::new(WatchHub::new(watch_history, watch_history_bytes, revision)),
                dir: dir.to_path_buf(),
                file: Mutex::new(file),
            }),
        })
    }

    fn read(&self) -> Result<std::sync::RwLockReadGuard<'_, State>, StoreError> {
        self.shared.state.read().map_err(|_| poisoned())
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
        Ok(self
            .read()?
            .prefixed(prefix)
            .map(|(k, _)| k.clone())
            .collect())
    }

    /// Bytes of events the watch history holds now.
    pub fn watch_history_bytes(&self) -> usize {
        self.hub().map(|h| h.history_bytes()).unwrap_or(0)
    }

    /// The index of the last applied entry (0 before any).
    pub fn last_applied_index(&self) -> u64 {
        self.read().map(|s| s.revision()).unwrap_or(0)
    }

    /// Reads one object.
    pub fn get(&self, key: &str) -> Result<Option<Value>, StoreError> {
        let raw = self.read()?.objects.get(key).cloned();
        raw.map(|v| parse(key, &v)).transpose()
    }

    /// Lists every object whose key starts with `prefix`, with the revision the list reflects.
    pub fn list(&self, prefix: &str) -> Result<(Vec<Value>, u64), StoreError> {
        let (items, rev) = self.list_keyed(prefix)?;
        Ok((items.into_iter().map(|(_, v)| v).collect(), rev))
    }

    /// Like [`MemStateMachine::list`], with each object's key. The objects are copied (as
    /// shared JSON) under the lock and parsed after it, so a long list does not hold up
    /// apply.
    pub fn list_keyed(&self, prefix: &str) -> Result<(Vec<(String, Value)>, u64), StoreError> {
        let (raw, rev): (Vec<(String, Arc<str>)>, u64) = {
            let s = self.read()?;
            let raw = s
                .prefixed(prefix)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            (raw, s.revision())
        };
        let mut out = Vec::with_capacity(raw.len());
        for (k, v) in raw {
            let value = parse(&k, &v)?;
            out.push((k, value));
        }
        Ok((out, rev))
    }

    /// Starts a watch (see [`crate::Store::watch`]).
    pub fn watch(&self, prefix: &str, after: Option<u64>) -> Result<WatchStream, StoreError> {
        self.watch_where(prefix, None, after)
    }

    /// Starts a watch narrowed by a trigger (see [`crate::Store::watch_where`]).
    pub fn watch_where(
        &self,
        prefix: &str,
        trigger: Option<crate::watch::Trigger>,
        after: Option<u64>,
    ) -> Result<WatchStream, StoreError> {
        // Taking the read lock first orders this against apply (which holds the write lock
        // while publishing), so `current` is exact.
        let s = self.read()?;
        let current = s.revision();
        let mut hub = self.hub()?;
        hub.subscribe_where(prefix, trigger, after, current)
    }

    /// Every object and the revision the copy reflects (one consistent cut).
    pub fn export(&self) -> Result<Backup, StoreError> {
        let (objects, revision) = self.list_keyed("")?;
        Ok(Backup { revision, objects })
    }

    /// Makes `backup` the snapshot file of the (empty) data dir `dir`, at `log_id` with
    /// `membership`: [`MemStateMachine::open`] then starts from it like from any snapshot.
    pub(crate) fn seed(
        dir: &Path,
        backup: &Backup,
        log_id: LogId<u64>,
        membership: Membership,
    ) -> Result<(), StoreError> {
        let mut objects = BTreeMap::new();
        for (k, v) in &backup.objects {
            let v = serde_json::to_string(v)
                .map_err(|e| StoreError::Storage(format!("encoding restored {k}: {e}")))?;
            objects.insert(k.clone(), Arc::from(v));
        }
        let state = State {
            objects,
            last_applied: Some(log_id),
            membership,
            ..State::default()
        };
        persist_state(dir, &state, format!("restored-{}", log_id.index))
    }

    /// Writes `meta` + `data` as the snapshot file unless the file already holds a newer
    /// snapshot (a build that raced an install).
    fn persist(&self, meta: &Meta, data: &[u8]) -> Result<(), StoreError> {
        let mut file = self
            .shared
            .file
            .lock()
            .map_err(|_| StoreError::Storage("snapshot file lock poisoned".into()))?;
        if meta.last_log_id < *file {
            return Ok(());
        }
        snapshot_file::write(&self.shared.dir, meta, data)?;
        *file = meta.last_log_id;
        Ok(())
    }
}

/// Writes `state` as the snapshot file of `dir` (restores and migrations).
pub(crate) fn persist_state(
    dir: &Path,
    state: &State,
    snapshot_id: String,
) -> Result<(), StoreError> {
    let data = state
        .encode()
        .map_err(|e| StoreError::Storage(format!("encoding the state: {e}")))?;
    let meta = SnapshotMeta {
        last_log_id: state.last_applied,
        last_membership: state.membership.clone(),
        snapshot_id,
    };
    snapshot_file::write(dir, &meta, &data)
}

impl State {
    /// A state made of these parts (a migration from an older layout).
    pub(crate) fn from_parts(
        objects: BTreeMap<String, Arc<str>>,
        requests: Vec<(String, RequestRecord)>,
        last_applied: Option<LogId<u64>>,
        membership: Membership,
    ) -> State {
        let request_order = requests
            .iter()
            .map(|(id, r)| (r.index, id.clone()))
            .collect();
        State {
            objects,
            requests: requests.into_iter().collect(),
            request_order,
            last_applied,
            membership,
        }
    }
}

/// Applies one command to `state`: a request id seen within [`DEDUP_WINDOW`] answers its
/// first outcome again.
fn apply_command(
    state: &mut State,
    index: u64,
    cmd: Command,
    events: &mut Vec<SharedEvent>,
) -> Result<ApplyResult, StorageError<u64>> {
    if let Some(id) = &cmd.request_id
        && let Some(rec) = state.requests.get(id)
        && index.saturating_sub(rec.index) <= DEDUP_WINDOW
    {
        let remembered: ApplyResult = serde_json::from_str(&rec.result).map_err(read_err)?;
        return Ok(remembered.map(|outs| outs.into_iter().map(|o| refill(state, o)).collect()));
    }
    let request_id = cmd.request_id.clone();
    let result = apply_writes(state, index, cmd, events)?;
    if let Some(id) = request_id {
        let json = serde_json::to_string(&recorded(state, &result)).map_err(sm_err)?;
        state.remember(
            id,
            RequestRecord {
                index,
                result: Arc::from(json),
            },
        );
    }
    Ok(result)
}

/// An outcome as a request record keeps it: [`WriteOutcome`]'s fields, borrowed.
#[derive(serde::Serialize)]
struct RecordedOutcome<'a> {
    key: &'a str,
    revision: u64,
    object: &'a Value,
    created: bool,
}

/// `result` as a request record keeps it (it reads back as an [`ApplyResult`]): an
/// outcome's object is left out (null) while the state holds its key — this command wrote
/// it, so at the outcome's revision — to be read back on a resend ([`refill`]); a deleted
/// object is kept. Records of the last [`DEDUP_WINDOW`] indexes would otherwise hold a
/// second copy of every object written (binds included). Borrowed: nothing is copied to
/// be encoded.
fn recorded<'a>(
    state: &State,
    result: &'a ApplyResult,
) -> Result<Vec<RecordedOutcome<'a>>, &'a StoreError> {
    const LEFT_OUT: &Value = &Value::Null;
    match result {
        Ok(outs) => Ok(outs
            .iter()
            .map(|o| RecordedOutcome {
                key: &o.key,
                revision: o.revision,
                object: if state.objects.contains_key(&o.key) {
                    LEFT_OUT
                } else {
                    &o.object
                },
                created: o.created,
            })
            .collect()),
        Err(e) => Err(e),
    }
}

/// An outcome read back from a request record (see [`strip`]): a left-out object is the
/// stored one at the outcome's revision; if it changed since, the object as stored now;
/// if it is gone, its identity only (kind, name, namespace, resourceVersion).
fn refill(state: &State, mut o: WriteOutcome) -> WriteOutcome {
    if !o.object.is_null() {
        return o;
    }
    o.object = match state
        .objects
        .get(&o.key)
        .and_then(|v| parse(&o.key, v).ok())
    {
        Some(v) => v,
        None => {
            let mut parts = o.key.splitn(3, '/');
            let (kind, ns, name) = (
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
            );
            let mut md = serde_json::Map::new();
            md.insert("name".into(), Value::String(name.into()));
            if !ns.is_empty() {
                md.insert("namespace".into(), Value::String(ns.into()));
            }
            md.insert(
                "resourceVersion".into(),
                Value::String(o.revision.to_string()),
            );
            serde_json::json!({"kind": kind, "metadata": md})
        }
    };
    o
}

/// Applies the writes of one command to `state`, all or nothing. Each object is parsed
/// once (it arrives as text, [`crate::types::Object`]), stamped, and encoded once: the
/// state and the watch event share that text.
fn apply_writes(
    state: &mut State,
    index: u64,
    cmd: Command,
    events: &mut Vec<SharedEvent>,
) -> Result<ApplyResult, StorageError<u64>> {
    // What this command wrote so far (None: deleted), applied to the state at the end.
    let mut local: BTreeMap<String, Option<Arc<str>>> = BTreeMap::new();
    let mut outcomes = Vec::with_capacity(cmd.writes.len());
    let mut evs = Vec::with_capacity(cmd.writes.len());
    for w in cmd.writes {
        let key = w.key().to_owned();
        let current_json: Option<Arc<str>> = match local.get(&key) {
            Some(v) => v.clone(),
            None => state.objects.get(&key).cloned(),
        };
        let current = match &current_json {
            Some(raw) => Some(parse(&key, raw).map_err(read_err)?),
            None => None,
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
        // The stored JSON travels as the old version of a Modified event (selector watches
        // need it) without encoding it again.
        let prev = match (&w, &current_json) {
            (Write::Update { .. } | Write::Put { .. } | Write::Bind { .. }, Some(raw)) => {
                Some(raw.as_bytes().to_vec())
            }
            _ => None,
        };
        // The object after the write (for a delete, as it was) and the kind of change.
        let res: Result<(Value, EventType), StoreError> = match (w, current) {
            (Write::Create { .. }, Some(_)) => Err(StoreError::AlreadyExists { key: key.clone() }),
            (Write::Create { object, .. }, None) | (Write::Put { object, .. }, None) => object
                .decode(&key)
                .map(|o| (stamp(o, index, None), EventType::Added)),
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
            ) => check(expected_revision, &cur)
                .and_then(|()| object.decode(&key))
                .map(|o| {
                    let obj = stamp(o, index, Some(&cur));
                    (obj, EventType::Modified)
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
                .and_then(|()| condition.decode(&key))
                .and_then(|c| bind(&key, &cur, &node_name, c))
                .map(|obj| {
                    let obj = stamp(obj, index, Some(&cur));
                    (obj, EventType::Modified)
                }),
            (Write::Put { object, .. }, Some(cur)) => object.decode(&key).map(|o| {
                let obj = stamp(o, index, Some(&cur));
                (obj, EventType::Modified)
            }),
            (
                Write::Delete {
                    expected_revision, ..
                },
                Some(mut cur),
            ) => check(expected_revision, &cur).map(|()| {
                if let Some(md) = metadata_mut(&mut cur) {
                    md.insert("resourceVersion".into(), Value::String(index.to_string()));
                }
                (cur, EventType::Deleted)
            }),
        };
        match res {
            Err(e) => return Ok(Err(e)),
            Ok((gone, EventType::Deleted)) => {
                evs.push(SharedEvent::new(
                    index,
                    EventType::Deleted,
                    key.clone(),
                    serde_json::to_vec(&gone).map_err(sm_err)?,
                    prev,
                ));
                outcomes.push(outcome(&key, index, gone, false));
                local.insert(key, None);
            }
            Ok((obj, et)) => {
                let json: Arc<str> = Arc::from(serde_json::to_string(&obj).map_err(sm_err)?);
                evs.push(SharedEvent::new(
                    index,
                    et,
                    key.clone(),
                    json.as_bytes().to_vec(),
                    prev,
                ));
                outcomes.push(outcome(&key, index, obj, et == EventType::Added));
                local.insert(key, Some(json));
            }
        }
    }
    for (k, v) in local {
        match v {
            Some(v) => {
                state.objects.insert(k, v);
            }
            None => {
                state.objects.remove(&k);
            }
        }
    }
    events.extend(evs);
    Ok(Ok(outcomes))
}

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

impl RaftSnapshotBuilder<TypeConfig> for MemStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        // A copy of the state (shared object JSON, no parsing) under the lock; encoding and
        // the file's fsync happen off the lock and off the Raft runtime's threads.
        let copy = self
            .shared
            .state
            .read()
            .map_err(|_| lock_poisoned())?
            .clone();
        let sm = self.clone();
        let (meta, data) = tokio::task::spawn_blocking(move || {
            let data = copy.encode().map_err(snapshot_err)?;
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let snapshot_id = match copy.last_applied {
                Some(l) => format!(
                    "{}-{}-{}-{nanos}",
                    l.leader_id.term, l.leader_id.node_id, l.index
                ),
                None => format!("none-{nanos}"),
            };
            let meta = SnapshotMeta {
                last_log_id: copy.last_applied,
                last_membership: copy.membership.clone(),
                snapshot_id,
            };
            // The snapshot allows purging the log: it is durable before it is returned.
            sm.persist(&meta, &data).map_err(snapshot_err)?;
            Ok::<_, StorageError<u64>>((meta, data))
        })
        .await
        .map_err(snapshot_err)??;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for MemStateMachine {
    type SnapshotBuilder = MemStateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, Membership), StorageError<u64>> {
        let s = self.shared.state.read().map_err(|_| lock_poisoned())?;
        Ok((s.last_applied, s.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<ApplyResult>>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut s = self.shared.state.write().map_err(|_| lock_poisoned())?;
        let mut events = Vec::new();
        let mut results = Vec::new();
        for entry in entries {
            s.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => results.push(Vec::new()),
                EntryPayload::Normal(mut cmd) => {
                    // The entry's requests, each on its own (see `crate::group`).
                    let grouped = std::mem::take(&mut cmd.grouped);
                    let mut out = Vec::with_capacity(1 + grouped.len());
                    for c in std::iter::once(cmd).chain(grouped) {
                        out.push(apply_command(&mut s, entry.log_id.index, c, &mut events)?);
                    }
                    results.push(out);
                }
                EntryPayload::Membership(m) => {
                    s.membership = StoredMembership::new(Some(entry.log_id), m);
                    results.push(Vec::new());
                }
            }
        }
        // Forget request ids older than the window (deterministic: by log index).
        if let Some(cutoff) = s.last_applied.map(|l| l.index.saturating_sub(DEDUP_WINDOW))
            && cutoff > 0
        {
            s.forget_before(cutoff);
        }
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
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let data = snapshot.into_inner();
        let sm = self.clone();
        let m = meta.clone();
        // Parsed, then kept durably before it replaces the state: a crash after this
        // restarts from it.
        let state = tokio::task::spawn_blocking(move || {
            let state = State::from_snapshot(&m, &data).map_err(sm_err)?;
            sm.persist(&m, &data).map_err(snapshot_err)?;
            Ok::<_, StorageError<u64>>(state)
        })
        .await
        .map_err(sm_err)??;
        let revision = state.revision();
        let mut s = self.shared.state.write().map_err(|_| lock_poisoned())?;
        *s = state;
        self.hub().map_err(sm_err)?.reset(revision);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        let dir = self.shared.dir.clone();
        let read = tokio::task::spawn_blocking(move || snapshot_file::read(&dir))
            .await
            .map_err(read_err)?
            .map_err(read_err)?;
        Ok(read.map(|(meta, data)| Snapshot {
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
                object: crate::types::Object::encode(
                    &json!({"kind": "Pod", "metadata": {"name": key, "uid": "u-1"}, "spec": {}}),
                )
                .unwrap(),
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

    fn open(dir: &tempfile::TempDir) -> MemStateMachine {
        MemStateMachine::open(dir.path(), 100, usize::MAX).expect("open")
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
                            object: crate::types::Object::encode(
                                &json!({"kind": "Pod", "metadata": {"name": id}}),
                            )
                            .unwrap(),
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
        // The record does not hold a copy of the object while the state holds it.
        let rec = sm.read().expect("state").requests["r1"].result.clone();
        assert!(!rec.contains("\"uid\""), "{rec}");
    }

    #[tokio::test]
    async fn a_resend_after_the_object_changed_or_went_answers_what_is_there() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sm = open(&dir);
        sm.apply([entry(1, create("Pod/a/x", "r1"))])
            .await
            .expect("apply");
        let update = EntryPayload::Normal(Command {
            writes: vec![Write::Put {
                key: "Pod/a/x".into(),
                object: crate::types::Object::encode(
                    &json!({"metadata": {"name": "x", "uid": "u-1"}, "spec": {"v": 2}}),
                )
                .unwrap(),
            }],
            request_id: Some("r2".into()),
            grouped: Vec::new(),
        });
        sm.apply([entry(2, update)]).await.expect("apply");
        // Changed since: the resend of r1 answers its revision with the object as it is now.
        let again = single(
            sm.apply([entry(3, create("Pod/a/x", "r1"))])
                .await
                .expect("apply"),
        );
        let out = &again[0].as_ref().expect("ok")[0];
        assert_eq!(out.revision, 1);
        assert_eq!(out.object["spec"]["v"], json!(2));
        let delete = EntryPayload::Normal(Command {
            writes: vec![Write::Delete {
                key: "Pod/a/x".into(),
                expected_revision: None,
            }],
            request_id: Some("r3".into()),
            grouped: Vec::new(),
        });
        sm.apply([entry(4, delete)]).await.expect("apply");
        // Gone since: its identity; the delete's own record kept the deleted object.
        let again = single(
            sm.apply([entry(5, create("Pod/a/x", "r1"))])
                .await
                .expect("apply"),
        );
        let out = &again[0].as_ref().expect("ok")[0];
        assert_eq!(out.object["metadata"]["name"], json!("x"));
        assert_eq!(out.object["metadata"]["namespace"], json!("a"));
        assert_eq!(out.object["kind"], json!("Pod"));
        let rec = sm.read().expect("state").requests["r3"].result.clone();
        assert!(rec.contains("\"u-1\""), "{rec}");
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
        let st = b.read().expect("state");
        assert_eq!(st.requests.len(), 1, "old ids were evicted");
        assert_eq!(st.request_order.len(), 1);
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
                    condition: crate::types::Object::encode(
                        &json!({"type": "PodScheduled", "status": "True",
                        "lastTransitionTime": format!("t{index}")}),
                    )
                    .unwrap(),
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
                        object: crate::types::Object::encode(
                            &json!({"kind": "Pod", "metadata": {"name": name},
                            "spec": {"containers": [{"name": "c"}]},
                            "status": {"phase": "Pending", "conditions": [
                                {"type": "Ready", "status": "False"}]}}),
                        )
                        .unwrap(),
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
    async fn a_reopened_state_machine_holds_its_last_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut sm = open(&dir);
            sm.apply([entry(1, create("Pod/a/x", "r1"))])
                .await
                .expect("apply");
            sm.build_snapshot().await.expect("snapshot");
            // After the snapshot: only in memory (openraft re-applies it from the log).
            sm.apply([entry(2, create("Pod/a/y", "r2"))])
                .await
                .expect("apply");
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
        // The request id came back with the snapshot: re-applying r1 answers its outcome.
        let again = single(
            sm.apply([entry(2, create("Pod/a/x", "r1"))])
                .await
                .expect("apply"),
        );
        assert!(again[0].is_ok(), "{again:?}");
        let current = sm
            .get_current_snapshot()
            .await
            .expect("read")
            .expect("some");
        assert_eq!(current.meta.last_log_id.map(|l| l.index), Some(1));
    }

    #[tokio::test]
    async fn an_older_snapshot_never_replaces_a_newer_file() {
        let d1 = tempfile::tempdir().expect("tempdir");
        let d2 = tempfile::tempdir().expect("tempdir");
        let mut a = open(&d1);
        let mut b = open(&d2);
        b.apply([entry(1, create("Pod/a/x", "r1"))])
            .await
            .expect("apply");
        let old = b.build_snapshot().await.expect("snapshot");
        a.apply([
            entry(1, create("Pod/a/x", "r1")),
            entry(2, create("Pod/a/y", "r2")),
        ])
        .await
        .expect("apply");
        let new = a.build_snapshot().await.expect("snapshot");
        b.install_snapshot(&new.meta, new.snapshot)
            .await
            .expect("install");
        // A build of index 1 that finishes after the install of index 2 keeps the file at 2.
        let data = old.snapshot.into_inner();
        b.persist(&old.meta, &data).expect("persist");
        let (meta, _) = snapshot_file::read(d2.path()).expect("read").expect("some");
        assert_eq!(meta.last_log_id.map(|l| l.index), Some(2));
        let b2 = open(&d2);
        assert_eq!(b2.list("Pod/").expect("list").0.len(), 2);
    }
}
