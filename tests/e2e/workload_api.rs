//! Workload API I on a real cluster (1 controller + 2 agents): a namespace, a ConfigMap
//! and a Secret used by a running pod (env and a volume that follows updates), a Job run
//! to completion, apply → label → apply keeping the label, `dnsPolicy: Default`, and a
//! namespace deletion that takes everything in it (and its containers) away.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{NetnsCluster, eventually, phase};

fn objects(greeting: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: cfg, namespace: team}}
data: {{greeting: {greeting}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: creds, namespace: team}}
stringData: {{password: s3cret-e2e}}
---
apiVersion: v1
kind: Pod
metadata: {{name: reader, namespace: team}}
spec:
  terminationGracePeriodSeconds: 1
  dnsPolicy: Default
  containers:
  - name: main
    image: busybox:latest
    command: ["sh", "-c", "exec sleep 3600"]
    env:
    - name: PASS
      valueFrom: {{secretKeyRef: {{name: creds, key: password}}}}
    volumeMounts: [{{name: cfg, mountPath: /cfg}}]
  volumes:
  - name: cfg
    configMap: {{name: cfg}}
"#
    )
}

const JOB: &str = r#"
apiVersion: batch/v1
kind: Job
metadata: {name: twice, namespace: team}
spec:
  completions: 2
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: busybox:latest
        command: ["sh", "-c", "echo done"]
"#;

fn sh(c: &NetnsCluster, script: &str) -> Result<String, String> {
    let out = c.ctl(&["-n", "team", "exec", "reader", "--", "sh", "-c", script]);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
#[ignore = "requires root: network namespaces, containers, cgroups"]
fn namespace_config_secret_job_and_cascade() {
    let c = NetnsCluster::up("e2eapi", 1, 2, &[]);
    c.ctl_ok(&["image", "import", c.image_tar.to_str().expect("path")]);

    // Into a namespace that does not exist: refused, nothing created.
    let out = c.apply(&objects("hello"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("namespace \"team\" not found"), "{err}");
    c.ctl_ok(&["create", "namespace", "team"]);
    let out = c.apply(&objects("hello"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("reader Running", Duration::from_secs(60), || {
        let p = c.json(&["-n", "team", "get", "pod", "reader"])?;
        if phase(&p) == "Running" {
            Ok(())
        } else {
            Err(p["status"].to_string())
        }
    });
    assert_eq!(sh(&c, "cat /cfg/greeting").expect("exec"), "hello");
    assert_eq!(sh(&c, "echo $PASS").expect("exec"), "s3cret-e2e");
    let resolv = sh(&c, "cat /etc/resolv.conf").expect("exec");
    assert!(
        resolv.contains("nameserver") && !resolv.contains("search"),
        "dnsPolicy Default: {resolv}"
    );

    // apply → label → apply: the label survives; the ConfigMap change reaches the file.
    c.ctl_ok(&["-n", "team", "label", "configmap", "cfg", "owner=ops"]);
    let out = c.apply(&objects("bye"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cm = c
        .json(&["-n", "team", "get", "configmap", "cfg"])
        .expect("cm");
    assert_eq!(cm["metadata"]["labels"]["owner"], "ops", "{cm}");
    eventually(
        "the new greeting in the running pod",
        Duration::from_secs(30),
        || match sh(&c, "cat /cfg/greeting") {
            Ok(s) if s == "bye" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );

    // A Job of two completions runs to Complete.
    let out = c.apply(JOB);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("job twice complete", Duration::from_secs(90), || {
        let j = c.json(&["-n", "team", "get", "job", "twice"])?;
        if j.pointer("/status/succeeded").and_then(Value::as_i64) == Some(2) {
            Ok(())
        } else {
            Err(j["status"].to_string())
        }
    });

    // Deleting the namespace deletes everything in it; its containers stop.
    c.ctl_ok(&["delete", "namespace", "team"]);
    eventually(
        "namespace team gone with its objects",
        Duration::from_secs(60),
        || {
            let ns = c.ctl_ok(&["get", "namespaces", "-o", "name"]);
            let left: String = ["pods", "configmaps", "secrets", "jobs"]
                .iter()
                .map(|k| c.ctl_ok(&["-n", "team", "get", k, "-o", "name"]))
                .collect();
            if !ns.lines().any(|l| l == "namespace/team") && left.trim().is_empty() {
                Ok(())
            } else {
                Err(format!("namespaces {ns:?}, left {left:?}"))
            }
        },
    );
    assert!(sh(&c, "true").is_err(), "the reader pod is gone");
}
