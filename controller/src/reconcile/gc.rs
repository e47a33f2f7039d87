//! The garbage collector: deletes pods whose controlling Deployment, DaemonSet,
//! StatefulSet or Job
//! (by uid) no longer exists, Jobs whose controlling CronJob no longer exists, events older than
//! [`super::events::EVENT_TTL`], and the oldest events beyond the limit.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use shoal_api::{CronJob, DaemonSet, Deployment, Event, Job, Kind, ObjectMeta, Pod, StatefulSet};

use super::action::{Action, namespace, revision};
use super::events::{EVENT_TTL, event_time};

/// A pod or Job whose owner looks gone: deleted only after a linearizable read confirms it.
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
    /// Pods whose controlling Deployment, DaemonSet or Job, and Jobs whose controlling
    /// CronJob, are missing from the cache.
    pub orphans: Vec<Orphan>,
    /// Deletes of expired events.
    pub expired_events: Vec<Action>,
}

/// The objects whose owners the collector checks.
#[derive(Debug, Clone, Copy)]
pub struct Owned<'a> {
    /// Pods by key.
    pub pods: &'a BTreeMap<String, Pod>,
    /// Deployments by key.
    pub deployments: &'a BTreeMap<String, Deployment>,
    /// DaemonSets by key.
    pub daemonsets: &'a BTreeMap<String, DaemonSet>,
    /// StatefulSets by key (their claims are kept: Kubernetes' default retention).
    pub statefulsets: &'a BTreeMap<String, StatefulSet>,
    /// Jobs by key.
    pub jobs: &'a BTreeMap<String, Job>,
    /// CronJobs by key.
    pub cronjobs: &'a BTreeMap<String, CronJob>,
}

/// Plans one pass: orphans (pods whose controller owner of kind Deployment, DaemonSet or
/// Job, and Jobs whose controller owner of kind CronJob, has a uid that exists nowhere),
/// events last seen more than an hour before `now`, and the oldest events beyond `event_limit`
/// (by time last seen, then key; an event without a time counts as oldest).
pub fn plan(
    owned: Owned<'_>,
    events: &BTreeMap<String, Event>,
    event_limit: usize,
    now: DateTime<Utc>,
) -> GcPlan {
    let uids: BTreeSet<(Kind, &str)> = (owned
        .deployments
        .values()
        .map(|d| (Kind::Deployment, &d.metadata)))
    .chain(
        owned
            .daemonsets
            .values()
            .map(|d| (Kind::DaemonSet, &d.metadata)),
    )
    .chain(
        owned
            .statefulsets
            .values()
            .map(|s| (Kind::StatefulSet, &s.metadata)),
    )
    .chain(owned.jobs.values().map(|j| (Kind::Job, &j.metadata)))
    .chain(
        owned
            .cronjobs
            .values()
            .map(|c| (Kind::CronJob, &c.metadata)),
    )
    .filter_map(|(k, m)| m.uid.as_deref().map(|u| (k, u)))
    .collect();
    let mut out = GcPlan::default();
    let candidates = (owned.pods.values().map(|p| {
        (
            Kind::Pod,
            &p.metadata,
            [
                Kind::Deployment,
                Kind::DaemonSet,
                Kind::StatefulSet,
                Kind::Job,
            ]
            .as_slice(),
        )
    }))
    .chain(
        owned
            .jobs
            .values()
            .map(|j| (Kind::Job, &j.metadata, [Kind::CronJob].as_slice())),
    );
    for (kind, meta, owner_kinds) in candidates {
        if let Some(o) = orphan(kind, meta, owner_kinds, &uids) {
            out.orphans.push(o);
        }
    }
    let mut kept = Vec::with_capacity(events.len());
    for (key, e) in events {
        let t = event_time(e);
        if t.is_some_and(|t| now.signed_duration_since(t) > EVENT_TTL) {
            out.expired_events.push(Action::Delete {
                key: key.clone(),
                revision: revision(&e.metadata),
            });
        } else {
            kept.push((t, key, e));
        }
    }
    if kept.len() > event_limit {
        kept.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let excess = kept.len() - event_limit;
        for (_, key, e) in kept.into_iter().take(excess) {
            out.expired_events.push(Action::Delete {
                key: key.clone(),
                revision: revision(&e.metadata),
            });
        }
    }
    out
}

