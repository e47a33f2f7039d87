//! The Shoal controller: serves the cluster API and the Raft RPCs on one gRPC
//! port, is a member of the Raft-replicated store, and (on the leader) runs the
//! reconcilers. Depends on shoal-api, shoal-proto and shoal-store, and on
//! shoal-image for its image store (to verify and unpack imported images),
//! and on shoal-observe for metrics, health and logs (docs/observability.md);
//! never on the container runtime or the agent.
#![warn(missing_docs)]

pub mod access;
pub mod alloc;
pub mod api;
pub mod authz;
pub mod blobs;
pub mod encryption;
pub mod error;
pub mod images;
pub mod metrics;
pub mod network;
pub mod pki;
pub mod proxy;
pub mod reconcile;
pub mod registry;

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
    version = shoal_observe::version::LINE,
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
    /// Join an existing cluster (any member's HOST:PORT): start empty and wait until an
    /// operator runs `shoalctl cluster add-member ID=ADDR`. Without it, an empty data dir
    /// starts a new one-member cluster. Ignored when the data dir already holds a member.
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "restore")]
    pub join: Option<String>,
    /// Join token for `--join` (from `shoalctl token create --usage controller`).
    #[arg(
        long,
        env = "SHOAL_JOIN_TOKEN",
        value_name = "ID.SECRET",
        hide_env_values = true
    )]
    pub join_token: Option<String>,
    /// The cluster CA's hash for `--join` (`sha256:HEX`, printed by `shoalctl token create`):
    /// the joining controller trusts only a CA with this public key.
    #[arg(long, value_name = "sha256:HEX")]
    pub ca_hash: Option<String>,
    /// Extra DNS name or IP address for this controller's certificate (repeatable), for
    /// clients that reach it by a name other than --advertise.
    #[arg(long, value_name = "NAME")]
    pub tls_san: Vec<String>,
    /// Lifetime of the server and node certificates this controller issues (renewed at two
    /// thirds of it), e.g. 365d or 2m.
    #[arg(long, default_value = "365d", value_parser = shoal_flags::parse_span)]
    pub cert_lifetime: std::time::Duration,
    /// Where the built-in registry (OCI distribution API, TLS with this controller's
    /// certificate) listens: HOST:PORT, or `none` to turn it off. Default: the IP of
    /// --listen, port 7050.
    #[arg(long, value_name = "HOST:PORT|none")]
    pub registry_listen: Option<String>,
    /// Non-admin users may use hostPath volumes under this directory (repeatable).
    #[arg(long, value_name = "PREFIX")]
    pub allow_host_path: Vec<String>,
    /// Start a new one-member cluster from a backup written by `shoalctl cluster snapshot
    /// save` (the data dir must be missing or empty); grow it again with add-member.
    #[arg(long, value_name = "FILE")]
    pub restore: Option<PathBuf>,
    /// The key that encrypts Secrets at rest (default DATA_DIR/pki/encryption.key).
    #[arg(long, value_name = "FILE")]
    pub encryption_key_file: Option<PathBuf>,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `shoal_store=debug`.
    #[arg(long, env = "SHOAL_LOG", default_value = "info")]
    pub log: String,
    /// Log format on stderr: `text` (colours only on a terminal) or `json` (one object a line).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: shoal_observe::LogFormat,
    /// Where Prometheus metrics (/metrics), /healthz and /readyz are served over plain
    /// HTTP: HOST:PORT, or `none`. No authentication: keep it on loopback or a private net.
    #[arg(long, value_name = "HOST:PORT|none", default_value = "127.0.0.1:7080")]
    pub metrics_listen: shoal_observe::Listen,
    /// Build a snapshot after this many log entries.
    #[arg(long, default_value_t = 5000)]
    pub snapshot_every: u64,
    /// Milliseconds between the leader's heartbeats to the other members (like etcd's
    /// --heartbeat-interval).
    #[arg(long, value_name = "MS", default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Milliseconds a member waits without hearing from a leader before it stands for
    /// election: each wait is drawn between MS and 2×MS. At least 3× --heartbeat-interval;
    /// lower means a faster failover and, on a loaded machine, more needless elections.
    #[arg(long, value_name = "MS", default_value_t = 300)]
    pub election_timeout: u64,
    /// Most Events kept: beyond it the oldest go first (Events also go an hour after
    /// they were last seen). Bounds the store and its snapshots under heavy churn.
    #[arg(long, default_value_t = 10_000)]
    pub event_limit: usize,
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
    /// Largest image archive `shoalctl image import` may send (bytes, or a quantity such
    /// as 512Mi or 2Gi); a bigger one is refused as its bytes arrive.
    #[arg(long, default_value = "1Gi", value_parser = parse_size)]
    pub max_image_size: u64,
    /// Largest uncompressed size, in bytes, of the layers an image import or pull
    /// unpacks (decompression bombs and huge sparse files stop there).
    #[arg(long, default_value_t = shoal_image::limits::Limits::default().max_unpacked_bytes)]
    pub image_max_unpacked_bytes: u64,
    /// Most tar entries (files, directories, links) in the layers of one image.
    #[arg(long, default_value_t = shoal_image::limits::Limits::default().max_entries)]
    pub image_max_entries: u64,
}

