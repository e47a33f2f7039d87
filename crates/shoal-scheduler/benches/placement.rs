//! Placement throughput: `cargo bench -p shoal-scheduler --bench placement`.
//!
//! Builds synthetic clusters (mixed node sizes, zones, some taints, cordoned
//! and NotReady nodes, two pods already bound per node) and a batch of
//! pending pods (replicas of 500 owners, some with a zone selector, a
//! toleration or a host port), then times one `schedule` call per run and
//! prints the median and best of several runs as pods placed per second.

use std::hint::black_box;
use std::time::{Duration, Instant};

use shoal_scheduler::{
    BoundPod, NodeInfo, PodRequest, Protocol, Resources, Taint, TaintEffect, Toleration, schedule,
};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

fn cluster(nodes: usize) -> (Vec<NodeInfo>, Vec<BoundPod>) {
    let mut out = Vec::with_capacity(nodes);
    let mut bound = Vec::with_capacity(nodes * 2);
    for i in 0..nodes {
        let size = 1u64 << (i % 4); // 4, 8, 16, 32 cores
        let mut n = NodeInfo::new(
            format!("node-{i:05}"),
            Resources::new(4000 * size, 16 * GIB * size, 110),
        );
        n.labels.insert("zone".into(), format!("z{}", i % 3));
        n.labels
            .insert("disk".into(), if i % 2 == 0 { "ssd" } else { "hdd" }.into());
        match i % 100 {
            0..=4 => n
                .taints
                .push(Taint::new("dedicated", "gpu", TaintEffect::NoSchedule)),
            5 | 6 => n
                .taints
                .push(Taint::new("spot", "true", TaintEffect::PreferNoSchedule)),
            7 => n.ready = false,
            8 => n.unschedulable = true,
            _ => {}
        }
        for j in 0..2 {
            let mut b = BoundPod::new(n.name.clone(), 250, 512 * MIB);
            b.owner = Some(format!("system-{j}"));
            bound.push(b);
        }
        out.push(n);
    }
    (out, bound)
}

fn pending(pods: usize) -> Vec<PodRequest> {
    (0..pods)
        .map(|i| {
            let owner = i / 20; // 20 consecutive replicas per owner
            let mut p = PodRequest::new(
                format!("default/app-{owner}-{}", i % 20),
                100 + (owner as u64 % 10) * 100,
                (128 + (owner as u64 % 16) * 128) * MIB,
            );
            p.owner = Some(format!("deploy-{owner}"));
            if owner % 10 == 0 {
                p.node_selector
                    .insert("zone".into(), format!("z{}", owner % 3));
            }
            if owner % 20 == 1 {
                p.tolerations
                    .push(Toleration::equal("dedicated", "gpu", None));
            }
            if owner % 50 == 2 {
                p.host_ports.push((8000 + owner as u16, Protocol::Tcp));
            }
            p
        })
        .collect()
}

fn run(label: &str, nodes: usize, pods: usize, runs: usize) {
    let (nodes_v, bound) = cluster(nodes);
    let pods_v = pending(pods);
    let mut times: Vec<Duration> = Vec::with_capacity(runs);
    let mut placed = 0;
    let mut failed = 0;
    for _ in 0..runs {
        let start = Instant::now();
        let plan = schedule(black_box(&pods_v), black_box(&nodes_v), black_box(&bound));
        times.push(start.elapsed());
        placed = plan.bindings.len();
        failed = plan.unschedulable.len();
        black_box(plan);
    }
    times.sort();
    let median = times[times.len() / 2];
    let best = times[0];
    let rate = |d: Duration| pods as f64 / d.as_secs_f64();
    println!(
        "{label:<28} nodes {nodes:>5}  pods {pods:>6}  placed {placed:>6}  unschedulable {failed:>5}  \
         median {:>8.1} ms ({:>9.0} pods/s)  best {:>8.1} ms ({:>9.0} pods/s)",
        median.as_secs_f64() * 1e3,
        rate(median),
        best.as_secs_f64() * 1e3,
        rate(best),
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a number argument overrides the run count.
    let runs = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(7);
    run("10k pods / 5k nodes", 5000, 10_000, runs);
    run("10k pods / 1k nodes", 1000, 10_000, runs);
    run("10k pods / 100 nodes (full)", 100, 10_000, runs);
}
