//! Access control against a real controller process: certificates, tokens, roles, the
//! node authorizer and admission (docs/security.md). Every refusal is checked for its
//! code and wording, and that nothing changed.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use shoal_pki::tls::{CertSlot, Connector, Expect, Trust, client_config};
use shoal_pki::{Ca, Identity, Role};
use shoal_proto::access_client::AccessClient;
use shoal_proto::cluster_client::ClusterClient;
use shoal_proto::raft_client::RaftClient;
use shoal_proto::{
    ApplyRequest, GetRequest, IssueUserRequest, JoinRequest, ListRequest, ObjectRequest,
    RaftPayload,
};
use tonic::Code;
use tonic::transport::Channel;

use crate::harness::{TestCluster, client, pod_json};

pub(crate) fn ca_of(conf: &Path) -> String {
    let f = shoal_client::file::ConfigFile::load(conf).expect("admin.conf");
    f.resolve(None).expect("context").ca_pem
}

async fn connect(tls: Arc<rustls::ClientConfig>, addr: &str) -> Result<Channel, String> {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .timeout(Duration::from_secs(10))
        .connect_with_connector(Connector::new(tls, Duration::from_secs(3)))
        .await
        .map_err(|e| shoal_client::connect_reason(&e))
}

/// A channel presenting `slot` (or nothing), trusting the cluster CA.
pub(crate) async fn as_who(
    ca_pem: &str,
    slot: Option<&CertSlot>,
    addr: &str,
) -> Result<Channel, String> {
    let tls = client_config(&Trust::Ca(ca_pem.into()), slot, Expect::Controller)
        .map_err(|e| e.to_string())?;
    connect(tls, addr).await
}

/// A user certificate issued by the cluster (through IssueUser with the admin).
pub(crate) async fn user(admin: &Path, addr: &str, name: &str, role: &str, ns: &str) -> CertSlot {
    let who = Identity::User {
        name: name.into(),
        role: role.parse().expect("role"),
        namespace: (!ns.is_empty()).then(|| ns.to_string()),
    };
    let (key, csr) = shoal_pki::ca::new_key_and_csr(&who, &[]).expect("csr");
    let ch = shoal_testkit::channel(admin, addr)
        .await
        .expect("admin channel");
    let r = AccessClient::new(ch)
        .issue_user(IssueUserRequest {
            name: name.into(),
            role: role.into(),
            namespace: ns.into(),
            csr_pem: csr,
            ttl_seconds: 600,
        })
        .await
        .expect("issue user")
        .into_inner();
    CertSlot::from_pem(&r.cert_pem, &key).expect("slot")
}

