//! Request metrics of a tonic server, as a tower layer: a counter of requests by
//! service, method and gRPC status code, and a histogram of the time to the response's
//! headers by service and method.
//!
//! The code is the `grpc-status` of the response headers (tonic sends an error before
//! any message as a trailers-only response, which is where unary errors go); a
//! response whose headers carry none is counted `OK` (a stream that fails later still
//! counts as `OK`). Labels come from the request path `/package.Service/Method`; past
//! [`MAX_METHODS`] distinct paths, or for a path of another shape, they are `other`, so
//! that clients cannot grow the label set without bound.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Most distinct (service, method) pairs labelled by name.
pub const MAX_METHODS: usize = 500;

/// Labels of `shoal_grpc_requests_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    /// `shoal.v1.Cluster`.
    pub service: String,
    /// `Apply`.
    pub method: String,
    /// `OK`, `NotFound`, … (tonic's names of the gRPC codes).
    pub code: String,
}

/// Labels of `shoal_grpc_request_duration_seconds`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct MethodLabels {
    /// `shoal.v1.Cluster`.
    pub service: String,
    /// `Apply`.
    pub method: String,
}

fn duration_histogram() -> Histogram {
    // 0.5 ms … ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The metrics of one server (clone it into the layer).
#[derive(Debug, Clone)]
pub struct GrpcMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<MethodLabels, Histogram, fn() -> Histogram>,
    seen: Arc<Mutex<HashSet<String>>>,
}

impl GrpcMetrics {
    /// Makes the metrics and registers them in `r`.
    pub fn register(r: &mut Registry) -> GrpcMetrics {
        let m = GrpcMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            seen: Default::default(),
        };
        r.register(
            "grpc_requests",
            "gRPC requests served, by service, method and status code",
            m.requests.clone(),
        );
        r.register(
            "grpc_request_duration_seconds",
            "Time from a gRPC request to its response headers, by service and method",
            m.duration.clone(),
        );
        m
    }

    /// The layer to put on a tonic server.
    pub fn layer(&self) -> GrpcMetricsLayer {
        GrpcMetricsLayer(self.clone())
    }

    /// The (service, method) labels of a request path.
    pub fn labels(&self, path: &str) -> (String, String) {
        let Some((service, method)) = split_path(path) else {
            return ("other".into(), "other".into());
        };
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if !seen.contains(path) {
            if seen.len() >= MAX_METHODS {
                return ("other".into(), "other".into());
            }
            seen.insert(path.to_string());
        }
        (service.to_string(), method.to_string())
    }

    fn observe(&self, service: String, method: String, code: &str, secs: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                service: service.clone(),
                method: method.clone(),
                code: code.to_string(),
            })
            .inc();
        self.duration
            .get_or_create(&MethodLabels { service, method })
            .observe(secs);
    }
}

/// `/package.Service/Method` → (`package.Service`, `Method`); `None` for any other shape.
pub fn split_path(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
    };
    (ok(service) && ok(method)).then_some((service, method))
}

/// The name of a `grpc-status` header value (tonic's `Code` names).
pub fn code_name(value: Option<&[u8]>) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "Cancelled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    match value {
        None => "OK",
        Some(v) => std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .and_then(|i| NAMES.get(i).copied())
            .unwrap_or("Unknown"),
    }
}

/// The tower layer of [`GrpcMetrics`].
#[derive(Debug, Clone)]
pub struct GrpcMetricsLayer(GrpcMetrics);

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;
    fn layer(&self, inner: S) -> GrpcMetricsService<S> {
        GrpcMetricsService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// The service [`GrpcMetricsLayer`] wraps around a server's.
#[derive(Debug, Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    metrics: GrpcMetrics,
}

impl<S, B, RB> tower::Service<http::Request<B>> for GrpcMetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let (service, method) = self.metrics.labels(req.uri().path());
        let start = Instant::now();
        let fut = self.inner.call(req);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let res = fut.await;
            let code = match &res {
                Ok(r) => code_name(r.headers().get("grpc-status").map(|v| v.as_bytes())),
                Err(_) => "Unknown",
            };
            metrics.observe(service, method, code, start.elapsed().as_secs_f64());
            res
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn method_labels() {
        assert_eq!(
            split_path("/shoal.v1.Cluster/Apply"),
            Some(("shoal.v1.Cluster", "Apply"))
        );
        assert_eq!(
            split_path("/grpc.health.v1.Health/Check"),
            Some(("grpc.health.v1.Health", "Check"))
        );
        for bad in ["", "/", "/a", "/a/", "//b", "/a/b/c", "/a b/c", "a/b"] {
            assert_eq!(split_path(bad), None, "{bad}");
        }
        let m = GrpcMetrics::register(&mut Registry::default());
        assert_eq!(
            m.labels("/shoal.v1.Cluster/Get"),
            ("shoal.v1.Cluster".into(), "Get".into())
        );
        assert_eq!(m.labels("/x/y/z"), ("other".into(), "other".into()));
        for i in 0..MAX_METHODS {
            m.labels(&format!("/s/m{i}"));
        }
        assert_eq!(m.labels("/s/new"), ("other".into(), "other".into()));
        assert_eq!(m.labels("/shoal.v1.Cluster/Get").1, "Get", "seen before");
    }

    #[test]
    fn codes() {
        assert_eq!(code_name(None), "OK");
        assert_eq!(code_name(Some(b"0")), "OK");
        assert_eq!(code_name(Some(b"5")), "NotFound");
        assert_eq!(code_name(Some(b"16")), "Unauthenticated");
        assert_eq!(code_name(Some(b"99")), "Unknown");
    }

    #[tokio::test]
    async fn layer_counts_requests() {
        use tower::{Layer, Service, ServiceExt};
        let mut r = Registry::default();
        let m = GrpcMetrics::register(&mut r);
        let inner = tower::service_fn(|req: http::Request<()>| async move {
            let mut resp = http::Response::new(());
            if req.uri().path().ends_with("Missing") {
                resp.headers_mut()
                    .insert("grpc-status", http::HeaderValue::from_static("5"));
            }
            Ok::<_, std::convert::Infallible>(resp)
        });
        let mut svc = m.layer().layer(inner);
        for p in ["/p.S/Get", "/p.S/Get", "/p.S/Missing"] {
            let req = http::Request::builder().uri(p).body(()).unwrap();
            svc.ready().await.unwrap().call(req).await.unwrap();
        }
        let text = crate::encode(&r);
        assert!(
            text.contains(r#"grpc_requests_total{service="p.S",method="Get",code="OK"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"grpc_requests_total{service="p.S",method="Missing",code="NotFound"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"grpc_request_duration_seconds_count{service="p.S",method="Get"} 2"#),
            "{text}"
        );
    }
}
