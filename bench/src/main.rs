//! `shoal-bench`: load generators for docs/benchmarks.md. `store` creates objects
//! against Shoal controllers or puts keys into etcd with the same client
//! concurrency; `failover` measures leader SIGKILL to first acknowledged write; `sched`,
//! `pods` and `netctl` are described in their modules.
//!
//! Every connection to a controller is mutual TLS with the credentials of a client
//! configuration (the first controller's `admin.conf`), as for `shoalctl`; there is no
//! other way in. etcd is reached in plain text or, with `--cacert/--cert/--key`, over
//! mutual TLS, so that the comparison can be made like for like.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use shoal_proto::cluster_client::ClusterClient;
use shoal_proto::{ClusterStatusRequest, ObjectRequest};
use tonic::transport::Channel;

mod netctl;
mod podstart;
mod sched;

#[derive(Debug, Parser)]
#[command(name = "shoal-bench", about = "Shoal load generators")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Target {
    Shoal,
    Etcd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create objects (shoal) or put keys (etcd) and report throughput and latency.
    Store {
        #[arg(long, value_enum)]
        target: Target,
        /// Comma-separated HOST:PORT list; client i uses endpoint i mod n.
        #[arg(long)]
        endpoints: String,
        #[arg(long, default_value_t = 1)]
        clients: usize,
        #[arg(long, default_value_t = 2000)]
        ops: usize,
        /// Distinguishes key names between runs.
        #[arg(long, default_value = "run")]
        tag: String,
        /// etcd only: CA certificate (PEM) of the etcd members; with it the client speaks
        /// TLS (`https://`) and presents `--cert`/`--key`.
        #[arg(long, requires_all = ["cert", "key"])]
        cacert: Option<PathBuf>,
        /// etcd only: client certificate (PEM).
        #[arg(long, requires = "cacert")]
        cert: Option<PathBuf>,
        /// etcd only: client private key (PEM).
        #[arg(long, requires = "cacert")]
        key: Option<PathBuf>,
        /// etcd only: plain puts instead of put-if-absent transactions (a Compare of the
        /// key's create revision with 0, then the put: what a Create is, and what
        /// Kubernetes' apiserver sends etcd for one). The figures before 2026-12-06 used puts.
        #[arg(long)]
        etcd_put: bool,
    },
    /// Start 3 controllers (the first makes the cluster CA, the others join with controller
    /// join tokens and are added as members), SIGKILL the leader `runs` times, time the first acknowledged write after each.
    Failover(FailoverArgs),
    /// Register simulated nodes, create pods, time until every pod is bound (scheduler end to end).
    Sched(sched::SchedArgs),
    /// Start pods one at a time on a real agent (beside `docker run -d`): start latency and memory.
    Pods(podstart::PodsArgs),
    /// Time nftables table replacement and node DNS answers (inside a fresh network namespace).
    Netctl(netctl::NetctlArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Store {
            target,
            endpoints,
            clients,
            ops,
            tag,
            cacert,
            cert,
            key,
            etcd_put,
        } => {
            let tls = match (cacert, cert, key) {
                (Some(ca), Some(cert), Some(key)) => Some(EtcdTls { ca, cert, key }),
                _ => None,
            };
            let etcd_op = if etcd_put { EtcdOp::Put } else { EtcdOp::Txn };
            store(
                target,
                &endpoints,
                clients,
                ops,
                &tag,
                etcd_op,
                tls.as_ref(),
            )
            .await
        }
        Cmd::Failover(a) => failover(a).await,
        Cmd::Sched(a) => sched::run(a).await,
        Cmd::Pods(a) => podstart::run(a).await,
        Cmd::Netctl(a) => netctl::run(a).await,
    }
}

/// An object of about 300 bytes of JSON, like the etcd values we compare with.
fn pod(name: &str) -> String {
    serde_json::json!({
        "apiVersion": "shoal/v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "bench", "labels": {"app": "bench", "tier": "load"}},
        "spec": {"containers": [{"name": "c", "image": "busybox:latest", "command": ["sleep", "3600"],
                 "env": [{"name": "PAD", "value": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}]}]}
    })
    .to_string()
}

/// Creates namespace `ns` unless it exists: objects are created only in an existing
/// namespace.
async fn ensure_namespace(c: &mut ClusterClient<Channel>, ns: &str) -> anyhow::Result<()> {
    let body =
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
    match c
        .create(ObjectRequest {
            object_json: body.to_string(),
        })
        .await
    {
        Ok(_) => Ok(()),
        Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(()),
        Err(s) => Err(anyhow::anyhow!("creating namespace {ns}: {}", s.message())),
    }
}

