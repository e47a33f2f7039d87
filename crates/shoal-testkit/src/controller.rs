//! Real `shoal-controller` processes on loopback, formed with the one membership model.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use shoal_proto::cluster_client::ClusterClient;
use shoal_proto::{AddMemberRequest, ClusterStatusRequest, ListRequest};
use tonic::transport::Channel;

use crate::lazyfs::LazyMount;
use crate::process::Proc;
use crate::{bin, eventually_async, free_port};

/// Which admin configuration belongs to which controller address (every member a
/// [`ControllerCluster`] declares), for tests that only know an address.
fn registry() -> &'static std::sync::Mutex<std::collections::HashMap<String, PathBuf>> {
    static R: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<String, PathBuf>>> =
        std::sync::OnceLock::new();
    R.get_or_init(Default::default)
}

/// The admin configuration of the cluster a member at `addr` belongs to.
pub fn conf_for(addr: &str) -> Result<PathBuf, String> {
    registry()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(addr)
        .cloned()
        .ok_or_else(|| format!("{addr} is no member of a test cluster of this process"))
}

/// Records that the controller at `addr` (started by a test itself) uses `conf`.
pub fn register_conf(addr: &str, conf: PathBuf) {
    registry()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(addr.to_string(), conf);
}

/// A cluster API client of the member at `addr`, with its cluster's admin credentials.
pub async fn client_of(addr: &str) -> Result<ClusterClient<Channel>, String> {
    grpc_client(&conf_for(addr)?, addr).await
}

/// A channel to `addr` with the credentials of the client configuration `conf` (as a
/// user would: mutual TLS; 500 ms connect timeout, 5 s per request).
pub async fn channel(conf: &Path, addr: &str) -> Result<Channel, String> {
    channel_timeout(conf, addr, Duration::from_secs(5)).await
}

/// [`channel`] with another request timeout (uploads, long calls).
pub async fn channel_timeout(
    conf: &Path,
    addr: &str,
    request: Duration,
) -> Result<Channel, String> {
    let (cfg, _) =
        shoal_client::ClientConfig::from_file(conf, None, Some(addr)).map_err(|e| e.to_string())?;
    let cfg = cfg.with_timeouts(shoal_client::Timeouts {
        connect: Duration::from_millis(500),
        request,
    });
    cfg.connect(&cfg.endpoints.addrs()[0], true)
        .await
        .map_err(|e| format!("{addr}: {e}"))
}

/// Connects a cluster API client to `addr` with the credentials of `conf`.
pub async fn grpc_client(conf: &Path, addr: &str) -> Result<ClusterClient<Channel>, String> {
    Ok(shoal_client::Client::cluster(channel(conf, addr).await?))
}

/// A channel to the agent of `node` at `addr` with the identity of the controller whose
/// data directory is `controller_data_dir` (agents accept only controllers), as the
/// controller's logs/exec proxy connects.
pub async fn agent_channel(
    controller_data_dir: &Path,
    node: &str,
    addr: &str,
    request: Duration,
) -> Result<Channel, String> {
    let pki = controller_data_dir.join("pki");
    let read = |f: &str| std::fs::read_to_string(pki.join(f)).map_err(|e| format!("{f}: {e}"));
    let slot = shoal_pki::tls::CertSlot::from_pem(&read("tls.crt")?, &read("tls.key")?)
        .map_err(|e| e.to_string())?;
    let tls = shoal_pki::tls::client_config(
        &shoal_pki::tls::Trust::Ca(read("ca.crt")?),
        Some(&slot),
        shoal_pki::tls::Expect::Node(node.to_string()),
    )
    .map_err(|e| e.to_string())?;
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .timeout(request)
        .connect_with_connector(shoal_pki::tls::Connector::new(tls, Duration::from_secs(2)))
        .await
        .map_err(|e| format!("{addr}: {}", shoal_client::connect_reason(&e)))
}

