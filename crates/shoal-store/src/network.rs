//! The Raft transport over tonic: openraft messages travel as JSON in `RaftPayload.data`.
//! This module is the one place that converts between openraft types and protobuf.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, ServerState};
use serde::Serialize;
use serde::de::DeserializeOwned;
use shoal_proto::raft_client::RaftClient;
use shoal_proto::raft_server::{Raft as RaftRpc, RaftServer};
use shoal_proto::{
    KeepAliveRequest, KeepAliveResponse, MemberInfoRequest, MemberInfoResponse, RaftPayload,
    ReadIndexRequest, ReadIndexResponse,
};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::group::{Grouper, Proposal};
use crate::types::{Command, StoreRaft, TypeConfig};

/// Largest gRPC message accepted or sent on the Raft service (snapshot chunks, big batches).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// AppendEntries carrying several entries are split (openraft retries with fewer
/// entries) above this size, so that one call stays short on a slow machine.
pub const SPLIT_APPEND_BYTES: usize = 1024 * 1024;

/// Largest encoded write batch accepted by [`crate::Store::write`] (one Raft entry).
pub const MAX_COMMAND_BYTES: usize = 16 * 1024 * 1024;

/// Encodes a message into a payload.
pub(crate) fn encode<T: Serialize>(v: &T) -> Result<RaftPayload, serde_json::Error> {
    Ok(RaftPayload {
        data: serde_json::to_vec(v)?,
    })
}

/// Decodes a payload.
pub(crate) fn decode<T: DeserializeOwned>(p: &RaftPayload) -> Result<T, serde_json::Error> {
    serde_json::from_slice(&p.data)
}

fn bad_request(what: &str, e: serde_json::Error) -> Status {
    Status::invalid_argument(format!("decoding {what} payload: {e}"))
}

fn encode_status<T: Serialize>(what: &str, v: &T) -> Result<Response<RaftPayload>, Status> {
    encode(v)
        .map(Response::new)
        .map_err(|e| Status::internal(format!("encoding {what} reply: {e}")))
}

type ClientMap = HashMap<(u64, String), RaftClient<Channel>>;

/// Cached lazily-connecting gRPC clients to the other members, by id and address, over
/// mutual TLS.
#[derive(Debug, Clone)]
pub(crate) struct PeerClients {
    map: Arc<Mutex<ClientMap>>,
    tls: Arc<rustls::ClientConfig>,
}

impl PeerClients {
    /// Clients that connect with `tls`.
    pub(crate) fn new(tls: Arc<rustls::ClientConfig>) -> PeerClients {
        PeerClients {
            map: Default::default(),
            tls,
        }
    }

    /// A client for member `id` at `addr` (`host:port`); connects on first use.
    pub(crate) fn client(&self, id: u64, addr: &str) -> Result<RaftClient<Channel>, Status> {
        let key = (id, addr.to_owned());
        if let Ok(map) = self.map.lock()
            && let Some(c) = map.get(&key)
        {
            return Ok(c.clone());
        }
        let ep = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Status::invalid_argument(format!("member {id} address {addr}: {e}")))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true);
        let connector = shoal_pki::tls::Connector::new(self.tls.clone(), Duration::from_secs(2));
        let c = RaftClient::new(ep.connect_with_connector_lazy(connector))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        if let Ok(mut map) = self.map.lock() {
            map.insert(key, c.clone());
        }
        Ok(c)
    }
}

/// True when a gRPC failure proves the request never reached the peer (safe to resend).
pub(crate) fn never_delivered(s: &Status) -> bool {
    if s.code() != tonic::Code::Unavailable {
        return false;
    }
    let m = s.message().to_ascii_lowercase();
    m.contains("connect") || m.contains("refused")
}

/// Builds one [`RaftPeer`] per replication target.
#[derive(Debug, Clone)]
pub struct NetworkFactory {
    pub(crate) clients: PeerClients,
}

