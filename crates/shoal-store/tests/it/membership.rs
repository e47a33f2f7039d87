//! Membership changes and backup/restore on real in-process members over loopback gRPC.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use shoal_store::{Backup, Consistency, Store, StoreConfig, StoreError, Write};

use crate::util::{Cluster, eventually, pod};

fn create(key: &str, name: &str) -> Write {
    Write::Create {
        key: key.into(),
        object: pod(name, "busybox"),
    }
}

/// Voter and learner ids as member `id` sees them.
fn membership(c: &Cluster, id: u64) -> (BTreeSet<u64>, BTreeSet<u64>) {
    let m = c.store(id).raft().metrics().borrow().clone();
    let mem = m.membership_config.membership();
    let voters: BTreeSet<u64> = mem.voter_ids().collect();
    let learners: BTreeSet<u64> = mem.learner_ids().collect();
    (voters, learners)
}

/// Writes pods through the stores in `via` (round robin) until `stop`; returns the keys whose
/// writes were acknowledged and how many failed.
fn writer(
    via: Arc<Mutex<Vec<Store>>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(Vec<String>, usize)> {
    tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut failed = 0;
        let mut i = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let store = {
                let v = via.lock().expect("lock");
                v[i % v.len()].clone()
            };
            let key = format!("Pod/default/w-{i}");
            match store.write(vec![create(&key, &format!("w-{i}"))]).await {
                Ok(_) => acked.push(key),
                Err(_) => failed += 1,
            }
            i += 1;
        }
        (acked, failed)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grow_to_five_remove_the_leader_shrink_to_three_under_writes() {
    let mut c = Cluster::start("grow-shrink", 3, |_| {}).await;
    let via = Arc::new(Mutex::new(vec![c.store(2), c.store(3)]));
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(via.clone(), stop.clone());

    c.grow(4).await;
    c.grow(5).await;
    via.lock().expect("lock").extend([c.store(4), c.store(5)]);
    assert_eq!(membership(&c, 1).0, BTreeSet::from([1, 2, 3, 4, 5]));

    // Remove the leader (asked through another member: forwarded to the leader).
    let leader = c.leader().await;
    let other = c
        .running()
        .into_iter()
        .find(|i| *i != leader)
        .expect("other");
    via.lock().expect("lock").retain(|s| s.node_id() != leader);
    c.store(other)
        .remove_member(leader)
        .await
        .expect("remove the leader");
    let new_leader = eventually(
        "a new leader among the rest",
        Duration::from_secs(20),
        || {
            let l = *c.store(other).leader_changes().borrow();
            async move {
                match l {
                    Some(l) if l != leader => Ok(l),
                    _ => Err(format!("{l:?}")),
                }
            }
        },
    )
    .await;
    c.stop(leader).await;

    // Shrink to three: remove a follower.
    let victim = c
        .running()
        .into_iter()
        .find(|i| *i != new_leader)
        .expect("a follower");
    via.lock().expect("lock").retain(|s| s.node_id() != victim);
    c.store(new_leader)
        .remove_member(victim)
        .await
        .expect("remove a follower");
    c.stop(victim).await;

    // Keep writing a little on the final cluster, then stop.
    let before = c.store(new_leader).applied_revision();
    eventually(
        "writes on the 3-member cluster",
        Duration::from_secs(20),
        || {
            let r = c.store(new_leader).applied_revision();
            async move {
                if r > before + 30 {
                    Ok(())
                } else {
                    Err(format!("{r}"))
                }
            }
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let (acked, failed) = w.await.expect("writer");
    println!("writes acknowledged: {}, failed: {failed}", acked.len());
    assert!(
        acked.len() > 30,
        "too few writes went through: {}",
        acked.len()
    );

    let rest = c.running();
    assert_eq!(rest.len(), 3);
    for id in &rest {
        let (voters, learners) = membership(&c, *id);
        assert_eq!(
            voters,
            rest.iter().copied().collect(),
            "voters seen by {id}"
        );
        assert!(learners.is_empty());
        let (items, _) = c
            .store(*id)
            .list("Pod/default/", Consistency::Linearizable)
            .await
            .expect("list");
        let have: BTreeSet<String> = items
            .iter()
            .filter_map(|v| v["metadata"]["name"].as_str())
            .map(|n| format!("Pod/default/{n}"))
            .collect();
        let lost: Vec<&String> = acked.iter().filter(|k| !have.contains(*k)).collect();
        assert!(
            lost.is_empty(),
            "member {id} lost acknowledged writes: {lost:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_restarted_does_not_disturb_the_cluster() {
    let mut c = Cluster::start("removed-restart", 3, |_| {}).await;
    let leader = c.leader().await;
    let gone = c
        .running()
        .into_iter()
        .find(|i| *i != leader)
        .expect("a follower");
    // Stopped first, it never learns that it was removed: restarted, it campaigns with its
    // old membership.
    c.stop(gone).await;
    c.store(leader).remove_member(gone).await.expect("remove");
    c.store(leader)
        .write(vec![create("Pod/default/after-removal", "x")])
        .await
        .expect("write");
    let term = c.store(leader).raft().metrics().borrow().current_term;
    c.restart_detached(gone).await;

    let rest: Vec<u64> = c.running().into_iter().filter(|i| *i != gone).collect();
    let t0 = tokio::time::Instant::now();
    let mut n = 0;
    // Several election timeouts (300–600 ms) of the removed member.
    while t0.elapsed() < Duration::from_secs(4) {
        for id in &rest {
            let m = c.store(*id).raft().metrics().borrow().clone();
            assert_eq!(m.current_leader, Some(leader), "leader seen by {id}: {m:?}");
            assert_eq!(m.current_term, term, "term of {id} moved: {m:?}");
        }
        c.store(rest[n % rest.len()])
            .write(vec![create(&format!("Pod/default/d-{n}"), "d")])
            .await
            .expect("write while the removed member runs");
        n += 1;
    }
    let gm = c.store(gone).raft().metrics().borrow().clone();
    println!(
        "removed member: state {:?} term {}; cluster term {term}; {n} writes",
        gm.state, gm.current_term
    );
    assert!(n > 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_membership_changes_leave_the_membership_unchanged() {
    let mut c = Cluster::start("refusals", 1, |cfg: &mut StoreConfig| {
        cfg.catch_up_timeout = Duration::from_secs(5)
    })
    .await;
    let s1 = c.store(1);
    let refused = |r: Result<(), StoreError>, want: &str| match r {
        Err(StoreError::Membership(m)) if m.contains(want) => {}
        other => panic!("expected a refusal containing {want:?}, got {other:?}"),
    };

    // The last member cannot go.
    refused(s1.remove_member(1).await, "last");
    refused(s1.remove_member(9).await, "not a member");
    assert_eq!(membership(&c, 1), (BTreeSet::from([1]), BTreeSet::new()));

    // An unreachable new member (nothing listens there) times out and is refused.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    refused(s1.add_member(2, &closed).await, "unreachable");
    assert!(matches!(
        s1.add_member(2, "no-port").await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(membership(&c, 1), (BTreeSet::from([1]), BTreeSet::new()));

    // Positive control: a started, empty member is added.
    c.grow(2).await;
    assert_eq!(membership(&c, 1), (BTreeSet::from([1, 2]), BTreeSet::new()));

    // Duplicate id, duplicate address, a member answering with another id.
    let addr2 = c.cfgs[&2].advertise_addr.clone();
    let addr3 = c.spawn(3).await;
    refused(s1.add_member(2, &addr3).await, "already in use");
    refused(s1.add_member(4, &addr2).await, "already used by member 2");
    refused(s1.add_member(4, &addr3).await, "is member 3, not 4");
    assert_eq!(membership(&c, 1), (BTreeSet::from([1, 2]), BTreeSet::new()));
    s1.add_member(3, &addr3).await.expect("add member 3");
    assert_eq!(
        membership(&c, 1),
        (BTreeSet::from([1, 2, 3]), BTreeSet::new())
    );

    // With member 3 down, removing member 2 would leave {1, 3} with one answering: refused.
    let leader = c.leader().await;
    let (down, keep) = if leader == 3 {
        (2, 1)
    } else {
        (3, if leader == 2 { 1 } else { 2 })
    };
    c.stop(down).await;
    let via = c.store(leader);
    refused(via.remove_member(keep).await, "no quorum");
    assert_eq!(membership(&c, leader).0, BTreeSet::from([1, 2, 3]));
    // Positive control: removing the member that is down keeps a quorum.
    via.remove_member(down)
        .await
        .expect("remove the stopped member");
    let mut want = BTreeSet::from([1, 2, 3]);
    want.remove(&down);
    assert_eq!(membership(&c, leader).0, want);
    via.write(vec![create("Pod/default/still-writable", "x")])
        .await
        .expect("write after the removal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_restores_every_object_with_its_revision() {
    let c = Cluster::start("backup", 3, |_| {}).await;
    let s = c.store(2);
    for i in 0..30 {
        s.write(vec![create(&format!("Pod/default/p{i}"), &format!("p{i}"))])
            .await
            .expect("create");
    }
    for i in 0..5 {
        let mut o = pod(&format!("p{i}"), "busybox:2");
        o["metadata"]["labels"] = serde_json::json!({"v": "2"});
        s.write(vec![Write::Update {
            key: format!("Pod/default/p{i}"),
            object: o,
            expected_revision: None,
        }])
        .await
        .expect("update");
    }
    s.write(vec![Write::Delete {
        key: "Pod/default/p29".into(),
        expected_revision: None,
    }])
    .await
    .expect("delete");
    let (before, rev) = c
        .store(1)
        .list("", Consistency::Linearizable)
        .await
        .expect("list");
    let backup = s.backup().await.expect("backup");
    assert!(backup.revision >= rev);
    let file = backup.encode().expect("encode");
    let decoded = Backup::decode(&file).expect("decode");
    assert_eq!(decoded, backup);

    // Restore into a new data dir as member 9 of a new cluster.
    let dir = tempfile::Builder::new()
        .prefix("shoal-store-restore-")
        .tempdir()
        .expect("tempdir");
    let l = shoal_store::testing::bind_loopback().await.expect("bind");
    let mut cfg = StoreConfig::new(
        9,
        dir.path().join("d"),
        l.local_addr().expect("a").to_string(),
    );
    cfg.heartbeat_ms = 50;
    Store::restore(&cfg, &decoded).expect("restore");
    let err = Store::restore(&cfg, &decoded).expect_err("a second restore into it");
    assert!(err.to_string().contains("not empty"), "{err}");
    let m = shoal_store::testing::spawn_member_on(cfg, l)
        .await
        .expect("open restored");
    tokio::time::timeout(Duration::from_secs(10), m.store.bootstrap())
        .await
        .expect("leader in time")
        .expect("bootstrap restored");
    let (after, arev) = m
        .store
        .list("", Consistency::Linearizable)
        .await
        .expect("list restored");
    assert_eq!(after, before, "every object with the same resourceVersion");
    assert!(arev >= backup.revision);
    let w = m
        .store
        .write(vec![create("Pod/default/new", "new")])
        .await
        .expect("write after restore");
    assert!(
        w[0].revision > backup.revision,
        "{} <= {}",
        w[0].revision,
        backup.revision
    );
    // A watch resuming from before the snapshot's revision must re-list.
    match m.store.watch("Pod/", Some(backup.revision - 5)).await {
        Err(StoreError::TooOld { .. }) => {}
        Ok(mut s) => match s.next().await {
            Some(Err(StoreError::TooOld { .. })) => {}
            other => panic!("expected TooOld, got {other:?}"),
        },
        Err(e) => panic!("expected TooOld, got {e}"),
    }
    m.stop().await.expect("stop");
}
