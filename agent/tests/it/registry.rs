//! Pods whose image is only in a registry: a real `docker-registry` on loopback (plain
//! HTTP, htpasswd) reached through the agent's `--registries` file, credentials from a
//! `kubernetes.io/dockerconfigjson` Secret named in `imagePullSecrets`. A wrong password
//! shows as `ErrImagePull` then `ImagePullBackOff` with "unauthorized".

use std::time::Duration;

use base64::Engine as _;
use shoal_api::PodPhase;
use shoal_proto::ObjectRequest;
use shoal_testkit::TestRegistry;

use super::{Cluster, cluster};

fn pull_secret(name: &str, addr: &str, user: &str, pass: &str) -> serde_json::Value {
    let config = serde_json::json!({"auths": {addr: {"username": user, "password": pass}}});
    serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": name, "namespace": "default"},
        "data": {".dockerconfigjson":
            base64::engine::general_purpose::STANDARD.encode(config.to_string())},
    })
}

fn registry_pod(name: &str, node: &str, image: &str, secret: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": node, "terminationGracePeriodSeconds": 1,
            "imagePullSecrets": [{"name": secret}],
            "containers": [{"name": "main", "image": image, "command": ["sleep", "3600"]}],
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "requires root: real containers, cgroups and namespaces"]
async fn a_pod_pulls_from_a_registry_with_its_pull_secret_and_a_wrong_one_is_unauthorized() {
    let started = std::time::Instant::now();
    let t = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(Some(("puller", "pull-pass")), None);
    let archive = shoal_testkit::image::busybox(t.path(), "busybox:v1");
    let digest = reg.push(&archive, "busybox:v1", "v2s2");
    let addr = reg.addr.clone();
    let registries = t.path().join("registries.yaml");
    std::fs::write(
        &registries,
        format!("mirrors:\n  \"{addr}\":\n    endpoint: [\"http://{addr}\"]\n"),
    )
    .unwrap();
    let c = Cluster::start_full(
        "agent-it-registry",
        1,
        &[],
        vec!["--registries".into(), registries.display().to_string()],
    )
    .await;
    let mut cl = cluster(&c.ctl_addr).await.unwrap();
    for s in [
        pull_secret("regcred", &addr, "puller", "pull-pass"),
        pull_secret("badcred", &addr, "puller", "wrong"),
    ] {
        cl.create(ObjectRequest {
            object_json: s.to_string(),
        })
        .await
        .expect("create secret");
    }
    let image = format!("{addr}/busybox:v1");

    // The wrong secret first (once the node has the image, IfNotPresent would use it).
    c.create_pod(registry_pod("denied", &c.node, &image, "badcred"))
        .await;
    let w = c
        .wait_waiting("denied", "ImagePullBackOff", Duration::from_secs(60))
        .await;
    assert!(w.message.contains("unauthorized"), "{}", w.message);
    assert!(w.message.contains(&image), "{}", w.message);
    assert!(
        !w.message.contains("wrong"),
        "the password leaked: {}",
        w.message
    );
    let events = c.events("denied").await;
    assert!(
        events
            .iter()
            .any(|(r, m)| r == "Failed" && m == "Error: ErrImagePull"),
        "{events:?}"
    );
    assert!(events.iter().any(|(r, _)| r == "BackOff"), "{events:?}");

    // The right secret: the pod runs the image the registry has.
    c.create_pod(registry_pod("pulled", &c.node, &image, "regcred"))
        .await;
    c.wait_pod("pulled", "Running", Duration::from_secs(90), |p, cs| {
        p.status.as_ref().unwrap().phase == PodPhase::Running && cs.state.running.is_some()
    })
    .await;
    let events = c.events("pulled").await;
    assert!(
        events.iter().any(|(r, m)| r == "Pulled"
            && m.contains(&digest)
            && m.contains(&format!("http://{addr}"))),
        "{events:?}"
    );
    eprintln!(
        "registry pull test took {:?} (registry {addr})",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "requires root: real containers, cgroups and namespaces"]
async fn a_node_with_image_sources_cluster_never_asks_the_registry() {
    let t = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(None, None);
    let archive = shoal_testkit::image::busybox(t.path(), "busybox:v1");
    reg.push(&archive, "busybox:v1", "v2s2");
    let addr = reg.addr.clone();
    let registries = t.path().join("registries.yaml");
    std::fs::write(
        &registries,
        format!("mirrors:\n  \"{addr}\":\n    endpoint: [\"http://{addr}\"]\n"),
    )
    .unwrap();
    let c = Cluster::start_full(
        "agent-it-sources",
        1,
        &[],
        vec![
            "--registries".into(),
            registries.display().to_string(),
            "--image-sources".into(),
            "cluster".into(),
        ],
    )
    .await;
    let image = format!("{addr}/busybox:v1");
    // The registry has it, but this node only asks the cluster, which does not.
    c.create_pod(registry_pod("inside", &c.node, &image, "absent"))
        .await;
    let w = c
        .wait_waiting("inside", "ImagePullBackOff", Duration::from_secs(60))
        .await;
    assert!(
        w.message.contains("not found in the cluster")
            && w.message.contains("--image-sources is cluster"),
        "{}",
        w.message
    );
}
