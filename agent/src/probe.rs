//! Liveness and readiness probes: when one is due and what its results mean
//! (pure), and running one (exec in the container, TCP connect or HTTP GET
//! inside the pod's network namespace).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use shoal_api::{Container, HttpGetAction, IntOrString, LifecycleHandler, Probe, UriScheme};
use shoal_runtime::{ExecSpec, Runtime};

/// Bytes of an exec probe's stdout and of its stderr that the agent keeps (Kubernetes
/// keeps 10 KiB too): the rest is read and dropped, so the command never blocks on a
/// full pipe and a command that prints gigabytes costs no memory.
pub const PROBE_OUTPUT_CAP: usize = 10 * 1024;

/// Reads `r` to its end, keeping the first `cap` bytes; returns them and the total read.
pub fn read_capped(mut r: impl Read, cap: usize) -> (Vec<u8>, u64) {
    let mut kept = Vec::new();
    let mut total = 0u64;
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                total += n as u64;
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    (kept, total)
}

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProbeKind {
    /// `livenessProbe`: failing restarts the container.
    Liveness,
    /// `readinessProbe`: passing makes the container ready.
    Readiness,
    /// `startupProbe`: the others wait until it passes once; failing restarts the container.
    Startup,
}

impl ProbeKind {
    /// `Liveness`, `Readiness`, `Startup` (as in the kubelet's event messages).
    pub fn name(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Startup => "Startup",
        }
    }

    /// The probe of this kind of container `c`.
    pub fn of(self, c: &Container) -> Option<&Probe> {
        match self {
            ProbeKind::Liveness => c.liveness_probe.as_deref(),
            ProbeKind::Readiness => c.readiness_probe.as_deref(),
            ProbeKind::Startup => c.startup_probe.as_deref(),
        }
    }

    /// Whether a probe of this kind runs now, given the container's startup probe state
    /// (`None`: none yet) and whether it has one: a startup probe until it has passed,
    /// the others only after.
    pub fn runs(self, has_startup: bool, startup: Option<&ProbeState>) -> bool {
        let started = !has_startup || startup.is_some_and(|s| s.ok);
        match self {
            ProbeKind::Startup => !started,
            _ => started,
        }
    }

    /// Whether the result `st` means the container must be restarted.
    pub fn failed(self, p: &Probe, st: &ProbeState) -> bool {
        match self {
            ProbeKind::Liveness => !st.ok,
            ProbeKind::Startup => st.failures >= p.failure_threshold.max(1) as u32,
            ProbeKind::Readiness => false,
        }
    }
}

/// Whether a running container is ready: its startup probe (if any) has passed and its
/// readiness probe (if any) passes; `None` is "not probed yet".
pub fn container_ready(startup: Option<Option<bool>>, readiness: Option<Option<bool>>) -> bool {
    [startup, readiness]
        .into_iter()
        .all(|p| p.is_none_or(|r| r == Some(true)))
}

/// The probe bookkeeping of one container and probe kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeState {
    /// When the agent first saw the container running.
    pub since: Instant,
    /// When the last probe started.
    pub last_run: Option<Instant>,
    /// Consecutive failures.
    pub failures: u32,
    /// Consecutive successes.
    pub successes: u32,
    /// Current verdict (readiness: ready; liveness: alive).
    pub ok: bool,
    /// A probe is running.
    pub in_flight: bool,
}

impl ProbeState {
    /// A fresh state for a container seen running at `since`; readiness starts
    /// not ready, liveness alive.
    pub fn new(since: Instant, liveness: bool) -> ProbeState {
        ProbeState {
            since,
            last_run: None,
            failures: 0,
            successes: 0,
            ok: liveness,
            in_flight: false,
        }
    }
}

fn secs(n: i32) -> Duration {
    Duration::from_secs(n.max(0) as u64)
}

/// Whether the probe should run now.
pub fn due(p: &Probe, st: &ProbeState, now: Instant) -> bool {
    !st.in_flight
        && now >= st.since + secs(p.initial_delay_seconds)
        && st
            .last_run
            .is_none_or(|t| now >= t + secs(p.period_seconds.max(1)))
}

