//! Membership changes on the leader: add a member (as a learner, promoted to voter once it
//! caught up) or remove one, with the checks that keep a refused change from changing
//! anything (duplicate id or address, unreachable new member, last voter, no quorum left).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};
use serde::{Deserialize, Serialize};
use shoal_proto::{MemberInfoRequest, MemberInfoResponse};

use crate::StoreError;
use crate::network::PeerClients;
use crate::types::StoreRaft;

/// A membership change asked of the leader (travels in the `ChangeMembership` RPC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum MembershipChange {
    /// Add member `id` reachable at `addr`.
    Add {
        /// Raft id of the new member.
        id: u64,
        /// Its advertised `host:port`.
        addr: String,
    },
    /// Remove member `id`.
    Remove {
        /// Raft id of the member to remove.
        id: u64,
    },
}

/// How long a new member's reachability probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs membership changes on this member when it leads; one at a time.
#[derive(Clone)]
pub(crate) struct MembershipOps {
    pub(crate) raft: StoreRaft,
    pub(crate) clients: PeerClients,
    pub(crate) lock: Arc<tokio::sync::Mutex<()>>,
    /// How long a new learner may take to catch up before the add is undone.
    pub(crate) catch_up: Duration,
    /// Bound on each membership log commit.
    pub(crate) commit_timeout: Duration,
}

impl std::fmt::Debug for MembershipOps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MembershipOps")
            .field("catch_up", &self.catch_up)
            .finish_non_exhaustive()
    }
}

/// Asks the member at `addr` for its Raft state.
pub(crate) async fn probe(
    clients: &PeerClients,
    id: u64,
    addr: &str,
    timeout: Duration,
) -> Result<MemberInfoResponse, String> {
    let mut c = clients
        .client(id, addr)
        .map_err(|s| s.message().to_owned())?;
    let mut req = tonic::Request::new(MemberInfoRequest {});
    req.set_timeout(timeout);
    match tokio::time::timeout(timeout, c.member_info(req)).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(s.message().to_owned()),
        Err(_) => Err(format!("timed out after {}s", timeout.as_secs_f64())),
    }
}

fn write_err(e: RaftError<u64, ClientWriteError<u64, BasicNode>>) -> StoreError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            StoreError::Unavailable(format!(
                "leadership moved to {:?} during a membership change",
                f.leader_id
            ))
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            StoreError::Membership(e.to_string())
        }
        RaftError::Fatal(e) => StoreError::Unavailable(format!("raft stopped: {e}")),
    }
}

impl MembershipOps {
    fn me(&self) -> u64 {
        self.raft.metrics().borrow().id
    }

    /// The current membership's voters and nodes, if this member leads and no change is in
    /// progress.
    fn current(&self) -> Result<(BTreeSet<u64>, BTreeMap<u64, String>), StoreError> {
        let m = self.raft.metrics().borrow().clone();
        if m.current_leader != Some(m.id) {
            return Err(StoreError::Unavailable(format!(
                "member {} is not the leader",
                m.id
            )));
        }
        let mem = m.membership_config.membership();
        if mem.get_joint_config().len() > 1 {
            return Err(StoreError::Membership(
                "another membership change is in progress; retry".into(),
            ));
        }
        let voters = mem.voter_ids().collect();
        let nodes = mem.nodes().map(|(id, n)| (*id, n.addr.clone())).collect();
        Ok((voters, nodes))
    }

    async fn change(&self, c: ChangeMembers<u64, BasicNode>) -> Result<(), StoreError> {
        match tokio::time::timeout(self.commit_timeout, self.raft.change_membership(c, false)).await
        {
            Ok(r) => r.map(|_| ()).map_err(write_err),
            Err(_) => Err(StoreError::Unavailable(format!(
                "membership change not committed within {}s (is a quorum up?)",
                self.commit_timeout.as_secs()
            ))),
        }
    }

    /// Applies `change` if this member leads (else `Unavailable`, so that callers retry on
    /// the leader).
    pub(crate) async fn apply(&self, change: &MembershipChange) -> Result<(), StoreError> {
        let _turn = self.lock.lock().await;
        match change {
            MembershipChange::Add { id, addr } => self.add(*id, addr).await,
            MembershipChange::Remove { id } => self.remove(*id).await,
        }
    }

