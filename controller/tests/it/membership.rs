//! Membership changes and backup/restore through the cluster API of real controller
//! processes.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use shoal_proto::{
    AddMemberRequest, ClusterStatusRequest, ListRequest, ObjectRequest, RemoveMemberRequest,
    SnapshotRequest,
};

use crate::harness::{TestCluster, client, create_pod, eventually};

/// A controller process started by a test; killed (by PID) and reaped on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

fn controller(args: &[&str], log: &std::path::Path) -> Command {
    let log = std::fs::File::create(log).expect("log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal-controller"));
    cmd.args(args)
        .env("SHOAL_LOG", "info,openraft=warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    cmd
}

/// Runs a controller that must refuse to start; returns its output.
fn refused_start(args: &[&str], log: &std::path::Path) -> String {
    let mut child = controller(args, log).spawn().expect("spawn");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("controller {args:?} did not refuse to start");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = std::fs::read_to_string(log).unwrap_or_default();
    assert!(!status.success(), "{args:?} started: {out}");
    out
}

/// `name -> resourceVersion` of every pod, as the member at `addr` has it locally.
async fn pod_versions(addr: &str) -> Result<BTreeMap<String, String>, String> {
    let mut c = client(addr).await?;
    let r = c
        .list(ListRequest {
            kind: "Pod".into(),
            namespace: "default".into(),
            stale: true,
            ..Default::default()
        })
        .await
        .map_err(|e| e.message().to_string())?
        .into_inner();
    Ok(r.items_json
        .iter()
        .filter_map(|j| serde_json::from_str::<serde_json::Value>(j).ok())
        .map(|v| {
            (
                v["metadata"]["name"].as_str().unwrap_or("").to_string(),
                v["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_and_remove_members_through_the_api_with_refusals() {
    let mut c = TestCluster::with(2, 5000, &[]);
    c.new_member(3);
    c.start_member(3);
    let a3 = c.addr(3);
    eventually("member 3 serves", Duration::from_secs(20), || {
        let a3 = a3.clone();
        async move { client(&a3).await.map(|_| ()) }
    })
    .await;
    let a1 = c.addr(1);
    let mut api = client(&a1).await.expect("client");

    // Refusals: FAILED_PRECONDITION with the reason, membership unchanged.
    let refusals = [
        (2, c.addr(3), "already in use"),
        (4, c.addr(2), "already used by member 2"),
        (4, free_addr(), "unreachable"),
    ];
    for (id, address, want) in refusals {
        let e = api
            .add_member(AddMemberRequest { id, address })
            .await
            .expect_err("refused");
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
        assert!(
            e.message().contains(want),
            "{want:?} not in {:?}",
            e.message()
        );
    }
    let s = api
        .status(ClusterStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(s.members.len(), 2, "{s:?}");

    // Positive control, through a follower (forwarded to the leader).
    let leader = c.wait_leader(&[1, 2]).await;
    let follower = if leader == 1 { 2 } else { 1 };
    let mut via = client(&c.addr(follower)).await.expect("client");
    let s = via
        .add_member(AddMemberRequest {
            id: 3,
            address: c.addr(3),
        })
        .await
        .expect("add member 3")
        .into_inner();
    assert!(
        s.members.iter().any(|m| m.id == 3 && m.voter),
        "member 3 is a voter: {s:?}"
    );
    create_pod(&c.addr(3), "via-new-member")
        .await
        .expect("write via the new member");

    // Remove the leader; the other two elect a new one and keep accepting writes.
    via.remove_member(RemoveMemberRequest { id: leader })
        .await
        .expect("remove the leader");
    let rest: Vec<u64> = [1, 2, 3].into_iter().filter(|i| *i != leader).collect();
    let new_leader = c.wait_leader(&rest).await;
    assert_ne!(new_leader, leader);
    c.stop(leader);
    create_pod(&c.addr(rest[0]), "after-leader-removal")
        .await
        .expect("write after removing the leader");
    let s = client(&c.addr(rest[1]))
        .await
        .expect("client")
        .status(ClusterStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    let ids: Vec<u64> = s.members.iter().map(|m| m.id).collect();
    assert_eq!(ids, rest, "{s:?}");

    // The last but one can go, the last cannot.
    let mut last = client(&c.addr(new_leader)).await.expect("client");
    let other = rest
        .iter()
        .copied()
        .find(|i| *i != new_leader)
        .expect("other");
    last.remove_member(RemoveMemberRequest { id: other })
        .await
        .expect("shrink to one");
    let e = last
        .remove_member(RemoveMemberRequest { id: new_leader })
        .await
        .expect_err("the last member stays");
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("last"), "{}", e.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_restore_keeps_every_object_and_its_resource_version() {
    let c = TestCluster::with(3, 50, &[]);
    let a2 = c.addr(2);
    for i in 0..40 {
        create_pod(&a2, &format!("p{i}")).await.expect("create");
    }
    let mut api = client(&a2).await.expect("client");
    api.delete(shoal_proto::DeleteRequest {
        kind: "Pod".into(),
        namespace: "default".into(),
        name: "p39".into(),
        resource_version: 0,
    })
    .await
    .expect("delete");
    // The reconcilers mark the pending pods (there is no node): wait until that settled, so
    // that the restored cluster's own reconcilers have nothing left to change either.
    let last = std::sync::Arc::new(std::sync::Mutex::new(BTreeMap::new()));
    eventually("the pods settle", Duration::from_secs(30), || {
        let (a2, last) = (a2.clone(), last.clone());
        async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            let now = pod_versions(&a2).await?;
            let prev = std::mem::replace(&mut *last.lock().expect("lock"), now.clone());
            if now == prev {
                Ok(())
            } else {
                Err(format!("{} pods changing", now.len()))
            }
        }
    })
    .await;
    let mut stream = api
        .snapshot(SnapshotRequest {})
        .await
        .expect("snapshot")
        .into_inner();
    let mut file = Vec::new();
    let mut revision = 0;
    while let Some(chunk) = stream.message().await.expect("chunk") {
        if file.is_empty() {
            revision = chunk.revision;
            assert!(
                chunk.total_bytes > 0 && chunk.objects >= 39,
                "{}",
                chunk.objects
            );
        }
        file.extend_from_slice(&chunk.data);
    }
    let want = pod_versions(&a2).await.expect("pods");
    assert_eq!(want.len(), 39);
    let dir = c.dir().to_path_buf();
    let good = dir.join("backup.snap");
    std::fs::write(&good, &file).expect("write");

    // Damaged files and a non-empty data dir are refused before anything is written.
    let truncated = dir.join("truncated.snap");
    std::fs::write(&truncated, &file[..file.len() - 100]).expect("write");
    let mut flipped = file.clone();
    let n = flipped.len() - 50;
    flipped[n] ^= 0x01;
    let corrupt = dir.join("corrupt.snap");
    std::fs::write(&corrupt, &flipped).expect("write");
    for (f, want_msg) in [(&truncated, "truncated"), (&corrupt, "corrupt")] {
        let data_dir = dir.join(format!("r-{want_msg}"));
        let out = refused_start(
            &[
                "--id",
                "1",
                "--listen",
                &free_addr(),
                "--registry-listen",
                "none",
                "--metrics-listen",
                "none",
                "--data-dir",
                data_dir.to_str().expect("utf8"),
                "--restore",
                f.to_str().expect("utf8"),
            ],
            &dir.join(format!("r-{want_msg}.log")),
        );
        assert!(out.contains(want_msg), "{want_msg:?} not in {out}");
        assert!(!data_dir.exists(), "nothing written for a damaged file");
    }
    let out = refused_start(
        &[
            "--id",
            "1",
            "--listen",
            &free_addr(),
            "--registry-listen",
            "none",
            "--metrics-listen",
            "none",
            "--data-dir",
            c.members[0].data_dir.to_str().expect("utf8"),
            "--restore",
            good.to_str().expect("utf8"),
        ],
        &dir.join("r-nonempty.log"),
    );
    assert!(out.contains("not empty"), "{out}");

    // A new one-member cluster from the good file.
    let addr = free_addr();
    let data_dir = dir.join("restored");
    let _restored = Proc(
        controller(
            &[
                "--id",
                "7",
                "--listen",
                &addr,
                "--registry-listen",
                "none",
                "--metrics-listen",
                "none",
                "--data-dir",
                data_dir.to_str().expect("utf8"),
                "--restore",
                good.to_str().expect("utf8"),
            ],
            &dir.join("restored.log"),
        )
        .spawn()
        .expect("spawn restored"),
    );
    // The restored member keeps the CA of the backup and writes a new admin.conf.
    shoal_testkit::register_conf(&addr, data_dir.join("admin.conf"));
    let got = eventually(
        "the restored cluster serves",
        Duration::from_secs(20),
        || {
            let addr = addr.clone();
            async move {
                let mut c = client(&addr).await?;
                c.status(ClusterStatusRequest {})
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|s| {
                        if s.get_ref().leader_id == 7 {
                            Ok(())
                        } else {
                            Err(format!("{:?}", s.get_ref()))
                        }
                    })?;
                pod_versions(&addr).await
            }
        },
    )
    .await;
    assert_eq!(got, want, "every object with the same resourceVersion");

    // New writes get larger revisions; watches from before the snapshot must re-list.
    let mut rc = client(&addr).await.expect("client");
    let created = rc
        .create(ObjectRequest {
            object_json: crate::harness::pod_json("after-restore"),
        })
        .await
        .expect("create after restore")
        .into_inner();
    let v: serde_json::Value = serde_json::from_str(&created.object_json).expect("json");
    let rv: u64 = v["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("rv");
    assert!(rv > revision, "{rv} <= {revision}");
    let mut w = rc
        .watch(shoal_proto::WatchRequest {
            kind: "Pod".into(),
            resource_version: revision - 10,
            ..Default::default()
        })
        .await;
    let e = match &mut w {
        Err(e) => e.clone(),
        Ok(s) => s.get_mut().message().await.expect_err("told to re-list"),
    };
    assert_eq!(e.code(), tonic::Code::OutOfRange, "{e:?}");

    // Grow the restored cluster: the new member receives every object.
    let addr8 = free_addr();
    let (token, hash) =
        shoal_testkit::create_token(&data_dir.join("admin.conf"), &addr, "controller", 1).await;
    shoal_testkit::register_conf(&addr8, data_dir.join("admin.conf"));
    let _m8 = Proc(
        controller(
            &[
                "--id",
                "8",
                "--listen",
                &addr8,
                "--registry-listen",
                "none",
                "--metrics-listen",
                "none",
                "--data-dir",
                dir.join("c8").to_str().expect("utf8"),
                "--join",
                &addr,
                "--join-token",
                &token,
                "--ca-hash",
                &hash,
            ],
            &dir.join("c8.log"),
        )
        .spawn()
        .expect("spawn member 8"),
    );
    eventually("adding member 8", Duration::from_secs(30), || {
        let (addr, addr8) = (addr.clone(), addr8.clone());
        async move {
            client(&addr)
                .await?
                .add_member(AddMemberRequest {
                    id: 8,
                    address: addr8,
                })
                .await
                .map(|_| ())
                .map_err(|e| e.message().to_string())
        }
    })
    .await;
    eventually("member 8 has every object", Duration::from_secs(20), || {
        let addr8 = addr8.clone();
        let want = want.clone();
        async move {
            let have = pod_versions(&addr8).await?;
            if want.iter().all(|(k, v)| have.get(k) == Some(v)) {
                Ok(())
            } else {
                Err(format!("{} pods", have.len()))
            }
        }
    })
    .await;
}
