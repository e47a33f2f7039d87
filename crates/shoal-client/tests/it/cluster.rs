//! Three in-process controller members: a Raft store each (real loopback gRPC between
//! them) and the real `Cluster` API service on a port of its own.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use shoal_controller::api::ClusterService;
use shoal_controller::network::NetConfig;
use shoal_proto::cluster_server::ClusterServer;
use shoal_store::StoreConfig;
use shoal_store::testing::{Member, bind_loopback, spawn_member_on};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One member: its store and server, and its API server.
#[derive(Debug)]
pub struct Node {
    pub member: Option<Member>,
    pub api: SocketAddr,
    api_task: JoinHandle<()>,
}

/// The members (ids 1..=n); dropping it stops every task and removes the data.
#[derive(Debug)]
pub struct Cluster {
    pub nodes: BTreeMap<u64, Node>,
    _dirs: Vec<TempDir>,
}

impl Cluster {
    /// Starts `n` members, each serving the cluster API: member 1 forms the cluster and
    /// adds the others.
    pub async fn start(test: &str, n: u64) -> Cluster {
        Self::start_with(test, n, |_| {}).await
    }

    /// As [`Cluster::start`], with `tweak` applied to every member's store configuration.
    pub async fn start_with(test: &str, n: u64, tweak: impl Fn(&mut StoreConfig)) -> Cluster {
        let mut listeners = BTreeMap::new();
        let mut peers = BTreeMap::new();
        for id in 1..=n {
            let l = bind_loopback().await.expect("bind raft");
            peers.insert(id, l.local_addr().expect("addr").to_string());
            listeners.insert(id, l);
        }
        let mut nodes = BTreeMap::new();
        let mut dirs = Vec::new();
        for (id, l) in listeners {
            let dir = tempfile::Builder::new()
                .prefix(&format!("shoal-client-{test}-{}-{id}-", std::process::id()))
                .tempdir()
                .expect("tempdir");
            let mut cfg = StoreConfig::new(id, dir.path(), peers[&id].clone());
            cfg.heartbeat_ms = 50;
            tweak(&mut cfg);
            let member = spawn_member_on(cfg, l).await.expect("spawn member");
            let api_l = TcpListener::bind("127.0.0.1:0").await.expect("bind api");
            let api = api_l.local_addr().expect("api addr");
            let svc = ClusterService::new(member.store.clone(), NetConfig::default());
            // The API over mutual TLS with the store's test CA, as a controller serves it.
            let server_tls = shoal_pki::tls::server_config(
                shoal_store::testing::test_ca().cert_pem(),
                &shoal_store::testing::test_member_slot(id),
                shoal_pki::tls::ClientAuth::Optional,
            )
            .expect("server tls");
            let api_task = tokio::spawn(async move {
                let _ = tonic::transport::Server::builder()
                    .layer(shoal_pki::layer::AuthLayer::new(
                        shoal_controller::authz::controller_policy(),
                    ))
                    .add_service(ClusterServer::new(svc))
                    .serve_with_incoming(shoal_pki::tls::incoming(api_l, server_tls))
                    .await;
            });
            nodes.insert(
                id,
                Node {
                    member: Some(member),
                    api,
                    api_task,
                },
            );
            dirs.push(dir);
        }
        // The one membership model: member 1 forms the cluster, the others are added.
        let store = |id: u64| {
            nodes[&id]
                .member
                .as_ref()
                .expect("member running")
                .store
                .clone()
        };
        tokio::time::timeout(Duration::from_secs(20), store(1).bootstrap())
            .await
            .expect("bootstrap in time")
            .expect("bootstrap");
        for id in 2..=n {
            store(1)
                .add_member(id, &peers[&id])
                .await
                .unwrap_or_else(|e| panic!("add member {id}: {e}"));
            tokio::time::timeout(Duration::from_secs(20), store(id).join())
                .await
                .expect("join in time")
                .expect("join");
        }
        Cluster { nodes, _dirs: dirs }
    }

    /// The API address of member `id`.
    pub fn api(&self, id: u64) -> SocketAddr {
        self.nodes[&id].api
    }

    /// Stops member `id` for good: its API server, then its Raft member.
    pub async fn kill(&mut self, id: u64) {
        let n = self.nodes.get_mut(&id).expect("member");
        n.api_task.abort();
        if let Some(m) = n.member.take() {
            let _ = m.stop().await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in self.nodes.values() {
            n.api_task.abort();
        }
    }
}

/// A client configuration for `list` with an admin certificate of the test CA.
pub fn client_config(list: &str) -> shoal_client::ClientConfig {
    let ca = shoal_store::testing::test_ca();
    let who = shoal_pki::Identity::User {
        name: "test".into(),
        role: shoal_pki::Role::Admin,
        namespace: None,
    };
    let (c, k) = ca
        .issue(&who, &[], std::time::Duration::from_secs(3600))
        .expect("admin cert");
    let slot = shoal_pki::tls::CertSlot::from_pem(&c, &k).expect("slot");
    let tls = shoal_pki::tls::client_config(
        &shoal_pki::tls::Trust::Ca(ca.cert_pem().to_string()),
        Some(&slot),
        shoal_pki::tls::Expect::Controller,
    )
    .expect("tls");
    shoal_client::ClientConfig::new(shoal_client::Endpoints::parse(list).expect("list"), tls)
}
