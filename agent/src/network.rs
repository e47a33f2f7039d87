//! The pod network on this node (`--network bridge`): waits for the
//! controller to assign the node's pod CIDR, sets up the bridge, brings up
//! the WireGuard overlay, gives each pod an IP and a veth, and keeps the
//! overlay peers and routes, the service and network policy rules (nftables) and
//! the node's DNS server in step with the cluster's Nodes, Services, Endpoints,
//! Pods, NetworkPolicies and Namespaces.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use ipnet::Ipv4Net;
use shoal_api::{Endpoints, Namespace, NetworkPolicy, Node, Pod, Protocol, Service, WireguardInfo};
use shoal_net::dns::DnsTable;
use shoal_net::ipam::PodIpam;
use shoal_net::link::NodeNet;
use shoal_net::nft::{Backend, HostPortRule, NodeRules, Proto, ServiceRule};
use shoal_net::wg::{KeyPair, Overlay, Peer};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::mirror::{self, Snapshot};
use shoal_client::Client;

/// The DNS zone of the cluster.
pub const ZONE: &str = "shoal.local";
/// The node bridge.
pub const BRIDGE: &str = "shoal0";
/// The nftables table of the node.
pub const TABLE: &str = "shoal";

/// The field selector of the pods an agent mirrors for the pod network: those with an
/// address (a pod that loses it leaves the mirror as if deleted).
pub const POD_NETWORK_SELECTOR: &str = "status.podIP!=";

/// Whether pods get a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NetworkMode {
    /// Bridge, pod IPs, WireGuard overlay, services, DNS (the default).
    Bridge,
    /// Pods get a private network namespace with loopback only.
    None,
}

/// The userspace WireGuard engine (used when the kernel has no WireGuard).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WgEngine {
    /// Shoal's own batched data path (boringtun's noise crypto).
    Shoal,
    /// boringtun's device.
    Boringtun,
}

impl WgEngine {
    fn engine(self) -> shoal_net::wg::Engine {
        match self {
            WgEngine::Shoal => shoal_net::wg::Engine::Shoal,
            WgEngine::Boringtun => shoal_net::wg::Engine::Boringtun,
        }
    }
}

/// Network settings of the agent.
#[derive(Debug, Clone)]
pub struct NetSettings {
    /// Cluster (pod) CIDR; must match the controllers'.
    pub cluster_cidr: Ipv4Net,
    /// Service CIDR; must match the controllers'.
    pub service_cidr: Ipv4Net,
    /// UDP port of the WireGuard overlay.
    pub wireguard_port: u16,
    /// MTU of the overlay, bridge and pod interfaces.
    pub mtu: u32,
    /// Userspace WireGuard data path.
    pub engine: WgEngine,
    /// The node's underlay address.
    pub host_ip: Ipv4Addr,
    /// TCP endpoints pods must not reach (controllers, this agent).
    pub protected: Vec<(Ipv4Addr, u16)>,
    /// Upstream DNS resolvers (`--upstream-dns`): `None` means the nameservers of
    /// [`RESOLV_CONF`]; `Some(empty)` turns forwarding off.
    pub upstream_dns: Option<Vec<SocketAddr>>,
}

/// The node's resolver configuration, read for the default upstream DNS servers.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// The upstream DNS servers the node's DNS forwards to (pure): the flag's list, or else the
/// nameservers of the node's resolv.conf (`resolv_conf`, its text); loopback ones are kept
/// (the forwarder runs in the node's namespace, where they answer), the node's own DNS
/// (`gateway:53`) is dropped so that it never forwards to itself.
pub fn upstream_dns(
    flag: Option<&[SocketAddr]>,
    resolv_conf: &str,
    gateway: Ipv4Addr,
) -> Vec<SocketAddr> {
    let own = SocketAddr::new(IpAddr::V4(gateway), 53);
    let mut out: Vec<SocketAddr> = match flag {
        Some(list) => list.to_vec(),
        None => shoal_net::dns::forward::nameservers(resolv_conf),
    };
    out.retain(|a| *a != own);
    let mut seen = BTreeSet::new();
    out.retain(|a| seen.insert(*a));
    out
}

/// `DATA/network`: WireGuard key, pod IP records.
pub fn state_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("network")
}

