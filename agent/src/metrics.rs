//! The agent's own metrics (docs/observability.md): pods by phase, containers by state,
//! each container's memory, CPU time and restarts (the cgroups the runtime reads for
//! `Stats`/`shoalctl top`), image pulls, nftables updates and node DNS queries. The
//! metrics listener, the process and gRPC metrics are shoal-observe's.
//!
//! Pods and containers are sampled every [`SAMPLE_EVERY`] into a [`Snapshot`] that a
//! collector writes at each scrape, so a removed pod's series disappear with it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use shoal_runtime::ContainerState;

use crate::agent::Agent;

/// How often pods and containers are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// Labels with one `result`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ResultLabels {
    /// `present`, `fetched`, `stale` or `failed` (image pulls).
    pub result: String,
}

/// Labels with one `source`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct SourceLabels {
    /// `cache` (the node's mirror) or `controller` (a get: the mirror had not listed yet).
    pub source: String,
}

/// One container as sampled.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerRow {
    /// The pod's namespace (empty for a sandbox whose pod is unknown).
    pub namespace: String,
    /// The pod's name (the sandbox's name when unknown).
    pub pod: String,
    /// The container's name.
    pub container: String,
    /// cgroup memory use (`memory.current`), when running.
    pub memory_bytes: Option<u64>,
    /// cgroup CPU time (`cpu.stat` usage), when running.
    pub cpu_seconds: Option<f64>,
    /// Restarts including earlier incarnations.
    pub restarts: u32,
}

/// What one sample found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Pods bound to this node, by phase.
    pub pods: BTreeMap<String, u64>,
    /// Containers by state (`created`, `running`, `backoff`, `exited`).
    pub containers: BTreeMap<String, u64>,
    /// Every container.
    pub rows: Vec<ContainerRow>,
    /// The overlay's peers (none without a pod network).
    pub peers: Vec<PeerRow>,
}

/// One overlay peer in a sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerRow {
    /// The peer's public key (base64).
    pub peer: String,
    /// Bytes received from it.
    pub rx_bytes: u64,
    /// Bytes sent to it.
    pub tx_bytes: u64,
    /// Seconds since the last completed handshake, if there was one.
    pub handshake_age: Option<f64>,
}

/// The sample rows of the overlay's peers. Pure.
pub fn peer_rows(peers: &[shoal_net::wg::PeerState]) -> Vec<PeerRow> {
    use base64::Engine as _;
    peers
        .iter()
        .map(|p| PeerRow {
            peer: base64::engine::general_purpose::STANDARD.encode(p.public_key),
            rx_bytes: p.rx_bytes,
            tx_bytes: p.tx_bytes,
            handshake_age: p.last_handshake.map(|d| d.as_secs_f64()),
        })
        .collect()
}

/// The agent's metrics (clones share their values).
#[derive(Debug, Clone)]
pub struct AgentMetrics {
    /// `shoal_agent_image_pulls_total{result}`.
    pub image_pulls: Family<ResultLabels, Counter>,
    /// `shoal_agent_image_pull_duration_seconds`.
    pub image_pull_duration: Histogram,
    /// `shoal_agent_config_reads_total{source}`.
    pub config_reads: Family<SourceLabels, Counter>,
    /// `shoal_agent_nft_update_duration_seconds`.
    pub nft_update: Histogram,
    /// Set once the node is registered with the controllers (`/readyz`).
    pub registered: Arc<AtomicBool>,
    snapshot: Arc<Mutex<Snapshot>>,
}

/// The process's agent metrics.
pub fn metrics() -> &'static AgentMetrics {
    static M: OnceLock<AgentMetrics> = OnceLock::new();
    M.get_or_init(|| {
        let m = AgentMetrics {
            image_pulls: Family::default(),
            image_pull_duration: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            config_reads: Family::default(),
            nft_update: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            registered: Arc::new(AtomicBool::new(false)),
            snapshot: Default::default(),
        };
        // Served (at 0) before the first pull.
        for result in ["present", "fetched", "stale", "failed"] {
            m.image_pulls
                .get_or_create(&ResultLabels {
                    result: result.to_string(),
                })
                .inc_by(0);
        }
        for source in ["cache", "controller"] {
            m.config_reads
                .get_or_create(&SourceLabels {
                    source: source.to_string(),
                })
                .inc_by(0);
        }
        m
    })
}

/// Counts one read of a Secret or ConfigMap from `source`.
pub fn observe_config_read(source: &str) {
    metrics()
        .config_reads
        .get_or_create(&SourceLabels {
            source: source.to_string(),
        })
        .inc();
}

