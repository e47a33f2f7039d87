//! Three-member clusters over real loopback gRPC.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use shoal_store::{Consistency, EventType, Store, StoreConfig, StoreError, Write};
use tokio::time::Instant;

use crate::util::{Cluster, eventually, pod};

fn create(key: &str, name: &str) -> Write {
    Write::Create {
        key: key.into(),
        object: pod(name, "busybox"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_every_member_are_visible_everywhere() {
    let c = Cluster::start("every-member", 3, |_| {}).await;
    let leader = c.leader().await;
    for id in c.running() {
        let key = format!("Pod/default/from-{id}");
        let out = c
            .store(id)
            .write(vec![create(&key, &format!("from-{id}"))])
            .await
            .expect("write");
        assert_eq!(out.len(), 1);
        assert!(out[0].created);
        assert_eq!(
            out[0].object["metadata"]["resourceVersion"],
            json!(out[0].revision.to_string())
        );
    }
    for reader in c.running() {
        let (items, rev) = c
            .store(reader)
            .list("Pod/default/", Consistency::Linearizable)
            .await
            .expect("list");
        assert_eq!(
            items.len(),
            3,
            "member {reader} (leader {leader}) sees {items:?}"
        );
        assert!(rev >= 3);
        let one = c
            .store(reader)
            .get("Pod/default/from-1", Consistency::Linearizable)
            .await
            .expect("get");
        assert_eq!(one.expect("present")["metadata"]["name"], json!("from-1"));
    }
    assert!(c.store(leader).is_leader().await);
    let status = c.store(leader).status().await;
    assert_eq!(status.members.len(), 3);
    assert!(status.members.iter().all(|m| m.healthy), "{status:?}");
    assert_eq!(
        status.members.iter().filter(|m| m.leader).count(),
        1,
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preconditions_conflicts_and_server_metadata() {
    let c = Cluster::start("preconditions", 3, |_| {}).await;
    let leader = c.leader().await;
    let follower = c
        .running()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    let s = c.store(follower);
    let key = "Pod/default/web";
    let created = s
        .write(vec![create(key, "web")])
        .await
        .expect("create")
        .remove(0);
    let md = &created.object["metadata"];
    let uid = md["uid"].as_str().expect("uid").to_owned();
    let ts = md["creationTimestamp"]
        .as_str()
        .expect("creationTimestamp")
        .to_owned();
    assert!(chrono::DateTime::parse_from_rfc3339(&ts).is_ok(), "{ts}");
    assert_eq!(md["generation"], json!(1));

    let again = s.write(vec![create(key, "web")]).await;
    assert_eq!(again, Err(StoreError::AlreadyExists { key: key.into() }));

    let stale = created.revision - 1;
    let conflict = s
        .write(vec![Write::Update {
            key: key.into(),
            object: pod("web", "nginx"),
            expected_revision: Some(stale),
        }])
        .await;
    assert_eq!(
        conflict,
        Err(StoreError::Conflict {
            key: key.into(),
            expected: stale,
            actual: created.revision
        })
    );

    // A spec change bumps the generation; uid and creationTimestamp stay.
    let updated = s
        .write(vec![Write::Update {
            key: key.into(),
            object: pod("web", "nginx"),
            expected_revision: Some(created.revision),
        }])
        .await
        .expect("update")
        .remove(0);
    assert!(!updated.created);
    assert_eq!(updated.object["metadata"]["generation"], json!(2));
    assert_eq!(updated.object["metadata"]["uid"], json!(uid));
    assert_eq!(updated.object["metadata"]["creationTimestamp"], json!(ts));
    assert!(updated.revision > created.revision);

    // A status-only change keeps the generation.
    let mut with_status = pod("web", "nginx");
    with_status["status"] = json!({"phase": "Running"});
    let st = s
        .write(vec![Write::Put {
            key: key.into(),
            object: with_status,
        }])
        .await
        .expect("put")
        .remove(0);
    assert_eq!(st.object["metadata"]["generation"], json!(2));
    assert_eq!(st.object["metadata"]["uid"], json!(uid));

    let missing = s
        .write(vec![Write::Update {
            key: "Pod/default/nope".into(),
            object: pod("nope", "x"),
            expected_revision: None,
        }])
        .await;
    assert_eq!(
        missing,
        Err(StoreError::NotFound {
            key: "Pod/default/nope".into()
        })
    );
    let bad_delete = s
        .write(vec![Write::Delete {
            key: key.into(),
            expected_revision: Some(1),
        }])
        .await;
    assert!(
        matches!(bad_delete, Err(StoreError::Conflict { .. })),
        "{bad_delete:?}"
    );
    let deleted = s
        .write(vec![Write::Delete {
            key: key.into(),
            expected_revision: Some(st.revision),
        }])
        .await
        .expect("delete")
        .remove(0);
    assert_eq!(deleted.object["status"]["phase"], json!("Running"));
    for id in c.running() {
        assert_eq!(
            c.store(id)
                .get(key, Consistency::Linearizable)
                .await
                .expect("get"),
            None
        );
    }
    let invalid = s.write(vec![create("Pod/no-namespace", "x")]).await;
    assert!(
        matches!(invalid, Err(StoreError::Invalid(_))),
        "{invalid:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_write_aborts_the_whole_batch() {
    let c = Cluster::start("batch", 3, |_| {}).await;
    let s = c.store(c.leader().await);
    s.write(vec![create("Pod/default/b", "b")])
        .await
        .expect("seed");
    let res = s
        .write(vec![
            create("Pod/default/a", "a"),
            create("Pod/default/b", "b"),
            create("Pod/default/c", "c"),
        ])
        .await;
    assert_eq!(
        res,
        Err(StoreError::AlreadyExists {
            key: "Pod/default/b".into()
        })
    );
    for id in c.running() {
        let st = c.store(id);
        let (items, _) = st
            .list("Pod/", Consistency::Linearizable)
            .await
            .expect("list");
        assert_eq!(items.len(), 1, "member {id}: {items:?}");
    }
    // A good batch lands at one revision, in order, and a later write in the batch sees an
    // earlier one.
    let out = s
        .write(vec![
            create("Pod/default/a", "a"),
            Write::Update {
                key: "Pod/default/a".into(),
                object: pod("a", "nginx"),
                expected_revision: None,
            },
            create("Pod/default/c", "c"),
        ])
        .await
        .expect("batch");
    assert_eq!(out.len(), 3);
    assert!(out.iter().all(|o| o.revision == out[0].revision));
    assert_eq!(out[1].object["metadata"]["generation"], json!(2));
    let f = c
        .running()
        .into_iter()
        .find(|id| *id != s.node_id())
        .expect("follower");
    let (items, rev) = c
        .store(f)
        .list("Pod/default/", Consistency::Linearizable)
        .await
        .expect("list");
    assert_eq!(items.len(), 3);
    assert!(rev >= out[0].revision);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_entries_and_each_keeps_its_own_outcome() {
    let c = Cluster::start("group", 3, |_| {}).await;
    let leader = c.leader().await;
    let s = c.store(leader);
    s.write(vec![create("Pod/default/taken", "taken")])
        .await
        .expect("seed");
    // On the leader: 200 requests at once, one of them doomed.
    let mut batches: Vec<Vec<Write>> = (0..199)
        .map(|i| vec![create(&format!("Pod/default/l{i}"), &format!("l{i}"))])
        .collect();
    batches.insert(77, vec![create("Pod/default/taken", "taken")]);
    let res = s.write_each(batches).await;
    assert_eq!(res.len(), 200);
    assert_eq!(
        res[77],
        Err(StoreError::AlreadyExists {
            key: "Pod/default/taken".into()
        }),
        "the doomed request fails alone"
    );
    let revs: std::collections::BTreeSet<u64> = res
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 77)
        .map(|(i, r)| {
            let out = r.as_ref().unwrap_or_else(|e| panic!("request {i}: {e}"));
            assert_eq!(out.len(), 1);
            out[0].revision
        })
        .collect();
    assert!(
        revs.len() < 50,
        "199 concurrent requests took {} entries: group commit did not group",
        revs.len()
    );
    // Forwarded from a follower: grouped on the leader the same way.
    let f = c
        .running()
        .into_iter()
        .find(|id| *id != leader)
        .expect("follower");
    let res = c
        .store(f)
        .write_each(
            (0..100)
                .map(|i| vec![create(&format!("Pod/default/f{i}"), &format!("f{i}"))])
                .collect(),
        )
        .await;
    let revs: std::collections::BTreeSet<u64> = res
        .iter()
        .map(|r| r.as_ref().expect("forwarded write")[0].revision)
        .collect();
    assert!(revs.len() < 100, "forwarded requests were never grouped");
    // Two requests on one key never share an entry (nor a revision).
    let res = s
        .write_each(vec![
            vec![Write::Put {
                key: "Pod/default/l1".into(),
                object: pod("l1", "nginx"),
            }],
            vec![Write::Put {
                key: "Pod/default/l1".into(),
                object: pod("l1", "redis"),
            }],
        ])
        .await;
    let (a, b) = (
        res[0].as_ref().expect("first")[0].revision,
        res[1].as_ref().expect("second")[0].revision,
    );
    assert!(a < b, "revisions {a} and {b}");
    for id in c.running() {
        let (items, _) = c
            .store(id)
            .list("Pod/default/", Consistency::Linearizable)
            .await
            .expect("list");
        assert_eq!(items.len(), 300, "member {id}");
        let l1 = c
            .store(id)
            .get("Pod/default/l1", Consistency::Linearizable)
            .await
            .expect("get")
            .expect("present");
        assert_eq!(l1["spec"]["containers"][0]["image"], json!("redis"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_from_a_revision_and_reports_too_old() {
    let c = Cluster::start("watch", 3, |cfg: &mut StoreConfig| cfg.watch_history = 20).await;
    let leader = c.leader().await;
    let follower = c
        .running()
        .into_iter()
        .find(|id| *id != leader)
        .expect("follower");
    let s = c.store(follower);
    let first = s
        .write(vec![create("Pod/default/w0", "w0")])
        .await
        .expect("write")[0]
        .revision;
    let (_, rev) = s
        .list("Pod/", Consistency::Linearizable)
        .await
        .expect("list");
    let mut live = s.watch("Pod/default/", Some(rev)).await.expect("watch");
    let mut nodes = s.watch("Node/", None).await.expect("watch nodes");
    let mut revs = Vec::new();
    for i in 1..=5 {
        let w = c
            .store(leader)
            .write(vec![create(&format!("Pod/default/w{i}"), "w")])
            .await
            .expect("write");
        revs.push(w[0].revision);
    }
    let upd = s
        .write(vec![Write::Update {
            key: "Pod/default/w1".into(),
            object: pod("w1", "v2"),
            expected_revision: None,
        }])
        .await
        .expect("update")[0]
        .revision;
    let del = s
        .write(vec![Write::Delete {
            key: "Pod/default/w2".into(),
            expected_revision: None,
        }])
        .await
        .expect("del")[0]
        .revision;
    let mut seen = Vec::new();
    while seen.len() < 7 {
        let ev = tokio::time::timeout(Duration::from_secs(5), live.next())
            .await
            .expect("event in time")
            .expect("open")
            .expect("ok");
        seen.push((ev.revision, ev.event_type, ev.key));
    }
    let mut expected: Vec<(u64, EventType, String)> = revs
        .iter()
        .enumerate()
        .map(|(i, r)| (*r, EventType::Added, format!("Pod/default/w{}", i + 1)))
        .collect();
    expected.push((upd, EventType::Modified, "Pod/default/w1".into()));
    expected.push((del, EventType::Deleted, "Pod/default/w2".into()));
    assert_eq!(seen, expected);
    // Nothing under Node/ was written.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), nodes.next())
            .await
            .is_err()
    );

    // A watcher that resumes later from an old revision gets exactly the newer events.
    let mut resumed = s.watch("Pod/", Some(revs[2])).await.expect("resume");
    let mut got = Vec::new();
    while got.len() < 4 {
        let ev = tokio::time::timeout(Duration::from_secs(5), resumed.next())
            .await
            .expect("in time")
            .expect("open")
            .expect("ok");
        got.push(ev.revision);
    }
    assert_eq!(got, vec![revs[3], revs[4], upd, del]);

    // Push the first writes out of the 20-event history.
    let batch: Vec<Write> = (0..30)
        .map(|i| create(&format!("Pod/default/fill-{i}"), "f"))
        .collect();
    let filled = c.store(leader).write(batch).await.expect("fill")[0].revision;
    eventually(
        "follower applied the fill batch",
        Duration::from_secs(10),
        || async {
            if s.applied_revision() >= filled {
                Ok(())
            } else {
                Err(s.applied_revision().to_string())
            }
        },
    )
    .await;
    // 30 events at one revision: the history keeps whole revisions, so all older ones are out.
    match s.watch("Pod/", Some(first)).await {
        Err(StoreError::TooOld { requested, oldest }) => {
            assert_eq!(requested, first);
            assert!(oldest > first);
        }
        other => panic!("expected TooOld, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_resume_after_the_leader_is_lost_and_acknowledged_writes_survive() {
    let mut c = Cluster::start("failover", 3, |_| {}).await;
    let old_leader = c.leader().await;
    let survivors: Vec<u64> = c
        .running()
        .into_iter()
        .filter(|id| *id != old_leader)
        .collect();
    // key -> time acknowledged
    let acked: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for (wi, id) in survivors.iter().flat_map(|id| [*id, *id]).enumerate() {
        let s: Store = c.store(id);
        let (acked, stop) = (acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("Pod/default/w{wi}-{i}");
                // Create: a write applied twice would come back as AlreadyExists.
                match s.write(vec![create(&key, "x")]).await {
                    Ok(_) => acked.lock().expect("lock").push((key, Instant::now())),
                    Err(e) => errors.push((key, e)),
                }
                i += 1;
            }
            errors
        }));
    }
    let before = eventually("writes before the kill", Duration::from_secs(20), || {
        let n = acked.lock().expect("lock").len();
        async move {
            if n >= 20 {
                Ok(n)
            } else {
                Err(format!("{n} acknowledged"))
            }
        }
    })
    .await;
    let killed_at = Instant::now();
    c.kill(old_leader).await;
    eventually(
        "writes resumed on the new leader",
        Duration::from_secs(30),
        || {
            let n = acked
                .lock()
                .expect("lock")
                .iter()
                .filter(|(_, t)| *t > killed_at)
                .count();
            async move {
                if n > 10 {
                    Ok(())
                } else {
                    Err(format!("{n} acknowledged after the kill"))
                }
            }
        },
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut errors = Vec::new();
    for w in writers {
        errors.extend(w.await.expect("writer task"));
    }
    let total = acked.lock().expect("lock").clone();
    let mut times: Vec<Instant> = total
        .iter()
        .map(|(_, t)| *t)
        .filter(|t| *t > killed_at)
        .collect();
    times.insert(0, killed_at);
    times.sort();
    let longest_pause = times.windows(2).map(|w| w[1] - w[0]).max();
    println!(
        "acked before kill {before}, total {}; longest pause in acknowledgements after the kill: {longest_pause:?}; errors: {errors:?}",
        total.len()
    );
    assert!(before > 0, "writes before the failover");
    assert!(
        total.iter().filter(|(_, t)| *t > killed_at).count() > 10,
        "writes resumed on the new leader"
    );
    // Every write call was acknowledged: resends after an unknown outcome were deduplicated.
    assert!(errors.is_empty(), "{errors:?}");
    let new_leader = c.leader().await;
    assert_ne!(new_leader, old_leader);
    for id in survivors {
        let st = c.store(id);
        let (items, _) = st
            .list("Pod/default/", Consistency::Linearizable)
            .await
            .expect("list");
        assert_eq!(
            items.len(),
            total.len(),
            "member {id}: exactly the acknowledged objects"
        );
        for (k, _) in &total {
            assert!(
                st.get(k, Consistency::Local).await.expect("get").is_some(),
                "member {id} lost acknowledged {k}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_member_catches_up_from_a_snapshot_after_the_log_was_purged() {
    let mut c = Cluster::start("catch-up", 3, |cfg: &mut StoreConfig| {
        cfg.snapshot_every = 1_000_000;
        cfg.keep_logs_after_snapshot = 0;
    })
    .await;
    let leader = c.leader().await;
    let lagging = c
        .running()
        .into_iter()
        .find(|id| *id != leader)
        .expect("follower");
    c.store(lagging)
        .write(vec![create("Pod/default/before", "b")])
        .await
        .expect("write");
    let stopped_log = c
        .store(lagging)
        .raft()
        .metrics()
        .borrow()
        .last_log_index
        .unwrap_or(0);
    c.stop(lagging).await;
    let s = c.store(leader);
    for i in 0..220 {
        s.write(vec![create(&format!("Pod/default/p{i}"), "x")])
            .await
            .expect("write while member is down");
    }
    let last = s.applied_revision();
    s.trigger_snapshot().await.expect("snapshot");
    s.purge_log_upto(last).await.expect("purge");
    let purged = s.raft().metrics().borrow().purged.expect("purged").index;
    assert!(
        purged > stopped_log,
        "leader purged up to {purged}, member stopped at {stopped_log}"
    );

    c.restart(lagging).await;
    let r = c.store(lagging);
    eventually(
        "the restarted member to hold every object",
        Duration::from_secs(30),
        || async {
            let (items, rev) = r
                .list("Pod/default/", Consistency::Local)
                .await
                .map_err(|e| e.to_string())?;
            if items.len() == 221 {
                Ok(())
            } else {
                Err(format!("{} objects at revision {rev}", items.len()))
            }
        },
    )
    .await;
    // The member had no log after its stop point left to receive: it got a snapshot.
    eventually(
        "the restarted member to report the installed snapshot",
        Duration::from_secs(10),
        || async {
            let snap = r.raft().metrics().borrow().snapshot;
            if snap.is_some_and(|s| s.index >= purged) {
                Ok(())
            } else {
                Err(format!("{snap:?}"))
            }
        },
    )
    .await;
    // And it keeps replicating normally afterwards.
    let w = c
        .store(leader)
        .write(vec![create("Pod/default/after", "a")])
        .await
        .expect("write")[0]
        .revision;
    eventually(
        "the restarted member to apply new writes",
        Duration::from_secs(10),
        || async {
            if r.applied_revision() >= w {
                Ok(())
            } else {
                Err(r.applied_revision().to_string())
            }
        },
    )
    .await;
    assert!(
        r.get("Pod/default/after", Consistency::Linearizable)
            .await
            .expect("get")
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_members_stopped_and_reopened_keep_all_data() {
    let mut c = Cluster::start("restart-all", 3, |cfg: &mut StoreConfig| {
        cfg.snapshot_every = 50
    })
    .await;
    let leader = c.leader().await;
    let mut last = 0;
    for i in 0..120 {
        last = c
            .store(leader)
            .write(vec![create(&format!("Pod/default/r{i}"), "x")])
            .await
            .expect("write")[0]
            .revision;
    }
    for id in c.running() {
        let st = c.store(id);
        eventually(
            "every member applied the writes",
            Duration::from_secs(10),
            || async {
                if st.applied_revision() >= last {
                    Ok(())
                } else {
                    Err(st.applied_revision().to_string())
                }
            },
        )
        .await;
    }
    for id in c.running() {
        c.stop(id).await;
    }
    for id in 1..=3 {
        c.restart(id).await;
    }
    c.leader().await;
    for id in c.running() {
        let (items, rev) = c
            .store(id)
            .list("Pod/default/", Consistency::Linearizable)
            .await
            .expect("list");
        assert_eq!(items.len(), 120, "member {id}");
        assert!(rev >= last);
    }
    let w = c
        .store(1)
        .write(vec![create("Pod/default/after-restart", "x")])
        .await
        .expect("write after restart");
    assert!(w[0].revision > last);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_member_store_bootstraps_and_reopens() {
    let dir = tempfile::Builder::new()
        .prefix("shoal-store-single-")
        .tempdir()
        .expect("tempdir");
    let cfg = StoreConfig::new(7, dir.path(), "127.0.0.1:0");
    let m = shoal_store::testing::spawn_member(cfg.clone())
        .await
        .expect("spawn");
    m.store.bootstrap().await.expect("bootstrap");
    m.store.bootstrap().await.expect("bootstrap is idempotent");
    let out = m
        .store
        .write(vec![create("Node//n1", "n1")])
        .await
        .expect("write");
    let huge =
        json!({"kind": "ConfigMap", "data": {"blob": "x".repeat(shoal_store::MAX_COMMAND_BYTES)}});
    let too_big = m
        .store
        .write(vec![Write::Put {
            key: "ConfigMap/default/huge".into(),
            object: huge,
        }])
        .await;
    assert!(
        matches!(too_big, Err(StoreError::Invalid(_))),
        "{too_big:?}"
    );
    let mut leaders = m.store.leader_changes();
    assert_eq!(*leaders.borrow_and_update(), Some(7));
    m.stop().await.expect("stop");
    let mut cfg2 = cfg;
    cfg2.advertise_addr = "127.0.0.1:0".into();
    let m = shoal_store::testing::spawn_member(cfg2)
        .await
        .expect("respawn");
    m.store.bootstrap().await.expect("bootstrap after restart");
    let got = m
        .store
        .get("Node//n1", Consistency::Linearizable)
        .await
        .expect("get")
        .expect("present");
    assert_eq!(
        got["metadata"]["resourceVersion"],
        json!(out[0].revision.to_string())
    );
    m.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alives_reach_every_member_without_touching_the_log() {
    let c = Cluster::start("keep-alive", 3, |_| {}).await;
    let leader = c.leader().await;
    let followers: Vec<u64> = c.running().into_iter().filter(|i| *i != leader).collect();
    let (f1, f2) = (followers[0], followers[1]);
    // Let the blank entry of the new term apply everywhere first.
    c.store(leader)
        .write(vec![create("Pod/default/settle", "settle")])
        .await
        .expect("write");
    let revision = c.store(leader).applied_revision();
    // Kept in milliseconds.
    let before = chrono::DateTime::from_timestamp_millis(chrono::Utc::now().timestamp_millis())
        .expect("now");
    c.store(f1).keep_alive("node-a");
    assert!(
        c.store(f1)
            .last_heard("node-a")
            .is_some_and(|t| t >= before)
    );
    let heard = |id: u64, name: &'static str| {
        let s = c.store(id).clone();
        async move {
            match s.last_heard(name) {
                Some(t) if t >= before => Ok(()),
                other => Err(format!("member {id} last heard of {name}: {other:?}")),
            }
        }
    };
    eventually("the leader hears of node-a", Duration::from_secs(5), || {
        heard(leader, "node-a")
    })
    .await;
    // The other follower pulls the leader's record.
    eventually(
        "the other follower hears of node-a",
        Duration::from_secs(5),
        || heard(f2, "node-a"),
    )
    .await;
    c.store(leader).keep_alive("node-b");
    eventually(
        "one follower hears of node-b",
        Duration::from_secs(5),
        || heard(f1, "node-b"),
    )
    .await;
    eventually("the other hears of node-b", Duration::from_secs(5), || {
        heard(f2, "node-b")
    })
    .await;
    assert_eq!(c.store(leader).last_heard("node-c"), None);
    for id in c.running() {
        assert_eq!(
            c.store(id).applied_revision(),
            revision,
            "member {id}: keep-alives must not go through the log"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_serves_reads_within_its_lease_without_a_round() {
    let c = Cluster::start("lease", 3, |_| {}).await;
    let leader = c.leader().await;
    c.store(leader)
        .write(vec![create("Pod/default/lease", "lease")])
        .await
        .expect("write");
    let before = shoal_store::lease_read_counter().get();
    for _ in 0..20 {
        let got = c
            .store(leader)
            .get("Pod/default/lease", Consistency::Linearizable)
            .await
            .expect("get");
        assert!(got.is_some());
    }
    let served = shoal_store::lease_read_counter().get() - before;
    // The first read may run a round (which earns the lease); the next ones, within half
    // the election timeout, are served by the lease.
    assert!(served >= 10, "{served} of 20 reads served by the lease");
    // A follower's read asks the leader, which answers from its lease too.
    let follower = c
        .running()
        .into_iter()
        .find(|i| *i != leader)
        .expect("a follower");
    let before = shoal_store::lease_read_counter().get();
    c.store(leader)
        .get("Pod/default/lease", Consistency::Linearizable)
        .await
        .expect("get");
    let got = c
        .store(follower)
        .get("Pod/default/lease", Consistency::Linearizable)
        .await
        .expect("get");
    assert!(got.is_some());
    assert!(shoal_store::lease_read_counter().get() > before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_read_after_an_acknowledged_write_sees_it_under_the_lease() {
    let c = Cluster::start("lease-follower", 3, |_| {}).await;
    let leader = c.leader().await;
    let follower = c
        .running()
        .into_iter()
        .find(|i| *i != leader)
        .expect("a follower");
    for i in 0..300 {
        let key = format!("Pod/default/rw-{i}");
        // Keep the leader's lease fresh, so the follower's ReadIndex is answered from it.
        c.store(leader)
            .get("Pod/default/none", Consistency::Linearizable)
            .await
            .expect("get");
        c.store(leader)
            .write(vec![create(&key, &format!("rw-{i}"))])
            .await
            .expect("write");
        let got = c
            .store(follower)
            .get(&key, Consistency::Linearizable)
            .await
            .expect("read");
        assert!(
            got.is_some(),
            "read {i} on member {follower} missed an acknowledged write"
        );
    }
}
