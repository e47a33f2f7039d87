//! Test helpers: a cluster of in-process members on loopback, polling with deadlines.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use shoal_store::testing::{Member, bind_loopback, spawn_member_on};
use shoal_store::{Store, StoreConfig};
use tempfile::TempDir;
use tokio::net::TcpListener;

/// Installs a log subscriber once (filter with RUST_LOG).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub use shoal_testkit::eventually_async as eventually;

/// A pod-like object.
pub fn pod(name: &str, image: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "main", "image": image}]},
    })
}

/// Members with their own data dirs and fixed loopback addresses.
pub struct Cluster {
    pub members: BTreeMap<u64, Option<Member>>,
    pub cfgs: BTreeMap<u64, StoreConfig>,
    _dirs: Vec<TempDir>,
    test: String,
    tweak: Box<dyn Fn(&mut StoreConfig) + Send + Sync>,
}

impl Cluster {
    /// Starts `n` members (ids 1..=n): member 1 forms a one-member cluster, the others start
    /// empty and are added one by one with `add_member` (the one membership model).
    pub async fn start(
        test: &str,
        n: u64,
        tweak: impl Fn(&mut StoreConfig) + Send + Sync + 'static,
    ) -> Cluster {
        init_logs();
        let mut c = Cluster {
            members: BTreeMap::new(),
            cfgs: BTreeMap::new(),
            _dirs: Vec::new(),
            test: test.to_string(),
            tweak: Box::new(tweak),
        };
        c.spawn(1).await;
        tokio::time::timeout(Duration::from_secs(20), c.store(1).bootstrap())
            .await
            .expect("bootstrap in time")
            .expect("bootstrap");
        for id in 2..=n {
            c.grow(id).await;
        }
        c
    }

    /// Starts member `id` with a new data dir on a new loopback port (not yet a member).
    pub async fn spawn(&mut self, id: u64) -> String {
        let l = bind_loopback().await.expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        let dir = tempfile::Builder::new()
            .prefix(&format!("shoal-store-{}-{id}-", self.test))
            .tempdir()
            .expect("tempdir");
        let mut cfg = StoreConfig::new(id, dir.path(), addr.clone());
        cfg.heartbeat_ms = 50;
        cfg.election_timeout_ms = (300, 600);
        (self.tweak)(&mut cfg);
        let m = spawn_member_on(cfg.clone(), l).await.expect("spawn member");
        self._dirs.push(dir);
        self.cfgs.insert(id, cfg);
        self.members.insert(id, Some(m));
        addr
    }

    /// Starts member `id` and adds it through a running member; waits until it joined.
    pub async fn grow(&mut self, id: u64) {
        let addr = self.spawn(id).await;
        let via = *self.running().first().expect("a running member");
        self.store(via)
            .add_member(id, &addr)
            .await
            .unwrap_or_else(|e| panic!("add member {id} at {addr}: {e}"));
        tokio::time::timeout(Duration::from_secs(20), self.store(id).join())
            .await
            .expect("join in time")
            .expect("join");
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

    /// Restarts member `id` from its data dir on its old address without waiting for a
    /// leader (for a member that may never see one again).
    pub async fn restart_detached(&mut self, id: u64) {
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
        self.members.insert(id, Some(m));
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
