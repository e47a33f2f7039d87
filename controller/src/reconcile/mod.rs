//! Leader-only reconcilers: level-triggered loops (list + watch, then converge)
//! that run while this member is the Raft leader and stop when it is not.
//!
//! Each reconciler is a pure `plan(desired, observed) -> Vec<Action>` ([`deployment`],
//! [`daemonset`], [`statefulset`], [`job`], [`cronjob`], [`scheduler`], [`volumes`],
//! [`nodes`], [`podcidr`], [`endpoints`], [`gc`], [`namespaces`]); this module is the thin
//! loop that keeps a cache of Pods, Deployments, DaemonSets, StatefulSets, Jobs,
//! CronJobs, Nodes, Events, Services, Endpoints, Namespaces, PersistentVolumeClaims and
//! PersistentVolumes
//! (list, then watch from the list's revision;
//! re-list when the watch says `TooOld`/`Lagged`), runs the plans after every batch of
//! changes (debounced) and periodically, and writes their actions.

pub mod action;
pub mod cache;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod events;
pub mod gc;
pub mod job;
pub mod namespaces;
pub mod nodes;
pub mod podcidr;
pub mod scheduler;
pub mod statefulset;
pub mod volumes;

use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use shoal_store::{Consistency, PendingEvent, Store, StoreError};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use action::{Action, Names, RandomNames};
use cache::{Cache, PREFIXES};
use shoal_api::Kind;

/// Settings of the reconcilers.
#[derive(Debug, Clone)]
pub struct ReconcileConfig {
    /// A node whose heartbeat is older than this becomes NotReady.
    pub node_timeout: Duration,
    /// Pods of a NotReady node are replaced elsewhere after this delay.
    pub eviction_delay: Duration,
    /// Most Events kept (the oldest beyond it are deleted).
    pub event_limit: usize,
    /// Cluster CIDR and node prefix (node pod CIDRs).
    pub net: crate::network::NetConfig,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        Self {
            node_timeout: Duration::from_secs(10),
            eviction_delay: Duration::from_secs(20),
            event_limit: 10_000,
            net: crate::network::NetConfig::default(),
        }
    }
}

/// Why a reconciler session stopped (it is restarted with a fresh list).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// A store read, watch or write failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The watch of a prefix ended.
    #[error("watch of the reconcilers' prefixes ended")]
    WatchClosed,
}

/// Changes are collected for this long before the plans run.
const DEBOUNCE: Duration = Duration::from_millis(20);
/// The plans also run this often without any change (time-based conditions, lost writes).
const RESYNC: Duration = Duration::from_secs(2);

/// Keys re-read at once after their writes' preconditions failed.
const STALE_READS: usize = 16;

/// Starts the reconcilers; they run whenever this member leads.
pub fn spawn(store: Store, cfg: ReconcileConfig) -> JoinHandle<()> {
    tokio::spawn(async move {
        let me = store.node_id();
        let mut leader = store.leader_changes();
        loop {
            while *leader.borrow_and_update() != Some(me) {
                if leader.changed().await.is_err() {
                    return;
                }
            }
            info!(id = me, "this member leads: reconcilers start");
            // Heartbeats sent before now never reached this leader (see `nodes`).
            let since = Utc::now();
            let session = AbortOnDrop(tokio::spawn(run(store.clone(), cfg.clone(), since)));
            loop {
                if leader.changed().await.is_err() {
                    return;
                }
                if *leader.borrow_and_update() != Some(me) {
                    break;
                }
            }
            drop(session);
            info!(id = me, "this member no longer leads: reconcilers stopped");
        }
    })
}

