//! `shoal-bench sched`: scheduler end to end through a running controller cluster.
//!
//! The load generator registers SIMULATED nodes (Node objects with capacity, Ready=True and
//! a Heartbeat RPC every `--heartbeat-secs`, as an agent sends it; `--heartbeat-writes`: a
//! Node status update instead, as agents did before heartbeats left the log; no agent and no
//! container runs), then creates pods (`--clients` concurrent Creates, or CreateMany requests
//! of `--batch` pods; `--via apply` sends those as one atomic Apply instead, the old batched
//! path) and watches until every pod has `spec.nodeName`. Pods bound per second is
//! measured from the first create to the last binding seen on the watch.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use shoal_proto::{ApplyRequest, CreateManyRequest, HeartbeatRequest, ObjectRequest, WatchRequest};

use crate::{cluster_client, ensure_namespace};

/// Options of `shoal-bench sched`.
#[derive(Debug, Clone, clap::Args)]
pub struct SchedArgs {
    /// Comma-separated HOST:PORT list of controllers; client i uses endpoint i mod n.
    #[arg(long)]
    pub endpoints: String,
    /// Simulated nodes to register.
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    /// Pods to create and wait for.
    #[arg(long, default_value_t = 10_000)]
    pub pods: usize,
    /// Pods per request: 1 = Create, more = one CreateMany of that many (each pod its own
    /// store request and result, group-committed), or one Apply with `--via apply`.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// How a batch is sent: `create-many` or `apply` (one atomic Apply; the server reads
    /// each object linearizably first).
    #[arg(long, default_value = "create-many", value_parser = ["create-many", "apply"])]
    pub via: String,
    /// Concurrent create requests.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Seconds between heartbeats of each simulated node (0: register only).
    #[arg(long, default_value_t = 2.0)]
    pub heartbeat_secs: f64,
    /// Heartbeat the way agents did before heartbeats left the Raft log: an unconditional
    /// update of the Node's status each time (default: the Heartbeat RPC agents send now).
    #[arg(long)]
    pub heartbeat_writes: bool,
    /// Each simulated node also watches the pods bound to it (a Watch with the field
    /// selector `spec.nodeName=NODE`, as agents do), 100 streams per connection, spread
    /// over the endpoints; the events they receive are counted (`node_watch_events`).
    #[arg(long)]
    pub node_watches: bool,
    /// Each simulated node also opens the watches of an agent's pod network (agent
    /// `network.rs`): every Service, Endpoints, Node, NetworkPolicy and Namespace of the
    /// cluster and the Pods with an address (`status.podIP!=`), 6 streams a node; the
    /// events they receive are counted (`network_watch_events`).
    #[arg(long)]
    pub network_watches: bool,
    /// With --network-watches: watch every Pod, as agents did before they narrowed it to
    /// the pods with an address.
    #[arg(long)]
    pub network_all_pods: bool,
    /// Distinguishes object names between runs.
    #[arg(long, default_value = "run")]
    pub tag: String,
}

/// A SIMULATED node: 32 cores, 128 GiB, 110 pod slots, Ready, heartbeat now.
fn sim_node(name: &str, zone: usize) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "shoal/v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"shoal.io/simulated": "true", "zone": format!("z{zone}")}},
        "status": {
            "capacity": {"cpu": "32", "memory": "128Gi", "pods": 110},
            "conditions": [{"type": "Ready", "status": "True"}],
            "heartbeatTime": chrono_now(),
        }
    })
}

fn chrono_now() -> String {
    // RFC 3339 in UTC from the system clock, without a chrono dependency.
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, dd) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Howard Hinnant's days-to-civil conversion.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn bench_pod(ns: &str, name: &str, owner: usize) -> String {
    serde_json::json!({
        "apiVersion": "shoal/v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": format!("app-{owner}")}},
        "spec": {"containers": [{"name": "c", "image": "busybox:latest", "command": ["sleep", "3600"],
                 "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}
    })
    .to_string()
}

/// Creates one object, retrying transient failures (an election under load) for up to
/// 60 s; `already exists` after a retry means an earlier attempt went through.
async fn create_retrying(
    c: &mut shoal_proto::cluster_client::ClusterClient<tonic::transport::Channel>,
    object_json: String,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match c
            .create(ObjectRequest {
                object_json: object_json.clone(),
            })
            .await
        {
            Ok(_) => return Ok(()),
            Err(s) if s.code() == tonic::Code::AlreadyExists && attempt > 1 => return Ok(()),
            Err(s) if Instant::now() < deadline && s.code() != tonic::Code::InvalidArgument => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => return Err(s).context("creating an object"),
        }
    }
}

