//! [`Store`]: one member of the replicated object store.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, Config, SnapshotPolicy};
use serde_json::Value;
use shoal_proto::raft_server::RaftServer;
use shoal_proto::{KeepAliveRequest, MemberInfoRequest, ReadIndexRequest};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::StoreError;
use crate::backup::Backup;
use crate::group::{Grouper, Proposal};
use crate::liveness::Liveness;
use crate::log_store::WalLogStore;
use crate::membership::{MembershipChange, MembershipOps};
use crate::network::{
    MAX_COMMAND_BYTES, NetworkFactory, PeerClients, RaftGrpc, decode, encode, encode_binary,
    never_delivered, older_member,
};
use crate::state_machine::MemStateMachine;
use crate::types::{
    ClusterStatus, Command, Consistency, MemberStatus, StoreRaft, Write, WriteOutcome,
};
use crate::watch::WatchStream;

/// How to run one member.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// This member's Raft id (stable across restarts, non-zero).
    pub node_id: u64,
    /// The member's data directory: the Raft log (`raft-log/`) and the snapshot file
    /// (`state.snap`); created if missing.
    pub data_dir: PathBuf,
    /// `host:port` of this member's gRPC server, as the others reach it.
    pub advertise_addr: String,
    /// How long a new member may take to catch up (as a learner) before an add-member is
    /// undone and refused.
    pub catch_up_timeout: Duration,
    /// Leader heartbeat interval.
    pub heartbeat_ms: u64,
    /// Randomised election timeout range.
    pub election_timeout_ms: (u64, u64),
    /// Build a snapshot after this many logs since the last one.
    pub snapshot_every: u64,
    /// Logs kept after a snapshot (the rest is purged).
    pub keep_logs_after_snapshot: u64,
    /// Number of watch events kept for resuming watchers.
    pub watch_history: usize,
    /// Bytes of watch events (their objects as JSON) kept for resuming watchers: the
    /// history keeps at most `watch_history` events and at most this many bytes.
    pub watch_history_bytes: usize,
    /// How long a write or linearizable read keeps retrying across leader changes.
    pub request_timeout: Duration,
    /// TLS of connections to the other members (mutual: this member's controller
    /// certificate; the peer must be a controller of the cluster CA). Required:
    /// [`Store::open`] refuses a configuration without it.
    pub peer_tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// Seals values before they are proposed and opens them on every read, watch and
    /// write outcome (encryption at rest); `None` stores values as given.
    pub codec: Option<std::sync::Arc<dyn crate::ValueCodec>>,
}

impl StoreConfig {
    /// A configuration with defaults for everything but identity and paths.
    pub fn new(
        node_id: u64,
        data_dir: impl Into<PathBuf>,
        advertise_addr: impl Into<String>,
    ) -> Self {
        Self {
            node_id,
            data_dir: data_dir.into(),
            advertise_addr: advertise_addr.into(),
            ..Self::default()
        }
    }
}

impl Default for StoreConfig {
    /// Member 1, no data dir or address (set them), 100 ms heartbeats, 300–600 ms election
    /// timeout, snapshot every 5000 logs keeping 1000, 10 000 watch events, 10 s request
    /// timeout, 30 s for a new member to catch up.
    fn default() -> Self {
        Self {
            node_id: 1,
            data_dir: PathBuf::new(),
            advertise_addr: String::new(),
            catch_up_timeout: Duration::from_secs(30),
            heartbeat_ms: 100,
            election_timeout_ms: (300, 600),
            snapshot_every: 5000,
            keep_logs_after_snapshot: 1000,
            watch_history: 10_000,
            watch_history_bytes: 32 << 20,
            request_timeout: Duration::from_secs(10),
            peer_tls: None,
            codec: None,
        }
    }
}

struct Inner {
    cfg: StoreConfig,
    raft: StoreRaft,
    sm: MemStateMachine,
    clients: PeerClients,
    ops: MembershipOps,
    leader_rx: watch::Receiver<Option<u64>>,
    grouper: Grouper,
    reads: crate::reads::ReadRounds,
    lease: Arc<crate::reads::Lease>,
    liveness: Arc<Liveness>,
    /// Last field: dropped after everything that holds the Raft handle.
    _raft_rt: RaftRuntime,
}

/// One member of the replicated object store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("node_id", &self.inner.cfg.node_id)
            .field("data_dir", &self.inner.cfg.data_dir)
            .finish_non_exhaustive()
    }
}

/// The runtime a member's Raft core runs on, with the replication to each follower and
/// the storage calls it makes: two threads of its own, so that reconcilers, API handlers
/// and image transfers on the controller's runtime cannot delay heartbeats and votes
/// (issue "Control plane at scale", part 6). The gRPC server that receives Raft RPCs
/// still runs on the caller's runtime; it only passes each request to the core. One per
/// member (in-process test clusters get one each, as separate processes would); shut
/// down in the background when the store is dropped.
#[derive(Debug)]
struct RaftRuntime(Option<tokio::runtime::Runtime>);

impl RaftRuntime {
    fn new(id: u64) -> Result<Self, StoreError> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(format!("raft-{id}"))
            .enable_all()
            .build()
            .map(|rt| RaftRuntime(Some(rt)))
            .map_err(|e| StoreError::Storage(format!("the Raft runtime: {e}")))
    }

    fn handle(&self) -> Option<&tokio::runtime::Handle> {
        self.0.as_ref().map(tokio::runtime::Runtime::handle)
    }
}