/// A `Cluster` client pinned to one controller, built by shoal-client (the one place
/// channels to controllers are configured). Pinned on purpose: the benchmarks measure
/// each endpoint, and `failover` times the first acknowledged write itself, so no
/// fail-over may hide behind a call.
/// Credentials come from `SHOAL_CONFIG` (the first controller's admin.conf), as for
/// shoalctl: every connection is mutual TLS.
async fn cluster_client(addr: &str) -> anyhow::Result<ClusterClient<Channel>> {
    let conf = std::env::var_os("SHOAL_CONFIG").context(
        "SHOAL_CONFIG must name a client configuration (the first controller's admin.conf)",
    )?;
    Ok(shoal_client::Client::cluster(
        channel_with(Path::new(&conf), addr).await?,
    ))
}

/// A channel pinned to the controller at `addr` with the credentials of the client
/// configuration `conf`.
async fn channel_with(conf: &Path, addr: &str) -> anyhow::Result<Channel> {
    let (config, _) = shoal_client::ClientConfig::from_file(conf, None, Some(addr))
        .with_context(|| format!("client configuration {} for {addr}", conf.display()))?;
    let config = config.with_timeouts(shoal_client::Timeouts {
        connect: Duration::from_secs(1),
        request: Duration::from_secs(10),
    });
    let ch = shoal_client::Client::connect(config)
        .await
        .with_context(|| format!("connecting to {addr}"))?
        .channel()
        .await?;
    Ok(ch)
}

/// Client TLS material for etcd (PEM files, as `etcdctl --cacert --cert --key`).
#[derive(Debug)]
struct EtcdTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl EtcdTls {
    /// Connect options for `etcd-client`: trust `ca`, present `cert`/`key`.
    fn options(&self) -> anyhow::Result<etcd_client::ConnectOptions> {
        let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        let tls = etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(read(&self.ca)?))
            .identity(etcd_client::Identity::from_pem(
                read(&self.cert)?,
                read(&self.key)?,
            ));
        Ok(etcd_client::ConnectOptions::new().with_tls(tls))
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// How `store` writes to etcd: a put-if-absent transaction (a Create) or a plain put.
#[derive(Clone, Copy, Debug)]
enum EtcdOp {
    Txn,
    Put,
}

async fn store(
    target: Target,
    endpoints: &str,
    clients: usize,
    ops: usize,
    tag: &str,
    etcd_op: EtcdOp,
    etcd_tls: Option<&EtcdTls>,
) -> anyhow::Result<()> {
    if etcd_tls.is_some() && matches!(target, Target::Shoal) {
        bail!("--cacert/--cert/--key are for etcd; Shoal's credentials come from SHOAL_CONFIG");
    }
    let etcd_opts = etcd_tls.map(EtcdTls::options).transpose()?;
    let scheme = if etcd_tls.is_some() { "https" } else { "http" };
    let eps: Vec<String> = endpoints
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if eps.is_empty() {
        bail!("--endpoints is empty");
    }
    let per_client = ops.div_ceil(clients);
    let start = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let ep = eps[c % eps.len()].clone();
        let tag = tag.to_string();
        let start = start.clone();
        let etcd_opts = etcd_opts.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_client);
            match target {
                Target::Shoal => {
                    let mut cl = cluster_client(&ep).await?;
                    ensure_namespace(&mut cl, "bench").await?;
                    start.wait().await;
                    for i in 0..per_client {
                        let body = pod(&format!("{tag}-{c}-{i}"));
                        let t = Instant::now();
                        cl.create(ObjectRequest { object_json: body }).await?;
                        lat.push(t.elapsed());
                    }
                }
                Target::Etcd => {
                    let mut cl =
                        etcd_client::Client::connect([format!("{scheme}://{ep}")], etcd_opts)
                            .await
                            .with_context(|| format!("connecting to etcd at {scheme}://{ep}"))?;
                    start.wait().await;
                    for i in 0..per_client {
                        let body = pod(&format!("{tag}-{c}-{i}"));
                        let key = format!("/bench/{tag}-{c}-{i}");
                        let t = Instant::now();
                        match etcd_op {
                            EtcdOp::Put => {
                                cl.put(key, body, None).await?;
                            }
                            EtcdOp::Txn => {
                                use etcd_client::{Compare, CompareOp, Txn, TxnOp};
                                let txn = Txn::new()
                                    .when([Compare::create_revision(
                                        key.clone(),
                                        CompareOp::Equal,
                                        0,
                                    )])
                                    .and_then([TxnOp::put(key.clone(), body, None)]);
                                if !cl.txn(txn).await?.succeeded() {
                                    bail!("etcd: {key} already exists (use a new --tag)");
                                }
                            }
                        }
                        lat.push(t.elapsed());
                    }
                }
            }
            anyhow::Ok(lat)
        }));
    }
    start.wait().await;
    let t0 = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let secs = t0.elapsed().as_secs_f64();
    all.sort();
    let out = serde_json::json!({
        "target": format!("{target:?}").to_lowercase(), "clients": clients, "ops": all.len(),
        "tls": matches!(target, Target::Shoal) || etcd_tls.is_some(),
        "etcd_op": match (target, etcd_op) {
            (Target::Shoal, _) => "",
            (Target::Etcd, EtcdOp::Txn) => "txn",
            (Target::Etcd, EtcdOp::Put) => "put",
        },
        "seconds": secs, "ops_per_sec": all.len() as f64 / secs,
        "p50_ms": percentile(&all, 0.50), "p99_ms": percentile(&all, 0.99),
    });
    println!("{out}");
    Ok(())
}

