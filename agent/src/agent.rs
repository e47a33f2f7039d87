//! The running agent: registration and heartbeats, the pod watch (list +
//! watch with fail-over, re-list when the revision is too old), the sync
//! loop (observe → `plan` → execute per sandbox), probes, pod status and
//! Events; and `cleanup`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use shoal_api::{Pod, PodStatus};
use shoal_runtime::{Runtime, RuntimeConfig, RuntimeError};
use tokio::sync::Notify;
use tonic::Code;
use tracing::{debug, info, warn};

use crate::args::{AgentArgs, parse_labels};
use shoal_client::{Client, ClientConfig, Timeouts};

/// Deadline of the agent's unary requests to the controllers.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
use crate::events::{PodEvent, PodRef, new_event};
use crate::naming::{pod_key, sandbox_name};
use crate::network::{NetSettings, NetworkMode};
use crate::node::NodeFacts;
use crate::plan::{Action, Context, DesiredPod, Observed, ObservedContainer, is_terminal, plan};
use crate::probe::{ProbeKind, ProbeState};
use crate::status::{PULL_BACKOFF, StatusInput, pod_status, transition_events};
use crate::sysinfo::SysInfo;
use std::net::Ipv4Addr;

/// How often the sync loop runs without a watch event.
const RESYNC: Duration = Duration::from_secs(1);
/// How often the node's `Released` volumes with reclaim policy `Delete` are looked for.
const VOLUME_RECLAIM: Duration = Duration::from_secs(3);

/// How often the files of a running pod's ConfigMap/Secret volumes are brought up to date.
const CONFIG_REFRESH: Duration = Duration::from_secs(2);
/// Longest image pull back-off.
const MAX_PULL_BACKOFF: Duration = Duration::from_secs(300);
/// How long a failed pull shows `ErrImagePull` before `ImagePullBackOff`.
const PULL_ERROR_SHOWN: Duration = Duration::from_secs(2);

/// What the agent remembers about a pod it created (`DATA/agent/pods/<sandbox>.json`),
/// so that a pod deleted while the agent was away is still stopped with its
/// grace period and reported under its name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodMeta {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Uid.
    pub uid: Option<String>,
    /// Grace period in milliseconds.
    pub grace_ms: u64,
    /// The containers' preStop hooks, by container name (run before SIGTERM also when
    /// the pod object is gone).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pre_stop: BTreeMap<String, crate::probe::Check>,
}

impl PodMeta {
    fn of(pod: &Pod) -> PodMeta {
        PodMeta {
            namespace: pod
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            grace_ms: crate::spec::grace(pod).as_millis() as u64,
            pre_stop: crate::hooks::pre_stop_checks(pod),
        }
    }

    fn pod_ref(&self) -> PodRef {
        PodRef {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
        }
    }
}

#[derive(Debug, Default)]
struct SyncState {
    busy: BTreeSet<String>,
    holds: BTreeMap<(String, String), chrono::DateTime<Utc>>,
    pull_failures: BTreeMap<(String, String), u32>,
    waiting: BTreeMap<String, BTreeMap<String, (String, String)>>,
    liveness: BTreeMap<String, ProbeState>,
    readiness: BTreeMap<String, ProbeState>,
    startup: BTreeMap<String, ProbeState>,
    unhealthy: BTreeSet<String>,
    /// When each pod's config volumes were last refreshed.
    config_refreshed: BTreeMap<String, Instant>,
    /// The run (start time) of each container whose postStart hook has been started.
    post_started: BTreeMap<String, chrono::DateTime<Utc>>,
}

/// The agent of one node.
#[derive(Debug)]
pub struct Agent {
    /// Node name.
    pub name: String,
    /// Advertised `HOST:PORT`.
    pub endpoint: String,
    /// Host part of the endpoint (pods' `hostIP`).
    pub host_ip: String,
    /// The container runtime.
    pub rt: Arc<Runtime>,
    /// The controllers.
    pub ctl: Arc<Client>,
    /// `DATA/agent`.
    pub dir: PathBuf,
    /// `DATA` (`--data-dir`): local persistent volumes live in `DATA/volumes`.
    pub data_dir: PathBuf,
    /// Machine facts.
    pub sys: SysInfo,
    backoff_initial: Duration,
    /// Images: the cluster's store, then registries.
    pub(crate) puller: crate::pull::Puller,
    /// Image builds (`shoalctl build`): their runtime and cache, made on the first build.
    pub(crate) builds: crate::build::Builds,
    pods: Mutex<BTreeMap<String, Pod>>,
    /// The Secrets and ConfigMaps the pods refer to, mirrored (one watch per object).
    configs: crate::configcache::ConfigCache,
    /// Set once the pods were listed: before that an empty cache would mean
    /// "remove everything" to the plan (fatal after an agent restart).
    listed: std::sync::atomic::AtomicBool,
    state: Mutex<SyncState>,
    wake: Notify,
    /// Events written, by (pod, reason, message): a repeat raises the count of the
    /// stored Event instead of writing a new one (as Kubernetes aggregates).
    recent_events: Arc<Mutex<RecentEvents>>,
    /// The pod network (set once the node's pod CIDR is known; unset with `--network none`).
    net: std::sync::OnceLock<Arc<crate::network::PodNetwork>>,
    /// When this agent started (containers started before it do not get postStart
    /// hooks again).
    started_at: chrono::DateTime<Utc>,
}

/// Events written, by (pod, reason, message).
type RecentEvents = BTreeMap<(String, String, String), shoal_api::Event>;

/// Most events remembered for aggregation.
const MAX_RECENT_EVENTS: usize = 2048;

