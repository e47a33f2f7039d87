//! The `Proxy` gRPC service: `logs`, `exec`, `attach`, `port-forward` and `stats` reach the pod's agent through the
//! controller, so users need to reach only a controller. The pod's `spec.nodeName` names the
//! node; the Node object's `status.agentEndpoint` is the agent's `host:port`.
//!
//! `build` and `commit` run on an agent too (a build on `--node` or the node
//! [`pick_build_node`] chooses; a commit on the pod's node); the agent sends the image back
//! as a tarball, which the controller imports into the cluster's image store only when the
//! build succeeded (docs/build.md).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use serde_json::Value;
use shoal_proto::agent_client::AgentClient;
use shoal_proto::proxy_server::{Proxy, ProxyServer};
use shoal_proto::{
    BuildInput, BuildOutput, CommitRequest, ExecInput, ExecOutput, LogChunk, LogsRequest,
    NodeStats, PortForwardInput, PortForwardOutput, StatsRequest, StatsResponse, build_input,
    build_output, exec_input, port_forward_input,
};
use shoal_store::{Consistency, Store, StoreError};
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

use crate::authz::{Verb, check_verb};

/// How long connecting to an agent may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one node's stats may take when fanning out.
const STATS_TIMEOUT: Duration = Duration::from_secs(3);

/// What can go wrong proxying to an agent.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The pod does not exist.
    #[error("pod {name:?} not found in namespace {namespace:?}")]
    PodNotFound {
        /// Namespace.
        namespace: String,
        /// Pod name.
        name: String,
    },
    /// The pod has no node yet.
    #[error("pod {namespace}/{name} is not scheduled to a node yet")]
    NotScheduled {
        /// Namespace.
        namespace: String,
        /// Pod name.
        name: String,
    },
    /// The node object does not exist.
    #[error("node {0:?} not found")]
    NodeNotFound(String),
    /// The node has not published its agent's address.
    #[error(
        "node {0:?} has no agent endpoint (status.agentEndpoint is not set; is its agent running?)"
    )]
    NoEndpoint(String),
    /// The agent could not be reached.
    #[error("agent of node {node:?} at {addr} is unreachable: {message}")]
    Unreachable {
        /// Node name.
        node: String,
        /// Agent address.
        addr: String,
        /// Transport error.
        message: String,
    },
    /// The agent answered with an error.
    #[error("node {node:?}: {status}", status = .status.message())]
    Agent {
        /// Node name.
        node: String,
        /// The agent's status.
        status: Status,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Converts a proxy error to the gRPC status a client sees (the only such place).
pub fn to_status(e: &ProxyError) -> Status {
    match e {
        ProxyError::Invalid(_) => Status::invalid_argument(e.to_string()),
        ProxyError::PodNotFound { .. } | ProxyError::NodeNotFound(_) => {
            Status::not_found(e.to_string())
        }
        ProxyError::NotScheduled { .. } | ProxyError::NoEndpoint(_) => {
            Status::failed_precondition(e.to_string())
        }
        ProxyError::Unreachable { .. } => Status::unavailable(e.to_string()),
        ProxyError::Agent { status, .. } => Status::new(status.code(), e.to_string()),
        ProxyError::Store(s) if s.is_retryable() => Status::unavailable(s.to_string()),
        ProxyError::Store(s) => Status::internal(s.to_string()),
    }
}

impl From<ProxyError> for Status {
    fn from(e: ProxyError) -> Self {
        to_status(&e)
    }
}

/// Where a pod's agent is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentTarget {
    /// Node name.
    pub node: String,
    /// `host:port` of the agent.
    pub addr: String,
}

/// The `Proxy` service of one controller.
#[derive(Debug, Clone)]
pub struct ProxyService {
    store: Store,
    /// TLS identity (the agent accepts only controllers; we accept only the pod's node).
    tls: crate::pki::ControllerTls,
    /// One lazily connecting channel per (node, agent endpoint).
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// The cluster's image store: where builds and commits land.
    images: Option<crate::images::ImagesService>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// An agent's response stream passed on, its errors naming the node.
fn relay<T: Send + 'static>(node: String, upstream: Streaming<T>) -> BoxStream<T> {
    Box::pin(upstream.map(move |r| {
        r.map_err(|s| {
            to_status(&ProxyError::Agent {
                node: node.clone(),
                status: s,
            })
        })
    }))
}