/// Loads (or makes) the node's WireGuard key pair and the Node status entry for it.
pub fn identity(data_dir: &Path, s: &NetSettings) -> anyhow::Result<(KeyPair, WireguardInfo)> {
    let dir = state_dir(data_dir);
    shoal_files::private_dir(&dir).with_context(|| format!("while creating {}", dir.display()))?;
    let key = KeyPair::load_or_create(&dir.join("wireguard.key"))?;
    let info = WireguardInfo {
        public_key: key.public_base64(),
        endpoint: SocketAddr::new(IpAddr::V4(s.host_ip), s.wireguard_port).to_string(),
    };
    Ok((key, info))
}

/// The network of this node once its pod CIDR is known.
#[derive(Debug)]
pub struct PodNetwork {
    node: String,
    settings: NetSettings,
    net: NodeNet,
    gateway: Ipv4Addr,
    ipam: PodIpam,
    /// The WireGuard interface's name.
    iface: String,
    /// The running overlay (None once shut down); shared with blocking calls.
    overlay: Mutex<Option<Arc<Overlay>>>,
    key: KeyPair,
    dns: DnsTable,
    /// Sandboxes attached since this agent started → their host ports.
    attached: Mutex<BTreeMap<String, Vec<HostPortRule>>>,
    changed: Notify,
}

impl PodNetwork {
    /// The overlay's peers as its interface reports them (bytes, last handshake); empty
    /// once the overlay is down or when the interface cannot be read.
    pub fn overlay_peers(&self) -> Vec<shoal_net::wg::PeerState> {
        let o = lock(&self.overlay).clone();
        o.and_then(|o| o.peers().ok()).unwrap_or_default()
    }

    /// Waits for the pod CIDR, sets up the node and starts the sync task and the DNS server.
    pub async fn start(
        node: &str,
        data_dir: &Path,
        key: KeyPair,
        settings: NetSettings,
        ctl: Arc<Client>,
        sandboxes: BTreeSet<String>,
    ) -> anyhow::Result<Arc<PodNetwork>> {
        let pod_cidr = wait_pod_cidr(&ctl, node).await;
        info!(node, %pod_cidr, "pod CIDR assigned");
        let net = NodeNet {
            bridge: BRIDGE.into(),
            pod_cidr,
            cluster_cidr: settings.cluster_cidr,
            mtu: settings.mtu,
        };
        shoal_net::link::ensure_node(&net)
            .await
            .with_context(|| format!("while setting up bridge {BRIDGE} for {pod_cidr}"))?;
        let ipam = PodIpam::open(&state_dir(data_dir).join("ips"), pod_cidr)?;
        for (ip, owner) in ipam.entries() {
            if !sandboxes.contains(&owner) {
                debug!(%ip, owner, "releasing the IP of a pod that is gone");
                ipam.release(&owner)?;
            }
        }
        let iface = shoal_net::wg::iface_name(node);
        let iface_file = state_dir(data_dir).join("iface");
        shoal_files::write_atomic(&iface_file, iface.as_bytes(), shoal_files::FILE_MODE)
            .with_context(|| format!("while writing {}", iface_file.display()))?;
        let overlay = overlay_up(&iface, &key, &settings).await?;
        info!(
            iface,
            kernel = overlay.is_kernel(),
            port = settings.wireguard_port,
            "overlay up"
        );
        let gateway = shoal_net::ipam::gateway(pod_cidr);
        let me = Arc::new(PodNetwork {
            node: node.to_string(),
            settings,
            net,
            gateway,
            ipam,
            iface,
            overlay: Mutex::new(Some(Arc::new(overlay))),
            key,
            dns: DnsTable::new(),
            attached: Mutex::new(BTreeMap::new()),
            changed: Notify::new(),
        });
        let dns = me.dns.clone();
        let resolv_conf = match &me.settings.upstream_dns {
            Some(_) => String::new(),
            None => std::fs::read_to_string(RESOLV_CONF).unwrap_or_else(|e| {
                warn!("reading {RESOLV_CONF} for upstream DNS servers: {e}");
                String::new()
            }),
        };
        let upstreams = upstream_dns(me.settings.upstream_dns.as_deref(), &resolv_conf, gateway);
        let forwarder = if upstreams.is_empty() {
            warn!("no upstream DNS servers: pods resolve cluster names only (see --upstream-dns)");
            None
        } else {
            info!(?upstreams, "forwarding DNS names outside {ZONE}");
            Some(Arc::new(shoal_net::dns::Forwarder::new(upstreams)))
        };
        tokio::spawn(async move {
            let addr = SocketAddr::new(IpAddr::V4(gateway), 53);
            if let Err(e) = shoal_net::dns::serve_forwarding(addr, ZONE, dns, forwarder).await {
                warn!("dns server on {addr}: {e}");
            }
        });
        tokio::spawn(me.clone().sync(ctl));
        Ok(me)
    }

