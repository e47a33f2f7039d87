//! Public value types of the store and the Raft type configuration.

use std::io::Cursor;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::StoreError;

openraft::declare_raft_types!(
    /// openraft type configuration of the store: commands are write batches.
    pub TypeConfig:
        D = Command,
        R = Vec<ApplyResult>,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

/// The Raft handle type of the store.
pub type StoreRaft = openraft::Raft<TypeConfig>;

/// One Raft log entry's payload: one client request (a batch applied atomically), and the
/// requests group commit put beside it in the same entry.
///
/// Entries travel and are stored in a binary encoding ([`crate::wire`]); the objects in
/// them are carried as their JSON text ([`Object`]), so the log, replication and forwarding
/// copy them and only the state machine parses them, once, when it applies them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// Writes applied in order, all or nothing.
    pub writes: Vec<Write<Object>>,
    /// Unique id of the client request (set by the proposer). A command whose id was already
    /// applied within the last [`crate::DEDUP_WINDOW`] log indexes is not applied again: it
    /// returns the first outcome. This makes resending after an unknown outcome safe.
    #[serde(default)]
    pub request_id: Option<String>,
    /// Further requests committed in this entry (group commit, `crate::group`), applied after
    /// this one in order, each all or nothing on its own, with its own id and result. They
    /// touch no key of each other; their own `grouped` is empty. Absent in (JSON) entries
    /// written before group commit.
    #[serde(default)]
    pub grouped: Vec<Command>,
}

/// A JSON document carried through the Raft log as its text (see [`Command`]).
///
/// Serialized into JSON it is the document itself (so entries written as JSON before the
/// binary log still read back); into a binary format, a string. Reading it from a binary
/// format checks that it is JSON (a scan, no tree is built).
#[derive(Debug, Clone)]
pub struct Object(Box<RawValue>);

impl Object {
    /// The text of `value`.
    pub fn encode(value: &Value) -> Result<Object, StoreError> {
        serde_json::value::to_raw_value(value)
            .map(Object)
            .map_err(|e| StoreError::Invalid(format!("encoding an object: {e}")))
    }

    /// The document, parsed; `key` names it in the error.
    pub fn decode(&self, key: &str) -> Result<Value, StoreError> {
        serde_json::from_str(self.0.get())
            .map_err(|e| StoreError::Storage(format!("object of {key} in the log: {e}")))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for Object {
    fn eq(&self, other: &Object) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Serialize for Object {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            self.0.serialize(s)
        } else {
            s.serialize_str(self.0.get())
        }
    }
}

impl<'de> Deserialize<'de> for Object {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Object, D::Error> {
        if d.is_human_readable() {
            Box::<RawValue>::deserialize(d).map(Object)
        } else {
            let text = String::deserialize(d)?;
            RawValue::from_string(text)
                .map(Object)
                .map_err(serde::de::Error::custom)
        }
    }
}

/// What applying one request produced (identical on every replica).
pub type ApplyResult = Result<Vec<WriteOutcome>, StoreError>;

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// The leader confirms its leadership (followers ask it with ReadIndex), this member waits
    /// until it applied up to the leader's commit index, then reads locally.
    #[default]
    Linearizable,
    /// Read this member's state machine as it is (may be stale on a follower).
    Local,
}

/// One write of a batch. Callers give objects as documents (`Write`, that is
/// `Write<Value>`); the log carries them as text (`Write<Object>`, see [`Command`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Write<O = Value> {
    /// Create a new object; fails with `AlreadyExists` if the key exists.
    Create {
        /// `Kind/namespace/name`.
        key: String,
        /// The object document.
        object: O,
    },
    /// Replace an existing object; fails with `NotFound` or `Conflict`.
    Update {
        /// `Kind/namespace/name`.
        key: String,
        /// The new object document.
        object: O,
        /// Compare-and-swap on the current revision when set.
        expected_revision: Option<u64>,
    },
    /// Create or replace, without precondition.
    Put {
        /// `Kind/namespace/name`.
        key: String,
        /// The object document.
        object: O,
    },
    /// Remove an object; fails with `NotFound` or `Conflict`.
    Delete {
        /// `Kind/namespace/name`.
        key: String,
        /// Compare-and-swap on the current revision when set.
        expected_revision: Option<u64>,
    },
    /// Change nothing, but fail the whole batch with `NotFound` or `Conflict` unless the
    /// object exists (at this revision when set): a precondition on another key, e.g. that
    /// the namespace an object is created in still exists and is not being deleted.
    Check {
        /// `Kind/namespace/name`.
        key: String,
        /// The revision the object must still have, when set.
        expected_revision: Option<u64>,
    },
    /// Bind a pod to a node without sending the pod: set `spec.nodeName` to `node_name` and
    /// put `condition` (a condition object, matched by its `type`, e.g. `PodScheduled=True`)
    /// into `status.conditions`, keeping the old `lastTransitionTime` when the condition's
    /// status is unchanged. Fails with `NotFound`, `Conflict` (revision) or `AlreadyBound`
    /// (the pod is bound to another node); binding again to the same node only sets the
    /// condition.
    Bind {
        /// `Pod/namespace/name`.
        key: String,
        /// The node the pod goes to.
        node_name: String,
        /// Compare-and-swap on the current revision when set.
        expected_revision: Option<u64>,
        /// The condition to set, e.g. `{"type": "PodScheduled", "status": "True", …}`.
        condition: O,
    },
}

