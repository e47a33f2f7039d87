//! The node lifecycle reconciler: a node whose agent stopped heartbeating becomes
//! `Ready=Unknown` (reason `NodeStatusUnknown`, event `NodeNotReady`); after a further
//! delay its pods are replaced elsewhere (owned pods deleted, standalone pods `Failed`
//! with reason `NodeLost`), except daemon pods, which stay with their node.
//!
//! Silence is counted from the node's last heartbeat, but never from before the moment
//! this member started watching the nodes as leader (`watching_since`): a leader cannot
//! have heard heartbeats sent while it was not leading (or while no controller ran), so
//! after a controller outage or a leader change every node gets a whole node timeout to
//! reach the new leader before it is marked, and its pods are not taken away for an
//! outage of the controllers rather than of the node (what Kubernetes' node lifecycle
//! controller does with its own observation times).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use shoal_api::{
    ConditionStatus, EventType, Kind, Node, NodeStatus, Object, Pod, PodPhase, PodStatus,
};

use super::action::{Action, Names, is_terminal, node_of, pod_key, revision, set_condition};
use super::events::{new_event, reference};

/// Component name in the events the node reconciler writes.
pub const COMPONENT: &str = "node-controller";

/// Reason of the `Ready` condition the reconciler sets on a silent node.
pub const NODE_STATUS_UNKNOWN: &str = "NodeStatusUnknown";

/// Reason of pods taken off a lost node.
pub const NODE_LOST: &str = "NodeLost";

/// When the node was last heard of: its heartbeat, or its registration before the first one.
pub fn last_seen(n: &Node) -> Option<DateTime<Utc>> {
    n.status
        .as_ref()
        .and_then(|s| s.heartbeat_time)
        .or(n.metadata.creation_timestamp)
}

/// How long the node has been silent as far as this leader can tell: since its last
/// heartbeat, or since `watching_since` if that is later (see the module docs).
fn silent_for(n: &Node, now: DateTime<Utc>, watching_since: DateTime<Utc>) -> Duration {
    let from = last_seen(n).map_or(watching_since, |t| t.max(watching_since));
    now.signed_duration_since(from)
        .to_std()
        .unwrap_or(Duration::ZERO)
}

/// Plans one pass over every node (see the module docs). Level-triggered: a node already
/// marked is not marked again, pods already taken off are gone or finished.
/// `watching_since` is when this member started leading (and watching heartbeats).
#[allow(clippy::too_many_arguments)]
pub fn plan(
    nodes: &BTreeMap<String, Node>,
    pods: &BTreeMap<String, Pod>,
    now: DateTime<Utc>,
    watching_since: DateTime<Utc>,
    node_timeout: Duration,
    eviction_delay: Duration,
    names: &mut dyn Names,
) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut lost: BTreeMap<&str, Duration> = BTreeMap::new();
    for n in nodes.values() {
        let silent = silent_for(n, now, watching_since);
        if silent <= node_timeout {
            continue;
        }
        let already = n.status.as_ref().is_some_and(|s| {
            shoal_api::find_condition(&s.conditions, "Ready").is_some_and(|c| {
                c.status != ConditionStatus::True && c.reason == NODE_STATUS_UNKNOWN
            })
        });
        if !already {
            let mut n2 = n.clone();
            let status = n2.status.get_or_insert_with(NodeStatus::default);
            let message = match last_seen(n) {
                Some(t) => format!(
                    "node stopped sending heartbeats: last one at {} (timeout {}s)",
                    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    node_timeout.as_secs_f64()
                ),
                None => "node never sent a heartbeat".to_string(),
            };
            set_condition(
                &mut status.conditions,
                "Ready",
                ConditionStatus::Unknown,
                NODE_STATUS_UNKNOWN,
                &message,
                now,
            );
            actions.push(Action::Update(Object::Node(n2)));
            let ev = new_event(
                reference(Kind::Node, &n.metadata),
                EventType::Warning,
                "NodeNotReady",
                &format!("node {} is not ready: {message}", n.metadata.name),
                COMPONENT,
                now,
                names,
            );
            actions.push(Action::Create(Object::Event(ev)));
        }
        if silent > node_timeout.saturating_add(eviction_delay) {
            lost.insert(n.metadata.name.as_str(), silent);
        }
    }
    if lost.is_empty() {
        return actions;
    }
    for p in pods.values() {
        let Some(node) = node_of(p) else { continue };
        let Some(silent) = lost.get(node) else {
            continue;
        };
        // Daemon pods tolerate node.kubernetes.io/not-ready and unreachable (NoExecute):
        // they stay with their node, as in Kubernetes (see `daemonset`).
        if is_terminal(p) || super::daemonset::is_daemon_pod(p) {
            continue;
        }
        let owned = p.metadata.controller_owner().is_some();
        let message = if owned {
            format!(
                "node {node} lost (silent for {}s): pod deleted to be replaced elsewhere",
                silent.as_secs()
            )
        } else {
            format!(
                "node {node} lost (silent for {}s): pod marked Failed",
                silent.as_secs()
            )
        };
        if owned {
            actions.push(Action::Delete {
                key: pod_key(p),
                revision: revision(&p.metadata),
            });
        } else {
            let mut p2 = p.clone();
            let s = p2.status.get_or_insert_with(PodStatus::default);
            s.phase = PodPhase::Failed;
            s.reason = Some(NODE_LOST.to_string());
            s.message = Some(message.clone());
            set_condition(
                &mut s.conditions,
                "Ready",
                ConditionStatus::False,
                NODE_LOST,
                &message,
                now,
            );
            actions.push(Action::Update(Object::Pod(p2)));
        }
        let ev = new_event(
            reference(Kind::Pod, &p.metadata),
            EventType::Warning,
            NODE_LOST,
            &message,
            COMPONENT,
            now,
            names,
        );
        actions.push(Action::Create(Object::Event(ev)));
    }
    actions
}