/// Makes a join token through `addr` (admin credentials in `conf`), retried for 30 s
/// while the cluster has no leader; returns (token, CA hash).
pub async fn create_token(conf: &Path, addr: &str, usage: &str, uses: u32) -> (String, String) {
    eventually_async(
        &format!("a {usage} join token from {addr}"),
        Duration::from_secs(30),
        || async move {
            let ch = channel(conf, addr).await?;
            let t = shoal_proto::access_client::AccessClient::new(ch)
                .create_token(shoal_proto::CreateTokenRequest {
                    ttl_seconds: 3600,
                    uses,
                    usage: usage.to_string(),
                    description: "test kit".into(),
                    ..Default::default()
                })
                .await
                .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
                .into_inner();
            Ok::<_, String>((t.token, t.ca_hash))
        },
    )
    .await
}

/// One controller member: its address, data directory, log and process (if running).
#[derive(Debug)]
pub struct Member {
    /// Raft id (1-based).
    pub id: u64,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Its built-in registry's `127.0.0.1:PORT` (`--registry-listen`).
    pub registry_addr: String,
    /// Its metrics listener's `127.0.0.1:PORT` (`--metrics-listen`).
    pub metrics_addr: String,
    /// Its data directory (kept across restarts).
    pub data_dir: PathBuf,
    /// Its log file (appended to across restarts).
    pub log: PathBuf,
    proc: Option<Proc>,
}

/// A cluster of controller processes. It owns every process from its spawn: a failed
/// spawn, add or wait panics with the cluster in scope, and drop kills (by PID) and reaps
/// every member, printing their logs when the test is panicking.
#[derive(Debug)]
pub struct ControllerCluster {
    /// The members declared so far (running or not), in id order.
    pub members: Vec<Member>,
    /// `--snapshot-every` for every member (`None`: the controller's default).
    pub snapshot_every: Option<u64>,
    /// Extra arguments for every member (e.g. `--node-timeout 2`).
    pub extra_args: Vec<String>,
    /// `SHOAL_LOG` of every member.
    pub log_filter: String,
    controller: PathBuf,
    /// `shoal-lazyfs` mounts under members' data directories, by member id; unmounted on
    /// drop after every member is killed, before the scratch directory goes.
    lazyfs: Vec<(u64, LazyMount)>,
    dir: tempfile::TempDir,
}

impl ControllerCluster {
    /// A cluster with no member yet (see [`ControllerCluster::new_member`]).
    pub fn empty() -> ControllerCluster {
        ControllerCluster {
            members: Vec::new(),
            snapshot_every: None,
            extra_args: Vec::new(),
            log_filter: "info,openraft=warn".to_string(),
            controller: bin("shoal-controller"),
            lazyfs: Vec::new(),
            dir: tempfile::Builder::new()
                .prefix(&format!("shoal-cc-{}-", std::process::id()))
                .tempdir()
                .expect("tempdir"),
        }
    }

    /// Starts `n` members with the controller's defaults; see [`ControllerCluster::with`].
    pub fn start(n: u64) -> ControllerCluster {
        Self::build(n, None, &[])
    }

    /// Starts `n` members with `extra_args` on every command line (the controller's
    /// default snapshot interval); see [`ControllerCluster::with`].
    pub fn start_args(n: u64, extra_args: &[&str]) -> ControllerCluster {
        Self::build(n, None, extra_args)
    }

    /// Starts `n` members with `--snapshot-every SNAPSHOT_EVERY` and `extra_args` as an
    /// operator would: member 1 forms the cluster, every other starts with `--join` member 1
    /// and is added with `AddMember`; returns once member 1 serves a linearizable read.
    pub fn with(n: u64, snapshot_every: u64, extra_args: &[&str]) -> ControllerCluster {
        Self::build(n, Some(snapshot_every), extra_args)
    }

    fn build(n: u64, snapshot_every: Option<u64>, extra_args: &[&str]) -> ControllerCluster {
        let mut c = Self::empty();
        c.snapshot_every = snapshot_every;
        c.extra_args = extra_args.iter().map(|a| a.to_string()).collect();
        for id in 1..=n {
            c.new_member(id);
            c.start_member(id);
            if id > 1 {
                c.add_member(id);
            }
        }
        if n > 0 {
            c.wait_ready();
        }
        c
    }

