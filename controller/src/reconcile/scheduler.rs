//! The scheduler reconciler: binds pending pods to nodes with `shoal-scheduler`'s pure
//! placement, and explains the pods that fit nowhere.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use shoal_api::{ConditionStatus, EventType, Kind, Node, Object, Pod, PodStatus};
use shoal_scheduler as sched;

use super::action::{Action, Names, bind, is_terminal, node_of, pod_key, set_condition};
use super::events::{new_event, reference};
use super::volumes;

/// Component name in the events the scheduler writes.
pub const COMPONENT: &str = "scheduler";

/// Pod slots of a node that reports none (Kubernetes' default).
pub const DEFAULT_POD_SLOTS: u64 = 110;

/// True when the node's last heartbeat (or, before the first one, its registration) is at
/// most `timeout` old.
pub fn heartbeat_fresh(node: &Node, now: DateTime<Utc>, timeout: Duration) -> bool {
    let last = node
        .status
        .as_ref()
        .and_then(|s| s.heartbeat_time)
        .or(node.metadata.creation_timestamp);
    match last {
        Some(t) => match now.signed_duration_since(t).to_std() {
            Ok(age) => age <= timeout,
            // A heartbeat from the future (clock skew) counts as fresh.
            Err(_) => true,
        },
        None => false,
    }
}

fn resources(r: shoal_api::Resources) -> sched::Resources {
    let u = |v: i64| u64::try_from(v).unwrap_or(0);
    sched::Resources::new(u(r.cpu_millis), u(r.memory_bytes), u(r.pods))
}

fn protocol(p: shoal_api::Protocol) -> sched::Protocol {
    match p {
        shoal_api::Protocol::Tcp => sched::Protocol::Tcp,
        shoal_api::Protocol::Udp => sched::Protocol::Udp,
    }
}

fn effect(e: shoal_api::TaintEffect) -> sched::TaintEffect {
    match e {
        shoal_api::TaintEffect::NoSchedule => sched::TaintEffect::NoSchedule,
        shoal_api::TaintEffect::PreferNoSchedule => sched::TaintEffect::PreferNoSchedule,
        shoal_api::TaintEffect::NoExecute => sched::TaintEffect::NoExecute,
    }
}

fn host_ports(p: &Pod) -> Vec<(u16, sched::Protocol)> {
    p.spec
        .host_ports()
        .into_iter()
        .filter_map(|(port, proto)| Some((u16::try_from(port).ok()?, protocol(proto))))
        .collect()
}

fn owner(p: &Pod) -> Option<String> {
    p.metadata.controller_owner().map(|o| o.uid.clone())
}

/// The scheduler's view of a node.
pub fn node_info(n: &Node, now: DateTime<Utc>, timeout: Duration) -> sched::NodeInfo {
    let mut allocatable = resources(n.allocatable());
    if allocatable.pods == 0 {
        allocatable.pods = DEFAULT_POD_SLOTS;
    }
    sched::NodeInfo {
        name: n.metadata.name.clone(),
        labels: n.metadata.labels.clone(),
        ready: n.is_ready() && heartbeat_fresh(n, now, timeout),
        unschedulable: n.spec.unschedulable,
        taints: n
            .spec
            .taints
            .iter()
            .map(|t| sched::Taint::new(&t.key, &t.value, effect(t.effect)))
            .collect(),
        allocatable,
        used_host_ports: Default::default(),
    }
}

/// The scheduler's view of a pending pod.
pub fn pod_request(p: &Pod) -> sched::PodRequest {
    sched::PodRequest {
        key: pod_key(p),
        requests: resources(p.spec.resource_requests()),
        node_selector: p.spec.node_selector.clone(),
        tolerations: p
            .spec
            .tolerations
            .iter()
            .map(|t| sched::Toleration {
                key: t.key.clone(),
                operator: match t.operator {
                    shoal_api::TolerationOperator::Equal => sched::TolerationOperator::Equal,
                    shoal_api::TolerationOperator::Exists => sched::TolerationOperator::Exists,
                },
                value: t.value.clone(),
                effect: t.effect.map(effect),
            })
            .collect(),
        host_ports: host_ports(p),
        owner: owner(p),
        volume_node: None,
    }
}

/// True when the pod waits for a node: no `spec.nodeName`, not being deleted, not finished.
pub fn is_pending(p: &Pod) -> bool {
    node_of(p).is_none() && p.metadata.deletion_timestamp.is_none() && !is_terminal(p)
}