/// Default port of the built-in registry.
pub const DEFAULT_REGISTRY_PORT: u16 = 7050;
/// Default port of the metrics listener (`--metrics-listen`).
pub const DEFAULT_METRICS_PORT: u16 = 7080;

impl Args {
    /// The built-in registry's address from `--registry-listen` (`None`: off).
    pub fn registry_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        match self.registry_listen.as_deref().map(str::trim) {
            None => Ok(Some(SocketAddr::new(
                self.listen.ip(),
                DEFAULT_REGISTRY_PORT,
            ))),
            Some("none") => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                anyhow::anyhow!(
                    "--registry-listen {v:?}: expected IP:PORT (e.g. 0.0.0.0:7050) or none"
                )
            }),
        }
    }

    /// The image unpacking limits from `--image-max-unpacked-bytes` and `--image-max-entries`.
    pub fn image_limits(&self) -> shoal_image::limits::Limits {
        shoal_image::limits::Limits {
            max_unpacked_bytes: self.image_max_unpacked_bytes,
            max_entries: self.image_max_entries,
            ..Default::default()
        }
    }
}

/// A size flag: bytes or a quantity (`512Mi`, `2Gi`, `1G`), more than zero.
fn parse_size(v: &str) -> Result<u64, String> {
    let q = shoal_api::quantity::Quantity::parse(v)
        .map_err(|e| format!("{v:?}: expected bytes or a quantity such as 512Mi or 2Gi ({e})"))?;
    match u64::try_from(q.as_bytes()) {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{v:?}: expected more than zero bytes")),
    }
}

/// Sets up `tracing` output on stderr from `--log` and `--log-format`; an invalid
/// filter is an error naming it.
pub fn init_tracing(args: &Args) -> Result<(), shoal_observe::ObserveError> {
    shoal_observe::init_logging(&args.log, args.log_format)
}

/// Checks a `HOST:PORT` flag value.
fn check_host_port(flag: &str, v: &str) -> anyhow::Result<()> {
    match v.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => Ok(()),
        _ => bail!("{flag} {v:?}: expected HOST:PORT, e.g. 127.0.0.1:7000"),
    }
}

/// The Raft election timeout range (MS, 2×MS) from `--heartbeat-interval` and
/// `--election-timeout`: a member must hear several heartbeats within one timeout, or a
/// single late heartbeat starts an election.
fn raft_timing(heartbeat_ms: u64, election_ms: u64) -> anyhow::Result<(u64, u64)> {
    if heartbeat_ms == 0 {
        bail!("--heartbeat-interval 0: expected a positive number of milliseconds");
    }
    if election_ms < 3 * heartbeat_ms {
        bail!(
            "--election-timeout {election_ms}: expected at least 3 × --heartbeat-interval ({} ms)",
            3 * heartbeat_ms
        );
    }
    Ok((election_ms, 2 * election_ms))
}