    async fn add(&self, id: u64, addr: &str) -> Result<(), StoreError> {
        if id == 0 {
            return Err(StoreError::Membership("member id must be non-zero".into()));
        }
        let (_, nodes) = self.current()?;
        if let Some(a) = nodes.get(&id) {
            return Err(StoreError::Membership(format!(
                "member id {id} is already in use (by {a})"
            )));
        }
        if let Some((other, _)) = nodes.iter().find(|(_, a)| a.as_str() == addr) {
            return Err(StoreError::Membership(format!(
                "address {addr} is already used by member {other}"
            )));
        }
        let info = probe(&self.clients, id, addr, PROBE_TIMEOUT)
            .await
            .map_err(|e| {
                StoreError::Membership(format!(
                    "new member {id} at {addr} is unreachable: {e} (start it with --join first)"
                ))
            })?;
        if info.id != id {
            return Err(StoreError::Membership(format!(
                "the controller at {addr} is member {}, not {id}",
                info.id
            )));
        }
        if info.term > 0 || info.last_log_index > 0 {
            return Err(StoreError::Membership(format!(
                "member {id} at {addr} already has Raft state (term {}, last log index {}): \
                 it belongs to a cluster; start it with an empty --data-dir and --join",
                info.term, info.last_log_index
            )));
        }
        let node = BasicNode::new(addr);
        self.change(ChangeMembers::AddNodes(BTreeMap::from([(id, node)])))
            .await?;
        let target = self.raft.metrics().borrow().last_log_index;
        tracing::info!(id, addr, "learner added; waiting for it to catch up");
        let caught_up = self
            .raft
            .wait(Some(self.catch_up))
            .metrics(
                |m| {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(&id).copied().flatten())
                        .map(|l| l.index)
                        >= target
                },
                "new learner caught up",
            )
            .await;
        if let Err(e) = caught_up {
            tracing::warn!(id, addr, error = %e, "learner did not catch up; removing it");
            let undo = self
                .change(ChangeMembers::RemoveNodes(BTreeSet::from([id])))
                .await;
            return Err(StoreError::Membership(format!(
                "new member {id} at {addr} did not catch up within {}s; {}",
                self.catch_up.as_secs(),
                match undo {
                    Ok(()) => "it was removed again".to_string(),
                    Err(u) => format!("removing it again failed too: {u}"),
                }
            )));
        }
        self.change(ChangeMembers::AddVoterIds(BTreeSet::from([id])))
            .await?;
        tracing::info!(id, addr, "member promoted to voter");
        Ok(())
    }

    async fn remove(&self, id: u64) -> Result<(), StoreError> {
        let (voters, nodes) = self.current()?;
        if !nodes.contains_key(&id) {
            return Err(StoreError::Membership(format!(
                "{id} is not a member (members: {:?})",
                nodes.keys().collect::<Vec<_>>()
            )));
        }
        if !voters.contains(&id) {
            return self
                .change(ChangeMembers::RemoveNodes(BTreeSet::from([id])))
                .await;
        }
        if voters.len() == 1 {
            return Err(StoreError::Membership(format!(
                "member {id} is the last voter; a cluster cannot remove its last member"
            )));
        }
        // The change commits in the joint config (old and new voters) and then in the new
        // one: both need a majority of members that answer now.
        let me = self.me();
        let mut alive = BTreeSet::from([me]);
        let probes = voters.iter().filter(|v| **v != me).map(|v| {
            let addr = nodes.get(v).cloned().unwrap_or_default();
            let clients = self.clients.clone();
            async move { (*v, probe(&clients, *v, &addr, PROBE_TIMEOUT).await.is_ok()) }
        });
        for (v, ok) in futures::future::join_all(probes).await {
            if ok {
                alive.insert(v);
            }
        }
        let new: BTreeSet<u64> = voters.iter().copied().filter(|v| *v != id).collect();
        let alive_new = new.intersection(&alive).count();
        let alive_old = voters.intersection(&alive).count();
        if alive_new * 2 <= new.len() || alive_old * 2 <= voters.len() {
            let down: Vec<u64> = voters.difference(&alive).copied().collect();
            return Err(StoreError::Membership(format!(
                "removing member {id} would leave {} voters of which {alive_new} answer \
                 (not answering: {down:?}): no quorum",
                new.len()
            )));
        }
        self.change(ChangeMembers::RemoveVoters(BTreeSet::from([id])))
            .await?;
        tracing::info!(id, "member removed");
        Ok(())
    }
}
