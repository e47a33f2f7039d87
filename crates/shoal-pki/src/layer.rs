//! The authorization layer every gRPC server puts in front of its services: it reads the
//! peer's identity from the verified client certificate, asks a policy whether that
//! identity may call the method at all, and answers `UNAUTHENTICATED` /
//! `PERMISSION_DENIED` before any handler runs. Handlers find the [`Identity`] in the
//! request extensions ([`identity_of`]) for their finer checks.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::Identity;

/// Decides from the gRPC path (`/package.Service/Method`) and the caller's identity
/// (`None`: no client certificate) whether a call may reach its service.
pub type Policy = Arc<dyn Fn(&str, Option<&Identity>) -> Result<(), Status> + Send + Sync>;

/// The layer (see the module docs).
#[derive(Clone)]
pub struct AuthLayer {
    policy: Policy,
}

impl std::fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthLayer")
    }
}

impl AuthLayer {
    /// A layer applying `policy`.
    pub fn new(policy: Policy) -> AuthLayer {
        AuthLayer { policy }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// The service the layer makes.
#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    policy: Policy,
}

impl<S> std::fmt::Debug for Auth<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auth")
    }
}

/// The identity of the peer that sent a request (set by [`AuthLayer`]).
pub fn identity_of<T>(req: &tonic::Request<T>) -> Option<Identity> {
    req.extensions().get::<Identity>().cloned()
}

fn peer_identity<B>(req: &http::Request<B>) -> Option<Identity> {
    let info = req.extensions().get::<TlsConnectInfo<TcpConnectInfo>>()?;
    let certs = info.peer_certs()?;
    let leaf = certs.first()?;
    match Identity::from_cert_der(leaf) {
        Ok(id) => Some(id),
        Err(e) => {
            tracing::info!("client certificate without a Shoal identity: {e}");
            None
        }
    }
}

impl<S, B> tower::Service<http::Request<B>> for Auth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let id = peer_identity(&req);
        match (self.policy)(req.uri().path(), id.as_ref()) {
            Ok(()) => {
                if let Some(id) = id {
                    req.extensions_mut().insert(id);
                }
                // The standard tower dance: call the clone that was made ready.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(inner.call(req))
            }
            Err(status) => {
                tracing::info!(path = req.uri().path(), peer = ?id, "refused: {}", status.message());
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}
