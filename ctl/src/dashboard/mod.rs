//! `shoalctl dashboard`: a read-only web UI of the cluster, served on 127.0.0.1 by this
//! process with the user's own connection and credentials (like `kubectl proxy` with a
//! dashboard). The credentials never leave the process: the browser talks HTTP/1.1 to
//! loopback, and this server makes the gRPC calls.
//!
//! Three parts: [`guard`] decides who may ask (a random token in the printed URL, then an
//! HttpOnly SameSite=Strict cookie; Host and Origin must be the dashboard's own);
//! [`render`] turns objects into HTML, pure; this module is the thin layer between them
//! and the cluster (route, fetch, respond). The CSS and the script are embedded in the
//! binary: no CDN, nothing fetched from elsewhere.

pub mod guard;
pub mod render;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::Value;
use shoal_proto::proxy_client::ProxyClient;
use shoal_proto::{
    ClusterStatusRequest, ClusterStatusResponse, LogsRequest, NodeStats, StatsRequest,
};

use crate::commands::{Context, note, print};
use crate::error::{CtlError, Service, Target, service_error, status_error};
use guard::{Guard, Verdict};
use render::{Scope, Tab};

const CSS: &str = include_str!("assets/dashboard.css");
const JS: &str = include_str!("assets/dashboard.js");

/// How long the logs page waits for a pod's log.
const LOGS_TIMEOUT: Duration = Duration::from_secs(10);

/// What `shoalctl dashboard` was asked for.
#[derive(Debug, Clone)]
pub struct Options {
    /// The port on 127.0.0.1 (0: a free one).
    pub port: u16,
    /// Whether to try `xdg-open` on the URL.
    pub open_browser: bool,
    /// Lines of a pod's log the logs page shows (`?tail=N` overrides).
    pub log_lines: i64,
}

/// What every request handler shares.
#[derive(Debug)]
struct State {
    guard: Guard,
    /// The connection made at start; each request works on a clone (which shares it), so
    /// a slow page (a node's stats, a log) does not hold up the others.
    ctx: Context,
    /// The namespace pages show without `?namespace=`.
    default_namespace: String,
    log_lines: i64,
}

/// Listens on 127.0.0.1, prints the URL (with the token) as the first line of stdout,
/// optionally opens a browser, and serves until Ctrl-C.
pub async fn serve(ctx: Context, opts: Options) -> Result<(), CtlError> {
    let addr = format!("127.0.0.1:{}", opts.port);
    let listen_error = |source| CtlError::Listen {
        addr: addr.clone(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", opts.port))
        .await
        .map_err(listen_error)?;
    let port = listener.local_addr().map_err(listen_error)?.port();
    let guard = Guard::new(Guard::random_token(), port);
    let url = format!("http://127.0.0.1:{port}/?token={}", guard.token());
    print(&format!("{url}\n"))?;
    note(
        "Serving the dashboard on 127.0.0.1 only (read-only, with your credentials); Ctrl-C stops it.",
    );
    if opts.open_browser {
        open_browser(&url);
    }
    let state = Arc::new(State {
        guard,
        default_namespace: ctx.namespace().to_string(),
        ctx,
        log_lines: opts.log_lines,
    });
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    note(&format!("dashboard: accept: {e}"));
                    continue;
                }
            },
            _ = &mut ctrl_c => return Ok(()),
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req).await) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            // HTTP/1.1 only: every request then has a Host header to check.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await;
        });
    }
}

/// Tries `xdg-open URL` in the background; a missing or failing opener only gets a note.
fn open_browser(url: &str) {
    let child = tokio::process::Command::new("xdg-open")
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    match child {
        Ok(mut c) => {
            tokio::spawn(async move {
                let _ = c.wait().await;
            });
        }
        Err(_) => note("could not start xdg-open: open the URL above in a browser"),
    }
}

type Reply = Response<Full<Bytes>>;