async fn get_local_first(store: &Store, key: &str) -> Result<Option<Value>, StoreError> {
    match store.get(key, Consistency::Local).await? {
        Some(v) => Ok(Some(v)),
        None => store.get(key, Consistency::Linearizable).await,
    }
}

/// The verified identity of the caller.
fn caller<T>(req: &Request<T>) -> Result<shoal_pki::Identity, Status> {
    shoal_pki::layer::identity_of(req)
        .ok_or_else(|| Status::unauthenticated("a client certificate of this cluster is required"))
}

/// Logs need read access to the pod's namespace; exec and port-forward write access (as
/// `pods/exec` and `pods/portforward` in Kubernetes: `edit`, not `view`).
fn check_pod_access(who: &shoal_pki::Identity, verb: Verb, namespace: &str) -> Result<(), Status> {
    let ns = if namespace.is_empty() {
        "default"
    } else {
        namespace
    };
    check_verb(who, verb, shoal_api::Kind::Pod, ns)
}

/// Whether a status from a first call means the agent could not be reached at all.
fn is_transport_failure(s: &Status) -> bool {
    let m = s.message().to_ascii_lowercase();
    s.code() == tonic::Code::Unavailable
        && (m.contains("transport")
            || m.contains("connect")
            || m.contains("dns")
            || m.contains("tls"))
}

impl ProxyService {
    /// A proxy over `store`.
    pub fn new(store: Store, tls: crate::pki::ControllerTls) -> Self {
        Self {
            store,
            tls,
            channels: Arc::new(Mutex::new(HashMap::new())),
            images: None,
        }
    }

    /// Builds and commits import their images into `images`.
    pub fn with_images(mut self, images: crate::images::ImagesService) -> Self {
        self.images = Some(images);
        self
    }

    /// The node a build runs on: `--node`, else [`pick_build_node`]'s choice.
    async fn build_target(&self, node: &str) -> Result<AgentTarget, ProxyError> {
        if !node.is_empty() {
            return self.node_target(node).await;
        }
        let (nodes, _) = self.store.list("Node/", Consistency::Local).await?;
        let (pods, _) = self.store.list("Pod/", Consistency::Local).await?;
        let mut load: HashMap<String, usize> = HashMap::new();
        for p in &pods {
            if let Some(n) = p.pointer("/spec/nodeName").and_then(Value::as_str) {
                *load.entry(n.to_string()).or_default() += 1;
            }
        }
        let name = pick_build_node(&nodes, &load).ok_or_else(|| {
            ProxyError::Invalid(
                "build: no Ready, schedulable node with an agent to build on (name one with --node)"
                    .into(),
            )
        })?;
        let v = nodes
            .iter()
            .find(|n| n.pointer("/metadata/name").and_then(Value::as_str) == Some(name.as_str()))
            .ok_or_else(|| ProxyError::NodeNotFound(name.clone()))?;
        target_of_node(&name, v)
    }

    /// The tonic server for this service.
    pub fn into_server(self) -> ProxyServer<Self> {
        ProxyServer::new(self)
    }

    /// The node and agent address of a node by name.
    pub async fn node_target(&self, node: &str) -> Result<AgentTarget, ProxyError> {
        let v = get_local_first(&self.store, &format!("Node//{node}"))
            .await?
            .ok_or_else(|| ProxyError::NodeNotFound(node.to_string()))?;
        target_of_node(node, &v)
    }

    /// The node and agent address of a pod.
    pub async fn pod_target(&self, namespace: &str, pod: &str) -> Result<AgentTarget, ProxyError> {
        if pod.is_empty() {
            return Err(ProxyError::Invalid("pod name is empty".into()));
        }
        let namespace = if namespace.is_empty() {
            "default"
        } else {
            namespace
        };
        let v = get_local_first(&self.store, &format!("Pod/{namespace}/{pod}"))
            .await?
            .ok_or_else(|| ProxyError::PodNotFound {
                namespace: namespace.to_string(),
                name: pod.to_string(),
            })?;
        let node = v
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if node.is_empty() {
            return Err(ProxyError::NotScheduled {
                namespace: namespace.to_string(),
                name: pod.to_string(),
            });
        }
        self.node_target(node).await
    }

