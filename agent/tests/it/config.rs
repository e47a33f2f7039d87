//! ConfigMaps and Secrets in real pods: environment from both (and from pod fields),
//! `$(VAR)` expansion in the command, files of configMap/secret volumes updated in a
//! running pod, and a missing key reported as `CreateContainerConfigError`. The Secret's
//! value never shows in the agent's log or in Events.

use std::time::Duration;

use shoal_proto::{ListRequest, ObjectRequest};

use super::{Cluster, cluster, eventually, exec};

async fn put(c: &Cluster, obj: serde_json::Value, create: bool) {
    let mut cl = cluster(&c.ctl_addr).await.unwrap();
    let req = ObjectRequest {
        object_json: obj.to_string(),
    };
    if create {
        cl.create(req).await.expect("create");
    } else {
        cl.update(req).await.expect("update");
    }
}

fn config_map(name: &str, conf: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"},
        "data": {"greeting": "hello", "app.conf": conf},
    })
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "requires root: real containers, cgroups and namespaces"]
async fn env_and_files_from_config_maps_and_secrets_follow_updates() {
    let c = Cluster::start("agent-it-config").await;
    let marker = format!(
        "pw-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    put(&c, config_map("app", "v1"), true).await;
    put(
        &c,
        serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "db", "namespace": "default"},
            "stringData": {"password": marker},
        }),
        true,
    )
    .await;
    c.create_pod(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "cfg", "namespace": "default"},
        "spec": {
            "nodeName": c.node, "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "main", "image": "busybox:latest",
                "command": ["sh", "-c", "env > /tmp/env; echo '$(GREETING)-$$(GREETING)' > /tmp/expanded; sleep 3600"],
                "envFrom": [{"configMapRef": {"name": "app"}, "prefix": "CM_"}],
                "env": [
                    {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "greeting"}}},
                    {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                    {"name": "MY_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "MY_NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    {"name": "URL", "value": "http://$(MY_POD):80"},
                ],
                "volumeMounts": [
                    {"name": "conf", "mountPath": "/etc/app"},
                    {"name": "creds", "mountPath": "/etc/creds"},
                    {"name": "info", "mountPath": "/etc/podinfo"},
                ],
            }],
            "volumes": [
                {"name": "conf", "configMap": {"name": "app"}},
                {"name": "creds", "secret": {"secretName": "db", "defaultMode": 256}},
                {"name": "info", "downwardAPI": {"items": [{"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
            ],
        }
    }))
    .await;
    c.wait_pod("cfg", "Running", Duration::from_secs(60), |_, cs| {
        cs.state.running.is_some()
    })
    .await;
    let env = eventually(
        "the container's env file",
        Duration::from_secs(10),
        || async {
            let (out, _, code) = exec(&c, "cfg", &["cat", "/tmp/env"], None).await;
            if code == 0 && out.contains("URL=") {
                Ok(out)
            } else {
                Err(format!("exit {code}: {out}"))
            }
        },
    )
    .await;
    for want in [
        "GREETING=hello",
        "CM_greeting=hello",
        &format!("DB_PASSWORD={marker}"),
        "MY_POD=cfg",
        &format!("MY_NODE={}", c.node),
        "URL=http://cfg:80",
    ] {
        assert!(
            env.lines().any(|l| l == want),
            "{want} missing from:\n{env}"
        );
    }
    let (out, _, _) = exec(&c, "cfg", &["cat", "/tmp/expanded"], None).await;
    assert_eq!(out.trim(), "hello-$(GREETING)");
    let (out, _, _) = exec(&c, "cfg", &["cat", "/etc/app/app.conf"], None).await;
    assert_eq!(out, "v1");
    let (out, _, _) = exec(&c, "cfg", &["cat", "/etc/creds/password"], None).await;
    assert_eq!(out, marker);
    let (out, _, _) = exec(
        &c,
        "cfg",
        &["stat", "-L", "-c", "%a", "/etc/creds/password"],
        None,
    )
    .await;
    assert_eq!(out.trim(), "400");
    let (out, _, _) = exec(&c, "cfg", &["cat", "/etc/podinfo/ns"], None).await;
    assert_eq!(out, "default");
    // Read-only for the container.
    let (_, _, code) = exec(&c, "cfg", &["sh", "-c", "echo x > /etc/app/new"], None).await;
    assert_ne!(code, 0, "a config volume must be read-only");

    // A change of the ConfigMap reaches the running pod's file.
    put(&c, config_map("app", "v2"), false).await;
    eventually(
        "the updated file in the pod",
        Duration::from_secs(30),
        || async {
            let (out, err, code) = exec(&c, "cfg", &["cat", "/etc/app/app.conf"], None).await;
            if out == "v2" {
                Ok(())
            } else {
                Err(format!("exit {code}: {out:?} {err}"))
            }
        },
    )
    .await;

    // The refreshes (every 2 s) read the node's mirrors of the two objects, not the
    // controllers: over 5 s the cache reads grow and the controller reads do not.
    let reads = || async {
        let m = c.metrics_addr.clone();
        let s = tokio::task::spawn_blocking(move || shoal_testkit::metrics::scrape(&m))
            .await
            .unwrap()
            .expect("scrape the agent");
        let at = |source: &str| {
            s.value("shoal_agent_config_reads_total", &[("source", source)])
                .unwrap_or_else(|| panic!("shoal_agent_config_reads_total{{source={source}}}"))
        };
        (at("cache"), at("controller"))
    };
    let (cache_before, controller_before) = reads().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (cache_after, controller_after) = reads().await;
    assert!(
        cache_after >= cache_before + 2.0,
        "refreshes read the cache: {cache_before} -> {cache_after}"
    );
    assert_eq!(
        controller_after, controller_before,
        "refreshes must not read the controllers"
    );

    // The Secret's value is in neither the agent's log nor an Event.
    let log = c.logs();
    assert!(!log.contains(&marker), "the secret is in the agent's log");
    let events = cluster(&c.ctl_addr)
        .await
        .unwrap()
        .list(ListRequest {
            kind: "Event".into(),
            namespace: "default".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .items_json
        .join("\n");
    assert!(!events.contains(&marker), "the secret is in an Event");
    c.delete_pod("cfg").await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "requires root: real containers, cgroups and namespaces"]
async fn a_missing_key_waits_with_create_container_config_error() {
    let c = Cluster::start("agent-it-cfgerr").await;
    c.create_pod(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "needs", "namespace": "default"},
        "spec": {
            "nodeName": c.node, "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "main", "image": "busybox:latest", "command": ["sleep", "3600"],
                "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "later", "key": "x"}}}],
            }],
        }
    }))
    .await;
    let w = c
        .wait_waiting(
            "needs",
            "CreateContainerConfigError",
            Duration::from_secs(30),
        )
        .await;
    assert!(
        w.message.contains("configmap \"later\" not found"),
        "{}",
        w.message
    );

    // The ConfigMap without the key: the message names the key.
    put(
        &c,
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "later", "namespace": "default"}, "data": {"y": "1"}}),
        true,
    )
    .await;
    c.wait_pod(
        "needs",
        "the missing key named",
        Duration::from_secs(30),
        |_, cs| {
            cs.state.waiting.as_ref().is_some_and(|w| {
                w.reason == "CreateContainerConfigError"
                    && w.message
                        .contains("couldn't find key \"x\" in configmap \"later\"")
            })
        },
    )
    .await;

    // Once the key exists the container starts.
    put(
        &c,
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "later", "namespace": "default"}, "data": {"x": "1"}}),
        false,
    )
    .await;
    c.wait_pod("needs", "Running", Duration::from_secs(60), |_, cs| {
        cs.state.running.is_some()
    })
    .await;
    c.delete_pod("needs").await;
}
