//! The controller's own metrics (docs/observability.md): Raft (from openraft's metrics
//! watch channel), the store (objects by kind, open watches), the reconcilers' passes
//! and the scheduler. The metrics listener, the process and gRPC metrics are
//! shoal-observe's.
//!
//! The reconcilers and the scheduler record into one process-wide [`ControllerMetrics`]
//! ([`metrics`]): threading a handle through every loop would touch each of them for no
//! gain, and a process runs one controller.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use shoal_store::{Consistency, Store};

use crate::reconcile::action::Action;

/// Labels with one `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct KindLabels {
    /// The object kind (`Pod`, `Node`, …).
    pub kind: String,
}

/// Labels with one `reconciler`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReconcilerLabels {
    /// `deployments`, `scheduler`, …
    pub reconciler: String,
}

/// Labels with one `result`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ResultLabels {
    /// `scheduled` or `unschedulable`.
    pub result: String,
}

fn seconds_histogram() -> Histogram {
    // 1 ms … ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Every controller metric (clones share their values).
#[derive(Debug, Clone)]
pub struct ControllerMetrics {
    /// `shoal_raft_term`.
    pub raft_term: Gauge,
    /// `shoal_raft_last_log_index`.
    pub raft_last_log_index: Gauge,
    /// `shoal_raft_applied_index`.
    pub raft_applied_index: Gauge,
    /// `shoal_raft_snapshot_index`.
    pub raft_snapshot_index: Gauge,
    /// `shoal_raft_is_leader`.
    pub raft_is_leader: Gauge,
    /// `shoal_raft_has_leader`.
    pub raft_has_leader: Gauge,
    /// `shoal_raft_members`.
    pub raft_members: Gauge,
    /// `shoal_raft_leader_changes_total`.
    pub raft_leader_changes: Counter,
    /// `shoal_store_objects{kind}`.
    pub store_objects: Family<KindLabels, Gauge>,
    /// `shoal_store_watchers`.
    pub store_watchers: Gauge,
    /// `shoal_store_watch_history_bytes`.
    pub store_watch_history_bytes: Gauge,
    /// `shoal_reconcile_pass_duration_seconds`.
    pub reconcile_pass: Histogram,
    /// `shoal_reconcile_actions_total{reconciler}`.
    pub reconcile_actions: Family<ReconcilerLabels, Counter>,
    /// `shoal_scheduler_attempts_total{result}`.
    pub scheduler_attempts: Family<ResultLabels, Counter>,
    /// `shoal_scheduler_pod_latency_seconds`.
    pub scheduler_latency: Histogram,
    /// `shoal_scheduler_plan_duration_seconds`.
    pub scheduler_plan: Histogram,
    /// `shoal_scheduler_unschedulable_pods`.
    pub scheduler_unschedulable: Gauge,
}

/// The reconcilers' names in `shoal_reconcile_actions_total{reconciler}`.
pub const RECONCILERS: [&str; 8] = [
    "deployments",
    "cron jobs",
    "jobs",
    "scheduler",
    "node lifecycle",
    "endpoints",
    "garbage collector",
    "namespaces",
];

/// The process's controller metrics. Labelled series that are known in advance start
/// at 0, so that every metric is served (with its type) before its first event.
pub fn metrics() -> &'static ControllerMetrics {
    static M: OnceLock<ControllerMetrics> = OnceLock::new();
    M.get_or_init(|| {
        let m = new_metrics();
        for reconciler in RECONCILERS {
            m.reconcile_actions
                .get_or_create(&ReconcilerLabels {
                    reconciler: reconciler.to_string(),
                })
                .inc_by(0);
        }
        for result in ["scheduled", "unschedulable"] {
            m.scheduler_attempts
                .get_or_create(&ResultLabels {
                    result: result.to_string(),
                })
                .inc_by(0);
        }
        for k in shoal_api::Kind::ALL {
            m.store_objects
                .get_or_create(&KindLabels {
                    kind: k.as_str().to_string(),
                })
                .set(0);
        }
        m
    })
}

fn new_metrics() -> ControllerMetrics {
    ControllerMetrics {
        raft_term: Gauge::default(),
        raft_last_log_index: Gauge::default(),
        raft_applied_index: Gauge::default(),
        raft_snapshot_index: Gauge::default(),
        raft_is_leader: Gauge::default(),
        raft_has_leader: Gauge::default(),
        raft_members: Gauge::default(),
        raft_leader_changes: Counter::default(),
        store_objects: Family::default(),
        store_watchers: Gauge::default(),
        store_watch_history_bytes: Gauge::default(),
        reconcile_pass: seconds_histogram(),
        reconcile_actions: Family::default(),
        scheduler_attempts: Family::default(),
        scheduler_latency: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
        scheduler_plan: seconds_histogram(),
        scheduler_unschedulable: Gauge::default(),
    }
}