/// The probe states of one kind.
fn probe_map(st: &mut SyncState, kind: ProbeKind) -> &mut BTreeMap<String, ProbeState> {
    match kind {
        ProbeKind::Liveness => &mut st.liveness,
        ProbeKind::Readiness => &mut st.readiness,
        ProbeKind::Startup => &mut st.startup,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn runtime(
    data_dir: &std::path::Path,
    image_limits: shoal_runtime::image::limits::Limits,
) -> anyhow::Result<Runtime> {
    let exe = std::env::current_exe().context("while finding the agent's own executable")?;
    let mut cfg = RuntimeConfig::new(data_dir, exe);
    cfg.image_limits = image_limits;
    Runtime::new(cfg)
        .with_context(|| format!("while opening the runtime in {}", data_dir.display()))
}

/// `shoal-agent --cleanup`: stops and removes every container and pod
/// sandbox in the data directory, and the agent's own state.
pub fn cleanup(args: &AgentArgs) -> anyhow::Result<()> {
    let rt = runtime(&args.data_dir, args.image_limits())?;
    let mut n = 0;
    for c in rt.list().context("while listing containers")? {
        rt.remove(&c.id)
            .with_context(|| format!("while removing container {}", c.id))?;
        n += 1;
    }
    let mut p = 0;
    for sb in rt.list_sandboxes().context("while listing pod sandboxes")? {
        rt.remove_sandbox(&sb.name)
            .with_context(|| format!("while removing pod sandbox {}", sb.name))?;
        p += 1;
    }
    let dir = args.data_dir.join("agent");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("while removing {}", dir.display()))?;
    }
    if args.network == NetworkMode::Bridge {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("while starting a runtime for the network cleanup")?
            .block_on(crate::network::cleanup(&args.data_dir, args.cluster_cidr))?;
    }
    info!(
        containers = n,
        pods = p,
        "cleaned up {}",
        args.data_dir.display()
    );
    Ok(())
}

/// Runs the agent until SIGTERM or SIGINT (containers keep running).
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let name = args.name.clone().context("--name is required")?;
    let labels = parse_labels(&args.labels).map_err(anyhow::Error::msg)?;
    let endpoint = args.advertise();
    let tls = crate::identity::prepare(
        &args.data_dir,
        &name,
        &args.controller,
        &crate::args::host_of(&endpoint),
        args.join_token.as_deref(),
        args.ca_hash.as_deref(),
    )
    .await
    .context("while setting up the node certificate")?;
    let endpoints = shoal_client::Endpoints::parse(&args.controller).context("--controller")?;
    let config = ClientConfig::new(endpoints, tls.client()?).with_timeouts(Timeouts {
        connect: Duration::from_secs(1),
        request: REQUEST_TIMEOUT,
    });
    let ctl = Arc::new(Client::new(config));
    let rotation = tokio::spawn(tls.clone().rotate((*ctl).clone()));
    let registry = Arc::new(args.registry_client()?);
    let data_dir = args.data_dir.clone();
    let image_limits = args.image_limits();
    let rt =
        Arc::new(tokio::task::spawn_blocking(move || runtime(&data_dir, image_limits)).await??);
    let sys = SysInfo::new("/");
    let dir = args.data_dir.join("agent");
    shoal_files::private_dir(&dir)
        .and_then(|()| shoal_files::private_dir(&dir.join("pods")))
        .with_context(|| format!("while creating {}", dir.display()))?;
    let puller = crate::pull::Puller {
        ctl: ctl.clone(),
        rt: rt.clone(),
        registry,
        partial_dir: dir.join("partial"),
        order: args.image_sources.0.clone(),
    };
    let agent = Arc::new(Agent {
        host_ip: crate::args::host_of(&endpoint),
        name: name.clone(),
        endpoint: endpoint.clone(),
        puller,
        builds: crate::build::Builds::new(args.build_cache_max_bytes),
        rt,
        ctl: ctl.clone(),
        dir,
        data_dir: args.data_dir.clone(),
        sys: sys.clone(),
        backoff_initial: Duration::from_millis(args.restart_backoff_ms),
        pods: Mutex::new(BTreeMap::new()),
        configs: crate::configcache::ConfigCache::new(ctl.clone()),
        listed: std::sync::atomic::AtomicBool::new(false),
        state: Mutex::new(SyncState::default()),
        wake: Notify::new(),
        recent_events: Arc::new(Mutex::new(BTreeMap::new())),
        net: std::sync::OnceLock::new(),
        started_at: Utc::now(),
    });

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("while binding {}", args.listen))?;
    let metrics_listener = args.metrics_listen.bind("--metrics-listen").await?;
    let mut registry = shoal_observe::new_registry();
    let grpc_metrics = shoal_observe::grpc::GrpcMetrics::register(&mut registry);
    crate::metrics::register(&mut registry);
    info!(node = %name, listen = %args.listen, advertise = %endpoint, "agent serving");
    let server = tokio::spawn(crate::server::serve(
        agent.clone(),
        listener,
        tls.server()?,
        grpc_metrics,
    ));
    let observe = [
        tokio::spawn(crate::metrics::sample_forever(agent.clone())),
        tokio::spawn(async move {
            if let Some(l) = metrics_listener {
                let ready = crate::metrics::readiness();
                shoal_observe::serve(l, Arc::new(registry), ready, std::future::pending()).await;
            }
        }),
    ];

    let mut facts = NodeFacts::gather(&name, labels, &endpoint, &sys);
    let net_setup = match args.network {
        NetworkMode::None => None,
        NetworkMode::Bridge => {
            let settings = net_settings(&args, &endpoint)?;
            let (key, info) = crate::network::identity(&args.data_dir, &settings)?;
            facts.wireguard = Some(info);
            Some((key, settings))
        }
    };
    let registered = loop {
        match crate::node::register(&ctl, &facts).await {
            Ok(n) => break n,
            Err(e) => {
                warn!("registering node {name}: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    info!(node = %name, controller = ctl.address(), "node registered");
    crate::metrics::metrics()
        .registered
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let hb = {
        let (ctl, interval) = (ctl.clone(), args.heartbeat());
        // Heartbeats are not writes (see `crate::node`): the status is synced only when
        // the Node's revision is not the one this agent last saw.
        let mut seen = crate::node::revision(&registered);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match ctl.heartbeat(&facts.name).await {
                    Ok(rev) if rev == seen && rev != 0 => {}
                    Ok(_) => match crate::node::sync_status(&ctl, &facts).await {
                        Ok(n) => seen = crate::node::revision(&n),
                        Err(e) => warn!("syncing the node status: {e}"),
                    },
                    Err(e) => warn!("heartbeat: {e}"),
                }
            }
        })
    };
    if let Some((key, settings)) = net_setup {
        let sandboxes = agent
            .blocking(|rt| Ok(rt.list_sandboxes()?.into_iter().map(|s| s.name).collect()))
            .await?;
        let net = crate::network::PodNetwork::start(
            &name,
            &args.data_dir,
            key,
            settings,
            ctl.clone(),
            sandboxes,
        )
        .await?;
        let _ = agent.net.set(net);
    }
    let watch = tokio::spawn(agent.clone().watch_pods());
    let sync = tokio::spawn(agent.clone().sync_loop());
    let reclaim = {
        let (ctl, data_dir, node) = (ctl.clone(), args.data_dir.clone(), name.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(VOLUME_RECLAIM);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                crate::volumes::reclaim_pass(&ctl, &data_dir, &node).await;
            }
        })
    };

    shutdown_signal().await;
    info!("stopping (containers keep running)");
    for t in [hb, watch, sync, rotation, reclaim]
        .into_iter()
        .chain(observe)
    {
        t.abort();
    }
    if let Some(net) = agent.net.get()
        && tokio::time::timeout(Duration::from_secs(3), net.shutdown())
            .await
            .is_err()
    {
        warn!("the overlay did not close within 3 s; leaving it to process exit");
    }
    server.abort();
    Ok(())
}

