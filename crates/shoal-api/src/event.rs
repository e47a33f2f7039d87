//! Event: a record of something that happened to an object.

use crate::meta::{ObjectMeta, ObjectReference};
use crate::validation::{self as v, ValidationErrors};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Severity of an event.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum EventType {
    /// Routine (Scheduled, Pulled, Started).
    #[default]
    Normal,
    /// Needs attention (BackOff, OOMKilled, NodeNotReady).
    Warning,
}

/// Who reported an event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventSource {
    /// `scheduler`, `deployment-controller`, `agent`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub component: String,
    /// Node name, for agents.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
}

fn default_count() -> i32 {
    1
}

/// An event. Unlike other kinds it has no spec: its fields are at the top level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Event {
    /// Name, namespace (that of the involved object), server-set fields.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The object the event is about.
    pub involved_object: ObjectReference,
    /// CamelCase reason: `Scheduled`, `Pulled`, `Started`, `Killing`, `BackOff`, `OOMKilled`.
    pub reason: String,
    /// Human-readable details.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// `Normal` (default) or `Warning`.
    #[serde(default, rename = "type")]
    pub type_: EventType,
    /// How many times it happened (default 1).
    #[serde(default = "default_count")]
    pub count: i32,
    /// First occurrence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_timestamp: Option<DateTime<Utc>>,
    /// Last occurrence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_timestamp: Option<DateTime<Utc>>,
    /// Reporter.
    #[serde(default)]
    pub source: EventSource,
}

impl Event {
    /// Checks name, involved object and count.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::new();
        self.metadata
            .validate(crate::Kind::Event, v::check_dns1123_subdomain, &mut errs);
        if self.involved_object.name.is_empty() {
            errs.push("involvedObject.name", "required field is missing");
        }
        if self.involved_object.kind.namespaced() && self.involved_object.namespace.is_empty() {
            errs.push(
                "involvedObject.namespace",
                format!("required for a {}", self.involved_object.kind),
            );
        }
        if self.reason.is_empty() {
            errs.push("reason", "required field is missing");
        }
        if self.count < 1 {
            errs.push("count", format!("must be at least 1, got {}", self.count));
        }
        errs.into_result()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_validation() {
        let e: Event = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1.1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "namespace": "default", "name": "web-1"},
            "reason": "Scheduled"
        }))
        .unwrap();
        assert_eq!(e.count, 1);
        assert_eq!(e.type_, EventType::Normal);
        e.validate().unwrap();
        let mut bad = e.clone();
        bad.involved_object.namespace.clear();
        bad.count = 0;
        let m = bad.validate().unwrap_err().to_string();
        assert!(
            m.contains("involvedObject.namespace: required for a Pod"),
            "{m}"
        );
        assert!(m.contains("count: must be at least 1, got 0"), "{m}");
    }
}