    /// The test's scratch directory (data directories and logs live there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Declares member `id` with a fresh port and data directory (not started); returns
    /// its address.
    pub fn new_member(&mut self, id: u64) -> String {
        assert!(
            self.members.iter().all(|m| m.id != id),
            "member {id} is already declared"
        );
        let addr = format!("127.0.0.1:{}", free_port());
        let dir = self.dir.path();
        registry()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(addr.clone(), dir.join("c1").join("admin.conf"));
        self.members.push(Member {
            id,
            addr: addr.clone(),
            registry_addr: format!("127.0.0.1:{}", free_port()),
            metrics_addr: format!("127.0.0.1:{}", free_port()),
            data_dir: dir.join(format!("c{id}")),
            log: dir.join(format!("c{id}.log")),
            proc: None,
        });
        addr
    }

    fn member_mut(&mut self, id: u64) -> &mut Member {
        self.members
            .iter_mut()
            .find(|m| m.id == id)
            .unwrap_or_else(|| panic!("no member {id}"))
    }

    fn member(&self, id: u64) -> &Member {
        self.members
            .iter()
            .find(|m| m.id == id)
            .unwrap_or_else(|| panic!("no member {id}"))
    }

    /// Member `id`'s built-in registry address (`127.0.0.1:PORT`).
    pub fn registry_addr(&self, id: u64) -> String {
        self.member(id).registry_addr.clone()
    }

    /// Member `id`'s metrics listener (`/metrics`, `/healthz`, `/readyz`), `127.0.0.1:PORT`.
    pub fn metrics_addr(&self, id: u64) -> String {
        self.member(id).metrics_addr.clone()
    }