impl Drop for RaftRuntime {
    fn drop(&mut self) {
        // Not `drop`: that blocks, which a runtime may not do inside another one.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// The snapshot interval of member `id`: `every` plus an eighth of it per member id above 1
/// (mod 8), so members do not all snapshot at the same log index (each snapshot serializes and
/// flushes the whole state; all at once, they stall every member's log flushes together).
fn staggered(every: u64, id: u64) -> u64 {
    every + (every / 8) * (id.saturating_sub(1) % 8)
}

/// Forwards queued keep-alives to the leader in batches and pulls the leader's record
/// (see [`crate::liveness`]), until the store is dropped.
async fn forward_keep_alives(
    inner: std::sync::Weak<Inner>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    use crate::liveness::{BATCH_WINDOW, PULL_EVERY};
    let mut last_pull = Instant::now() - PULL_EVERY;
    loop {
        let mut batch = std::collections::BTreeSet::new();
        match tokio::time::timeout(PULL_EVERY, rx.recv()).await {
            Ok(None) => return,
            Ok(Some(first)) => {
                batch.insert(first);
                tokio::time::sleep(BATCH_WINDOW).await;
                while let Ok(n) = rx.try_recv() {
                    batch.insert(n);
                }
            }
            Err(_) => {}
        }
        let Some(inner) = inner.upgrade() else { return };
        let store = Store { inner };
        let want_heard = last_pull.elapsed() >= PULL_EVERY;
        if batch.is_empty() && !want_heard {
            continue;
        }
        let req = KeepAliveRequest {
            names: batch.into_iter().collect(),
            want_heard,
        };
        match store.send_keep_alives(req).await {
            Some(Ok(heard)) if want_heard => {
                last_pull = Instant::now();
                store.inner.liveness.merge(heard);
            }
            None | Some(Ok(_)) => {}
            // The names' next heartbeats make up for a lost batch.
            Some(Err(e)) => tracing::debug!("forwarding keep-alives to the leader: {e}"),
        }
    }
}

/// Checks a key of the form `Kind/namespace/name` (namespace may be empty).
fn validate_key(key: &str) -> Result<(), StoreError> {
    let parts: Vec<&str> = key.split('/').collect();
    if parts.len() != 3 || parts[0].is_empty() || parts[2].is_empty() {
        return Err(StoreError::Invalid(format!(
            "key {key:?}: expected Kind/namespace/name"
        )));
    }
    Ok(())
}

/// Fills server-owned creation metadata on a proposed object.
fn fill_creation_metadata(key: &str, obj: &mut Value) -> Result<(), StoreError> {
    let Some(map) = obj.as_object_mut() else {
        return Err(StoreError::Invalid(format!(
            "object for {key}: expected a JSON object"
        )));
    };
    let md = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()));
    let Some(md) = md.as_object_mut() else {
        return Err(StoreError::Invalid(format!(
            "object for {key}: metadata: expected a JSON object"
        )));
    };
    md.insert(
        "uid".into(),
        Value::String(uuid::Uuid::new_v4().to_string()),
    );
    md.insert(
        "creationTimestamp".into(),
        Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
    );
    Ok(())
}

/// What one attempt of a write produced.
enum Attempt {
    Done(Result<Vec<WriteOutcome>, StoreError>),
    Retry(StoreError),
}

fn classify(res: Proposal) -> Attempt {
    match res {
        Ok(result) => Attempt::Done(result),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Attempt::Retry(
            StoreError::Unavailable(format!("leadership moved to {:?}", f.leader_id)),
        ),
        Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => Attempt::Done(Err(
            StoreError::Storage(format!("unexpected membership error: {e}")),
        )),
        // Proposed, then the leader stopped: unknown outcome. Resending is safe because the
        // command carries its request id (deduplicated by the state machine).
        Err(RaftError::Fatal(e)) => {
            Attempt::Retry(StoreError::Indeterminate(format!("leader failed: {e}")))
        }
    }
}

