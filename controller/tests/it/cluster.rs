//! A 3-member controller cluster of real processes: writes through any member,
//! leader SIGKILL under load, catch-up through a snapshot, full restart.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{TestCluster, create_pod, eventually, local_pod_names};

/// Creates `name` through any member, trying the next one on failure, for up to 20 s.
async fn create_anywhere(addrs: &[String], start: usize, name: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut i = start;
    loop {
        let addr = &addrs[i % addrs.len()];
        match create_pod(addr, name).await {
            Ok(()) => return Ok(()),
            // An earlier attempt whose answer was lost did commit: that counts.
            Err(e) if e.contains("already exists") => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(format!("{name}: {e}")),
            Err(_) => {
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn all_present(addr: &str, want: &BTreeSet<String>) -> Result<(), String> {
    let have = local_pod_names(addr).await?;
    let missing: Vec<&String> = want.difference(&have).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{addr} misses {} of {} acknowledged writes, e.g. {:?}",
            missing.len(),
            want.len(),
            missing.first()
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_through_any_member_survive_leader_sigkill() {
    let mut c = TestCluster::with(3, 5000, &[]);
    let leader = c.wait_leader(&[1, 2, 3]).await;
    let addrs: Vec<String> = (1..=3).map(|id| c.addr(id)).collect();

    // Writes go through every member (followers forward to the leader).
    for (i, a) in addrs.iter().enumerate() {
        create_pod(a, &format!("via-{i}"))
            .await
            .expect("write through member");
    }

    // A stream of writes from 4 concurrent writers.
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4usize {
        let (acked, stop, addrs) = (acked.clone(), stop.clone(), addrs.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let name = format!("w{w}-{n}");
                create_anywhere(&addrs, w + n, &name)
                    .await
                    .expect("acknowledged eventually");
                acked.lock().expect("lock").insert(name);
                n += 1;
            }
        }));
    }
    let before = eventually(
        "writes acknowledged before the kill",
        Duration::from_secs(20),
        || {
            let n = acked.lock().expect("lock").len();
            async move {
                if n >= 20 {
                    Ok(n)
                } else {
                    Err(format!("{n} acked so far"))
                }
            }
        },
    )
    .await;

    c.kill(leader);
    let killed_at = Instant::now();
    let survivors: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let new_leader = c.wait_leader(&survivors).await;
    assert_ne!(new_leader, leader);
    eventually("writes after the kill", Duration::from_secs(20), || {
        let n = acked.lock().expect("lock").len();
        async move {
            if n > before + 20 {
                Ok(())
            } else {
                Err(format!("{n} acked so far"))
            }
        }
    })
    .await;
    eprintln!(
        "failover: writes resumed within {:?} of SIGKILL",
        killed_at.elapsed()
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }

    let mut want: BTreeSet<String> = acked.lock().expect("lock").clone();
    want.extend((0..3).map(|i| format!("via-{i}")));
    for id in &survivors {
        let addr = c.addr(*id);
        eventually(
            "acknowledged writes on survivors",
            Duration::from_secs(20),
            || all_present(&addr, &want),
        )
        .await;
    }
    // The killed member comes back and catches up.
    c.start_member(leader);
    let addr = c.addr(leader);
    eventually(
        "acknowledged writes on the restarted member",
        Duration::from_secs(30),
        || all_present(&addr, &want),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopped_member_catches_up_through_snapshot() {
    // Snapshot every 50 entries so the log the stopped member needs is purged.
    let mut c = TestCluster::with(3, 50, &[]);
    let leader = c.wait_leader(&[1, 2, 3]).await;
    let lagging = (1..=3).find(|id| *id != leader).expect("a follower");
    c.stop(lagging);
    let live: Vec<String> = (1..=3)
        .filter(|id| *id != lagging)
        .map(|id| c.addr(id))
        .collect();
    let mut want = BTreeSet::new();
    for i in 0..400 {
        let name = format!("snap-{i}");
        create_anywhere(&live, i, &name)
            .await
            .expect("write while a member is down");
        want.insert(name);
    }
    c.start_member(lagging);
    let addr = c.addr(lagging);
    eventually(
        "the restarted member to catch up",
        Duration::from_secs(30),
        || all_present(&addr, &want),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_survives_restart_of_all_members() {
    let mut c = TestCluster::with(3, 5000, &[]);
    c.wait_leader(&[1, 2, 3]).await;
    let addrs: Vec<String> = (1..=3).map(|id| c.addr(id)).collect();
    let mut want = BTreeSet::new();
    for i in 0..60 {
        let name = format!("keep-{i}");
        create_anywhere(&addrs, i, &name).await.expect("write");
        want.insert(name);
    }
    for id in 1..=3 {
        c.stop(id);
    }
    for id in 1..=3 {
        c.start_member(id);
    }
    c.wait_leader(&[1, 2, 3]).await;
    for a in &addrs {
        eventually("data after a full restart", Duration::from_secs(20), || {
            all_present(a, &want)
        })
        .await;
    }
    create_anywhere(&addrs, 0, "after-restart")
        .await
        .expect("write after restart");
}