/// Prepares an empty data dir from a backup file (`--restore`); refuses a damaged file or a
/// non-empty data dir before writing anything.
pub fn restore_from(
    file: &std::path::Path,
    cfg: &StoreConfig,
    key_file: &std::path::Path,
) -> anyhow::Result<(u64, Option<shoal_pki::Ca>, bool)> {
    let data = std::fs::read(file)
        .with_context(|| format!("while reading the snapshot {}", file.display()))?;
    let backup = shoal_store::Backup::decode(&data)
        .with_context(|| format!("while checking the snapshot {}", file.display()))?;
    // Checked before anything is written, so that the operator can retry with the key.
    let has_sealed = encryption::backup_has_sealed(&backup.objects);
    if has_sealed && !key_file.exists() {
        bail!(
            "{}: missing; the backup {} holds encrypted Secrets: copy the encryption key file of the cluster it came from outside the new data directory and pass it with --encryption-key-file (see docs/security.md)",
            key_file.display(),
            file.display()
        );
    }
    Store::restore(cfg, &backup).with_context(|| {
        format!(
            "while restoring {} into {}",
            file.display(),
            cfg.data_dir.display()
        )
    })?;
    info!(
        file = %file.display(),
        revision = backup.revision,
        objects = backup.objects.len(),
        "restored a new one-member cluster from a snapshot"
    );
    Ok((backup.revision, pki::ca_of_backup(&backup), has_sealed))
}

