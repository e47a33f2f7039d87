//! The Raft transport over tonic: openraft messages travel in `RaftPayload.data`, requests
//! and forwarded writes in the binary encoding of [`crate::wire`], replies as JSON.
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

use crate::StoreError;
use crate::group::{Grouper, Proposal};
use crate::types::{Command, StoreRaft, TypeConfig};

/// Largest gRPC message accepted or sent on the Raft service (snapshot chunks, big batches).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// AppendEntries carrying several entries are split (openraft retries with fewer
/// entries) above this size, so that one call stays short on a slow machine.
pub const SPLIT_APPEND_BYTES: usize = 1024 * 1024;

/// Largest encoded write batch accepted by [`crate::Store::write`] (one Raft entry).
pub const MAX_COMMAND_BYTES: usize = 16 * 1024 * 1024;

/// Encodes a reply or a membership change (JSON: they carry documents and errors).
pub(crate) fn encode<T: Serialize>(v: &T) -> Result<RaftPayload, StoreError> {
    Ok(RaftPayload {
        data: serde_json::to_vec(v).map_err(|e| StoreError::Invalid(format!("encoding: {e}")))?,
    })
}

/// Encodes a Raft request or a forwarded write (binary, [`crate::wire`]).
pub(crate) fn encode_binary<T: Serialize>(v: &T) -> Result<RaftPayload, StoreError> {
    Ok(RaftPayload {
        data: crate::wire::encode(v).map_err(|e| StoreError::Invalid(format!("encoding: {e}")))?,
    })
}

/// Decodes a payload, binary or JSON.
pub(crate) fn decode<T: DeserializeOwned>(p: &RaftPayload) -> Result<T, StoreError> {
    crate::wire::decode(&p.data).map_err(StoreError::Invalid)
}

fn bad_request(what: &str, e: StoreError) -> Status {
    Status::invalid_argument(format!("decoding {what} payload: {e}"))
}

fn encode_status<T: Serialize>(what: &str, v: &T) -> Result<Response<RaftPayload>, Status> {
    encode(v)
        .map(Response::new)
        .map_err(|e| Status::internal(format!("encoding {what} reply: {e}")))
}

type ClientMap = HashMap<(u64, String), RaftClient<Channel>>;

/// How long a member that refused a binary payload is sent JSON before binary is tried
/// again (it may have been upgraded meanwhile).
const JSON_ONLY_FOR: Duration = Duration::from_secs(60);

/// Cached lazily-connecting gRPC clients to the other members, by id and address, over
/// mutual TLS; and which members get JSON payloads (an older version during a rolling
/// upgrade, [`older_member`]).
#[derive(Debug, Clone)]
pub(crate) struct PeerClients {
    map: Arc<Mutex<ClientMap>>,
    json_only: Arc<Mutex<HashMap<u64, std::time::Instant>>>,
    tls: Arc<rustls::ClientConfig>,
}

impl PeerClients {
    /// Clients that connect with `tls`.
    pub(crate) fn new(tls: Arc<rustls::ClientConfig>) -> PeerClients {
        PeerClients {
            map: Default::default(),
            json_only: Default::default(),
            tls,
        }
    }

    /// The encoding of a request to member `id`: binary, unless it refused binary lately.
    pub(crate) fn encode_for<T: Serialize>(
        &self,
        id: u64,
        v: &T,
    ) -> Result<(RaftPayload, bool), StoreError> {
        let json = self.json_only.lock().is_ok_and(|m| {
            m.get(&id)
                .is_some_and(|since| since.elapsed() < JSON_ONLY_FOR)
        });
        if json {
            encode(v).map(|p| (p, false))
        } else {
            encode_binary(v).map(|p| (p, true))
        }
    }

    /// Member `id` refused a binary payload: send it JSON for a while.
    pub(crate) fn mark_json_only(&self, id: u64) {
        tracing::warn!(
            member = id,
            "member refused a binary Raft payload (an older version?): sending it JSON"
        );
        if let Ok(mut m) = self.json_only.lock() {
            m.insert(id, std::time::Instant::now());
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

/// True when a member refused a payload it could not decode: a member from before the
/// binary encoding ([`crate::wire`]) answers a binary payload so, without applying
/// anything, and the request may be sent again as JSON.
pub(crate) fn older_member(s: &Status) -> bool {
    s.code() == tonic::Code::InvalidArgument
        && s.message().starts_with("decoding ")
        && s.message().contains(" payload: ")
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
        let (payload, binary) = self
            .clients
            .encode_for(self.target, req)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
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
            if binary && older_member(&s) {
                // openraft sends again soon; that attempt is JSON.
                self.clients.mark_json_only(self.target);
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_of_an_older_member_is_told_from_other_failures() {
        // What a member from before the binary encoding answers (its serde_json error).
        let old = Status::invalid_argument(
            "decoding append_entries payload: expected value at line 1 column 1",
        );
        assert!(older_member(&old));
        // This version answers an undecodable payload the same way.
        let e = decode::<Command>(&RaftPayload {
            data: vec![crate::wire::BINARY, 0xff, 0xff],
        })
        .unwrap_err();
        assert!(older_member(&bad_request("forward", e)));
        for other in [
            Status::invalid_argument(
                "forward: a forwarded request must not carry grouped requests",
            ),
            Status::unavailable("decoding append_entries payload: x"),
            Status::internal("encoding append_entries reply: x"),
        ] {
            assert!(!older_member(&other), "{other:?}");
        }
    }

    #[test]
    fn a_member_that_refused_binary_is_sent_json_until_the_mark_expires() {
        let clients = PeerClients::new(crate::testing::test_peer_tls(1));
        let vote = VoteRequest::new(openraft::Vote::new(1, 1), None);
        let (p, binary) = clients.encode_for(2, &vote).unwrap();
        assert!(binary && p.data[0] == crate::wire::BINARY);
        clients.mark_json_only(2);
        let (p, binary) = clients.encode_for(2, &vote).unwrap();
        assert!(!binary && p.data[0] == b'{');
        assert_eq!(decode::<VoteRequest<u64>>(&p).unwrap(), vote);
        // Other members still get binary.
        assert!(clients.encode_for(3, &vote).unwrap().1);
        // After the mark's time, binary again.
        clients
            .json_only
            .lock()
            .unwrap()
            .insert(2, std::time::Instant::now() - JSON_ONLY_FOR);
        assert!(clients.encode_for(2, &vote).unwrap().1);
    }
}
