//! End-to-end tests of the agent: a real one-member `shoal-controller` and a
//! real `shoal-agent` on loopback, a real busybox image imported into the
//! controller and pulled by the agent, real containers.
//!
//! The controller binary is taken from the same target directory as this
//! test (`cargo build -p shoal-controller` first).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use shoal_api::{ContainerStatus, Node, Object, Pod, PodPhase};
use shoal_proto::agent_client::AgentClient;
use shoal_proto::cluster_client::ClusterClient;
use shoal_proto::images_client::ImagesClient;
use shoal_proto::{
    DeleteRequest, GetRequest, ImportChunk, ListRequest, LogsRequest, ObjectRequest,
};
use shoal_testkit::eventually_async as eventually;
use shoal_testkit::{ControllerCluster, Proc, free_port};
use tonic::transport::Channel;

mod batch;
mod metrics;
mod registry;

const AGENT: &str = env!("CARGO_BIN_EXE_shoal-agent");

/// Controllers (the test kit's cluster: member 1 forms it, the others `--join` and are
/// added with `AddMember`) and an agent; every process is owned from its spawn and killed
/// on drop, after which `--cleanup` removes everything the agent made.
struct Cluster {
    dir: tempfile::TempDir,
    node: String,
    /// The controller the test talks to.
    ctl_addr: String,
    ctl_addrs: Vec<String>,
    agent_addr: String,
    /// The agent's `--metrics-listen`.
    metrics_addr: String,
    agent: Option<Proc>,
    /// A node join token (unlimited uses) and the CA hash.
    join: (String, String),
    /// Extra agent flags.
    agent_args: Vec<String>,
    controllers: ControllerCluster,
}

impl Cluster {
    async fn start(node: &str) -> Cluster {
        Self::start_n(node, 1).await
    }

    /// `n` controllers (one Raft cluster) and an agent given all their addresses.
    async fn start_n(node: &str, n: u64) -> Cluster {
        Self::start_with(node, n, &[]).await
    }

