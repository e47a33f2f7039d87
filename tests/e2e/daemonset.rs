//! DaemonSet on a real cluster (1 controller + 3 agents): a daemon set follows a node
//! that joins (node3's agent stopped and its Node deleted, then started again: it
//! re-registers), rolls a template change out node by node, drops the pod of a node whose
//! labels stop matching, and takes its pods away when deleted.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{NetnsCluster, eventually, is_ready, name_of, node_of, phase};

/// The daemon set, with `env` as the template's variable and an optional nodeSelector.
fn daemonset(version: &str, node_selector: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: agent}}
spec:
  selector: {{matchLabels: {{app: ds-e2e}}}}
  updateStrategy: {{type: RollingUpdate, rollingUpdate: {{maxUnavailable: 1}}}}
  template:
    metadata: {{labels: {{app: ds-e2e}}}}
    spec:
      terminationGracePeriodSeconds: 1
      {node_selector}
      containers:
      - name: main
        image: busybox:latest
        command: ["sh", "-c", "exec sleep 3600"]
        env: [{{name: VERSION, value: "{version}"}}]
"#
    )
}

/// Running, Ready, live pods of the daemon set: (node, pod name, VERSION), by node.
fn running(c: &NetnsCluster) -> Result<Vec<(String, String, String)>, String> {
    let mut out: Vec<(String, String, String)> = c
        .pods("app=ds-e2e")?
        .iter()
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .map(|p| {
            let version = p
                .pointer("/spec/containers/0/env/0/value")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let state = if phase(p) == "Running" && is_ready(p) {
                version
            } else {
                format!("{version} ({})", phase(p))
            };
            (node_of(p).to_string(), name_of(p).to_string(), state)
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Waits until exactly `nodes` run one Ready pod each, of `version`.
fn wait_for(c: &NetnsCluster, what: &str, nodes: &[&str], version: &str) -> Vec<String> {
    eventually(what, Duration::from_secs(120), || {
        let pods = running(c)?;
        let on: Vec<&str> = pods.iter().map(|p| p.0.as_str()).collect();
        if on == nodes && pods.iter().all(|p| p.2 == version) {
            Ok(pods.iter().map(|p| p.1.clone()).collect())
        } else {
            Err(format!("pods (node, name, version): {pods:?}"))
        }
    })
}

fn status(c: &NetnsCluster) -> Result<Value, String> {
    c.json(&["get", "ds", "agent"]).map(|d| d["status"].clone())
}

#[test]
#[ignore = "requires root: network namespaces, containers, cgroups"]
fn daemonset_follows_node_joins_labels_and_rolls_updates() {
    let c = NetnsCluster::up("e2eds", 1, 3, &[]);
    c.ctl_ok(&["image", "import", c.image_tar.to_str().expect("path")]);

    // node3 leaves: its agent stops and its Node object goes.
    let st = c.script(&["stop", "n3"]);
    assert!(st.status.success(), "stop n3: {st:?}");
    c.ctl_ok(&["delete", "node", "node3"]);
    eventually("node3 to be gone", Duration::from_secs(30), || {
        let nodes = c.ctl_ok(&["get", "nodes", "-o", "name"]);
        if nodes.contains("node3") {
            Err(nodes)
        } else {
            Ok(())
        }
    });

    let out = c.apply(&daemonset("v1", ""));
    assert!(out.status.success(), "apply: {out:?}");
    let first = wait_for(&c, "pods on node1 and node2", &["node1", "node2"], "v1");
    // The status follows the pods' readiness a reconcile later: wait for it, not one read.
    eventually("status 2 desired, 2 ready", Duration::from_secs(30), || {
        let s = status(&c)?;
        match (
            s["desiredNumberScheduled"].as_i64(),
            s["numberReady"].as_i64(),
        ) {
            (Some(2), Some(2)) => Ok(()),
            _ => Err(s.to_string()),
        }
    });
    let table = c.ctl_ok(&["get", "ds"]);
    assert!(
        table.contains("DESIRED") && table.contains("agent"),
        "{table}"
    );

    // node3 joins again (its agent re-registers the Node): it gets a pod, the others keep theirs.
    let st = c.script(&["start", "n3"]);
    assert!(st.status.success(), "start n3: {st:?}");
    let joined = wait_for(&c, "a pod on node3", &["node1", "node2", "node3"], "v1");
    assert_eq!(
        joined[..2],
        first[..],
        "node1's and node2's pods were replaced"
    );

    // A template change rolls out one node at a time; rollout status waits for it.
    let out = c.apply(&daemonset("v2", ""));
    assert!(out.status.success(), "apply v2: {out:?}");
    let mut most_unready = 0;
    let rolled = eventually("the rolling update to v2", Duration::from_secs(180), || {
        let pods = running(&c)?;
        let ready = pods.iter().filter(|p| !p.2.contains('(')).count();
        most_unready = most_unready.max(3usize.saturating_sub(ready));
        if pods.len() == 3 && pods.iter().all(|p| p.2 == "v2") {
            Ok(pods)
        } else {
            Err(format!("pods (node, name, version): {pods:?}"))
        }
    });
    assert!(
        most_unready <= 1,
        "more than maxUnavailable=1 node without a Ready pod during the update"
    );
    assert!(
        rolled.iter().all(|p| !joined.contains(&p.1)),
        "every pod is new: {rolled:?} vs {joined:?}"
    );
    let said = c.ctl_ok(&["rollout", "status", "ds/agent", "--timeout", "60s"]);
    assert!(said.contains("successfully rolled out"), "{said}");

    // A nodeSelector that node3's labels do not match: node3 loses its pod.
    c.ctl_ok(&["label", "node", "node1", "ds-e2e=yes"]);
    c.ctl_ok(&["label", "node", "node2", "ds-e2e=yes"]);
    let out = c.apply(&daemonset("v2", "nodeSelector: {ds-e2e: \"yes\"}"));
    assert!(out.status.success(), "apply with nodeSelector: {out:?}");
    wait_for(&c, "node3's pod to go", &["node1", "node2"], "v2");
    // node2's label stops matching: its pod goes too.
    c.ctl_ok(&["label", "node", "node2", "ds-e2e-"]);
    wait_for(&c, "node2's pod to go", &["node1"], "v2");

    // Deleting the daemon set deletes its pods.
    c.ctl_ok(&["delete", "ds", "agent"]);
    eventually(
        "the daemon set's pods to go",
        Duration::from_secs(60),
        || {
            let pods = c.pods("app=ds-e2e")?;
            if pods.is_empty() {
                Ok(())
            } else {
                Err(format!("{} pods left", pods.len()))
            }
        },
    );
}