    /// The (cached) client of an agent.
    fn client(&self, t: &AgentTarget) -> Result<AgentClient<Channel>, ProxyError> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = map.get(&t.addr) {
            return Ok(AgentClient::new(ch.clone()));
        }
        let tls = self
            .tls
            .agent_client(&t.node)
            .map_err(|e| ProxyError::Unreachable {
                node: t.node.clone(),
                addr: t.addr.clone(),
                message: format!("TLS settings: {e}"),
            })?;
        let ep = Endpoint::from_shared(format!("http://{}", t.addr))
            .map_err(|e| ProxyError::Unreachable {
                node: t.node.clone(),
                addr: t.addr.clone(),
                message: format!("bad address: {e}"),
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        let ch =
            ep.connect_with_connector_lazy(shoal_pki::tls::Connector::new(tls, CONNECT_TIMEOUT));
        map.insert(t.addr.clone(), ch.clone());
        Ok(AgentClient::new(ch))
    }

    /// Maps an agent call's error, naming the node (and address when unreachable).
    fn agent_error(&self, t: &AgentTarget, s: Status) -> ProxyError {
        if is_transport_failure(&s) {
            // Forget the channel so the next call reconnects (the address may have changed).
            self.channels
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&t.addr);
            ProxyError::Unreachable {
                node: t.node.clone(),
                addr: t.addr.clone(),
                message: s.message().to_string(),
            }
        } else {
            ProxyError::Agent {
                node: t.node.clone(),
                status: s,
            }
        }
    }

    async fn node_stats(&self, t: &AgentTarget) -> Result<Vec<NodeStats>, ProxyError> {
        let mut c = self.client(t)?;
        let call = c.stats(StatsRequest {
            node: t.node.clone(),
        });
        let resp = match tokio::time::timeout(STATS_TIMEOUT, call).await {
            Ok(r) => r.map_err(|s| self.agent_error(t, s))?.into_inner(),
            Err(_) => {
                return Err(ProxyError::Unreachable {
                    node: t.node.clone(),
                    addr: t.addr.clone(),
                    message: format!("no answer within {STATS_TIMEOUT:?}"),
                });
            }
        };
        let mut nodes = resp.nodes;
        for n in &mut nodes {
            if n.node.is_empty() {
                n.node = t.node.clone();
            }
        }
        if nodes.is_empty() {
            nodes.push(NodeStats {
                node: t.node.clone(),
                ..Default::default()
            });
        }
        Ok(nodes)
    }

    /// Stats of every node, concurrently; a node that fails gets `error` set.
    pub async fn all_stats(&self) -> Result<Vec<NodeStats>, ProxyError> {
        let (nodes, _) = match self.store.list("Node/", Consistency::Linearizable).await {
            Ok(r) => r,
            Err(e) if e.is_retryable() => self.store.list("Node/", Consistency::Local).await?,
            Err(e) => return Err(e.into()),
        };
        let mut tasks = Vec::new();
        for v in nodes {
            let name = v
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let this = self.clone();
            tasks.push(async move {
                let r = match target_of_node(&name, &v) {
                    Ok(t) => this.node_stats(&t).await,
                    Err(e) => Err(e),
                };
                match r {
                    Ok(s) => s,
                    Err(e) => vec![NodeStats {
                        node: name,
                        error: e.to_string(),
                        ..Default::default()
                    }],
                }
            });
        }
        let mut out: Vec<NodeStats> = futures::future::join_all(tasks)
            .await
            .into_iter()
            .flatten()
            .collect();
        out.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(out)
    }
}

/// The node a build goes to when none is named: Ready, not cordoned, without a
/// `NoSchedule`/`NoExecute` taint, with an agent endpoint; of those the one with the fewest
/// pods (ties: the name that sorts first). Pure.
pub fn pick_build_node(nodes: &[Value], pods_per_node: &HashMap<String, usize>) -> Option<String> {
    nodes
        .iter()
        .filter(|n| {
            let ready = n
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                });
            let cordoned = n.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true);
            let tainted = n
                .pointer("/spec/taints")
                .and_then(Value::as_array)
                .is_some_and(|t| {
                    t.iter()
                        .any(|t| t["effect"] == "NoSchedule" || t["effect"] == "NoExecute")
                });
            let endpoint = n
                .pointer("/status/agentEndpoint")
                .and_then(Value::as_str)
                .is_some_and(|e| !e.trim().is_empty());
            ready && !cordoned && !tainted && endpoint
        })
        .filter_map(|n| n.pointer("/metadata/name").and_then(Value::as_str))
        .min_by_key(|name| {
            (
                pods_per_node.get(*name).copied().unwrap_or(0),
                name.to_string(),
            )
        })
        .map(String::from)
}

