//! The `Agent` gRPC service the controllers call: Ping, Logs, Exec, Attach, PortForward,
//! Stats, Build and Commit.

use std::io::{Read, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use shoal_proto::agent_server::{Agent as AgentApi, AgentServer};
use shoal_proto::exec_input::Input;
use shoal_proto::exec_output::Output;
use shoal_proto::{
    BuildInput, BuildOutput, CommitRequest, ContainerStats, ExecInput, ExecOutput, LogChunk,
    LogsRequest, NodeStats, PingRequest, PingResponse, PortForwardInput, PortForwardOutput,
    StatsRequest, StatsResponse, build_input, port_forward_input,
};
use shoal_runtime::{ExecSpec, LogOptions, RuntimeError};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::agent::Agent;
use crate::plan::ObservedContainer;

/// Serves the Agent API on `listener` over mutual TLS (controllers only) until the task
/// is aborted.
pub async fn serve(
    agent: Arc<Agent>,
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    grpc_metrics: shoal_observe::grpc::GrpcMetrics,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    health.set_serving::<AgentServer<AgentService>>().await;
    tonic::transport::Server::builder()
        .layer(grpc_metrics.layer())
        .layer(shoal_pki::layer::AuthLayer::new(
            crate::identity::agent_policy(),
        ))
        .add_service(health_service)
        .add_service(AgentServer::new(AgentService { agent }))
        .serve_with_incoming(shoal_pki::tls::incoming(listener, tls))
        .await
}

/// The one place runtime errors become gRPC statuses.
pub fn to_status(e: &RuntimeError) -> Status {
    match e {
        RuntimeError::NotFound { .. } => Status::not_found(e.to_string()),
        RuntimeError::NotRunning(_) => Status::failed_precondition(e.to_string()),
        RuntimeError::InvalidSpec { .. } => Status::invalid_argument(e.to_string()),
        _ => Status::internal(e.to_string()),
    }
}

/// The Agent service.
#[derive(Debug)]
pub struct AgentService {
    agent: Arc<Agent>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl AgentService {
    /// The newest incarnation of a pod's container (`container` empty: the first).
    async fn find(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
    ) -> Result<ObservedContainer, Status> {
        let (sb, p) = self.agent.find_sandbox(ns, pod).ok_or_else(|| {
            Status::not_found(format!("pod {ns}/{pod} is not on node {}", self.agent.name))
        })?;
        let name = if container.is_empty() {
            p.as_ref()
                .and_then(|p| p.spec.containers.first())
                .map(|c| c.name.clone())
        } else {
            Some(container.to_string())
        };
        let rt = self.agent.rt.clone();
        let all = tokio::task::spawn_blocking(move || rt.list())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| to_status(&e))?;
        all.into_iter()
            .map(ObservedContainer::new)
            .filter(|c| c.sandbox == sb && name.as_ref().is_none_or(|n| &c.name == n))
            .max_by_key(|c| c.base)
            .ok_or_else(|| {
                Status::not_found(format!(
                    "container {:?} of pod {ns}/{pod} not found on node {}",
                    name.unwrap_or_default(),
                    self.agent.name
                ))
            })
    }
}

#[tonic::async_trait]
impl AgentApi for AgentService {
    async fn ping(&self, _r: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        Ok(Response::new(PingResponse {
            node: self.agent.name.clone(),
        }))
    }

    type LogsStream = BoxStream<LogChunk>;

    async fn logs(&self, r: Request<LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        let req = r.into_inner();
        let c = self.find(&req.namespace, &req.pod, &req.container).await?;
        let since = if req.since_time.is_empty() {
            None
        } else {
            Some(
                chrono::DateTime::parse_from_rfc3339(&req.since_time)
                    .map_err(|e| {
                        Status::invalid_argument(format!("since_time {:?}: {e}", req.since_time))
                    })?
                    .with_timezone(&chrono::Utc),
            )
        };
        let window = if req.previous {
            let e = c.status.last_exit.clone().ok_or_else(|| {
                Status::not_found(format!(
                    "previous terminated container {:?} in pod {}/{} not found",
                    c.name, req.namespace, req.pod
                ))
            })?;
            Some((e.started_at, e.finished_at))
        } else {
            None
        };
        let opts = LogOptions {
            tail: (req.tail_lines >= 0 && window.is_none()).then_some(req.tail_lines as usize),
            since,
            follow: req.follow && window.is_none(),
        };
        let rt = self.agent.rt.clone();
        let id = c.id.clone();
        let reader = tokio::task::spawn_blocking(move || rt.logs(&id, opts))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| to_status(&e))?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let (timestamps, tail) = (req.timestamps, req.tail_lines);
        tokio::task::spawn_blocking(move || {
            let mut lines = Vec::new();
            let mut buf = Vec::new();
            for l in reader {
                let l = match l {
                    Ok(l) => l,
                    Err(e) => {
                        let _ =
                            tx.blocking_send(Err(Status::internal(format!("reading log: {e}"))));
                        return;
                    }
                };
                if let Some((from, to)) = window
                    && (from.is_some_and(|f| l.time < f) || l.time > to)
                {
                    continue;
                }
                if timestamps {
                    buf.extend_from_slice(
                        l.time
                            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
                            .as_bytes(),
                    );
                    buf.push(b' ');
                }
                buf.extend_from_slice(l.text.as_bytes());
                if !l.partial {
                    buf.push(b'\n');
                }
                if window.is_some() {
                    lines.push(std::mem::take(&mut buf));
                    continue;
                }
                if tx
                    .blocking_send(Ok(LogChunk {
                        data: std::mem::take(&mut buf),
                    }))
                    .is_err()
                {
                    return;
                }
            }
            if window.is_some() {
                let skip = if tail >= 0 {
                    lines.len().saturating_sub(tail as usize)
                } else {
                    0
                };
                for l in lines.into_iter().skip(skip) {
                    if tx.blocking_send(Ok(LogChunk { data: l })).is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type ExecStream = BoxStream<ExecOutput>;

    async fn exec(
        &self,
        r: Request<Streaming<ExecInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        let mut input = r.into_inner();
        let start = match input.message().await? {
            Some(ExecInput {
                input: Some(Input::Start(s)),
            }) => s,
            _ => {
                return Err(Status::invalid_argument(
                    "exec: the first message must be `start`",
                ));
            }
        };
        if start.command.is_empty() {
            return Err(Status::invalid_argument("exec: empty command"));
        }
        let c = self
            .find(&start.namespace, &start.pod, &start.container)
            .await?;
        let rt = self.agent.rt.clone();
        let spec = ExecSpec {
            cmd: start.command.clone(),
            tty: start.tty,
            tty_size: (start.tty && start.rows > 0 && start.cols > 0)
                .then_some((start.rows as u16, start.cols as u16)),
            ..ExecSpec::default()
        };
        let id = c.id.clone();
        let mut proc = tokio::task::spawn_blocking(move || rt.exec(&id, spec))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| to_status(&e))?;
        let (out_tx, out_rx) = tokio::sync::mpsc::channel::<Result<ExecOutput, Status>>(64);
        // Output readers.
        let mut readers = Vec::new();
        let mut spawn_reader = |f: std::fs::File, err: bool| {
            let tx = out_tx.clone();
            readers.push(std::thread::spawn(move || {
                let mut f = f;
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    match f.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let data = buf[..n].to_vec();
                            let o = if err {
                                Output::Stderr(data)
                            } else {
                                Output::Stdout(data)
                            };
                            if tx
                                .blocking_send(Ok(ExecOutput { output: Some(o) }))
                                .is_err()
                            {
                                break;
                            }
                        }
                    }
                }
            }));
        };
        let mut stdin: Option<std::fs::File> = proc.stdin.take();
        if let Some(pty) = &proc.pty {
            if let Ok(r) = pty.try_clone() {
                spawn_reader(r, false);
            }
            if start.stdin {
                stdin = pty.try_clone().ok();
            }
        }
        if let Some(o) = proc.stdout.take() {
            spawn_reader(o, false);
        }
        if let Some(e) = proc.stderr.take() {
            spawn_reader(e, true);
        }
        if !start.stdin && !start.tty {
            stdin = None;
        }
        // Input: a thread owns the process (stdin writes, resizes, wait).
        let (in_tx, in_rx) = std::sync::mpsc::channel::<Input>();
        tokio::spawn(async move {
            while let Ok(Some(m)) = input.message().await {
                if let Some(i) = m.input
                    && in_tx.send(i).is_err()
                {
                    break;
                }
            }
        });
        std::thread::spawn(move || {
            let code = loop {
                match in_rx.recv_timeout(Duration::from_millis(20)) {
                    Ok(Input::Stdin(data)) => {
                        if let Some(s) = stdin.as_mut()
                            && s.write_all(&data).is_err()
                        {
                            stdin = None;
                        }
                    }
                    Ok(Input::StdinEof(_)) => {
                        if proc.pty.is_some()
                            && let Some(s) = stdin.as_mut()
                        {
                            let _ = s.write_all(&[4]);
                        }
                        stdin = None;
                    }
                    Ok(Input::Resize(r)) => {
                        let _ = proc.resize(r.rows as u16, r.cols as u16);
                    }
                    Ok(Input::Start(_)) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    // The client closed its side: keep waiting for the exit without spinning.
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
                match proc.child.try_wait() {
                    Ok(Some(st)) => {
                        use std::os::unix::process::ExitStatusExt;
                        break st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0));
                    }
                    Ok(None) => {}
                    Err(_) => break 125,
                }
            };
            drop(stdin);
            // The pty master stays readable until closed: let the reader drain, then close.
            proc.stdin = None;
            let pty = proc.pty.take();
            if pty.is_some() {
                std::thread::sleep(Duration::from_millis(50));
            }
            drop(pty);
            for r in readers {
                let _ = r.join();
            }
            let _ = out_tx.blocking_send(Ok(ExecOutput {
                output: Some(Output::ExitCode(code)),
            }));
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }

    type AttachStream = BoxStream<ExecOutput>;

    async fn attach(
        &self,
        r: Request<Streaming<ExecInput>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let mut input = r.into_inner();
        let start = match input.message().await? {
            Some(ExecInput {
                input: Some(Input::Start(s)),
            }) => s,
            _ => {
                return Err(Status::invalid_argument(
                    "attach: the first message must be `start`",
                ));
            }
        };
        let c = self
            .find(&start.namespace, &start.pod, &start.container)
            .await?;
        let rt = self.agent.rt.clone();
        let id = c.id.clone();
        let want_stdin = start.stdin;
        // Input only when asked for (and possible); output from the log, from now on.
        let (att, reader) = tokio::task::spawn_blocking(move || {
            let att = if want_stdin {
                Some(rt.attach(&id)?)
            } else {
                None
            };
            let opts = LogOptions {
                tail: Some(0),
                since: None,
                follow: true,
            };
            Ok::<_, RuntimeError>((att, rt.logs(&id, opts)?))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| to_status(&e))?;
        if let Some(a) = &att
            && start.rows > 0
            && start.cols > 0
        {
            let _ = a.resize(start.rows as u16, start.cols as u16);
        }
        let (out_tx, out_rx) = tokio::sync::mpsc::channel::<Result<ExecOutput, Status>>(64);
        let rt = self.agent.rt.clone();
        let id = c.id.clone();
        // Output: the log followed until the container's run ends (then its exit code), or
        // until the client is gone (noticed at the next line).
        std::thread::spawn(move || {
            for l in reader {
                let Ok(l) = l else { break };
                let mut data = l.text.into_bytes();
                if !l.partial {
                    data.push(b'\n');
                }
                let o = match l.stream {
                    shoal_runtime::Stream::Stderr => Output::Stderr(data),
                    _ => Output::Stdout(data),
                };
                if out_tx
                    .blocking_send(Ok(ExecOutput { output: Some(o) }))
                    .is_err()
                {
                    return;
                }
            }
            if let Ok(st) = rt.status(&id)
                && let shoal_runtime::ContainerState::Exited(e) = st.state
            {
                let _ = out_tx.blocking_send(Ok(ExecOutput {
                    output: Some(Output::ExitCode(e.exit_code)),
                }));
            }
        });
        if let Some(mut att) = att {
            let (in_tx, in_rx) = std::sync::mpsc::channel::<Input>();
            tokio::spawn(async move {
                while let Ok(Some(m)) = input.message().await {
                    if let Some(i) = m.input
                        && in_tx.send(i).is_err()
                    {
                        break;
                    }
                }
            });
            std::thread::spawn(move || {
                while let Ok(i) = in_rx.recv() {
                    match i {
                        Input::Stdin(data) => {
                            if att.write(&data).is_err() {
                                return;
                            }
                        }
                        Input::StdinEof(_) => {
                            let _ = att.close();
                            return;
                        }
                        Input::Resize(r) => {
                            let _ = att.resize(r.rows as u16, r.cols as u16);
                        }
                        Input::Start(_) => {}
                    }
                }
            });
        }
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }

    type BuildStream = BoxStream<BuildOutput>;

    async fn build(
        &self,
        r: Request<Streaming<BuildInput>>,
    ) -> Result<Response<Self::BuildStream>, Status> {
        let mut input = r.into_inner();
        let start = match input.message().await? {
            Some(BuildInput {
                input: Some(build_input::Input::Start(s)),
            }) => s,
            _ => {
                return Err(Status::invalid_argument(
                    "build: the first message must be `start`",
                ));
            }
        };
        // The context, to a file: the build reads it once the client sent all of it.
        let dir = self.agent.dir.join("build").join("tmp");
        shoal_files::private_dir(&dir)
            .map_err(|e| Status::internal(format!("{}: {e}", dir.display())))?;
        let context = tempfile::Builder::new()
            .prefix("context-")
            .tempfile_in(&dir)
            .map_err(|e| Status::internal(format!("{}: {e}", dir.display())))?;
        let mut file = tokio::fs::File::from_std(
            context
                .reopen()
                .map_err(|e| Status::internal(format!("build context: {e}")))?,
        );
        while let Some(m) = input.message().await? {
            if let Some(build_input::Input::Context(data)) = m.input {
                tokio::io::AsyncWriteExt::write_all(&mut file, &data)
                    .await
                    .map_err(|e| Status::internal(format!("build context: {e}")))?;
            }
        }
        drop(file);
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let agent = self.agent.clone();
        tokio::spawn(async move {
            let path = context.path().to_path_buf();
            let r = crate::build::build(agent, start, path, tx.clone()).await;
            drop(context);
            if let Err(e) = r {
                let _ = tx.send(Err(crate::build::to_status(&e))).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type CommitStream = BoxStream<BuildOutput>;

    async fn commit(
        &self,
        r: Request<CommitRequest>,
    ) -> Result<Response<Self::CommitStream>, Status> {
        let req = r.into_inner();
        let c = self.find(&req.namespace, &req.pod, &req.container).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let agent = self.agent.clone();
        tokio::spawn(async move {
            let r =
                crate::build::commit(agent, req, c.id.clone(), c.status.image.clone(), tx.clone())
                    .await;
            if let Err(e) = r {
                let _ = tx.send(Err(crate::build::to_status(&e))).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type PortForwardStream = BoxStream<PortForwardOutput>;

    async fn port_forward(
        &self,
        r: Request<Streaming<PortForwardInput>>,
    ) -> Result<Response<Self::PortForwardStream>, Status> {
        let mut input = r.into_inner();
        let start = match input.message().await? {
            Some(PortForwardInput {
                input: Some(port_forward_input::Input::Start(s)),
            }) => s,
            _ => {
                return Err(Status::invalid_argument(
                    "port-forward: the first message must be `start`",
                ));
            }
        };
        let port = u16::try_from(start.port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "port-forward: port {} is not in 1-65535",
                    start.port
                ))
            })?;
        let (ns, pod) = (start.namespace.clone(), start.pod.clone());
        let (sb, _) = self.agent.find_sandbox(&ns, &pod).ok_or_else(|| {
            Status::not_found(format!("pod {ns}/{pod} is not on node {}", self.agent.name))
        })?;
        let rt = self.agent.rt.clone();
        let socket = tokio::task::spawn_blocking(move || {
            let netns = rt.sandbox(&sb).map_err(|e| to_status(&e))?.netns_path;
            // FAILED_PRECONDITION, not UNAVAILABLE: the agent answered, the pod's port did not.
            crate::forward::connect(&netns, port)
                .map_err(|e| Status::failed_precondition(format!("pod {ns}/{pod}: {e}")))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        crate::forward::pump(socket, input, tx)
            .map_err(|e| Status::internal(format!("port-forward socket: {e}")))?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn stats(&self, _r: Request<StatsRequest>) -> Result<Response<StatsResponse>, Status> {
        let agent = self.agent.clone();
        let node = tokio::task::spawn_blocking(move || node_stats(&agent))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(StatsResponse { nodes: vec![node] }))
    }
}

/// Samples the node and its containers twice, 250 ms apart.
fn node_stats(agent: &Agent) -> NodeStats {
    let interval = Duration::from_millis(250);
    let cap = agent.sys.cpu_millis();
    let containers: Vec<ObservedContainer> = agent
        .rt
        .list()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.is_running())
        .map(ObservedContainer::new)
        .collect();
    let a = agent.sys.cpu_times();
    let before: Vec<u64> = containers
        .iter()
        .map(|c| agent.rt.stats(&c.id).map(|s| s.cpu_usage_ns).unwrap_or(0))
        .collect();
    std::thread::sleep(interval);
    let b = agent.sys.cpu_times();
    let (total, avail) = agent.sys.memory();
    let mut out = Vec::new();
    for (c, b0) in containers.iter().zip(before) {
        let Ok(s) = agent.rt.stats(&c.id) else {
            continue;
        };
        let (ns, pod) = match agent.pod_of(&c.sandbox) {
            Some(p) => (
                p.metadata.namespace.clone().unwrap_or_default(),
                p.metadata.name.clone(),
            ),
            None => (String::new(), c.sandbox.clone()),
        };
        out.push(ContainerStats {
            namespace: ns,
            pod,
            container: c.name.clone(),
            cpu_usage_nanos: s.cpu_usage_ns,
            memory_bytes: s.memory_bytes,
            cpu_millis: s.cpu_usage_ns.saturating_sub(b0)
                / 1000
                / interval.as_millis().max(1) as u64,
        });
    }
    NodeStats {
        node: agent.name.clone(),
        cpu_millis: crate::sysinfo::busy_millis(a, b, cap),
        memory_bytes: total.saturating_sub(avail),
        cpu_capacity_millis: cap,
        memory_capacity_bytes: total,
        containers: out,
        error: String::new(),
    }
}
