//! The leader's in-memory view of the objects the reconcilers read, fed by list + watch
//! and by the outcomes of the reconcilers' own writes.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use shoal_api::{
    CronJob, DaemonSet, Deployment, Endpoints, Event, Job, Namespace, Node, Object,
    PersistentVolume, PersistentVolumeClaim, Pod, Service, StatefulSet,
};
use shoal_store::{EventType, PendingEvent, StoreError, WatchEvent, WriteOutcome};

/// Prefixes the reconcilers follow.
pub const PREFIXES: [&str; 13] = [
    "Pod/",
    "Deployment/",
    "DaemonSet/",
    "StatefulSet/",
    "PersistentVolumeClaim/",
    "PersistentVolume/",
    "Node/",
    "Event/",
    "Service/",
    "Endpoints/",
    "Namespace/",
    "Job/",
    "CronJob/",
];

/// Typed objects by store key, one map per kind.
#[derive(Debug, Default, Clone)]
pub struct Cache {
    /// Pods by key.
    pub pods: BTreeMap<String, Pod>,
    /// Deployments by key.
    pub deployments: BTreeMap<String, Deployment>,
    /// DaemonSets by key.
    pub daemonsets: BTreeMap<String, DaemonSet>,
    /// StatefulSets by key.
    pub statefulsets: BTreeMap<String, StatefulSet>,
    /// PersistentVolumeClaims by key.
    pub claims: BTreeMap<String, PersistentVolumeClaim>,
    /// PersistentVolumes by key.
    pub volumes: BTreeMap<String, PersistentVolume>,
    /// Nodes by key.
    pub nodes: BTreeMap<String, Node>,
    /// Events by key.
    pub events: BTreeMap<String, Event>,
    /// Services by key.
    pub services: BTreeMap<String, Service>,
    /// Endpoints by key.
    pub endpoints: BTreeMap<String, Endpoints>,
    /// Namespaces by key.
    pub namespaces: BTreeMap<String, Namespace>,
    /// Jobs by key.
    pub jobs: BTreeMap<String, Job>,
    /// CronJobs by key.
    pub cronjobs: BTreeMap<String, CronJob>,
    /// How many Nodes the last pod CIDR plan left without a block (warned once per change).
    pub cidr_exhausted: usize,
    /// Revision of the last change seen per key (also for deletions), so that a late
    /// watch event never overrides a newer write outcome.
    revs: HashMap<String, u64>,
}

impl Cache {
    /// Replaces everything under `prefix` with a fresh list.
    pub fn load(&mut self, prefix: &str, items: Vec<Value>, revision: u64) {
        match prefix {
            "Pod/" => self.pods.clear(),
            "Deployment/" => self.deployments.clear(),
            "DaemonSet/" => self.daemonsets.clear(),
            "StatefulSet/" => self.statefulsets.clear(),
            "PersistentVolumeClaim/" => self.claims.clear(),
            "PersistentVolume/" => self.volumes.clear(),
            "Node/" => self.nodes.clear(),
            "Event/" => self.events.clear(),
            "Service/" => self.services.clear(),
            "Endpoints/" => self.endpoints.clear(),
            "Namespace/" => self.namespaces.clear(),
            "Job/" => self.jobs.clear(),
            "CronJob/" => self.cronjobs.clear(),
            _ => {}
        }
        self.revs.retain(|k, _| !k.starts_with(prefix));
        for v in items {
            let key = key_of(&v);
            self.set(&key, Some(&v), revision);
        }
    }

    /// Applies one watch event (ignored when older than what the cache holds for its key).
    pub fn apply_event(&mut self, ev: &WatchEvent) {
        let obj = (ev.event_type != EventType::Deleted).then_some(&ev.object);
        self.set(&ev.key, obj, ev.revision);
    }

    /// Applies one queued watch event, decoding its object only when the cache keeps it
    /// (a deletion needs just the key; an event older than the cache's copy is skipped).
    pub fn apply_pending(&mut self, ev: &PendingEvent) -> Result<(), StoreError> {
        if self.revs.get(ev.key()).is_some_and(|r| *r > ev.revision()) {
            return Ok(());
        }
        if ev.event_type() == EventType::Deleted {
            self.set(ev.key(), None, ev.revision());
        } else {
            self.set(ev.key(), Some(&ev.object()?), ev.revision());
        }
        Ok(())
    }

    /// Applies the outcomes of a write this member made.
    pub fn apply_outcomes(&mut self, outcomes: &[WriteOutcome], deleted: &[String]) {
        for o in outcomes {
            let obj = (!deleted.contains(&o.key)).then_some(&o.object);
            self.set(&o.key, obj, o.revision);
        }
    }