/// Runs the controller until SIGTERM or SIGINT.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let registry_listen = args.registry_addr()?;
    let net = network::NetConfig::parse(
        &args.cluster_cidr,
        args.node_cidr_prefix,
        &args.service_cidr,
    )?;
    let advertise = args
        .advertise
        .clone()
        .unwrap_or_else(|| args.listen.to_string());
    if args.id == 0 {
        bail!("--id 0: the id must be a positive integer");
    }
    check_host_port("--advertise", &advertise)?;
    let election_timeout = raft_timing(args.heartbeat_interval, args.election_timeout)?;
    if let Some(j) = &args.join {
        check_host_port("--join", j)?;
    }
    let mut cfg = StoreConfig::new(args.id, args.data_dir.clone(), advertise.clone());
    let mut restore_ca = None;
    let mut key_source = if args.join.is_some() {
        encryption::KeySource::Existing
    } else {
        encryption::KeySource::New
    };
    let default_key_file = args.data_dir.join("pki").join("encryption.key");
    let mut key_file = args
        .encryption_key_file
        .clone()
        .unwrap_or_else(|| default_key_file.clone());
    if let Some(file) = &args.restore {
        let (_, ca, has_sealed) = restore_from(file, &cfg, &key_file)?;
        restore_ca = ca;
        key_source = encryption::KeySource::Restore { has_sealed };
        // The key given for the restore is kept in the new data directory, so that later
        // starts need no flag.
        if key_file != default_key_file
            && let Some(c) = encryption::SecretCipher::load(&key_file)?
        {
            encryption::SecretCipher::new(&c.key_bytes(), &default_key_file)?.save()?;
            key_file = default_key_file.clone();
        }
    }
    // 0700, tightened if an older version made it wider (docs/security.md).
    shoal_files::private_dir(&args.data_dir)
        .with_context(|| format!("while creating data directory {}", args.data_dir.display()))?;
    let tls = pki::prepare(&pki::PkiOptions {
        id: args.id,
        data_dir: args.data_dir.clone(),
        advertise: advertise.clone(),
        listen: args.listen,
        tls_san: args.tls_san.clone(),
        join: args.join.clone(),
        join_token: args.join_token.clone(),
        ca_hash: args.ca_hash.clone(),
        restore_ca,
        cert_lifetime: args.cert_lifetime,
        encryption_key_file: key_file.clone(),
    })
    .await
    .context("while setting up this controller's certificate")?;
    let cipher = std::sync::Arc::new(
        encryption::load_or_create(&key_file, key_source)
            .context("while loading the encryption key for Secrets")?,
    );
    cfg.codec = Some(cipher.clone());
    cfg.peer_tls = Some(tls.peer_client()?);
    cfg.snapshot_every = args.snapshot_every;
    cfg.heartbeat_ms = args.heartbeat_interval;
    cfg.election_timeout_ms = election_timeout;
    cfg.keep_logs_after_snapshot = args.snapshot_every.min(cfg.keep_logs_after_snapshot) / 2;
    let store = Store::open(cfg)
        .await
        .with_context(|| format!("while opening the store in {}", args.data_dir.display()))?;

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("while binding {}", args.listen))?;
    let registry_listener = match registry_listen {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!(
                "while binding the built-in registry's --registry-listen {addr} (another process has the port? pick another, or none to turn the registry off)"
            )
        })?),
        None => None,
    };
    let metrics_listener = args.metrics_listen.bind("--metrics-listen").await?;
    let mut registry = shoal_observe::new_registry();
    let grpc_metrics = shoal_observe::grpc::GrpcMetrics::register(&mut registry);
    metrics::register(&mut registry);
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
        api::ServeConfig {
            data_dir: args.data_dir.clone(),
            image_limits: args.image_limits(),
            net,
            max_image_size: args.max_image_size,
            tls: tls.clone(),
            cipher: cipher.clone(),
            admission: {
                let a =
                    authz::AdmissionConfig::new(args.listen.port(), args.allow_host_path.clone());
                let a = match args.metrics_listen.port() {
                    Some(p) => a.with_metrics_port(p),
                    None => a,
                };
                match registry_listen {
                    Some(r) => a.with_registry_port(r.port()),
                    None => a,
                }
            },
            grpc_metrics,
        },
        listener,
        registry_listener,
        async {
            let _ = stop_rx.await;
        },
    ));
    let pki_tasks = [
        tokio::spawn(pki::publish_ca(store.clone(), tls.clone())),
        tokio::spawn(pki::rotate(store.clone(), tls.clone())),
        tokio::spawn(metrics::follow_raft(store.clone())),
        tokio::spawn(metrics::count_objects(
            store.clone(),
            std::time::Duration::from_secs(10),
        )),
        tokio::spawn({
            let ready = metrics::readiness(store.clone());
            let registry = std::sync::Arc::new(registry);
            async move {
                if let Some(l) = metrics_listener {
                    shoal_observe::serve(l, registry, ready, std::future::pending()).await;
                }
            }
        }),
    ];

    // One membership model: an empty data dir without --join starts a new one-member
    // cluster; with --join it waits to be added; a data dir that holds a member rejoins with
    // its stored membership either way.
    let boot = {
        let store = store.clone();
        let join = args.join.clone();
        let (id, addr) = (args.id, advertise.clone());
        tokio::spawn(async move {
            let res = match join {
                Some(existing) => {
                    if !store.is_initialized().await.unwrap_or(true) {
                        info!(
                            "waiting to be added: run `shoalctl --server {existing} cluster add-member {id}={addr}` as an admin"
                        );
                    }
                    store.join().await
                }
                None => store.bootstrap().await,
            };
            match res {
                Ok(()) => info!("member of the cluster"),
                Err(e) => tracing::error!("joining the cluster failed: {e}"),
            }
        })
    };

    let reconcilers = reconcile::spawn(
        store.clone(),
        reconcile::ReconcileConfig {
            node_timeout: std::time::Duration::from_secs_f64(args.node_timeout),
            eviction_delay: std::time::Duration::from_secs_f64(args.eviction_delay),
            event_limit: args.event_limit,
            net,
        },
    );

    shutdown_signal().await;
    reconcilers.abort();
    for t in &pki_tasks {
        t.abort();
    }
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
    fn raft_timing_needs_several_heartbeats_per_election_timeout() {
        assert_eq!(raft_timing(100, 300).unwrap(), (300, 600));
        assert_eq!(raft_timing(50, 150).unwrap(), (150, 300));
        let e = raft_timing(100, 250).unwrap_err().to_string();
        assert!(
            e.contains("--election-timeout 250") && e.contains("300 ms"),
            "{e}"
        );
        assert!(
            raft_timing(0, 300)
                .unwrap_err()
                .to_string()
                .contains("--heartbeat-interval 0")
        );
    }

    #[test]
    fn host_port_flags_are_checked() {
        assert!(check_host_port("--join", "127.0.0.1:7001").is_ok());
        assert!(check_host_port("--join", "c1.local:7000").is_ok());
        for bad in ["127.0.0.1", ":7000", "a:b", "a:70000"] {
            let e = check_host_port("--join", bad).unwrap_err().to_string();
            assert!(e.contains("--join") && e.contains("HOST:PORT"), "{e}");
        }
    }
}

