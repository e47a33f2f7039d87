//! Accounting across one batch and determinism of the plan.

use shoal_scheduler::{NodeInfo, Protocol, schedule};

use crate::{error_of, node, node_of, pod};

#[test]
fn pods_earlier_in_the_batch_use_resources() {
    let a = node("a", 1000, 8);
    let pods: Vec<_> = (0..3).map(|i| pod(&format!("p{i}"), 400, 100)).collect();
    let plan = schedule(&pods, &[a], &[]);
    assert_eq!(plan.bindings.len(), 2);
    assert_eq!(plan.bindings[0].pod_key, "p0");
    assert_eq!(plan.bindings[1].pod_key, "p1");
    assert_eq!(error_of(&plan, "p2"), "0/1 nodes: 1 insufficient cpu");
}

#[test]
fn pods_earlier_in_the_batch_take_host_ports_and_slots() {
    let nodes = [node("a", 4000, 8), node("b", 4000, 8)];
    let pods: Vec<_> = (0..3)
        .map(|i| {
            let mut p = pod(&format!("p{i}"), 0, 0);
            p.host_ports.push((53, Protocol::Udp));
            p
        })
        .collect();
    let plan = schedule(&pods, &nodes, &[]);
    assert_eq!(node_of(&plan, "p0"), "a");
    assert_eq!(node_of(&plan, "p1"), "b");
    assert_eq!(error_of(&plan, "p2"), "0/2 nodes: 2 host port in use");

    let mut c = node("c", 4000, 8);
    c.allocatable.pods = 3;
    let pods: Vec<_> = (0..4).map(|i| pod(&format!("q{i}"), 0, 0)).collect();
    let plan = schedule(&pods, &[c], &[]);
    assert_eq!(plan.bindings.len(), 3);
    assert_eq!(error_of(&plan, "q3"), "0/1 nodes: 1 too many pods");
}

#[test]
fn an_unschedulable_pod_uses_nothing() {
    let a = node("a", 1000, 8);
    let pods = [pod("huge", 5000, 1), pod("small", 1000, 1)];
    let plan = schedule(&pods, &[a], &[]);
    assert_eq!(error_of(&plan, "huge"), "0/1 nodes: 1 insufficient cpu");
    assert_eq!(node_of(&plan, "small"), "a");
}

#[test]
fn outputs_keep_input_order() {
    let a = node("a", 1000, 8);
    let pods = [
        pod("z", 100, 1),
        pod("x", 5000, 1),
        pod("y", 100, 1),
        pod("w", 5000, 1),
    ];
    let plan = schedule(&pods, &[a], &[]);
    let bound: Vec<&str> = plan.bindings.iter().map(|b| b.pod_key.as_str()).collect();
    let failed: Vec<&str> = plan.unschedulable.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(bound, ["z", "y"]);
    assert_eq!(failed, ["x", "w"]);
}

#[test]
fn duplicate_node_names_use_the_first() {
    let small = node("a", 100, 1);
    let big = node("a", 10_000, 1);
    let plan = schedule(&[pod("p", 1000, 1)], &[small, big], &[]);
    assert_eq!(error_of(&plan, "p"), "0/1 nodes: 1 insufficient cpu");
}

#[test]
fn plan_is_deterministic_and_independent_of_node_order() {
    let mut nodes: Vec<NodeInfo> = (0..50)
        .map(|i| node(&format!("node-{i:03}"), 1000 + (i % 7) * 500, 2 + i % 5))
        .collect();
    let pods: Vec<_> = (0..400)
        .map(|i| {
            let mut p = pod(&format!("p{i}"), 50 + (i % 9) * 40, 64 + (i % 13) * 50);
            p.owner = Some(format!("owner-{}", i % 11));
            p
        })
        .collect();
    let first = schedule(&pods, &nodes, &[]);
    assert_eq!(first, schedule(&pods, &nodes, &[]));
    nodes.reverse();
    assert_eq!(first, schedule(&pods, &nodes, &[]));
    nodes.rotate_left(17);
    assert_eq!(first, schedule(&pods, &nodes, &[]));
}
