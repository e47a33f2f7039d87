//! The FailedScheduling message: reasons counted per node, sorted, worded like ours.

use shoal_scheduler::{FitReason, Protocol, Taint, TaintEffect, schedule};

use crate::{error_of, node, pod};

#[test]
fn insufficient_memory_and_selector_as_in_kubernetes() {
    let mut nodes = vec![node("a", 4000, 1), node("b", 4000, 1), node("c", 4000, 64)];
    nodes[0].labels.insert("tier".into(), "db".into());
    nodes[1].labels.insert("tier".into(), "db".into());
    let mut p = pod("big", 100, 4096);
    p.node_selector.insert("tier".into(), "db".into());
    let plan = schedule(&[p], &nodes, &[]);
    assert_eq!(
        error_of(&plan, "big"),
        "0/3 nodes: 2 insufficient memory, 1 node selector mismatch"
    );
    let (_, err) = &plan.unschedulable[0];
    assert_eq!(err.nodes, 3);
    assert_eq!(err.count(FitReason::InsufficientMemory), 2);
    assert_eq!(err.count(FitReason::NodeSelectorMismatch), 1);
    assert_eq!(err.count(FitReason::InsufficientCpu), 0);
}

#[test]
fn every_reason_once_each_node_counted_by_first_failing_filter() {
    let mut nodes = Vec::new();
    let mut n = node("n0-notready", 4000, 8);
    n.ready = false;
    n.unschedulable = true; // first failing filter only: counts as not ready
    nodes.push(n);
    let mut n = node("n1-cordon", 4000, 8);
    n.unschedulable = true;
    nodes.push(n);
    let mut n = node("n2-taint", 4000, 8);
    n.taints.push(Taint::new("k", "v", TaintEffect::NoSchedule));
    n.labels.insert("x".into(), "wrong".into());
    nodes.push(n);
    let mut n = node("n3-selector", 4000, 8);
    n.labels.insert("x".into(), "wrong".into());
    nodes.push(n);
    let mut n = node("n4-port", 10, 8);
    n.used_host_ports.insert((80, Protocol::Tcp));
    nodes.push(n);
    let mut n = node("n5-small", 10, 0);
    n.allocatable.pods = 0;
    nodes.push(n);
    for (i, name) in ["n6", "n7"].iter().enumerate() {
        let mut n = node(name, 10, 8);
        n.allocatable.pods = 5 + i as u64;
        nodes.push(n);
    }
    for n in &mut nodes[4..] {
        n.labels.insert("x".into(), "y".into());
    }
    let mut p = pod("p", 100, 100);
    p.node_selector.insert("x".into(), "y".into());
    p.host_ports.push((80, Protocol::Tcp));
    let plan = schedule(&[p], &nodes, &[]);
    assert_eq!(
        error_of(&plan, "p"),
        "0/8 nodes: 3 insufficient cpu, 1 host port in use, 1 insufficient memory, \
         1 node selector mismatch, 1 not ready, 1 too many pods, 1 unschedulable, \
         1 untolerated taint"
    );
}

#[test]
fn no_nodes_at_all() {
    let plan = schedule(&[pod("p", 1, 1)], &[], &[]);
    assert_eq!(error_of(&plan, "p"), "0/0 nodes: no nodes registered");
}