/// Creates objects with CreateMany, sending again the ones that failed transiently (an
/// election under load) for up to 60 s; `already exists` after a resend means an earlier
/// attempt went through. Any other failure of an object is an error.
async fn create_many_retrying(
    c: &mut shoal_proto::cluster_client::ClusterClient<tonic::transport::Channel>,
    mut objects_json: Vec<String>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut resend = false;
    while !objects_json.is_empty() {
        let results = match c
            .create_many(CreateManyRequest {
                objects_json: objects_json.clone(),
            })
            .await
        {
            Ok(r) => r.into_inner().results,
            Err(s) if Instant::now() < deadline && s.code() != tonic::Code::InvalidArgument => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                resend = true;
                continue;
            }
            Err(s) => return Err(s).context("creating pods"),
        };
        let mut again = Vec::new();
        for r in results {
            match tonic::Code::from_i32(r.code) {
                tonic::Code::Ok => {}
                tonic::Code::AlreadyExists if resend => {}
                tonic::Code::Unavailable | tonic::Code::Aborted | tonic::Code::Internal
                    if Instant::now() < deadline =>
                {
                    again.push(objects_json[r.index as usize].clone());
                }
                _ => bail!("creating pod {}: {}", r.name, r.error),
            }
        }
        if !again.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            resend = true;
        }
        objects_json = again;
    }
    Ok(())
}

