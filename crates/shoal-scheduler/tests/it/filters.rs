//! Each filter on its own: readiness, cordon, selector, taints, resources, host ports.

use shoal_scheduler::{
    BoundPod, Protocol, Taint, TaintEffect, Toleration, TolerationOperator, schedule,
};

use crate::{error_of, node, node_of, pod};

#[test]
fn not_ready_and_cordoned_nodes_are_skipped() {
    let mut a = node("a", 4000, 8);
    a.ready = false;
    let mut b = node("b", 4000, 8);
    b.unschedulable = true;
    let c = node("c", 1000, 1);
    let plan = schedule(&[pod("p", 100, 100)], &[a.clone(), b.clone(), c], &[]);
    assert_eq!(node_of(&plan, "p"), "c");

    let plan = schedule(&[pod("p", 100, 100)], &[a, b], &[]);
    assert_eq!(
        error_of(&plan, "p"),
        "0/2 nodes: 1 not ready, 1 unschedulable"
    );
}

#[test]
fn node_selector_pins_pods() {
    let mut nodes = vec![node("a", 4000, 8), node("b", 4000, 8), node("c", 4000, 8)];
    nodes[1].labels.insert("disk".into(), "ssd".into());
    nodes[1].labels.insert("zone".into(), "z1".into());
    nodes[2].labels.insert("disk".into(), "ssd".into());
    nodes[2].labels.insert("zone".into(), "z2".into());
    let pods: Vec<_> = (0..5)
        .map(|i| {
            let mut p = pod(&format!("p{i}"), 100, 100);
            p.node_selector.insert("disk".into(), "ssd".into());
            p.node_selector.insert("zone".into(), "z2".into());
            p
        })
        .collect();
    let plan = schedule(&pods, &nodes, &[]);
    assert_eq!(plan.bindings.len(), 5);
    assert!(plan.bindings.iter().all(|b| b.node == "c"), "{plan:?}");

    let mut lost = pod("lost", 100, 100);
    lost.node_selector.insert("disk".into(), "hdd".into());
    let plan = schedule(&[lost], &nodes, &[]);
    assert_eq!(
        error_of(&plan, "lost"),
        "0/3 nodes: 3 node selector mismatch"
    );
}

#[test]
fn no_schedule_and_no_execute_taints_block_untolerating_pods() {
    for effect in [TaintEffect::NoSchedule, TaintEffect::NoExecute] {
        let mut a = node("a", 4000, 8);
        a.taints.push(Taint::new("dedicated", "db", effect));
        let b = node("b", 1000, 1);
        let plan = schedule(&[pod("p", 100, 100)], &[a.clone(), b], &[]);
        assert_eq!(node_of(&plan, "p"), "b", "{effect:?}");
        let plan = schedule(&[pod("p", 100, 100)], &[a], &[]);
        assert_eq!(error_of(&plan, "p"), "0/1 nodes: 1 untolerated taint");
    }
}

#[test]
fn tolerations_follow_kubernetes_matching() {
    let taint = Taint::new("dedicated", "db", TaintEffect::NoSchedule);
    let cases = [
        (Toleration::equal("dedicated", "db", None), true),
        (
            Toleration::equal("dedicated", "db", Some(TaintEffect::NoSchedule)),
            true,
        ),
        (
            Toleration::equal("dedicated", "db", Some(TaintEffect::NoExecute)),
            false,
        ),
        (Toleration::equal("dedicated", "web", None), false),
        (Toleration::equal("other", "db", None), false),
        (Toleration::exists("dedicated", None), true),
        (Toleration::exists("", None), true),
        (
            Toleration::exists("", Some(TaintEffect::PreferNoSchedule)),
            false,
        ),
        (
            Toleration {
                key: String::new(),
                operator: TolerationOperator::Equal,
                value: "db".into(),
                effect: None,
            },
            false,
        ),
    ];
    for (tol, expected) in cases {
        assert_eq!(tol.tolerates(&taint), expected, "{tol:?}");
        let mut a = node("a", 4000, 8);
        a.taints.push(taint.clone());
        let mut p = pod("p", 100, 100);
        p.tolerations.push(tol.clone());
        let plan = schedule(&[p], &[a], &[]);
        assert_eq!(plan.bindings.len() == 1, expected, "{tol:?}: {plan:?}");
    }
}

#[test]
fn every_blocking_taint_must_be_tolerated() {
    let mut a = node("a", 4000, 8);
    a.taints.push(Taint::new("x", "1", TaintEffect::NoSchedule));
    a.taints.push(Taint::new("y", "1", TaintEffect::NoExecute));
    let mut p = pod("p", 100, 100);
    p.tolerations.push(Toleration::equal("x", "1", None));
    assert_eq!(
        schedule(&[p.clone()], std::slice::from_ref(&a), &[])
            .bindings
            .len(),
        0
    );
    p.tolerations.push(Toleration::exists("y", None));
    assert_eq!(node_of(&schedule(&[p], &[a], &[]), "p"), "a");
}

#[test]
fn prefer_no_schedule_only_lowers_the_score() {
    let mut a = node("a", 4000, 8);
    a.taints
        .push(Taint::new("spot", "yes", TaintEffect::PreferNoSchedule));
    let b = node("b", 4000, 8);
    // a sorts first and is otherwise equal: the taint makes b win.
    assert_eq!(
        node_of(&schedule(&[pod("p", 100, 100)], &[a.clone(), b], &[]), "p"),
        "b"
    );
    // Alone, the tainted node still takes the pod.
    assert_eq!(
        node_of(
            &schedule(&[pod("p", 100, 100)], std::slice::from_ref(&a), &[]),
            "p"
        ),
        "a"
    );
    // A tolerating pod no longer avoids it.
    let mut p = pod("p", 100, 100);
    p.tolerations.push(Toleration::exists("spot", None));
    let b = node("b", 4000, 8);
    assert_eq!(node_of(&schedule(&[p], &[a, b], &[]), "p"), "a");
}