async fn pods(addr: &str) -> usize {
    client(addr)
        .await
        .expect("admin")
        .list(ListRequest {
            kind: "Pod".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .items_json
        .len()
}

fn denied(r: Result<impl std::fmt::Debug, tonic::Status>, code: Code, words: &str) {
    let s = r.expect_err("must be refused");
    assert_eq!(s.code(), code, "{s:?}");
    assert!(
        s.message().contains(words),
        "{:?} lacks {words:?}",
        s.message()
    );
}

#[tokio::test]
async fn strangers_are_refused_before_any_handler() {
    let c = tokio::task::spawn_blocking(|| TestCluster::start(1))
        .await
        .expect("start");
    let addr = c.addr(1);
    let ca_pem = ca_of(&c.admin_conf());

    // No client certificate: the handshake is let through (for Join) but every other call
    // is refused by the layer.
    let ch = as_who(&ca_pem, None, &addr)
        .await
        .expect("tls without a certificate");
    denied(
        ClusterClient::new(ch)
            .create(ObjectRequest {
                object_json: pod_json("x"),
            })
            .await,
        Code::Unauthenticated,
        "client certificate",
    );

    // A certificate of another CA: refused in the handshake.
    let other = Ca::generate("other").expect("ca");
    let who = Identity::User {
        name: "mallory".into(),
        role: Role::Admin,
        namespace: None,
    };
    let (cert, key) = other
        .issue(&who, &[], Duration::from_secs(600))
        .expect("cert");
    let slot = CertSlot::from_pem(&cert, &key).expect("slot");
    let r = match as_who(&ca_pem, Some(&slot), &addr).await {
        Err(e) => Err(e),
        Ok(ch) => ClusterClient::new(ch)
            .list(ListRequest {
                kind: "Pod".into(),
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|s| s.message().to_string()),
    };
    // The server refuses the handshake (its log names the reason); the client sees the
    // connection fail (TLS 1.3 reports a refused client certificate only as a closed
    // connection at its first read).
    let e = r.expect_err("a foreign certificate must be refused");
    assert!(!e.is_empty());

    // An expired certificate of the right CA (copied out of the data dir's CA key).
    let pki = c.members[0].data_dir.join("pki");
    let ca = Ca::from_pem(
        &std::fs::read_to_string(pki.join("ca.crt")).expect("ca.crt"),
        &std::fs::read_to_string(pki.join("ca.key")).expect("ca.key"),
    )
    .expect("ca");
    let (cert, key) = ca
        .issue(&who, &[], Duration::from_secs(1))
        .expect("short cert");
    // Valid from 5 min before issue (skew) to 1 s after. X.509 times and the verifier's
    // clock have whole seconds (the verifier compares `now` truncated with `notAfter`), so
    // wait until a whole second has passed after notAfter, not just notAfter itself.
    let not_after = shoal_pki::CertInfo::from_pem(&cert)
        .expect("info")
        .not_after;
    while std::time::SystemTime::now() < not_after + Duration::from_millis(1100) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let slot = CertSlot::from_pem(&cert, &key).expect("slot");
    let r = match as_who(&ca_pem, Some(&slot), &addr).await {
        Err(e) => Err(e),
        Ok(ch) => ClusterClient::new(ch)
            .list(ListRequest {
                kind: "Pod".into(),
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|s| s.message().to_string()),
    };
    let e = r.expect_err("an expired certificate must be refused");
    assert!(!e.is_empty());

    // Plaintext HTTP/2 gets no gRPC answer.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5));
    let r = match plain.connect().await {
        Err(e) => Err(e.to_string()),
        Ok(ch) => ClusterClient::new(ch)
            .list(ListRequest {
                kind: "Pod".into(),
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|s| format!("{:?}", s.code())),
    };
    assert!(r.is_err(), "plaintext must not be answered");

    // A Raft RPC from a user certificate (admin, even) is refused.
    let admin = shoal_testkit::channel(&c.admin_conf(), &addr)
        .await
        .expect("admin");
    denied(
        RaftClient::new(admin)
            .append_entries(RaftPayload {
                data: b"{}".to_vec(),
            })
            .await,
        Code::PermissionDenied,
        "Raft",
    );
    assert_eq!(pods(&addr).await, 0, "nothing may have been written");
}

#[tokio::test]
async fn tokens_are_checked_and_spent() {
    let c = tokio::task::spawn_blocking(|| TestCluster::start(1))
        .await
        .expect("start");
    let addr = c.addr(1);
    let (token, hash) = shoal_testkit::create_token(&c.admin_conf(), &addr, "node", 1).await;
    let me = Identity::Node { name: "n1".into() };
    let req = |name: &str| JoinRequest {
        kind: "node".into(),
        name: name.into(),
        addresses: vec!["127.0.0.1".into()],
        ..Default::default()
    };
    // A wrong hash never even reaches the controller.
    let bad = format!("sha256:{}", "0".repeat(64));
    let e = shoal_client::join::join(&addr, &token, &bad, req("n1"), &me)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("does not match"), "{e}");
    // A wrong secret.
    let forged = format!(
        "{}.{}",
        token.split('.').next().unwrap_or(""),
        "0".repeat(16)
    );
    let e = shoal_client::join::join(&addr, &forged, &hash, req("n1"), &me)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("wrong secret"), "{e}");
    // The first join spends the single use, the second is refused.
    let j = shoal_client::join::join(&addr, &token, &hash, req("n1"), &me)
        .await
        .expect("join");
    assert!(j.cert_pem.contains("BEGIN CERTIFICATE"));
    let me2 = Identity::Node { name: "n2".into() };
    let e = shoal_client::join::join(&addr, &token, &hash, req("n2"), &me2)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("used up"), "{e}");
    // A node token cannot make a controller.
    let (t2, _) = shoal_testkit::create_token(&c.admin_conf(), &addr, "node", 1).await;
    let ctrl = Identity::Controller { id: 9 };
    let r = JoinRequest {
        kind: "controller".into(),
        controller_id: 9,
        ..Default::default()
    };
    let e = shoal_client::join::join(&addr, &t2, &hash, r, &ctrl)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not a controller"), "{e}");

    // The node certificate: cannot create pods, touch other nodes or set its podCIDR.
    let ca_pem = j.ca_pem.clone();
    let slot = CertSlot::from_pem(&j.cert_pem, &j.key_pem).expect("slot");
    let mut node = ClusterClient::new(as_who(&ca_pem, Some(&slot), &addr).await.expect("node tls"));
    denied(
        node.create(ObjectRequest {
            object_json: pod_json("x"),
        })
        .await,
        Code::PermissionDenied,
        "node n1 may not create pods",
    );
    let node_obj = |name: &str, cidr: Option<&str>| {
        serde_json::json!({"apiVersion": "shoal/v1", "kind": "Node",
            "metadata": {"name": name}, "spec": {"podCIDR": cidr}})
        .to_string()
    };
    denied(
        node.create(ObjectRequest {
            object_json: node_obj("n2", None),
        })
        .await,
        Code::PermissionDenied,
        "write node n2",
    );
    denied(
        node.create(ObjectRequest {
            object_json: node_obj("n1", Some("10.99.0.0/24")),
        })
        .await,
        Code::PermissionDenied,
        "podCIDR",
    );
    node.create(ObjectRequest {
        object_json: node_obj("n1", None),
    })
    .await
    .expect("own node");
    let got = node
        .get(GetRequest {
            kind: "Node".into(),
            name: "n2".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(got.expect_err("n2 does not exist").code(), Code::NotFound);
    assert_eq!(pods(&addr).await, 0);
}

#[tokio::test]
async fn roles_and_admission() {
    let c = tokio::task::spawn_blocking(|| TestCluster::start(1))
        .await
        .expect("start");
    let addr = c.addr(1);
    let conf = c.admin_conf();
    let ca_pem = ca_of(&conf);
    let view = user(&conf, &addr, "vera", "view", "").await;
    let mut v = ClusterClient::new(as_who(&ca_pem, Some(&view), &addr).await.expect("view"));
    v.list(ListRequest {
        kind: "Pod".into(),
        ..Default::default()
    })
    .await
    .expect("view lists");
    denied(
        v.apply(ApplyRequest {
            objects_json: vec![pod_json("a")],
            dry_run: false,
        })
        .await,
        Code::PermissionDenied,
        "user vera (view) may not update pods",
    );
    client(&addr)
        .await
        .expect("admin")
        .create(ObjectRequest {
            object_json:
                r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}"#.into(),
        })
        .await
        .expect("the admin makes namespace team");
    let team = user(&conf, &addr, "alice", "edit", "team").await;
    let mut t = ClusterClient::new(as_who(&ca_pem, Some(&team), &addr).await.expect("edit"));
    let in_ns = |ns: &str, name: &str, host: bool| {
        let mut v: serde_json::Value = serde_json::from_str(&pod_json(name)).expect("json");
        v["metadata"]["namespace"] = ns.into();
        if host {
            v["spec"]["volumes"] = serde_json::json!([{"name": "h", "hostPath": {"path": "/"}}]);
        }
        v.to_string()
    };
    t.create(ObjectRequest {
        object_json: in_ns("team", "ok", false),
    })
    .await
    .expect("edit in team");
    denied(
        t.create(ObjectRequest {
            object_json: in_ns("default", "no", false),
        })
        .await,
        Code::PermissionDenied,
        "namespace default",
    );
    denied(
        t.create(ObjectRequest {
            object_json: in_ns("team", "host", true),
        })
        .await,
        Code::PermissionDenied,
        "hostPath",
    );
    // privileged: the same rule, named by its field.
    let privileged = |name: &str| {
        let mut v: serde_json::Value =
            serde_json::from_str(&in_ns("team", name, false)).expect("json");
        v["spec"]["containers"][0]["securityContext"] = serde_json::json!({"privileged": true});
        v.to_string()
    };
    denied(
        t.create(ObjectRequest {
            object_json: privileged("priv"),
        })
        .await,
        Code::PermissionDenied,
        "set spec.containers[0].securityContext.privileged (Pod priv); only admins may",
    );
    // Admins may, but never a host port Shoal uses.
    let mut a = client(&addr).await.expect("admin");
    a.create(ObjectRequest {
        object_json: in_ns("team", "host", true),
    })
    .await
    .expect("admin hostPath");
    a.create(ObjectRequest {
        object_json: privileged("priv"),
    })
    .await
    .expect("admin privileged");
    let mut p: serde_json::Value = serde_json::from_str(&pod_json("ssh")).expect("json");
    p["spec"]["containers"][0]["ports"] =
        serde_json::json!([{"containerPort": 22, "hostPort": 22}]);
    denied(
        a.create(ObjectRequest {
            object_json: p.to_string(),
        })
        .await,
        Code::InvalidArgument,
        "hostPort 22 is reserved for ssh",
    );
    // Operations are admin-only.
    let ch = as_who(&ca_pem, Some(&team), &addr).await.expect("edit");
    denied(
        AccessClient::new(ch.clone())
            .create_token(shoal_proto::CreateTokenRequest {
                ttl_seconds: 60,
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "admin only",
    );
    denied(
        ClusterClient::new(ch)
            .add_member(shoal_proto::AddMemberRequest {
                id: 5,
                address: "127.0.0.1:1".into(),
            })
            .await,
        Code::PermissionDenied,
        "admin only",
    );
    // ok and host in team, priv by the admin: none of the refused ones.
    assert_eq!(pods(&addr).await, 3, "only the allowed pods exist");
}

#[tokio::test]
async fn certificates_rotate_under_open_streams() {
    // 20 s certificates: renewed about every 13 s.
    let c = tokio::task::spawn_blocking(|| TestCluster::start_args(2, &["--cert-lifetime", "20s"]))
        .await
        .expect("start");
    let (a1, a2) = (c.addr(1), c.addr(2));
    let crt = c.members[0].data_dir.join("pki/tls.crt");
    let first = std::fs::read_to_string(&crt).expect("tls.crt");
    let mut watch = client(&a1)
        .await
        .expect("admin")
        .watch(shoal_proto::WatchRequest {
            kind: "Pod".into(),
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    // Three renewals of member 1.s certificate (member 2 renews on the same schedule).
    let mut renewals = 0;
    let mut last = first.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while renewals < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "only {renewals} renewals in 90 s"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = std::fs::read_to_string(&crt).expect("tls.crt");
        if now != last {
            renewals += 1;
            last = now;
        }
    }
    // The watch opened before the renewals still delivers; a write through member 2
    // (forwarded to the leader over Raft's TLS) and new connections work.
    crate::harness::create_pod(&a2, "after-rotation")
        .await
        .expect("write through member 2");
    let ev = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("an event within 10 s")
        .expect("stream alive")
        .expect("an event");
    assert!(
        ev.object_json.contains("after-rotation"),
        "{}",
        ev.object_json
    );
    let info = shoal_pki::CertInfo::from_pem(&last).expect("cert");
    assert!(
        info.not_after > std::time::SystemTime::now(),
        "the current certificate is valid"
    );
}

/// A `tcpdump -i lo` of the given TCP ports into a file, stopped (SIGINT, by PID) on drop.
struct Capture {
    child: Option<std::process::Child>,
    file: std::path::PathBuf,
}

impl Capture {
    fn start(ports: &[u16], file: std::path::PathBuf) -> Capture {
        let filter = ports
            .iter()
            .map(|p| format!("tcp port {p}"))
            .collect::<Vec<_>>()
            .join(" or ");
        let child = std::process::Command::new("tcpdump")
            .args(["--immediate-mode", "-U", "-i", "lo", "-n", "-s", "0", "-w"])
            .arg(&file)
            .arg(&filter)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("tcpdump (scripts/setup.sh test installs it)");
        let cap = Capture {
            child: Some(child),
            file,
        };
        // tcpdump writes the file header once the capture is active.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(&cap.file).map(|m| m.len()).unwrap_or(0) < 24 {
            assert!(
                std::time::Instant::now() < deadline,
                "tcpdump did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        cap
    }

    /// Stops the capture and returns the file's bytes (pcap: headers plus raw packets).
    fn bytes(mut self) -> Vec<u8> {
        self.stop();
        std::fs::read(&self.file).expect("read the capture")
    }

    fn stop(&mut self) {
        if let Some(mut ch) = self.child.take() {
            // SAFETY: signalling the child we started, by its PID.
            unsafe { libc::kill(ch.id() as i32, libc::SIGINT) };
            let _ = ch.wait();
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop();
    }
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

#[tokio::test]
#[ignore = "requires root: captures packets on lo with tcpdump"]
async fn a_capture_of_client_and_raft_traffic_shows_no_plaintext() {
    let c = tokio::task::spawn_blocking(|| TestCluster::start(3))
        .await
        .expect("start");
    let ports: Vec<u16> = (1..=3)
        .map(|i| c.addr(i).rsplit_once(':').unwrap().1.parse().unwrap())
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let cap = Capture::start(&ports, dir.path().join("wire.pcap"));
    // Writes through a follower (forwarded to the leader over Raft, then replicated to
    // every member) and reads back: the marker crosses every kind of connection.
    let marker = format!("wire-marker-{}", std::process::id());
    for i in 0..5 {
        crate::harness::create_pod(&c.addr(2 + (i % 2)), &format!("{marker}-{i}"))
            .await
            .expect("create");
    }
    let listed = client(&c.addr(1))
        .await
        .expect("admin")
        .list(ListRequest {
            kind: "Pod".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .items_json;
    assert!(listed.iter().any(|j| j.contains(&marker)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let wire = cap.bytes();
    // The capture saw the traffic: TLS 1.3 application-data records (type 23, legacy
    // version 3.3) in quantity...
    let records = count(&wire, &[0x17, 0x03, 0x03]);
    assert!(records >= 20, "only {records} TLS records in the capture");
    // ...and none of it in the clear: no object, no HTTP/2 preface, no gRPC header or path.
    for plain in [
        marker.as_bytes(),
        b"PRI * HTTP/2.0",
        b"application/grpc",
        b"/shoal.v1.",
    ] {
        assert_eq!(
            count(&wire, plain),
            0,
            "{:?} appears in the clear on the wire",
            String::from_utf8_lossy(plain)
        );
    }
}

/// CreateMany: each object parsed, authorized, admitted and created on its own, with its
/// own result; the refused ones leave nothing behind.
#[tokio::test]
async fn create_many_gives_each_object_its_own_result() {
    use shoal_proto::CreateManyRequest;
    let c = tokio::task::spawn_blocking(|| TestCluster::start(1))
        .await
        .expect("start");
    let addr = c.addr(1);
    let conf = c.admin_conf();
    let ca_pem = ca_of(&conf);
    let mut admin = client(&addr).await.expect("admin");
    let pod_in = |ns: &str, name: &str| {
        let mut v: serde_json::Value = serde_json::from_str(&pod_json(name)).expect("json");
        v["metadata"]["namespace"] = ns.into();
        v
    };
    let ns = |name: &str| serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    admin
        .create(ObjectRequest {
            object_json: ns("team").to_string(),
        })
        .await
        .expect("namespace team");

    // As alice (edit in team): ok, invalid, forbidden by role, forbidden by admission,
    // not JSON, ok.
    let team = user(&conf, &addr, "alice", "edit", "team").await;
    let mut t = ClusterClient::new(as_who(&ca_pem, Some(&team), &addr).await.expect("edit"));
    let mut host = pod_in("team", "host");
    host["spec"]["volumes"] = serde_json::json!([{"name": "h", "hostPath": {"path": "/"}}]);
    let mut invalid = pod_in("team", "bad");
    invalid["spec"]["containers"] = serde_json::json!([]);
    let docs = vec![
        pod_in("team", "one").to_string(),
        invalid.to_string(),
        pod_in("default", "elsewhere").to_string(),
        host.to_string(),
        "{not json".to_string(),
        pod_in("team", "two").to_string(),
    ];
    let r = t
        .create_many(CreateManyRequest { objects_json: docs })
        .await
        .expect("create many")
        .into_inner()
        .results;
    let summary: Vec<(u32, &str, &str, i32)> = r
        .iter()
        .map(|x| (x.index, x.namespace.as_str(), x.name.as_str(), x.code))
        .collect();
    assert_eq!(
        summary,
        vec![
            (0, "team", "one", Code::Ok as i32),
            (1, "team", "bad", Code::InvalidArgument as i32),
            (2, "default", "elsewhere", Code::PermissionDenied as i32),
            (3, "team", "host", Code::PermissionDenied as i32),
            (4, "", "", Code::InvalidArgument as i32),
            (5, "team", "two", Code::Ok as i32),
        ],
        "{r:#?}"
    );
    assert!(r[1].error.contains("object 2"), "{:?}", r[1].error);
    assert!(r[2].error.contains("namespace default"), "{:?}", r[2].error);
    assert!(r[3].error.contains("hostPath"), "{:?}", r[3].error);
    for ok in [&r[0], &r[5]] {
        assert!(ok.error.is_empty());
        let v: serde_json::Value = serde_json::from_str(&ok.object_json).expect("object");
        assert!(v["metadata"]["resourceVersion"].is_string(), "{v}");
        assert!(v["metadata"]["uid"].is_string(), "{v}");
    }
    assert!(r[1].object_json.is_empty() && r[3].object_json.is_empty());

    // As the admin: a namespace and a pod in it (namespaces go first), a pod in a missing
    // namespace, a pod that exists.
    let r = admin
        .create_many(CreateManyRequest {
            objects_json: vec![
                pod_in("fresh", "early").to_string(),
                ns("fresh").to_string(),
                pod_in("nowhere", "lost").to_string(),
                pod_in("team", "one").to_string(),
            ],
        })
        .await
        .expect("create many")
        .into_inner()
        .results;
    let codes: Vec<i32> = r.iter().map(|x| x.code).collect();
    assert_eq!(
        codes,
        vec![
            Code::Ok as i32,
            Code::Ok as i32,
            Code::NotFound as i32,
            Code::AlreadyExists as i32
        ],
        "{r:#?}"
    );
    assert!(
        r[2].error.contains("namespace \"nowhere\" not found"),
        "{:?}",
        r[2].error
    );

    // Exactly the accepted pods exist, and the existing one is unchanged.
    let names = |items: Vec<String>| -> std::collections::BTreeSet<String> {
        items
            .iter()
            .map(|j| {
                let v: serde_json::Value = serde_json::from_str(j).expect("json");
                format!(
                    "{}/{}",
                    v["metadata"]["namespace"].as_str().unwrap_or(""),
                    v["metadata"]["name"].as_str().unwrap_or("")
                )
            })
            .collect()
    };
    let all = admin
        .list(ListRequest {
            kind: "Pod".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .items_json;
    assert_eq!(
        names(all),
        ["fresh/early", "team/one", "team/two"]
            .into_iter()
            .map(String::from)
            .collect()
    );
}
