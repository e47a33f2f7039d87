//! `shoal-bench`: load generators for docs/benchmarks.md. `store` creates objects
//! against Shoal controllers or puts keys into etcd with the same client
//! concurrency; `failover` measures leader SIGKILL to first acknowledged write; `sched`,
//! `pods` and `netctl` are described in their modules.

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
    },
    /// Start 3 controllers, SIGKILL the leader `runs` times, time the first acknowledged write after each.
    Failover {
        #[arg(long)]
        controller_bin: String,
        #[arg(long, default_value_t = 10)]
        runs: usize,
    },
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
        } => store(target, &endpoints, clients, ops, &tag).await,
        Cmd::Failover {
            controller_bin,
            runs,
        } => failover(&controller_bin, runs).await,
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
    let (config, _) = shoal_client::ClientConfig::from_file(conf.as_ref(), None, Some(addr))
        .with_context(|| format!("endpoint {addr}"))?;
    let config = config.with_timeouts(shoal_client::Timeouts {
        connect: Duration::from_secs(1),
        request: Duration::from_secs(10),
    });
    let ch = shoal_client::Client::connect(config)
        .await
        .with_context(|| format!("connecting to {addr}"))?
        .channel()
        .await?;
    Ok(shoal_client::Client::cluster(ch))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn store(
    target: Target,
    endpoints: &str,
    clients: usize,
    ops: usize,
    tag: &str,
) -> anyhow::Result<()> {
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
                        etcd_client::Client::connect([format!("http://{ep}")], None).await?;
                    start.wait().await;
                    for i in 0..per_client {
                        let body = pod(&format!("{tag}-{c}-{i}"));
                        let t = Instant::now();
                        cl.put(format!("/bench/{tag}-{c}-{i}"), body, None).await?;
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

async fn leader_of(addrs: &[String], alive: &[bool]) -> Option<usize> {
    for (i, a) in addrs.iter().enumerate() {
        if !alive[i] {
            continue;
        }
        if let Ok(mut c) = cluster_client(a).await
            && let Ok(s) = c.status(ClusterStatusRequest {}).await
        {
            let id = s.into_inner().leader_id as usize;
            if id >= 1 && id <= addrs.len() && alive[id - 1] {
                return Some(id - 1);
            }
        }
    }
    None
}

async fn failover(bin: &str, runs: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let addrs: Vec<String> = (0..3)
        .map(|_| free_port().map(|p| format!("127.0.0.1:{p}")))
        .collect::<Result<_, _>>()?;
    let spawn = |i: usize| -> anyhow::Result<Proc> {
        let mut cmd = Command::new(bin);
        cmd.arg("--id")
            .arg((i + 1).to_string())
            .arg("--listen")
            .arg(&addrs[i]);
        cmd.arg("--data-dir").arg(dir.path().join(format!("c{i}")));
        if i > 0 {
            cmd.arg("--join").arg(&addrs[0]);
        }
        cmd.env("SHOAL_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Ok(Proc(Some(
            cmd.spawn().with_context(|| format!("starting {bin}"))?,
        )))
    };
    let mut procs: Vec<Proc> = (0..3).map(spawn).collect::<Result<_, _>>()?;
    // Member 1 forms the cluster; the others are added one by one.
    for i in 1..3 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let added = match cluster_client(&addrs[0]).await {
                Ok(mut c) => c
                    .add_member(shoal_proto::AddMemberRequest {
                        id: i as u64 + 1,
                        address: addrs[i].clone(),
                    })
                    .await
                    .map_err(|e| anyhow::anyhow!("{}", e.message())),
                Err(e) => Err(e),
            };
            match added {
                Ok(_) => break,
                Err(e) if Instant::now() > deadline => {
                    return Err(e.context(format!("adding controller {}", i + 1)));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
    let mut alive = [true; 3];
    let mut times = Vec::new();
    for run in 0..runs {
        let deadline = Instant::now() + Duration::from_secs(30);
        let leader = loop {
            if let Some(l) = leader_of(&addrs, &alive).await {
                // make sure the cluster takes writes before killing
                if let Ok(mut c) = cluster_client(&addrs[l]).await
                    && c.create(ObjectRequest {
                        object_json: pod(&format!("warm-{run}")),
                    })
                    .await
                    .is_ok()
                {
                    break l;
                }
            }
            if Instant::now() > deadline {
                bail!("no leader within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
        let mut clients = Vec::new();
        for s in &survivors {
            // A member restarted by the previous run may still be starting.
            let until = Instant::now() + Duration::from_secs(20);
            loop {
                match cluster_client(&addrs[*s]).await {
                    Ok(c) => {
                        clients.push(c);
                        break;
                    }
                    Err(e) if Instant::now() > until => return Err(e),
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
        if let Some(mut c) = procs[leader].0.take() {
            c.kill()?;
            c.wait()?;
        }
        alive[leader] = false;
        let t0 = Instant::now();
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
            "run {run}: leader {} killed, first acknowledged write after {:.0} ms",
            leader + 1,
            took.as_secs_f64() * 1000.0
        );
        times.push(took);
        procs[leader] = spawn(leader)?;
        alive[leader] = true;
    }
    times.sort();
    println!(
        "{}",
        serde_json::json!({"runs": times.len(), "median_ms": percentile(&times, 0.5),
                           "min_ms": percentile(&times, 0.0), "max_ms": percentile(&times, 1.0)})
    );
    Ok(())
}