/// Records a result; returns true when the verdict changed.
pub fn record(p: &Probe, st: &mut ProbeState, success: bool) -> bool {
    st.in_flight = false;
    let before = st.ok;
    if success {
        st.successes += 1;
        st.failures = 0;
        if st.successes >= p.success_threshold.max(1) as u32 {
            st.ok = true;
        }
    } else {
        st.failures += 1;
        st.successes = 0;
        if st.failures >= p.failure_threshold.max(1) as u32 {
            st.ok = false;
        }
    }
    before != st.ok
}

/// The port a probe targets: a number, or the name of one of the container's ports.
pub fn resolve_port(port: &IntOrString, c: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("port {n} out of range")),
        IntOrString::String(name) => c
            .ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("no container port named {name:?}")),
    }
}

/// What a probe or a lifecycle hook does, with its port resolved (so a hook can be kept
/// in the agent's pod record and run after the pod object is gone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Check {
    /// Run a command in the container; exit status 0 is success.
    Exec(Vec<String>),
    /// Connect to a TCP port of the pod.
    Tcp(u16),
    /// HTTP(S) GET; a status in 200..400 is success.
    Http(HttpCheck),
    /// `grpc.health.v1.Health/Check` of (port, service) on the pod; `SERVING` passes.
    Grpc(u16, String),
    /// Wait (a `sleep` hook).
    Sleep(u64),
}

/// An HTTP GET: where, what and with which headers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpCheck {
    /// Address (default: 127.0.0.1 in the pod's network namespace).
    pub host: Ipv4Addr,
    /// Port.
    pub port: u16,
    /// Path.
    pub path: String,
    /// TLS without certificate verification.
    pub https: bool,
    /// Extra headers, in order.
    pub headers: Vec<(String, String)>,
}

impl HttpCheck {
    /// The GET of `h` for container `c` (named ports resolved).
    pub fn of(h: &HttpGetAction, c: &Container) -> Result<HttpCheck, String> {
        let host = match &h.host {
            Some(a) => a
                .parse()
                .map_err(|_| format!("httpGet.host: {a:?} is not an IPv4 address"))?,
            None => Ipv4Addr::LOCALHOST,
        };
        Ok(HttpCheck {
            host,
            port: resolve_port(&h.port, c)?,
            path: h.path.clone(),
            https: h.scheme == Some(UriScheme::Https),
            headers: h
                .http_headers
                .iter()
                .map(|x| (x.name.clone(), x.value.clone()))
                .collect(),
        })
    }

    /// `http://127.0.0.1:8080/healthz`, for messages.
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}:{}{}", self.host, self.port, self.path)
    }

    /// The request: `Host`, `User-Agent` and `Accept` unless a header of the same name
    /// (any case) replaces it, then the headers in order.
    pub fn request(&self) -> String {
        let set = |n: &str| self.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
        let mut req = format!("GET {} HTTP/1.0\r\n", self.path);
        for (name, value) in [
            ("Host", format!("{}:{}", self.host, self.port)),
            ("User-Agent", "shoal-probe/1".to_string()),
            ("Accept", "*/*".to_string()),
        ] {
            if !set(name) {
                req.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        for (k, v) in &self.headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("Connection: close\r\n\r\n");
        req
    }
}

impl Check {
    /// The check of probe `p` of container `c`.
    pub fn of_probe(p: &Probe, c: &Container) -> Result<Check, String> {
        if let Some(e) = &p.exec {
            return Ok(Check::Exec(e.command.clone()));
        }
        if let Some(t) = &p.tcp_socket {
            return Ok(Check::Tcp(resolve_port(&t.port, c)?));
        }
        if let Some(h) = &p.http_get {
            return Ok(Check::Http(HttpCheck::of(h, c)?));
        }
        if let Some(g) = &p.grpc {
            let port = resolve_port(&IntOrString::Int(g.port), c)?;
            return Ok(Check::Grpc(port, g.service.clone().unwrap_or_default()));
        }
        Err("the probe has no exec, tcpSocket, httpGet or grpc action".into())
    }

    /// The check of lifecycle hook `h` of container `c`.
    pub fn of_hook(h: &LifecycleHandler, c: &Container) -> Result<Check, String> {
        if let Some(e) = &h.exec {
            return Ok(Check::Exec(e.command.clone()));
        }
        if let Some(g) = &h.http_get {
            return Ok(Check::Http(HttpCheck::of(g, c)?));
        }
        if let Some(s) = &h.sleep {
            return Ok(Check::Sleep(s.seconds.max(0) as u64));
        }
        Err("the hook has no exec, httpGet or sleep action".into())
    }

    /// Runs the check against container `id` (blocking), giving up after `timeout`;
    /// `Err` says why it failed.
    pub fn run(
        &self,
        rt: &Runtime,
        id: &str,
        netns: &Path,
        timeout: Duration,
    ) -> Result<(), String> {
        match self {
            Check::Exec(cmd) => exec_probe(rt, id, cmd, timeout),
            Check::Tcp(port) => {
                let port = *port;
                in_netns(netns, move || {
                    TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), timeout)
                        .map(|_| ())
                        .map_err(|e| format!("dial tcp 127.0.0.1:{port}: {e}"))
                })
            }
            Check::Http(h) => {
                let h = h.clone();
                in_netns(netns, move || http_get(&h, timeout))
            }
            Check::Grpc(port, service) => {
                let (port, service) = (*port, service.clone());
                in_netns(netns, move || grpc_check(port, &service, timeout))
            }
            Check::Sleep(secs) => {
                std::thread::sleep(Duration::from_secs(*secs).min(timeout));
                Ok(())
            }
        }
    }
}

