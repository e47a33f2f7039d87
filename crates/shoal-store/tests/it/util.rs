//! Test helpers: a cluster of in-process members on loopback, polling with deadlines.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use serde_json::{Value, json};
use shoal_store::testing::{Member, bind_loopback, spawn_member_on};
use shoal_store::{Store, StoreConfig};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::time::Instant;

/// Installs a log subscriber once (filter with RUST_LOG).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Polls `f` until it returns `Some`, panicking with the last observation after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(last) => {
                if Instant::now() > deadline {
                    panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A pod-like object.
pub fn pod(name: &str, image: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "main", "image": image}]},
    })
}

/// Three (or n) members with their own data dirs and fixed loopback addresses.
pub struct Cluster {
    pub members: BTreeMap<u64, Option<Member>>,
    pub cfgs: BTreeMap<u64, StoreConfig>,
    _dirs: Vec<TempDir>,
}

impl Cluster {
    /// Starts `n` members (ids 1..=n), bootstraps them and waits for a leader.
    pub async fn start(test: &str, n: u64, tweak: impl Fn(&mut StoreConfig)) -> Cluster {
        init_logs();
        let mut listeners: BTreeMap<u64, TcpListener> = BTreeMap::new();
        let mut peers = BTreeMap::new();
        for id in 1..=n {
            let l = bind_loopback().await.expect("bind");
            peers.insert(id, l.local_addr().expect("addr").to_string());
            listeners.insert(id, l);
        }
        let mut dirs = Vec::new();
        let mut cfgs = BTreeMap::new();
        let mut members = BTreeMap::new();
        for (id, l) in listeners {
            let dir = tempfile::Builder::new()
                .prefix(&format!("shoal-store-{test}-{id}-"))
                .tempdir()
                .expect("tempdir");
            let mut cfg = StoreConfig::new(id, dir.path(), peers[&id].clone());
            cfg.peers = peers.clone();
            cfg.heartbeat_ms = 50;
            cfg.election_timeout_ms = (300, 600);
            tweak(&mut cfg);
            let m = spawn_member_on(cfg.clone(), l).await.expect("spawn member");
            dirs.push(dir);
            cfgs.insert(id, cfg);
            members.insert(id, Some(m));
        }
        let stores: Vec<Store> = members
            .values()
            .flatten()
            .map(|m| m.store.clone())
            .collect();
        let boots = stores.iter().map(|s| {
            let s = s.clone();
            async move { tokio::time::timeout(Duration::from_secs(20), s.bootstrap()).await }
        });
        for r in futures::future::join_all(boots).await {
            r.expect("bootstrap in time").expect("bootstrap");
        }
        Cluster {
            members,
            cfgs,
            _dirs: dirs,
        }
    }

    /// The running member `id`'s store.
    pub fn store(&self, id: u64) -> Store {
        self.members[&id]
            .as_ref()
            .expect("member running")
            .store
            .clone()
    }

    /// Ids of running members.
    pub fn running(&self) -> Vec<u64> {
        self.members
            .iter()
            .filter(|(_, m)| m.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// The leader all running members agree on.
    pub async fn leader(&self) -> u64 {
        eventually("an agreed leader", Duration::from_secs(20), || async {
            let ls: Vec<Option<u64>> = self
                .running()
                .iter()
                .map(|id| *self.store(*id).leader_changes().borrow())
                .collect();
            match ls.first() {
                Some(Some(l))
                    if ls.iter().all(|x| *x == Some(*l)) && self.running().contains(l) =>
                {
                    Ok(*l)
                }
                _ => Err(format!("{ls:?}")),
            }
        })
        .await
    }

    /// Stops member `id` (aborts its server, shuts its Raft down, drops its store).
    pub async fn stop(&mut self, id: u64) {
        let m = self
            .members
            .get_mut(&id)
            .and_then(Option::take)
            .expect("member running");
        m.stop().await.expect("stop member");
    }

    /// Kills member `id` abruptly: aborts its server task (peers' open connections linger)
    /// and stops its Raft.
    pub async fn kill(&mut self, id: u64) {
        let m = self
            .members
            .get_mut(&id)
            .and_then(Option::take)
            .expect("member running");
        m.abort_server();
        m.store.shutdown().await.expect("shutdown raft");
    }

    /// Restarts member `id` from its data dir on its old address.
    pub async fn restart(&mut self, id: u64) {
        let cfg = self.cfgs[&id].clone();
        let l = eventually(
            "rebinding the member's port",
            Duration::from_secs(10),
            || async {
                TcpListener::bind(&cfg.advertise_addr)
                    .await
                    .map_err(|e| e.to_string())
            },
        )
        .await;
        let m = spawn_member_on(cfg, l).await.expect("respawn member");
        m.store.bootstrap().await.expect("bootstrap after restart");
        self.members.insert(id, Some(m));
    }
}
