//! Namespaces for real: built-in ones exist, objects are created only in an existing,
//! active namespace, and deleting a namespace deletes everything in it (it shows
//! Terminating until it is empty).

use std::time::Duration;

use serde_json::{Value, json};
use shoal_proto::{ApplyRequest, DeleteRequest, GetRequest, ListRequest, ObjectRequest};
use tonic::Code;

use crate::harness::{TestCluster, client, eventually};

fn in_ns(kind: &str, ns: &str, name: &str) -> Value {
    match kind {
        "Pod" => json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "busybox:latest"}]}}),
        "Service" => json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
        "Deployment" => json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox:latest"}]}}}}),
        _ => unreachable!(),
    }
}

fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

async fn names(addr: &str, kind: &str, ns: &str) -> Vec<String> {
    let items = client(addr)
        .await
        .expect("admin")
        .list(ListRequest {
            kind: kind.into(),
            namespace: ns.into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .items_json;
    items
        .iter()
        .map(|j| {
            let v: Value = serde_json::from_str(j).expect("json");
            v["metadata"]["name"].as_str().unwrap_or("").to_string()
        })
        .collect()
}

#[tokio::test]
async fn namespaces_exist_gate_creates_and_cascade_on_delete() {
    let c = tokio::task::spawn_blocking(|| TestCluster::start(1))
        .await
        .expect("start");
    let addr = c.addr(1);
    let mut cl = client(&addr).await.expect("admin");

    // The built-in namespaces exist on a fresh cluster.
    eventually("default and shoal-system", Duration::from_secs(20), || {
        let addr = addr.clone();
        async move {
            let ns = names(&addr, "Namespace", "").await;
            if ns == ["default", "shoal-system"] {
                Ok(())
            } else {
                Err(format!("{ns:?}"))
            }
        }
    })
    .await;

    // Nothing can be created in a namespace that does not exist; nothing is written.
    let e = cl
        .create(ObjectRequest {
            object_json: in_ns("Pod", "team", "a").to_string(),
        })
        .await
        .expect_err("no namespace team");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(
        e.message().contains("namespace \"team\" not found"),
        "{}",
        e.message()
    );
    let e = cl
        .apply(ApplyRequest {
            objects_json: vec![
                in_ns("Service", "team", "web").to_string(),
                in_ns("Pod", "team", "a").to_string(),
            ],
            dry_run: false,
        })
        .await
        .expect_err("no namespace team");
    assert!(e.message().contains("\"team\""), "{}", e.message());
    assert!(names(&addr, "Service", "team").await.is_empty());

    // A namespace and objects in it in one apply; then more objects in it.
    cl.apply(ApplyRequest {
        objects_json: vec![
            namespace("team").to_string(),
            in_ns("Service", "team", "web").to_string(),
            in_ns("Deployment", "team", "web").to_string(),
        ],
        dry_run: false,
    })
    .await
    .expect("namespace and contents");
    cl.create(ObjectRequest {
        object_json: in_ns("Pod", "team", "solo").to_string(),
    })
    .await
    .expect("pod in team");
    eventually("the deployment's pods", Duration::from_secs(20), || {
        let addr = addr.clone();
        async move {
            let n = names(&addr, "Pod", "team").await.len();
            if n == 3 {
                Ok(())
            } else {
                Err(format!("{n} pods"))
            }
        }
    })
    .await;
    // Another namespace's objects are left alone.
    cl.create(ObjectRequest {
        object_json: in_ns("Pod", "default", "bystander").to_string(),
    })
    .await
    .expect("pod in default");

    // Built-in namespaces cannot be deleted.
    let e = cl
        .delete(DeleteRequest {
            kind: "Namespace".into(),
            name: "default".into(),
            ..Default::default()
        })
        .await
        .expect_err("default stays");
    assert!(e.message().contains("built in"), "{}", e.message());

    // Delete: Terminating at once, no new objects, then everything in it is gone.
    let r = cl
        .delete(DeleteRequest {
            kind: "Namespace".into(),
            name: "team".into(),
            ..Default::default()
        })
        .await
        .expect("delete team")
        .into_inner();
    let v: Value = serde_json::from_str(&r.object_json).expect("json");
    assert_eq!(v["status"]["phase"], "Terminating", "{v}");
    let e = cl
        .create(ObjectRequest {
            object_json: in_ns("Pod", "team", "late").to_string(),
        })
        .await;
    if let Err(e) = e {
        // Refused while Terminating, or not found once it is gone.
        assert!(
            matches!(e.code(), Code::FailedPrecondition | Code::NotFound),
            "{e:?}"
        );
    } else {
        panic!("a pod was created in a terminating namespace");
    }
    eventually(
        "namespace team and its objects gone",
        Duration::from_secs(30),
        || {
            let addr = addr.clone();
            async move {
                let left = [
                    names(&addr, "Pod", "team").await,
                    names(&addr, "Service", "team").await,
                    names(&addr, "Deployment", "team").await,
                    names(&addr, "Endpoints", "team").await,
                ]
                .concat();
                let ns = names(&addr, "Namespace", "").await;
                if left.is_empty() && !ns.contains(&"team".to_string()) {
                    Ok(())
                } else {
                    Err(format!("left: {left:?}, namespaces {ns:?}"))
                }
            }
        },
    )
    .await;
    let got = cl
        .get(GetRequest {
            kind: "Pod".into(),
            namespace: "default".into(),
            name: "bystander".into(),
            ..Default::default()
        })
        .await;
    assert!(got.is_ok(), "the other namespace's pod stays: {got:?}");
    // Deleting it again: not found.
    let e = cl
        .delete(DeleteRequest {
            kind: "Namespace".into(),
            name: "team".into(),
            ..Default::default()
        })
        .await
        .expect_err("gone");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
}