struct Proc(Option<Child>);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn leader_of(conf: &Path, addrs: &[String], alive: &[bool]) -> Option<usize> {
    for (i, a) in addrs.iter().enumerate() {
        if !alive[i] {
            continue;
        }
        if let Ok(s) = status_of(conf, a).await {
            let id = s.leader_id as usize;
            if id >= 1 && id <= addrs.len() && alive[id - 1] {
                return Some(id - 1);
            }
        }
    }
    None
}

/// Retries `f` every 200 ms until it succeeds or `secs` have passed; the error names
/// `what` and carries the last failure.
async fn retry<T, F, Fut>(what: &str, secs: u64, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => {
                return Err(e.context(format!("while {what} (gave up after {secs} s)")));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// A join token for one controller, made through `addr` with the admin credentials of
/// `conf` (what `shoalctl token create --usage controller --uses 1` does); returns the
/// token and the CA hash (`sha256:HEX`).
async fn controller_token(conf: &Path, addr: &str) -> anyhow::Result<(String, String)> {
    let t = shoal_proto::access_client::AccessClient::new(channel_with(conf, addr).await?)
        .create_token(shoal_proto::CreateTokenRequest {
            ttl_seconds: 3600,
            uses: 1,
            usage: "controller".into(),
            description: "shoal-bench failover".into(),
            ..Default::default()
        })
        .await
        .map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    Ok((t.token, t.ca_hash))
}

/// `shoal-bench failover`: the cluster, the kills, the load and the members' logs.
#[derive(Debug, clap::Args)]
struct FailoverArgs {
    #[arg(long)]
    controller_bin: String,
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Kill the next leader as soon as the cluster takes writes again, without waiting for
    /// the member restarted by the previous run to catch up (two faults in a row).
    #[arg(long)]
    no_settle: bool,
    /// Writers creating pods on the live members all along (errors ignored): a failover
    /// under load.
    #[arg(long, default_value_t = 0)]
    load: usize,
    /// After the runs, keep the load this many seconds and count the elections in that
    /// time (the Raft term's growth): with no fault, every one is needless.
    #[arg(long, default_value_t = 0)]
    quiet_secs: u64,
    /// Extra argument for every controller (repeatable), e.g. `--controller-arg=--election-timeout=200`.
    #[arg(long, allow_hyphen_values = true)]
    controller_arg: Vec<String>,
    /// Keep each member's log in DIR/cN.log (appended across restarts), to see why a
    /// run was slow.
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// The members' log filter (SHOAL_LOG), e.g. `info,openraft=info`.
    #[arg(long, default_value = "warn")]
    log_filter: String,
}

/// [`failover_runs`], ended by SIGINT or SIGTERM too: dropping it kills (by PID) and reaps
/// every controller it started and removes its directory.
async fn failover(a: FailoverArgs) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        r = failover_runs(&a) => r,
        _ = term.recv() => bail!("stopped by SIGTERM (controllers killed, directory removed)"),
        _ = int.recv() => bail!("stopped by SIGINT (controllers killed, directory removed)"),
    }
}

