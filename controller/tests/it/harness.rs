//! Test harness: start/stop/kill controller processes, clients, polling.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shoal_proto::cluster_client::ClusterClient;
use shoal_proto::{AddMemberRequest, ClusterStatusRequest, ListRequest, ObjectRequest};
use tonic::transport::Channel;

/// Polls `f` until it returns `Some`, or panics after `timeout` with the last observation.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    let mut last;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) => last = e,
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// One controller member: its process (if running), address and data directory.
#[derive(Debug)]
pub struct Member {
    pub id: u64,
    pub addr: String,
    pub data_dir: PathBuf,
    pub child: Option<Child>,
    pub log: PathBuf,
}

/// A cluster of controller processes; every process is killed on drop.
#[derive(Debug)]
pub struct TestCluster {
    pub members: Vec<Member>,
    pub snapshot_every: u64,
    /// Extra arguments for every member (e.g. `--node-timeout 2`).
    pub extra_args: Vec<String>,
    _dir: tempfile::TempDir,
}

impl TestCluster {
    /// Starts `n` members with fresh data directories.
    pub fn start(n: u64, snapshot_every: u64) -> Self {
        Self::start_with(n, snapshot_every, &[])
    }

    /// Starts `n` members with fresh data directories and `extra_args` on every command line:
    /// member 1 forms the cluster, the others start with `--join` and are added one by one
    /// (`AddMember`), as an operator would.
    pub fn start_with(n: u64, snapshot_every: u64, extra_args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let extra_args = extra_args.iter().map(|a| a.to_string()).collect();
        let mut c = TestCluster {
            members: Vec::new(),
            snapshot_every,
            extra_args,
            _dir: dir,
        };
        for id in 1..=n {
            c.new_member(id);
            c.start_member(id);
            if id > 1 {
                c.add_member_blocking(id);
            }
        }
        c
    }

    /// The test's scratch directory.
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// Declares member `id` with a fresh port and data dir (not started).
    pub fn new_member(&mut self, id: u64) {
        let dir = self._dir.path();
        self.members.push(Member {
            id,
            addr: format!("127.0.0.1:{}", free_port()),
            data_dir: dir.join(format!("c{id}")),
            child: None,
            log: dir.join(format!("c{id}.log")),
        });
    }

    /// Adds the started member `id` through member 1's API (the first member is always up
    /// while a cluster is being formed); panics when refused. Blocking (runs on its own
    /// thread and runtime, so that sync and async tests can both start clusters).
    fn add_member_blocking(&self, id: u64) {
        let via = self.addr(1);
        let addr = self.addr(id);
        std::thread::spawn(move || add_member_on_own_runtime(via, addr, id))
            .join()
            .expect("adding a member");
    }
}

fn add_member_on_own_runtime(via: String, addr: String, id: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        eventually(
            &format!("adding member {id}"),
            Duration::from_secs(30),
            || {
                let (via, addr) = (via.clone(), addr.clone());
                async move {
                    let mut c = client(&via).await?;
                    let mut req = tonic::Request::new(AddMemberRequest { id, address: addr });
                    req.set_timeout(Duration::from_secs(40));
                    c.add_member(req)
                        .await
                        .map(|_| ())
                        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
                }
            },
        )
        .await
    });
}

impl TestCluster {
    fn member(&mut self, id: u64) -> &mut Member {
        self.members
            .iter_mut()
            .find(|m| m.id == id)
            .expect("member id")
    }

    /// (Re)starts member `id` with its existing data directory.
    pub fn start_member(&mut self, id: u64) {
        let join = (id != 1).then(|| self.addr(1));
        let snapshot_every = self.snapshot_every;
        let extra_args = self.extra_args.clone();
        let m = self.member(id);
        assert!(m.child.is_none(), "member {id} already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal-controller"));
        cmd.arg("--id")
            .arg(id.to_string())
            .arg("--listen")
            .arg(&m.addr)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .arg("--snapshot-every")
            .arg(snapshot_every.to_string())
            .env("SHOAL_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        if let Some(j) = join {
            cmd.arg("--join").arg(j);
        }
        cmd.args(&extra_args);
        m.child = Some(cmd.spawn().expect("spawn shoal-controller"));
    }

    /// Sends SIGKILL to member `id` and reaps it.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut c) = self.member(id).child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM to member `id` and waits for it to exit.
    pub fn stop(&mut self, id: u64) {
        if let Some(mut c) = self.member(id).child.take() {
            // SAFETY: plain kill(2) on the PID of a child we spawned and have not reaped.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(status)) = c.try_wait() {
                    assert!(
                        status.success(),
                        "member {id} exited with {status} on SIGTERM"
                    );
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    panic!("member {id} did not stop within 10 s of SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Address of member `id`.
    pub fn addr(&self, id: u64) -> String {
        self.members
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.addr.clone())
            .expect("member")
    }

    /// Prints every member's log (for failures).
    pub fn dump_logs(&self) {
        for m in &self.members {
            let s = std::fs::read_to_string(&m.log).unwrap_or_default();
            let tail: Vec<&str> = s.lines().rev().take(40).collect();
            eprintln!("---- member {} log (last 40 lines) ----", m.id);
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }

    /// Waits until some member reports a leader and returns its id.
    pub async fn wait_leader(&self, among: &[u64]) -> u64 {
        let addrs: Vec<String> = among.iter().map(|id| self.addr(*id)).collect();
        eventually("a leader", Duration::from_secs(20), || {
            let addrs = addrs.clone();
            let among = among.to_vec();
            async move {
                for a in &addrs {
                    if let Ok(mut c) = client(a).await
                        && let Ok(s) = c.status(ClusterStatusRequest {}).await
                    {
                        let s = s.into_inner();
                        if s.leader_id != 0 && among.contains(&s.leader_id) {
                            return Ok(s.leader_id);
                        }
                    }
                }
                Err("no member reports a live leader".to_string())
            }
        })
        .await
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Connects a cluster API client with a short timeout.
pub async fn client(addr: &str) -> Result<ClusterClient<Channel>, String> {
    let ch = Channel::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    Ok(ClusterClient::new(ch))
}

/// A minimal valid Pod object as JSON.
pub fn pod_json(name: &str) -> String {
    serde_json::json!({
        "apiVersion": "shoal/v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"test": "raft"}},
        "spec": {"containers": [{"name": "c", "image": "busybox:latest"}]}
    })
    .to_string()
}

/// Creates a pod through the member at `addr`.
pub async fn create_pod(addr: &str, name: &str) -> Result<(), String> {
    let mut c = client(addr).await?;
    c.create(ObjectRequest {
        object_json: pod_json(name),
    })
    .await
    .map_err(|e| e.message().to_string())?;
    Ok(())
}

/// Names of the pods in `addr`'s local copy (stale read: no leader involved).
pub async fn local_pod_names(addr: &str) -> Result<std::collections::BTreeSet<String>, String> {
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
        .filter_map(|v| {
            v.pointer("/metadata/name")
                .and_then(|n| n.as_str())
                .map(String::from)
        })
        .collect())
}