    /// Sets (or removes, for `None`) the object at `key` if `revision` is not older than
    /// the last change seen for it.
    pub fn set(&mut self, key: &str, object: Option<&Value>, revision: u64) {
        if self.revs.get(key).is_some_and(|r| *r > revision) {
            return;
        }
        self.revs.insert(key.to_string(), revision);
        let parsed = match object {
            None => None,
            Some(v) => match Object::from_json(v) {
                Ok(o) => Some(o),
                Err(e) => {
                    tracing::warn!("reconcilers ignore {key}: cannot decode it: {e}");
                    None
                }
            },
        };
        let kind = key.split('/').next().unwrap_or("");
        match (kind, parsed) {
            ("Pod", Some(Object::Pod(p))) => {
                self.pods.insert(key.to_string(), p);
            }
            ("Pod", _) => {
                self.pods.remove(key);
            }
            ("Deployment", Some(Object::Deployment(d))) => {
                self.deployments.insert(key.to_string(), d);
            }
            ("Deployment", _) => {
                self.deployments.remove(key);
            }
            ("DaemonSet", Some(Object::DaemonSet(d))) => {
                self.daemonsets.insert(key.to_string(), d);
            }
            ("DaemonSet", _) => {
                self.daemonsets.remove(key);
            }
            ("StatefulSet", Some(Object::StatefulSet(d))) => {
                self.statefulsets.insert(key.to_string(), d);
            }
            ("StatefulSet", _) => {
                self.statefulsets.remove(key);
            }
            ("PersistentVolumeClaim", Some(Object::PersistentVolumeClaim(c))) => {
                self.claims.insert(key.to_string(), c);
            }
            ("PersistentVolumeClaim", _) => {
                self.claims.remove(key);
            }
            ("PersistentVolume", Some(Object::PersistentVolume(v))) => {
                self.volumes.insert(key.to_string(), v);
            }
            ("PersistentVolume", _) => {
                self.volumes.remove(key);
            }
            ("Node", Some(Object::Node(n))) => {
                self.nodes.insert(key.to_string(), n);
            }
            ("Node", _) => {
                self.nodes.remove(key);
            }
            ("Event", Some(Object::Event(e))) => {
                self.events.insert(key.to_string(), e);
            }
            ("Event", _) => {
                self.events.remove(key);
            }
            ("Service", Some(Object::Service(s))) => {
                self.services.insert(key.to_string(), s);
            }
            ("Service", _) => {
                self.services.remove(key);
            }
            ("Endpoints", Some(Object::Endpoints(e))) => {
                self.endpoints.insert(key.to_string(), e);
            }
            ("Endpoints", _) => {
                self.endpoints.remove(key);
            }
            ("Namespace", Some(Object::Namespace(n))) => {
                self.namespaces.insert(key.to_string(), n);
            }
            ("Namespace", _) => {
                self.namespaces.remove(key);
            }
            ("Job", Some(Object::Job(j))) => {
                self.jobs.insert(key.to_string(), j);
            }
            ("Job", _) => {
                self.jobs.remove(key);
            }
            ("CronJob", Some(Object::CronJob(c))) => {
                self.cronjobs.insert(key.to_string(), c);
            }
            ("CronJob", _) => {
                self.cronjobs.remove(key);
            }
            _ => {}
        }
    }
}

/// The store key of a stored object, from its `kind` and metadata.
pub fn key_of(v: &Value) -> String {
    let s = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    format!(
        "{}/{}/{}",
        s("/kind"),
        s("/metadata/namespace"),
        s("/metadata/name")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, rv: u64) -> Value {
        json!({"apiVersion": "shoal/v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": "default", "resourceVersion": rv.to_string()},
               "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    }

    #[test]
    fn late_events_do_not_override_newer_outcomes() {
        let mut c = Cache::default();
        c.load("Pod/", vec![pod("a", 3)], 3);
        assert_eq!(key_of(&pod("a", 3)), "Pod/default/a");
        assert!(c.pods.contains_key("Pod/default/a"));
        // Our own delete at revision 9 is applied before the watch shows an older update.
        c.apply_outcomes(
            &[WriteOutcome {
                key: "Pod/default/a".into(),
                revision: 9,
                object: pod("a", 9),
                created: false,
            }],
            &["Pod/default/a".into()],
        );
        assert!(c.pods.is_empty());
        c.apply_event(&WatchEvent {
            revision: 5,
            event_type: EventType::Modified,
            key: "Pod/default/a".into(),
            object: pod("a", 5),
            prev_object: None,
        });
        assert!(
            c.pods.is_empty(),
            "an older event must not resurrect a deleted pod"
        );
        c.apply_event(&WatchEvent {
            revision: 10,
            event_type: EventType::Added,
            key: "Pod/default/a".into(),
            object: pod("a", 10),
            prev_object: None,
        });
        assert_eq!(
            c.pods["Pod/default/a"].metadata.resource_version.as_deref(),
            Some("10")
        );
    }
}