/// Registers every controller metric in `r`.
pub fn register(r: &mut Registry) {
    let m = metrics().clone();
    r.register("raft_term", "Current Raft term of this member", m.raft_term);
    r.register(
        "raft_log_flush_duration_seconds",
        "Time of each flush of the Raft log to disk (appends, votes): the wait before a write is acknowledged",
        shoal_store::log_flush_histogram().clone(),
    );
    r.register(
        "raft_entry_requests",
        "Client write requests per Raft entry this member proposed as leader (group commit)",
        shoal_store::entry_requests_histogram().clone(),
    );
    let (rounds, reads) = shoal_store::read_counters();
    r.register(
        "store_read_rounds",
        "ReadIndex rounds this member ran for linearizable reads (shared by the reads waiting at the time)",
        rounds.clone(),
    );
    r.register(
        "store_linearizable_reads",
        "Linearizable reads (get, list, watch starts) this member served",
        reads.clone(),
    );
    r.register(
        "store_lease_reads",
        "Linearizable reads (and followers' ReadIndex requests) this member served as leader within its read lease, without a round",
        shoal_store::lease_read_counter().clone(),
    );
    r.register(
        "raft_last_log_index",
        "Index of the last entry in this member's Raft log",
        m.raft_last_log_index,
    );
    r.register(
        "raft_applied_index",
        "Index of the last Raft entry applied to this member's store (its revision)",
        m.raft_applied_index,
    );
    r.register(
        "raft_snapshot_index",
        "Last Raft index of this member's newest snapshot",
        m.raft_snapshot_index,
    );
    r.register(
        "raft_is_leader",
        "1 while this member is the Raft leader",
        m.raft_is_leader,
    );
    r.register(
        "raft_has_leader",
        "1 while this member knows a leader",
        m.raft_has_leader,
    );
    r.register(
        "raft_members",
        "Members (voters and learners) of the membership this member knows",
        m.raft_members,
    );
    r.register(
        "raft_leader_changes",
        "Times the leader this member knows changed (to another member or to none)",
        m.raft_leader_changes,
    );
    r.register(
        "store_objects",
        "Objects in this member's store by kind (the first part of the key), every 10 s",
        m.store_objects,
    );
    r.register(
        "store_watchers",
        "Open watch streams on this member's store (API watches and the reconcilers')",
        m.store_watchers,
    );
    r.register(
        "store_watch_history_bytes",
        "Bytes of watch events this member keeps for resuming watchers (capped)",
        m.store_watch_history_bytes,
    );
    r.register(
        "reconcile_pass_duration_seconds",
        "Duration of one pass of every reconciler (leader only)",
        m.reconcile_pass,
    );
    r.register(
        "reconcile_actions",
        "Writes (creates, updates, deletes) the reconcilers planned, by reconciler",
        m.reconcile_actions,
    );
    r.register(
        "scheduler_attempts",
        "Pending pods the scheduler tried to place, by result (scheduled, unschedulable)",
        m.scheduler_attempts,
    );
    r.register(
        "scheduler_pod_latency_seconds",
        "Time from a pod's creation to its binding to a node",
        m.scheduler_latency,
    );
    r.register(
        "scheduler_plan_duration_seconds",
        "Duration of one scheduler plan (all pending pods)",
        m.scheduler_plan,
    );
    r.register(
        "scheduler_unschedulable_pods",
        "Pending pods that fit no node at the last scheduler pass",
        m.scheduler_unschedulable,
    );
}

