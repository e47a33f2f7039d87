//! The DaemonSet reconciler: one pod of the template on every node that should run it,
//! created already bound (`spec.nodeName`), as Kubernetes' DaemonSet controller does;
//! template changes rolled out node by node within `maxUnavailable`, or `OnDelete`.
//!
//! Which nodes should run the pod is Kubernetes' `NodeShouldRunDaemonPod`, decided with
//! the scheduler's own static filters ([`shoal_scheduler::static_rejection`] on the
//! scheduler's views of the node and of the pod, [`super::scheduler::node_info`] and
//! [`super::scheduler::pod_request`]), so nodeSelector and taint matching are written
//! once:
//!
//! * *should run* (a pod is created): node Ready, `nodeSelector` matches, `NoSchedule`
//!   and `NoExecute` taints tolerated. A cordoned node counts as schedulable: daemon pods
//!   tolerate `node.kubernetes.io/unschedulable` (added to every pod, with the
//!   not-ready/unreachable tolerations, like Kubernetes).
//! * *should continue running* (an existing pod is kept): `nodeSelector` matches and
//!   `NoExecute` taints tolerated, whatever the node's readiness — a NotReady node keeps
//!   its pod (and the node lifecycle does not evict daemon pods), but gets no new one.
//!
//! Pods on nodes that no longer exist, on nodes that should not keep them, finished
//! pods and extra pods on one node are deleted.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use shoal_api::{
    DAEMONSET_HASH_LABEL, DaemonSet, DaemonSetStatus, DaemonSetUpdateStrategyType, Kind, Node,
    Object, ObjectMeta, OwnerReference, Pod, PodStatus, TaintEffect, Toleration,
    TolerationOperator, template_hash,
};

use super::action::{
    Action, Names, bind, is_pod_ready, is_terminal, namespace, node_of, pod_key, revision,
};
use super::scheduler::{node_info, pod_request};

/// Longest daemon-set-name part of a pod name (`<ds>-<suffix:5>` stays <= 253).
const MAX_NAME_PREFIX: usize = 253 - 6;

/// The tolerations Kubernetes adds to every daemon pod (`AddOrUpdateDaemonPodTolerations`):
/// kept on NotReady and unreachable nodes, placed on cordoned ones.
pub const DAEMON_TOLERATIONS: [(&str, TaintEffect); 3] = [
    ("node.kubernetes.io/not-ready", TaintEffect::NoExecute),
    ("node.kubernetes.io/unreachable", TaintEffect::NoExecute),
    ("node.kubernetes.io/unschedulable", TaintEffect::NoSchedule),
];

/// True when `p`'s controller owner is a DaemonSet.
pub fn is_daemon_pod(p: &Pod) -> bool {
    p.metadata
        .controller_owner()
        .is_some_and(|o| o.kind == Kind::DaemonSet)
}

/// A new pod of `ds` from its current template, bound to `node`.
pub fn new_pod(
    ds: &DaemonSet,
    hash: &str,
    node: &str,
    now: DateTime<Utc>,
    names: &mut dyn Names,
) -> Pod {
    let prefix: String = ds.metadata.name.chars().take(MAX_NAME_PREFIX).collect();
    let ns = namespace(&ds.metadata).to_string();
    let mut labels = ds.spec.template.metadata.labels.clone();
    labels.insert(DAEMONSET_HASH_LABEL.to_string(), hash.to_string());
    let mut spec = ds.spec.template.spec.clone();
    for (key, effect) in DAEMON_TOLERATIONS {
        let present = spec
            .tolerations
            .iter()
            .any(|t| t.key == key && t.effect == Some(effect));
        if !present {
            spec.tolerations.push(Toleration {
                key: key.to_string(),
                operator: TolerationOperator::Exists,
                value: String::new(),
                effect: Some(effect),
            });
        }
    }
    let mut pod = Pod {
        metadata: ObjectMeta {
            labels,
            annotations: ds.spec.template.metadata.annotations.clone(),
            owner_references: vec![OwnerReference {
                api_version: shoal_api::API_VERSION.to_string(),
                kind: Kind::DaemonSet,
                name: ds.metadata.name.clone(),
                uid: ds.metadata.uid.clone().unwrap_or_default(),
                controller: true,
                block_owner_deletion: false,
            }],
            ..ObjectMeta::named(&ns, &format!("{prefix}-{}", names.suffix(5)))
        },
        spec,
        status: Some(PodStatus::default()),
    };
    // Created already bound, with the scheduler's binding.
    bind(&pod, node, now).apply_to(&mut pod);
    pod
}