/// Runs the benchmark and prints one JSON line with the figures.
pub async fn run(a: SchedArgs) -> anyhow::Result<()> {
    let eps: Vec<String> = a
        .endpoints
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if eps.is_empty() {
        bail!("--endpoints is empty");
    }
    let ns = format!("sched-{}", a.tag);
    let node_names: Vec<String> = (0..a.nodes).map(|i| format!("sim-{}-{i}", a.tag)).collect();
    ensure_namespace(&mut cluster_client(&eps[0]).await?, &ns).await?;

    // Register the simulated nodes (32 concurrent creates).
    let t = Instant::now();
    let per = node_names.len().div_ceil(32).max(1);
    let mut regs = Vec::new();
    for (ci, chunk) in node_names.chunks(per).enumerate() {
        let (chunk, ep) = (chunk.to_vec(), eps[ci % eps.len()].clone());
        regs.push(tokio::spawn(async move {
            let mut c = cluster_client(&ep).await?;
            for (i, n) in chunk.iter().enumerate() {
                create_retrying(&mut c, sim_node(n, i % 3).to_string())
                    .await
                    .with_context(|| format!("registering simulated node {n}"))?;
            }
            anyhow::Ok(())
        }));
    }
    for r in regs {
        r.await??;
    }
    eprintln!(
        "registered {} simulated nodes in {:.2} s",
        a.nodes,
        t.elapsed().as_secs_f64()
    );

    // Heartbeats, as agents send them (or, with --heartbeat-writes, an unconditional update
    // of each node's status, as they did before).
    let writes = a.heartbeat_writes;
    let stop = Arc::new(AtomicBool::new(false));
    let heartbeats = if a.heartbeat_secs > 0.0 {
        let (stop, eps, names, every) = (
            stop.clone(),
            eps.clone(),
            node_names.clone(),
            a.heartbeat_secs,
        );
        Some(tokio::spawn(async move {
            let mut clients = Vec::new();
            for i in 0..16 {
                clients.push(cluster_client(&eps[i % eps.len()]).await?);
            }
            let mut round = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let per = names.len().div_ceil(clients.len()).max(1);
                let mut tasks = Vec::new();
                for (ci, chunk) in names.chunks(per).enumerate() {
                    let mut cl = clients[ci % clients.len()].clone();
                    let chunk: Vec<String> = chunk.to_vec();
                    tasks.push(tokio::spawn(async move {
                        for (i, n) in chunk.iter().enumerate() {
                            if writes {
                                let body = sim_node(n, i % 3).to_string();
                                let _ = cl.update(ObjectRequest { object_json: body }).await;
                            } else {
                                let req = HeartbeatRequest {
                                    node_name: n.clone(),
                                };
                                let _ = cl.heartbeat(req).await;
                            }
                        }
                    }));
                }
                for t in tasks {
                    let _ = t.await;
                }
                round += 1;
                let left = Duration::from_secs_f64(every).saturating_sub(t.elapsed());
                tokio::time::sleep(left).await;
            }
            anyhow::Ok(round)
        }))
    } else {
        None
    };

    // The nodes' own pod watches (--node-watches) and their network's watches
    // (--network-watches), open before the first create.
    let node_events = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let network_events = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut node_watches = Vec::new();
    let mut network_watches = Vec::new();
    for (ci, chunk) in node_names.chunks(100).enumerate() {
        if !a.node_watches && !a.network_watches {
            break;
        }
        let c = cluster_client(&eps[ci % eps.len()]).await?;
        for n in chunk {
            // (is a network watch, the request)
            let mut reqs = Vec::new();
            if a.node_watches {
                reqs.push((
                    false,
                    WatchRequest {
                        kind: "Pod".into(),
                        namespace: ns.clone(),
                        field_selector: format!("spec.nodeName={n}"),
                        ..Default::default()
                    },
                ));
            }
            if a.network_watches {
                for kind in [
                    "Pod",
                    "Service",
                    "Endpoints",
                    "Node",
                    "NetworkPolicy",
                    "Namespace",
                ] {
                    let narrow = kind == "Pod" && !a.network_all_pods;
                    let req = WatchRequest {
                        kind: kind.into(),
                        field_selector: if narrow {
                            "status.podIP!=".into()
                        } else {
                            String::new()
                        },
                        ..Default::default()
                    };
                    reqs.push((true, req));
                }
            }
            for (network, req) in reqs {
                let mut c = c.clone();
                let what = format!("{} watch of {n}", req.kind);
                let mut s = c.watch(req).await.context(what)?.into_inner();
                let count = if network {
                    &network_events
                } else {
                    &node_events
                }
                .clone();
                let h = tokio::spawn(async move {
                    while let Ok(Some(_)) = s.message().await {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                });
                if network {
                    network_watches.push(h);
                } else {
                    node_watches.push(h);
                }
            }
        }
    }
    if a.node_watches {
        eprintln!("{} node pod watches open", node_watches.len());
    }
    if a.network_watches {
        eprintln!("{} network watches open", network_watches.len());
    }

    // Watch bindings before the first create.
    let mut wc = cluster_client(&eps[eps.len() - 1]).await?;
    let mut stream = wc
        .watch(WatchRequest {
            kind: "Pod".into(),
            namespace: ns.clone(),
            field_selector: "spec.nodeName!=".into(),
            ..Default::default()
        })
        .await
        .context("watching pods")?
        .into_inner();

    let t0 = Instant::now();
    let names: Vec<String> = (0..a.pods).map(|i| format!("p-{i}")).collect();
    let batches: Vec<Vec<String>> = names.chunks(a.batch.max(1)).map(|c| c.to_vec()).collect();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let batches = Arc::new(batches);
    let mut creators = Vec::new();
    for ci in 0..a.clients.max(1) {
        let (next, batches, ns, ep, via) = (
            next.clone(),
            batches.clone(),
            ns.clone(),
            eps[ci % eps.len()].clone(),
            a.via.clone(),
        );
        creators.push(tokio::spawn(async move {
            let mut c = cluster_client(&ep).await?;
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(batch) = batches.get(i) else { break };
                // 20 pods per owner label, like replicas of one app.
                let objects_json: Vec<String> = batch
                    .iter()
                    .map(|n| {
                        let idx: usize = n.trim_start_matches("p-").parse().unwrap_or(0);
                        bench_pod(&ns, n, idx / 20)
                    })
                    .collect();
                if objects_json.len() == 1 {
                    let object_json = objects_json.into_iter().next().unwrap_or_default();
                    create_retrying(&mut c, object_json).await?;
                } else if via == "apply" {
                    c.apply(ApplyRequest {
                        objects_json,
                        dry_run: false,
                    })
                    .await
                    .context("creating pods")?;
                } else {
                    create_many_retrying(&mut c, objects_json).await?;
                }
            }
            anyhow::Ok(())
        }));
    }
    let watcher = tokio::spawn(async move {
        let mut bound = HashSet::new();
        let mut first = None;
        while let Some(ev) = stream.message().await? {
            let v: serde_json::Value = serde_json::from_str(&ev.object_json)?;
            let node = v
                .pointer("/spec/nodeName")
                .and_then(|n| n.as_str())
                .unwrap_or("");
            if !node.is_empty() {
                first.get_or_insert_with(Instant::now);
                bound.insert(
                    v.pointer("/metadata/name")
                        .and_then(|n| n.as_str())
                        .unwrap_or("")
                        .to_string(),
                );
            }
            if bound.len() >= names.len() {
                return anyhow::Ok((Instant::now(), first));
            }
        }
        bail!("the watch ended after {} bindings", bound.len())
    });
    for c in creators {
        c.await??;
    }
    let created = t0.elapsed();
    eprintln!("created {} pods in {:.2} s", a.pods, created.as_secs_f64());
    let (done, first) = tokio::time::timeout(Duration::from_secs(600), watcher)
        .await
        .context("waiting for bindings")???;
    stop.store(true, Ordering::Relaxed);
    if let Some(h) = heartbeats {
        h.abort();
    }
    for w in node_watches.iter().chain(&network_watches) {
        w.abort();
    }
    let total = done.duration_since(t0).as_secs_f64();
    let out = serde_json::json!({
        "nodes": a.nodes, "pods": a.pods, "batch": a.batch, "via": a.via, "clients": a.clients,
        "create_seconds": created.as_secs_f64(),
        "create_per_sec": a.pods as f64 / created.as_secs_f64(),
        "first_binding_after_ms": first.map(|f| f.duration_since(t0).as_secs_f64() * 1000.0),
        "end_to_end_seconds": total,
        "pods_bound_per_sec": a.pods as f64 / total,
        "last_binding_after_last_create_ms": (total - created.as_secs_f64()) * 1000.0,
        "node_watches": node_watches.len(),
        "node_watch_events": node_events.load(Ordering::Relaxed),
        "network_watches": network_watches.len(),
        "network_watch_events": network_events.load(Ordering::Relaxed),
    });
    println!("{out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