    /// Takes the overlay down (the agent is stopping): its interface and
    /// routes go, so pod traffic to other nodes is dropped until it is back.
    pub async fn shutdown(&self) {
        let ov = lock(&self.overlay).take();
        if let Some(o) = ov {
            let _ = tokio::task::spawn_blocking(move || drop(o)).await;
        }
    }

    /// The node's gateway (bridge) address, also its DNS server.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// DNS servers, search domains and options (`ndots:5`) for a pod in `namespace`
    /// under its `spec.dnsPolicy`: the node's DNS server always (it answers cluster
    /// names and forwards the rest to the node's upstreams); the cluster's search
    /// domains and options unless the policy is `Default` (resolve as the node does).
    pub fn dns_config(
        &self,
        namespace: &str,
        policy: Option<shoal_api::DnsPolicy>,
    ) -> (Vec<String>, Vec<String>, Vec<String>) {
        let servers = vec![self.gateway.to_string()];
        match policy {
            Some(shoal_api::DnsPolicy::Default) => (servers, Vec::new(), Vec::new()),
            _ => (
                servers,
                shoal_net::dns::resolv_search(namespace, ZONE),
                shoal_net::dns::resolv_options(),
            ),
        }
    }

    /// The IP of a sandbox, if it has one.
    pub fn pod_ip(&self, sandbox: &str) -> Option<Ipv4Addr> {
        self.ipam.lookup(sandbox)
    }

    /// True once `attach` succeeded for this sandbox in this agent's lifetime.
    pub fn is_attached(&self, sandbox: &str) -> bool {
        lock(&self.attached).contains_key(sandbox)
    }

    /// Gives the sandbox an IP and a veth on the bridge (idempotent).
    pub async fn attach(&self, sandbox: &str, pod: &Pod, netns: &Path) -> anyhow::Result<Ipv4Addr> {
        let ip = self.ipam.allocate(sandbox)?;
        shoal_net::link::attach_pod(&self.net, netns, sandbox, ip)
            .await
            .with_context(|| format!("while attaching pod sandbox {sandbox} ({ip})"))?;
        lock(&self.attached).insert(sandbox.to_string(), host_ports(pod, ip));
        self.changed.notify_one();
        Ok(ip)
    }

    /// Removes the sandbox's veth and frees its IP.
    pub async fn detach(&self, sandbox: &str) {
        if let Err(e) = shoal_net::link::detach_pod(sandbox).await {
            warn!("pod sandbox {sandbox}: detach: {e}");
        }
        if let Err(e) = self.ipam.release(sandbox) {
            warn!("pod sandbox {sandbox}: release IP: {e}");
        }
        lock(&self.attached).remove(sandbox);
        self.changed.notify_one();
    }