/// Plans one scheduling pass: bind every pending pod that fits (an [`Action::Bind`]: the
/// store sets `spec.nodeName` and condition `PodScheduled=True` at the planned revision),
/// and for each pod that fits
/// nowhere set `PodScheduled=False`/`Unschedulable` with the fit error as message plus a
/// `FailedScheduling` event, only when that message changed. A pod mounting bound
/// claims may only go to their volumes' node; one whose claims are missing waits
/// ([`volumes::pod_volume_node`]).
pub fn plan(
    pods: &BTreeMap<String, Pod>,
    nodes: &BTreeMap<String, Node>,
    storage: volumes::Storage<'_>,
    now: DateTime<Utc>,
    node_timeout: Duration,
    names: &mut dyn Names,
) -> Vec<Action> {
    // The cache's keys are the pods' store keys.
    let mut pending: Vec<(&String, &Pod)> = pods.iter().filter(|(_, p)| is_pending(p)).collect();
    if pending.is_empty() {
        return Vec::new();
    }
    // Oldest first, so a stream of new pods cannot starve an old one.
    pending.sort_by(|(ka, a), (kb, b)| {
        a.metadata
            .creation_timestamp
            .cmp(&b.metadata.creation_timestamp)
            .then_with(|| ka.cmp(kb))
    });
    let mut requests: Vec<sched::PodRequest> = Vec::with_capacity(pending.len());
    let mut unschedulable: Vec<(String, String)> = Vec::new();
    for (k, p) in &pending {
        match volumes::pod_volume_node(p, storage) {
            Ok(volume_node) => requests.push(sched::PodRequest {
                key: (*k).clone(),
                volume_node,
                ..pod_request(p)
            }),
            Err(why) => unschedulable.push(((*k).clone(), why)),
        }
    }
    let infos: Vec<sched::NodeInfo> = nodes
        .values()
        .map(|n| node_info(n, now, node_timeout))
        .collect();
    let bound: Vec<sched::BoundPod> = pods
        .values()
        .filter(|p| !is_terminal(p))
        .filter_map(|p| {
            Some(sched::BoundPod {
                node: node_of(p)?.to_string(),
                requests: resources(p.spec.resource_requests()),
                host_ports: host_ports(p),
                owner: owner(p),
            })
        })
        .collect();
    let result = sched::schedule(&requests, &infos, &bound);
    let by_key: BTreeMap<&str, &Pod> = pending.iter().map(|(k, p)| (k.as_str(), *p)).collect();

    let mut actions = Vec::with_capacity(result.bindings.len());
    for b in &result.bindings {
        let Some(p) = by_key.get(b.pod_key.as_str()) else {
            continue;
        };
        actions.push(Action::Bind(bind(p, &b.node, now)));
    }
    unschedulable.extend(
        result
            .unschedulable
            .iter()
            .map(|(k, e)| (k.clone(), e.to_string())),
    );
    for (key, message) in unschedulable {
        let Some(p) = by_key.get(key.as_str()) else {
            continue;
        };
        let mut p = (*p).clone();
        let status = p.status.get_or_insert_with(PodStatus::default);
        if !set_condition(
            &mut status.conditions,
            "PodScheduled",
            ConditionStatus::False,
            "Unschedulable",
            &message,
            now,
        ) {
            continue;
        }
        let ev = new_event(
            reference(Kind::Pod, &p.metadata),
            EventType::Warning,
            "FailedScheduling",
            &message,
            COMPONENT,
            now,
            names,
        );
        actions.push(Action::Update(Object::Pod(p)));
        actions.push(Action::Create(Object::Event(ev)));
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::action::CountingNames;
    use serde_json::json;

    static NO_CLAIMS: BTreeMap<String, shoal_api::PersistentVolumeClaim> = BTreeMap::new();
    static NO_VOLUMES: BTreeMap<String, shoal_api::PersistentVolume> = BTreeMap::new();

    fn storage() -> volumes::Storage<'static> {
        volumes::Storage {
            claims: &NO_CLAIMS,
            volumes: &NO_VOLUMES,
        }
    }

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    pub(crate) fn node(
        name: &str,
        mem: &str,
        labels: serde_json::Value,
        heartbeat: i64,
    ) -> (String, Node) {
        let n: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels, "creationTimestamp": t(0)},
            "status": {"capacity": {"cpu": "4", "memory": mem, "pods": 110},
                       "conditions": [{"type": "Ready", "status": "True"}],
                       "heartbeatTime": t(heartbeat)}
        }))
        .unwrap();
        (format!("Node//{name}"), n)
    }

    fn pod(
        name: &str,
        mem: &str,
        node_name: Option<&str>,
        selector: serde_json::Value,
    ) -> (String, Pod) {
        let mut p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "resourceVersion": "7",
                         "ownerReferences": [{"kind": "Deployment", "name": "web", "uid": "u-web", "controller": true}]},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                                     "resources": {"requests": {"cpu": "100m", "memory": mem}}}],
                     "nodeSelector": selector}
        }))
        .unwrap();
        p.spec.node_name = node_name.map(String::from);
        (format!("Pod/default/{name}"), p)
    }

    fn bindings(actions: &[Action]) -> BTreeMap<String, String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Bind(b) => Some((b.key.rsplit('/').next()?.to_string(), b.node.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn spreads_replicas_of_one_owner_evenly() {
        let nodes: BTreeMap<_, _> = ["n1", "n2", "n3"]
            .iter()
            .map(|n| node(n, "8Gi", json!({}), 0))
            .collect();
        let pods: BTreeMap<_, _> = (0..6)
            .map(|i| pod(&format!("web-{i}"), "64Mi", None, json!({})))
            .collect();
        let actions = plan(
            &pods,
            &nodes,
            storage(),
            t(1),
            Duration::from_secs(10),
            &mut CountingNames(0),
        );
        let b = bindings(&actions);
        assert_eq!(b.len(), 6);
        let mut per_node = BTreeMap::new();
        for n in b.values() {
            *per_node.entry(n.clone()).or_insert(0) += 1;
        }
        assert_eq!(
            per_node.values().copied().collect::<Vec<_>>(),
            vec![2, 2, 2],
            "{b:?}"
        );
        // Every binding is a bind command at the planned revision carrying PodScheduled=True.
        for a in &actions {
            let Action::Bind(b) = a else {
                panic!("unexpected action {a:?}")
            };
            assert_eq!(b.revision, 7);
            assert_eq!(
                (b.condition.type_.as_str(), b.condition.status),
                ("PodScheduled", ConditionStatus::True)
            );
            let shoal_store::Write::Bind {
                expected_revision: Some(7),
                node_name,
                condition,
                ..
            } = a.to_write()
            else {
                panic!("not a bind at revision 7: {:?}", a.to_write())
            };
            assert_eq!(node_name, b.node);
            assert_eq!(condition["type"], json!("PodScheduled"));
            assert_eq!(condition["status"], json!("True"));
        }
    }

    #[test]
    fn counts_bound_pods_and_honours_node_selector() {
        let nodes: BTreeMap<_, _> = [
            node("n1", "1Gi", json!({"disk": "ssd"}), 0),
            node("n2", "1Gi", json!({}), 0),
        ]
        .into_iter()
        .collect();
        let mut pods: BTreeMap<_, _> = [pod("old", "900Mi", Some("n1"), json!({}))]
            .into_iter()
            .collect();
        pods.extend([
            pod("a", "200Mi", None, json!({"disk": "ssd"})),
            pod("b", "200Mi", None, json!({})),
        ]);
        let actions = plan(
            &pods,
            &nodes,
            storage(),
            t(1),
            Duration::from_secs(10),
            &mut CountingNames(0),
        );
        let b = bindings(&actions);
        // `a` may only go to n1, which lacks the memory: it stays pending with a reason.
        assert_eq!(b, BTreeMap::from([("b".to_string(), "n2".to_string())]));
        let ev = actions
            .iter()
            .find_map(|a| match a {
                Action::Create(Object::Event(e)) => Some(e.clone()),
                _ => None,
            })
            .expect("a FailedScheduling event");
        assert_eq!(ev.reason, "FailedScheduling");
        assert_eq!(
            ev.message,
            "0/2 nodes: 1 insufficient memory, 1 node selector mismatch"
        );
        assert_eq!(ev.involved_object.name, "a");
        assert_eq!(ev.metadata.namespace.as_deref(), Some("default"));
    }

    #[test]
    fn unschedulable_pods_are_explained_once_per_message() {
        let nodes: BTreeMap<_, _> = ["n1", "n2", "n3"]
            .iter()
            .map(|n| node(n, "1Gi", json!({}), 0))
            .collect();
        let mut pods: BTreeMap<_, _> = [pod("huge", "64Gi", None, json!({}))].into_iter().collect();
        let actions = plan(
            &pods,
            &nodes,
            storage(),
            t(1),
            Duration::from_secs(10),
            &mut CountingNames(0),
        );
        assert_eq!(actions.len(), 2, "{actions:?}");
        let Action::Update(Object::Pod(p)) = &actions[0] else {
            panic!("{actions:?}")
        };
        let c = shoal_api::find_condition(&p.status.as_ref().unwrap().conditions, "PodScheduled")
            .unwrap();
        assert_eq!(
            (c.status, c.reason.as_str()),
            (ConditionStatus::False, "Unschedulable")
        );
        assert_eq!(c.message, "0/3 nodes: 3 insufficient memory");
        assert!(p.spec.node_name.is_none());
        // Stored as planned: the next pass says nothing new.
        pods.insert("Pod/default/huge".into(), p.clone());
        assert!(
            plan(
                &pods,
                &nodes,
                storage(),
                t(2),
                Duration::from_secs(10),
                &mut CountingNames(0)
            )
            .is_empty()
        );
        // A node vanishes: the message changes, so it is written again.
        let mut fewer = nodes.clone();
        fewer.remove("Node//n3");
        let again = plan(
            &pods,
            &fewer,
            storage(),
            t(3),
            Duration::from_secs(10),
            &mut CountingNames(0),
        );
        assert_eq!(again.len(), 2);
    }

    #[test]
    fn stale_or_not_ready_nodes_get_nothing() {
        let mut nodes: BTreeMap<_, _> = [
            node("fresh", "8Gi", json!({}), 95),
            node("stale", "8Gi", json!({}), 80),
        ]
        .into_iter()
        .collect();
        let (k, mut down) = node("down", "8Gi", json!({}), 99);
        down.status.as_mut().unwrap().conditions[0].status = ConditionStatus::Unknown;
        nodes.insert(k, down);
        let (k, mut cordoned) = node("cordoned", "8Gi", json!({}), 99);
        cordoned.spec.unschedulable = true;
        nodes.insert(k, cordoned);
        let pods: BTreeMap<_, _> = (0..4)
            .map(|i| pod(&format!("p{i}"), "64Mi", None, json!({})))
            .collect();
        let b = bindings(&plan(
            &pods,
            &nodes,
            storage(),
            t(100),
            Duration::from_secs(10),
            &mut CountingNames(0),
        ));
        assert_eq!(b.len(), 4);
        assert!(b.values().all(|n| n == "fresh"), "{b:?}");
    }

    #[test]
    fn skips_bound_terminating_and_finished_pods() {
        let nodes: BTreeMap<_, _> = [node("n1", "8Gi", json!({}), 0)].into_iter().collect();
        let (k1, mut gone) = pod("gone", "64Mi", None, json!({}));
        gone.metadata.deletion_timestamp = Some(t(0));
        let (k2, mut done) = pod("done", "64Mi", None, json!({}));
        done.status = Some(PodStatus {
            phase: shoal_api::PodPhase::Failed,
            ..Default::default()
        });
        let (k3, bound) = pod("bound", "64Mi", Some("n1"), json!({}));
        let pods = BTreeMap::from([(k1, gone), (k2, done), (k3, bound)]);
        assert!(
            plan(
                &pods,
                &nodes,
                storage(),
                t(1),
                Duration::from_secs(10),
                &mut CountingNames(0)
            )
            .is_empty()
        );
    }

    #[test]
    fn no_nodes_explains_itself() {
        let pods: BTreeMap<_, _> = [pod("p", "64Mi", None, json!({}))].into_iter().collect();
        let actions = plan(
            &pods,
            &BTreeMap::new(),
            storage(),
            t(1),
            Duration::from_secs(10),
            &mut CountingNames(0),
        );
        let Action::Create(Object::Event(e)) = &actions[1] else {
            panic!("{actions:?}")
        };
        assert_eq!(e.message, "0/0 nodes: no nodes registered");
    }

    #[test]
    fn bound_claims_pin_pods_and_missing_claims_hold_them() {
        let nodes: BTreeMap<_, _> = ["n1", "n2", "n3"]
            .iter()
            .map(|n| node(n, "8Gi", json!({}), 0))
            .collect();
        let with_claim = |name: &str, claim: &str| {
            let (k, mut p) = pod(name, "64Mi", None, json!({}));
            p.spec.volumes = vec![
                serde_json::from_value(
                    json!({"name": "v", "persistentVolumeClaim": {"claimName": claim}}),
                )
                .unwrap(),
            ];
            (k, p)
        };
        let pods: BTreeMap<_, _> = [with_claim("a", "data"), with_claim("b", "nope")]
            .into_iter()
            .collect();
        let claim: shoal_api::PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "data", "namespace": "default", "uid": "u1"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                     "volumeName": "pvc-u1"},
            "status": {"phase": "Bound"}
        }))
        .unwrap();
        let pv = volumes::provisioned_volume(&claim, "pvc-u1", "n3");
        let claims = BTreeMap::from([("PersistentVolumeClaim/default/data".to_string(), claim)]);
        let vols = BTreeMap::from([("PersistentVolume//pvc-u1".to_string(), pv)]);
        let storage = volumes::Storage {
            claims: &claims,
            volumes: &vols,
        };
        let actions = plan(
            &pods,
            &nodes,
            storage,
            t(1),
            Duration::from_secs(10),
            &mut CountingNames(0),
        );
        assert_eq!(
            bindings(&actions),
            BTreeMap::from([("a".to_string(), "n3".to_string())])
        );
        let ev = actions
            .iter()
            .find_map(|a| match a {
                Action::Create(Object::Event(e)) => Some(e.clone()),
                _ => None,
            })
            .expect("a FailedScheduling event");
        assert_eq!(ev.involved_object.name, "b");
        assert_eq!(ev.message, "persistentvolumeclaim \"nope\" not found");
    }
}
