//! Helpers to run in-process members with real loopback gRPC servers (tests, integration).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use shoal_pki::tls::{CertSlot, ClientAuth, Expect, Trust};
use shoal_pki::{Ca, Identity};

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

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

/// The CA of in-process test clusters (one per test process).
pub fn test_ca() -> &'static Ca {
    static CA: OnceLock<Ca> = OnceLock::new();
    CA.get_or_init(|| Ca::generate("store-test").expect("test CA"))
}

/// A controller certificate of the test CA for member `id` (loopback names).
pub fn test_member_slot(id: u64) -> CertSlot {
    let ca = test_ca();
    let sans = ["127.0.0.1".to_string(), "localhost".to_string()];
    let (cert, key) = ca
        .issue(
            &Identity::Controller { id },
            &sans,
            Duration::from_secs(24 * 3600),
        )
        .expect("member certificate");
    CertSlot::from_pem(&format!("{cert}{}", ca.cert_pem()), &key).expect("member slot")
}

/// The peer TLS of member `id` of a test cluster.
pub fn test_peer_tls(id: u64) -> Arc<rustls::ClientConfig> {
    shoal_pki::tls::client_config(
        &Trust::Ca(test_ca().cert_pem().to_string()),
        Some(&test_member_slot(id)),
        Expect::Controller,
    )
    .expect("peer TLS")
}

/// The authorization policy of the Raft service: only controllers.
pub fn raft_policy() -> shoal_pki::layer::Policy {
    Arc::new(|path: &str, who: Option<&Identity>| match who {
        Some(Identity::Controller { .. }) => Ok(()),
        Some(other) => Err(tonic::Status::permission_denied(format!(
            "{path}: only controllers may call the Raft service, not {other}"
        ))),
        None => Err(tonic::Status::unauthenticated(
            "a client certificate of this cluster is required",
        )),
    })
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
    let id = cfg.node_id;
    let mut cfg = cfg;
    if cfg.peer_tls.is_none() {
        cfg.peer_tls = Some(test_peer_tls(id));
    }
    let store = Store::open(cfg).await?;
    let svc = store.raft_service();
    let server_tls = shoal_pki::tls::server_config(
        test_ca().cert_pem(),
        &test_member_slot(id),
        ClientAuth::Required,
    )
    .map_err(|e| StoreError::Invalid(e.to_string()))?;
    let (stop_serving, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let res = tonic::transport::Server::builder()
            .layer(shoal_pki::layer::AuthLayer::new(raft_policy()))
            .add_service(svc)
            .serve_with_incoming_shutdown(
                shoal_pki::tls::incoming(listener, server_tls),
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