impl Store {
    /// Opens (or creates) the member's data dir and starts its Raft node. Does not serve
    /// gRPC and does not form a cluster: mount [`Store::raft_service`] and call
    /// [`Store::bootstrap`].
    pub async fn open(cfg: StoreConfig) -> Result<Store, StoreError> {
        if cfg.node_id == 0 {
            return Err(StoreError::Invalid("node_id: must be non-zero".into()));
        }
        if cfg.data_dir.as_os_str().is_empty() {
            return Err(StoreError::Invalid("data_dir: must be set".into()));
        }
        std::fs::create_dir_all(&cfg.data_dir).map_err(|e| {
            StoreError::Storage(format!("creating {}: {e}", cfg.data_dir.display()))
        })?;
        crate::legacy::migrate(&cfg.data_dir)?;
        let log = WalLogStore::open(&cfg.data_dir)?;
        let sm = MemStateMachine::open(&cfg.data_dir, cfg.watch_history, cfg.watch_history_bytes)?;
        let config = Config {
            cluster_name: "shoal".into(),
            heartbeat_interval: cfg.heartbeat_ms,
            election_timeout_min: cfg.election_timeout_ms.0,
            election_timeout_max: cfg.election_timeout_ms.1,
            install_snapshot_timeout: 10_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(staggered(
                cfg.snapshot_every,
                cfg.node_id,
            )),
            max_in_snapshot_log_to_keep: cfg.keep_logs_after_snapshot,
            snapshot_max_chunk_size: 1024 * 1024,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StoreError::Invalid(format!("raft config: {e}")))?;
        let tls = cfg.peer_tls.clone().ok_or_else(|| {
            StoreError::Invalid(
                "peer TLS settings are required (StoreConfig::peer_tls): members only talk over mutual TLS".into(),
            )
        })?;
        let clients = PeerClients::new(tls);
        let network = NetworkFactory {
            clients: clients.clone(),
        };
        // Made on the Raft runtime, so that its core (and the replication and storage
        // tasks the core spawns) runs there.
        let raft_rt = RaftRuntime::new(cfg.node_id)?;
        let raft = raft_rt
            .handle()
            .ok_or_else(|| StoreError::Storage("the Raft runtime is gone".into()))?
            .spawn(StoreRaft::new(
                cfg.node_id,
                Arc::new(config),
                network,
                log,
                sm.clone(),
            ))
            .await
            .map_err(|e| StoreError::Storage(format!("starting raft: {e}")))?
            .map_err(|e| {
                StoreError::Storage(format!("starting raft for member {}: {e}", cfg.node_id))
            })?;

        let mut metrics = raft.metrics();
        let first = metrics.borrow().current_leader;
        let (tx, leader_rx) = watch::channel(first);
        tokio::spawn(async move {
            while metrics.changed().await.is_ok() {
                let l = metrics.borrow().current_leader;
                tx.send_if_modified(|v| {
                    let changed = *v != l;
                    *v = l;
                    changed
                });
            }
            tx.send_replace(None);
        });
        let grouper = Grouper::start(raft.clone());
        let ops = MembershipOps {
            raft: raft.clone(),
            clients: clients.clone(),
            lock: Default::default(),
            catch_up: cfg.catch_up_timeout,
            commit_timeout: cfg.request_timeout,
        };
        let (liveness, forward_rx) = Liveness::new();
        let inner = Arc::new(Inner {
            cfg,
            raft,
            sm,
            clients,
            ops,
            leader_rx,
            grouper,
            reads: Default::default(),
            lease: Default::default(),
            liveness: Arc::new(liveness),
            _raft_rt: raft_rt,
        });
        tokio::spawn(forward_keep_alives(Arc::downgrade(&inner), forward_rx));
        Ok(Store { inner })
    }

    /// The tonic service carrying Raft traffic to this member; serve it next to the API.
    pub fn raft_service(&self) -> RaftServer<RaftGrpc> {
        RaftGrpc {
            raft: self.inner.raft.clone(),
            grouper: self.inner.grouper.clone(),
            ops: self.inner.ops.clone(),
            liveness: self.inner.liveness.clone(),
            lease: self.inner.lease.clone(),
            lease_length: self.lease_length(),
            sm: self.inner.sm.clone(),
        }
        .into_server()
    }

    /// Starts a new one-member cluster from this member if its data dir was never part of
    /// one (grow it with [`Store::add_member`]); on a data dir that was, a no-op that only
    /// waits. Waits without a deadline until a leader is known (wrap it in a timeout).
    pub async fn bootstrap(&self) -> Result<(), StoreError> {
        let raft = &self.inner.raft;
        let cfg = &self.inner.cfg;
        if !self.is_initialized().await? {
            let members = BTreeMap::from([(cfg.node_id, BasicNode::new(&cfg.advertise_addr))]);
            match raft.initialize(members).await {
                Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => {
                    return Err(StoreError::Storage(format!(
                        "initializing member {}: {e}",
                        cfg.node_id
                    )));
                }
            }
        }
        self.wait_for_leader().await
    }

    /// For a member started to join an existing cluster: waits (without a deadline) until a
    /// leader has added it (`add-member` on the cluster) and it knows the leader. A member
    /// whose data dir already holds a membership just waits for a leader: a restarted member
    /// rejoins with its stored membership.
    pub async fn join(&self) -> Result<(), StoreError> {
        if !self.is_initialized().await? {
            tracing::info!(
                node = self.inner.cfg.node_id,
                addr = %self.inner.cfg.advertise_addr,
                "waiting to be added to the cluster (add-member {}={})",
                self.inner.cfg.node_id,
                self.inner.cfg.advertise_addr
            );
        }
        self.wait_for_leader().await
    }

    /// True once this member's data dir holds Raft state (a log or a vote).
    pub async fn is_initialized(&self) -> Result<bool, StoreError> {
        self.inner
            .raft
            .is_initialized()
            .await
            .map_err(|e| StoreError::Storage(e.to_string()))
    }

    async fn wait_for_leader(&self) -> Result<(), StoreError> {
        let mut m = self.inner.raft.metrics();
        loop {
            if m.borrow().current_leader.is_some()
                && m.borrow()
                    .membership_config
                    .membership()
                    .voter_ids()
                    .count()
                    > 0
            {
                return Ok(());
            }
            tracing::debug!(node = self.inner.cfg.node_id, "waiting for a leader");
            if m.changed().await.is_err() {
                return Err(StoreError::Shutdown);
            }
        }
    }