    /// [`Cluster::start_n`] with extra controller flags.
    async fn start_with(node: &str, n: u64, args: &'static [&'static str]) -> Cluster {
        Self::start_full(node, n, args, Vec::new()).await
    }

    /// [`Cluster::start_with`] with extra agent flags.
    async fn start_full(
        node: &str,
        n: u64,
        args: &'static [&'static str],
        agent_args: Vec<String>,
    ) -> Cluster {
        // ControllerCluster blocks while it forms the cluster: keep it off the runtime.
        let controllers =
            tokio::task::spawn_blocking(move || ControllerCluster::start_args(n, args))
                .await
                .unwrap();
        let mut c = Cluster {
            dir: tempfile::tempdir().unwrap(),
            node: node.to_string(),
            agent_addr: format!("127.0.0.1:{}", free_port()),
            metrics_addr: format!("127.0.0.1:{}", free_port()),
            ctl_addr: controllers.addr(1),
            ctl_addrs: controllers.addrs(),
            agent: None,
            join: Default::default(),
            agent_args,
            controllers,
        };
        c.import_busybox().await;
        let conf = c.controllers.admin_conf();
        c.join = shoal_testkit::create_token(&conf, &c.ctl_addr, "node", 0).await;
        c.start_agent();
        c
    }

    /// A channel to the agent with controller 1's identity (agents accept only controllers).
    async fn agent_channel(&self) -> Result<Channel, String> {
        let dir = self.controllers.members[0].data_dir.clone();
        shoal_testkit::agent_channel(&dir, &self.node, &self.agent_addr, Duration::from_secs(60))
            .await
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("agent")
    }

    fn start_agent(&mut self) {
        let mut cmd = Command::new(AGENT);
        cmd.args([
            "--name",
            &self.node,
            "--controller",
            &self.ctl_addrs.join(","),
            "--listen",
            &self.agent_addr,
            "--metrics-listen",
            &self.metrics_addr,
        ])
        .args([
            "--labels",
            "zone=test",
            "--heartbeat-interval",
            "0.5",
            "--restart-backoff-ms",
            "500",
            // These agents share the host's network namespace: no pod network.
            "--network",
            "none",
            // Tests reach registries on loopback only (through --registries mirrors).
            "--disable-default-registry-endpoint",
        ])
        .args(["--join-token", &self.join.0, "--ca-hash", &self.join.1])
        .args(&self.agent_args)
        .args(["--log", "info,shoal_agent=debug", "--data-dir"])
        .arg(self.data_dir());
        self.agent = Some(Proc::spawn(
            "shoal-agent",
            &mut cmd,
            &self.dir.path().join("agent.log"),
        ));
    }

    fn kill_agent(&mut self) {
        if let Some(mut a) = self.agent.take() {
            a.kill();
        }
    }

    async fn import_busybox(&self) {
        let tar = shoal_testkit::image::busybox(self.dir.path(), "busybox:latest");
        let data = std::fs::read(&tar).unwrap();
        let chunks: Vec<ImportChunk> = data
            .chunks(256 * 1024)
            .map(|c| ImportChunk {
                data: c.to_vec(),
                tag: String::new(),
            })
            .collect();
        // Import through the leader (a follower forwards large writes, which may time
        // out while a fresh cluster still settles); retried, as import is idempotent.
        let cl = cluster(&self.ctl_addr).await.unwrap();
        eventually("busybox imported", Duration::from_secs(60), || {
            let (mut cl, chunks) = (cl.clone(), chunks.clone());
            async move {
                let st = cl
                    .status(shoal_proto::ClusterStatusRequest {})
                    .await
                    .map_err(|e| e.to_string())?
                    .into_inner();
                if st.leader_id == 0 {
                    return Err("no leader yet".to_string());
                }
                let ch = channel(&self.ctl_addrs[st.leader_id as usize - 1]).await?;
                ImagesClient::new(ch)
                    .import(tokio_stream::iter(chunks))
                    .await
                    .map_err(|e| e.to_string())
            }
        })
        .await;
    }

    /// The agent's state (running or exit status) and its whole log.
    fn logs(&self) -> String {
        let state = match &self.agent {
            Some(p) => format!("agent pid {:?}", p.pid()),
            None => "agent not running".to_string(),
        };
        let log = std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default();
        format!("{state}\n{log}")
    }

    async fn create_pod(&self, yaml_json: serde_json::Value) -> Pod {
        let mut cl = cluster(&self.ctl_addr).await.unwrap();
        let r = cl
            .create(ObjectRequest {
                object_json: yaml_json.to_string(),
            })
            .await
            .expect("create pod")
            .into_inner();
        match Object::from_json_str(&r.object_json).unwrap() {
            Object::Pod(p) => p,
            o => panic!("expected a pod, got {o:?}"),
        }
    }

    async fn pod(&self, name: &str) -> Result<Pod, String> {
        get_obj(&self.ctl_addr, "default", name).await
    }

    /// Waits until `check` accepts the pod's first container status.
    async fn wait_pod<F>(&self, name: &str, what: &str, timeout: Duration, check: F) -> Pod
    where
        F: Fn(&Pod, &ContainerStatus) -> bool,
    {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Ok(p) = self.pod(name).await {
                if let Some(cs) = p.status.as_ref().and_then(|s| s.container_statuses.first())
                    && check(&p, cs)
                {
                    return p;
                }
                last = serde_json::to_string(&p.status).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "pod {name}: {what} not reached in {timeout:?}; last status: {last}\nagent log:\n{}",
            self.logs()
        );
    }

    /// Waits until the pod's first container is waiting with `reason`; returns that state.
    async fn wait_waiting(
        &self,
        name: &str,
        reason: &str,
        timeout: Duration,
    ) -> shoal_api::ContainerStateWaiting {
        let p = self
            .wait_pod(name, reason, timeout, |_, cs| {
                cs.state
                    .waiting
                    .as_ref()
                    .is_some_and(|w| w.reason == reason)
            })
            .await;
        p.status.unwrap().container_statuses[0]
            .state
            .waiting
            .clone()
            .unwrap()
    }

    async fn delete_pod(&self, name: &str) {
        let mut cl = cluster(&self.ctl_addr).await.unwrap();
        cl.delete(DeleteRequest {
            kind: "Pod".into(),
            namespace: "default".into(),
            name: name.into(),
            resource_version: 0,
        })
        .await
        .unwrap();
    }

    async fn event_reasons(&self, pod: &str) -> Vec<String> {
        self.events(pod).await.into_iter().map(|(r, _)| r).collect()
    }

    /// (reason, message) of the pod's Events.
    async fn events(&self, pod: &str) -> Vec<(String, String)> {
        let mut cl = cluster(&self.ctl_addr).await.unwrap();
        let r = cl
            .list(ListRequest {
                kind: "Event".into(),
                namespace: "default".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        r.items_json
            .iter()
            .filter_map(|j| match Object::from_json_str(j) {
                Ok(Object::Event(e)) if e.involved_object.name == pod => {
                    Some((e.reason, e.message))
                }
                _ => None,
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_agent();
        let out = Command::new(AGENT)
            .args(["--cleanup", "--network", "none"])
            .arg("--data-dir")
            .arg(self.data_dir())
            .output();
        if let Ok(o) = &out
            && !o.status.success()
        {
            eprintln!("cleanup failed: {}", String::from_utf8_lossy(&o.stderr));
        }
        // The controllers are killed when `self.controllers` drops.
    }
}

/// A channel to a controller (its cluster's admin credentials).
async fn channel(addr: &str) -> Result<Channel, String> {
    let conf = shoal_testkit::conf_for(addr)?;
    shoal_testkit::channel_timeout(&conf, addr, Duration::from_secs(60)).await
}

async fn cluster(addr: &str) -> Result<ClusterClient<Channel>, String> {
    Ok(ClusterClient::new(channel(addr).await?))
}

fn pod_json(name: &str, node: &str, policy: &str, image: &str, script: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "shoal/v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": node,
            "restartPolicy": policy,
            "terminationGracePeriodSeconds": 2,
            "containers": [{"name": "main", "image": image, "command": ["sh", "-c", script]}]
        }
    })
}