/// Registers every agent metric in `r`.
pub fn register(r: &mut Registry) {
    let m = metrics().clone();
    r.register(
        "agent_image_pulls",
        "Images the agent made sure of for a container, by result: present (already on the node), fetched (from the cluster or a registry), stale (a registry unreachable, the node's copy used), failed",
        m.image_pulls,
    );
    r.register(
        "agent_image_pull_duration_seconds",
        "Time to make sure of an image for a container (fetched ones only)",
        m.image_pull_duration,
    );
    r.register(
        "agent_config_reads",
        "Reads of the Secrets and ConfigMaps pods refer to (container starts, config volume refreshes, image pull credentials), by source: cache (the node's watch of that object) or controller (a get, while that watch had not listed yet)",
        m.config_reads,
    );
    r.register(
        "agent_nft_update_duration_seconds",
        "Time to apply the node's nftables service rules (one transaction)",
        m.nft_update,
    );
    r.register_collector(Box::new(SnapshotCollector(m.snapshot)));
}

/// The name of a container state in `shoal_agent_containers{state}`.
pub fn state_name(s: &ContainerState) -> &'static str {
    match s {
        ContainerState::Created => "created",
        ContainerState::Running { .. } => "running",
        ContainerState::BackOff { .. } => "backoff",
        ContainerState::Exited(_) => "exited",
    }
}

/// Samples `agent` into the snapshot every [`SAMPLE_EVERY`], forever.
pub async fn sample_forever(agent: Arc<Agent>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let a = agent.clone();
        if let Ok(s) = tokio::task::spawn_blocking(move || sample(&a)).await {
            *metrics().snapshot.lock().unwrap_or_else(|p| p.into_inner()) = s;
        }
    }
}

fn sample(agent: &Agent) -> Snapshot {
    let mut s = Snapshot::default();
    for p in agent.pods_now() {
        let phase = p
            .status
            .as_ref()
            .map(|st| format!("{:?}", st.phase))
            .unwrap_or_else(|| "Pending".into());
        *s.pods.entry(phase).or_default() += 1;
    }
    for c in agent.rt.list().unwrap_or_default() {
        let c = crate::plan::ObservedContainer::new(c);
        *s.containers
            .entry(state_name(&c.status.state).to_string())
            .or_default() += 1;
        let (namespace, pod) = match agent.pod_of(&c.sandbox) {
            Some(p) => (
                p.metadata.namespace.clone().unwrap_or_default(),
                p.metadata.name.clone(),
            ),
            None => (String::new(), c.sandbox.clone()),
        };
        let stats = c
            .status
            .is_running()
            .then(|| agent.rt.stats(&c.id).ok())
            .flatten();
        s.rows.push(ContainerRow {
            namespace,
            pod,
            container: c.name.clone(),
            memory_bytes: stats.as_ref().map(|st| st.memory_bytes),
            cpu_seconds: stats.as_ref().map(|st| st.cpu_usage_ns as f64 / 1e9),
            restarts: c.restart_count(),
        });
    }
    if let Some(net) = agent.pod_network() {
        s.peers = peer_rows(&net.overlay_peers());
    }
    s
}

#[derive(Debug)]
struct SnapshotCollector(Arc<Mutex<Snapshot>>);