/// The network settings from the flags; the advertised host must be an IPv4 address.
fn net_settings(args: &AgentArgs, endpoint: &str) -> anyhow::Result<NetSettings> {
    let host = crate::args::host_of(endpoint);
    let host_ip: Ipv4Addr = host.parse().with_context(|| {
        format!("--advertise/--listen host {host:?}: the pod network needs the node's IPv4 address")
    })?;
    let mut protected = Vec::new();
    for c in args.controller.split(',').map(str::trim) {
        if let Ok(std::net::SocketAddr::V4(a)) = c.parse::<std::net::SocketAddr>() {
            protected.push((*a.ip(), a.port()));
        }
    }
    protected.push((host_ip, args.listen.port()));
    let upstream_dns =
        crate::args::upstream_servers(&args.upstream_dns).map_err(anyhow::Error::msg)?;
    Ok(NetSettings {
        upstream_dns,
        cluster_cidr: args.cluster_cidr,
        service_cidr: args.service_cidr,
        wireguard_port: args.wireguard_port,
        mtu: args.mtu,
        engine: args.wireguard_engine,
        host_ip,
        protected,
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

impl Agent {
    fn selector(&self) -> String {
        format!("spec.nodeName={}", self.name)
    }

    fn mine(&self, p: &Pod) -> bool {
        p.spec.node_name.as_deref() == Some(self.name.as_str())
    }

    /// The node's pod network, once it is up (none with `--network none`).
    pub fn pod_network(&self) -> Option<&Arc<crate::network::PodNetwork>> {
        self.net.get()
    }

    /// Every pod bound to this node, as last watched.
    pub fn pods_now(&self) -> Vec<Pod> {
        lock(&self.pods).values().cloned().collect()
    }

    /// The pod (as last seen) of a sandbox.
    pub fn pod_of(&self, sandbox: &str) -> Option<Pod> {
        lock(&self.pods).get(sandbox).cloned()
    }

    /// The sandbox of pod `namespace/name`: from the watched pods, else from
    /// the agent's records of pods it made.
    pub fn find_sandbox(&self, namespace: &str, name: &str) -> Option<(String, Option<Pod>)> {
        let ns = if namespace.is_empty() {
            "default"
        } else {
            namespace
        };
        if let Some((sb, p)) = lock(&self.pods)
            .iter()
            .find(|(_, p)| pod_key(p) == format!("{ns}/{name}"))
        {
            return Some((sb.clone(), Some(p.clone())));
        }
        let rd = std::fs::read_dir(self.dir.join("pods")).ok()?;
        for e in rd.flatten() {
            if let Ok(data) = std::fs::read(e.path())
                && let Ok(m) = serde_json::from_slice::<PodMeta>(&data)
                && m.namespace == ns
                && m.name == name
            {
                let sb = e.path().file_stem()?.to_string_lossy().into_owned();
                return Some((sb, None));
            }
        }
        None
    }

    fn meta_path(&self, sandbox: &str) -> PathBuf {
        self.dir.join("pods").join(format!("{sandbox}.json"))
    }

    fn read_meta(&self, sandbox: &str) -> Option<PodMeta> {
        let data = std::fs::read(self.meta_path(sandbox)).ok()?;
        serde_json::from_slice(&data).ok()
    }

    /// List + watch of the pods bound to this node, for ever (through a
    /// [`crate::mirror`] with this node's field selector).
    async fn watch_pods(self: Arc<Self>) {
        let mut rx = crate::mirror::start::<Pod>(self.ctl.clone(), &self.selector());
        while rx.changed().await.is_ok() {
            let Some(snap) = rx.borrow_and_update().clone() else {
                continue;
            };
            let fresh: BTreeMap<String, Pod> = snap
                .values()
                .filter(|p| self.mine(p))
                .map(|p| (sandbox_name(p), p.clone()))
                .collect();
            self.configs.sync(fresh.values());
            *lock(&self.pods) = fresh;
            self.listed.store(true, std::sync::atomic::Ordering::SeqCst);
            self.wake.notify_one();
        }
    }

    async fn observe(&self) -> Result<Observed, RuntimeError> {
        let rt = self.rt.clone();
        tokio::task::spawn_blocking(move || {
            let sandboxes = rt.list_sandboxes()?.into_iter().map(|s| s.name).collect();
            let containers = rt.list()?.into_iter().map(ObservedContainer::new).collect();
            Ok(Observed {
                sandboxes,
                containers,
            })
        })
        .await
        .unwrap_or_else(|e| {
            Err(RuntimeError::Io {
                what: "observe the runtime".into(),
                source: std::io::Error::other(e),
            })
        })
    }

    async fn sync_loop(self: Arc<Self>) {
        loop {
            if let Err(e) = self.clone().sync_once().await {
                warn!("sync: {e}");
            }
            tokio::select! {
                _ = self.wake.notified() => tokio::time::sleep(Duration::from_millis(20)).await,
                _ = tokio::time::sleep(RESYNC) => {}
            }
        }
    }

    /// One pass: plan and start the actions, run due probes, write statuses.
    async fn sync_once(self: Arc<Self>) -> Result<(), RuntimeError> {
        if !self.listed.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        let observed = self.observe().await?;
        let desired: Vec<DesiredPod> = lock(&self.pods)
            .iter()
            .map(|(sb, p)| DesiredPod {
                sandbox: sb.clone(),
                pod: p.clone(),
            })
            .collect();
        let ctx = {
            let st = lock(&self.state);
            Context {
                busy: st.busy.clone(),
                holds: st.holds.clone(),
                unhealthy: st.unhealthy.clone(),
            }
        };
        let actions = plan(&desired, &observed, &ctx, Utc::now());
        let mut groups: BTreeMap<String, Vec<Action>> = BTreeMap::new();
        for a in actions {
            groups.entry(a.sandbox().to_string()).or_default().push(a);
        }
        if let Some(net) = self.net.get() {
            for d in &desired {
                if observed.sandboxes.contains(&d.sandbox)
                    && !groups.contains_key(&d.sandbox)
                    && !net.is_attached(&d.sandbox)
                    && lock(&self.state).busy.insert(d.sandbox.clone())
                {
                    let (me, d) = (self.clone(), d.clone());
                    tokio::spawn(async move {
                        me.attach(&d.sandbox, &d.pod).await;
                        lock(&me.state).busy.remove(&d.sandbox);
                        me.wake.notify_one();
                    });
                }
            }
        }
        for (sb, acts) in groups {
            lock(&self.state).busy.insert(sb.clone());
            let me = self.clone();
            tokio::spawn(async move {
                for a in acts {
                    me.execute(a).await;
                }
                lock(&me.state).busy.remove(&sb);
                me.wake.notify_one();
            });
        }
        self.run_probes(&desired, &observed);
        self.run_post_start(&desired, &observed);
        self.refresh_config_volumes(&desired, &observed);
        for d in &desired {
            self.write_status(d, &observed).await;
        }
        Ok(())
    }

    fn event(&self, pod: PodRef, ev: PodEvent) {
        let now = Utc::now();
        let key = (
            format!(
                "{}/{}/{}",
                pod.namespace,
                pod.name,
                pod.uid.clone().unwrap_or_default()
            ),
            ev.reason.clone(),
            ev.message.clone(),
        );
        let fresh = new_event(&pod, &ev, &self.name, now);
        let (ctl, recent) = (self.ctl.clone(), self.recent_events.clone());
        tokio::spawn(async move {
            let known = lock(&recent).get(&key).cloned();
            let written = match known {
                Some(mut e)
                    if e.last_timestamp
                        .is_some_and(|t| now - t < chrono::TimeDelta::minutes(30)) =>
                {
                    e.count += 1;
                    e.last_timestamp = Some(now);
                    match ctl.update(&e).await {
                        Ok(w) => Ok(w),
                        // Gone (garbage-collected) or changed: start a new one.
                        Err(_) => ctl.create(&fresh).await,
                    }
                }
                _ => ctl.create(&fresh).await,
            };
            match written {
                Ok(w) => {
                    let mut r = lock(&recent);
                    if r.len() >= MAX_RECENT_EVENTS {
                        r.clear();
                    }
                    r.insert(key, w);
                }
                Err(err) => debug!("event {} {}: {err}", fresh.reason, fresh.metadata.name),
            }
        });
    }

    fn pod_event(&self, pod: &Pod, ev: PodEvent) {
        self.event(PodMeta::of(pod).pod_ref(), ev);
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Runtime) -> Result<T, RuntimeError> + Send + 'static,
    ) -> Result<T, RuntimeError> {
        let rt = self.rt.clone();
        tokio::task::spawn_blocking(move || f(&rt))
            .await
            .unwrap_or_else(|e| {
                Err(RuntimeError::Io {
                    what: "runtime task".into(),
                    source: std::io::Error::other(e),
                })
            })
    }

    async fn execute(self: &Arc<Self>, a: Action) {
        debug!(?a, "executing");
        match a {
            Action::CreateSandbox { sandbox } => {
                let Some(pod) = self.pod_of(&sandbox) else {
                    return;
                };
                if let Ok(data) = serde_json::to_vec(&PodMeta::of(&pod)) {
                    let path = self.meta_path(&sandbox);
                    if let Err(e) = shoal_files::write_atomic(&path, &data, shoal_files::FILE_MODE)
                    {
                        warn!("{e}");
                    }
                }
                let mut cfg = crate::spec::sandbox_config(&pod, &sandbox);
                if let Some(net) = self.net.get() {
                    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
                    (cfg.dns_servers, cfg.dns_search, cfg.dns_options) =
                        net.dns_config(ns, pod.spec.dns_policy);
                }
                match self.blocking(move |rt| rt.create_sandbox(&cfg)).await {
                    Ok(_) | Err(RuntimeError::AlreadyExists { .. }) => {
                        self.attach(&sandbox, &pod).await;
                    }
                    Err(e) => {
                        warn!("pod {}: create sandbox: {e}", pod_key(&pod));
                        self.pod_event(
                            &pod,
                            PodEvent::warning("FailedCreatePodSandBox", e.to_string()),
                        );
                    }
                }
            }
            Action::StartContainer {
                sandbox,
                container,
                id,
            } => {
                self.start(&sandbox, &container, &id).await;
            }
            Action::RecreateContainer {
                sandbox,
                container,
                old_id,
                new_id,
                reason,
            } => {
                let Some(pod) = self.pod_of(&sandbox) else {
                    return;
                };
                self.pod_event(
                    &pod,
                    PodEvent::normal(
                        "Killing",
                        format!("Stopping container {container}: {reason}"),
                    ),
                );
                let grace = crate::spec::grace(&pod);
                let hook = crate::hooks::pre_stop_checks(&pod).remove(&container);
                let old = old_id.clone();
                let stopped = self
                    .stop_container(&sandbox, &old_id, grace, hook, &PodMeta::of(&pod))
                    .await;
                if let Err(e) = match stopped {
                    Ok(_) => self.blocking(move |rt| rt.remove(&old)).await,
                    Err(e) => Err(e),
                } {
                    warn!("container {old_id}: {e}");
                }
                {
                    let mut st = lock(&self.state);
                    st.unhealthy.remove(&old_id);
                    st.liveness.remove(&old_id);
                    st.readiness.remove(&old_id);
                    st.startup.remove(&old_id);
                }
                self.start(&sandbox, &container, &new_id).await;
            }
            Action::StopContainer { sandbox, id } => {
                let pod = self.pod_of(&sandbox);
                let grace = pod.as_ref().map(crate::spec::grace).unwrap_or_default();
                let meta = pod
                    .as_ref()
                    .map(PodMeta::of)
                    .or_else(|| self.read_meta(&sandbox));
                if let Some(p) = &pod {
                    self.pod_event(
                        p,
                        PodEvent::normal("Killing", format!("Stopping container {id}")),
                    );
                }
                let i = id.clone();
                let name = self
                    .blocking(move |rt| rt.status(&i))
                    .await
                    .map(|s| s.name)
                    .unwrap_or_default();
                let result = match meta {
                    Some(m) => {
                        let hook = m.pre_stop.get(&name).cloned();
                        self.stop_container(&sandbox, &id, grace, hook, &m).await
                    }
                    None => {
                        let i = id.clone();
                        self.blocking(move |rt| rt.stop(&i, grace)).await
                    }
                };
                if let Err(e) = result {
                    warn!("stop {id}: {e}");
                }
            }
            Action::RemoveContainer { id, .. } => {
                let i = id.clone();
                if let Err(e) = self.blocking(move |rt| rt.remove(&i)).await {
                    warn!("remove {id}: {e}");
                }
            }
            Action::RemovePod { sandbox } => self.remove_pod(&sandbox).await,
        }
    }

    async fn remove_pod(self: &Arc<Self>, sandbox: &str) {
        let meta = self.read_meta(sandbox);
        let grace = Duration::from_millis(meta.as_ref().map_or(0, |m| m.grace_ms));
        let sb = sandbox.to_string();
        let containers = self
            .blocking(move |rt| {
                Ok(rt
                    .list()?
                    .into_iter()
                    .filter(|c| c.pod == sb)
                    .collect::<Vec<_>>())
            })
            .await
            .unwrap_or_default();
        let mut stops = Vec::new();
        for c in containers {
            match &meta {
                Some(m) if c.is_running() => {
                    self.event(
                        m.pod_ref(),
                        PodEvent::normal("Killing", format!("Stopping container {}", c.name)),
                    );
                    let (me, m, sb) = (self.clone(), m.clone(), sandbox.to_string());
                    let hook = m.pre_stop.get(&c.name).cloned();
                    stops.push(tokio::spawn(async move {
                        me.stop_container(&sb, &c.id, grace, hook, &m).await
                    }));
                }
                _ => {
                    let rt = self.rt.clone();
                    stops.push(tokio::task::spawn_blocking(move || rt.stop(&c.id, grace)));
                }
            }
        }
        for s in stops {
            if let Ok(Err(e)) = s.await {
                warn!("pod sandbox {sandbox}: stop: {e}");
            }
        }
        let sb = sandbox.to_string();
        match self.blocking(move |rt| rt.remove_sandbox(&sb)).await {
            Ok(()) | Err(RuntimeError::NotFound { .. }) => {
                if let Some(net) = self.net.get() {
                    net.detach(sandbox).await;
                }
                let _ = std::fs::remove_file(self.meta_path(sandbox));
                let vols = self.volumes_dir(sandbox);
                if let Err(e) = std::fs::remove_dir_all(&vols)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    warn!("pod sandbox {sandbox}: removing {}: {e}", vols.display());
                }
                info!("pod sandbox {sandbox} removed");
            }
            Err(e) => warn!("pod sandbox {sandbox}: remove: {e}"),
        }
        let mut st = lock(&self.state);
        st.waiting.remove(sandbox);
        st.config_refreshed.remove(sandbox);
        st.holds.retain(|(s, _), _| s != sandbox);
        st.pull_failures.retain(|(s, _), _| s != sandbox);
        let prefix = format!("{sandbox}-");
        st.liveness.retain(|id, _| !id.starts_with(&prefix));
        st.readiness.retain(|id, _| !id.starts_with(&prefix));
        st.startup.retain(|id, _| !id.starts_with(&prefix));
    }

    /// Stops container `id` of `sandbox`: its preStop `hook` first (if it runs), within
    /// `grace`, then SIGTERM and SIGKILL after what is left of the grace period
    /// ([`crate::hooks::grace_after_hook`]). A failed hook is reported as an event of
    /// the pod `meta`, and the container is stopped anyway.
    async fn stop_container(
        self: &Arc<Self>,
        sandbox: &str,
        id: &str,
        grace: Duration,
        hook: Option<crate::probe::Check>,
        meta: &PodMeta,
    ) -> Result<shoal_runtime::ContainerStatus, RuntimeError> {
        let mut grace_left = grace;
        if let Some(check) = hook {
            let (sb, i) = (sandbox.to_string(), id.to_string());
            let started = Instant::now();
            let res = self
                .blocking(move |rt| {
                    if !rt.status(&i)?.is_running() {
                        return Ok(Ok(()));
                    }
                    let netns = rt.sandbox(&sb)?.netns_path;
                    Ok(check.run(rt, &i, &netns, grace))
                })
                .await;
            grace_left = crate::hooks::grace_after_hook(grace, started.elapsed());
            let failed = match res {
                Ok(Ok(())) => None,
                Ok(Err(msg)) => Some(msg),
                Err(e) => Some(e.to_string()),
            };
            if let Some(msg) = failed {
                warn!("container {id}: preStop hook failed: {msg}");
                self.event(
                    meta.pod_ref(),
                    PodEvent::warning(
                        crate::hooks::FAILED_PRE_STOP,
                        format!("PreStopHook failed: {msg}"),
                    ),
                );
            }
        }
        let i = id.to_string();
        self.blocking(move |rt| rt.stop(&i, grace_left)).await
    }

    /// Starts the postStart hook of every container run that has one and has not had
    /// it ([`crate::hooks::post_start_due`]). A failure is an event and kills the
    /// container's process (its supervisor restarts it by the pod's restart policy).
    fn run_post_start(self: &Arc<Self>, desired: &[DesiredPod], observed: &Observed) {
        let mut runs = BTreeSet::new();
        for d in desired.iter().filter(|d| !is_terminal(&d.pod)) {
            for c in &d.pod.spec.containers {
                let Some(o) = observed.latest(&d.sandbox, &c.name) else {
                    continue;
                };
                let shoal_runtime::ContainerState::Running { pid, started_at } = o.status.state
                else {
                    continue;
                };
                runs.insert(o.id.clone());
                let Some(check) = crate::hooks::post_start_check(c) else {
                    continue;
                };
                {
                    let mut st = lock(&self.state);
                    if !crate::hooks::post_start_due(
                        started_at,
                        self.started_at,
                        st.post_started.get(&o.id),
                    ) {
                        continue;
                    }
                    st.post_started.insert(o.id.clone(), started_at);
                }
                let (me, id, sb, pod) =
                    (self.clone(), o.id.clone(), d.sandbox.clone(), d.pod.clone());
                let grace = crate::spec::grace(&d.pod).max(crate::hooks::MIN_GRACE_AFTER_HOOK);
                let name = c.name.clone();
                tokio::spawn(async move {
                    let res = match check {
                        Ok(check) => me
                            .blocking(move |rt| {
                                let netns = rt.sandbox(&sb)?.netns_path;
                                Ok(check.run(rt, &id, &netns, grace))
                            })
                            .await
                            .unwrap_or_else(|e| Err(e.to_string())),
                        Err(e) => Err(e),
                    };
                    if let Err(msg) = res {
                        warn!(
                            "pod {}: container {name}: postStart hook failed: {msg}",
                            pod_key(&pod)
                        );
                        me.pod_event(
                            &pod,
                            PodEvent::warning(
                                crate::hooks::FAILED_POST_START,
                                format!("PostStartHook failed: {msg}"),
                            ),
                        );
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                        me.wake.notify_one();
                    }
                });
            }
        }
        lock(&self.state)
            .post_started
            .retain(|id, _| runs.contains(id));
    }

    /// Connects a sandbox to the pod network; on failure removes the sandbox
    /// (the next pass makes it again) and reports why.
    async fn attach(self: &Arc<Self>, sandbox: &str, pod: &Pod) {
        let Some(net) = self.net.get() else {
            return;
        };
        let sb = sandbox.to_string();
        let netns = match self.blocking(move |rt| rt.sandbox(&sb)).await {
            Ok(s) => s.netns_path,
            Err(e) => {
                warn!("pod {}: sandbox: {e}", pod_key(pod));
                return;
            }
        };
        match net.attach(sandbox, pod, &netns).await {
            Ok(ip) => debug!("pod {}: {ip}", pod_key(pod)),
            Err(e) => {
                warn!("pod {}: network: {e:#}", pod_key(pod));
                self.pod_event(
                    pod,
                    PodEvent::warning("FailedCreatePodSandBox", format!("pod network: {e:#}")),
                );
                let sb = sandbox.to_string();
                if let Err(e) = self.blocking(move |rt| rt.remove_sandbox(&sb)).await {
                    warn!("pod {}: remove sandbox: {e}", pod_key(pod));
                }
            }
        }
    }

    fn set_waiting(&self, sandbox: &str, container: &str, reason: &str, message: &str) {
        lock(&self.state)
            .waiting
            .entry(sandbox.to_string())
            .or_default()
            .insert(
                container.to_string(),
                (reason.to_string(), message.to_string()),
            );
    }

    fn hold(&self, sandbox: &str, container: &str) -> Duration {
        let mut st = lock(&self.state);
        let key = (sandbox.to_string(), container.to_string());
        let n = st.pull_failures.entry(key.clone()).or_insert(0);
        *n += 1;
        let delay = self
            .backoff_initial
            .saturating_mul(1 << (*n - 1).min(16))
            .min(MAX_PULL_BACKOFF);
        st.holds.insert(key, Utc::now() + delay);
        delay
    }

    async fn start(self: &Arc<Self>, sandbox: &str, container: &str, id: &str) {
        let Some(pod) = self.pod_of(sandbox) else {
            return;
        };
        let Some(c) = pod
            .spec
            .containers
            .iter()
            .chain(&pod.spec.init_containers)
            .find(|c| c.name == container)
            .cloned()
        else {
            return;
        };
        let keyring = self.pull_keyring(&pod).await;
        let started = std::time::Instant::now();
        let pulled = self
            .puller
            .ensure_image(&c.image, c.pull_policy(), &keyring)
            .await;
        crate::metrics::observe_pull(&pulled, started.elapsed());
        match pulled {
            Ok(crate::pull::Pulled::Fetched { from, digest }) => self.pod_event(
                &pod,
                PodEvent::normal(
                    "Pulled",
                    format!(
                        "Successfully pulled image {:?} ({digest}) from {from}",
                        c.image
                    ),
                ),
            ),
            Ok(crate::pull::Pulled::Stale(why)) => {
                warn!("pod {}: {why}; running the node's copy", pod_key(&pod));
                self.pod_event(
                    &pod,
                    PodEvent::warning(
                        "Failed",
                        format!("{why}; running the node's copy of {:?}", c.image),
                    ),
                );
            }
            Ok(crate::pull::Pulled::Present) => {}
            Err(e) => {
                let delay = self.hold(sandbox, container);
                warn!("pod {}: {e}; retrying in {delay:?}", pod_key(&pod));
                self.set_waiting(sandbox, container, e.reason, &e.message);
                self.pod_event(&pod, PodEvent::warning("Failed", e.message.clone()));
                self.pod_event(
                    &pod,
                    PodEvent::warning("Failed", format!("Error: {}", e.reason)),
                );
                // As in Kubernetes: the reason is ErrImagePull right after the failure and
                // ImagePullBackOff for the rest of the wait.
                let me = self.clone();
                let (sb, name, image) =
                    (sandbox.to_string(), container.to_string(), c.image.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(PULL_ERROR_SHOWN.min(delay / 2)).await;
                    let backoff = {
                        let mut st = lock(&me.state);
                        match st.waiting.get_mut(&sb).and_then(|w| w.get_mut(&name)) {
                            Some(w) if w.0 == crate::pull::ERR_IMAGE_PULL && w.1 == e.message => {
                                *w = (
                                    PULL_BACKOFF.to_string(),
                                    format!("Back-off pulling image {image:?}: {}", e.message),
                                );
                                true
                            }
                            _ => false,
                        }
                    };
                    if backoff {
                        if let Some(pod) = me.pod_of(&sb) {
                            me.pod_event(
                                &pod,
                                PodEvent::normal(
                                    "BackOff",
                                    format!("Back-off pulling image {image:?}"),
                                ),
                            );
                        }
                        me.wake.notify_one();
                    }
                });
                return;
            }
        }
        let resolved = match self.resolve_config(sandbox, &pod, &c).await {
            Ok(r) => r,
            Err(e) => {
                let msg = e.to_string();
                let delay = self.hold(sandbox, container);
                warn!(
                    "pod {}: container {container}: {msg}; retrying in {delay:?}",
                    pod_key(&pod)
                );
                self.set_waiting(sandbox, container, crate::podconfig::CONFIG_ERROR, &msg);
                self.pod_event(&pod, PodEvent::warning("Failed", format!("Error: {msg}")));
                return;
            }
        };
        let spec = match crate::spec::container_spec(&pod, &c, id, self.backoff_initial, &resolved)
        {
            Ok(s) => s,
            Err(msg) => {
                self.hold(sandbox, container);
                self.set_waiting(sandbox, container, "CreateContainerConfigError", &msg);
                self.pod_event(&pod, PodEvent::warning("Failed", msg));
                return;
            }
        };
        let sb = sandbox.to_string();
        let r = self
            .blocking(move |rt| {
                let s = rt.sandbox(&sb)?;
                rt.create_and_start(&s, spec)
            })
            .await;
        {
            let mut st = lock(&self.state);
            if let Some(w) = st.waiting.get_mut(sandbox) {
                w.remove(container);
            }
            st.holds
                .remove(&(sandbox.to_string(), container.to_string()));
            st.pull_failures
                .remove(&(sandbox.to_string(), container.to_string()));
        }
        match r {
            Ok(h) => {
                info!(pod = %pod_key(&pod), container, id = %h.id, pid = h.pid, "container started");
                self.pod_event(
                    &pod,
                    PodEvent::normal("Created", format!("Created container {container}")),
                );
                self.pod_event(
                    &pod,
                    PodEvent::normal("Started", format!("Started container {container}")),
                );
            }
            Err(e) => {
                warn!("pod {}: container {container}: {e}", pod_key(&pod));
                match &e {
                    RuntimeError::Start { .. } => {}
                    RuntimeError::Config { message, .. } => {
                        self.hold(sandbox, container);
                        self.set_waiting(
                            sandbox,
                            container,
                            crate::podconfig::CONFIG_ERROR,
                            message,
                        );
                    }
                    _ => {
                        self.hold(sandbox, container);
                        self.set_waiting(
                            sandbox,
                            container,
                            "CreateContainerError",
                            &e.to_string(),
                        );
                    }
                }
                self.pod_event(&pod, PodEvent::warning("Failed", format!("Error: {e}")));
            }
        }
    }

    /// The credentials of `pod`'s `imagePullSecrets` (from the node's mirrors: the node
    /// authorizer lets a node read them); a missing or malformed one is skipped with a
    /// warning event.
    async fn pull_keyring(&self, pod: &Pod) -> shoal_runtime::image::registry::Keyring {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let mut secrets = Vec::new();
        for r in &pod.spec.image_pull_secrets {
            let got = match self.configs.secret(ns, &r.name).await {
                Ok(s) => s,
                Err(e) => {
                    debug!("pod {}: imagePullSecret {}: {e}", pod_key(pod), r.name);
                    None
                }
            };
            secrets.push((r.name.clone(), got));
        }
        let (keyring, warnings) = crate::pull::keyring(ns, &secrets);
        for w in warnings {
            warn!("pod {}: {w}", pod_key(pod));
            self.pod_event(pod, PodEvent::warning("FailedToRetrieveImagePullSecret", w));
        }
        keyring
    }

    /// The ConfigMaps and Secrets `pod` refers to, from the node's mirrors of them (the
    /// node authorizer lets a node read those of the pods bound to it, one by one).
    async fn fetch_sources(
        &self,
        pod: &Pod,
    ) -> Result<crate::podconfig::Sources, crate::podconfig::ConfigError> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let refs = shoal_api::podconfig::ConfigRefs::of(&pod.spec);
        let mut src = crate::podconfig::Sources::default();
        for name in refs.config_maps {
            let got =
                self.configs.config_map(ns, &name).await.map_err(|e| {
                    crate::podconfig::ConfigError(format!("configmap {name:?}: {e}"))
                })?;
            src.config_maps.insert(name, got);
        }
        for name in refs.secrets {
            let got = self
                .configs
                .secret(ns, &name)
                .await
                .map_err(|e| crate::podconfig::ConfigError(format!("secret {name:?}: {e}")))?;
            src.secrets.insert(name, got);
        }
        Ok(src)
    }

    fn pod_facts(&self, sandbox: &str) -> crate::podconfig::PodFacts {
        crate::podconfig::PodFacts {
            pod_ip: self
                .net
                .get()
                .and_then(|n| n.pod_ip(sandbox))
                .map(|ip| ip.to_string()),
            host_ip: self.host_ip.clone(),
            node_cpu_millis: self.sys.cpu_millis() as i64,
            node_memory_bytes: self.sys.memory().0 as i64,
        }
    }

    /// `DATA/agent/volumes/<sandbox>`: the files of the pod's ConfigMap, Secret,
    /// downward-API and projected volumes (0700: only root reads them on the host).
    fn volumes_dir(&self, sandbox: &str) -> PathBuf {
        self.dir.join("volumes").join(sandbox)
    }

    /// Writes every config volume of `pod` (atomically; unchanged ones are left alone)
    /// and returns their directories.
    async fn write_config_volumes(
        &self,
        sandbox: &str,
        pod: &Pod,
        src: &crate::podconfig::Sources,
    ) -> Result<BTreeMap<String, PathBuf>, crate::podconfig::ConfigError> {
        let facts = self.pod_facts(sandbox);
        let root = self.volumes_dir(sandbox);
        let mut dirs = BTreeMap::new();
        for v in pod
            .spec
            .volumes
            .iter()
            .filter(|v| crate::podconfig::is_config_volume(v))
        {
            let files = crate::podconfig::volume_files(pod, v, src, &facts)?;
            let dir = root.join(&v.name);
            let io = |e: std::io::Error| {
                crate::podconfig::ConfigError(format!(
                    "volume {:?}: writing {}: {e}",
                    v.name,
                    dir.display()
                ))
            };
            for d in [self.dir.join("volumes"), root.clone()] {
                shoal_files::private_dir(&d).map_err(io)?;
            }
            if crate::podconfig::write_volume(&dir, &files).map_err(io)? {
                debug!(pod = %pod_key(pod), volume = %v.name, "volume files written");
            }
            dirs.insert(v.name.clone(), dir);
        }
        Ok(dirs)
    }

    /// The environment and volume directories of container `c`.
    async fn resolve_config(
        &self,
        sandbox: &str,
        pod: &Pod,
        c: &shoal_api::Container,
    ) -> Result<crate::podconfig::Resolved, crate::podconfig::ConfigError> {
        let src = self.fetch_sources(pod).await?;
        let env = crate::podconfig::container_env(pod, c, &src, &self.pod_facts(sandbox))?;
        let mut volume_dirs = self.write_config_volumes(sandbox, pod, &src).await?;
        volume_dirs
            .extend(crate::volumes::claim_dirs(&self.ctl, &self.data_dir, &self.name, pod).await?);
        Ok(crate::podconfig::Resolved {
            env: Some(env),
            volume_dirs,
        })
    }

    /// Brings the config volumes of running pods up to date with their objects (every
    /// [`CONFIG_REFRESH`] per pod); a failure keeps the files as they were.
    fn refresh_config_volumes(self: &Arc<Self>, desired: &[DesiredPod], observed: &Observed) {
        let now = Instant::now();
        for d in desired {
            if !observed.sandboxes.contains(&d.sandbox)
                || !d
                    .pod
                    .spec
                    .volumes
                    .iter()
                    .any(crate::podconfig::is_config_volume)
                || !self.volumes_dir(&d.sandbox).exists()
            {
                continue;
            }
            {
                let mut st = lock(&self.state);
                if st.busy.contains(&d.sandbox)
                    || st
                        .config_refreshed
                        .get(&d.sandbox)
                        .is_some_and(|t| now.duration_since(*t) < CONFIG_REFRESH)
                {
                    continue;
                }
                st.config_refreshed.insert(d.sandbox.clone(), now);
            }
            let (me, d) = (self.clone(), d.clone());
            tokio::spawn(async move {
                let r = match me.fetch_sources(&d.pod).await {
                    Ok(src) => me.write_config_volumes(&d.sandbox, &d.pod, &src).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = r {
                    debug!(pod = %pod_key(&d.pod), "volume refresh: {e}");
                }
            });
        }
    }

    fn run_probes(self: &Arc<Self>, desired: &[DesiredPod], observed: &Observed) {
        let now = Instant::now();
        let mut live_ids = BTreeSet::new();
        for d in desired.iter().filter(|d| !is_terminal(&d.pod)) {
            for c in &d.pod.spec.containers {
                let Some(o) = observed.latest(&d.sandbox, &c.name) else {
                    continue;
                };
                if !o.status.is_running() {
                    continue;
                }
                live_ids.insert(o.id.clone());
                for kind in [
                    ProbeKind::Startup,
                    ProbeKind::Liveness,
                    ProbeKind::Readiness,
                ] {
                    let Some(probe) = kind.of(c).cloned() else {
                        continue;
                    };
                    {
                        let mut st = lock(&self.state);
                        if !kind.runs(c.startup_probe.is_some(), st.startup.get(&o.id)) {
                            continue;
                        }
                        let ps = probe_map(&mut st, kind)
                            .entry(o.id.clone())
                            .or_insert_with(|| ProbeState::new(now, kind == ProbeKind::Liveness));
                        if !crate::probe::due(&probe, ps, now) {
                            continue;
                        }
                        ps.in_flight = true;
                        ps.last_run = Some(now);
                    }
                    let me = self.clone();
                    let (id, sb, c, pod) =
                        (o.id.clone(), d.sandbox.clone(), c.clone(), d.pod.clone());
                    tokio::spawn(async move {
                        let rt = me.rt.clone();
                        let (id2, p2) = (id.clone(), probe.clone());
                        let res = tokio::task::spawn_blocking(move || {
                            let netns = rt.sandbox(&sb).map_err(|e| e.to_string())?.netns_path;
                            crate::probe::run(&rt, &id2, &netns, &c, &p2)
                        })
                        .await
                        .unwrap_or_else(|e| Err(e.to_string()));
                        if let Err(msg) = &res {
                            me.pod_event(
                                &pod,
                                PodEvent::warning(
                                    "Unhealthy",
                                    format!("{} probe failed: {msg}", kind.name()),
                                ),
                            );
                        }
                        let mut st = lock(&me.state);
                        let Some(ps) = probe_map(&mut st, kind).get_mut(&id) else {
                            return;
                        };
                        crate::probe::record(&probe, ps, res.is_ok());
                        let failed = kind.failed(&probe, ps);
                        if failed {
                            st.unhealthy.insert(id.clone());
                        }
                        drop(st);
                        me.wake.notify_one();
                    });
                }
            }
        }
        let mut st = lock(&self.state);
        st.liveness.retain(|id, _| live_ids.contains(id));
        st.readiness.retain(|id, _| live_ids.contains(id));
        st.startup.retain(|id, _| live_ids.contains(id));
    }

    async fn write_status(&self, d: &DesiredPod, observed: &Observed) {
        let containers: Vec<ObservedContainer> =
            observed.of(&d.sandbox).into_iter().cloned().collect();
        let (waiting, ready) = {
            let st = lock(&self.state);
            let waiting = st.waiting.get(&d.sandbox).cloned().unwrap_or_default();
            let ok = |m: &BTreeMap<String, ProbeState>, id: &str| m.get(id).map(|s| s.ok);
            let ready: BTreeMap<String, bool> = d
                .pod
                .spec
                .containers
                .iter()
                .filter_map(|c| Some((c, observed.latest(&d.sandbox, &c.name)?)))
                .map(|(c, o)| {
                    let ready = crate::probe::container_ready(
                        c.startup_probe.as_ref().map(|_| ok(&st.startup, &o.id)),
                        c.readiness_probe.as_ref().map(|_| ok(&st.readiness, &o.id)),
                    );
                    (o.id.clone(), ready)
                })
                .collect();
            (waiting, ready)
        };
        let pod_ip = self
            .net
            .get()
            .filter(|n| n.is_attached(&d.sandbox))
            .and_then(|n| n.pod_ip(&d.sandbox))
            .map(|ip| ip.to_string());
        let new = pod_status(StatusInput {
            pod: &d.pod,
            containers: &containers,
            waiting: &waiting,
            ready: &ready,
            node: &self.name,
            host_ip: &self.host_ip,
            pod_ip: pod_ip.as_deref(),
            now: Utc::now(),
        });
        if d.pod.status.as_ref() == Some(&new) {
            return;
        }
        let old: Option<PodStatus> = d.pod.status.clone();
        let mut p = d.pod.clone();
        p.status = Some(new.clone());
        match self.ctl.update(&p).await {
            Ok(written) => {
                for ev in transition_events(old.as_ref(), &new) {
                    self.pod_event(&written, ev);
                }
                let mut pods = lock(&self.pods);
                if let Some(cur) = pods.get_mut(&d.sandbox)
                    && cur.metadata.resource_version == d.pod.metadata.resource_version
                {
                    *cur = written;
                }
            }
            Err(e)
                if matches!(
                    e.code(),
                    Some(Code::FailedPrecondition | Code::Aborted | Code::NotFound)
                ) =>
            {
                debug!(
                    "pod {}: status write raced ({e}); re-reading",
                    pod_key(&d.pod)
                );
                let ns = d
                    .pod
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into());
                if let Ok(fresh) = self.ctl.get::<Pod>(&ns, &d.pod.metadata.name).await {
                    let mut pods = lock(&self.pods);
                    match fresh {
                        Some(f) if self.mine(&f) && sandbox_name(&f) == d.sandbox => {
                            pods.insert(d.sandbox.clone(), f);
                        }
                        _ => {
                            pods.remove(&d.sandbox);
                        }
                    }
                }
            }
            Err(e) => warn!("pod {}: status: {e}", pod_key(&d.pod)),
        }
    }
}