/// The earliest instant a node crosses a threshold (timeout or eviction) after `now`, so
/// the loop can wake up for it.
pub fn next_deadline(
    nodes: &BTreeMap<String, Node>,
    now: DateTime<Utc>,
    watching_since: DateTime<Utc>,
    node_timeout: Duration,
    eviction_delay: Duration,
) -> Option<Duration> {
    nodes
        .values()
        .filter_map(|n| {
            let silent = silent_for(n, now, watching_since);
            [node_timeout, node_timeout.saturating_add(eviction_delay)]
                .into_iter()
                .filter(|d| *d >= silent)
                .map(|d| d - silent)
                .min()
        })
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::action::CountingNames;
    use serde_json::json;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn node(name: &str, heartbeat: i64) -> (String, Node) {
        let n: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "resourceVersion": "9", "creationTimestamp": t(0)},
            "status": {"capacity": {"cpu": "4", "memory": "8Gi", "pods": 110},
                       "conditions": [{"type": "Ready", "status": "True"}],
                       "heartbeatTime": t(heartbeat)}
        }))
        .unwrap();
        (format!("Node//{name}"), n)
    }

    fn pod(name: &str, node: &str, owned: bool) -> (String, Pod) {
        let owners = if owned {
            json!([{"kind": "Deployment", "name": "web", "uid": "u-web", "controller": true}])
        } else {
            json!([])
        };
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "resourceVersion": "11", "ownerReferences": owners},
            "spec": {"containers": [{"name": "c", "image": "busybox"}], "nodeName": node},
            "status": {"phase": "Running"}
        }))
        .unwrap();
        (format!("Pod/default/{name}"), p)
    }

    const TIMEOUT: Duration = Duration::from_secs(10);
    const DELAY: Duration = Duration::from_secs(20);

    #[test]
    fn fresh_nodes_need_nothing() {
        let nodes = BTreeMap::from([node("n1", 100)]);
        let pods = BTreeMap::from([pod("a", "n1", true)]);
        assert!(
            plan(
                &nodes,
                &pods,
                t(110),
                t(0),
                TIMEOUT,
                DELAY,
                &mut CountingNames(0)
            )
            .is_empty()
        );
        assert_eq!(
            next_deadline(&nodes, t(105), t(0), TIMEOUT, DELAY),
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn silent_node_becomes_unknown_once_with_an_event() {
        let mut nodes = BTreeMap::from([node("n1", 100), node("n2", 109)]);
        let pods = BTreeMap::from([pod("a", "n1", true)]);
        let a = plan(
            &nodes,
            &pods,
            t(111),
            t(0),
            TIMEOUT,
            DELAY,
            &mut CountingNames(0),
        );
        assert_eq!(a.len(), 2, "{a:?}");
        let Action::Update(Object::Node(n)) = &a[0] else {
            panic!("{a:?}")
        };
        assert_eq!(n.metadata.name, "n1");
        let c = shoal_api::find_condition(&n.status.as_ref().unwrap().conditions, "Ready").unwrap();
        assert_eq!(
            (c.status, c.reason.as_str()),
            (ConditionStatus::Unknown, NODE_STATUS_UNKNOWN)
        );
        assert!(matches!(
            a[0].to_write(),
            shoal_store::Write::Update {
                expected_revision: Some(9),
                ..
            }
        ));
        let Action::Create(Object::Event(e)) = &a[1] else {
            panic!("{a:?}")
        };
        assert_eq!(
            (e.reason.as_str(), e.type_),
            ("NodeNotReady", EventType::Warning)
        );
        assert_eq!(e.involved_object.kind, Kind::Node);
        // Stored as planned: the next pass (before the eviction delay) does nothing.
        nodes.insert("Node//n1".into(), n.clone());
        assert!(
            plan(
                &nodes,
                &pods,
                t(115),
                t(0),
                TIMEOUT,
                DELAY,
                &mut CountingNames(0)
            )
            .is_empty()
        );
    }

    #[test]
    fn lost_node_pods_are_deleted_or_failed() {
        let (k, mut n) = node("n1", 100);
        set_condition(
            &mut n.status.as_mut().unwrap().conditions,
            "Ready",
            ConditionStatus::Unknown,
            NODE_STATUS_UNKNOWN,
            "x",
            t(111),
        );
        let nodes = BTreeMap::from([(k, n), node("n2", 129)]);
        let (kd, mut done) = pod("done", "n1", false);
        done.status.as_mut().unwrap().phase = PodPhase::Succeeded;
        // A daemon pod stays with its lost node (it tolerates not-ready/unreachable).
        let (kds, mut daemon) = pod("daemon", "n1", true);
        daemon.metadata.owner_references[0].kind = Kind::DaemonSet;
        let pods = BTreeMap::from([
            pod("owned", "n1", true),
            pod("alone", "n1", false),
            pod("elsewhere", "n2", true),
            (kd, done),
            (kds, daemon),
        ]);
        // Not yet: 29 s silent < 10 + 20.
        assert!(
            plan(
                &nodes,
                &pods,
                t(129),
                t(0),
                TIMEOUT,
                DELAY,
                &mut CountingNames(0)
            )
            .is_empty()
        );
        let a = plan(
            &nodes,
            &pods,
            t(131),
            t(0),
            TIMEOUT,
            DELAY,
            &mut CountingNames(0),
        );
        let deleted: Vec<&str> = a
            .iter()
            .filter_map(|a| match a {
                Action::Delete { key, .. } => Some(key.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(deleted, vec!["Pod/default/owned"]);
        let failed: Vec<&Pod> = a
            .iter()
            .filter_map(|a| match a {
                Action::Update(Object::Pod(p)) => Some(p),
                _ => None,
            })
            .collect();
        assert_eq!(failed.len(), 1);
        let s = failed[0].status.as_ref().unwrap();
        assert_eq!(
            (
                failed[0].metadata.name.as_str(),
                s.phase,
                s.reason.as_deref()
            ),
            ("alone", PodPhase::Failed, Some(NODE_LOST))
        );
        let events = a
            .iter()
            .filter(|a| matches!(a, Action::Create(Object::Event(_))))
            .count();
        assert_eq!(events, 2);
    }

    #[test]
    fn a_new_leader_gives_every_node_a_whole_timeout() {
        // Last heartbeat at 100; this member leads (and hears heartbeats) from 200.
        let nodes = BTreeMap::from([node("n1", 100)]);
        let pods = BTreeMap::from([pod("owned", "n1", true)]);
        let plan_at = |now: i64| {
            plan(
                &nodes,
                &pods,
                t(now),
                t(200),
                TIMEOUT,
                DELAY,
                &mut CountingNames(0),
            )
        };
        // Silent for 105 s by the heartbeat, but only 5 s by this leader's watch.
        assert!(plan_at(205).is_empty());
        assert_eq!(
            next_deadline(&nodes, t(205), t(200), TIMEOUT, DELAY),
            Some(Duration::from_secs(5))
        );
        // A whole timeout after the leader started: marked, not yet evicted.
        let a = plan_at(211);
        assert_eq!(a.len(), 2, "{a:?}");
        assert!(!a.iter().any(|a| matches!(a, Action::Delete { .. })));
        // Timeout + eviction delay after the leader started: evicted.
        assert!(
            plan_at(231)
                .iter()
                .any(|a| matches!(a, Action::Delete { .. }))
        );
        // A heartbeat after the leader started counts from the heartbeat as before.
        let fresh = BTreeMap::from([node("n1", 210)]);
        assert!(
            plan(
                &fresh,
                &pods,
                t(219),
                t(200),
                TIMEOUT,
                DELAY,
                &mut CountingNames(0)
            )
            .is_empty()
        );
        assert_eq!(
            plan(
                &fresh,
                &pods,
                t(221),
                t(200),
                TIMEOUT,
                DELAY,
                &mut CountingNames(0)
            )
            .len(),
            2
        );
    }

    #[test]
    fn node_without_heartbeat_uses_registration_time() {
        let (k, mut n) = node("n1", 0);
        n.status.as_mut().unwrap().heartbeat_time = None;
        let nodes = BTreeMap::from([(k, n)]);
        assert!(
            plan(
                &nodes,
                &BTreeMap::new(),
                t(5),
                t(0),
                TIMEOUT,
                DELAY,
                &mut CountingNames(0)
            )
            .is_empty()
        );
        assert_eq!(
            plan(
                &nodes,
                &BTreeMap::new(),
                t(11),
                t(0),
                TIMEOUT,
                DELAY,
                &mut CountingNames(0)
            )
            .len(),
            2
        );
    }
}