async fn failover_runs(a: &FailoverArgs) -> anyhow::Result<()> {
    let (bin, runs) = (a.controller_bin.as_str(), a.runs);
    let dir = tempfile::Builder::new()
        .prefix("shoal-bench-failover.")
        .tempdir()?;
    let addrs: Vec<String> = (0..3)
        .map(|_| free_port().map(|p| format!("127.0.0.1:{p}")))
        .collect::<Result<_, _>>()?;
    let data = |i: usize| dir.path().join(format!("c{}", i + 1));
    // Member 1 makes the CA and writes the admin client configuration.
    let conf = data(0).join("admin.conf");
    // Members 2 and 3 join through member 1, with a join token on their first start only
    // (later starts use the certificate they were issued).
    let spawn = |i: usize, token: Option<&(String, String)>| -> anyhow::Result<Proc> {
        let mut cmd = Command::new(bin);
        cmd.arg("--id")
            .arg((i + 1).to_string())
            .arg("--listen")
            .arg(&addrs[i])
            .arg("--registry-listen")
            .arg("none")
            .arg("--metrics-listen")
            .arg("none")
            .arg("--data-dir")
            .arg(data(i));
        if i > 0 {
            cmd.arg("--join").arg(&addrs[0]);
        }
        if let Some((t, hash)) = token {
            cmd.arg("--join-token").arg(t).arg("--ca-hash").arg(hash);
        }
        cmd.args(&a.controller_arg);
        let log = match &a.log_dir {
            // Appended across restarts: one file per member for the whole run.
            Some(d) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(d.join(format!("c{}.log", i + 1)))
                    .with_context(|| format!("opening a log in {}", d.display()))?,
            ),
            None => Stdio::null(),
        };
        cmd.env("SHOAL_LOG", &a.log_filter)
            .stdout(Stdio::null())
            .stderr(log);
        Ok(Proc(Some(
            cmd.spawn().with_context(|| format!("starting {bin}"))?,
        )))
    };
    let mut procs = vec![spawn(0, None)?];
    retry("waiting for member 1's admin.conf", 30, || async {
        if conf.exists() {
            Ok(())
        } else {
            bail!("{} not written yet", conf.display())
        }
    })
    .await?;
    for i in 1..3 {
        let token = retry("making a controller join token", 30, || {
            controller_token(&conf, &addrs[0])
        })
        .await?;
        procs.push(spawn(i, Some(&token))?);
        retry(&format!("adding controller {}", i + 1), 30, || async {
            let mut c = shoal_client::Client::cluster(channel_with(&conf, &addrs[0]).await?);
            let mut req = tonic::Request::new(shoal_proto::AddMemberRequest {
                id: i as u64 + 1,
                address: addrs[i].clone(),
            });
            req.set_timeout(Duration::from_secs(40));
            c.add_member(req)
                .await
                .map_err(|e| anyhow::anyhow!("{:?}: {}", e.code(), e.message()))
        })
        .await?;
    }
    // The probe pods live in namespace "bench", which must exist before they are created.
    retry("creating namespace bench", 30, || async {
        ensure_namespace(
            &mut shoal_client::Client::cluster(channel_with(&conf, &addrs[0]).await?),
            "bench",
        )
        .await
    })
    .await?;
    let mut alive = [true; 3];
    let mut times = Vec::new();
    let load = Load::start(a.load, &conf, &addrs).await?;
    for run in 0..runs {
        let leader = retry("waiting for a leader that takes writes", 30, || async {
            let l = leader_of(&conf, &addrs, &alive)
                .await
                .context("no leader")?;
            // make sure the cluster takes writes before killing
            shoal_client::Client::cluster(channel_with(&conf, &addrs[l]).await?)
                .create(ObjectRequest {
                    object_json: pod(&format!("warm-{run}")),
                })
                .await
                .map_err(|e| anyhow::anyhow!("{:?}: {}", e.code(), e.message()))?;
            Ok(l)
        })
        .await?;
        if !a.no_settle {
            settle(&conf, &addrs[leader]).await?;
        }
        let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
        let mut clients = Vec::new();
        for s in &survivors {
            // A member restarted by the previous run may still be starting.
            let ch = retry(&format!("connecting to {}", addrs[*s]), 20, || {
                channel_with(&conf, &addrs[*s])
            })
            .await?;
            clients.push(shoal_client::Client::cluster(ch));
        }
        if let Some(mut c) = procs[leader].0.take() {
            c.kill()?;
            c.wait()?;
        }
        alive[leader] = false;
        let t0 = Instant::now();
        let killed_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let mut n = 0usize;
        'outer: loop {
            for c in clients.iter_mut() {
                n += 1;
                let mut req = tonic::Request::new(ObjectRequest {
                    object_json: pod(&format!("fo-{run}-{n}")),
                });
                req.set_timeout(Duration::from_millis(300));
                if c.create(req).await.is_ok() {
                    break 'outer;
                }
            }
            if t0.elapsed() > Duration::from_secs(30) {
                bail!("no write acknowledged within 30 s of the kill");
            }
        }
        let took = t0.elapsed();
        eprintln!(
            "run {run}: leader {} killed at {}.{:03} (Unix time), first acknowledged write after {:.0} ms",
            leader + 1,
            killed_at.as_secs(),
            killed_at.subsec_millis(),
            took.as_secs_f64() * 1000.0
        );
        times.push(took);
        procs[leader] = spawn(leader, None)?;
        alive[leader] = true;
    }
    let mut quiet = serde_json::Value::Null;
    if a.quiet_secs > 0 {
        settle(
            &conf,
            &addrs[leader_of(&conf, &addrs, &alive)
                .await
                .context("no leader")?],
        )
        .await?;
        let before = status_of(&conf, &addrs[0]).await?.term;
        let writes = load.acked();
        tokio::time::sleep(Duration::from_secs(a.quiet_secs)).await;
        let after = status_of(&conf, &addrs[0]).await?.term;
        quiet = serde_json::json!({"secs": a.quiet_secs, "elections": after - before,
            "load_writes_per_s": (load.acked() - writes) as f64 / a.quiet_secs as f64});
        eprintln!(
            "quiet {} s under load: term {before} -> {after} ({} needless elections)",
            a.quiet_secs,
            after - before
        );
    }
    let load_writes = load.stop().await;
    let per_run: Vec<u128> = times.iter().map(Duration::as_millis).collect();
    times.sort();
    println!(
        "{}",
        serde_json::json!({"runs": times.len(), "median_ms": percentile(&times, 0.5),
                           "p99_ms": percentile(&times, 0.99),
                           "min_ms": percentile(&times, 0.0), "max_ms": percentile(&times, 1.0),
                           "per_run_ms": per_run, "settle": !a.no_settle,
                           "load_writers": a.load, "load_writes": load_writes, "quiet": quiet})
    );
    Ok(())
}