fn gauge_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Follows openraft's metrics channel of `store` into the Raft gauges until it closes.
pub async fn follow_raft(store: Store) {
    let m = metrics();
    let mut rx = store.raft().metrics();
    let mut leader = None;
    loop {
        {
            let r = rx.borrow_and_update();
            m.raft_term.set(gauge_i64(r.current_term));
            m.raft_last_log_index
                .set(gauge_i64(r.last_log_index.unwrap_or(0)));
            m.raft_applied_index
                .set(gauge_i64(r.last_applied.map_or(0, |l| l.index)));
            m.raft_snapshot_index
                .set(gauge_i64(r.snapshot.map_or(0, |l| l.index)));
            m.raft_is_leader
                .set(i64::from(r.current_leader == Some(r.id)));
            m.raft_has_leader.set(i64::from(r.current_leader.is_some()));
            m.raft_members
                .set(r.membership_config.membership().nodes().count() as i64);
            if r.current_leader != leader {
                if leader.is_some() || r.current_leader.is_some() {
                    m.raft_leader_changes.inc();
                }
                leader = r.current_leader;
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Counts the objects of `store` by kind and its watchers every `every`, forever.
pub async fn count_objects(store: Store, every: Duration) {
    let m = metrics();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        m.store_watchers.set(store.watchers() as i64);
        m.store_watch_history_bytes
            .set(store.watch_history_bytes() as i64);
        // Keys only: parsing every object every 10 s cost as much memory as the store.
        let Ok(keys) = store.local_keys("") else {
            continue;
        };
        let counts = count_by_kind(keys.iter().map(String::as_str));
        // Kinds that went to zero are kept at 0 rather than left at their last count.
        for k in shoal_api::Kind::ALL {
            m.store_objects
                .get_or_create(&KindLabels {
                    kind: k.as_str().to_string(),
                })
                .set(0);
        }
        for (kind, n) in counts {
            m.store_objects
                .get_or_create(&KindLabels { kind })
                .set(n as i64);
        }
    }
}

/// Objects by their `kind` field (`other` for an object without one).
/// Counts store keys (`Kind/namespace/name`, including the controller's own records such
/// as `Image/` and `BlobMeta/`) by their first part; a key without a plain alphanumeric
/// first part counts as `other`.
pub fn count_by_kind<'a>(keys: impl Iterator<Item = &'a str>) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for key in keys {
        let kind = match key.split_once('/') {
            Some((k, _))
                if !k.is_empty()
                    && k.len() <= 64
                    && k.bytes().all(|b| b.is_ascii_alphanumeric()) =>
            {
                k
            }
            _ => "other",
        };
        *out.entry(kind.to_string()).or_default() += 1;
    }
    out
}

/// Records one scheduler plan: `pending` pods were planned in `took` and `actions`
/// came out of it (each [`Action::Bind`] is a binding).
pub fn observe_scheduler(pending: usize, actions: &[Action], took: Duration, now: DateTime<Utc>) {
    if pending == 0 {
        metrics().scheduler_unschedulable.set(0);
        return;
    }
    let bound: Vec<&crate::reconcile::action::Binding> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Bind(b) => Some(b),
            _ => None,
        })
        .collect();
    let m = metrics();
    m.scheduler_plan.observe(took.as_secs_f64());
    let unschedulable = pending.saturating_sub(bound.len());
    let attempts = |result: &str| {
        m.scheduler_attempts.get_or_create(&ResultLabels {
            result: result.to_string(),
        })
    };
    attempts("scheduled").inc_by(bound.len() as u64);
    attempts("unschedulable").inc_by(unschedulable as u64);
    m.scheduler_unschedulable.set(unschedulable as i64);
    for b in bound {
        if let Some(created) = b.created
            && let Ok(d) = now.signed_duration_since(created).to_std()
        {
            m.scheduler_latency.observe(d.as_secs_f64());
        }
    }
}

/// Records the writes one reconciler planned.
pub fn observe_actions(reconciler: &str, actions: usize) {
    if actions > 0 {
        metrics()
            .reconcile_actions
            .get_or_create(&ReconcilerLabels {
                reconciler: reconciler.to_string(),
            })
            .inc_by(actions as u64);
    }
}

/// The standard gRPC health service (`grpc.health.v1.Health`), SERVING for the whole
/// server (`""`) and for `shoal.v1.Cluster` while the process serves.
pub async fn health_service()
-> tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health> {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    reporter
        .set_service_status("shoal.v1.Cluster", tonic_health::ServingStatus::Serving)
        .await;
    service
}

/// The controller's `/readyz`: a linearizable read succeeds, i.e. a leader with a
/// quorum answers and this member has applied up to its commit index.
pub fn readiness(store: Store) -> shoal_observe::ReadyCheck {
    std::sync::Arc::new(move || {
        let store = store.clone();
        Box::pin(async move {
            let m = store.raft().metrics().borrow().clone();
            if m.current_leader.is_none() {
                return Err(format!("member {} knows no leader", m.id));
            }
            store
                .get("Namespace//default", Consistency::Linearizable)
                .await
                .map(|_| ())
                .map_err(|e| format!("member {}: store not caught up with a leader: {e}", m.id))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_count_by_kind() {
        let keys = [
            "Pod/a/x",
            "Pod/b/y",
            "Node//n",
            "Image//busybox",
            "no-kind/a/z",
            "nokind",
        ];
        let c = count_by_kind(keys.into_iter());
        assert_eq!(c["Pod"], 2);
        assert_eq!(c["Node"], 1);
        assert_eq!(c["Image"], 1);
        assert_eq!(c["other"], 2);
    }
}
