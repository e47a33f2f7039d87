//! What a reconciler's plan asks for, and small helpers shared by the plans.

use chrono::{DateTime, Utc};
use shoal_api::{Condition, ConditionStatus, Object, ObjectMeta, Pod, PodPhase};
use shoal_store::Write;

/// One store change planned by a reconciler.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create a new object (fails if it exists).
    Create(Object),
    /// Replace an object, on the precondition that its revision is still
    /// `metadata.resourceVersion` of the given object.
    Update(Object),
    /// Bind a pod to a node (a small store command, not the whole pod; see [`bind`]).
    Bind(Binding),
    /// Delete an object at a known revision.
    Delete {
        /// Store key.
        key: String,
        /// Expected revision (0: no precondition).
        revision: u64,
    },
}

impl Action {
    /// The key the action touches.
    pub fn key(&self) -> String {
        match self {
            Action::Create(o) | Action::Update(o) => o.key(),
            Action::Bind(b) => b.key.clone(),
            Action::Delete { key, .. } => key.clone(),
        }
    }

    /// The store write of this action.
    pub fn to_write(&self) -> Write {
        match self {
            Action::Create(o) => {
                let mut v = o.to_json();
                if let Some(m) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
                    m.remove("resourceVersion");
                }
                Write::Create {
                    key: o.key(),
                    object: v,
                }
            }
            Action::Update(o) => Write::Update {
                key: o.key(),
                object: o.to_json(),
                expected_revision: Some(revision(o.meta())).filter(|r| *r != 0),
            },
            Action::Bind(b) => Write::Bind {
                key: b.key.clone(),
                node_name: b.node.clone(),
                expected_revision: Some(b.revision).filter(|r| *r != 0),
                condition: serde_json::to_value(&b.condition).unwrap_or_default(),
            },
            Action::Delete { key, revision } => Write::Delete {
                key: key.clone(),
                expected_revision: Some(*revision).filter(|r| *r != 0),
            },
        }
    }
}

/// A pod bound to a node: the scheduler writes it as [`Action::Bind`] (the store sets the
/// node and the condition, [`Write::Bind`]); the DaemonSet controller applies it to the pods
/// it creates already bound ([`Binding::apply_to`]). Both make it with [`bind`].
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// The pod's store key.
    pub key: String,
    /// The node it goes to.
    pub node: String,
    /// The pod's revision the binding was planned against (0: no precondition).
    pub revision: u64,
    /// `PodScheduled=True`.
    pub condition: Condition,
    /// When the pod was created (for the scheduling latency).
    pub created: Option<DateTime<Utc>>,
}

/// The one way a pod is bound: to `node` at `now`, on the precondition of `p`'s revision.
pub fn bind(p: &Pod, node: &str, now: DateTime<Utc>) -> Binding {
    let mut condition = Condition::new("PodScheduled", ConditionStatus::True);
    condition.last_transition_time = Some(now);
    Binding {
        key: pod_key(p),
        node: node.to_string(),
        revision: revision(&p.metadata),
        condition,
        created: p.metadata.creation_timestamp,
    }
}

impl Binding {
    /// Binds a pod in hand, as the store does with [`Write::Bind`]: sets `spec.nodeName` and
    /// the condition (keeping its transition time when the status is unchanged).
    pub fn apply_to(&self, p: &mut Pod) {
        p.spec.node_name = Some(self.node.clone());
        let c = &self.condition;
        set_condition(
            &mut p.status.get_or_insert_with(Default::default).conditions,
            &c.type_,
            c.status,
            &c.reason,
            &c.message,
            c.last_transition_time.unwrap_or_default(),
        );
    }
}