/// Passes a build's (or commit's) output on to the client and stores the image: the agent
/// sends `result` (its manifest digest) and then the image as a tarball. When the cluster
/// has that digest already (a cached rebuild), the name is only tagged and the tarball not
/// read; otherwise it is imported. A failure anywhere stores nothing.
async fn relay_build(
    images: crate::images::ImagesService,
    node: String,
    name: String,
    mut upstream: Streaming<BuildOutput>,
    tx: tokio::sync::mpsc::Sender<Result<BuildOutput, Status>>,
) {
    let fail = |status: Status| {
        to_status(&ProxyError::Agent {
            node: node.clone(),
            status,
        })
    };
    // Progress, until the result.
    let mut result = loop {
        match upstream.message().await {
            Ok(Some(BuildOutput {
                output: Some(build_output::Output::Result(r)),
            })) => break r,
            Ok(Some(other)) => {
                if tx.send(Ok(other)).await.is_err() {
                    return;
                }
            }
            Ok(None) => {
                let _ = tx
                    .send(Err(fail(Status::internal(
                        "the build ended without a result",
                    ))))
                    .await;
                return;
            }
            Err(s) => {
                let _ = tx.send(Err(fail(s))).await;
                return;
            }
        }
    };
    result.node = node.clone();
    let stored = match images.find(&result.digest).await {
        Ok(_) => images.tag(&result.digest, &name).await.map(|r| r.digest),
        Err(_) => {
            let chunks = futures::stream::unfold(upstream, |mut up| async move {
                match up.message().await {
                    Ok(Some(BuildOutput {
                        output: Some(build_output::Output::Image(data)),
                    })) => Some((Ok(data), up)),
                    Ok(Some(_)) => Some((Ok(Vec::new()), up)),
                    Ok(None) => None,
                    Err(s) => Some((Err(crate::images::ImagesError::Stream(s)), up)),
                }
            });
            images.import_stream(chunks, &name).await.map(|records| {
                records
                    .first()
                    .map(|r| r.digest.clone())
                    .unwrap_or_default()
            })
        }
    };
    match stored {
        Ok(digest) => {
            if !digest.is_empty() {
                result.digest = digest;
            }
            let _ = tx
                .send(Ok(BuildOutput {
                    output: Some(build_output::Output::Result(result)),
                }))
                .await;
        }
        Err(e) => {
            let _ = tx.send(Err(crate::images::to_status(&e))).await;
        }
    }
}

/// The agent address of a Node object.
fn target_of_node(node: &str, v: &Value) -> Result<AgentTarget, ProxyError> {
    match v.pointer("/status/agentEndpoint").and_then(Value::as_str) {
        Some(a) if !a.trim().is_empty() => Ok(AgentTarget {
            node: node.to_string(),
            addr: a.trim().to_string(),
        }),
        _ => Err(ProxyError::NoEndpoint(node.to_string())),
    }
}

#[tonic::async_trait]
impl Proxy for ProxyService {
    type LogsStream = BoxStream<LogChunk>;

    async fn logs(
        &self,
        request: Request<LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        check_pod_access(&who, Verb::Get, &req.namespace)?;
        let t = self.pod_target(&req.namespace, &req.pod).await?;
        let mut c = self.client(&t)?;
        let upstream = c
            .logs(req)
            .await
            .map_err(|s| self.agent_error(&t, s))?
            .into_inner();
        Ok(Response::new(relay(t.node.clone(), upstream)))
    }

    type ExecStream = BoxStream<ExecOutput>;

