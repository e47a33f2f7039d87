//! Object metadata and the small types shared by several kinds.

use crate::kind::Kind;
use crate::validation::{self, ValidationErrors};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `metadata` of every object: identity, labels, and fields the server sets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// The object's name, unique per kind and namespace.
    #[serde(default)]
    pub name: String,
    /// The namespace (namespaced kinds; `default` when a manifest omits it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Identifying labels, matched by selectors.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Non-identifying notes for tools.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Server-set unique id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Server-set revision of the last write (a precondition on update when set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// Server-set counter of spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// Server-set creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<DateTime<Utc>>,
    /// Set when a graceful deletion has started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<DateTime<Utc>>,
    /// Objects this one belongs to (garbage-collected with them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<OwnerReference>,
}

impl ObjectMeta {
    /// Metadata with just a name (and namespace, when not empty).
    pub fn named(namespace: &str, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: name.to_string(),
            namespace: (!namespace.is_empty()).then(|| namespace.to_string()),
            ..ObjectMeta::default()
        }
    }

    /// The owner reference marked `controller: true`, if any.
    pub fn controller_owner(&self) -> Option<&OwnerReference> {
        self.owner_references.iter().find(|o| o.controller)
    }

    /// Checks name (with `name_rule`), namespace scope, labels, annotations and owners.
    pub(crate) fn validate(
        &self,
        kind: Kind,
        name_rule: fn(&str) -> Result<(), String>,
        errs: &mut ValidationErrors,
    ) {
        if self.name.is_empty() {
            errs.push("metadata.name", "required field is missing");
        } else {
            errs.check("metadata.name", name_rule(&self.name));
        }
        match (&self.namespace, kind.namespaced()) {
            (Some(ns), true) => {
                errs.check("metadata.namespace", validation::check_dns1123_label(ns))
            }
            (None, true) => {}
            (Some(ns), false) => errs.push(
                "metadata.namespace",
                format!("{kind} is cluster-scoped: namespace must not be set, got {ns:?}"),
            ),
            (None, false) => {}
        }
        validation::validate_labels(&self.labels, "metadata.labels", errs);
        validation::validate_annotations(&self.annotations, "metadata.annotations", errs);
        if let Some(g) = self.generation
            && g < 0
        {
            errs.push(
                "metadata.generation",
                format!("must not be negative, got {g}"),
            );
        }
        let mut controllers = 0;
        for (i, o) in self.owner_references.iter().enumerate() {
            let path = validation::index("metadata.ownerReferences", i);
            if o.name.is_empty() {
                errs.push(format!("{path}.name"), "required field is missing");
            }
            if o.uid.is_empty() {
                errs.push(format!("{path}.uid"), "required field is missing");
            }
            controllers += usize::from(o.controller);
        }
        if controllers > 1 {
            errs.push(
                "metadata.ownerReferences",
                "at most one owner reference may have controller: true",
            );
        }
    }
}

fn default_api_version() -> String {
    crate::kind::API_VERSION.to_string()
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Names the object that owns another (a Deployment owns its Pods).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OwnerReference {
    /// API version of the owner (`shoal/v1`).
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// Kind of the owner.
    pub kind: Kind,
    /// Name of the owner (same namespace as the owned object).
    pub name: String,
    /// Uid of the owner.
    pub uid: String,
    /// True for the managing owner (at most one).
    #[serde(default, skip_serializing_if = "is_false")]
    pub controller: bool,
    /// True when the owner may not be deleted before this object in foreground deletion.
    #[serde(default, skip_serializing_if = "is_false")]
    pub block_owner_deletion: bool,
}

/// Refers to one object (events' `involvedObject`, endpoints' `targetRef`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectReference {
    /// Kind of the object.
    pub kind: Kind,
    /// Namespace (empty for cluster-scoped kinds).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Name of the object.
    pub name: String,
    /// Uid of the object, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// Status of a condition.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known (e.g. the node stopped reporting).
    #[default]
    Unknown,
}

/// An observed condition of a pod, node or deployment (`Ready`, `PodScheduled`,
/// `Available`, `Progressing`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// Condition type, e.g. `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Whether it holds.
    pub status: ConditionStatus,
    /// Machine-readable reason in CamelCase.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Human-readable details.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When the status last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<DateTime<Utc>>,
    /// When the condition was last reported (nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_time: Option<DateTime<Utc>>,
}

impl Condition {
    /// A condition with a type and status, other fields empty.
    pub fn new(type_: &str, status: ConditionStatus) -> Condition {
        Condition {
            type_: type_.to_string(),
            status,
            reason: String::new(),
            message: String::new(),
            last_transition_time: None,
            last_heartbeat_time: None,
        }
    }
}

/// Finds the condition of type `type_` in a list.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Network protocol of a port.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
pub enum Protocol {
    /// TCP (the default).
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    /// UDP.
    #[serde(rename = "UDP")]
    Udp,
}

impl Protocol {
    /// `TCP` or `UDP`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Helper for `skip_serializing_if` on default-valued fields.
pub(crate) fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}