/// The revision in `metadata.resourceVersion` (0 when missing).
pub fn revision(meta: &ObjectMeta) -> u64 {
    meta.resource_version
        .as_deref()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The revision in a stored JSON object's `metadata.resourceVersion` (0 when missing).
pub fn revision_of_json(v: &serde_json::Value) -> u64 {
    match v.pointer("/metadata/resourceVersion") {
        Some(serde_json::Value::String(s)) => s.parse().unwrap_or(0),
        Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

/// The store key of a pod.
pub fn pod_key(p: &Pod) -> String {
    shoal_api::key_for(
        shoal_api::Kind::Pod,
        namespace(&p.metadata),
        &p.metadata.name,
    )
}

/// The namespace of a namespaced object (`default` when unset).
pub fn namespace(meta: &ObjectMeta) -> &str {
    meta.namespace
        .as_deref()
        .unwrap_or(shoal_api::DEFAULT_NAMESPACE)
}

/// True when the pod's phase is Succeeded or Failed (it holds no resources and no replica slot).
pub fn is_terminal(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().map(|s| s.phase),
        Some(PodPhase::Succeeded | PodPhase::Failed)
    )
}

/// True when the pod has condition `Ready=True` (written by its agent).
pub fn is_pod_ready(p: &Pod) -> bool {
    p.status.as_ref().is_some_and(|s| {
        shoal_api::find_condition(&s.conditions, "Ready")
            .is_some_and(|c| c.status == ConditionStatus::True)
    })
}

/// The node the pod is bound to, if any.
pub fn node_of(p: &Pod) -> Option<&str> {
    p.spec.node_name.as_deref().filter(|n| !n.is_empty())
}

/// Sets condition `type_` in `conditions`, keeping its transition time when the status did
/// not change. Returns true when anything changed.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: &str,
    now: DateTime<Utc>,
) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status == status && c.reason == reason && c.message == message {
                return false;
            }
            if c.status != status {
                c.last_transition_time = Some(now);
            }
            c.status = status;
            c.reason = reason.to_string();
            c.message = message.to_string();
            true
        }
        None => {
            let mut c = Condition::new(type_, status);
            c.reason = reason.to_string();
            c.message = message.to_string();
            c.last_transition_time = Some(now);
            conditions.push(c);
            true
        }
    }
}

/// Source of random name suffixes (lowercase letters and digits).
pub trait Names: Send {
    /// A fresh suffix of `len` characters.
    fn suffix(&mut self, len: usize) -> String;
}

/// Random suffixes from the operating system's generator (through uuid v4).
#[derive(Debug, Default)]
pub struct RandomNames;

const ALNUM: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

impl Names for RandomNames {
    fn suffix(&mut self, len: usize) -> String {
        let mut out = String::with_capacity(len);
        while out.len() < len {
            for b in uuid::Uuid::new_v4().as_bytes() {
                if out.len() == len {
                    break;
                }
                out.push(char::from(ALNUM[usize::from(*b) % ALNUM.len()]));
            }
        }
        out
    }
}

/// Deterministic suffixes for tests: `00001`, `00002`, ...
#[derive(Debug, Default)]
pub struct CountingNames(pub u64);

impl Names for CountingNames {
    fn suffix(&mut self, len: usize) -> String {
        self.0 += 1;
        let s = format!("{:0len$}", self.0, len = len);
        s[s.len() - len..].to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_names_are_lowercase_alnum_of_the_length() {
        let mut n = RandomNames;
        let a = n.suffix(5);
        let b = n.suffix(5);
        assert_eq!(a.len(), 5);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
            "{a}"
        );
        assert_ne!(a, b);
        assert_eq!(CountingNames(0).suffix(5), "00001");
    }

    #[test]
    fn conditions_keep_transition_time_unless_status_changes() {
        let t0 = DateTime::<Utc>::from_timestamp(1000, 0).unwrap();
        let t1 = DateTime::<Utc>::from_timestamp(2000, 0).unwrap();
        let mut cs = Vec::new();
        assert!(set_condition(
            &mut cs,
            "Ready",
            ConditionStatus::True,
            "",
            "",
            t0
        ));
        assert!(!set_condition(
            &mut cs,
            "Ready",
            ConditionStatus::True,
            "",
            "",
            t1
        ));
        assert!(set_condition(
            &mut cs,
            "Ready",
            ConditionStatus::True,
            "X",
            "m",
            t1
        ));
        assert_eq!(cs[0].last_transition_time, Some(t0));
        assert!(set_condition(
            &mut cs,
            "Ready",
            ConditionStatus::False,
            "X",
            "m",
            t1
        ));
        assert_eq!(cs[0].last_transition_time, Some(t1));
    }
}
