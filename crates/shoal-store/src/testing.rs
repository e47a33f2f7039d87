//! Helpers to run in-process members with real loopback gRPC servers (tests, integration).

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

use crate::{Store, StoreConfig, StoreError};

/// A running member: its store, its gRPC server task and the address it listens on.
#[derive(Debug)]
pub struct Member {
    /// The member's store.
    pub store: Store,
    /// The task serving the member's Raft gRPC service.
    pub server: JoinHandle<()>,
    /// The server's listening address.
    pub addr: SocketAddr,
}

impl Member {
    /// Stops the member: aborts its server, shuts Raft down and waits for the server task.
    pub async fn stop(self) -> Result<(), StoreError> {
        self.server.abort();
        let _ = self.server.await;
        self.store.shutdown().await
    }
}

/// Binds `127.0.0.1:0` for a member that has no address yet (to fill `advertise_addr` and
/// `peers` before [`spawn_member_on`]).
pub async fn bind_loopback() -> Result<TcpListener, StoreError> {
    TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| StoreError::Unavailable(format!("binding 127.0.0.1:0: {e}")))
}

/// Opens a member's store and serves its Raft service on `listener` (does not bootstrap).
pub async fn spawn_member_on(cfg: StoreConfig, listener: TcpListener) -> Result<Member, StoreError> {
    let addr = listener.local_addr().map_err(|e| StoreError::Unavailable(format!("listener address: {e}")))?;
    let store = Store::open(cfg).await?;
    let svc = store.raft_service();
    let server = tokio::spawn(async move {
        let res = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
        if let Err(e) = res {
            tracing::warn!(error = %e, "raft grpc server ended");
        }
    });
    Ok(Member { store, server, addr })
}

/// Opens a member and serves it on `cfg.advertise_addr` if it names a port, else on
/// `127.0.0.1:0` (then `advertise_addr` is set to the bound address). Does not bootstrap.
pub async fn spawn_member(mut cfg: StoreConfig) -> Result<Member, StoreError> {
    let listener = if cfg.advertise_addr.is_empty() || cfg.advertise_addr.ends_with(":0") {
        let l = bind_loopback().await?;
        let a = l.local_addr().map_err(|e| StoreError::Unavailable(format!("listener address: {e}")))?;
        cfg.advertise_addr = a.to_string();
        l
    } else {
        TcpListener::bind(&cfg.advertise_addr)
            .await
            .map_err(|e| StoreError::Unavailable(format!("binding {}: {e}", cfg.advertise_addr)))?
    };
    spawn_member_on(cfg, listener).await
}
