//! The Shoal controller: serves the cluster API and the Raft RPCs on one gRPC
//! port, is a member of the Raft-replicated store, and (on the leader) runs the
//! reconcilers. Depends on shoal-api, shoal-proto and shoal-store, and on the
//! runtime only for its image store (to verify imported images); never on the agent.
#![warn(missing_docs)]

pub mod alloc;
pub mod api;
pub mod error;
pub mod images;
pub mod network;
pub mod proxy;
pub mod reconcile;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use shoal_store::{Store, StoreConfig};
use tracing::info;

/// Command-line arguments of `shoal-controller`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "shoal-controller",
    version,
    about = "Shoal controller: cluster API + Raft member"
)]
pub struct Args {
    /// This member's Raft id (unique in the cluster, > 0).
    #[arg(long, default_value_t = 1)]
    pub id: u64,
    /// Address to serve the cluster API and Raft RPCs on.
    #[arg(long, default_value = "127.0.0.1:7000")]
    pub listen: SocketAddr,
    /// Address other members use to reach this one (defaults to --listen).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Directory for the Raft log, vote and state (created if missing).
    #[arg(long, default_value = "/var/lib/shoal/controller")]
    pub data_dir: PathBuf,
    /// Initial members as ID=HOST:PORT (repeat); none means a one-member cluster.
    #[arg(long = "peer", value_name = "ID=HOST:PORT")]
    pub peers: Vec<String>,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `shoal_store=debug`.
    #[arg(long, env = "SHOAL_LOG", default_value = "info")]
    pub log: String,
    /// Build a snapshot after this many log entries.
    #[arg(long, default_value_t = 5000)]
    pub snapshot_every: u64,
    /// Seconds without a heartbeat after which a node is NotReady.
    #[arg(long, default_value_t = 10.0)]
    pub node_timeout: f64,
    /// Seconds a node stays NotReady before its pods are replaced elsewhere.
    #[arg(long, default_value_t = 20.0)]
    pub eviction_delay: f64,
    /// Pod addresses of the cluster; every node gets a block of it (its spec.podCIDR).
    #[arg(long, default_value = shoal_net::ipam::DEFAULT_CLUSTER_CIDR)]
    pub cluster_cidr: String,
    /// Prefix length of each node's block of --cluster-cidr.
    #[arg(long, default_value_t = shoal_net::ipam::DEFAULT_NODE_PREFIX)]
    pub node_cidr_prefix: u8,
    /// Virtual IPs of Services (spec.clusterIP) come from this range.
    #[arg(long, default_value = shoal_net::ipam::DEFAULT_SERVICE_CIDR)]
    pub service_cidr: String,
}

/// Sets up `tracing` output on stderr with the given filter.
pub fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Parses `--peer ID=HOST:PORT` flags into a member map.
pub fn parse_peers(peers: &[String]) -> anyhow::Result<BTreeMap<u64, String>> {
    let mut out = BTreeMap::new();
    for p in peers {
        let Some((id, addr)) = p.split_once('=') else {
            bail!("--peer {p:?}: expected ID=HOST:PORT, e.g. 2=127.0.0.1:7002");
        };
        let id: u64 = id
            .trim()
            .parse()
            .with_context(|| format!("--peer {p:?}: the id must be a positive integer"))?;
        if id == 0 {
            bail!("--peer {p:?}: the id must be a positive integer");
        }
        let addr = addr.trim();
        if addr
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .is_none()
        {
            bail!("--peer {p:?}: expected HOST:PORT after '='");
        }
        if out.insert(id, addr.to_string()).is_some() {
            bail!("--peer {p:?}: id {id} given twice");
        }
    }
    Ok(out)
}

/// Runs the controller until SIGTERM or SIGINT.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let net = network::NetConfig::parse(
        &args.cluster_cidr,
        args.node_cidr_prefix,
        &args.service_cidr,
    )?;
    let advertise = args
        .advertise
        .clone()
        .unwrap_or_else(|| args.listen.to_string());
    let mut peers = parse_peers(&args.peers)?;
    if !peers.is_empty() {
        match peers.get(&args.id) {
            None => bail!(
                "--id {} is not among the --peer members {:?}",
                args.id,
                peers.keys().collect::<Vec<_>>()
            ),
            Some(a) if *a != advertise => {
                bail!(
                    "--peer {}={} does not match this member's address {advertise} (set --advertise)",
                    args.id,
                    a
                )
            }
            _ => {}
        }
    } else {
        peers.insert(args.id, advertise.clone());
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("while creating data directory {}", args.data_dir.display()))?;
    let mut cfg = StoreConfig::new(args.id, args.data_dir.clone(), advertise.clone());
    cfg.peers = peers;
    cfg.snapshot_every = args.snapshot_every;
    cfg.keep_logs_after_snapshot = args.snapshot_every.min(cfg.keep_logs_after_snapshot) / 2;
    let store = Store::open(cfg)
        .await
        .with_context(|| format!("while opening the store in {}", args.data_dir.display()))?;

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("while binding {}", args.listen))?;
    info!(
        id = args.id,
        listen = %args.listen,
        cluster_cidr = %net.cluster_cidr,
        node_prefix = net.node_prefix,
        service_cidr = %net.service_cidr,
        "controller serving"
    );

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(api::serve(
        store.clone(),
        args.data_dir.clone(),
        listener,
        net,
        async {
            let _ = stop_rx.await;
        },
    ));

    // Form the cluster exactly once (no-op when the data dir already has it).
    let boot = {
        let store = store.clone();
        tokio::spawn(async move {
            if let Err(e) = store.bootstrap().await {
                tracing::error!("bootstrap failed: {e}");
            }
        })
    };

    let reconcilers = reconcile::spawn(
        store.clone(),
        reconcile::ReconcileConfig {
            node_timeout: std::time::Duration::from_secs_f64(args.node_timeout),
            eviction_delay: std::time::Duration::from_secs_f64(args.eviction_delay),
            net,
        },
    );

    shutdown_signal().await;
    reconcilers.abort();
    info!("shutting down");
    boot.abort();
    let _ = stop_tx.send(());
    match tokio::time::timeout(std::time::Duration::from_secs(5), server).await {
        Ok(Ok(Err(e))) => tracing::warn!("server stopped with error: {e}"),
        Ok(Err(e)) => tracing::warn!("server task failed: {e}"),
        Err(_) => tracing::warn!("server did not stop within 5 s"),
        Ok(Ok(Ok(()))) => {}
    }
    store
        .shutdown()
        .await
        .context("while shutting down the store")?;
    info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_reject() {
        let p = parse_peers(&["1=127.0.0.1:7001".into(), "2=127.0.0.1:7002".into()]).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[&2], "127.0.0.1:7002");
        assert!(parse_peers(&["x=1:2".into()]).is_err());
        assert!(parse_peers(&["0=127.0.0.1:1".into()]).is_err());
        assert!(parse_peers(&["1=127.0.0.1".into()]).is_err());
        assert!(parse_peers(&["1=a:1".into(), "1=b:2".into()]).is_err());
    }
}