async fn status_of(conf: &Path, addr: &str) -> anyhow::Result<shoal_proto::ClusterStatusResponse> {
    let mut c = shoal_client::Client::cluster(channel_with(conf, addr).await?);
    Ok(c.status(ClusterStatusRequest {}).await?.into_inner())
}

/// Waits until every member answers and has applied what the leader had committed when
/// the wait began: the cluster is whole again (a restarted member has caught up).
async fn settle(conf: &Path, leader: &str) -> anyhow::Result<()> {
    let target = status_of(conf, leader).await?.commit_index;
    retry("waiting for every member to catch up", 60, || async {
        let s = status_of(conf, leader).await?;
        match s
            .members
            .iter()
            .find(|m| !m.healthy || m.last_applied < target)
        {
            None => Ok(()),
            Some(m) => bail!(
                "member {} has applied {} of {target} ({})",
                m.id,
                m.last_applied,
                m.error
            ),
        }
    })
    .await
}

/// Background writers for a failover under load: each creates pods on the members in
/// turn (a dead member's attempt fails fast and is skipped) and counts what is acknowledged.
struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    acked: Arc<std::sync::atomic::AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    async fn start(writers: usize, conf: &Path, addrs: &[String]) -> anyhow::Result<Load> {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let mut channels = Vec::new();
        for a in addrs {
            channels.push(channel_with(conf, a).await?);
        }
        let tasks = (0..writers)
            .map(|w| {
                let (stop, acked) = (stop.clone(), acked.clone());
                let mut clients: Vec<_> = channels
                    .iter()
                    .map(|c| shoal_client::Client::cluster(c.clone()))
                    .collect();
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let i = (w + n as usize) % clients.len();
                        let mut req = tonic::Request::new(ObjectRequest {
                            object_json: pod(&format!("load-{w}-{n}")),
                        });
                        req.set_timeout(Duration::from_secs(1));
                        match clients[i].create(req).await {
                            Ok(_) => {
                                acked.fetch_add(1, Ordering::Relaxed);
                            }
                            // a dead member refuses at once: don't spin on it
                            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                        }
                    }
                })
            })
            .collect();
        Ok(Load { stop, acked, tasks })
    }

    fn acked(&self) -> u64 {
        self.acked.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn stop(self) -> u64 {
        let Load { stop, acked, tasks } = self;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
        acked.load(std::sync::atomic::Ordering::Relaxed)
    }
}