impl Collector for SnapshotCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut e = enc.encode_descriptor(
            "agent_pods",
            "Pods bound to this node, by phase",
            None,
            MetricType::Gauge,
        )?;
        for (phase, n) in &s.pods {
            ConstGauge::new(*n as i64).encode(e.encode_family(&[("phase", phase.as_str())])?)?;
        }
        let mut e = enc.encode_descriptor(
            "agent_containers",
            "Containers on this node, by state (created, running, backoff, exited)",
            None,
            MetricType::Gauge,
        )?;
        for (state, n) in &s.containers {
            ConstGauge::new(*n as i64).encode(e.encode_family(&[("state", state.as_str())])?)?;
        }
        let labels = |r: &ContainerRow| {
            [
                ("namespace", r.namespace.clone()),
                ("pod", r.pod.clone()),
                ("container", r.container.clone()),
            ]
        };
        let mut e = enc.encode_descriptor(
            "agent_container_memory_bytes",
            "Memory of a running container (its cgroup's memory.current)",
            None,
            MetricType::Gauge,
        )?;
        for r in &s.rows {
            if let Some(m) = r.memory_bytes {
                ConstGauge::new(m as i64).encode(e.encode_family(&labels(r))?)?;
            }
        }
        let mut e = enc.encode_descriptor(
            "agent_container_cpu_seconds",
            "CPU time of a running container (its cgroup's cpu.stat usage)",
            None,
            MetricType::Counter,
        )?;
        for r in &s.rows {
            if let Some(c) = r.cpu_seconds {
                ConstCounter::new(c).encode(e.encode_family(&labels(r))?)?;
            }
        }
        let mut e = enc.encode_descriptor(
            "agent_container_restarts",
            "Restarts of a container (earlier incarnations included)",
            None,
            MetricType::Counter,
        )?;
        for r in &s.rows {
            ConstCounter::new(u64::from(r.restarts)).encode(e.encode_family(&labels(r))?)?;
        }
        let e = enc.encode_descriptor(
            "agent_overlay_peers",
            "WireGuard overlay peers of this node (the other nodes with a pod network)",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(s.peers.len() as i64).encode(e)?;
        for (name, help, dir) in [
            (
                "agent_overlay_received_bytes",
                "Bytes received from an overlay peer (decrypted WireGuard payload, by the interface's count)",
                true,
            ),
            (
                "agent_overlay_sent_bytes",
                "Bytes sent to an overlay peer (by the interface's count)",
                false,
            ),
        ] {
            let mut e = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for p in &s.peers {
                let v = if dir { p.rx_bytes } else { p.tx_bytes };
                ConstCounter::new(v).encode(e.encode_family(&[("peer", p.peer.as_str())])?)?;
            }
        }
        let mut e = enc.encode_descriptor(
            "agent_overlay_handshake_age_seconds",
            "Seconds since the last completed WireGuard handshake with a peer (absent before the first)",
            None,
            MetricType::Gauge,
        )?;
        for p in &s.peers {
            if let Some(age) = p.handshake_age {
                ConstGauge::new(age).encode(e.encode_family(&[("peer", p.peer.as_str())])?)?;
            }
        }
        let q = &shoal_net::dns::QUERIES;
        let mut e = enc.encode_descriptor(
            "agent_dns_queries",
            "Queries the node DNS answered (answered: from the cluster zone or an error; forwarded: sent upstream)",
            None,
            MetricType::Counter,
        )?;
        for (result, c) in [("answered", &q.answered), ("forwarded", &q.forwarded)] {
            ConstCounter::new(c.load(Ordering::Relaxed))
                .encode(e.encode_family(&[("result", result)])?)?;
        }
        Ok(())
    }
}

/// Records one image made sure of for a container and how long it took.
pub fn observe_pull(r: &Result<crate::pull::Pulled, crate::pull::PullError>, took: Duration) {
    let result = match r {
        Ok(crate::pull::Pulled::Present) => "present",
        Ok(crate::pull::Pulled::Fetched { .. }) => "fetched",
        Ok(crate::pull::Pulled::Stale(_)) => "stale",
        Err(_) => "failed",
    };
    let m = metrics();
    m.image_pulls
        .get_or_create(&ResultLabels {
            result: result.to_string(),
        })
        .inc();
    if result == "fetched" {
        m.image_pull_duration.observe(took.as_secs_f64());
    }
}

/// The agent's `/readyz`: registered with the controllers.
pub fn readiness() -> shoal_observe::ReadyCheck {
    let registered = metrics().registered.clone();
    shoal_observe::ready_fn(move || {
        if registered.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err("the node is not registered with the controllers yet".into())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_is_encoded() {
        let mut r = Registry::with_prefix("shoal");
        register(&mut r);
        *metrics().snapshot.lock().unwrap() = Snapshot {
            pods: [("Running".to_string(), 2)].into(),
            containers: [("running".to_string(), 3)].into(),
            rows: vec![ContainerRow {
                namespace: "default".into(),
                pod: "web".into(),
                container: "app".into(),
                memory_bytes: Some(4096),
                cpu_seconds: Some(1.5),
                restarts: 2,
            }],
            peers: peer_rows(&[shoal_net::wg::PeerState {
                public_key: [1; 32],
                endpoint: None,
                allowed_ips: Vec::new(),
                last_handshake: Some(Duration::from_secs(7)),
                rx_bytes: 100,
                tx_bytes: 200,
            }]),
        };
        let text = shoal_observe::encode(&r);
        let key = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
        for want in [
            "shoal_agent_overlay_peers 1".to_string(),
            format!("shoal_agent_overlay_received_bytes_total{{peer=\"{key}\"}} 100"),
            format!("shoal_agent_overlay_sent_bytes_total{{peer=\"{key}\"}} 200"),
            format!("shoal_agent_overlay_handshake_age_seconds{{peer=\"{key}\"}} 7"),
        ] {
            assert!(text.contains(&want), "{want} in\n{text}");
        }
        for want in [
            "shoal_agent_pods{phase=\"Running\"} 2",
            "shoal_agent_containers{state=\"running\"} 3",
            "shoal_agent_container_memory_bytes{namespace=\"default\",pod=\"web\",container=\"app\"} 4096",
            "shoal_agent_container_cpu_seconds_total{namespace=\"default\",pod=\"web\",container=\"app\"} 1.5",
            "shoal_agent_container_restarts_total{namespace=\"default\",pod=\"web\",container=\"app\"} 2",
            "# TYPE shoal_agent_dns_queries counter",
        ] {
            assert!(text.contains(want), "{want} in\n{text}");
        }
    }
}