fn orphan(
    kind: Kind,
    meta: &ObjectMeta,
    owner_kinds: &[Kind],
    uids: &BTreeSet<(Kind, &str)>,
) -> Option<Orphan> {
    let o = meta.controller_owner()?;
    if !owner_kinds.contains(&o.kind) || uids.contains(&(o.kind, o.uid.as_str())) {
        return None;
    }
    let ns = namespace(meta);
    Some(Orphan {
        action: Action::Delete {
            key: shoal_api::key_for(kind, ns, &meta.name),
            revision: revision(meta),
        },
        owner_key: shoal_api::key_for(o.kind, ns, &o.name),
        owner_uid: o.uid.clone(),
    })
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
        let plan = plan(
            Owned {
                pods: &pods,
                deployments: &deployments,
                daemonsets: &BTreeMap::new(),
                statefulsets: &BTreeMap::new(),
                jobs: &BTreeMap::new(),
                cronjobs: &BTreeMap::new(),
            },
            &events,
            10,
            t(3700),
        );
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

    #[test]
    fn pods_of_deleted_jobs_and_jobs_of_deleted_cronjobs_are_orphans() {
        let owned_by = |kind: &str, uid: &str| json!([{"kind": kind, "name": "x", "uid": uid, "controller": true}]);
        let job: Job = serde_json::from_value(json!({
            "metadata": {"name": "x-1", "namespace": "prod", "uid": "j-live", "resourceVersion": "8",
                         "ownerReferences": owned_by("CronJob", "c-gone")},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "b"}]}}}
        }))
        .unwrap();
        let pod = |name: &str, uid: &str| -> (String, Pod) {
            let p: Pod = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "prod", "resourceVersion": "5",
                             "ownerReferences": owned_by("Job", uid)},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}
            }))
            .unwrap();
            (format!("Pod/prod/{name}"), p)
        };
        let pods = BTreeMap::from([pod("kept", "j-live"), pod("gone", "j-old")]);
        let jobs = BTreeMap::from([("Job/prod/x-1".to_string(), job)]);
        let plan = plan(
            Owned {
                pods: &pods,
                deployments: &BTreeMap::new(),
                daemonsets: &BTreeMap::new(),
                statefulsets: &BTreeMap::new(),
                jobs: &jobs,
                cronjobs: &BTreeMap::new(),
            },
            &BTreeMap::new(),
            10,
            t(0),
        );
        let found: Vec<(String, String)> = plan
            .orphans
            .iter()
            .map(|o| (o.action.key(), o.owner_key.clone()))
            .collect();
        assert_eq!(
            found,
            vec![
                ("Pod/prod/gone".to_string(), "Job/prod/x".to_string()),
                ("Job/prod/x-1".to_string(), "CronJob/prod/x".to_string()),
            ]
        );
    }

    #[test]
    fn the_oldest_events_beyond_the_limit_go() {
        let ev = |name: &str, at: Option<i64>| -> (String, Event) {
            let mut v = json!({
                "metadata": {"name": name, "namespace": "prod", "resourceVersion": "3"},
                "involvedObject": {"kind": "Pod", "namespace": "prod", "name": "x"},
                "reason": "Started"
            });
            if let Some(at) = at {
                v["lastTimestamp"] = json!(t(at));
            }
            (
                format!("Event/prod/{name}"),
                serde_json::from_value(v).unwrap(),
            )
        };
        // Keys in the reverse order of age: the plan sorts by time, not by key.
        let events = BTreeMap::from([
            ev("a", Some(50)),
            ev("b", Some(40)),
            ev("c", Some(30)),
            ev("d", None),
            ev("e", Some(-7200)),
        ]);
        let empty = BTreeMap::new();
        let owned = Owned {
            pods: &BTreeMap::new(),
            deployments: &BTreeMap::new(),
            daemonsets: &BTreeMap::new(),
            statefulsets: &BTreeMap::new(),
            jobs: &BTreeMap::new(),
            cronjobs: &empty,
        };
        let deleted = |limit| -> Vec<String> {
            plan(owned, &events, limit, t(60))
                .expired_events
                .iter()
                .map(Action::key)
                .collect()
        };
        // `e` is past the hour whatever the limit; then the timeless `d`, then `c`.
        assert_eq!(deleted(10), ["Event/prod/e"]);
        assert_eq!(deleted(4), ["Event/prod/e"]);
        assert_eq!(deleted(2), ["Event/prod/e", "Event/prod/d", "Event/prod/c"]);
        assert_eq!(deleted(0).len(), 5);
    }

    #[test]
    fn pods_of_deleted_daemonsets_are_orphans() {
        let pod = |name: &str, uid: &str| -> (String, Pod) {
            let p: Pod = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "prod", "resourceVersion": "5",
                             "ownerReferences": [{"kind": "DaemonSet", "name": "agent", "uid": uid, "controller": true}]},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}
            }))
            .unwrap();
            (format!("Pod/prod/{name}"), p)
        };
        let ds: DaemonSet = serde_json::from_value(json!({
            "metadata": {"name": "agent", "namespace": "prod", "uid": "d-live"},
            "spec": {"selector": {"matchLabels": {"app": "a"}},
                     "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "b"}]}}}
        }))
        .unwrap();
        let pods = BTreeMap::from([pod("kept", "d-live"), pod("gone", "d-old")]);
        let daemonsets = BTreeMap::from([("DaemonSet/prod/agent".to_string(), ds)]);
        let owned = Owned {
            pods: &pods,
            deployments: &BTreeMap::new(),
            daemonsets: &daemonsets,
            statefulsets: &BTreeMap::new(),
            jobs: &BTreeMap::new(),
            cronjobs: &BTreeMap::new(),
        };
        let found: Vec<(String, String, String)> = plan(owned, &BTreeMap::new(), 10, t(0))
            .orphans
            .iter()
            .map(|o| (o.action.key(), o.owner_key.clone(), o.owner_uid.clone()))
            .collect();
        assert_eq!(
            found,
            vec![(
                "Pod/prod/gone".to_string(),
                "DaemonSet/prod/agent".to_string(),
                "d-old".to_string()
            )]
        );
        // With the daemon set deleted, its pods are orphans too.
        let owned = Owned {
            daemonsets: &BTreeMap::new(),
            statefulsets: &BTreeMap::new(),
            ..owned
        };
        assert_eq!(plan(owned, &BTreeMap::new(), 10, t(0)).orphans.len(), 2);
    }
}