/// Runs one probe of container `id` (blocking); `Err` says why it failed.
pub fn run(rt: &Runtime, id: &str, netns: &Path, c: &Container, p: &Probe) -> Result<(), String> {
    let timeout = secs(p.timeout_seconds.max(1));
    Check::of_probe(p, c)?.run(rt, id, netns, timeout)
}

fn exec_probe(rt: &Runtime, id: &str, cmd: &[String], timeout: Duration) -> Result<(), String> {
    let mut p = rt
        .exec(
            id,
            ExecSpec {
                cmd: cmd.to_vec(),
                ..ExecSpec::default()
            },
        )
        .map_err(|e| e.to_string())?;
    p.stdin = None;
    let drain = |f: Option<std::fs::File>| {
        std::thread::spawn(move || match f {
            Some(f) => read_capped(f, PROBE_OUTPUT_CAP).0,
            None => Vec::new(),
        })
    };
    let out = drain(p.stdout.take());
    let err = drain(p.stderr.take());
    let deadline = Instant::now() + timeout;
    let code = loop {
        match p.child.try_wait() {
            Ok(Some(st)) => {
                use std::os::unix::process::ExitStatusExt;
                break st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0));
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = p.child.kill();
                let _ = p.child.wait();
                return Err(format!("command {cmd:?} timed out after {timeout:?}"));
            }
            Err(e) => return Err(format!("wait for probe command: {e}")),
        }
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    if code == 0 {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(if err.is_empty() { &out } else { &err });
        Err(format!(
            "command {cmd:?} exited with {code}: {}",
            text.trim().chars().take(200).collect::<String>()
        ))
    }
}

fn http_get(h: &HttpCheck, timeout: Duration) -> Result<(), String> {
    let url = h.url();
    let fail = |e: &dyn std::fmt::Display| format!("get {url}: {e}");
    let addr = SocketAddr::from((h.host, h.port));
    let s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| fail(&e))?;
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    let line = if h.https {
        // The kubelet does not verify a probe's certificate; neither do we (the same
        // no-verification settings as a registry's `insecure_skip_verify`).
        let insecure = shoal_runtime::image::registry::hosts::TlsConfig {
            insecure_skip_verify: true,
            ..Default::default()
        };
        let tls = shoal_runtime::image::registry::http::tls_config(Some(&insecure))
            .map_err(|e| fail(&e))?;
        let conn =
            rustls::ClientConnection::new(tls, IpAddr::V4(h.host).into()).map_err(|e| fail(&e))?;
        status_line(rustls::StreamOwned::new(conn, s), &h.request()).map_err(|e| fail(&e))?
    } else {
        status_line(s, &h.request()).map_err(|e| fail(&e))?
    };
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| fail(&format!("malformed response {line:?}")))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("http probe failed with statuscode: {code}"))
    }
}