impl<O> Write<O> {
    /// The key this write touches.
    pub fn key(&self) -> &str {
        match self {
            Write::Create { key, .. }
            | Write::Update { key, .. }
            | Write::Put { key, .. }
            | Write::Delete { key, .. }
            | Write::Check { key, .. }
            | Write::Bind { key, .. } => key,
        }
    }
}

impl Write {
    /// The write as the log carries it: its documents encoded once, here.
    pub fn encode(self) -> Result<Write<Object>, StoreError> {
        Ok(match self {
            Write::Create { key, object } => Write::Create {
                object: Object::encode(&object)?,
                key,
            },
            Write::Update {
                key,
                object,
                expected_revision,
            } => Write::Update {
                object: Object::encode(&object)?,
                key,
                expected_revision,
            },
            Write::Put { key, object } => Write::Put {
                object: Object::encode(&object)?,
                key,
            },
            Write::Delete {
                key,
                expected_revision,
            } => Write::Delete {
                key,
                expected_revision,
            },
            Write::Check {
                key,
                expected_revision,
            } => Write::Check {
                key,
                expected_revision,
            },
            Write::Bind {
                key,
                node_name,
                expected_revision,
                condition,
            } => Write::Bind {
                condition: Object::encode(&condition)?,
                key,
                node_name,
                expected_revision,
            },
        })
    }
}

/// The result of one applied write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteOutcome {
    /// The key written.
    pub key: String,
    /// The revision of the write (the log index of its entry).
    pub revision: u64,
    /// The stored object after the write; for a delete, the object as it was (with
    /// `metadata.resourceVersion` set to the deletion's revision).
    pub object: Value,
    /// True when the write created the object.
    pub created: bool,
}

/// The kind of change a watch event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    /// The object was created.
    Added,
    /// The object was replaced.
    Modified,
    /// The object was removed.
    Deleted,
}

/// One change published to watchers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// The revision of the change (log index); writes of one batch share it.
    pub revision: u64,
    /// Added, Modified or Deleted.
    pub event_type: EventType,
    /// The object's key.
    pub key: String,
    /// The object after the change (for Deleted: the last state).
    pub object: Value,
    /// For Modified: the object before the change (so that a filtered watch can tell
    /// an object that stopped matching its selector from one that never did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_object: Option<Value>,
}

/// One member as seen by [`crate::Store::status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// Raft node id.
    pub id: u64,
    /// Advertised gRPC address.
    pub addr: String,
    /// True for a voter, false for a learner (added, still catching up).
    pub voter: bool,
    /// True when the member answered and says it is the leader.
    pub leader: bool,
    /// True when the member answered its MemberInfo in time.
    pub healthy: bool,
    /// The member's current term.
    pub term: u64,
    /// The member's last log index.
    pub last_log_index: u64,
    /// The member's last applied index.
    pub last_applied: u64,
    /// The index the leader knows to be replicated on it (only when asked on the leader).
    pub matched_index: Option<u64>,
    /// Why the member did not answer.
    pub error: Option<String>,
}

/// The cluster as seen from one member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The member that answered.
    pub node_id: u64,
    /// The leader as this member knows it.
    pub leader: Option<u64>,
    /// Every voter and learner of the current membership.
    pub members: Vec<MemberStatus>,
}
