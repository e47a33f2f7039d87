//! Events the agent reports about pods (Pulled, Created, Started, Killing,
//! BackOff, Failed, OOMKilled, Unhealthy), shaped like the controller's:
//! named `<pod>.<10 random characters>`, in the pod's namespace.

use chrono::{DateTime, Utc};
use rand::Rng;
use shoal_api::{Event, EventSource, EventType, Kind, ObjectMeta, ObjectReference};

/// The component name in `source.component`.
pub const COMPONENT: &str = "agent";

/// What an event is about: a pod's namespace, name and uid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Uid.
    pub uid: Option<String>,
}

/// One event to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEvent {
    /// Normal or Warning.
    pub type_: EventType,
    /// CamelCase reason.
    pub reason: String,
    /// Details.
    pub message: String,
}

impl PodEvent {
    /// A Normal event.
    pub fn normal(reason: &str, message: impl Into<String>) -> PodEvent {
        PodEvent {
            type_: EventType::Normal,
            reason: reason.to_string(),
            message: message.into(),
        }
    }

    /// A Warning event.
    pub fn warning(reason: &str, message: impl Into<String>) -> PodEvent {
        PodEvent {
            type_: EventType::Warning,
            reason: reason.to_string(),
            message: message.into(),
        }
    }
}

/// The Event object for `ev` about `pod`, reported by this node.
pub fn new_event(pod: &PodRef, ev: &PodEvent, node: &str, now: DateTime<Utc>) -> Event {
    let suffix: String = {
        const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let mut rng = rand::rng();
        (0..10)
            .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
            .collect()
    };
    let name: String = pod.name.chars().take(240).collect();
    Event {
        metadata: ObjectMeta::named(&pod.namespace, &format!("{name}.{suffix}")),
        involved_object: ObjectReference {
            kind: Kind::Pod,
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
        },
        reason: ev.reason.clone(),
        message: ev.message.clone(),
        type_: ev.type_,
        count: 1,
        first_timestamp: Some(now),
        last_timestamp: Some(now),
        source: EventSource {
            component: COMPONENT.to_string(),
            host: node.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_validate() {
        let p = PodRef {
            namespace: "default".into(),
            name: "web".into(),
            uid: Some("u".into()),
        };
        let e = new_event(
            &p,
            &PodEvent::warning("BackOff", "back-off"),
            "n1",
            Utc::now(),
        );
        e.validate().unwrap();
        assert!(e.metadata.name.starts_with("web."));
        assert_eq!(e.metadata.name.len(), 14);
        assert_eq!(e.source.host, "n1");
        assert_eq!(e.type_, EventType::Warning);
    }
}