/// openraft's view of one remote member.
#[derive(Debug)]
pub struct RaftPeer {
    target: u64,
    addr: String,
    clients: PeerClients,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = RaftPeer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Self::Network {
        RaftPeer {
            target,
            addr: node.addr.clone(),
            clients: self.clients.clone(),
        }
    }
}

impl RaftPeer {
    async fn call<Req, Resp, E>(
        &self,
        req: &Req,
        option: &RPCOption,
        kind: Rpc,
        entries: usize,
    ) -> Result<Resp, RPCError<u64, BasicNode, RaftError<u64, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let payload = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if payload.data.len() > SPLIT_APPEND_BYTES && entries > 1 {
            // openraft retries with at most this many entries.
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint((entries / 2) as u64),
            ));
        }
        let mut client = self
            .clients
            .client(self.target, &self.addr)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let payload_len = payload.data.len();
        let mut request = Request::new(payload);
        // openraft's TTL is the heartbeat interval; an append that carries data
        // (or a snapshot chunk) gets time proportional to its size instead, or a
        // loaded machine never finishes sending a large entry and replication stalls.
        let ttl = if entries == 0 {
            option.hard_ttl()
        } else {
            let by_size = Duration::from_millis(500 + (payload_len / 4096) as u64);
            option.hard_ttl().max(by_size)
        };
        request.set_timeout(ttl);
        let reply = match kind {
            Rpc::Append => client.append_entries(request).await,
            Rpc::Vote => client.vote(request).await,
            Rpc::Snapshot => client.install_snapshot(request).await,
        };
        let reply = reply.map_err(|s| {
            if s.code() == tonic::Code::Unavailable {
                RPCError::Unreachable(Unreachable::new(&s))
            } else {
                RPCError::Network(NetworkError::new(&s))
            }
        })?;
        let res: Result<Resp, RaftError<u64, E>> =
            decode(&reply.into_inner()).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        res.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                BasicNode::new(&self.addr),
                e,
            ))
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum Rpc {
    Append,
    Vote,
    Snapshot,
}

impl RaftNetwork<TypeConfig> for RaftPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let n = rpc.entries.len();
        self.call(&rpc, &option, Rpc::Append, n).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.call(&rpc, &option, Rpc::Snapshot, 0).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call(&rpc, &option, Rpc::Vote, 0).await
    }
}

/// The tonic service of one member: answers Raft RPCs, forwarded writes and membership
/// changes, ReadIndex and MemberInfo. Mount it with [`crate::Store::raft_service`].
#[derive(Clone)]
pub struct RaftGrpc {
    pub(crate) raft: StoreRaft,
    pub(crate) grouper: Grouper,
    pub(crate) ops: crate::membership::MembershipOps,
    pub(crate) liveness: std::sync::Arc<crate::liveness::Liveness>,
    pub(crate) lease: std::sync::Arc<crate::reads::Lease>,
    pub(crate) lease_length: std::time::Duration,
    pub(crate) sm: crate::state_machine::MemStateMachine,
}

impl std::fmt::Debug for RaftGrpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftGrpc")
            .field("node_id", &self.raft.metrics().borrow().id)
            .finish()
    }
}

