//! Scores: least allocated, same-owner spread, tie-break by name.

use shoal_scheduler::{BoundPod, schedule};

use crate::{node, node_of, per_node, pod};

fn owned(key: &str, owner: &str, cpu: u64, mem_mib: u64) -> shoal_scheduler::PodRequest {
    let mut p = pod(key, cpu, mem_mib);
    p.owner = Some(owner.into());
    p
}

#[test]
fn six_replicas_spread_two_per_node() {
    let nodes = [node("a", 4000, 8), node("b", 4000, 8), node("c", 4000, 8)];
    // With requests (least allocated and spread agree) and without (spread alone).
    for (cpu, mem) in [(100, 128), (0, 0)] {
        let pods: Vec<_> = (0..6)
            .map(|i| owned(&format!("web-{i}"), "deploy-web", cpu, mem))
            .collect();
        let plan = schedule(&pods, &nodes, &[]);
        let counts: Vec<usize> = per_node(&plan).into_values().collect();
        assert_eq!(counts, vec![2, 2, 2], "requests {cpu}/{mem}: {plan:?}");
    }
}

#[test]
fn spread_counts_already_bound_replicas() {
    let nodes = [node("a", 4000, 8), node("b", 4000, 8), node("c", 4000, 8)];
    let mut bound = Vec::new();
    for n in ["a", "a", "b"] {
        let mut b = BoundPod::new(n, 0, 0);
        b.owner = Some("rs".into());
        bound.push(b);
    }
    // Another owner's pods do not count.
    for _ in 0..3 {
        let mut b = BoundPod::new("c", 0, 0);
        b.owner = Some("other".into());
        bound.push(b);
    }
    let pods: Vec<_> = (0..3)
        .map(|i| owned(&format!("p{i}"), "rs", 0, 0))
        .collect();
    let plan = schedule(&pods, &nodes, &bound);
    // rs: a=2 b=1 c=0 -> c; then b and c tie at 1 -> b (name); then c.
    assert_eq!(node_of(&plan, "p0"), "c");
    assert_eq!(node_of(&plan, "p1"), "b");
    assert_eq!(node_of(&plan, "p2"), "c");
}

#[test]
fn interleaved_owners_each_spread() {
    let nodes = [node("a", 4000, 8), node("b", 4000, 8)];
    let pods: Vec<_> = (0..8)
        .map(|i| owned(&format!("p{i}"), if i % 2 == 0 { "x" } else { "y" }, 0, 0))
        .collect();
    let plan = schedule(&pods, &nodes, &[]);
    for owner_parity in 0..2 {
        let mut on_a = 0;
        for i in (owner_parity..8).step_by(2) {
            if node_of(&plan, &format!("p{i}")) == "a" {
                on_a += 1;
            }
        }
        assert_eq!(on_a, 2, "owner {owner_parity}: {plan:?}");
    }
}

#[test]
fn least_allocated_prefers_the_emptier_node() {
    let nodes = [node("a", 4000, 8), node("b", 4000, 8)];
    let bound = [BoundPod::new("a", 2000, 4 << 30)];
    assert_eq!(
        node_of(&schedule(&[pod("p", 100, 100)], &nodes, &bound), "p"),
        "b"
    );
    // Bigger node, same usage: more left in fraction wins.
    let nodes = [node("a", 2000, 4), node("b", 8000, 16)];
    let bound = [
        BoundPod::new("a", 500, 1 << 30),
        BoundPod::new("b", 500, 1 << 30),
    ];
    assert_eq!(
        node_of(&schedule(&[pod("p", 100, 100)], &nodes, &bound), "p"),
        "b"
    );
}

#[test]
fn least_allocated_weighs_cpu_and_memory() {
    // a: cpu 50% used, memory free; b: cpu free, memory 75% used -> a has more left overall.
    let nodes = [node("a", 4000, 8), node("b", 4000, 8)];
    let bound = [BoundPod::new("a", 2000, 0), BoundPod::new("b", 0, 6 << 30)];
    assert_eq!(
        node_of(&schedule(&[pod("p", 0, 0)], &nodes, &bound), "p"),
        "a"
    );
}

#[test]
fn ties_go_to_the_first_name_whatever_the_input_order() {
    let nodes = [
        node("n3", 4000, 8),
        node("n1", 4000, 8),
        node("n2", 4000, 8),
    ];
    assert_eq!(
        node_of(&schedule(&[pod("p", 100, 100)], &nodes, &[]), "p"),
        "n1"
    );
}

#[test]
fn unowned_pods_fill_by_least_allocated() {
    let nodes = [node("a", 1000, 1), node("b", 1000, 1)];
    let pods: Vec<_> = (0..4).map(|i| pod(&format!("p{i}"), 100, 10)).collect();
    let plan = schedule(&pods, &nodes, &[]);
    let counts: Vec<usize> = per_node(&plan).into_values().collect();
    assert_eq!(counts, vec![2, 2], "{plan:?}");
}