    /// Member `id`'s data directory.
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.member(id).data_dir.clone()
    }

    /// The admin client configuration member 1 wrote (`DATA_DIR/admin.conf`).
    pub fn admin_conf(&self) -> PathBuf {
        self.member(1).data_dir.join("admin.conf")
    }

    /// A cluster API client of `addr` with admin credentials.
    pub async fn grpc(&self, addr: &str) -> Result<ClusterClient<Channel>, String> {
        grpc_client(&self.admin_conf(), addr).await
    }

    /// (Re)starts member `id` with its existing data directory; every member but 1 gets
    /// `--join` member 1's address, and on its first start a controller join token.
    pub fn start_member(&mut self, id: u64) {
        let join = (id != 1).then(|| self.addr(1));
        let first_start = !self.member(id).data_dir.join("pki/tls.crt").exists();
        let token = match &join {
            Some(via) if first_start => {
                let (conf, via) = (self.admin_conf(), via.clone());
                let r = std::thread::spawn(move || {
                    block_on(async {
                        eventually_async("admin.conf", Duration::from_secs(30), || async {
                            if conf.exists() {
                                Ok(())
                            } else {
                                Err(format!("{} missing", conf.display()))
                            }
                        })
                        .await;
                        create_token(&conf, &via, "controller", 1).await
                    })
                })
                .join();
                match r {
                    Ok(t) => Some(t),
                    Err(p) => std::panic::resume_unwind(p),
                }
            }
            _ => None,
        };
        let mut cmd = Command::new(&self.controller);
        let m = self.member(id);
        cmd.arg("--id")
            .arg(id.to_string())
            .arg("--listen")
            .arg(&m.addr)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .env("SHOAL_LOG", &self.log_filter);
        if !self.extra_args.iter().any(|a| a == "--registry-listen") {
            cmd.arg("--registry-listen").arg(&m.registry_addr);
        }
        if !self.extra_args.iter().any(|a| a == "--metrics-listen") {
            cmd.arg("--metrics-listen").arg(&m.metrics_addr);
        }
        if let Some(s) = self.snapshot_every {
            cmd.arg("--snapshot-every").arg(s.to_string());
        }
        if let Some(j) = join {
            cmd.arg("--join").arg(j);
        }
        if let Some((t, h)) = token {
            cmd.arg("--join-token").arg(t).arg("--ca-hash").arg(h);
        }
        cmd.args(&self.extra_args);
        let log = m.log.clone();
        let m = self.member_mut(id);
        assert!(
            m.proc.as_mut().is_none_or(|p| !p.is_running()),
            "member {id} is already running"
        );
        m.proc = Some(Proc::spawn(&format!("controller {id}"), &mut cmd, &log));
    }

    /// Adds the started member `id` through member 1 (`AddMember`, retried for 30 s while
    /// member 1 has no leader yet). Blocking: runs on its own thread and runtime, so that
    /// sync and async tests can both call it.
    pub fn add_member(&self, id: u64) {
        self.add_member_via(1, id);
    }

    /// Adds the started member `id` through member `via`.
    pub fn add_member_via(&self, via: u64, id: u64) {
        let via = self.addr(via);
        let addr = self.addr(id);
        let conf = self.admin_conf();
        let r = std::thread::spawn(move || {
            block_on(eventually_async(
                &format!("AddMember {id}={addr} through {via}"),
                Duration::from_secs(30),
                || {
                    let (via, addr, conf) = (via.clone(), addr.clone(), conf.clone());
                    async move {
                        let mut c = grpc_client(&conf, &via).await?;
                        let mut req = tonic::Request::new(AddMemberRequest { id, address: addr });
                        req.set_timeout(Duration::from_secs(40));
                        c.add_member(req)
                            .await
                            .map(|_| ())
                            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
                    }
                },
            ))
        })
        .join();
        if let Err(p) = r {
            std::panic::resume_unwind(p);
        }
    }

    /// Waits (blocking, 30 s) until member 1 serves a linearizable list of pods.
    pub fn wait_ready(&self) {
        let addr = self.addr(1);
        let conf = self.admin_conf();
        let r = std::thread::spawn(move || {
            block_on(eventually_async(
                &format!("controller {addr} to serve a linearizable read"),
                Duration::from_secs(30),
                || {
                    let (addr, conf) = (addr.clone(), conf.clone());
                    async move {
                        grpc_client(&conf, &addr)
                            .await?
                            .list(ListRequest {
                                kind: "Pod".into(),
                                ..Default::default()
                            })
                            .await
                            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
                    }
                },
            ))
        })
        .join();
        if let Err(p) = r {
            std::panic::resume_unwind(p);
        }
    }

    /// Mounts a `shoal-lazyfs` over `DIR/cID.backing` at member `id`'s data directory
    /// (declared, not started yet): its data then survives a [`ControllerCluster::cut_power`]
    /// only where it was fsynced. Root only. Its log is `DIR/cID.lazyfs.log`.
    pub fn mount_lazyfs(&mut self, id: u64) {
        let m = self.member(id);
        assert!(
            m.proc.is_none(),
            "member {id} is running: mount before it starts"
        );
        assert!(
            self.lazyfs.iter().all(|(i, _)| *i != id),
            "member {id} already has a lazyfs mount"
        );
        let dir = self.dir.path();
        let mount = LazyMount::start(
            &dir.join(format!("c{id}.backing")),
            &m.data_dir,
            &dir.join(format!("c{id}.lazyfs.log")),
        );
        self.lazyfs.push((id, mount));
    }

    /// A power cut of every member at once: SIGKILL every running member (all signalled
    /// before any is reaped), then SIGUSR1 to every `shoal-lazyfs` mount, waiting until
    /// each has dropped its unsynced data. Returns each mount's cut line, by member id.
    /// Restart the members with [`ControllerCluster::start_member`].
    pub fn cut_power(&mut self) -> Vec<(u64, String)> {
        for m in &self.members {
            if let Some(pid) = m.proc.as_ref().and_then(Proc::pid) {
                crate::process::signal(pid, libc::SIGKILL);
            }
        }
        for m in &mut self.members {
            if let Some(mut p) = m.proc.take() {
                p.kill();
            }
        }
        for (_, l) in &mut self.lazyfs {
            l.signal_cut();
        }
        self.lazyfs
            .iter_mut()
            .map(|(id, l)| (*id, l.wait_cut()))
            .collect()
    }

    /// SIGKILLs member `id` and reaps it.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut p) = self.member_mut(id).proc.take() {
            p.kill();
        }
    }

    /// SIGTERMs member `id` and waits (10 s) for a clean exit; panics with its report
    /// otherwise.
    pub fn stop(&mut self, id: u64) {
        if let Some(mut p) = self.member_mut(id).proc.take() {
            match p.terminate(Duration::from_secs(10)) {
                Ok(s) if s.success() => {}
                Ok(s) => panic!("member {id} exited with {s} on SIGTERM; {}", p.report(30)),
                Err(e) => panic!("member {id}: {e}"),
            }
        }
    }

    /// True while member `id`'s process runs.
    pub fn is_running(&mut self, id: u64) -> bool {
        self.member_mut(id)
            .proc
            .as_mut()
            .is_some_and(Proc::is_running)
    }

    /// PID of member `id` while it runs.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.member(id).proc.as_ref().and_then(Proc::pid)
    }

    /// Address of member `id`.
    pub fn addr(&self, id: u64) -> String {
        self.member(id).addr.clone()
    }

    /// Every member's address, in id order.
    pub fn addrs(&self) -> Vec<String> {
        self.members.iter().map(|m| m.addr.clone()).collect()
    }

    /// Every address, comma-separated (for `--server` / `--controller`).
    pub fn server_list(&self) -> String {
        self.addrs().join(",")
    }

    /// Every member's state (running, or exit status) and the last `lines` of its log.
    pub fn logs(&mut self, lines: usize) -> String {
        let mut out = Vec::new();
        for m in &mut self.members {
            let head = match m.proc.as_mut() {
                Some(p) => p.report(lines),
                None => format!(
                    "controller {} (not running); last {lines} lines of {}:\n{}",
                    m.id,
                    m.log.display(),
                    crate::log_tail(&m.log, lines)
                ),
            };
            out.push(format!("---- {head}"));
        }
        out.join("\n")
    }

    /// Prints [`ControllerCluster::logs`] (40 lines each) to stderr.
    pub fn dump_logs(&mut self) {
        eprintln!("{}", self.logs(40));
    }

    /// Waits (20 s) until a member among `among` reports a leader that is in `among`.
    pub async fn wait_leader(&self, among: &[u64]) -> u64 {
        let addrs: Vec<String> = among.iter().map(|id| self.addr(*id)).collect();
        let conf = self.admin_conf();
        eventually_async("a leader", Duration::from_secs(20), || {
            let (addrs, conf) = (addrs.clone(), conf.clone());
            async move {
                let mut seen = Vec::new();
                for a in &addrs {
                    match grpc_client(&conf, a).await {
                        Ok(mut c) => match c.status(ClusterStatusRequest {}).await {
                            Ok(s) => {
                                let s = s.into_inner();
                                if s.leader_id != 0 && among.contains(&s.leader_id) {
                                    return Ok(s.leader_id);
                                }
                                seen.push(format!("{a}: leader {}", s.leader_id));
                            }
                            Err(e) => seen.push(format!("{a}: {}", e.message())),
                        },
                        Err(e) => seen.push(e),
                    }
                }
                Err(seen.join("; "))
            }
        })
        .await
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

impl Drop for ControllerCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        for m in &mut self.members {
            if let Some(mut p) = m.proc.take() {
                p.kill();
            }
        }
        // Its addresses are free again (and may go to a later test's server, or be a
        // test's "dead" address): they no longer name this cluster's configuration.
        {
            let mut r = registry().lock().unwrap_or_else(|p| p.into_inner());
            for m in &self.members {
                r.remove(&m.addr);
            }
        }
        for (id, mut l) in self.lazyfs.drain(..) {
            if std::thread::panicking() {
                eprintln!("---- member {id}'s {}", l.report(10));
            }
            // Drop unmounts (and says so on stderr when it had to force it).
            drop(l);
        }
    }
}
