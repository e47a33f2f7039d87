//! Integration tests of the public placement API, one module per area.

mod batch;
mod filters;
mod invariants;
mod messages;
mod scoring;

use std::collections::BTreeMap;

use shoal_scheduler::{NodeInfo, PodRequest, Resources, SchedulePlan};

/// One GiB in bytes.
pub const GIB: u64 = 1 << 30;

/// A Ready node with `cpu` millicores, `mem_gib` GiB and 110 pod slots.
pub fn node(name: &str, cpu: u64, mem_gib: u64) -> NodeInfo {
    NodeInfo::new(name, Resources::new(cpu, mem_gib * GIB, 110))
}

/// A pod requesting `cpu` millicores and `mem_mib` MiB.
pub fn pod(key: &str, cpu: u64, mem_mib: u64) -> PodRequest {
    PodRequest::new(key, cpu, mem_mib << 20)
}

/// Node name of each pod key in the plan's bindings.
pub fn placed(plan: &SchedulePlan) -> BTreeMap<String, String> {
    plan.bindings
        .iter()
        .map(|b| (b.pod_key.clone(), b.node.clone()))
        .collect()
}

/// How many pods the plan put on each node.
pub fn per_node(plan: &SchedulePlan) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for b in &plan.bindings {
        *m.entry(b.node.clone()).or_default() += 1;
    }
    m
}

/// The node a pod was bound to; panics with the plan if it was not bound.
pub fn node_of(plan: &SchedulePlan, key: &str) -> String {
    match placed(plan).get(key) {
        Some(n) => n.clone(),
        None => panic!("pod {key} not bound; plan: {plan:?}"),
    }
}

/// The error message of an unschedulable pod; panics if it was bound.
pub fn error_of(plan: &SchedulePlan, key: &str) -> String {
    match plan.unschedulable.iter().find(|(k, _)| k == key) {
        Some((_, e)) => e.to_string(),
        None => panic!("pod {key} not unschedulable; plan: {plan:?}"),
    }
}
