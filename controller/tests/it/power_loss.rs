//! Power loss: every member's data directory is a `shoal-lazyfs` mount (a disk that keeps
//! unsynced data in memory), and the power of all three is cut at once while clients
//! write. No write the cluster acknowledged may be missing after the restart.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_proto::ObjectRequest;

use crate::harness::{TestCluster, client, eventually};

/// Writers and how long each round writes before the cut.
const WRITERS: usize = 4;
const ROUNDS: usize = 3;
const WRITE_FOR: Duration = Duration::from_secs(3);

fn config_map(name: &str) -> String {
    serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"},
        "data": {"k": name},
    })
    .to_string()
}

/// Writer `w`: creates ConfigMaps with names of its own, each sent once to one member
/// (the next member after a failure), until `stop`; records the acknowledged ones.
/// Returns how many got no acknowledgement (their outcome is unknown: not checked).
async fn writer(
    w: usize,
    round: usize,
    addrs: Vec<String>,
    acked: Arc<Mutex<BTreeSet<String>>>,
    stop: Arc<AtomicBool>,
) -> usize {
    let (mut n, mut unacked, mut at) = (0usize, 0usize, w);
    while !stop.load(Ordering::Relaxed) {
        let name = format!("pl-r{round}-w{w}-{n}");
        n += 1;
        let addr = &addrs[at % addrs.len()];
        let r = match client(addr).await {
            Ok(mut c) => c
                .create(ObjectRequest {
                    object_json: config_map(&name),
                })
                .await
                .map_err(|s| s.message().to_string()),
            Err(e) => Err(e),
        };
        match r {
            Ok(_) => {
                acked.lock().expect("lock").insert(name);
            }
            Err(_) => {
                unacked += 1;
                at += 1;
                // Not a wait for a condition: a pause between attempts while the cluster
                // is down, so the writer does not spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    unacked
}

/// On a failing test, prints every panic message in the members' logs (a panic's
/// backtrace pushes it out of the log tail the cluster prints).
struct PanicLines(Vec<std::path::PathBuf>);

impl Drop for PanicLines {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for log in &self.0 {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            for (i, l) in lines.iter().enumerate() {
                if l.contains("panicked at") {
                    let msg = lines.get(i + 1).unwrap_or(&"");
                    eprintln!("{}: {l} {msg}", log.display());
                }
            }
        }
    }
}

/// The ConfigMaps a linearizable list through `addr` returns.
async fn config_maps(addr: &str) -> Result<BTreeSet<String>, String> {
    crate::harness::names(addr, "ConfigMap", false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "requires root: every member's data directory is a shoal-lazyfs FUSE mount"]
async fn acknowledged_writes_survive_power_cuts_of_every_member() {
    let started = Instant::now();
    let mut c = TestCluster::empty();
    // Snapshots during the test, so the state machine's snapshot path is cut too.
    c.snapshot_every = Some(100);
    for id in 1..=3 {
        c.new_member(id);
        c.mount_lazyfs(id);
    }
    for id in 1..=3 {
        c.start_member(id);
        if id > 1 {
            c.add_member(id);
        }
    }
    c.wait_ready();
    let _panics = PanicLines(
        (1..=3)
            .map(|id| c.dir().join(format!("c{id}.log")))
            .collect(),
    );
    let addrs = c.addrs();
    let acked = Arc::new(Mutex::new(BTreeSet::new()));

    for round in 1..=ROUNDS {
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| tokio::spawn(writer(w, round, addrs.clone(), acked.clone(), stop.clone())))
            .collect();
        let before = acked.lock().expect("lock").len();
        // Write for a while (at least one acknowledged write this round), then cut with
        // the writers still running.
        let writing = Instant::now();
        eventually(
            &format!("round {round}: writes acknowledged before the cut"),
            Duration::from_secs(30),
            || {
                let n = acked.lock().expect("lock").len() - before;
                let enough = writing.elapsed() >= WRITE_FOR && n > 0;
                async move {
                    if enough {
                        Ok(())
                    } else {
                        Err(format!("{n} acknowledged this round"))
                    }
                }
            },
        )
        .await;
        let cuts = c.cut_power();
        stop.store(true, Ordering::Relaxed);
        let mut unacked = 0;
        for w in writers {
            unacked += w.await.expect("writer task");
        }
        let want = acked.lock().expect("lock").clone();
        for (id, line) in &cuts {
            eprintln!("power cut {round}: member {id}: {line}");
        }

        for id in 1..=3 {
            c.start_member(id);
        }
        let down_at = Instant::now();
        let mut seen = BTreeSet::new();
        for (i, addr) in addrs.iter().enumerate() {
            let id = i as u64 + 1;
            let what = format!(
                "power cut {round}: member {id} to serve a linearizable list again \
                 (acknowledged {}, present unknown until one answers)",
                want.len()
            );
            seen = eventually(&what, Duration::from_secs(30), || {
                // A member that exited will not come back: fail now, with its log (the
                // cluster's drop prints every member's state and log tail).
                let exited: Vec<u64> = (1..=3u64).filter(|m| !c.is_running(*m)).collect();
                assert!(
                    exited.is_empty(),
                    "power cut {round}: members {exited:?} exited after the restart \
                     (acknowledged {}, present unknown: the state could not be read back)",
                    want.len()
                );
                config_maps(addr)
            })
            .await;
            let lost: Vec<&String> = want.difference(&seen).collect();
            eprintln!(
                "power cut {round}: member {id}: acknowledged {} ({} this round, {unacked} \
                 unanswered), present {}, lost {}; back after {:?}",
                want.len(),
                want.len() - before,
                want.len() - lost.len(),
                lost.len(),
                down_at.elapsed()
            );
            assert!(
                lost.is_empty(),
                "power cut {round}: {} acknowledged ConfigMaps are missing through member {id}, e.g. {:?}",
                lost.len(),
                lost.iter().take(5).collect::<Vec<_>>()
            );
        }
        // Nothing that was never written shows up either.
        let stray: Vec<&String> = seen.iter().filter(|n| !n.starts_with("pl-r")).collect();
        assert!(stray.is_empty(), "unexpected ConfigMaps {stray:?}");
    }
    eprintln!(
        "power loss: {ROUNDS} cuts of all 3 members, {} acknowledged writes, none lost, in {:?}",
        acked.lock().expect("lock").len(),
        started.elapsed()
    );
}