/// Whether a node should run the daemon pod, and whether it should keep one it has
/// (Kubernetes' `NodeShouldRunDaemonPod`; see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Eligibility {
    /// A pod is created if the node has none.
    pub should_run: bool,
    /// A pod the node has is kept.
    pub should_continue: bool,
}

/// The [`Eligibility`] of `node` for pods like `pod` (a pod of the daemon set, with its
/// daemon tolerations).
pub fn eligibility(
    pod: &Pod,
    node: &Node,
    now: DateTime<Utc>,
    node_timeout: Duration,
) -> Eligibility {
    let request = pod_request(pod);
    let mut info = node_info(node, now, node_timeout);
    // Daemon pods tolerate node.kubernetes.io/unschedulable.
    info.unschedulable = false;
    let should_run = shoal_scheduler::static_rejection(&request, &info).is_none();
    // To stay, readiness does not matter, and only NoExecute taints must be tolerated.
    info.ready = true;
    info.taints
        .retain(|t| t.effect == shoal_scheduler::TaintEffect::NoExecute);
    let should_continue = shoal_scheduler::static_rejection(&request, &info).is_none();
    Eligibility {
        should_run,
        should_continue,
    }
}

fn delete(p: &Pod) -> Action {
    Action::Delete {
        key: pod_key(p),
        revision: revision(&p.metadata),
    }
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// One node as the plan sees it: its eligibility and the pod it keeps.
struct OnNode<'a> {
    elig: Eligibility,
    /// The live pod (not finished, not being deleted) kept on the node.
    pod: Option<&'a Pod>,
    /// Some pod exists (live or being deleted): no new pod is created yet.
    exists: bool,
}