/// `grpc.health.v1.Health/Check` of `service` at `127.0.0.1:port` (in the calling
/// thread's network namespace, on a runtime of its own); `SERVING` passes.
fn grpc_check(port: u16, service: &str, timeout: Duration) -> Result<(), String> {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    let target = format!("127.0.0.1:{port}");
    let fail = |e: &dyn std::fmt::Display| format!("grpc health check of {target}: {e}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(&e))?;
    let status = rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{target}"))
            .map_err(|e| fail(&e))?
            .connect_timeout(timeout)
            .timeout(timeout)
            .connect()
            .await
            .map_err(|e| fail(&e))?;
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
        let req = HealthCheckRequest {
            service: service.to_string(),
        };
        client
            .check(req)
            .await
            .map(|r| r.into_inner().status)
            .map_err(|e| fail(&e.message()))
    })?;
    if status == ServingStatus::Serving as i32 {
        Ok(())
    } else {
        let name = ServingStatus::try_from(status)
            .map(|s| s.as_str_name())
            .unwrap_or("UNKNOWN");
        Err(format!(
            "grpc health check of {target}: service {service:?} is {name}"
        ))
    }
}

/// Sends `req` and reads the first line of the response.
fn status_line(mut s: impl Read + Write, req: &str) -> std::io::Result<String> {
    s.write_all(req.as_bytes())?;
    s.flush()?;
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    while !got.contains(&b'\n') && got.len() < 64 {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&got).into_owned())
}

