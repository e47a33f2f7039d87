//! Making Events: the record of what the reconcilers did and why.

use chrono::{DateTime, Utc};
use shoal_api::{Event, EventSource, EventType, Kind, ObjectMeta, ObjectReference};

use super::action::Names;

/// Events older than this are deleted by the garbage collector.
pub const EVENT_TTL: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// Namespace of events about cluster-scoped objects (nodes), as in Kubernetes.
pub const CLUSTER_EVENT_NAMESPACE: &str = "default";

/// An event about `involved`: named `<object>.<10 random characters>`, in the object's
/// namespace (`default` for cluster-scoped objects), reported by `component`.
pub fn new_event(
    involved: ObjectReference,
    type_: EventType,
    reason: &str,
    message: &str,
    component: &str,
    now: DateTime<Utc>,
    names: &mut dyn Names,
) -> Event {
    let namespace = if involved.namespace.is_empty() {
        CLUSTER_EVENT_NAMESPACE.to_string()
    } else {
        involved.namespace.clone()
    };
    let name = format!("{}.{}", involved.name, names.suffix(10));
    Event {
        metadata: ObjectMeta::named(&namespace, &name),
        involved_object: involved,
        reason: reason.to_string(),
        message: message.to_string(),
        type_,
        count: 1,
        first_timestamp: Some(now),
        last_timestamp: Some(now),
        source: EventSource {
            component: component.to_string(),
            host: String::new(),
        },
    }
}

/// A reference to a namespaced or cluster-scoped object from its metadata.
pub fn reference(kind: Kind, meta: &ObjectMeta) -> ObjectReference {
    ObjectReference {
        kind,
        namespace: if kind.namespaced() {
            meta.namespace
                .clone()
                .unwrap_or_else(|| shoal_api::DEFAULT_NAMESPACE.to_string())
        } else {
            String::new()
        },
        name: meta.name.clone(),
        uid: meta.uid.clone(),
    }
}

/// When an event last happened (for trimming): its last, first or creation time.
pub fn event_time(e: &Event) -> Option<DateTime<Utc>> {
    e.last_timestamp
        .or(e.first_timestamp)
        .or(e.metadata.creation_timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::action::CountingNames;

    #[test]
    fn event_for_a_node_lands_in_default_and_validates() {
        let now = DateTime::<Utc>::from_timestamp(1_000_000, 0).unwrap();
        let e = new_event(
            reference(Kind::Node, &ObjectMeta::named("", "node1")),
            EventType::Warning,
            "NodeNotReady",
            "node node1 stopped sending heartbeats",
            "node-controller",
            now,
            &mut CountingNames(0),
        );
        assert_eq!(e.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(e.metadata.name, "node1.0000000001");
        assert_eq!(e.involved_object.namespace, "");
        e.validate().unwrap();
        assert_eq!(event_time(&e), Some(now));
    }
}