fn pid_of(cs: &ContainerStatus, c: &Cluster) -> i32 {
    let id = cs
        .container_id
        .as_deref()
        .unwrap()
        .trim_start_matches("shoal://");
    let state =
        std::fs::read_to_string(c.data_dir().join("containers").join(id).join("state.json"))
            .unwrap();
    let v: serde_json::Value = serde_json::from_str(&state).unwrap();
    v.pointer("/state/Running/pid")
        .and_then(|p| p.as_i64())
        .expect("running pid") as i32
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "requires root: real containers, cgroups and namespaces"]
async fn node_registers_heartbeats_runs_a_pod_and_removes_it() {
    let c = Cluster::start("agent-it-run").await;
    // The Node is Ready and its heartbeat advances.
    let first = eventually("node registered", Duration::from_secs(20), || async {
        let n: Node = get_obj(&c.ctl_addr, "", &c.node).await?;
        if n.is_ready() {
            Ok(n)
        } else {
            Err(format!("{:?}", n.status))
        }
    })
    .await;
    let s = first.status.clone().unwrap();
    assert_eq!(first.metadata.labels["zone"], "test");
    assert_eq!(first.metadata.labels["shoal.io/hostname"], c.node);
    assert_eq!(s.agent_endpoint.as_deref(), Some(c.agent_addr.as_str()));
    assert_eq!(first.internal_ip(), Some("127.0.0.1"));
    assert!(s.capacity["cpu"].as_millis() >= 1000 && s.capacity["memory"].as_bytes() > 0);
    let t0 = s.heartbeat_time.unwrap();
    let advanced = |after: chrono::DateTime<chrono::Utc>| {
        let addr = c.ctl_addr.clone();
        let node = c.node.clone();
        async move {
            let n: Node = get_obj(&addr, "", &node).await?;
            let t = n.status.as_ref().and_then(|s| s.heartbeat_time).unwrap();
            if t > after {
                Ok((n, t))
            } else {
                Err(format!("heartbeat still {t}"))
            }
        }
    };
    let (n1, t1) = eventually("heartbeat advances", Duration::from_secs(10), || {
        advanced(t0)
    })
    .await;
    // Heartbeats are kept in the controllers' memory, not written: over six more
    // heartbeats (as the API shows them) the Node's revision moves at most by the
    // controllers' own writes (its pod CIDR, once), where a write per heartbeat would
    // move it six times.
    let mut t = t1;
    let mut revisions = std::collections::BTreeSet::new();
    revisions.insert(n1.metadata.resource_version.clone());
    for i in 0..6 {
        let (n, ti) = eventually(
            &format!("heartbeat {i} after"),
            Duration::from_secs(10),
            || advanced(t),
        )
        .await;
        t = ti;
        revisions.insert(n.metadata.resource_version.clone());
    }
    assert!(
        revisions.len() <= 2,
        "heartbeats must not write the Node: revisions {revisions:?} over seven heartbeats"
    );

    // A pod runs (image pulled from the controller) and reports Running.
    let t = Instant::now();
    c.create_pod(pod_json(
        "web",
        &c.node,
        "Always",
        "busybox",
        "echo hello; exec sleep 1000",
    ))
    .await;
    let p = c
        .wait_pod(
            "web",
            "Running and Ready",
            Duration::from_secs(60),
            |p, cs| p.status.as_ref().unwrap().phase == PodPhase::Running && cs.ready,
        )
        .await;
    eprintln!(
        "measured: pod create -> Running/Ready with image pull: {:?}",
        t.elapsed()
    );
    if std::env::var_os("SHOAL_IT_AGENT_LOG").is_some() {
        eprintln!("{}", c.logs());
    }
    let cs = &p.status.as_ref().unwrap().container_statuses[0];
    assert_eq!(cs.restart_count, 0);
    assert!(cs.state.running.as_ref().unwrap().started_at.is_some());
    assert!(
        shoal_api::find_condition(&p.status.as_ref().unwrap().conditions, "Ready")
            .is_some_and(|c| c.status == shoal_api::ConditionStatus::True)
    );
    let pid = pid_of(cs, &c);
    assert!(alive(pid));
    let id = cs
        .container_id
        .clone()
        .unwrap()
        .trim_start_matches("shoal://")
        .to_string();

    // Logs through the Agent API.
    let mut ag = AgentClient::new(c.agent_channel().await.unwrap());
    let mut s = ag
        .logs(LogsRequest {
            namespace: "default".into(),
            pod: "web".into(),
            tail_lines: -1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut text = Vec::new();
    while let Some(chunk) = s.message().await.unwrap() {
        text.extend(chunk.data);
    }
    assert_eq!(String::from_utf8_lossy(&text), "hello\n");
    // Follow with timestamps: the first line arrives, the stream stays open.
    let mut s = ag
        .logs(LogsRequest {
            namespace: "default".into(),
            pod: "web".into(),
            container: "main".into(),
            tail_lines: -1,
            follow: true,
            timestamps: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = s.message().await.unwrap().unwrap();
    let line = String::from_utf8_lossy(&first.data).into_owned();
    assert!(line.ends_with("Z hello\n"), "{line:?}");
    assert!(
        chrono::DateTime::parse_from_rfc3339(line.split(' ').next().unwrap()).is_ok(),
        "{line:?}"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), s.message())
            .await
            .is_err(),
        "a followed log stays open while the container runs"
    );
    drop(s);

    let reasons = c.event_reasons("web").await;
    for r in ["Pulled", "Created", "Started"] {
        assert!(
            reasons.iter().any(|x| x == r),
            "event {r} missing from {reasons:?}"
        );
    }

    // A second pod of the same image starts without a pull.
    let t = Instant::now();
    c.create_pod(pod_json(
        "web2",
        &c.node,
        "Always",
        "busybox",
        "exec sleep 1000",
    ))
    .await;
    c.wait_pod("web2", "Running", Duration::from_secs(30), |p, cs| {
        p.status.as_ref().unwrap().phase == PodPhase::Running && cs.ready
    })
    .await;
    eprintln!(
        "measured: pod create -> Running/Ready, image present: {:?}",
        t.elapsed()
    );
    c.delete_pod("web2").await;

    // Deleting the pod stops and removes everything.
    let t = Instant::now();
    c.delete_pod("web").await;
    let data = c.data_dir();
    eventually("pod removed", Duration::from_secs(30), || async {
        let left: Vec<_> = std::fs::read_dir(data.join("pods"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        let cont = data.join("containers").join(&id);
        if !left.is_empty() || cont.exists() || alive(pid) {
            return Err(format!(
                "pods {left:?}, container dir {}, pid {pid} alive {}",
                cont.exists(),
                alive(pid)
            ));
        }
        let cg = Path::new("/sys/fs/cgroup/memory/shoal").join(&id);
        let cg2 = Path::new("/sys/fs/cgroup/shoal").join(&id);
        if cg.exists() || cg2.exists() {
            return Err(format!("cgroup of {id} left"));
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        if mounts.contains(data.to_str().unwrap()) {
            return Err("a mount below the data dir is left".into());
        }
        Ok(())
    })
    .await;
    eprintln!(
        "measured: pod delete -> all removed (grace 2 s; sleep as PID 1 ignores SIGTERM): {:?}",
        t.elapsed()
    );
    let reasons = c.event_reasons("web").await;
    assert!(reasons.iter().any(|x| x == "Killing"), "{reasons:?}");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "requires root: real containers, cgroups and namespaces"]
async fn failing_containers_back_off_and_restart_never_fails_the_pod() {
    let c = Cluster::start("agent-it-crash").await;
    c.create_pod(pod_json(
        "crash",
        &c.node,
        "Always",
        "busybox",
        "echo boom; exit 1",
    ))
    .await;
    c.create_pod(pod_json("once", &c.node, "Never", "busybox", "exit 3"))
        .await;
    c.wait_pod(
        "crash",
        "CrashLoopBackOff",
        Duration::from_secs(60),
        |_, cs| {
            cs.state
                .waiting
                .as_ref()
                .is_some_and(|w| w.reason == "CrashLoopBackOff")
        },
    )
    .await;
    let p = c
        .wait_pod(
            "crash",
            "restartCount >= 2",
            Duration::from_secs(60),
            |_, cs| cs.restart_count >= 2,
        )
        .await;
    let cs = &p.status.as_ref().unwrap().container_statuses[0];
    assert_eq!(cs.last_state.terminated.as_ref().unwrap().exit_code, 1);
    assert_eq!(p.status.as_ref().unwrap().phase, PodPhase::Running);
    let p = c
        .wait_pod("once", "Failed", Duration::from_secs(60), |p, _| {
            p.status.as_ref().unwrap().phase == PodPhase::Failed
        })
        .await;
    let t = p.status.as_ref().unwrap().container_statuses[0]
        .state
        .terminated
        .clone()
        .unwrap();
    assert_eq!((t.exit_code, t.reason.as_str()), (3, "Error"));
    assert_eq!(
        p.status.as_ref().unwrap().container_statuses[0].restart_count,
        0
    );
    let reasons = c.event_reasons("crash").await;
    // Both pods pulled the image at the same time: neither pull failed.
    assert!(!reasons.iter().any(|x| x == "Failed"), "{reasons:?}");
    // Each entry into the crash loop reports BackOff, aggregated into one Event.
    assert_eq!(
        reasons.iter().filter(|x| *x == "BackOff").count(),
        1,
        "{reasons:?}"
    );
    // Back-offs of 2 s and 4 s (restarts 3 and 4) are seen by the 1 s resync for
    // sure: the one BackOff Event counts them.
    c.wait_pod(
        "crash",
        "restartCount >= 4",
        Duration::from_secs(60),
        |_, cs| cs.restart_count >= 4,
    )
    .await;
    let ctl_addr = c.ctl_addr.clone();
    eventually("BackOff aggregated", Duration::from_secs(10), || {
        let addr = ctl_addr.clone();
        async move {
            let mut cl = cluster(&addr).await?;
            let evs = cl
                .list(ListRequest {
                    kind: "Event".into(),
                    namespace: "default".into(),
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            let counts: Vec<i32> = evs
                .items_json
                .iter()
                .filter_map(|j| match Object::from_json_str(j) {
                    Ok(Object::Event(e))
                        if e.involved_object.name == "crash" && e.reason == "BackOff" =>
                    {
                        Some(e.count)
                    }
                    _ => None,
                })
                .collect();
            if counts.len() == 1 && counts[0] >= 2 {
                Ok(())
            } else {
                Err(format!("BackOff counts {counts:?}"))
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "requires root: real containers, cgroups and namespaces"]
async fn unknown_image_is_image_pull_back_off() {
    let c = Cluster::start("agent-it-pull").await;
    c.create_pod(pod_json(
        "ghost",
        &c.node,
        "Always",
        "nosuch/image:1",
        "true",
    ))
    .await;
    let w = c
        .wait_waiting("ghost", "ImagePullBackOff", Duration::from_secs(30))
        .await;
    assert!(w.message.contains("nosuch/image:1"), "{}", w.message);
    assert!(w.message.contains("not found"), "{}", w.message);
    // A Docker Hub name and no way to Docker Hub: the hint.
    assert!(
        w.message
            .contains("docker.io is not reachable from this node; import the image"),
        "{}",
        w.message
    );
    let reasons = c.event_reasons("ghost").await;
    assert!(reasons.iter().any(|x| x == "Failed"), "{reasons:?}");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "requires root: real containers, cgroups and namespaces"]
async fn a_killed_agent_readopts_its_running_containers() {
    let mut c = Cluster::start("agent-it-adopt").await;
    c.create_pod(pod_json(
        "keep",
        &c.node,
        "Always",
        "busybox",
        "exec sleep 1000",
    ))
    .await;
    let p = c
        .wait_pod("keep", "Running", Duration::from_secs(60), |p, _| {
            p.status.as_ref().unwrap().phase == PodPhase::Running
        })
        .await;
    let cs = p.status.as_ref().unwrap().container_statuses[0].clone();
    let pid = pid_of(&cs, &c);
    c.kill_agent();
    assert!(alive(pid), "the container died with the agent");
    c.start_agent();
    // The new agent serves again and keeps the same container.
    eventually("new agent answers", Duration::from_secs(20), || async {
        let mut ag = AgentClient::new(c.agent_channel().await?);
        ag.ping(shoal_proto::PingRequest {})
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    // The new agent has heartbeated twice (so it has listed and synced its pods) before
    // the pod is read: the status must be the new agent's, not the old one's.
    let (addr, node) = (c.ctl_addr.clone(), c.node.clone());
    let restarted = chrono::Utc::now();
    eventually(
        "two heartbeats from the new agent",
        Duration::from_secs(30),
        || {
            let (addr, node) = (addr.clone(), node.clone());
            async move {
                let t = heartbeat_of(&addr, &node).await?;
                if t > restarted + chrono::Duration::milliseconds(500) {
                    Ok(())
                } else {
                    Err(format!(
                        "last heartbeat {t}, agent restarted at {restarted}"
                    ))
                }
            }
        },
    )
    .await;
    let p = c.pod("keep").await.unwrap();
    let cs2 = &p.status.as_ref().unwrap().container_statuses[0];
    assert_eq!(cs2.restart_count, 0);
    assert_eq!(cs2.container_id, cs.container_id);
    let id = cs
        .container_id
        .as_deref()
        .unwrap()
        .trim_start_matches("shoal://")
        .to_string();
    let dir = c.data_dir().join("containers").join(&id);
    let state = std::fs::read_to_string(dir.join("state.json")).unwrap_or_default();
    let sup = std::fs::read_to_string(dir.join("supervisor.log")).unwrap_or_default();
    assert_eq!(
        pid_of(cs2, &c),
        pid,
        "state: {state}\nsupervisor log: {sup}\nagent log: {}",
        c.logs()
    );
    assert!(alive(pid));
    assert_eq!(p.status.as_ref().unwrap().phase, PodPhase::Running);
}

async fn exec(c: &Cluster, pod: &str, cmd: &[&str], stdin: Option<&[u8]>) -> (String, String, i32) {
    exec_tty(c, pod, cmd, stdin, false).await
}

async fn exec_tty(
    c: &Cluster,
    pod: &str,
    cmd: &[&str],
    stdin: Option<&[u8]>,
    tty: bool,
) -> (String, String, i32) {
    use shoal_proto::exec_input::Input;
    use shoal_proto::exec_output::Output;
    use shoal_proto::{ExecInput, ExecStart};
    let mut msgs = vec![ExecInput {
        input: Some(Input::Start(ExecStart {
            namespace: "default".into(),
            pod: pod.into(),
            command: cmd.iter().map(|s| s.to_string()).collect(),
            stdin: stdin.is_some(),
            tty,
            rows: 24,
            cols: 80,
            ..Default::default()
        })),
    }];
    if let Some(data) = stdin {
        msgs.push(ExecInput {
            input: Some(Input::Stdin(data.to_vec())),
        });
        msgs.push(ExecInput {
            input: Some(Input::StdinEof(true)),
        });
    }
    let mut ag = AgentClient::new(c.agent_channel().await.unwrap());
    let mut s = ag
        .exec(tokio_stream::iter(msgs))
        .await
        .unwrap()
        .into_inner();
    let (mut out, mut err, mut code) = (Vec::new(), Vec::new(), None);
    while let Some(m) = s.message().await.unwrap() {
        match m.output {
            Some(Output::Stdout(d)) => out.extend(d),
            Some(Output::Stderr(d)) => err.extend(d),
            Some(Output::ExitCode(x)) => code = Some(x),
            None => {}
        }
    }
    (
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
        code.expect("exit code last"),
    )
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "requires root: real containers, cgroups and namespaces"]
async fn probes_exec_and_stats() {
    let c = Cluster::start("agent-it-probe").await;
    c.create_pod(serde_json::json!({
        "apiVersion": "shoal/v1", "kind": "Pod",
        "metadata": {"name": "probed", "namespace": "default"},
        "spec": {
            "nodeName": c.node,
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "web", "image": "busybox",
                "command": ["httpd", "-f", "-p", "8080", "-h", "/etc"],
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/hostname", "port": "http"}, "periodSeconds": 1},
                "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}
            }]
        }
    }))
    .await;
    c.create_pod(serde_json::json!({
        "apiVersion": "shoal/v1", "kind": "Pod",
        "metadata": {"name": "flaky", "namespace": "default"},
        "spec": {
            "nodeName": c.node,
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "main", "image": "busybox",
                "command": ["sh", "-c", "touch /tmp/alive; sleep 2; rm /tmp/alive; exec sleep 1000"],
                "livenessProbe": {"exec": {"command": ["test", "-f", "/tmp/alive"]},
                                  "periodSeconds": 1, "failureThreshold": 2}
            }]
        }
    }))
    .await;
    c.wait_pod(
        "probed",
        "Ready by its readiness probe",
        Duration::from_secs(60),
        |p, cs| {
            cs.ready
                && shoal_api::find_condition(&p.status.as_ref().unwrap().conditions, "Ready")
                    .is_some_and(|c| c.status == shoal_api::ConditionStatus::True)
        },
    )
    .await;
    let p = c
        .wait_pod(
            "flaky",
            "restarted by its liveness probe",
            Duration::from_secs(60),
            |_, cs| cs.restart_count >= 1 && cs.state.running.is_some(),
        )
        .await;
    assert!(
        p.status.unwrap().container_statuses[0]
            .container_id
            .as_deref()
            .unwrap()
            .ends_with("-main-r1")
    );
    let reasons = c.event_reasons("flaky").await;
    assert!(reasons.iter().any(|x| x == "Unhealthy"), "{reasons:?}");
    assert!(reasons.iter().any(|x| x == "Killing"), "{reasons:?}");
    // The healthy pod was never restarted.
    let p = c.pod("probed").await.unwrap();
    assert_eq!(p.status.unwrap().container_statuses[0].restart_count, 0);

    // Exec through the Agent API: streams, exit code, stdin.
    let (out, err, code) = exec(
        &c,
        "probed",
        &["sh", "-c", "echo out; echo err >&2; exit 7"],
        None,
    )
    .await;
    assert_eq!((out.as_str(), err.as_str(), code), ("out\n", "err\n", 7));
    let (out, _, code) = exec(&c, "probed", &["cat"], Some(b"abc")).await;
    assert_eq!((out.as_str(), code), ("abc", 0));
    let (out, _, _) = exec(&c, "probed", &["hostname"], None).await;
    assert_eq!(out, "probed\n");
    let (out, err, code) = exec_tty(
        &c,
        "probed",
        &["sh", "-c", "test -t 0 && stty size && echo err >&2"],
        None,
        true,
    )
    .await;
    assert_eq!(code, 0, "{out:?}");
    assert!(err.is_empty(), "a TTY has one stream");
    assert!(out.contains("24 80") && out.contains("err"), "{out:?}");

    // Stats of the node and its containers.
    let mut ag = AgentClient::new(c.agent_channel().await.unwrap());
    let st = ag
        .stats(shoal_proto::StatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let n = &st.nodes[0];
    assert_eq!(n.node, c.node);
    assert!(n.memory_bytes > 0 && n.memory_capacity_bytes >= n.memory_bytes);
    assert!(n.cpu_capacity_millis >= 1000);
    let web = n
        .containers
        .iter()
        .find(|x| x.pod == "probed")
        .expect("stats of pod probed");
    assert_eq!(
        (web.namespace.as_str(), web.container.as_str()),
        ("default", "web")
    );
    assert!(web.memory_bytes > 0 && web.cpu_usage_nanos > 0, "{web:?}");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "requires root: real containers, cgroups and namespaces"]
async fn an_interrupted_layer_download_resumes_from_the_partial_file() {
    let mut c = Cluster::start("agent-it-resume").await;
    // The agent started with an empty store; stop it and leave the first half of
    // the layer blob where an interrupted pull would have left it.
    c.kill_agent();
    let store_dir = c.dir.path().join("ref-store");
    let store = shoal_runtime::ImageStore::open(&store_dir).unwrap();
    store
        .import(&c.dir.path().join("busybox.tar"), None)
        .unwrap();
    let layer = store.resolve("busybox").unwrap().layers[0].clone();
    let bytes = std::fs::read(store.blob_path(&layer)).unwrap();
    let partial_dir = c.data_dir().join("agent/partial");
    std::fs::create_dir_all(&partial_dir).unwrap();
    let partial = partial_dir.join(format!("{}.partial", layer.hex()));
    std::fs::write(&partial, &bytes[..bytes.len() / 2]).unwrap();
    c.start_agent();
    c.create_pod(pod_json(
        "resumed",
        &c.node,
        "Always",
        "busybox",
        "exec sleep 1000",
    ))
    .await;
    c.wait_pod("resumed", "Running", Duration::from_secs(60), |p, _| {
        p.status.as_ref().unwrap().phase == PodPhase::Running
    })
    .await;
    assert!(
        !partial.exists(),
        "the partial file is removed once imported"
    );
    // Had the agent not resumed at the right offset, the digest check would have
    // failed the first pull (a Failed event and ImagePullBackOff).
    let reasons = c.event_reasons("resumed").await;
    assert!(!reasons.iter().any(|x| x == "Failed"), "{reasons:?}");
    assert!(reasons.iter().any(|x| x == "Pulled"), "{reasons:?}");
    let pulled = std::fs::read(c.data_dir().join("images/blobs/sha256").join(layer.hex())).unwrap();
    assert_eq!(pulled, bytes);
}

async fn heartbeat_of(addr: &str, node: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    let n: Node = get_obj(addr, "", node).await?;
    n.status
        .and_then(|s| s.heartbeat_time)
        .ok_or_else(|| "no heartbeat".into())
}

/// Reads object `namespace/name` of kind `T` from the controller at `addr`.
async fn get_obj<T: shoal_api::Resource>(
    addr: &str,
    namespace: &str,
    name: &str,
) -> Result<T, String> {
    let mut cl = cluster(addr).await?;
    let r = cl
        .get(GetRequest {
            kind: T::KIND.to_string(),
            namespace: namespace.into(),
            name: name.into(),
            stale: false,
        })
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let o = Object::from_json_str(&r.object_json).map_err(|e| e.to_string())?;
    T::try_from(o).map_err(|o| format!("expected a {}, got {o:?}", T::KIND))
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "requires root: real containers, cgroups and namespaces"]
async fn the_agent_fails_over_when_its_controller_dies() {
    let mut c = Cluster::start_n("agent-it-ha", 3).await;
    c.create_pod(pod_json(
        "ha1",
        &c.node,
        "Always",
        "busybox",
        "exec sleep 1000",
    ))
    .await;
    let p = c
        .wait_pod("ha1", "Running", Duration::from_secs(60), |p, _| {
            p.status.as_ref().unwrap().phase == PodPhase::Running
        })
        .await;
    let id1 = p.status.unwrap().container_statuses[0].container_id.clone();
    // Kill the controller the agent talks to first; talk to another one from now on.
    c.controllers.kill(1);
    let killed_at = chrono::Utc::now();
    c.ctl_addr = c.ctl_addrs[1].clone();
    let addr = c.ctl_addr.clone();
    let node = c.node.clone();
    eventually(
        "heartbeats through another controller",
        Duration::from_secs(30),
        || {
            let (addr, node) = (addr.clone(), node.clone());
            async move {
                let t = heartbeat_of(&addr, &node).await?;
                if t > killed_at + chrono::TimeDelta::seconds(1) {
                    Ok(())
                } else {
                    Err(format!("heartbeat {t}"))
                }
            }
        },
    )
    .await;
    // The pod watch moved too: a new pod starts, the old one is untouched.
    c.create_pod(pod_json(
        "ha2",
        &c.node,
        "Always",
        "busybox",
        "exec sleep 1000",
    ))
    .await;
    c.wait_pod("ha2", "Running", Duration::from_secs(60), |p, _| {
        p.status.as_ref().unwrap().phase == PodPhase::Running
    })
    .await;
    let p = c.pod("ha1").await.unwrap();
    let cs = &p.status.unwrap().container_statuses[0];
    assert_eq!((cs.container_id.clone(), cs.restart_count), (id1, 0));
}

/// Every path under `root` (not following links) whose file name is `name`.
fn find_named(root: &Path, name: &str, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(root) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if p.file_name().is_some_and(|n| n == name) {
            out.push(p.clone());
        }
        if m.is_dir() {
            find_named(&p, name, out);
        }
    }
}

fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .mode()
        & 0o7777
}

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "requires root: real containers, cgroups and namespaces"]
async fn no_file_under_the_data_directories_is_readable_by_other_users() {
    let mut c = Cluster::start(&format!("agent-it-files-{}", std::process::id())).await;
    // A root container leaves a set-uid file in its upper directory and a world-readable
    // file in the emptyDir; a container of user 1000 must still read /etc/hosts,
    // /etc/resolv.conf and /, and write the emptyDir (the modes must not break containers).
    c.create_pod(serde_json::json!({
        "apiVersion": "shoal/v1", "kind": "Pod",
        "metadata": {"name": "files", "namespace": "default"},
        "spec": {
            "nodeName": c.node,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "volumes": [{"name": "data", "emptyDir": {}}],
            "containers": [
                {"name": "writer", "image": "busybox",
                 "command": ["sh", "-c", "touch /suid && chmod 4755 /suid && echo secret > /data/leak && chmod 644 /data/leak && exec sleep 1000"],
                 "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                {"name": "user", "image": "busybox",
                 "securityContext": {"runAsUser": 1000, "runAsGroup": 1000},
                 "command": ["sh", "-c", "cat /etc/hosts /etc/resolv.conf /etc/hostname > /dev/null && ls / > /dev/null && touch /data/user-ok && exec sleep 1000"],
                 "volumeMounts": [{"name": "data", "mountPath": "/data"}]}
            ]
        }
    }))
    .await;
    let data = c.data_dir();
    let (user_ok, suid) = eventually(
        "both containers did their part",
        Duration::from_secs(60),
        || async {
            let (mut ok, mut su) = (Vec::new(), Vec::new());
            find_named(&data.join("pods"), "user-ok", &mut ok);
            find_named(&data.join("containers"), "suid", &mut su);
            let p = c.pod("files").await?;
            let st = serde_json::to_string(&p.status).unwrap_or_default();
            if st.contains("terminated") {
                return Err(format!("a container ended: {st}\n{}", c.logs()));
            }
            match (ok.pop(), su.pop()) {
                (Some(o), Some(s)) => Ok((o, s)),
                other => Err(format!("{other:?}; status {st}")),
            }
        },
    )
    .await;
    assert_eq!(mode_of(&suid) & 0o4000, 0o4000, "{}", suid.display());
    let volume = user_ok.parent().unwrap();
    assert_eq!(mode_of(volume), 0o777, "emptyDir is 0777 like Kubernetes'");
    assert_eq!(mode_of(&volume.join("leak")), 0o644);

    let controller_dir = c.controllers.members[0].data_dir.clone();
    for root in [&data, &controller_dir] {
        let exposed = shoal_files::exposed(root).unwrap();
        assert!(
            exposed.is_empty(),
            "{}: readable by other users:\n{}",
            root.display(),
            exposed
                .iter()
                .map(|e| format!("  {e}\n"))
                .collect::<String>()
        );
        assert_eq!(mode_of(root), 0o700, "{}", root.display());
    }
    // State files are 0600 themselves (not only hidden by their directory).
    let mut state = Vec::new();
    for name in ["state.json", "config.json", "sandbox.json"] {
        let mut found = Vec::new();
        find_named(&data.join("containers"), name, &mut found);
        find_named(&data.join("pods"), name, &mut found);
        assert!(!found.is_empty(), "no {name} under {}", data.display());
        state.extend(found);
    }
    for e in std::fs::read_dir(data.join("agent/pods")).unwrap() {
        state.push(e.unwrap().path());
    }
    for p in &state {
        assert_eq!(
            mode_of(p) & 0o077,
            0,
            "{} is {:04o}",
            p.display(),
            mode_of(p)
        );
    }
    // Documented exception: the pod's /etc files are 0644 for the container's users, in
    // a 0700 directory.
    let mut hosts = Vec::new();
    find_named(&data.join("pods"), "hosts", &mut hosts);
    let hosts = hosts.pop().expect("pod /etc/hosts");
    assert_eq!(mode_of(&hosts), 0o644);
    assert_eq!(mode_of(hosts.parent().unwrap()), 0o700);
    eprintln!(
        "files: {} state files checked 0600; nothing exposed under {} and {}",
        state.len(),
        data.display(),
        controller_dir.display()
    );

    // Positive control: the walker finds a deliberately world-readable file.
    chmod(&data, 0o755);
    let leak = data.join("leak-control");
    std::fs::write(&leak, b"x").unwrap();
    chmod(&leak, 0o644);
    let found = shoal_files::exposed(&data).unwrap();
    std::fs::remove_file(&leak).unwrap();
    assert!(
        found.iter().any(|e| e.path == leak && e.mode == 0o644),
        "the walker missed {}: {found:?}",
        leak.display()
    );

    // Directories made wider by an older version are tightened when the agent starts.
    c.kill_agent();
    let wide = [
        data.clone(),
        data.join("pods"),
        data.join("containers"),
        data.join("agent"),
        data.join("agent/pods"),
    ];
    for d in &wide {
        chmod(d, 0o755);
    }
    c.start_agent();
    eventually(
        "data directories tightened",
        Duration::from_secs(30),
        || async {
            let modes: Vec<_> = wide.iter().map(|d| (d.clone(), mode_of(d))).collect();
            if modes.iter().all(|(_, m)| *m == 0o700) {
                Ok(())
            } else {
                Err(format!("{modes:?}"))
            }
        },
    )
    .await;
    assert!(shoal_files::exposed(&data).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "requires root: real containers, cgroups and namespaces"]
async fn log_and_exec_streams_survive_certificate_rotations() {
    use shoal_proto::exec_input::Input;
    use shoal_proto::exec_output::Output;
    use shoal_proto::proxy_client::ProxyClient;
    use shoal_proto::{ExecInput, ExecStart};
    // 20 s node and server certificates: each renewed about every 13 s.
    let c = Cluster::start_with("rotating", 1, &["--cert-lifetime", "20s"]).await;
    c.create_pod(pod_json(
        "ticker",
        &c.node,
        "Always",
        "busybox:latest",
        "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 1; done",
    ))
    .await;
    c.wait_pod("ticker", "running", Duration::from_secs(60), |_, cs| {
        cs.state.running.is_some()
    })
    .await;
    // Both streams go shoalctl's way: through the controller's proxy to the agent.
    let mut proxy = ProxyClient::new(channel(&c.ctl_addr).await.unwrap());
    let mut logs = proxy
        .logs(LogsRequest {
            namespace: "default".into(),
            pod: "ticker".into(),
            container: "main".into(),
            tail_lines: 1,
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(ExecInput {
        input: Some(Input::Start(ExecStart {
            namespace: "default".into(),
            pod: "ticker".into(),
            command: ["sh", "-c", "while read l; do echo got-$l; done"]
                .map(String::from)
                .to_vec(),
            stdin: true,
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let mut session = proxy
        .exec(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let node_crt = c.data_dir().join("agent/pki/tls.crt");
    let ctl_crt = c.controllers.members[0].data_dir.join("pki/tls.crt");
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    let (mut node_last, mut ctl_last) = (read(&node_crt), read(&ctl_crt));
    let (mut node_renewals, mut ctl_renewals, mut round) = (0, 0, 0);
    let deadline = Instant::now() + Duration::from_secs(120);
    // Each second: a log line arrives and an exec round trip answers, while both
    // certificates are renewed three times.
    while node_renewals < 3 || ctl_renewals < 3 {
        assert!(
            Instant::now() < deadline,
            "{node_renewals} node and {ctl_renewals} controller renewals in 120 s\n{}",
            c.logs()
        );
        let chunk = tokio::time::timeout(Duration::from_secs(5), logs.message())
            .await
            .expect("a log line within 5 s")
            .expect("log stream alive")
            .expect("log stream open");
        assert!(
            String::from_utf8_lossy(&chunk.data).contains("tick-"),
            "{chunk:?}"
        );
        round += 1;
        tx.send(ExecInput {
            input: Some(Input::Stdin(format!("{round}\n").into_bytes())),
        })
        .await
        .unwrap();
        let want = format!("got-{round}\n");
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).contains(&want) {
            let m = tokio::time::timeout(Duration::from_secs(5), session.message())
                .await
                .expect("an exec answer within 5 s")
                .expect("exec stream alive")
                .expect("exec stream open");
            match m.output {
                Some(Output::Stdout(d)) => got.extend(d),
                other => panic!("unexpected exec output {other:?}"),
            }
        }
        let (n, k) = (read(&node_crt), read(&ctl_crt));
        if n != node_last {
            node_renewals += 1;
            node_last = n;
        }
        if k != ctl_last {
            ctl_renewals += 1;
            ctl_last = k;
        }
    }
    // New connections after the rotations work too (new certificates both ends).
    let (out, _, code) = exec(&c, "ticker", &["echo", "fresh"], None).await;
    assert_eq!((out.as_str(), code), ("fresh\n", 0));
    drop(tx);
}
mod config;
