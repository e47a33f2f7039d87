//! Write throughput and latency of an in-process 3-member store cluster on loopback
//! (was the "throughput test"; a figure, not a pass/fail check, so it is a benchmark).
//!
//! `cargo bench -p shoal-store --bench throughput [-- PER_WRITER]` (default 100 writes per
//! writer for the single-writer phases, half that for 16 writers).

use std::time::{Duration, Instant};

use shoal_store::{StoreConfig, Write};

#[allow(dead_code)]
#[path = "../tests/it/util.rs"]
mod util;

use util::{Cluster, pod};

async fn run_writers(
    phase: &str,
    stores: Vec<shoal_store::Store>,
    writers: usize,
    per_writer: usize,
) -> (f64, Duration) {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let s = stores[w % stores.len()].clone();
        let phase = phase.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for i in 0..per_writer {
                let t = Instant::now();
                s.write(vec![Write::Create {
                    key: format!("Pod/{phase}/w{w}-{i}"),
                    object: pod("x", "busybox"),
                }])
                .await
                .expect("write");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("writer"));
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort();
    ((writers * per_writer) as f64 / secs, all[all.len() / 2])
}

fn main() {
    let per_writer: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let c = Cluster::start("bench", 3, |cfg: &mut StoreConfig| {
            cfg.snapshot_every = 100_000
        })
        .await;
        let leader = c.leader().await;
        let follower = c
            .running()
            .into_iter()
            .find(|id| *id != leader)
            .expect("follower");
        let (rate1, p50_1) = run_writers("leader", vec![c.store(leader)], 1, per_writer).await;
        println!("3 members, 1 writer on the leader: {rate1:.0} writes/s, p50 {p50_1:?}");
        let (rate_f, p50_f) = run_writers("follower", vec![c.store(follower)], 1, per_writer).await;
        println!(
            "3 members, 1 writer on a follower (forwarded): {rate_f:.0} writes/s, p50 {p50_f:?}"
        );
        let (rate16, p50_16) = run_writers(
            "spread",
            c.running().into_iter().map(|id| c.store(id)).collect(),
            16,
            per_writer / 2,
        )
        .await;
        println!(
            "3 members, 16 writers spread over all members: {rate16:.0} writes/s, p50 {p50_16:?}"
        );
    });
}