#[cfg(test)]
mod observe_flag_tests {
    use super::*;

    #[test]
    fn metrics_and_log_flags_from_the_command_line_and_the_config_file() {
        let a = Args::try_parse_from(["shoal-controller"]).unwrap();
        assert_eq!(
            a.metrics_listen,
            shoal_observe::Listen::On(SocketAddr::from(([127, 0, 0, 1], DEFAULT_METRICS_PORT)))
        );
        assert_eq!(a.log_format, shoal_observe::LogFormat::Text);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.yaml");
        std::fs::write(&f, "metrics-listen: none\nlog-format: json\n").unwrap();
        let a: Args =
            shoal_flags::try_parse_from(["shoal-controller", "--config", f.to_str().unwrap()])
                .unwrap();
        assert_eq!(a.metrics_listen, shoal_observe::Listen::Off);
        assert_eq!(a.log_format, shoal_observe::LogFormat::Json);
        std::fs::write(&f, "metrics-listen: 7080\n").unwrap();
        let e = shoal_flags::try_parse_from::<Args, _, _>([
            "shoal-controller",
            "--config",
            f.to_str().unwrap(),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("metrics-listen") && e.contains("none"), "{e}");
    }

    #[test]
    fn an_invalid_log_filter_is_an_error_naming_it() {
        let a = Args::try_parse_from(["shoal-controller", "--log", "shoal_store=loud"]).unwrap();
        let e = init_tracing(&a).unwrap_err().to_string();
        assert!(
            e.starts_with("--log \"shoal_store=loud\": invalid filter"),
            "{e}"
        );
    }

    #[test]
    fn metrics_ports_are_reserved_for_host_ports() {
        let a = authz::AdmissionConfig::new(7000, Vec::new()).with_metrics_port(9090);
        let ports: Vec<u16> = a.reserved_host_ports.iter().map(|p| p.0).collect();
        for p in [7080, 7180, 9090] {
            assert!(ports.contains(&p), "{p} in {ports:?}");
        }
    }
}

#[cfg(test)]
mod size_flag_tests {
    use super::*;

    #[test]
    fn max_image_size_accepts_bytes_and_quantities() {
        assert_eq!(parse_size("1Gi"), Ok(1 << 30));
        assert_eq!(parse_size("512Mi"), Ok(512 << 20));
        assert_eq!(parse_size("1000"), Ok(1000));
        let e = parse_size("lots").unwrap_err();
        assert!(e.contains("\"lots\"") && e.contains("512Mi"), "{e}");
        assert!(parse_size("0").is_err());
        let a = Args::try_parse_from(["shoal-controller"]).unwrap();
        assert_eq!(a.max_image_size, images::DEFAULT_MAX_IMAGE_SIZE);
    }
}
