//! The garbage collector: deletes pods whose controlling Deployment (by uid) no longer
//! exists, and events older than [`super::events::EVENT_TTL`].

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use shoal_api::{Deployment, Event, Kind, Pod};

use super::action::{Action, namespace, pod_key, revision};
use super::events::{EVENT_TTL, event_time};

/// A pod whose owner looks gone: deleted only after a linearizable read confirms it.
#[derive(Debug, Clone, PartialEq)]
pub struct Orphan {
    /// The delete of the orphan.
    pub action: Action,
    /// Store key of the missing owner.
    pub owner_key: String,
    /// Uid the owner had.
    pub owner_uid: String,
}

/// What one pass of the garbage collector found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GcPlan {
    /// Pods whose controlling Deployment is missing from the cache.
    pub orphans: Vec<Orphan>,
    /// Deletes of expired events.
    pub expired_events: Vec<Action>,
}

/// Plans one pass: orphans (controller owner of kind Deployment whose uid exists nowhere)
/// and events last seen more than an hour before `now`.
pub fn plan(
    pods: &BTreeMap<String, Pod>,
    deployments: &BTreeMap<String, Deployment>,
    events: &BTreeMap<String, Event>,
    now: DateTime<Utc>,
) -> GcPlan {
    let uids: BTreeSet<&str> = deployments
        .values()
        .filter_map(|d| d.metadata.uid.as_deref())
        .collect();
    let mut out = GcPlan::default();
    for p in pods.values() {
        let Some(o) = p.metadata.controller_owner() else {
            continue;
        };
        if o.kind != Kind::Deployment || uids.contains(o.uid.as_str()) {
            continue;
        }
        out.orphans.push(Orphan {
            action: Action::Delete {
                key: pod_key(p),
                revision: revision(&p.metadata),
            },
            owner_key: shoal_api::key_for(Kind::Deployment, namespace(&p.metadata), &o.name),
            owner_uid: o.uid.clone(),
        });
    }
    for (key, e) in events {
        if event_time(e).is_some_and(|t| now.signed_duration_since(t) > EVENT_TTL) {
            out.expired_events.push(Action::Delete {
                key: key.clone(),
                revision: revision(&e.metadata),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn pod(name: &str, owner_uid: Option<&str>) -> (String, Pod) {
        let owners = match owner_uid {
            Some(u) => json!([{"kind": "Deployment", "name": "web", "uid": u, "controller": true}]),
            None => json!([]),
        };
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "prod", "resourceVersion": "5", "ownerReferences": owners},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}
        }))
        .unwrap();
        (format!("Pod/prod/{name}"), p)
    }

    #[test]
    fn orphans_and_old_events_are_found() {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "prod", "uid": "u-new"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "b"}]}}}
        }))
        .unwrap();
        let deployments = BTreeMap::from([("Deployment/prod/web".to_string(), d)]);
        // `old` belongs to an earlier deployment of the same name (another uid).
        let pods = BTreeMap::from([
            pod("live", Some("u-new")),
            pod("old", Some("u-old")),
            pod("alone", None),
        ]);
        let ev = |name: &str, at: i64| -> (String, Event) {
            let e: Event = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "prod", "resourceVersion": "3"},
                "involvedObject": {"kind": "Pod", "namespace": "prod", "name": "x"},
                "reason": "Scheduled", "lastTimestamp": t(at)
            }))
            .unwrap();
            (format!("Event/prod/{name}"), e)
        };
        let events = BTreeMap::from([ev("fresh", 3000), ev("stale", 0)]);
        let plan = plan(&pods, &deployments, &events, t(3700));
        assert_eq!(
            plan.orphans,
            vec![Orphan {
                action: Action::Delete {
                    key: "Pod/prod/old".into(),
                    revision: 5
                },
                owner_key: "Deployment/prod/web".into(),
                owner_uid: "u-old".into(),
            }]
        );
        assert_eq!(
            plan.expired_events,
            vec![Action::Delete {
                key: "Event/prod/stale".into(),
                revision: 3
            }]
        );
    }
}