impl RaftGrpc {
    /// Wraps the service for a tonic server, with large message limits.
    pub(crate) fn into_server(self) -> RaftServer<RaftGrpc> {
        RaftServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

fn server_state_name(s: ServerState) -> &'static str {
    match s {
        ServerState::Leader => "Leader",
        ServerState::Follower => "Follower",
        ServerState::Candidate => "Candidate",
        ServerState::Learner => "Learner",
        ServerState::Shutdown => "Shutdown",
    }
}

/// This member's MemberInfo answer, from its Raft metrics.
pub(crate) fn member_info(raft: &StoreRaft) -> MemberInfoResponse {
    let m = raft.metrics().borrow().clone();
    MemberInfoResponse {
        id: m.id,
        term: m.current_term,
        last_log_index: m.last_log_index.unwrap_or(0),
        last_applied: m.last_applied.map_or(0, |l| l.index),
        current_leader: m.current_leader.unwrap_or(0),
        state: server_state_name(m.state).to_owned(),
    }
}

#[tonic::async_trait]
impl RaftRpc for RaftGrpc {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let req: AppendEntriesRequest<TypeConfig> =
            decode(request.get_ref()).map_err(|e| bad_request("append_entries", e))?;
        let res = self.raft.append_entries(req).await;
        encode_status("append_entries", &res)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let req: VoteRequest<u64> =
            decode(request.get_ref()).map_err(|e| bad_request("vote", e))?;
        let res = self.raft.vote(req).await;
        encode_status("vote", &res)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let req: InstallSnapshotRequest<TypeConfig> =
            decode(request.get_ref()).map_err(|e| bad_request("install_snapshot", e))?;
        let res = self.raft.install_snapshot(req).await;
        encode_status("install_snapshot", &res)
    }

    async fn forward(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let bytes = request.get_ref().data.len();
        let cmd: Command = decode(request.get_ref()).map_err(|e| bad_request("forward", e))?;
        if !cmd.grouped.is_empty() {
            return Err(Status::invalid_argument(
                "forward: a forwarded request must not carry grouped requests",
            ));
        }
        let res: Proposal = self.grouper.propose(cmd, bytes).await;
        encode_status("forward", &res)
    }

    async fn read_index(
        &self,
        _request: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        // Within this leader's read lease its applied index covers every acknowledged write
        // (see `reads.rs`): no round. The state machine's own index, not the metrics': a
        // write is answered right after it is applied, before the metrics catch up.
        let leased = {
            let m = self.raft.metrics();
            let m = m.borrow();
            m.current_leader == Some(m.id)
                && self
                    .lease
                    .holds(m.current_term, tokio::time::Instant::now())
        };
        if leased {
            crate::reads::lease_read_counter().inc();
            return Ok(Response::new(ReadIndexResponse {
                index: self.sm.last_applied_index(),
            }));
        }
        let (term, last_log) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            (m.current_term, m.last_log_index.unwrap_or(0))
        };
        let started = tokio::time::Instant::now();
        match self.raft.get_read_log_id().await {
            Ok((read, applied)) => {
                // The read index covers everything in this leader's log when the request
                // came: a leader restored after a power cut keeps its term without a new
                // entry, and the committed index it read back may be older than what it had
                // acknowledged (it is synced lazily).
                let index = read.map_or(0, |l| l.index).max(last_log);
                // A lease only once all of that is applied here.
                if applied.map_or(0, |l| l.index) >= index {
                    self.lease.extend(term, started, self.lease_length);
                }
                Ok(Response::new(ReadIndexResponse { index }))
            }
            Err(e) => Err(Status::unavailable(format!(
                "read index on member {}: {e}",
                self.raft.metrics().borrow().id
            ))),
        }
    }

    async fn keep_alive(
        &self,
        request: Request<KeepAliveRequest>,
    ) -> Result<Response<KeepAliveResponse>, Status> {
        let req = request.into_inner();
        self.liveness
            .record(req.names, chrono::Utc::now().timestamp_millis());
        let heard = if req.want_heard {
            self.liveness.all()
        } else {
            Vec::new()
        };
        Ok(Response::new(KeepAliveResponse { heard }))
    }

    async fn member_info(
        &self,
        _request: Request<MemberInfoRequest>,
    ) -> Result<Response<MemberInfoResponse>, Status> {
        Ok(Response::new(member_info(&self.raft)))
    }

    async fn change_membership(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let change: crate::membership::MembershipChange =
            decode(request.get_ref()).map_err(|e| bad_request("change_membership", e))?;
        let res: Result<(), crate::StoreError> = self.ops.apply(&change).await;
        encode_status("change_membership", &res)
    }
}