/// Runs `f` on a new thread that first joins the network namespace `netns` (the thread
/// ends with `f`, so no other work ever runs in the pod's namespace).
pub fn in_netns<T, F>(netns: &Path, f: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, String> + Send + 'static,
{
    let ns = std::fs::File::open(netns).map_err(|e| format!("open {}: {e}", netns.display()))?;
    std::thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("join the pod's network namespace: {e}"))?;
        f()
    })
    .join()
    .map_err(|_| "probe thread panicked".to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::ContainerPort;

    #[test]
    fn probe_output_is_capped_but_read_to_the_end() {
        // 50 MiB of output: only the cap is kept, everything is read (the pipe drains).
        let (kept, total) = read_capped(std::io::repeat(b'x').take(50 << 20), PROBE_OUTPUT_CAP);
        assert_eq!(kept.len(), PROBE_OUTPUT_CAP);
        assert_eq!(total, 50 << 20);
        // Positive control: output under the cap is kept whole.
        let (kept, total) = read_capped(&b"not ready: disk full\n"[..], PROBE_OUTPUT_CAP);
        assert_eq!(kept, b"not ready: disk full\n");
        assert_eq!(total, 21);
    }

    fn probe(delay: i32, period: i32, fail: i32) -> Probe {
        Probe {
            initial_delay_seconds: delay,
            period_seconds: period,
            failure_threshold: fail,
            ..Probe::with_defaults()
        }
    }

    #[test]
    fn due_honours_delay_period_and_in_flight() {
        let t0 = Instant::now();
        let p = probe(2, 3, 1);
        let mut st = ProbeState::new(t0, false);
        assert!(!due(&p, &st, t0 + Duration::from_secs(1)));
        assert!(due(&p, &st, t0 + Duration::from_secs(2)));
        st.last_run = Some(t0 + Duration::from_secs(2));
        st.in_flight = true;
        assert!(!due(&p, &st, t0 + Duration::from_secs(9)));
        st.in_flight = false;
        assert!(!due(&p, &st, t0 + Duration::from_secs(4)));
        assert!(due(&p, &st, t0 + Duration::from_secs(5)));
    }

    #[test]
    fn the_startup_probe_gates_the_others_and_its_failure_restarts() {
        let t0 = Instant::now();
        let p = probe(0, 1, 3);
        let mut st = ProbeState::new(t0, false);
        for k in [ProbeKind::Liveness, ProbeKind::Readiness] {
            assert!(k.runs(false, None), "{k:?} without a startup probe");
            assert!(!k.runs(true, None), "{k:?} before the startup probe ran");
            assert!(!k.runs(true, Some(&st)), "{k:?} before it passed");
        }
        assert!(ProbeKind::Startup.runs(true, Some(&st)));
        record(&p, &mut st, false);
        record(&p, &mut st, false);
        assert!(!ProbeKind::Startup.failed(&p, &st));
        record(&p, &mut st, false);
        assert!(ProbeKind::Startup.failed(&p, &st), "threshold reached");
        let mut passed = ProbeState::new(t0, false);
        record(&p, &mut passed, true);
        assert!(
            !ProbeKind::Startup.runs(true, Some(&passed)),
            "done once passed"
        );
        assert!(ProbeKind::Liveness.runs(true, Some(&passed)));
        assert!(!ProbeKind::Readiness.failed(&p, &st));
        // Ready: every probe the container has must pass.
        assert!(container_ready(None, None));
        assert!(!container_ready(Some(None), None));
        assert!(!container_ready(Some(Some(true)), Some(Some(false))));
        assert!(container_ready(Some(Some(true)), Some(Some(true))));
        assert!(container_ready(Some(Some(true)), None));
    }

    #[test]
    fn thresholds_flip_the_verdict() {
        let p = probe(0, 1, 3);
        let mut live = ProbeState::new(Instant::now(), true);
        assert!(!record(&p, &mut live, false));
        assert!(!record(&p, &mut live, false));
        assert!(record(&p, &mut live, false));
        assert!(!live.ok);
        let mut ready = ProbeState::new(Instant::now(), false);
        assert!(record(&p, &mut ready, true));
        assert!(ready.ok);
        // A success resets the failure count.
        record(&p, &mut ready, false);
        record(&p, &mut ready, false);
        record(&p, &mut ready, true);
        record(&p, &mut ready, false);
        assert!(ready.ok);
    }

    #[test]
    fn ports_resolve_by_number_or_name() {
        let c = Container {
            ports: vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..ContainerPort::default()
            }],
            ..Container::default()
        };
        assert_eq!(resolve_port(&IntOrString::Int(80), &c).unwrap(), 80);
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &c).unwrap(),
            8080
        );
        assert!(resolve_port(&IntOrString::String("x".into()), &c).is_err());
        assert!(resolve_port(&IntOrString::Int(70000), &c).is_err());
    }

    #[test]
    fn http_requests_carry_the_headers_and_may_replace_the_defaults() {
        let c = Container {
            ports: vec![ContainerPort {
                name: Some("web".into()),
                container_port: 8080,
                ..ContainerPort::default()
            }],
            ..Container::default()
        };
        let h: HttpGetAction = serde_json::from_value(serde_json::json!({
            "path": "/healthz", "port": "web", "scheme": "HTTPS",
            "httpHeaders": [{"name": "Custom-Header", "value": "Awesome"},
                            {"name": "host", "value": "example.com"}]
        }))
        .unwrap();
        let check = HttpCheck::of(&h, &c).unwrap();
        assert_eq!(check.url(), "https://127.0.0.1:8080/healthz");
        assert_eq!(
            check.request(),
            "GET /healthz HTTP/1.0\r\nUser-Agent: shoal-probe/1\r\nAccept: */*\r\n\
             Custom-Header: Awesome\r\nhost: example.com\r\nConnection: close\r\n\r\n"
        );
        let plain: HttpGetAction =
            serde_json::from_value(serde_json::json!({"port": 80, "host": "10.0.0.7"})).unwrap();
        let check = HttpCheck::of(&plain, &c).unwrap();
        assert_eq!(check.url(), "http://10.0.0.7:80/");
        assert!(check.request().contains("\r\nHost: 10.0.0.7:80\r\n"));
        // Hooks: sleep and exec; a probe and a hook with the same action agree.
        let hook: LifecycleHandler =
            serde_json::from_value(serde_json::json!({"sleep": {"seconds": 3}})).unwrap();
        assert_eq!(Check::of_hook(&hook, &c).unwrap(), Check::Sleep(3));
        let probe: Probe =
            serde_json::from_value(serde_json::json!({"tcpSocket": {"port": "web"}})).unwrap();
        assert_eq!(Check::of_probe(&probe, &c).unwrap(), Check::Tcp(8080));
    }

    #[test]
    fn grpc_checks_against_a_local_health_server() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let l = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = l.local_addr().unwrap().port();
        let (reporter, service) = tonic_health::server::health_reporter();
        rt.block_on(reporter.set_service_status("", tonic_health::ServingStatus::Serving));
        rt.block_on(reporter.set_service_status("db", tonic_health::ServingStatus::NotServing));
        rt.spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
        );
        let t = Duration::from_secs(5);
        grpc_check(port, "", t).unwrap();
        let e = grpc_check(port, "db", t).unwrap_err();
        assert!(e.contains("NOT_SERVING"), "{e}");
        let e = grpc_check(port, "nope", t).unwrap_err();
        assert!(e.contains("grpc health check"), "{e}");
        drop(rt);
        // Nothing listens any more.
        assert!(grpc_check(port, "", t).is_err());
    }

    #[test]
    fn https_checks_send_the_headers_and_skip_certificate_checks_like_the_kubelet() {
        use rustls::pki_types::PrivateKeyDer;
        use rustls::pki_types::pem::PemObject;
        // A certificate of a CA the probe has never seen: verification would refuse it.
        let ca = shoal_pki::Ca::generate("probe-test").unwrap();
        let (cert, key) = ca
            .issue(
                &shoal_pki::Identity::Node { name: "web".into() },
                &["127.0.0.1".into()],
                Duration::from_secs(3600),
            )
            .unwrap();
        let cfg = std::sync::Arc::new(
            rustls::ServerConfig::builder_with_provider(shoal_pki::tls::provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    shoal_pki::tls::certs_from_pem("cert", &cert).unwrap(),
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
                )
                .unwrap(),
        );
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let mut requests = Vec::new();
            for (i, s) in l.incoming().take(2).enumerate() {
                let conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, s.unwrap());
                let mut req = Vec::new();
                let mut b = [0u8; 512];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut b) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&b[..n]),
                    }
                }
                let code = if i == 0 { "200 OK" } else { "503 Busy" };
                let _ = tls.write_all(format!("HTTP/1.0 {code}\r\n\r\n").as_bytes());
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
                requests.push(String::from_utf8_lossy(&req).into_owned());
            }
            requests
        });
        let check = HttpCheck {
            host: Ipv4Addr::LOCALHOST,
            port,
            path: "/healthz".into(),
            https: true,
            headers: vec![("X-Probe".into(), "shoal".into())],
        };
        http_get(&check, Duration::from_secs(5)).unwrap();
        let e = http_get(&check, Duration::from_secs(5)).unwrap_err();
        assert!(e.contains("503"), "{e}");
        let requests = server.join().unwrap();
        assert!(
            requests[0].starts_with("GET /healthz HTTP/1.0\r\n"),
            "{requests:?}"
        );
        assert!(
            requests[0].contains("\r\nX-Probe: shoal\r\n"),
            "{requests:?}"
        );
    }

    #[test]
    fn http_and_tcp_checks_against_a_local_server() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for (i, s) in l.incoming().take(2).enumerate() {
                let mut s = s.unwrap();
                let mut b = [0u8; 512];
                let _ = s.read(&mut b);
                let code = if i == 0 { "200 OK" } else { "500 Oops" };
                let _ = s.write_all(format!("HTTP/1.0 {code}\r\n\r\n").as_bytes());
            }
        });
        let check = |path: &str| HttpCheck {
            host: Ipv4Addr::LOCALHOST,
            port,
            path: path.into(),
            https: false,
            headers: Vec::new(),
        };
        http_get(&check("/healthz"), Duration::from_secs(2)).unwrap();
        let e = http_get(&check("/"), Duration::from_secs(2)).unwrap_err();
        assert!(e.contains("500"), "{e}");
        server.join().unwrap();
    }
}
