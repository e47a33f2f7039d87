//! Helpers to run in-process members with real loopback gRPC servers (tests, integration).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;

use crate::{Store, StoreConfig, StoreError};

/// A running member: its store, its gRPC server task and the address it listens on.
/// Dropping it aborts the server task (the Raft node keeps running until shut down).
#[derive(Debug)]
pub struct Member {
    /// The member's store.
    pub store: Store,
    /// The server's listening address.
    pub addr: SocketAddr,
    server: Option<JoinHandle<()>>,
    stop_serving: Option<oneshot::Sender<()>>,
}

impl Member {
    /// Stops the member: stops its server (gracefully, so that peers' open HTTP/2 connections
    /// are closed and they reconnect to whatever serves the address next; aborted after 2 s),
    /// then shuts Raft down.
    pub async fn stop(mut self) -> Result<(), StoreError> {
        if let Some(tx) = self.stop_serving.take() {
            let _ = tx.send(());
        }
        if let Some(mut server) = self.server.take()
            && tokio::time::timeout(Duration::from_secs(2), &mut server)
                .await
                .is_err()
        {
            server.abort();
            let _ = server.await;
        }
        self.store.shutdown().await
    }

    /// Aborts the server task at once (open connections of peers may linger).
    pub fn abort_server(&self) {
        if let Some(s) = &self.server {
            s.abort();
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(tx) = self.stop_serving.take() {
            let _ = tx.send(());
        }
        self.abort_server();
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
///
/// Accepted connections get `TCP_NODELAY`: without it Nagle's algorithm and delayed ACKs add
/// ~40 ms to every forwarded write and Raft round trip (servers built elsewhere should do the
/// same, e.g. with `TcpIncoming::with_nodelay`).
pub async fn spawn_member_on(
    cfg: StoreConfig,
    listener: TcpListener,
) -> Result<Member, StoreError> {
    let addr = listener
        .local_addr()
        .map_err(|e| StoreError::Unavailable(format!("listener address: {e}")))?;
    let store = Store::open(cfg).await?;
    let svc = store.raft_service();
    let (stop_serving, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let res = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                async move {
                    let _ = stopped.await;
                },
            )
            .await;
        if let Err(e) = res {
            tracing::warn!(error = %e, "raft grpc server ended");
        }
    });
    Ok(Member {
        store,
        addr,
        server: Some(server),
        stop_serving: Some(stop_serving),
    })
}

/// Opens a member and serves it on `cfg.advertise_addr` if it names a port, else on
/// `127.0.0.1:0` (then `advertise_addr` is set to the bound address). Does not bootstrap.
pub async fn spawn_member(mut cfg: StoreConfig) -> Result<Member, StoreError> {
    let listener = if cfg.advertise_addr.is_empty() || cfg.advertise_addr.ends_with(":0") {
        let l = bind_loopback().await?;
        let a = l
            .local_addr()
            .map_err(|e| StoreError::Unavailable(format!("listener address: {e}")))?;
        cfg.advertise_addr = a.to_string();
        l
    } else {
        TcpListener::bind(&cfg.advertise_addr)
            .await
            .map_err(|e| StoreError::Unavailable(format!("binding {}: {e}", cfg.advertise_addr)))?
    };
    spawn_member_on(cfg, listener).await
}
