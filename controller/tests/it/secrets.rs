//! Secrets encrypted at rest (docs/security.md "Encryption at rest"): a Secret's value
//! reaches no file under the controllers' data directories (sled files, Raft log,
//! snapshots), no log and no backup, yet an admin reads it back, also after a restart of
//! every member and from members that joined (their key came in the Join response).
//! The view role is refused; limits and immutability are enforced through the API.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use futures::StreamExt;
use shoal_proto::cluster_client::ClusterClient;
use shoal_proto::{GetRequest, ObjectRequest, SnapshotRequest};
use tonic::Code;

use crate::access::{as_who, ca_of, user};
use crate::harness::{TestCluster, eventually};

/// Every file under `root` whose bytes contain `needle`.
fn files_containing(root: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

async fn create(c: &mut ClusterClient<tonic::transport::Channel>, json: String) {
    c.create(ObjectRequest { object_json: json })
        .await
        .expect("create");
}

async fn secret_value(addr: &str, c: &TestCluster, stale: bool) -> Result<String, String> {
    let mut g = c.grpc(addr).await?;
    let r = g
        .get(GetRequest {
            kind: "Secret".into(),
            namespace: "default".into(),
            name: "db".into(),
            stale,
        })
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    let v: serde_json::Value = serde_json::from_str(&r.object_json).map_err(|e| e.to_string())?;
    v.pointer("/data/password")
        .and_then(|p| p.as_str())
        .map(str::to_string)
        .ok_or_else(|| format!("no data.password in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secrets_are_encrypted_at_rest_and_readable_by_admins() {
    let mut c = TestCluster::empty();
    // Snapshots every 10 entries, so the Secret is in snapshot files too; debug logs.
    c.snapshot_every = Some(10);
    c.log_filter = "debug,openraft=debug,h2=info,hyper=info,tower=info,rustls=info".into();
    for id in 1..=3 {
        c.new_member(id);
        c.start_member(id);
        if id > 1 {
            c.add_member(id);
        }
    }
    c.wait_ready();
    let addr = c.addr(1);
    let marker = format!("s3cret-{}", uuid::Uuid::new_v4().simple());
    let plain_marker = format!("plain-{}", uuid::Uuid::new_v4().simple());
    let b64 = base64::engine::general_purpose::STANDARD.encode(&marker);
    let mut g = c.grpc(&addr).await.expect("admin");
    create(
        &mut g,
        serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "db", "namespace": "default"},
            "stringData": {"password": marker},
        })
        .to_string(),
    )
    .await;
    // Enough writes to pass several snapshots; a ConfigMap (not encrypted) is the control
    // that the scan does see what the store writes.
    for i in 0..40 {
        create(
            &mut g,
            serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("cm-{i}"), "namespace": "default"},
                "data": {"k": plain_marker},
            })
            .to_string(),
        )
        .await;
    }
    assert_eq!(
        secret_value(&addr, &c, false).await.expect("admin get"),
        b64
    );
    // Every member opens it with its own copy of the key (members 2 and 3 joined).
    for id in 2..=3 {
        let a = c.addr(id);
        let got = eventually(
            "the secret on a joined member",
            Duration::from_secs(20),
            || secret_value(&a, &c, true),
        )
        .await;
        assert_eq!(got, b64);
    }

    // The view role is refused, naming why.
    let ca = ca_of(&c.admin_conf());
    let viewer = user(&c.admin_conf(), &addr, "viewer", "view", "").await;
    let ch = as_who(&ca, Some(&viewer), &addr).await.expect("viewer");
    let e = ClusterClient::new(ch)
        .get(GetRequest {
            kind: "Secret".into(),
            namespace: "default".into(),
            name: "db".into(),
            stale: false,
        })
        .await
        .expect_err("view may not read secrets");
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(
        e.message().contains("view role cannot read Secrets"),
        "{}",
        e.message()
    );

    // A backup holds the sealed form only.
    let mut chunks = g
        .snapshot(SnapshotRequest {})
        .await
        .expect("snapshot")
        .into_inner();
    let mut file = Vec::new();
    while let Some(ch) = chunks.next().await {
        file.extend_from_slice(&ch.expect("chunk").data);
    }
    let backup = shoal_store::Backup::decode(&file).expect("backup");
    let text = serde_json::to_string(&backup.objects).expect("json");
    assert!(
        text.contains(&plain_marker),
        "control: the ConfigMap is in the backup"
    );
    assert!(
        !text.contains(&marker) && !text.contains(&b64),
        "secret in the backup"
    );

    for id in 1..=3 {
        c.stop(id);
    }
    let root = c.dir().to_path_buf();
    let control = files_containing(&root, plain_marker.as_bytes());
    assert!(
        control.iter().any(|f| f.contains("/c1/")),
        "control: the ConfigMap's value must be found in c1's files, found in {control:?}"
    );
    for needle in [marker.as_bytes(), b64.as_bytes()] {
        let hits = files_containing(&root, needle);
        assert!(
            hits.is_empty(),
            "the secret's value is in {hits:?} (data directories and logs)"
        );
    }

    // After a restart of every member the value is still readable.
    for id in 1..=3 {
        c.start_member(id);
    }
    c.wait_leader(&[1, 2, 3]).await;
    let got = eventually(
        "the secret after a restart",
        Duration::from_secs(30),
        || secret_value(&addr, &c, false),
    )
    .await;
    assert_eq!(got, b64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limits_and_immutability_are_enforced() {
    let c = TestCluster::start(1);
    let addr = c.addr(1);
    let mut g = c.grpc(&addr).await.expect("admin");
    let big = "x".repeat(1024 * 1024 + 1);
    let e = g
        .create(ObjectRequest {
            object_json: serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "big", "namespace": "default"},
                "data": {"k": big},
            })
            .to_string(),
        })
        .await
        .expect_err("over 1 MiB");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("1048576 bytes (1 MiB)"),
        "{}",
        e.message()
    );

    let cm = |v: &str| {
        serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "frozen", "namespace": "default"},
            "data": {"k": v}, "immutable": true,
        })
        .to_string()
    };
    create(&mut g, cm("1")).await;
    let e = g
        .update(ObjectRequest {
            object_json: cm("2"),
        })
        .await
        .expect_err("immutable");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("immutable"), "{}", e.message());

    // A dockerconfigjson Secret needs its key.
    let e = g
        .create(ObjectRequest {
            object_json: serde_json::json!({
                "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
                "metadata": {"name": "reg", "namespace": "default"},
            })
            .to_string(),
        })
        .await
        .expect_err("missing .dockerconfigjson");
    assert!(e.message().contains(".dockerconfigjson"), "{}", e.message());
}