    /// Adds member `id` at `addr` (a controller started with an empty data dir, waiting to
    /// join): as a learner first, promoted to voter once it has caught up. Refused with
    /// [`StoreError::Membership`], membership unchanged, when the id or address is taken, the
    /// new member does not answer, answers with another id or already has Raft state, or does
    /// not catch up within `catch_up_timeout`. Runs on the leader (forwarded from followers).
    pub async fn add_member(&self, id: u64, addr: &str) -> Result<(), StoreError> {
        let addr = addr.trim();
        if addr
            .rsplit_once(':')
            .and_then(|(h, p)| (!h.is_empty()).then(|| p.parse::<u16>().ok()).flatten())
            .is_none()
        {
            return Err(StoreError::Invalid(format!(
                "member address {addr:?}: expected HOST:PORT"
            )));
        }
        self.change_membership(MembershipChange::Add {
            id,
            addr: addr.to_string(),
        })
        .await
    }

    /// Removes member `id` (a voter or a learner). Refused with [`StoreError::Membership`],
    /// membership unchanged, when `id` is not a member, is the last voter, or the voters left
    /// would not have a majority that answers now. Removing the leader is allowed: it steps
    /// down once the change is committed and the others elect a new one.
    pub async fn remove_member(&self, id: u64) -> Result<(), StoreError> {
        self.change_membership(MembershipChange::Remove { id })
            .await
    }

    /// Runs a membership change on the leader, retrying across leader changes.
    async fn change_membership(&self, change: MembershipChange) -> Result<(), StoreError> {
        let cfg = &self.inner.cfg;
        let deadline = Instant::now() + cfg.request_timeout + cfg.catch_up_timeout;
        let me = cfg.node_id;
        let mut last_err = StoreError::NoLeader;
        loop {
            if Instant::now() >= deadline {
                return Err(last_err);
            }
            let leader = self.inner.raft.metrics().borrow().current_leader;
            let res = match leader {
                None => Err(StoreError::NoLeader),
                Some(l) if l == me => self.inner.ops.apply(&change).await,
                Some(l) => self.forward_membership(l, &change, deadline).await,
            };
            match res {
                Err(e) if e.is_retryable() => {
                    tracing::debug!(node = me, error = %e, "membership change attempt failed");
                    last_err = e;
                    self.pause(deadline).await;
                }
                other => return other,
            }
        }
    }

