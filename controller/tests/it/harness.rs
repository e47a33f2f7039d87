//! The controller's tests use the one test kit (`shoal-testkit`): its controller cluster
//! harness (member 1 forms the cluster, the others `--join` and are added with
//! `AddMember`; every process owned from its spawn) and its `eventually`. This file keeps
//! the names the tests use and the few pod helpers they share.

use shoal_proto::{ListRequest, ObjectRequest};

pub use shoal_testkit::ControllerCluster as TestCluster;
pub use shoal_testkit::client_of as client;
pub use shoal_testkit::eventually_async as eventually;

/// A minimal valid Pod object as JSON.
pub fn pod_json(name: &str) -> String {
    serde_json::json!({
        "apiVersion": "shoal/v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"test": "raft"}},
        "spec": {"containers": [{"name": "c", "image": "busybox:latest"}]}
    })
    .to_string()
}

/// Creates a pod through the member at `addr`.
pub async fn create_pod(addr: &str, name: &str) -> Result<(), String> {
    let mut c = client(addr).await?;
    c.create(ObjectRequest {
        object_json: pod_json(name),
    })
    .await
    .map_err(|e| e.message().to_string())?;
    Ok(())
}

/// Names of the pods in `addr`'s local copy (stale read: no leader involved).
pub async fn local_pod_names(addr: &str) -> Result<std::collections::BTreeSet<String>, String> {
    names(addr, "Pod", true).await
}

/// The names of the `kind` objects in namespace default that a list through `addr` returns
/// (`stale`: this member's own state; else a linearizable list).
pub async fn names(
    addr: &str,
    kind: &str,
    stale: bool,
) -> Result<std::collections::BTreeSet<String>, String> {
    let mut c = client(addr).await?;
    let r = c
        .list(ListRequest {
            kind: kind.into(),
            namespace: "default".into(),
            stale,
            ..Default::default()
        })
        .await
        .map_err(|s| format!("{addr}: {:?}: {}", s.code(), s.message()))?
        .into_inner();
    Ok(r.items_json
        .iter()
        .filter_map(|j| serde_json::from_str::<serde_json::Value>(j).ok())
        .filter_map(|v| {
            v.pointer("/metadata/name")
                .and_then(|n| n.as_str())
                .map(String::from)
        })
        .collect())
}