    /// Keeps peers, routes, service rules and DNS in step with the cluster.
    async fn sync(self: Arc<Self>, ctl: Arc<Client>) {
        let mut nodes = mirror::start::<Node>(ctl.clone(), "");
        let mut services = mirror::start::<Service>(ctl.clone(), "");
        let mut endpoints = mirror::start::<Endpoints>(ctl.clone(), "");
        // Only pods with an address matter here (their DNS records, network policy peers):
        // the burst of creates and binds of pending pods does not reach every agent.
        let mut pods = mirror::start::<Pod>(ctl.clone(), POD_NETWORK_SELECTOR);
        let mut policies = mirror::start::<NetworkPolicy>(ctl.clone(), "");
        let mut namespaces = mirror::start::<Namespace>(ctl, "");
        let mut applied = Applied::default();
        loop {
            let (n, s, e, p) = (
                nodes.borrow_and_update().clone(),
                services.borrow_and_update().clone(),
                endpoints.borrow_and_update().clone(),
                pods.borrow_and_update().clone(),
            );
            let (np, ns) = (
                policies.borrow_and_update().clone(),
                namespaces.borrow_and_update().clone(),
            );
            // Nothing is applied before everything was listed once: an agent
            // restarting would otherwise drop peers and services for a moment
            // (or let a pod under a policy through).
            let listed = match (n, s, e, p, np, ns) {
                (Some(n), Some(s), Some(e), Some(p), Some(np), Some(ns)) => {
                    Some((n, s, e, p, np, ns))
                }
                _ => None,
            };
            if let Some((n, s, e, p, np, ns)) = listed {
                let state = desired(&DesiredInput {
                    node: &self.node,
                    settings: &self.settings,
                    net: &self.net,
                    gateway: self.gateway,
                    nodes: &n,
                    services: &s,
                    endpoints: &e,
                    pods: &p,
                    policies: &np,
                    namespaces: &ns,
                    host_ports: lock(&self.attached).values().flatten().cloned().collect(),
                });
                if let Err(e) = self.apply(&state, &mut applied).await {
                    warn!("network sync: {e:#}");
                    applied = Applied::default();
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            tokio::select! {
                _ = nodes.changed() => {}
                _ = services.changed() => {}
                _ = endpoints.changed() => {}
                _ = pods.changed() => {}
                _ = policies.changed() => {}
                _ = namespaces.changed() => {}
                _ = self.changed.notified() => {}
                // Now and then re-apply everything: repairs a rule, route or
                // peer someone changed by hand (unchanged peers are a no-op).
                _ = tokio::time::sleep(Duration::from_secs(10)) => { applied = Applied::default(); }
            }
            // Let a burst of changes settle into one update.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn apply(&self, s: &Desired, applied: &mut Applied) -> anyhow::Result<()> {
        if applied.peers.as_ref() != Some(&s.peers) {
            let peers = s.peers.clone();
            if let Err(e) = self.with_overlay(move |o| o.set_peers(&peers)).await {
                // The device stops when its control channel fails: bring it up
                // again (same key, so peers keep accepting it) and retry once.
                warn!("overlay: {e:#}; bringing it up again");
                self.restart_overlay().await?;
                let peers = s.peers.clone();
                self.with_overlay(move |o| o.set_peers(&peers)).await?;
            }
            let iface = &self.iface;
            let remotes: Vec<Ipv4Net> =
                s.peers.iter().flat_map(|p| p.allowed_ips.clone()).collect();
            shoal_net::link::sync_overlay_routes(iface, &remotes, self.gateway)
                .await
                .with_context(|| format!("while routing {remotes:?} via {iface}"))?;
            info!(peers = s.peers.len(), "overlay peers updated");
            applied.peers = Some(s.peers.clone());
        }
        let rules = s.rules.clone();
        let prev = applied.rules.take();
        let started = std::time::Instant::now();
        let (now, kind) =
            tokio::task::spawn_blocking(move || shoal_net::nft::update(prev.as_ref(), &rules))
                .await?
                .context("while applying the service and network policy rules")?;
        if kind != shoal_net::nft::UpdateKind::None {
            crate::metrics::metrics()
                .nft_update
                .observe(started.elapsed().as_secs_f64());
            debug!(
                services = s.rules.services.len(),
                policies = s.rules.policies.len(),
                ?kind,
                "nftables rules applied"
            );
        }
        applied.rules = Some(now);
        if applied.dns.as_ref() != Some(&s.dns) {
            self.dns.replace(s.dns.clone());
            applied.dns = Some(s.dns.clone());
        }
        Ok(())
    }

    async fn restart_overlay(&self) -> anyhow::Result<()> {
        let old = lock(&self.overlay).take();
        // The old device goes first: the new one takes over its name and port.
        tokio::task::spawn_blocking(move || drop(old)).await?;
        let o = overlay_up(&self.iface, &self.key, &self.settings).await?;
        *lock(&self.overlay) = Some(Arc::new(o));
        Ok(())
    }

    async fn with_overlay<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Overlay) -> Result<T, shoal_net::wg::WgError> + Send + 'static,
    ) -> anyhow::Result<T> {
        let o = lock(&self.overlay).clone();
        let Some(o) = o else {
            anyhow::bail!("the overlay is down");
        };
        // Overlay calls block on the UAPI socket: run them off the async threads.
        Ok(tokio::task::spawn_blocking(move || f(&o)).await??)
    }
}

/// Brings up the node's WireGuard interface (blocking work, run off the async threads).
async fn overlay_up(iface: &str, key: &KeyPair, s: &NetSettings) -> anyhow::Result<Overlay> {
    let (iface, key) = (iface.to_string(), key.clone());
    let (port, mtu, engine) = (s.wireguard_port, s.mtu, s.engine.engine());
    tokio::task::spawn_blocking(move || Overlay::up_with(&iface, &key, port, mtu, engine))
        .await?
        .context("while bringing up the WireGuard overlay")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Polls the Node until the controller has set `spec.podCIDR`.
async fn wait_pod_cidr(ctl: &Client, node: &str) -> Ipv4Net {
    let mut waited = 0u32;
    loop {
        match ctl.get::<Node>("", node).await {
            Ok(Some(n)) => {
                if let Some(c) = n.spec.pod_cidr.as_deref() {
                    match c.parse::<Ipv4Net>() {
                        Ok(net) => return net,
                        Err(e) => warn!("node {node}: spec.podCIDR {c:?}: {e}"),
                    }
                }
            }
            Ok(None) => {}
            Err(e) => warn!("reading node {node}: {e}"),
        }
        waited += 1;
        if waited.is_multiple_of(50) {
            warn!("node {node}: still waiting for the controller to assign spec.podCIDR");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The host ports of a pod at `ip`.
fn host_ports(pod: &Pod, ip: Ipv4Addr) -> Vec<HostPortRule> {
    pod.spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter())
        .filter_map(|p| {
            let h = p.host_port.filter(|h| *h > 0)?;
            Some(HostPortRule {
                host_port: u16::try_from(h).ok()?,
                protocol: proto(p.protocol),
                pod_ip: ip,
                container_port: u16::try_from(p.container_port).ok()?,
            })
        })
        .collect()
}

fn proto(p: Protocol) -> Proto {
    match p {
        Protocol::Tcp => Proto::Tcp,
        Protocol::Udp => Proto::Udp,
    }
}

/// What was last applied (None: apply again).
#[derive(Debug, Default)]
struct Applied {
    peers: Option<Vec<Peer>>,
    rules: Option<shoal_net::nft::Rendered>,
    dns: Option<HashMap<String, Vec<Ipv4Addr>>>,
}

/// What the node's network should be.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// Overlay peers: every other node with a pod CIDR and a WireGuard key.
    pub peers: Vec<Peer>,
    /// The nftables rules.
    pub rules: NodeRules,
    /// DNS records.
    pub dns: HashMap<String, Vec<Ipv4Addr>>,
}

/// Inputs of [`desired`].
#[derive(Debug)]
pub struct DesiredInput<'a> {
    /// This node.
    pub node: &'a str,
    /// Settings.
    pub settings: &'a NetSettings,
    /// The node's bridge and CIDRs.
    pub net: &'a NodeNet,
    /// The node's gateway.
    pub gateway: Ipv4Addr,
    /// Every Node.
    pub nodes: &'a Snapshot<Node>,
    /// Every Service.
    pub services: &'a Snapshot<Service>,
    /// Every Endpoints.
    pub endpoints: &'a Snapshot<Endpoints>,
    /// Every Pod.
    pub pods: &'a Snapshot<Pod>,
    /// Every NetworkPolicy.
    pub policies: &'a Snapshot<NetworkPolicy>,
    /// Every Namespace (for namespace selectors).
    pub namespaces: &'a Snapshot<Namespace>,
    /// Host ports of the pods on this node.
    pub host_ports: Vec<HostPortRule>,
}

/// The node's desired network state from the cluster's objects (pure).
pub fn desired(i: &DesiredInput<'_>) -> Desired {
    let mut peers = Vec::new();
    let mut protected: BTreeSet<(Ipv4Addr, u16)> = i.settings.protected.iter().copied().collect();
    for n in i.nodes.values() {
        let st = n.status.as_ref();
        if let Some(ep) = st.and_then(|s| s.agent_endpoint.as_deref())
            && let Ok(SocketAddr::V4(a)) = ep.parse::<SocketAddr>()
        {
            protected.insert((*a.ip(), a.port()));
        }
        if n.metadata.name == i.node {
            continue;
        }
        let (Some(cidr), Some(wg)) = (
            n.spec
                .pod_cidr
                .as_deref()
                .and_then(|c| c.parse::<Ipv4Net>().ok()),
            st.and_then(|s| s.wireguard.as_ref()),
        ) else {
            continue;
        };
        // A peer may only route a block of the cluster CIDR: a Node whose podCIDR lies
        // elsewhere (forged or misconfigured) would steer host traffic into the overlay.
        if !i.settings.cluster_cidr.contains(&cidr) {
            warn!(
                "node {}: podCIDR {cidr} is outside the cluster CIDR {}; ignored as a peer",
                n.metadata.name, i.settings.cluster_cidr
            );
            continue;
        }
        let (Ok(key), Ok(endpoint)) = (
            shoal_net::wg::parse_public_key(&wg.public_key),
            wg.endpoint.parse::<SocketAddr>(),
        ) else {
            warn!("node {}: bad WireGuard key or endpoint", n.metadata.name);
            continue;
        };
        peers.push(Peer {
            public_key: key,
            endpoint,
            allowed_ips: vec![cidr],
            keepalive: Some(25),
        });
    }
    let mut services = Vec::new();
    let mut dns = HashMap::new();
    for (key, s) in i.services {
        let ns = s.metadata.namespace.as_deref().unwrap_or("default");
        if s.is_headless() {
            dns.extend(headless_records(s, i.endpoints.get(key)));
            continue;
        }
        let Some(vip) = s
            .spec
            .cluster_ip
            .as_deref()
            .and_then(|c| c.parse::<Ipv4Addr>().ok())
        else {
            continue;
        };
        dns.insert(s.dns_name(), vec![vip]);
        let ep = i.endpoints.get(key);
        for sp in &s.spec.ports {
            let (Ok(port), node_port) = (
                u16::try_from(sp.port),
                sp.node_port.and_then(|p| u16::try_from(p).ok()),
            ) else {
                continue;
            };
            let mut backends: Vec<Backend> = ep
                .into_iter()
                .flat_map(|e| e.subsets.iter())
                .flat_map(|sub| {
                    let port = sub
                        .ports
                        .iter()
                        .find(|p| p.name == sp.name && p.protocol == sp.protocol)
                        .and_then(|p| u16::try_from(p.port).ok());
                    sub.addresses.iter().filter_map(move |a| {
                        Some(Backend {
                            ip: a.ip.parse().ok()?,
                            port: port?,
                        })
                    })
                })
                .collect();
            backends.sort_by_key(|b| (b.ip, b.port));
            backends.dedup();
            let pname = sp.name.clone().unwrap_or_else(|| sp.port.to_string());
            services.push(ServiceRule {
                id: format!("{ns}/{}/{pname}", s.metadata.name),
                cluster_ip: vip,
                port,
                protocol: proto(sp.protocol),
                node_port,
                backends,
            });
        }
    }
    for p in i.pods.values() {
        let ns = p.metadata.namespace.as_deref().unwrap_or("default");
        if let Some(ip) = p
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
        {
            dns.insert(format!("{}.{ns}.pod.{ZONE}", p.metadata.name), vec![ip]);
        }
    }
    let mut host_ports = i.host_ports.clone();
    host_ports.sort_by_key(|h| (h.host_port, h.protocol == Proto::Udp, h.pod_ip));
    Desired {
        peers,
        rules: NodeRules {
            table: TABLE.into(),
            bridge: i.net.bridge.clone(),
            pod_cidr: i.net.pod_cidr,
            cluster_cidr: i.settings.cluster_cidr,
            service_cidr: i.settings.service_cidr,
            gateway: i.gateway,
            services,
            host_ports,
            protected: protected.into_iter().collect(),
            policies: crate::netpol::plan(i.node, i.policies, i.pods, i.namespaces),
        },
        dns,
    }
}

/// The DNS records of a headless service, as Kubernetes' DNS makes them: its name
/// resolves to every ready address of its endpoints, and `HOSTNAME.NAME.NAMESPACE.svc…`
/// to the ready pod with that `hostname` and `subdomain: NAME`. Without ready pods there
/// is no record.
fn headless_records(
    s: &shoal_api::Service,
    ep: Option<&shoal_api::Endpoints>,
) -> Vec<(String, Vec<Ipv4Addr>)> {
    let name = s.dns_name();
    let ready: Vec<(&shoal_api::EndpointAddress, Ipv4Addr)> = ep
        .into_iter()
        .flat_map(|e| e.subsets.iter())
        .flat_map(|sub| sub.addresses.iter())
        .filter_map(|a| Some((a, a.ip.parse().ok()?)))
        .collect();
    let mut all: Vec<Ipv4Addr> = ready.iter().map(|(_, ip)| *ip).collect();
    all.sort();
    all.dedup();
    let mut out: Vec<(String, Vec<Ipv4Addr>)> = ready
        .iter()
        .filter_map(|(a, ip)| Some((format!("{}.{name}", a.hostname.as_deref()?), vec![*ip])))
        .collect();
    if !all.is_empty() {
        out.push((name, all));
    }
    out
}

/// `--cleanup`: removes the bridge, veths, service rules and network state.
pub async fn cleanup(data_dir: &Path, cluster_cidr: Ipv4Net) -> anyhow::Result<()> {
    let net = NodeNet {
        bridge: BRIDGE.into(),
        pod_cidr: shoal_net::ipam::DEFAULT_CLUSTER_CIDR
            .parse()
            .context("default cluster CIDR")?,
        cluster_cidr,
        mtu: 1420,
    };
    shoal_net::link::teardown_node(&net)
        .await
        .context("while removing the node bridge")?;
    tokio::task::spawn_blocking(|| shoal_net::nft::remove(TABLE))
        .await?
        .context("while removing the service rules")?;
    let dir = state_dir(data_dir);
    // A userspace overlay killed with the agent leaves its UAPI socket behind.
    if let Ok(iface) = std::fs::read_to_string(dir.join("iface")) {
        let sock = Path::new("/var/run/wireguard").join(format!("{}.sock", iface.trim()));
        match std::fs::remove_file(&sock) {
            Ok(()) => debug!("removed {}", sock.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!("removing {}: {e}", sock.display()),
        }
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("while removing {}", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use serde_json::json;

    fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    fn snap<T: shoal_api::Resource>(items: Vec<T>) -> Snapshot<T> {
        items.into_iter().map(|o| (mirror::key_of(&o), o)).collect()
    }

    fn node(name: &str, cidr: &str, ip: &str, key: &str) -> Node {
        obj(json!({
            "metadata": {"name": name},
            "spec": {"podCIDR": cidr},
            "status": {
                "agentEndpoint": format!("{ip}:7100"),
                "wireguard": {"publicKey": key, "endpoint": format!("{ip}:51820")}
            }
        }))
    }

    #[test]
    fn headless_services_resolve_to_ready_pods_and_their_hostnames() {
        let svc: Service = obj(json!({
            "metadata": {"name": "web", "namespace": "ns1"},
            "spec": {"selector": {"app": "web"}, "clusterIP": "None"}
        }));
        let ep: Endpoints = obj(json!({
            "metadata": {"name": "web", "namespace": "ns1"},
            "subsets": [{"addresses": [{"ip": "10.244.1.7", "hostname": "web-1"},
                                       {"ip": "10.244.0.3", "hostname": "web-0"},
                                       {"ip": "10.244.0.4"}],
                         "notReadyAddresses": [{"ip": "10.244.0.9", "hostname": "web-2"}]}]
        }));
        let mut got = headless_records(&svc, Some(&ep));
        got.sort();
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            got,
            vec![
                (
                    "web-0.web.ns1.svc.shoal.local".to_string(),
                    vec![ip("10.244.0.3")]
                ),
                (
                    "web-1.web.ns1.svc.shoal.local".to_string(),
                    vec![ip("10.244.1.7")]
                ),
                (
                    "web.ns1.svc.shoal.local".to_string(),
                    vec![ip("10.244.0.3"), ip("10.244.0.4"), ip("10.244.1.7")]
                ),
            ]
        );
        assert!(headless_records(&svc, None).is_empty());
    }

    #[test]
    fn desired_state_from_cluster_objects() {
        let k2 = base64::engine::general_purpose::STANDARD.encode([2u8; 32]);
        let nodes = snap(vec![
            node(
                "n1",
                "10.244.0.0/24",
                "10.0.0.1",
                &base64::engine::general_purpose::STANDARD.encode([1u8; 32]),
            ),
            node("n2", "10.244.1.0/24", "10.0.0.2", &k2),
            // A forged Node claiming a block outside the cluster CIDR: never a peer.
            node("evil", "192.168.1.0/24", "10.0.0.9", &k2),
            // No pod CIDR yet: not a peer, but its agent port is still protected.
            obj(json!({"metadata": {"name": "n3"}, "status": {"agentEndpoint": "10.0.0.3:7100"}})),
        ]);
        let services = snap(vec![obj::<Service>(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "NodePort", "selector": {"app": "web"}, "clusterIP": "10.96.0.5",
                     "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080},
                               {"name": "dns", "port": 53, "protocol": "UDP"}]}
        }))]);
        let endpoints = snap(vec![obj::<Endpoints>(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "subsets": [{"addresses": [{"ip": "10.244.1.7"}, {"ip": "10.244.0.3"}],
                         "notReadyAddresses": [{"ip": "10.244.0.9"}],
                         "ports": [{"name": "http", "port": 8080}, {"name": "dns", "port": 5353, "protocol": "UDP"}]}]
        }))]);
        let pods = snap(vec![obj::<Pod>(json!({
            "metadata": {"name": "web-1", "namespace": "default"},
            "spec": {"containers": [{"name": "a", "image": "x"}]},
            "status": {"podIP": "10.244.0.3"}
        }))]);
        let settings = NetSettings {
            cluster_cidr: "10.244.0.0/16".parse().unwrap(),
            service_cidr: "10.96.0.0/16".parse().unwrap(),
            wireguard_port: 51820,
            mtu: 1420,
            engine: WgEngine::Shoal,
            host_ip: "10.0.0.1".parse().unwrap(),
            protected: vec![("10.0.0.10".parse().unwrap(), 7000)],
            upstream_dns: None,
        };
        let net = NodeNet {
            bridge: BRIDGE.into(),
            pod_cidr: "10.244.0.0/24".parse().unwrap(),
            cluster_cidr: settings.cluster_cidr,
            mtu: 1420,
        };
        let d = desired(&DesiredInput {
            node: "n1",
            settings: &settings,
            net: &net,
            gateway: "10.244.0.1".parse().unwrap(),
            nodes: &nodes,
            services: &services,
            endpoints: &endpoints,
            pods: &pods,
            policies: &Snapshot::new(),
            namespaces: &Snapshot::new(),
            host_ports: vec![],
        });
        assert_eq!(d.peers.len(), 1, "{:?}", d.peers);
        assert_eq!(d.peers[0].public_key, [2u8; 32]);
        assert_eq!(d.peers[0].endpoint, "10.0.0.2:51820".parse().unwrap());
        assert_eq!(
            d.peers[0].allowed_ips,
            vec!["10.244.1.0/24".parse().unwrap()]
        );
        let prot: BTreeSet<_> = d.rules.protected.iter().copied().collect();
        for (ip, port) in [
            ("10.0.0.10", 7000),
            ("10.0.0.1", 7100),
            ("10.0.0.2", 7100),
            ("10.0.0.3", 7100),
        ] {
            assert!(
                prot.contains(&(ip.parse().unwrap(), port)),
                "{ip}:{port} not protected"
            );
        }
        assert_eq!(d.rules.services.len(), 2);
        let http = d.rules.services.iter().find(|s| s.port == 80).unwrap();
        assert_eq!(http.node_port, Some(30080));
        assert_eq!(http.protocol, Proto::Tcp);
        let ips: Vec<_> = http
            .backends
            .iter()
            .map(|b| (b.ip.to_string(), b.port))
            .collect();
        assert_eq!(
            ips,
            vec![("10.244.0.3".into(), 8080), ("10.244.1.7".into(), 8080)],
            "ready only, sorted"
        );
        let dns = d.rules.services.iter().find(|s| s.port == 53).unwrap();
        assert_eq!((dns.protocol, dns.backends[0].port), (Proto::Udp, 5353));
        assert_eq!(
            d.dns["web.default.svc.shoal.local"],
            vec![Ipv4Addr::new(10, 96, 0, 5)]
        );
        assert_eq!(
            d.dns["web-1.default.pod.shoal.local"],
            vec![Ipv4Addr::new(10, 244, 0, 3)]
        );
    }

    #[test]
    fn upstream_dns_from_flag_or_resolv_conf() {
        let gw = Ipv4Addr::new(10, 244, 0, 1);
        let conf = "search example.com\nnameserver 127.0.0.53\nnameserver 10.244.0.1\nnameserver 192.0.2.1\nnameserver 192.0.2.1\n";
        let s = |v: &[&str]| -> Vec<SocketAddr> { v.iter().map(|a| a.parse().unwrap()).collect() };
        // Default: resolv.conf's servers in order, loopback kept, our own DNS and repeats dropped.
        assert_eq!(
            upstream_dns(None, conf, gw),
            s(&["127.0.0.53:53", "192.0.2.1:53"])
        );
        assert!(upstream_dns(None, "", gw).is_empty());
        // The flag wins over resolv.conf.
        let flag = s(&["203.0.113.53:53", "10.244.0.1:53", "10.244.0.1:5353"]);
        assert_eq!(
            upstream_dns(Some(&flag), conf, gw),
            s(&["203.0.113.53:53", "10.244.0.1:5353"])
        );
        assert!(upstream_dns(Some(&[]), conf, gw).is_empty(), "none");
    }

    #[test]
    fn host_ports_of_a_pod() {
        let p: Pod = obj(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a", "image": "x",
                "ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 53, "protocol": "UDP", "hostPort": 5353}, {"containerPort": 9}]}]}
        }));
        let hp = host_ports(&p, Ipv4Addr::new(10, 244, 0, 2));
        assert_eq!(hp.len(), 2);
        assert_eq!(
            (hp[0].host_port, hp[0].container_port, hp[0].protocol),
            (8080, 80, Proto::Tcp)
        );
        assert_eq!((hp[1].host_port, hp[1].protocol), (5353, Proto::Udp));
    }
}
