//! The metrics listener (`--metrics-listen HOST:PORT|none`): plain HTTP/1.1 serving
//! `/metrics` (Prometheus text), `/healthz` (the process answers) and `/readyz` (the
//! daemon's own readiness check). Loopback by default: it has no authentication.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::ObserveError;

/// A `--metrics-listen` value: an address, or `none` (no listener).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    /// No listener.
    Off,
    /// Listen here.
    On(SocketAddr),
}

impl std::str::FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Listen, String> {
        match s.trim() {
            "none" => Ok(Listen::Off),
            v => v
                .parse()
                .map(Listen::On)
                .map_err(|_| format!("{v:?}: expected IP:PORT (e.g. 127.0.0.1:7080) or none")),
        }
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Off => f.write_str("none"),
            Listen::On(a) => write!(f, "{a}"),
        }
    }
}

impl Listen {
    /// The port, when on.
    pub fn port(&self) -> Option<u16> {
        match self {
            Listen::Off => None,
            Listen::On(a) => Some(a.port()),
        }
    }

    /// Binds the address (`None` when off); the error names `flag` and the address.
    pub async fn bind(&self, flag: &'static str) -> Result<Option<TcpListener>, ObserveError> {
        match *self {
            Listen::Off => Ok(None),
            Listen::On(addr) => TcpListener::bind(addr)
                .await
                .map(Some)
                .map_err(|source| ObserveError::Bind { flag, addr, source }),
        }
    }
}

/// The daemon's readiness: `Ok` when ready, else why not (the body of a 503). It may
/// ask the network (the controller's asks the Raft leader); it is given 3 s.
pub type ReadyCheck = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync,
>;

/// A [`ReadyCheck`] from a synchronous function.
pub fn ready_fn(f: impl Fn() -> Result<(), String> + Send + Sync + 'static) -> ReadyCheck {
    let f = Arc::new(f);
    Arc::new(move || {
        let f = f.clone();
        Box::pin(async move { f() })
    })
}

/// How long `/readyz` waits for the check.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until `shutdown` ends.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    ready: ReadyCheck,
    shutdown: impl Future<Output = ()> + Send,
) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(listen = %addr, "metrics serving");
    }
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("metrics listener: accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (registry, ready) = (registry.clone(), ready.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (registry, ready) = (registry.clone(), ready.clone());
                async move {
                    Ok::<_, Infallible>(
                        respond(req.method(), req.uri().path(), &registry, &ready).await,
                    )
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// The content type of the text `prometheus-client` writes (OpenMetrics 1.0).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn respond(
    method: &Method,
    path: &str,
    registry: &Registry,
    ready: &ReadyCheck,
) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
    }
    match path {
        "/metrics" => {
            let mut r = text(StatusCode::OK, crate::encode(registry));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(CONTENT_TYPE),
            );
            r
        }
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => match tokio::time::timeout(READY_TIMEOUT, ready()).await {
            Ok(Ok(())) => text(StatusCode::OK, "ready\n".into()),
            Ok(Err(why)) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
            Err(_) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: no answer within {READY_TIMEOUT:?}\n"),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn listen_values() {
        assert_eq!("none".parse::<Listen>(), Ok(Listen::Off));
        assert_eq!(
            "127.0.0.1:7080".parse::<Listen>(),
            Ok(Listen::On("127.0.0.1:7080".parse().unwrap()))
        );
        let e = "7080".parse::<Listen>().unwrap_err();
        assert!(e.contains("\"7080\"") && e.contains("none"), "{e}");
        assert_eq!(Listen::Off.to_string(), "none");
    }

    #[tokio::test]
    async fn routes() {
        let r = crate::new_registry();
        let ok = ready_fn(|| Ok(()));
        let no = ready_fn(|| Err("no leader".into()));
        assert_eq!(
            respond(&Method::GET, "/healthz", &r, &no).await.status(),
            200
        );
        assert_eq!(
            respond(&Method::GET, "/readyz", &r, &ok).await.status(),
            200
        );
        assert_eq!(
            respond(&Method::GET, "/readyz", &r, &no).await.status(),
            503
        );
        assert_eq!(respond(&Method::GET, "/nope", &r, &ok).await.status(), 404);
        assert_eq!(
            respond(&Method::POST, "/metrics", &r, &ok).await.status(),
            405
        );
        let m = respond(&Method::GET, "/metrics", &r, &ok).await;
        assert_eq!(m.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
    }

    #[tokio::test]
    async fn serves_over_tcp() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(
            l,
            Arc::new(crate::new_registry()),
            ready_fn(|| Ok(())),
            async {
                let _ = rx.await;
            },
        ));
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).await.unwrap();
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(
            body.contains("# TYPE shoal_process_resident_memory_bytes gauge"),
            "{body}"
        );
        assert!(body.contains("shoal_build_info{"), "{body}");
        // At least this test's task and the server's are alive.
        let tasks: i64 = body
            .lines()
            .find_map(|l| l.strip_prefix("shoal_process_tokio_tasks "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no task count in {body}"));
        assert!(tasks >= 1, "{body}");
        let _ = tx.send(());
        task.await.unwrap();
    }
}