/// Starts `shoal-controller ARGS` and returns its exit status and output (for refusals).
fn run_controller(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(shoal_testkit::bin("shoal-controller"))
        .args(args)
        .env("SHOAL_LOG", "info")
        .output()
        .expect("run shoal-controller");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_with_secrets_restores_only_with_the_key() {
    let c = TestCluster::start(1);
    let addr = c.addr(1);
    let mut g = c.grpc(&addr).await.expect("admin");
    create(
        &mut g,
        serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "db", "namespace": "default"},
            "stringData": {"password": "restore-me"},
        })
        .to_string(),
    )
    .await;
    let mut chunks = g
        .snapshot(SnapshotRequest {})
        .await
        .expect("snapshot")
        .into_inner();
    let mut file = Vec::new();
    while let Some(ch) = chunks.next().await {
        file.extend_from_slice(&ch.expect("chunk").data);
    }
    let dir = c.dir().to_path_buf();
    let snap = dir.join("with-secret.snap");
    std::fs::write(&snap, &file).expect("write");

    // Without the key: refused before anything is written.
    let data_dir = dir.join("restored");
    let port = shoal_testkit::free_port();
    let listen = format!("127.0.0.1:{port}");
    let (ok, out) = run_controller(&[
        "--id",
        "5",
        "--listen",
        &listen,
        "--registry-listen",
        "none",
        "--metrics-listen",
        "none",
        "--data-dir",
        data_dir.to_str().expect("utf8"),
        "--restore",
        snap.to_str().expect("utf8"),
    ]);
    assert!(!ok, "{out}");
    assert!(out.contains("holds encrypted Secrets"), "{out}");
    assert!(!data_dir.exists(), "nothing written without the key");

    // With a copy of the key (outside the new data directory): restored and readable.
    let key_copy = dir.join("key-copy");
    std::fs::copy(c.members[0].data_dir.join("pki/encryption.key"), &key_copy).expect("copy");
    let mut cmd = std::process::Command::new(shoal_testkit::bin("shoal-controller"));
    cmd.args([
        "--id",
        "5",
        "--listen",
        &listen,
        "--registry-listen",
        "none",
        "--metrics-listen",
        "none",
        "--data-dir",
        data_dir.to_str().expect("utf8"),
        "--restore",
        snap.to_str().expect("utf8"),
        "--encryption-key-file",
        key_copy.to_str().expect("utf8"),
    ])
    .env("SHOAL_LOG", "info");
    let _restored =
        shoal_testkit::Proc::spawn("restored controller", &mut cmd, &dir.join("restored.log"));
    shoal_testkit::register_conf(&listen, data_dir.join("admin.conf"));
    let got = eventually("the restored secret", Duration::from_secs(30), || {
        let listen = listen.clone();
        async move {
            let mut cl = shoal_testkit::client_of(&listen).await?;
            let r = cl
                .get(GetRequest {
                    kind: "Secret".into(),
                    namespace: "default".into(),
                    name: "db".into(),
                    stale: false,
                })
                .await
                .map_err(|s| s.message().to_string())?
                .into_inner();
            Ok::<_, String>(r.object_json)
        }
    })
    .await;
    let want = base64::engine::general_purpose::STANDARD.encode("restore-me");
    assert!(got.contains(&want), "{got}");
    // The key was kept in the new data directory for later starts.
    assert!(data_dir.join("pki/encryption.key").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_gets_only_the_secrets_of_its_pods_and_never_the_key() {
    let c = TestCluster::start(1);
    let addr = c.addr(1);
    let (token, hash) = shoal_testkit::create_token(&c.admin_conf(), &addr, "node", 1).await;
    let me = shoal_pki::Identity::Node { name: "n1".into() };
    let j = shoal_client::join::join(
        &addr,
        &token,
        &hash,
        shoal_proto::JoinRequest {
            kind: "node".into(),
            name: "n1".into(),
            addresses: vec!["127.0.0.1".into()],
            ..Default::default()
        },
        &me,
    )
    .await
    .expect("join");
    assert!(
        j.encryption_key.is_empty(),
        "a node must not get the encryption key"
    );

    let mut g = c.grpc(&addr).await.expect("admin");
    for name in ["db", "other"] {
        create(
            &mut g,
            serde_json::json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "namespace": "default"},
                "stringData": {"k": "v"},
            })
            .to_string(),
        )
        .await;
    }
    create(
        &mut g,
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox",
                "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "db", "key": "k"}}}]}]},
        })
        .to_string(),
    )
    .await;

    let slot = shoal_pki::tls::CertSlot::from_pem(&j.cert_pem, &j.key_pem).expect("slot");
    let mut node = ClusterClient::new(as_who(&j.ca_pem, Some(&slot), &addr).await.expect("tls"));
    let get = |name: &str| GetRequest {
        kind: "Secret".into(),
        namespace: "default".into(),
        name: name.into(),
        stale: false,
    };
    node.get(get("db")).await.expect("the secret of its pod");
    let e = node.get(get("other")).await.expect_err("not its pod's");
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(
        e.message().contains("no pod bound to n1 refers to it"),
        "{}",
        e.message()
    );
    let e = node
        .list(shoal_proto::ListRequest {
            kind: "Secret".into(),
            namespace: "default".into(),
            ..Default::default()
        })
        .await
        .expect_err("no list");
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("one by one"), "{}", e.message());

    // By name, a node lists and watches the Secrets of its pods (the agent's mirrors).
    let by_name = |name: &str| shoal_proto::ListRequest {
        kind: "Secret".into(),
        namespace: "default".into(),
        field_selector: format!("metadata.name={name}"),
        ..Default::default()
    };
    let listed = node.list(by_name("db")).await.expect("list db by name");
    let listed = listed.into_inner();
    assert_eq!(listed.items_json.len(), 1, "{:?}", listed.items_json);
    assert!(listed.items_json[0].contains("\"name\":\"db\""));
    let e = node
        .list(by_name("other"))
        .await
        .expect_err("not its pod's");
    assert_eq!(e.code(), Code::PermissionDenied);
    let watch_of = |name: &str, after: u64| shoal_proto::WatchRequest {
        kind: "Secret".into(),
        namespace: "default".into(),
        field_selector: format!("metadata.name={name}"),
        resource_version: after,
        ..Default::default()
    };
    let e = node.watch(watch_of("other", listed.resource_version)).await;
    assert_eq!(e.expect_err("not its pod's").code(), Code::PermissionDenied);
    let mut events = node
        .watch(watch_of("db", listed.resource_version))
        .await
        .expect("watch db by name")
        .into_inner();
    // A Secret whose name starts with "db" is not the one watched: its change must not
    // reach the node.
    create(
        &mut g,
        serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "db2", "namespace": "default"},
            "stringData": {"k": "not for n1"},
        })
        .to_string(),
    )
    .await;
    g.update(ObjectRequest {
        object_json: serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "db", "namespace": "default"},
            "stringData": {"k": "v2"},
        })
        .to_string(),
    })
    .await
    .expect("update db");
    let ev = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an event in time")
        .expect("the stream is open")
        .expect("an event");
    assert_eq!(ev.r#type, "MODIFIED");
    assert!(
        ev.object_json.contains("\"name\":\"db\""),
        "{}",
        ev.object_json
    );
    assert!(!ev.object_json.contains("db2"), "{}", ev.object_json);
}
