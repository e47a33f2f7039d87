//! The node lifecycle reconciler: a node whose agent stopped heartbeating becomes
//! `Ready=Unknown` (reason `NodeStatusUnknown`, event `NodeNotReady`); after a further
//! delay its pods are replaced elsewhere (owned pods deleted, standalone pods `Failed`
//! with reason `NodeLost`).

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

fn silent_for(n: &Node, now: DateTime<Utc>) -> Duration {
    last_seen(n).map_or(Duration::MAX, |t| {
        now.signed_duration_since(t)
            .to_std()
            .unwrap_or(Duration::ZERO)
    })
}

/// Plans one pass over every node (see the module docs). Level-triggered: a node already
/// marked is not marked again, pods already taken off are gone or finished.
pub fn plan(
    nodes: &BTreeMap<String, Node>,
    pods: &BTreeMap<String, Pod>,
    now: DateTime<Utc>,
    node_timeout: Duration,
    eviction_delay: Duration,
    names: &mut dyn Names,
) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut lost: BTreeMap<&str, Duration> = BTreeMap::new();
    for n in nodes.values() {
        let silent = silent_for(n, now);
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
        if is_terminal(p) {
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
    node_timeout: Duration,
    eviction_delay: Duration,
) -> Option<Duration> {
    nodes
        .values()
        .filter_map(|n| {
            let silent = silent_for(n, now);
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
        assert!(plan(&nodes, &pods, t(110), TIMEOUT, DELAY, &mut CountingNames(0)).is_empty());
        assert_eq!(
            next_deadline(&nodes, t(105), TIMEOUT, DELAY),
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn silent_node_becomes_unknown_once_with_an_event() {
        let mut nodes = BTreeMap::from([node("n1", 100), node("n2", 109)]);
        let pods = BTreeMap::from([pod("a", "n1", true)]);
        let a = plan(&nodes, &pods, t(111), TIMEOUT, DELAY, &mut CountingNames(0));
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
        assert!(plan(&nodes, &pods, t(115), TIMEOUT, DELAY, &mut CountingNames(0)).is_empty());
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
        let pods = BTreeMap::from([
            pod("owned", "n1", true),
            pod("alone", "n1", false),
            pod("elsewhere", "n2", true),
            (kd, done),
        ]);
        // Not yet: 29 s silent < 10 + 20.
        assert!(plan(&nodes, &pods, t(129), TIMEOUT, DELAY, &mut CountingNames(0)).is_empty());
        let a = plan(&nodes, &pods, t(131), TIMEOUT, DELAY, &mut CountingNames(0));
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
    fn node_without_heartbeat_uses_registration_time() {
        let (k, mut n) = node("n1", 0);
        n.status.as_mut().unwrap().heartbeat_time = None;
        let nodes = BTreeMap::from([(k, n)]);
        assert!(
            plan(
                &nodes,
                &BTreeMap::new(),
                t(5),
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
                TIMEOUT,
                DELAY,
                &mut CountingNames(0)
            )
            .len(),
            2
        );
    }
}