/// Aborts the task when dropped (also when the outer task is aborted).
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs sessions until aborted; each failure re-lists after a short pause.
async fn run(store: Store, cfg: ReconcileConfig, leading_since: chrono::DateTime<Utc>) {
    let mut names = RandomNames;
    loop {
        if let Err(e) = session(&store, &cfg, leading_since, &mut names).await {
            warn!("reconcilers re-list after: {e}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Lists, watches and converges until the watch fails.
async fn session(
    store: &Store,
    cfg: &ReconcileConfig,
    leading_since: chrono::DateTime<Utc>,
    names: &mut dyn Names,
) -> Result<(), ReconcileError> {
    let mut cache = Cache::default();
    let mut streams = Vec::new();
    for prefix in PREFIXES {
        let (items, rev) = store.list(prefix, Consistency::Linearizable).await?;
        cache.load(prefix, items, rev);
        streams.push(store.watch(prefix, Some(rev)).await?.pending());
    }
    // Drain the watches continuously into an unbounded queue, so that a long pass never
    // makes the store drop this watcher as lagging. The queue holds the events undecoded
    // (they share the watch history's bytes): a burst of 20,000 pods queued while a pass
    // runs held ≈60 MB of parsed trees on the leader (heaptrack); each is decoded when
    // applied.
    let (tx, mut rx) = mpsc::unbounded_channel::<Result<PendingEvent, StoreError>>();
    let _pump = AbortOnDrop(tokio::spawn(async move {
        let mut merged = futures::stream::select_all(streams);
        while let Some(ev) = merged.next().await {
            let stop = ev.is_err();
            if tx.send(ev).is_err() || stop {
                break;
            }
        }
    }));
    info!(
        pods = cache.pods.len(),
        deployments = cache.deployments.len(),
        nodes = cache.nodes.len(),
        services = cache.services.len(),
        "reconcilers listed"
    );
    loop {
        let started = std::time::Instant::now();
        with_last_heartbeats(store, &mut cache);
        let retry = pass(store, cfg, &mut cache, leading_since, names).await?;
        crate::metrics::metrics()
            .reconcile_pass
            .observe(started.elapsed().as_secs_f64());
        let now = Utc::now();
        let mut wake = if retry {
            Duration::from_millis(50)
        } else {
            RESYNC
        };
        if let Some(d) = nodes::next_deadline(
            &cache.nodes,
            now,
            leading_since,
            cfg.node_timeout,
            cfg.eviction_delay,
        ) {
            wake = wake.min(d + Duration::from_millis(20));
        }
        tokio::select! {
            ev = rx.recv() => {
                apply(&mut cache, ev)?;
                let until = tokio::time::Instant::now() + DEBOUNCE;
                while let Ok(ev) = tokio::time::timeout_at(until, rx.recv()).await {
                    apply(&mut cache, ev)?;
                }
                while let Ok(ev) = rx.try_recv() {
                    apply(&mut cache, Some(ev))?;
                }
            }
            _ = tokio::time::sleep(wake) => {}
        }
    }
}

/// Brings each cached Node's `status.heartbeatTime` up to the last heartbeat this leader
/// heard (heartbeats are kept in memory, not written to the Node: `Store::keep_alive`), so
/// the plans judge silence from the latest one. Watch events replace cached Nodes with
/// the stored objects; this runs before every pass.
fn with_last_heartbeats(store: &Store, cache: &mut Cache) {
    for n in cache.nodes.values_mut() {
        let Some(heard) = store.last_heard(&n.metadata.name) else {
            continue;
        };
        let status = n.status.get_or_insert_with(Default::default);
        if status.heartbeat_time.is_none_or(|t| t < heard) {
            status.heartbeat_time = Some(heard);
        }
    }
}

fn apply(
    cache: &mut Cache,
    ev: Option<Result<PendingEvent, StoreError>>,
) -> Result<(), ReconcileError> {
    match ev {
        Some(Ok(ev)) => Ok(cache.apply_pending(&ev)?),
        Some(Err(e)) => Err(e.into()),
        None => Err(ReconcileError::WatchClosed),
    }
}

/// One pass of every reconciler, in order: deployments, daemon sets (bound pods), stateful
/// sets (claims and pods), cron jobs (new Jobs), jobs (new pods), scheduler (binds them),
/// volumes (provisions and binds the claims of bound pods),
/// node lifecycle, node pod CIDRs, endpoints, garbage collection. Returns true when a
/// write must be retried soon.
async fn pass(
    store: &Store,
    cfg: &ReconcileConfig,
    cache: &mut Cache,
    leading_since: chrono::DateTime<Utc>,
    names: &mut dyn Names,
) -> Result<bool, ReconcileError> {
    let mut retry = false;
    let now = Utc::now();

    // Planning is CPU work (milliseconds to ~100 ms at 10,000 pods): keep it off the
    // runtime's other tasks (Raft heartbeats, API calls).
    let actions = tokio::task::block_in_place(|| {
        let mut actions = Vec::new();
        let owned = deployment::pods_by_owner(&cache.pods);
        for d in cache.deployments.values() {
            let uid = d.metadata.uid.as_deref().unwrap_or("");
            let pods = owned.get(uid).map(Vec::as_slice).unwrap_or(&[]);
            actions.extend(deployment::plan(d, pods, now, names));
        }
        actions
    });
    retry |= execute(store, cache, "deployments", actions).await?;

    let actions = tokio::task::block_in_place(|| {
        let owned = job::by_owner(Kind::DaemonSet, cache.pods.values());
        let mut actions = Vec::new();
        for ds in cache.daemonsets.values() {
            let uid = ds.metadata.uid.as_deref().unwrap_or("");
            let pods = owned.get(uid).map(Vec::as_slice).unwrap_or(&[]);
            actions.extend(daemonset::plan(
                ds,
                pods,
                &cache.nodes,
                now,
                cfg.node_timeout,
                names,
            ));
        }
        actions
    });
    retry |= execute(store, cache, "daemon sets", actions).await?;

    let actions = tokio::task::block_in_place(|| {
        let owned = job::by_owner(Kind::StatefulSet, cache.pods.values());
        let mut actions = Vec::new();
        for s in cache.statefulsets.values() {
            let uid = s.metadata.uid.as_deref().unwrap_or("");
            let pods = owned.get(uid).map(Vec::as_slice).unwrap_or(&[]);
            actions.extend(statefulset::plan(s, pods, &cache.claims, now));
        }
        actions
    });
    retry |= execute(store, cache, "stateful sets", actions).await?;

    let actions = tokio::task::block_in_place(|| {
        let owned = job::by_owner(Kind::CronJob, cache.jobs.values());
        let mut actions = Vec::new();
        for c in cache.cronjobs.values() {
            let uid = c.metadata.uid.as_deref().unwrap_or("");
            let jobs = owned.get(uid).map(Vec::as_slice).unwrap_or(&[]);
            actions.extend(cronjob::plan(c, jobs, now));
        }
        actions
    });
    retry |= execute(store, cache, "cron jobs", actions).await?;

    let actions = tokio::task::block_in_place(|| {
        let owned = job::by_owner(Kind::Job, cache.pods.values());
        let mut actions = Vec::new();
        for j in cache.jobs.values() {
            let uid = j.metadata.uid.as_deref().unwrap_or("");
            let pods = owned.get(uid).map(Vec::as_slice).unwrap_or(&[]);
            actions.extend(job::plan(j, pods, now, names));
        }
        actions
    });
    retry |= execute(store, cache, "jobs", actions).await?;

    let actions = tokio::task::block_in_place(|| {
        let started = std::time::Instant::now();
        let storage = volumes::Storage {
            claims: &cache.claims,
            volumes: &cache.volumes,
        };
        let actions = scheduler::plan(
            &cache.pods,
            &cache.nodes,
            storage,
            now,
            cfg.node_timeout,
            names,
        );
        let pending = cache.pods.values().filter(|p| scheduler::is_pending(p));
        crate::metrics::observe_scheduler(pending.count(), &actions, started.elapsed(), now);
        actions
    });
    retry |= execute(store, cache, "scheduler", actions).await?;

    let actions = volumes::plan(
        volumes::Storage {
            claims: &cache.claims,
            volumes: &cache.volumes,
        },
        &cache.pods,
    );
    retry |= execute(store, cache, "volumes", actions).await?;

    let actions = nodes::plan(
        &cache.nodes,
        &cache.pods,
        now,
        leading_since,
        cfg.node_timeout,
        cfg.eviction_delay,
        names,
    );
    retry |= execute(store, cache, "node lifecycle", actions).await?;

    retry |= assign_pod_cidrs(store, cfg, cache).await?;

    let eps = tokio::task::block_in_place(|| {
        endpoints::plan(&cache.services, &cache.endpoints, &cache.pods)
    });
    let (mut actions, unsure) =
        confirm_orphans(store, eps.orphans, |owner, _| owner.is_none()).await?;
    actions.splice(0..0, eps.actions);
    retry |= unsure;
    retry |= execute(store, cache, "endpoints", actions).await?;

    let gc = gc::plan(
        gc::Owned {
            pods: &cache.pods,
            deployments: &cache.deployments,
            daemonsets: &cache.daemonsets,
            statefulsets: &cache.statefulsets,
            jobs: &cache.jobs,
            cronjobs: &cache.cronjobs,
        },
        &cache.events,
        cfg.event_limit,
        now,
    );
    let mut actions = gc.expired_events;
    let (orphans, unsure) = confirm_orphans(store, gc.orphans, |owner, uid| {
        owner
            .and_then(|v| v.pointer("/metadata/uid"))
            .and_then(|u| u.as_str())
            != Some(uid)
    })
    .await?;
    actions.extend(orphans);
    retry |= unsure;
    retry |= execute(store, cache, "garbage collector", actions).await?;

    retry |= converge_namespaces(store, cache).await?;
    Ok(retry)
}

/// Creates missing built-in namespaces and empties Terminating ones ([`namespaces`]):
/// the objects of a Terminating namespace are listed from the store (every namespaced
/// kind, linearizably: the cache holds only some kinds) and deleted, then the namespace.
/// Returns true while a namespace is still being emptied.
async fn converge_namespaces(store: &Store, cache: &mut Cache) -> Result<bool, ReconcileError> {
    let mut actions = namespaces::missing_built_ins(&cache.namespaces);
    let terminating: Vec<shoal_api::Namespace> = cache
        .namespaces
        .values()
        .filter(|n| n.is_terminating())
        .cloned()
        .collect();
    let mut emptying = false;
    for ns in &terminating {
        let mut contents = Vec::new();
        for kind in shoal_api::Kind::ALL.iter().filter(|k| k.namespaced()) {
            let prefix = format!("{kind}/{}/", ns.metadata.name);
            let (items, _) = store.list(&prefix, Consistency::Linearizable).await?;
            contents.extend(
                items
                    .iter()
                    .map(|v| (cache::key_of(v), action::revision_of_json(v))),
            );
        }
        if !contents.is_empty() {
            info!(
                namespace = %ns.metadata.name,
                objects = contents.len(),
                "deleting the objects of a terminating namespace"
            );
            emptying = true;
        } else {
            info!(namespace = %ns.metadata.name, "terminating namespace is empty: deleting it");
        }
        actions.extend(namespaces::terminate(ns, &contents));
    }
    let retry = execute(store, cache, "namespaces", actions).await?;
    Ok(retry || emptying)
}

/// Gives Nodes without `spec.podCIDR` one ([`podcidr::plan`]). Acts only when the plan on
/// the cache assigns something (and warns when the set of Nodes left without a block
/// changes size); then it plans from a fresh list of the Nodes read after the allocator
/// key [`podcidr::ALLOCATOR_KEY`], and writes the Nodes together with a CAS on that key,
/// so that even two overlapping sessions (around a leader change) never hand out one block
/// twice. Returns true when the write must be retried.
async fn assign_pod_cidrs(
    store: &Store,
    cfg: &ReconcileConfig,
    cache: &mut Cache,
) -> Result<bool, ReconcileError> {
    let cached = podcidr::plan(&cache.nodes, &cfg.net);
    if cached.exhausted.len() != cache.cidr_exhausted {
        cache.cidr_exhausted = cached.exhausted.len();
        if !cached.exhausted.is_empty() {
            warn!(
                nodes = ?cached.exhausted,
                cluster_cidr = %cfg.net.cluster_cidr,
                "no free /{} left in the cluster CIDR for these nodes",
                cfg.net.node_prefix
            );
        }
    }
    if cached.actions.is_empty() {
        return Ok(false);
    }
    let lock = store
        .get(podcidr::ALLOCATOR_KEY, Consistency::Linearizable)
        .await?;
    let (items, _) = store.list("Node/", Consistency::Local).await?;
    let nodes = items
        .iter()
        .filter_map(|v| match shoal_api::Object::from_json(v) {
            Ok(shoal_api::Object::Node(n)) => Some((cache::key_of(v), n)),
            _ => None,
        })
        .collect();
    let plan = podcidr::plan(&nodes, &cfg.net);
    if plan.actions.is_empty() {
        return Ok(false);
    }
    let lock_object = serde_json::json!({
        "kind": "Allocator",
        "metadata": {"name": "node-cidrs"},
        "purpose": "its revision serializes node pod CIDR assignments",
    });
    let mut writes = vec![match lock {
        None => shoal_store::Write::Create {
            key: podcidr::ALLOCATOR_KEY.to_string(),
            object: lock_object,
        },
        Some(cur) => shoal_store::Write::Update {
            key: podcidr::ALLOCATOR_KEY.to_string(),
            object: lock_object,
            expected_revision: Some(action::revision_of_json(&cur)),
        },
    }];
    writes.extend(plan.actions.iter().map(Action::to_write));
    match store.write(writes).await {
        Ok(outcomes) => {
            for n in &outcomes {
                if let Some(c) = n.object.pointer("/spec/podCIDR") {
                    info!(key = %n.key, pod_cidr = %c, "node pod CIDR assigned");
                }
            }
            cache.apply_outcomes(&outcomes, &[]);
            Ok(false)
        }
        Err(
            StoreError::Conflict { key, .. }
            | StoreError::NotFound { key }
            | StoreError::AlreadyExists { key },
        ) => {
            debug!("node cidrs: precondition failed on {key}; re-planning");
            Ok(true)
        }
        Err(e) if e.is_retryable() || matches!(e, StoreError::Indeterminate(_)) => {
            warn!("node cidrs: write failed, retrying: {e}");
            Ok(true)
        }
        Err(e) => Err(e.into()),
    }
}

/// The deletes of those `orphans` whose owner a linearizable read confirms gone
/// (`gone(owner object, owner uid)`), and whether some were not (the cache lags behind
/// the store: re-plan soon).
async fn confirm_orphans(
    store: &Store,
    orphans: Vec<gc::Orphan>,
    gone: impl Fn(Option<&serde_json::Value>, &str) -> bool,
) -> Result<(Vec<Action>, bool), ReconcileError> {
    let mut actions = Vec::new();
    let mut retry = false;
    let mut confirmed: std::collections::BTreeMap<(String, String), bool> = Default::default();
    for o in orphans {
        let id = (o.owner_key.clone(), o.owner_uid.clone());
        let is_gone = match confirmed.get(&id) {
            Some(g) => *g,
            None => {
                let owner = store.get(&o.owner_key, Consistency::Linearizable).await?;
                let g = gone(owner.as_ref(), &o.owner_uid);
                confirmed.insert(id, g);
                g
            }
        };
        if is_gone {
            actions.push(o.action);
        } else {
            retry = true;
        }
    }
    Ok((actions, retry))
}

/// Writes each action as its own request (`Store::write_each`: one conflict fails one
/// action, not its neighbours; group commit puts them into few Raft entries), applies the
/// outcomes to the cache, and refreshes the key of a failed precondition. Returns true
/// when some write failed and must be re-planned.
async fn execute(
    store: &Store,
    cache: &mut Cache,
    who: &str,
    actions: Vec<Action>,
) -> Result<bool, ReconcileError> {
    if actions.is_empty() {
        return Ok(false);
    }
    debug!("{who}: {} writes", actions.len());
    crate::metrics::observe_actions(who, actions.len());
    let writes = actions.iter().map(|a| vec![a.to_write()]).collect();
    let results = store.write_each(writes).await;
    let mut retry = false;
    let mut stale = Vec::new();
    let mut failed = None;
    let mut transient: Option<(usize, StoreError)> = None;
    for (action, result) in actions.iter().zip(results) {
        match result {
            Ok(outcomes) => {
                let deleted = match action {
                    Action::Delete { key, .. } => vec![key.clone()],
                    _ => Vec::new(),
                };
                cache.apply_outcomes(&outcomes, &deleted);
            }
            Err(
                StoreError::Conflict { key, .. }
                | StoreError::NotFound { key }
                | StoreError::AlreadyExists { key }
                | StoreError::AlreadyBound { key, .. },
            ) => {
                debug!("{who}: precondition failed on {key}; re-planning");
                stale.push(key);
                retry = true;
            }
            Err(e) if e.is_retryable() || matches!(e, StoreError::Indeterminate(_)) => {
                transient.get_or_insert((0, e)).0 += 1;
                retry = true;
            }
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    if let Some((n, e)) = transient {
        warn!("{who}: {n} writes failed, retrying: {e}");
    }
    if let Some(e) = failed {
        return Err(e.into());
    }
    let mut fresh = futures::stream::iter(stale.into_iter().map(|key| async move {
        let v = store.get(&key, Consistency::Linearizable).await;
        (key, v)
    }))
    .buffer_unordered(STALE_READS);
    while let Some((key, v)) = fresh.next().await {
        let v = v?;
        let rev = v
            .as_ref()
            .and_then(|v| v.pointer("/metadata/resourceVersion"))
            .and_then(|r| r.as_str())
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| store.applied_revision());
        cache.set(&key, v.as_ref(), rev);
    }
    Ok(retry)
}