    async fn forward_membership(
        &self,
        leader: u64,
        change: &MembershipChange,
        deadline: Instant,
    ) -> Result<(), StoreError> {
        let addr = self
            .leader_addr(leader)
            .ok_or_else(|| StoreError::Unavailable(format!("leader {leader} has no address")))?;
        let mut client = self
            .inner
            .clients
            .client(leader, &addr)
            .map_err(|s| StoreError::Invalid(s.message().into()))?;
        let payload = encode(change)
            .map_err(|e| StoreError::Invalid(format!("encoding membership change: {e}")))?;
        let mut req = tonic::Request::new(payload);
        req.set_timeout(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(100)),
        );
        match client.change_membership(req).await {
            Ok(resp) => decode::<Result<(), StoreError>>(resp.get_ref()).map_err(|e| {
                StoreError::Unavailable(format!("leader {leader} membership reply: {e}"))
            })?,
            Err(s) => Err(StoreError::Unavailable(format!(
                "leader {leader} at {addr}: {}",
                s.message()
            ))),
        }
    }

    /// A consistent copy of every object at one revision (at least as new as every write
    /// acknowledged before the call), for [`Backup::encode`].
    pub async fn backup(&self) -> Result<Backup, StoreError> {
        self.linearize().await?;
        self.inner.sm.export()
    }

    /// Prepares `cfg.data_dir` (which must be missing or empty) to start a new one-member
    /// cluster of member `cfg.node_id` holding `backup`: every object keeps its
    /// resourceVersion, the log continues after `backup.revision` (new writes get larger
    /// revisions) and watches resuming from older revisions are told to re-list. Then
    /// [`Store::open`] it as usual.
    pub fn restore(cfg: &StoreConfig, backup: &Backup) -> Result<(), StoreError> {
        let dir = &cfg.data_dir;
        if let Ok(mut entries) = std::fs::read_dir(dir)
            && entries.next().is_some()
        {
            return Err(StoreError::Invalid(format!(
                "restore into {}: the data dir is not empty (restore only into a new one)",
                dir.display()
            )));
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Storage(format!("creating {}: {e}", dir.display())))?;
        let log_id = openraft::LogId::new(
            openraft::CommittedLeaderId::new(0, cfg.node_id),
            backup.revision,
        );
        let membership = openraft::Membership::new(
            vec![std::collections::BTreeSet::from([cfg.node_id])],
            BTreeMap::from([(cfg.node_id, BasicNode::new(&cfg.advertise_addr))]),
        );
        MemStateMachine::seed(
            dir,
            backup,
            log_id,
            openraft::StoredMembership::new(Some(log_id), membership),
        )?;
        WalLogStore::seed_purged(dir, log_id)?;
        Ok(())
    }

    /// This member's id.
    pub fn node_id(&self) -> u64 {
        self.inner.cfg.node_id
    }

    /// The members (voters and learners) of the membership this member knows, as (id,
    /// advertised address), without asking any of them (see [`Store::status`] for that).
    pub fn members(&self) -> Vec<(u64, String)> {
        self.inner
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect()
    }

    /// True when this member is the leader now.
    pub async fn is_leader(&self) -> bool {
        self.inner.raft.metrics().borrow().current_leader == Some(self.inner.cfg.node_id)
    }

    /// The current leader id, updated on every change (for leader-only loops).
    pub fn leader_changes(&self) -> watch::Receiver<Option<u64>> {
        self.inner.leader_rx.clone()
    }

    /// Records that `name` (a node) was heard from now: kept in memory, forwarded to the
    /// leader in a batch unless this member leads; never written to the log (see
    /// [`crate::liveness`]).
    pub fn keep_alive(&self, name: &str) {
        let leading =
            self.inner.raft.metrics().borrow().current_leader == Some(self.inner.cfg.node_id);
        self.inner.liveness.heard_now(name, leading);
    }

    /// When `name` was last heard from, as far as this member knows (the leader knows of
    /// every keep-alive; a follower pulls the leader's record every second).
    pub fn last_heard(&self, name: &str) -> Option<chrono::DateTime<chrono::Utc>> {
        self.inner.liveness.last_heard(name)
    }

    /// Sends one batch of keep-alives to the leader; `None` when this member leads or no
    /// leader is known.
    async fn send_keep_alives(
        &self,
        req: KeepAliveRequest,
    ) -> Option<Result<Vec<shoal_proto::Heard>, String>> {
        let leader = self.inner.raft.metrics().borrow().current_leader?;
        if leader == self.inner.cfg.node_id {
            return None;
        }
        let Some(addr) = self.leader_addr(leader) else {
            return Some(Err(format!("leader {leader} has no address")));
        };
        let mut client = match self.inner.clients.client(leader, &addr) {
            Ok(c) => c,
            Err(s) => return Some(Err(s.message().to_owned())),
        };
        let mut r = tonic::Request::new(req);
        r.set_timeout(Duration::from_secs(2));
        Some(
            client
                .keep_alive(r)
                .await
                .map(|r| r.into_inner().heard)
                .map_err(|s| format!("leader {leader} at {addr}: {}", s.message())),
        )
    }

    fn leader_addr(&self, id: u64) -> Option<String> {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        m.membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
    }

    /// Waits for any metrics change or `step`, whichever is first (bounded by `deadline`).
    async fn pause(&self, deadline: Instant) {
        let mut m = self.inner.raft.metrics();
        let step = Instant::now() + Duration::from_millis(50);
        let until = step.min(deadline);
        let _ = tokio::time::timeout_at(until, m.changed()).await;
        tokio::time::sleep_until(until.min(Instant::now() + Duration::from_millis(20))).await;
    }

    /// Applies `batch` atomically as one Raft entry and returns one outcome per write.
    ///
    /// On a follower the batch is forwarded to the leader. Failed attempts (no leader,
    /// leadership moved, leader unreachable, leader lost after the batch was delivered) are
    /// repeated for up to `request_timeout`. Every attempt carries the same request id and the
    /// state machine applies a request id at most once (within [`crate::DEDUP_WINDOW`] log
    /// indexes), returning the first outcome to a resend: a write is applied exactly once even
    /// when an attempt's outcome was unknown. If the deadline passes after an attempt whose
    /// outcome is unknown, the result is [`StoreError::Indeterminate`] (it may have been
    /// applied; re-read); otherwise the last retry-able error (`NoLeader`, `Unavailable`).
    pub async fn write(&self, batch: Vec<Write>) -> Result<Vec<WriteOutcome>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut writes = batch;
        for w in &mut writes {
            validate_key(w.key())?;
            match w {
                Write::Create { key, object } | Write::Put { key, object } => {
                    fill_creation_metadata(key, object)?
                }
                Write::Update { key, object, .. } => {
                    if !object.is_object() {
                        return Err(StoreError::Invalid(format!(
                            "object for {key}: expected a JSON object"
                        )));
                    }
                }
                Write::Bind { key, condition, .. } => {
                    if !condition.get("type").is_some_and(Value::is_string) {
                        return Err(StoreError::Invalid(format!(
                            "bind of {key}: the condition needs a string \"type\""
                        )));
                    }
                }
                Write::Delete { .. } | Write::Check { .. } => {}
            }
            if let Some(codec) = &self.inner.cfg.codec {
                match w {
                    Write::Create { key, object }
                    | Write::Put { key, object }
                    | Write::Update { key, object, .. } => {
                        *object = codec.seal(key, std::mem::take(object))?;
                    }
                    Write::Delete { .. } | Write::Check { .. } | Write::Bind { .. } => {}
                }
            }
        }
        let cmd = Command {
            writes: writes
                .into_iter()
                .map(Write::encode)
                .collect::<Result<_, _>>()?,
            request_id: Some(uuid::Uuid::new_v4().to_string()),
            grouped: Vec::new(),
        };
        let size = encode_binary(&cmd)
            .map_err(|e| StoreError::Invalid(format!("encoding write batch: {e}")))?
            .data
            .len();
        if size > MAX_COMMAND_BYTES {
            return Err(StoreError::Invalid(format!(
                "write batch of {size} bytes exceeds the limit of {MAX_COMMAND_BYTES} bytes"
            )));
        }
        let deadline = Instant::now() + self.inner.cfg.request_timeout;
        let me = self.inner.cfg.node_id;
        let mut last_err = StoreError::NoLeader;
        let mut unknown: Option<StoreError> = None;
        loop {
            if Instant::now() >= deadline {
                return Err(unknown.unwrap_or(last_err));
            }
            let (leader, stopped) = {
                let m = self.inner.raft.metrics();
                let m = m.borrow();
                (m.current_leader, m.running_state.is_err())
            };
            if stopped {
                return Err(unknown.unwrap_or(StoreError::Shutdown));
            }
            let attempt = match leader {
                None => Attempt::Retry(StoreError::NoLeader),
                Some(l) if l == me => classify(self.inner.grouper.propose(cmd.clone(), size).await),
                Some(l) => self.forward(l, &cmd, deadline).await,
            };
            match attempt {
                Attempt::Done(r) => return r.and_then(|out| self.open_outcomes(out)),
                Attempt::Retry(e) => {
                    tracing::debug!(node = me, error = %e, "write attempt failed, retrying");
                    if matches!(e, StoreError::Indeterminate(_)) {
                        unknown = Some(e.clone());
                    }
                    last_err = e;
                    self.pause(deadline).await;
                }
            }
        }
    }

    /// Applies each batch as its own request, all or nothing per batch, and returns one
    /// result per batch in order: one batch's failure (a conflict, say) fails only that
    /// batch. The batches are proposed concurrently, so group commit puts them into few Raft
    /// entries. No order among the batches is promised (on the leader they keep the order
    /// given; forwarded from a follower they race), so two batches should not write one key.
    pub async fn write_each(
        &self,
        batches: Vec<Vec<Write>>,
    ) -> Vec<Result<Vec<WriteOutcome>, StoreError>> {
        futures::future::join_all(batches.into_iter().map(|b| self.write(b))).await
    }

    async fn forward(&self, leader: u64, cmd: &Command, deadline: Instant) -> Attempt {
        let Some(addr) = self.leader_addr(leader) else {
            return Attempt::Retry(StoreError::Unavailable(format!(
                "leader {leader} has no address"
            )));
        };
        let mut client = match self.inner.clients.client(leader, &addr) {
            Ok(c) => c,
            Err(s) => return Attempt::Done(Err(StoreError::Invalid(s.message().to_owned()))),
        };
        let (payload, binary) = match self.inner.clients.encode_for(leader, cmd) {
            Ok(p) => p,
            Err(e) => {
                return Attempt::Done(Err(StoreError::Invalid(format!("encoding command: {e}"))));
            }
        };
        let mut req = tonic::Request::new(payload);
        req.set_timeout(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(100)),
        );
        match client.forward(req).await {
            Ok(resp) => match decode::<Proposal>(resp.get_ref()) {
                Ok(r) => classify(r),
                Err(e) => Attempt::Done(Err(StoreError::Indeterminate(format!(
                    "leader {leader} reply: {e}"
                )))),
            },
            Err(s) if never_delivered(&s) => Attempt::Retry(StoreError::Unavailable(format!(
                "leader {leader} at {addr}: {}",
                s.message()
            ))),
            // An older leader could not decode it and applied nothing: the retry is JSON.
            Err(s) if binary && older_member(&s) => {
                self.inner.clients.mark_json_only(leader);
                Attempt::Retry(StoreError::Unavailable(format!(
                    "leader {leader} at {addr}: {}",
                    s.message()
                )))
            }
            Err(s) => Attempt::Retry(StoreError::Indeterminate(format!(
                "forwarding to leader {leader} at {addr}: {}",
                s.message()
            ))),
        }
    }

    /// Makes the next local read linearizable (see [`Consistency::Linearizable`]): joins
    /// the next shared ReadIndex round (`reads.rs`), starting the rounds' driver if none
    /// runs.
    async fn linearize(&self) -> Result<(), StoreError> {
        if self.lease_holds() {
            crate::reads::read_counters().1.inc();
            crate::reads::lease_read_counter().inc();
            return Ok(());
        }
        let (rx, start) = self.inner.reads.join();
        if start {
            let store = self.clone();
            tokio::spawn(async move {
                while let Some(round) = store.inner.reads.take_next() {
                    let r = store.linearize_round().await;
                    round.send_replace(Some(r));
                }
            });
        }
        crate::reads::outcome(rx).await
    }

    /// Whether this member leads and holds a read lease (see `reads.rs`).
    fn lease_holds(&self) -> bool {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        m.current_leader == Some(self.inner.cfg.node_id)
            && self.inner.lease.holds(m.current_term, Instant::now())
    }

    /// How long a read lease lasts after the start of the round that earned it.
    fn lease_length(&self) -> Duration {
        Duration::from_millis(self.inner.cfg.election_timeout_ms.0 / 2)
    }

    /// One ReadIndex round: confirms leadership (on the leader) or asks the leader for its
    /// read index, then waits until this member has applied it.
    async fn linearize_round(&self) -> Result<(), StoreError> {
        let deadline = Instant::now() + self.inner.cfg.request_timeout;
        let me = self.inner.cfg.node_id;
        let mut last_err = StoreError::NoLeader;
        loop {
            if Instant::now() >= deadline {
                return Err(last_err);
            }
            let leader = self.inner.raft.metrics().borrow().current_leader;
            match leader {
                None => last_err = StoreError::NoLeader,
                Some(l) if l == me => {
                    let (term, last_log) = {
                        let m = self.inner.raft.metrics();
                        let m = m.borrow();
                        (m.current_term, m.last_log_index.unwrap_or(0))
                    };
                    let started = Instant::now();
                    match self.inner.raft.ensure_linearizable().await {
                        Ok(_) => {
                            // Also everything in this leader's log when the round began:
                            // a leader restored after a power cut keeps its term without
                            // a new entry, and the committed index it read back may be
                            // older than what it had acknowledged (it is synced lazily).
                            let left = deadline.saturating_duration_since(Instant::now());
                            if let Err(e) = self
                                .inner
                                .raft
                                .wait(Some(left))
                                .applied_index_at_least(Some(last_log), "linearizable read")
                                .await
                            {
                                return Err(StoreError::Unavailable(format!(
                                    "waiting to apply index {last_log}: {e}"
                                )));
                            }
                            self.inner.lease.extend(term, started, self.lease_length());
                            return Ok(());
                        }
                        Err(RaftError::Fatal(_)) => return Err(StoreError::Shutdown),
                        Err(e) => last_err = StoreError::Unavailable(e.to_string()),
                    }
                }
                Some(l) => match self.read_index_from(l, deadline).await {
                    Ok(index) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        return self
                            .inner
                            .raft
                            .wait(Some(left))
                            .applied_index_at_least(Some(index), "linearizable read")
                            .await
                            .map(|_| ())
                            .map_err(|e| {
                                StoreError::Unavailable(format!(
                                    "waiting to apply index {index}: {e}"
                                ))
                            });
                    }
                    Err(e) => last_err = e,
                },
            }
            self.pause(deadline).await;
        }
    }

    async fn read_index_from(&self, leader: u64, deadline: Instant) -> Result<u64, StoreError> {
        let addr = self
            .leader_addr(leader)
            .ok_or_else(|| StoreError::Unavailable(format!("leader {leader} has no address")))?;
        let mut client = self
            .inner
            .clients
            .client(leader, &addr)
            .map_err(|s| StoreError::Invalid(s.message().into()))?;
        let mut req = tonic::Request::new(ReadIndexRequest {});
        req.set_timeout(
            deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_secs(2)),
        );
        client
            .read_index(req)
            .await
            .map(|r| r.get_ref().index)
            .map_err(|s| {
                StoreError::Unavailable(format!(
                    "read index from leader {leader} at {addr}: {}",
                    s.message()
                ))
            })
    }

    /// Reads one object by key.
    pub async fn get(
        &self,
        key: &str,
        consistency: Consistency,
    ) -> Result<Option<Value>, StoreError> {
        if consistency == Consistency::Linearizable {
            self.linearize().await?;
        }
        match self.inner.sm.get(key)? {
            Some(v) => self.open_value(key, v).map(Some),
            None => Ok(None),
        }
    }

    fn open_value(&self, key: &str, v: Value) -> Result<Value, StoreError> {
        match &self.inner.cfg.codec {
            Some(c) => c.open(key, v),
            None => Ok(v),
        }
    }

    fn open_outcomes(&self, out: Vec<WriteOutcome>) -> Result<Vec<WriteOutcome>, StoreError> {
        out.into_iter()
            .map(|mut o| {
                o.object = self.open_value(&o.key, std::mem::take(&mut o.object))?;
                Ok(o)
            })
            .collect()
    }

    /// Lists every object whose key starts with `prefix` and the revision the list reflects
    /// (pass it to [`Store::watch`] to follow changes without gaps).
    pub async fn list(
        &self,
        prefix: &str,
        consistency: Consistency,
    ) -> Result<(Vec<Value>, u64), StoreError> {
        if consistency == Consistency::Linearizable {
            self.linearize().await?;
        }
        let Some(codec) = &self.inner.cfg.codec else {
            return self.inner.sm.list(prefix);
        };
        let (items, rev) = self.inner.sm.list_keyed(prefix)?;
        let items = items
            .into_iter()
            .map(|(key, v)| codec.open(&key, v))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((items, rev))
    }

    /// Follows changes under `prefix` as this member applies them. `None`: from now on;
    /// `Some(r)`: every event with revision > r first (`TooOld` if r left the history).
    pub async fn watch(
        &self,
        prefix: &str,
        after_revision: Option<u64>,
    ) -> Result<WatchStream, StoreError> {
        let mut w = self.inner.sm.watch(prefix, after_revision)?;
        w.codec = self.inner.cfg.codec.clone();
        Ok(w)
    }

    /// [`Store::watch`] of only the changes whose object, after or before the change, holds
    /// a value at a field ([`crate::Trigger`]): the member hands each change only to the
    /// watchers it concerns.
    pub async fn watch_where(
        &self,
        prefix: &str,
        trigger: crate::Trigger,
        after_revision: Option<u64>,
    ) -> Result<WatchStream, StoreError> {
        let mut w = self
            .inner
            .sm
            .watch_where(prefix, Some(trigger), after_revision)?;
        w.codec = self.inner.cfg.codec.clone();
        Ok(w)
    }

    /// Watch streams of this member that are still open (API watches and the reconcilers').
    pub fn watchers(&self) -> usize {
        self.inner.sm.watchers()
    }

    /// The keys under `prefix` in this member's state (no read barrier, no values parsed).
    pub fn local_keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.sm.keys(prefix)
    }

    /// Bytes of events the watch history holds now.
    pub fn watch_history_bytes(&self) -> usize {
        self.inner.sm.watch_history_bytes()
    }

    /// The revision this member has applied up to.
    pub fn applied_revision(&self) -> u64 {
        self.inner.sm.last_applied_index()
    }

    /// Asks every member for its Raft state (1 s timeout each).
    pub async fn status(&self) -> ClusterStatus {
        let m = self.inner.raft.metrics().borrow().clone();
        let me = self.inner.cfg.node_id;
        let matched = m.replication.clone().unwrap_or_default();
        let nodes: Vec<(u64, String)> = m
            .membership_config
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect();
        let voters: std::collections::BTreeSet<u64> =
            m.membership_config.membership().voter_ids().collect();
        let queries = nodes.into_iter().map(|(id, addr)| {
            let voters = voters.clone();
            let clients = self.inner.clients.clone();
            let raft = self.inner.raft.clone();
            let matched_index = matched.get(&id).and_then(|l| l.map(|l| l.index));
            async move {
                let info = if id == me {
                    Ok(crate::network::member_info(&raft))
                } else {
                    match clients.client(id, &addr) {
                        Err(s) => Err(s.message().to_owned()),
                        Ok(mut c) => {
                            let mut req = tonic::Request::new(MemberInfoRequest {});
                            req.set_timeout(Duration::from_secs(1));
                            match tokio::time::timeout(Duration::from_secs(1), c.member_info(req))
                                .await
                            {
                                Ok(Ok(r)) => Ok(r.into_inner()),
                                Ok(Err(s)) => Err(s.message().to_owned()),
                                Err(_) => Err("timed out after 1s".to_owned()),
                            }
                        }
                    }
                };
                match info {
                    Ok(i) => MemberStatus {
                        id,
                        voter: voters.contains(&id),
                        addr,
                        leader: i.state == "Leader",
                        healthy: true,
                        term: i.term,
                        last_log_index: i.last_log_index,
                        last_applied: i.last_applied,
                        matched_index,
                        error: None,
                    },
                    Err(e) => MemberStatus {
                        id,
                        voter: voters.contains(&id),
                        addr,
                        leader: false,
                        healthy: false,
                        term: 0,
                        last_log_index: 0,
                        last_applied: 0,
                        matched_index,
                        error: Some(e),
                    },
                }
            }
        });
        let members = futures::future::join_all(queries).await;
        ClusterStatus {
            node_id: me,
            leader: m.current_leader,
            members,
        }
    }

    /// Builds a snapshot now and waits (up to 30 s) until it is in place.
    pub async fn trigger_snapshot(&self) -> Result<(), StoreError> {
        let target = self.applied_revision();
        self.inner
            .raft
            .trigger()
            .snapshot()
            .await
            .map_err(|_| StoreError::Shutdown)?;
        self.inner
            .raft
            .wait(Some(Duration::from_secs(30)))
            .metrics(
                |m| m.snapshot.is_some_and(|s| s.index >= target),
                "snapshot built",
            )
            .await
            .map(|_| ())
            .map_err(|e| {
                StoreError::Unavailable(format!("snapshot of member {}: {e}", self.node_id()))
            })
    }

    /// Purges the log up to `index` (at most up to the last snapshot) and waits (up to 30 s).
    pub async fn purge_log_upto(&self, index: u64) -> Result<(), StoreError> {
        self.inner
            .raft
            .trigger()
            .purge_log(index)
            .await
            .map_err(|_| StoreError::Shutdown)?;
        self.inner
            .raft
            .wait(Some(Duration::from_secs(30)))
            .metrics(|m| m.purged.is_some_and(|p| p.index >= index), "log purged")
            .await
            .map(|_| ())
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "purging log of member {} to {index}: {e}",
                    self.node_id()
                ))
            })
    }

    /// Stops the Raft node (everything acknowledged is already durable in the log).
    /// Other calls fail afterwards; the data dir can be reopened once every clone of this
    /// `Store` and its service are dropped.
    pub async fn shutdown(&self) -> Result<(), StoreError> {
        self.inner.raft.shutdown().await.map_err(|e| {
            StoreError::Storage(format!("stopping raft of member {}: {e}", self.node_id()))
        })
    }

    /// The underlying openraft handle (metrics, advanced use).
    pub fn raft(&self) -> &StoreRaft {
        &self.inner.raft
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_need_three_parts() {
        assert!(validate_key("Pod/default/web").is_ok());
        assert!(validate_key("Node//n1").is_ok());
        assert!(validate_key("Pod/web").is_err());
        assert!(validate_key("/a/b").is_err());
        assert!(validate_key("Pod/a/").is_err());
    }

    #[test]
    fn members_snapshot_at_different_intervals() {
        assert_eq!(staggered(5000, 1), 5000);
        assert_eq!(staggered(5000, 2), 5625);
        assert_eq!(staggered(5000, 3), 6250);
        // eight members apart wraps around; a tiny interval stays as given
        assert_eq!(staggered(5000, 9), 5000);
        assert_eq!(staggered(4, 3), 4);
    }
}