/// Plans one pass for daemon set `ds` given the pods it owns (`owned`, any state) and
/// every node (see the module docs):
///
/// * creates a bound pod on each node that should run one and has none;
/// * deletes pods on missing nodes, on nodes that should not keep them, finished pods,
///   and all but one pod per node (keeping the current template's, Ready, oldest);
/// * `RollingUpdate`: deletes old-template pods, not-Ready ones at once, Ready ones while
///   fewer than `maxUnavailable` nodes (of the desired ones) are without an available
///   pod, counting the ones deleted now; the node gets its new pod on the next pass.
///   `OnDelete`: old pods stay until deleted by hand;
/// * writes `status` (CAS on the daemon set's revision) when it changed.
pub fn plan(
    ds: &DaemonSet,
    owned: &[&Pod],
    nodes: &BTreeMap<String, Node>,
    now: DateTime<Utc>,
    node_timeout: Duration,
    names: &mut dyn Names,
) -> Vec<Action> {
    let mut actions = Vec::new();
    if ds.metadata.deletion_timestamp.is_some() || ds.metadata.uid.is_none() {
        return actions;
    }
    let hash = template_hash(&ds.spec.template);
    let is_current = |p: &Pod| p.metadata.labels.get(DAEMONSET_HASH_LABEL) == Some(&hash);
    // A pod of the current template, for eligibility (the template decides it).
    let probe = new_pod(ds, &hash, "", now, &mut super::action::CountingNames(0));

    let mut by_node: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
    for p in owned {
        match node_of(p) {
            Some(n) if !is_terminal(p) => by_node.entry(n).or_default().push(p),
            // Finished pods are replaced; unbound ones are not the controller's making.
            _ => {
                if p.metadata.deletion_timestamp.is_none() {
                    actions.push(delete(p));
                }
            }
        }
    }
    let node_names: BTreeMap<&str, &Node> = nodes
        .values()
        .map(|n| (n.metadata.name.as_str(), n))
        .collect();
    // Pods on nodes that are gone.
    for (name, pods) in &by_node {
        if !node_names.contains_key(name) {
            actions.extend(
                pods.iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .map(|p| delete(p)),
            );
        }
    }

    let mut on_nodes: Vec<OnNode<'_>> = Vec::new();
    for (name, node) in &node_names {
        let elig = eligibility(&probe, node, now, node_timeout);
        let pods = by_node.get(name).cloned().unwrap_or_default();
        let exists = !pods.is_empty();
        let mut live: Vec<&Pod> = pods
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        if !elig.should_continue {
            actions.extend(live.iter().map(|p| delete(p)));
            live.clear();
        }
        live.sort_by_key(|p| {
            (
                !is_current(p),
                !is_pod_ready(p),
                p.metadata.creation_timestamp,
                p.metadata.name.clone(),
            )
        });
        if live.len() > 1 {
            actions.extend(live[1..].iter().map(|p| delete(p)));
        }
        if elig.should_run && !exists {
            actions.push(Action::Create(Object::Pod(new_pod(
                ds, &hash, name, now, names,
            ))));
        }
        on_nodes.push(OnNode {
            elig,
            pod: live.first().copied(),
            exists,
        });
    }

    // Rolling update over the nodes that should run the pod.
    let desired = on_nodes.iter().filter(|n| n.elig.should_run).count();
    if ds.spec.update_strategy.type_ == DaemonSetUpdateStrategyType::RollingUpdate {
        let max_unavailable = usize::try_from(
            ds.spec
                .update_strategy
                .resolved_max_unavailable(count(desired)),
        )
        .unwrap_or(1);
        let mut unavailable = 0usize;
        let mut candidates: Vec<&Pod> = Vec::new();
        for n in on_nodes.iter().filter(|n| n.elig.should_run) {
            match n.pod {
                None => unavailable += 1,
                Some(p) if is_current(p) => {
                    if !is_pod_ready(p) {
                        unavailable += 1;
                    }
                }
                Some(p) if !is_pod_ready(p) => {
                    // Already unavailable: replacing it costs nothing.
                    unavailable += 1;
                    actions.push(delete(p));
                }
                Some(p) => candidates.push(p),
            }
        }
        let budget = max_unavailable.saturating_sub(unavailable);
        actions.extend(candidates.iter().take(budget).map(|p| delete(p)));
    }

    // Status describes what was observed before these actions (Kubernetes' counting:
    // per node; available means Ready, there is no minReadySeconds).
    let mut st = DaemonSetStatus {
        observed_generation: ds.metadata.generation,
        ..Default::default()
    };
    for n in &on_nodes {
        if !n.elig.should_run {
            st.number_misscheduled += i32::from(n.exists);
            continue;
        }
        st.desired_number_scheduled += 1;
        st.current_number_scheduled += i32::from(n.exists);
        if n.pod.is_some_and(is_pod_ready) {
            st.number_ready += 1;
            st.number_available += 1;
        } else {
            st.number_unavailable += 1;
        }
        st.updated_number_scheduled += i32::from(n.pod.is_some_and(&is_current));
    }
    if ds.status.as_ref() != Some(&st) {
        let mut updated = ds.clone();
        updated.status = Some(st);
        actions.push(Action::Update(Object::DaemonSet(updated)));
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::action::{CountingNames, set_condition};
    use serde_json::json;
    use shoal_api::{ConditionStatus, PodPhase};

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn daemonset(image: &str, spec_extra: serde_json::Value) -> DaemonSet {
        let mut spec = json!({
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}},
                         "spec": {"nodeSelector": {"role": "worker"},
                                  "containers": [{"name": "c", "image": image}]}}
        });
        for (k, v) in spec_extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        serde_json::from_value(json!({
            "metadata": {"name": "agent", "namespace": "default", "uid": "u-ds",
                         "resourceVersion": "40", "generation": 2},
            "spec": spec
        }))
        .unwrap()
    }

    /// A Ready node with a fresh heartbeat at t(100), labelled `role=worker` unless told.
    fn node(name: &str, labels: serde_json::Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels, "creationTimestamp": t(0)},
            "status": {"capacity": {"cpu": "4", "memory": "8Gi", "pods": 110},
                       "conditions": [{"type": "Ready", "status": "True"}],
                       "heartbeatTime": t(100)}
        }))
        .unwrap()
    }

    fn nodes(list: &[Node]) -> BTreeMap<String, Node> {
        list.iter()
            .map(|n| (format!("Node//{}", n.metadata.name), n.clone()))
            .collect()
    }

    fn workers(names: &[&str]) -> BTreeMap<String, Node> {
        let list: Vec<Node> = names
            .iter()
            .map(|n| node(n, json!({"role": "worker"})))
            .collect();
        nodes(&list)
    }

    fn creates(a: &[Action]) -> Vec<Pod> {
        a.iter()
            .filter_map(|a| match a {
                Action::Create(Object::Pod(p)) => Some(p.clone()),
                _ => None,
            })
            .collect()
    }

    fn created_on(a: &[Action]) -> Vec<String> {
        creates(a)
            .iter()
            .map(|p| node_of(p).unwrap_or("").to_string())
            .collect()
    }

    fn deletes(a: &[Action]) -> Vec<String> {
        a.iter()
            .filter_map(|a| match a {
                Action::Delete { key, .. } => Some(key.clone()),
                _ => None,
            })
            .collect()
    }

    fn status(a: &[Action]) -> Option<DaemonSetStatus> {
        a.iter().find_map(|a| match a {
            Action::Update(Object::DaemonSet(d)) => d.status.clone(),
            _ => None,
        })
    }

    fn set_ready(p: &mut Pod, ready: bool) {
        let s = p.status.get_or_insert_with(PodStatus::default);
        s.phase = PodPhase::Running;
        let st = if ready {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        };
        set_condition(&mut s.conditions, "Ready", st, "", "", t(0));
    }

    /// What the store holds after the plan's creates (Ready as given) and deletes.
    fn apply(pods: &mut Vec<Pod>, a: &[Action], ready: bool, at: i64) {
        let gone = deletes(a);
        pods.retain(|p| !gone.contains(&pod_key(p)));
        for mut p in creates(a) {
            p.metadata.resource_version = Some("1".into());
            p.metadata.creation_timestamp = Some(t(at));
            set_ready(&mut p, ready);
            pods.push(p);
        }
    }

    fn run(
        ds: &DaemonSet,
        pods: &[Pod],
        nodes: &BTreeMap<String, Node>,
        names: &mut CountingNames,
    ) -> Vec<Action> {
        let refs: Vec<&Pod> = pods.iter().collect();
        plan(ds, &refs, nodes, t(105), TIMEOUT, names)
    }

    /// Runs passes (new pods Ready at once) until nothing changes; the pods then.
    fn converge(ds: &mut DaemonSet, nodes: &BTreeMap<String, Node>, pods: &mut Vec<Pod>) {
        let mut names = CountingNames(500);
        for pass in 0..50 {
            let a = run(ds, pods, nodes, &mut names);
            if let Some(s) = status(&a) {
                ds.status = Some(s);
            }
            if a.is_empty() {
                return;
            }
            apply(pods, &a, true, pass);
        }
        panic!("did not converge");
    }

    #[test]
    fn one_bound_pod_per_matching_node() {
        let ds = daemonset("busybox:1", json!({}));
        let mut cordoned = node("n3", json!({"role": "worker"}));
        cordoned.spec.unschedulable = true;
        let ns = nodes(&[
            node("n1", json!({"role": "worker"})),
            node("n2", json!({"role": "db"})),
            cordoned,
        ]);
        let a = run(&ds, &[], &ns, &mut CountingNames(0));
        // n2 does not match nodeSelector; a cordoned node gets its daemon pod.
        assert_eq!(created_on(&a), vec!["n1", "n3"]);
        let p = &creates(&a)[0];
        assert_eq!(p.metadata.name, "agent-00001");
        let hash = template_hash(&ds.spec.template);
        assert_eq!(p.metadata.labels[DAEMONSET_HASH_LABEL], hash);
        assert_eq!(p.metadata.labels["app"], "agent");
        let o = p.metadata.controller_owner().unwrap();
        assert_eq!(
            (o.kind, o.name.as_str(), o.uid.as_str()),
            (Kind::DaemonSet, "agent", "u-ds")
        );
        let tolerated: Vec<&str> = p.spec.tolerations.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(
            tolerated,
            vec![
                "node.kubernetes.io/not-ready",
                "node.kubernetes.io/unreachable",
                "node.kubernetes.io/unschedulable"
            ]
        );
        let scheduled =
            shoal_api::find_condition(&p.status.as_ref().unwrap().conditions, "PodScheduled")
                .unwrap();
        assert_eq!(scheduled.status, ConditionStatus::True);
        Object::Pod(p.clone()).validate().unwrap();
        let s = status(&a).unwrap();
        assert_eq!(
            (
                s.desired_number_scheduled,
                s.current_number_scheduled,
                s.number_ready,
                s.number_unavailable,
                s.observed_generation
            ),
            (2, 0, 0, 2, Some(2))
        );
        assert!(matches!(
            a.last().unwrap().to_write(),
            shoal_store::Write::Update {
                expected_revision: Some(40),
                ..
            }
        ));
    }

    #[test]
    fn steady_state_writes_nothing_and_status_counts() {
        let mut ds = daemonset("busybox:1", json!({}));
        let ns = workers(&["n1", "n2", "n3"]);
        let mut pods = Vec::new();
        converge(&mut ds, &ns, &mut pods);
        assert_eq!(pods.len(), 3);
        let s = ds.status.clone().unwrap();
        assert_eq!(
            (
                s.desired_number_scheduled,
                s.current_number_scheduled,
                s.number_ready,
                s.number_available,
                s.updated_number_scheduled,
                s.number_unavailable,
                s.number_misscheduled
            ),
            (3, 3, 3, 3, 3, 0, 0)
        );
        assert!(run(&ds, &pods, &ns, &mut CountingNames(0)).is_empty());
    }

    #[test]
    fn follows_node_joins_and_leaves() {
        let mut ds = daemonset("busybox:1", json!({}));
        let mut pods = Vec::new();
        converge(&mut ds, &workers(&["n1", "n2"]), &mut pods);
        assert_eq!(pods.len(), 2);
        // n3 joins: only n3 gets a pod.
        let joined = workers(&["n1", "n2", "n3"]);
        let a = run(&ds, &pods, &joined, &mut CountingNames(0));
        assert_eq!(created_on(&a), vec!["n3"]);
        assert!(deletes(&a).is_empty());
        converge(&mut ds, &joined, &mut pods);
        assert_eq!(pods.len(), 3);
        // n1 leaves (its Node is deleted): its pod goes, nothing is created.
        let left = workers(&["n2", "n3"]);
        let on_n1 = pods.iter().find(|p| node_of(p) == Some("n1")).unwrap();
        let a = run(&ds, &pods, &left, &mut CountingNames(0));
        assert_eq!(deletes(&a), vec![pod_key(on_n1)]);
        assert!(creates(&a).is_empty());
        assert_eq!(status(&a).unwrap().desired_number_scheduled, 2);
    }

    #[test]
    fn label_changes_and_taints() {
        let mut ds = daemonset("busybox:1", json!({}));
        let mut pods = Vec::new();
        converge(&mut ds, &workers(&["n1", "n2", "n3", "n4"]), &mut pods);
        let key_on = |n: &str| pod_key(pods.iter().find(|p| node_of(p) == Some(n)).unwrap());
        // n1's labels stop matching: it loses its pod.
        // n2 gets a NoSchedule taint: its pod stays (only new pods must tolerate it).
        // n3 gets a NoExecute taint: its pod goes.
        // n4 becomes NotReady: its pod stays (misscheduled), no new pod would be made.
        let mut n1 = node("n1", json!({"role": "db"}));
        n1.metadata.labels.insert("x".into(), "y".into());
        let taint = |name: &str, effect: &str| -> Node {
            let mut n = node(name, json!({"role": "worker"}));
            n.spec.taints = serde_json::from_value(
                json!([{"key": "dedicated", "value": "gpu", "effect": effect}]),
            )
            .unwrap();
            n
        };
        let mut n4 = node("n4", json!({"role": "worker"}));
        n4.status.as_mut().unwrap().heartbeat_time = Some(t(0));
        let ns = nodes(&[n1, taint("n2", "NoSchedule"), taint("n3", "NoExecute"), n4]);
        let a = run(&ds, &pods, &ns, &mut CountingNames(0));
        let mut gone = deletes(&a);
        gone.sort();
        assert_eq!(gone, vec![key_on("n1"), key_on("n3")]);
        assert!(creates(&a).is_empty());
        let s = status(&a).unwrap();
        // Desired: none (n2 and n3 untolerated, n4 NotReady, n1 mismatch); all four still
        // had their pod when observed (n2 and n4 keep it).
        assert_eq!((s.desired_number_scheduled, s.number_misscheduled), (0, 4));
        // A toleration in the template brings the pods back on n2 and n3.
        let tolerant = daemonset(
            "busybox:1",
            json!({"template": {"metadata": {"labels": {"app": "agent"}},
                    "spec": {"nodeSelector": {"role": "worker"},
                             "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu"}],
                             "containers": [{"name": "c", "image": "busybox:1"}]}}}),
        );
        apply(&mut pods, &a, true, 10);
        let a = run(&tolerant, &pods, &ns, &mut CountingNames(0));
        assert_eq!(created_on(&a), vec!["n3"]);
    }

    #[test]
    fn not_ready_nodes_get_no_new_pod_and_finished_or_extra_pods_are_replaced() {
        let ds = daemonset("busybox:1", json!({}));
        let mut n2 = node("n2", json!({"role": "worker"}));
        n2.status.as_mut().unwrap().conditions[0].status = ConditionStatus::Unknown;
        let ns = nodes(&[node("n1", json!({"role": "worker"})), n2]);
        let a = run(&ds, &[], &ns, &mut CountingNames(0));
        assert_eq!(created_on(&a), vec!["n1"]);
        // A failed pod on n1 is deleted (replaced on the next pass); two pods on one node:
        // the extra one goes.
        let mut pods = Vec::new();
        apply(&mut pods, &a, true, 0);
        let mut failed = pods[0].clone();
        failed.status.as_mut().unwrap().phase = PodPhase::Failed;
        let a = run(&ds, &[failed.clone()], &ns, &mut CountingNames(0));
        assert_eq!(deletes(&a), vec![pod_key(&failed)]);
        let a2 = run(&ds, &[], &ns, &mut CountingNames(0));
        assert_eq!(created_on(&a2), vec!["n1"]);
        let mut extra = pods[0].clone();
        extra.metadata.name = "agent-zzzzz".into();
        extra.metadata.creation_timestamp = Some(t(50));
        let a = run(
            &ds,
            &[pods[0].clone(), extra.clone()],
            &ns,
            &mut CountingNames(0),
        );
        assert_eq!(deletes(&a), vec![pod_key(&extra)]);
        assert!(creates(&a).is_empty());
        // A pod being deleted blocks a new one on its node until it is gone.
        let mut going = pods[0].clone();
        going.metadata.deletion_timestamp = Some(t(60));
        let a = run(&ds, &[going], &ns, &mut CountingNames(0));
        assert!(creates(&a).is_empty() && deletes(&a).is_empty());
    }

    /// Rolls `n` nodes from busybox:1 to busybox:2 pass by pass; new pods become Ready one
    /// pass after they are created. Checks at every pass that at most `max_unavailable`
    /// nodes lack a Ready pod; returns the number of passes.
    fn simulate(n: usize, strategy: serde_json::Value, max_unavailable: usize) -> usize {
        let names_: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
        let refs: Vec<&str> = names_.iter().map(String::as_str).collect();
        let ns = workers(&refs);
        let mut v1 = daemonset("busybox:1", json!({"updateStrategy": strategy.clone()}));
        let mut pods = Vec::new();
        converge(&mut v1, &ns, &mut pods);
        let mut d = daemonset("busybox:2", json!({"updateStrategy": strategy}));
        d.status = v1.status.clone();
        let hash = template_hash(&d.spec.template);
        let mut names = CountingNames(1000);
        for pass in 1..200 {
            let a = run(&d, &pods, &ns, &mut names);
            if let Some(s) = status(&a) {
                d.status = Some(s);
            }
            // Earlier pods become Ready, then this pass's writes land (new pods not Ready).
            for p in &mut pods {
                set_ready(p, true);
            }
            apply(&mut pods, &a, false, pass);
            let ready_nodes = pods.iter().filter(|p| is_pod_ready(p)).count();
            assert!(
                ready_nodes + max_unavailable >= n,
                "pass {pass}: {ready_nodes} of {n} nodes with a Ready pod"
            );
            assert!(pods.len() <= n, "pass {pass}: {} pods", pods.len());
            if a.is_empty() {
                assert_eq!(pods.len(), n);
                assert!(pods.iter().all(|p| p.metadata.labels[DAEMONSET_HASH_LABEL] == hash
                    && is_pod_ready(p)));
                let s = d.status.as_ref().unwrap();
                assert_eq!(
                    (s.updated_number_scheduled, s.number_available),
                    (n as i32, n as i32)
                );
                return pass as usize;
            }
        }
        panic!("rollout did not converge");
    }

    #[test]
    fn rolling_update_with_max_unavailable_one() {
        let passes = simulate(4, json!({}), 1);
        // One node at a time: delete, create, Ready — about three passes per node.
        assert!(
            passes >= 8,
            "{passes} passes: more than one node at a time?"
        );
        simulate(
            3,
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}),
            1,
        );
    }

    #[test]
    fn rolling_update_with_a_percentage() {
        // 50% of 6 nodes: 3 at a time.
        let mut v1 = daemonset("busybox:1", json!({}));
        let ns = workers(&["n1", "n2", "n3", "n4", "n5", "n6"]);
        let mut pods = Vec::new();
        converge(&mut v1, &ns, &mut pods);
        let strategy = json!({"rollingUpdate": {"maxUnavailable": "50%"}});
        let d = daemonset("busybox:2", json!({"updateStrategy": strategy.clone()}));
        let a = run(&d, &pods, &ns, &mut CountingNames(0));
        assert_eq!(deletes(&a).len(), 3);
        simulate(6, strategy, 3);
        // 30% of 4 rounds up to 2.
        simulate(4, json!({"rollingUpdate": {"maxUnavailable": "30%"}}), 2);
    }

    #[test]
    fn rolling_update_replaces_unready_old_pods_at_once() {
        let mut v1 = daemonset("busybox:1", json!({}));
        let ns = workers(&["n1", "n2", "n3"]);
        let mut pods = Vec::new();
        converge(&mut v1, &ns, &mut pods);
        set_ready(&mut pods[0], false);
        set_ready(&mut pods[1], false);
        let d = daemonset("busybox:2", json!({}));
        let a = run(&d, &pods, &ns, &mut CountingNames(0));
        let mut gone = deletes(&a);
        gone.sort();
        // Both unready old pods go; the Ready one waits (the budget of 1 is used up).
        assert_eq!(gone, vec![pod_key(&pods[0]), pod_key(&pods[1])]);
    }

    #[test]
    fn on_delete_waits_for_pods_to_be_deleted() {
        let mut v1 = daemonset("busybox:1", json!({"updateStrategy": {"type": "OnDelete"}}));
        let ns = workers(&["n1", "n2"]);
        let mut pods = Vec::new();
        converge(&mut v1, &ns, &mut pods);
        let mut d = daemonset("busybox:2", json!({"updateStrategy": {"type": "OnDelete"}}));
        d.status = v1.status.clone();
        let a = run(&d, &pods, &ns, &mut CountingNames(0));
        assert!(deletes(&a).is_empty() && creates(&a).is_empty());
        assert_eq!(status(&a).unwrap().updated_number_scheduled, 0);
        // The user deletes n1's pod: it comes back with the new template.
        pods.retain(|p| node_of(p) != Some("n1"));
        let a = run(&d, &pods, &ns, &mut CountingNames(0));
        let c = creates(&a);
        assert_eq!(created_on(&a), vec!["n1"]);
        assert_eq!(c[0].spec.containers[0].image, "busybox:2");
        assert!(deletes(&a).is_empty());
    }

    #[test]
    fn deleted_daemonsets_and_other_owners_are_left_alone() {
        let mut ds = daemonset("busybox:1", json!({}));
        ds.metadata.deletion_timestamp = Some(t(0));
        assert!(run(&ds, &[], &workers(&["n1"]), &mut CountingNames(0)).is_empty());
        let p = new_pod(
            &daemonset("b", json!({})),
            "h",
            "n1",
            t(0),
            &mut CountingNames(0),
        );
        assert!(is_daemon_pod(&p));
    }
}