    async fn exec(
        &self,
        request: Request<Streaming<ExecInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        let who = caller(&request)?;
        let mut inbound = request.into_inner();
        let first = first_message(&mut inbound, "exec").await?;
        let start = match &first.input {
            Some(exec_input::Input::Start(s)) => s.clone(),
            _ => {
                return Err(to_status(&ProxyError::Invalid(
                    "exec: the first input message must be `start`".into(),
                )));
            }
        };
        if start.command.is_empty() {
            return Err(to_status(&ProxyError::Invalid(
                "exec: the command is empty".into(),
            )));
        }
        check_pod_access(&who, Verb::Create, &start.namespace)?;
        let t = self.pod_target(&start.namespace, &start.pod).await?;
        let mut c = self.client(&t)?;
        // Client → agent: the start message, then every input until the client's stream ends
        // or fails (a failed client stream ends the agent's input too).
        let rest = inbound.map_while(|r| r.ok());
        let outbound = tokio_stream::once(first).chain(rest);
        let upstream = c
            .exec(Request::new(outbound))
            .await
            .map_err(|s| self.agent_error(&t, s))?
            .into_inner();
        Ok(Response::new(relay(t.node.clone(), upstream)))
    }

    type AttachStream = BoxStream<ExecOutput>;

    async fn attach(
        &self,
        request: Request<Streaming<ExecInput>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let who = caller(&request)?;
        let mut inbound = request.into_inner();
        let first = first_message(&mut inbound, "attach").await?;
        let start = match &first.input {
            Some(exec_input::Input::Start(s)) => s.clone(),
            _ => {
                return Err(to_status(&ProxyError::Invalid(
                    "attach: the first input message must be `start`".into(),
                )));
            }
        };
        // As exec (Kubernetes' `pods/attach`): writing to a process' stdin is running code.
        check_pod_access(&who, Verb::Create, &start.namespace)?;
        let t = self.pod_target(&start.namespace, &start.pod).await?;
        let mut c = self.client(&t)?;
        let rest = inbound.map_while(|r| r.ok());
        let outbound = tokio_stream::once(first).chain(rest);
        let upstream = c
            .attach(Request::new(outbound))
            .await
            .map_err(|s| self.agent_error(&t, s))?
            .into_inner();
        Ok(Response::new(relay(t.node.clone(), upstream)))
    }

    type PortForwardStream = BoxStream<PortForwardOutput>;

    async fn port_forward(
        &self,
        request: Request<Streaming<PortForwardInput>>,
    ) -> Result<Response<Self::PortForwardStream>, Status> {
        let who = caller(&request)?;
        let mut inbound = request.into_inner();
        let first = first_message(&mut inbound, "port-forward").await?;
        let start = match &first.input {
            Some(port_forward_input::Input::Start(s)) => s.clone(),
            _ => {
                return Err(to_status(&ProxyError::Invalid(
                    "port-forward: the first input message must be `start`".into(),
                )));
            }
        };
        if start.port == 0 || start.port > u32::from(u16::MAX) {
            return Err(to_status(&ProxyError::Invalid(format!(
                "port-forward: port {} is not in 1-65535",
                start.port
            ))));
        }
        // The same right as exec: a connection to the pod's port reaches what only the pod
        // reaches.
        check_pod_access(&who, Verb::Create, &start.namespace)?;
        let t = self.pod_target(&start.namespace, &start.pod).await?;
        let mut c = self.client(&t)?;
        let rest = inbound.map_while(|r| r.ok());
        let outbound = tokio_stream::once(first).chain(rest);
        let upstream = c
            .port_forward(Request::new(outbound))
            .await
            .map_err(|s| self.agent_error(&t, s))?
            .into_inner();
        Ok(Response::new(relay(t.node.clone(), upstream)))
    }

    type BuildStream = BoxStream<BuildOutput>;