/// The guard, then the page; every answer gets the same protective headers and a line on
/// stderr (method, path, status; never the query, which may hold the token).
async fn handle<B>(state: &State, req: http::Request<B>) -> Reply {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(String::from);
    let mut reply = match state.guard.check(&method, query.as_deref(), req.headers()) {
        Verdict::Forbidden(reason) => html(StatusCode::FORBIDDEN, render::forbidden(reason)),
        Verdict::MethodNotAllowed => {
            let mut r = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "the dashboard is read-only\n",
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            r
        }
        Verdict::Allow { set_cookie } => {
            let mut r = route(state, &path, query.as_deref()).await;
            if set_cookie && let Ok(v) = HeaderValue::from_str(&state.guard.set_cookie()) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
    };
    let h = reply.headers_mut();
    for (k, v) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    note(&format!("{method} {path} {}", reply.status().as_u16()));
    reply
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn html(status: StatusCode, body: String) -> Reply {
    respond(status, "text/html; charset=utf-8", body)
}

fn text(status: StatusCode, body: &str) -> Reply {
    respond(status, "text/plain; charset=utf-8", body.to_string())
}

/// Which page a path is: the embedded assets, a pod's logs, or a page of objects.
async fn route(state: &State, path: &str, query: Option<&str>) -> Reply {
    match path {
        "/assets/dashboard.css" => {
            return respond(StatusCode::OK, "text/css; charset=utf-8", CSS.into());
        }
        "/assets/dashboard.js" => {
            return respond(StatusCode::OK, "text/javascript; charset=utf-8", JS.into());
        }
        _ => {}
    }
    let mut ctx = state.ctx.clone();
    if let Some((ns, pod)) = logs_target(path) {
        let tail = param(query, "tail")
            .and_then(|t| t.parse::<i64>().ok())
            .filter(|t| *t > 0)
            .unwrap_or(state.log_lines);
        if let Err(e) = checked_name(&ns).and(checked_name(&pod)) {
            return html(
                StatusCode::BAD_REQUEST,
                render::error_page(Tab::Pods, None, &e),
            );
        }
        let log = read_log(&mut ctx, &ns, &pod, tail)
            .await
            .map_err(|e| e.to_string());
        let status = match log {
            Ok(_) => StatusCode::OK,
            Err(_) => StatusCode::BAD_GATEWAY,
        };
        let log = log.as_deref().map_err(String::as_str);
        return html(status, render::logs(&ns, &pod, tail, log));
    }
    let tab = match path {
        "/" => Tab::Overview,
        "/nodes" => Tab::Nodes,
        "/placement" => Tab::Placement,
        "/pods" | "/api/pods" => Tab::Pods,
        "/deployments" => Tab::Deployments,
        "/services" => Tab::Services,
        "/events" => Tab::Events,
        _ => {
            return html(
                StatusCode::NOT_FOUND,
                render::error_page(Tab::Overview, None, &format!("no page {path}")),
            );
        }
    };
    // No parameter: the context's namespace; an empty one: every namespace.
    let namespace = match param(query, "namespace") {
        None => Some(state.default_namespace.clone()),
        Some(ns) if ns.is_empty() => None,
        Some(ns) => match checked_name(&ns) {
            Ok(()) => Some(ns),
            Err(e) => return html(StatusCode::BAD_REQUEST, render::error_page(tab, None, &e)),
        },
    };
    match page(&mut ctx, path, namespace).await {
        Ok(Body::Html(body)) => html(StatusCode::OK, body),
        Ok(Body::Json(body)) => respond(StatusCode::OK, "application/json", body),
        Err((_, e)) if path == "/api/pods" => respond(
            StatusCode::BAD_GATEWAY,
            "application/json",
            serde_json::json!({"error": e.to_string()}).to_string(),
        ),
        Err((scope, e)) => html(
            StatusCode::BAD_GATEWAY,
            render::error_page(tab, scope.as_ref(), &e.to_string()),
        ),
    }
}

/// A page's answer.
enum Body {
    Html(String),
    Json(String),
}

/// What went wrong getting a page's data (with the namespace picker, when it was read).
type PageError = (Option<Scope>, CtlError);

/// Reads what the page at `path` shows and renders it.
async fn page(ctx: &mut Context, path: &str, namespace: Option<String>) -> Result<Body, PageError> {
    let now = chrono::Utc::now();
    match path {
        "/" => return overview(ctx).await.map(Body::Html),
        "/nodes" => return nodes(ctx, now).await.map(Body::Html),
        _ => {}
    }
    let scope = scope(ctx, namespace).await.map_err(|e| (None, e))?;
    let ns = scope.namespace.clone().unwrap_or_default();
    let body = async {
        Ok(match path {
            "/api/pods" => {
                let pods = list(ctx, "Pod", &ns).await?;
                Body::Json(render::pods_json(&scope, &pods, now).to_string())
            }
            "/pods" => Body::Html(render::pods(&scope, &list(ctx, "Pod", &ns).await?, now)),
            "/placement" => {
                let nodes = list(ctx, "Node", "").await?;
                let pods = list(ctx, "Pod", &ns).await?;
                Body::Html(render::placement(&scope, &nodes, &pods))
            }
            "/deployments" => {
                let items = list(ctx, "Deployment", &ns).await?;
                Body::Html(render::deployments(&scope, &items, now))
            }
            "/services" => {
                let services = list(ctx, "Service", &ns).await?;
                let endpoints = list(ctx, "Endpoints", &ns).await?;
                Body::Html(render::services(&scope, &services, endpoints, now))
            }
            _ => Body::Html(render::events(&scope, &list(ctx, "Event", &ns).await?, now)),
        })
    }
    .await;
    body.map_err(|e: CtlError| (Some(scope), e))
}

type PageResult = Result<String, PageError>;

async fn overview(ctx: &mut Context) -> PageResult {
    let status = cluster_status(ctx).await.map_err(|e| e.to_string());
    let nodes = list(ctx, "Node", "").await.map_err(|e| (None, e))?;
    let pods = list(ctx, "Pod", "").await.map_err(|e| (None, e))?;
    Ok(render::overview(
        status.as_ref().map_err(String::as_str),
        &nodes,
        &pods,
    ))
}

async fn nodes(ctx: &mut Context, now: chrono::DateTime<chrono::Utc>) -> PageResult {
    let nodes = list(ctx, "Node", "").await.map_err(|e| (None, e))?;
    let pods = list(ctx, "Pod", "").await.map_err(|e| (None, e))?;
    let stats = node_stats(ctx).await.map_err(|e| e.to_string());
    Ok(render::nodes(
        &nodes,
        &pods,
        stats.as_deref().map_err(String::as_str),
        now,
    ))
}

async fn scope(ctx: &mut Context, namespace: Option<String>) -> Result<Scope, CtlError> {
    let mut namespaces: Vec<String> = list(ctx, "Namespace", "")
        .await?
        .iter()
        .map(|n| crate::output::name_of(n).to_string())
        .collect();
    namespaces.sort();
    Ok(Scope {
        namespace,
        namespaces,
    })
}

async fn list(ctx: &mut Context, kind: &str, namespace: &str) -> Result<Vec<Value>, CtlError> {
    let kind = crate::kinds::resolve(kind)?;
    let ns = if kind.namespaced { namespace } else { "" };
    Ok(ctx.list(&kind, ns, "", "").await?.0)
}

async fn cluster_status(ctx: &mut Context) -> Result<ClusterStatusResponse, CtlError> {
    ctx.conn()
        .await?
        .call(|mut c| async move { c.status(ClusterStatusRequest {}).await })
        .await
        .map_err(|s| status_error(&s, None))
}

/// `Proxy.Stats` of every node, as `top nodes` reads it.
async fn node_stats(ctx: &mut Context) -> Result<Vec<NodeStats>, CtlError> {
    let resp = ctx
        .conn()
        .await?
        .call_on(|ch| async move { ProxyClient::new(ch).stats(StatsRequest::default()).await })
        .await
        .map_err(|s| service_error(&s, None, Service::Workload))?;
    Ok(resp.nodes)
}

/// The last `tail` lines of a pod's (default container's) log through `Proxy.Logs`.
async fn read_log(
    ctx: &mut Context,
    namespace: &str,
    pod: &str,
    tail: i64,
) -> Result<String, CtlError> {
    let target = Target::new("pod", namespace, pod);
    let req = LogsRequest {
        namespace: namespace.to_string(),
        pod: pod.to_string(),
        tail_lines: tail,
        ..Default::default()
    };
    let read = async {
        let mut stream = ctx
            .conn()
            .await?
            .call_on(|ch| {
                let r = req.clone();
                async move { ProxyClient::new(ch).logs(r).await }
            })
            .await
            .map_err(|s| service_error(&s, Some(&target), Service::Workload))?;
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|s| service_error(&s, Some(&target), Service::Workload))?;
            out.extend_from_slice(&chunk.data);
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    };
    match tokio::time::timeout(LOGS_TIMEOUT, read).await {
        Ok(r) => r,
        Err(_) => Err(CtlError::Timeout(format!(
            "no end of the log of pod {pod:?} within {LOGS_TIMEOUT:?}"
        ))),
    }
}

/// `/pods/NS/NAME/logs` → (NS, NAME), percent-decoded.
fn logs_target(path: &str) -> Option<(String, String)> {
    let rest = path.strip_prefix("/pods/")?.strip_suffix("/logs")?;
    let (ns, pod) = rest.split_once('/')?;
    Some((decode(ns)?, decode(pod)?))
}

/// A namespace or pod name from a URL: a DNS label/subdomain, so nothing else reaches a request.
fn checked_name(name: &str) -> Result<(), String> {
    shoal_api::validation::check_dns1123_subdomain(name).map_err(|m| format!("{name:?}: {m}"))
}

/// The decoded value of `key` in a query string (`+` is a space).
pub fn param(query: Option<&str>, key: &str) -> Option<String> {
    query?
        .split('&')
        .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| decode(&v.replace('+', " ")))
}

/// Percent-decoding; None for malformed escapes or bytes that are not UTF-8.
fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_queries_decode() {
        assert_eq!(
            logs_target("/pods/default/web-1/logs"),
            Some(("default".into(), "web-1".into()))
        );
        assert_eq!(logs_target("/pods/default/logs"), None);
        assert_eq!(logs_target("/pods/a%2/b/logs"), None);
        assert_eq!(
            param(Some("namespace=team&tail=5"), "tail").as_deref(),
            Some("5")
        );
        assert_eq!(
            param(Some("namespace=&x"), "namespace").as_deref(),
            Some("")
        );
        assert_eq!(
            param(Some("namespace=a%20b+c"), "namespace").as_deref(),
            Some("a b c")
        );
        assert_eq!(param(Some("x=1"), "namespace"), None);
        assert_eq!(param(None, "namespace"), None);
        assert!(checked_name("web-1").is_ok());
        assert!(checked_name("<script>").is_err());
        assert!(checked_name("a/b").is_err());
    }
}