#[test]
fn resources_must_fit_what_is_left() {
    let a = node("a", 2000, 4);
    let bound = [BoundPod::new("a", 1500, 1 << 30)];
    assert_eq!(
        node_of(
            &schedule(&[pod("p", 500, 3072)], std::slice::from_ref(&a), &bound),
            "p"
        ),
        "a"
    );
    let plan = schedule(&[pod("p", 501, 100)], std::slice::from_ref(&a), &bound);
    assert_eq!(error_of(&plan, "p"), "0/1 nodes: 1 insufficient cpu");
    let plan = schedule(&[pod("p", 100, 3073)], std::slice::from_ref(&a), &bound);
    assert_eq!(error_of(&plan, "p"), "0/1 nodes: 1 insufficient memory");
    let plan = schedule(&[pod("p", 600, 4000)], &[a], &bound);
    assert_eq!(
        error_of(&plan, "p"),
        "0/1 nodes: 1 insufficient cpu, 1 insufficient memory"
    );
}

#[test]
fn pod_slots_are_counted() {
    let mut a = node("a", 4000, 8);
    a.allocatable.pods = 2;
    let bound = [BoundPod::new("a", 0, 0), BoundPod::new("a", 0, 0)];
    let plan = schedule(&[pod("p", 0, 0)], std::slice::from_ref(&a), &bound);
    assert_eq!(error_of(&plan, "p"), "0/1 nodes: 1 too many pods");
    // A request that claims zero pods still takes a slot.
    let mut zero = pod("z", 0, 0);
    zero.requests.pods = 0;
    let plan = schedule(&[zero], &[a], &bound[..1]);
    assert_eq!(node_of(&plan, "z"), "a");
}

#[test]
fn host_ports_conflict_per_port_and_protocol() {
    let a = node("a", 4000, 8);
    let b = node("b", 4000, 8);
    let mut bound = BoundPod::new("a", 0, 0);
    bound.host_ports.push((8080, Protocol::Tcp));
    let mut p = pod("p", 0, 0);
    p.host_ports.push((8080, Protocol::Tcp));
    let plan = schedule(&[p.clone()], &[a.clone(), b.clone()], &[bound.clone()]);
    assert_eq!(node_of(&plan, "p"), "b");
    let plan = schedule(&[p.clone()], std::slice::from_ref(&a), &[bound.clone()]);
    assert_eq!(error_of(&plan, "p"), "0/1 nodes: 1 host port in use");

    // Same number, other protocol: no conflict.
    let mut udp = pod("u", 0, 0);
    udp.host_ports.push((8080, Protocol::Udp));
    assert_eq!(
        node_of(&schedule(&[udp], std::slice::from_ref(&a), &[bound]), "u"),
        "a"
    );

    // Ports the node reports as used outside of bound pods.
    let mut c = node("c", 4000, 8);
    c.used_host_ports.insert((8080, Protocol::Tcp));
    let plan = schedule(&[p], &[c, b], &[]);
    assert_eq!(node_of(&plan, "p"), "b");
}

#[test]
fn bound_pods_on_unknown_nodes_are_ignored() {
    let a = node("a", 1000, 1);
    let bound = [BoundPod::new("gone", 1000, 1 << 30)];
    assert_eq!(
        node_of(&schedule(&[pod("p", 1000, 1024)], &[a], &bound), "p"),
        "a"
    );
}

#[test]
fn huge_quantities_do_not_overflow() {
    let mut big = node("big", u64::MAX, 1);
    big.allocatable.memory_bytes = u64::MAX;
    let small = node("small", 1000, 1);
    let plan = schedule(&[pod("p", 10, 10)], &[small, big], &[]);
    assert_eq!(node_of(&plan, "p"), "big");
    let plan = schedule(&[pod("q", u64::MAX, 10)], &[node("a", 1000, 1)], &[]);
    assert_eq!(error_of(&plan, "q"), "0/1 nodes: 1 insufficient cpu");
}

#[test]
fn local_volumes_pin_pods_to_their_node() {
    let nodes = vec![node("a", 4000, 8), node("b", 4000, 8), node("c", 4000, 8)];
    let mut p = pod("p", 100, 100);
    p.volume_node = Some("b".into());
    let mut q = pod("q", 100, 100);
    q.volume_node = Some("c".into());
    let plan = schedule(&[p.clone(), q, pod("free", 100, 100)], &nodes, &[]);
    assert_eq!(node_of(&plan, "p"), "b");
    assert_eq!(node_of(&plan, "q"), "c");
    // Its node full: the pod waits rather than going elsewhere.
    let full: Vec<BoundPod> = (0..110).map(|_| BoundPod::new("b", 1, 1)).collect();
    let plan = schedule(&[p.clone()], &nodes, &full);
    assert_eq!(
        error_of(&plan, "p"),
        "0/3 nodes: 2 volume node affinity conflict, 1 too many pods"
    );
    // A volume on a node that left the cluster.
    p.volume_node = Some("gone".into());
    let plan = schedule(&[p], &nodes, &[]);
    assert_eq!(
        error_of(&plan, "p"),
        "0/3 nodes: 3 volume node affinity conflict"
    );
}