    async fn build(
        &self,
        request: Request<Streaming<BuildInput>>,
    ) -> Result<Response<Self::BuildStream>, Status> {
        let mut inbound = request.into_inner();
        let first = first_message(&mut inbound, "build").await?;
        let start = match &first.input {
            Some(build_input::Input::Start(s)) => s.clone(),
            _ => {
                return Err(to_status(&ProxyError::Invalid(
                    "build: the first input message must be `start`".into(),
                )));
            }
        };
        if start.name.trim().is_empty() {
            return Err(to_status(&ProxyError::Invalid(
                "build: the image name is empty (-t NAME[:TAG])".into(),
            )));
        }
        let images = self
            .images
            .clone()
            .ok_or_else(|| Status::unimplemented("this controller has no image store"))?;
        let t = self.build_target(&start.node).await?;
        let mut c = self.client(&t)?;
        let rest = inbound.map_while(|r| r.ok());
        let outbound = tokio_stream::once(first).chain(rest);
        let upstream = c
            .build(Request::new(outbound))
            .await
            .map_err(|s| self.agent_error(&t, s))?
            .into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(relay_build(images, t.node, start.name, upstream, tx));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    type CommitStream = BoxStream<BuildOutput>;

    async fn commit(
        &self,
        request: Request<CommitRequest>,
    ) -> Result<Response<Self::CommitStream>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        // Reading a container's files is what exec does.
        check_pod_access(&who, Verb::Create, &req.namespace)?;
        if req.name.trim().is_empty() {
            return Err(to_status(&ProxyError::Invalid(
                "commit: the image name is empty (NAME[:TAG])".into(),
            )));
        }
        let images = self
            .images
            .clone()
            .ok_or_else(|| Status::unimplemented("this controller has no image store"))?;
        let t = self.pod_target(&req.namespace, &req.pod).await?;
        let mut c = self.client(&t)?;
        let name = req.name.clone();
        let upstream = c
            .commit(req)
            .await
            .map_err(|s| self.agent_error(&t, s))?
            .into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(relay_build(images, t.node, name, upstream, tx));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn stats(
        &self,
        request: Request<StatsRequest>,
    ) -> Result<Response<StatsResponse>, Status> {
        let req = request.into_inner();
        let nodes = if req.node.is_empty() {
            self.all_stats().await?
        } else {
            let t = self.node_target(&req.node).await?;
            self.node_stats(&t).await?
        };
        Ok(Response::new(StatsResponse { nodes }))
    }
}

/// The first message of a client stream (exec, attach, port-forward all start with one);
/// an empty stream is an error naming `verb`.
async fn first_message<T>(inbound: &mut Streaming<T>, verb: &str) -> Result<T, Status> {
    match inbound.next().await {
        Some(Ok(m)) => Ok(m),
        Some(Err(s)) => Err(s),
        None => Err(to_status(&ProxyError::Invalid(format!(
            "{verb}: the input stream is empty"
        )))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn node_endpoint_is_read_from_status() {
        let v = json!({"metadata": {"name": "n1"}, "status": {"agentEndpoint": "127.0.0.1:7100"}});
        assert_eq!(
            target_of_node("n1", &v).unwrap(),
            AgentTarget {
                node: "n1".into(),
                addr: "127.0.0.1:7100".into()
            }
        );
        let e = target_of_node("n2", &json!({"status": {}})).unwrap_err();
        assert!(
            e.to_string().contains("\"n2\" has no agent endpoint"),
            "{e}"
        );
        assert_eq!(to_status(&e).code(), tonic::Code::FailedPrecondition);
    }

    #[test]
    fn builds_go_to_the_least_loaded_ready_schedulable_node() {
        let node = |name: &str, ready: bool, extra: Value| {
            let mut n = json!({
                "metadata": {"name": name},
                "status": {
                    "agentEndpoint": "127.0.0.1:7100",
                    "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]
                }
            });
            n["spec"] = extra;
            n
        };
        let nodes = vec![
            node("a", true, json!({})),
            node("b", true, json!({})),
            node("c", false, json!({})),
            node("d", true, json!({"unschedulable": true})),
            node(
                "e",
                true,
                json!({"taints": [{"key": "k", "effect": "NoSchedule"}]}),
            ),
        ];
        let load: HashMap<String, usize> = [("a".to_string(), 3), ("b".to_string(), 1)].into();
        assert_eq!(pick_build_node(&nodes, &load).as_deref(), Some("b"));
        assert_eq!(
            pick_build_node(&nodes, &HashMap::new()).as_deref(),
            Some("a")
        );
        assert_eq!(pick_build_node(&nodes[2..], &HashMap::new()), None);
    }

    #[test]
    fn unreachable_error_names_node_and_address() {
        let e = ProxyError::Unreachable {
            node: "n1".into(),
            addr: "127.0.0.1:9".into(),
            message: "refused".into(),
        };
        let s = to_status(&e);
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert!(
            s.message().contains("\"n1\"") && s.message().contains("127.0.0.1:9"),
            "{}",
            s.message()
        );
    }
}
