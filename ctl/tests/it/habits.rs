//! The kubectl habits: `-o jsonpath=`, `-o custom-columns=`, `--sort-by`, `annotate`,
//! `rollout restart`, `taint`, `api-resources` and `completion`, through the binary
//! against a real controller.

use std::process::Command;

use serde_json::{Value, json};

use crate::harness::{Controller, conf_for, shoalctl_bin, workspace};

fn web_yaml() -> String {
    workspace().join("examples/web.yaml").display().to_string()
}

#[test]
fn jsonpath_custom_columns_and_sort_by() {
    let c = Controller::start();
    c.ctl(&["apply", "-f", &web_yaml()]).ok();
    for (name, app) in [("zeta", "z"), ("alpha", "a")] {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": app, "rank": "x"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
        let f = c.write(&format!("{name}.json"), &pod.to_string());
        c.ctl(&["create", "-f", f.to_str().unwrap()]).ok();
    }

    assert_eq!(
        c.ctl(&[
            "get",
            "pod",
            "client",
            "-o",
            "jsonpath={.metadata.labels.app}"
        ])
        .ok(),
        "client"
    );
    assert_eq!(
        c.ctl(&[
            "get",
            "pods",
            "-l",
            "rank=x",
            "--sort-by",
            ".metadata.name",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
        .ok(),
        "alpha zeta"
    );
    assert_eq!(
        c.ctl(&[
            "get",
            "pods",
            "-l",
            "rank=x",
            "--sort-by",
            "{.metadata.labels.app}",
            "-o",
            r#"jsonpath={range .items[*]}{.metadata.name}={.metadata.labels.app}{"\n"}{end}"#,
        ])
        .ok(),
        "alpha=a\nzeta=z\n"
    );
    assert_eq!(
        c.ctl(&[
            "get",
            "deploy",
            "web",
            "-o",
            "custom-columns=NAME:.metadata.name,REPLICAS:.spec.replicas,PAUSED:.spec.paused",
        ])
        .ok(),
        "NAME   REPLICAS   PAUSED\nweb    3          <none>\n"
    );
    assert_eq!(
        c.ctl(&[
            "get",
            "pods",
            "-l",
            "rank=x",
            "--sort-by",
            ".metadata.name",
            "--no-headers",
            "-o",
            "custom-columns=N:.metadata.name",
        ])
        .ok(),
        "alpha\nzeta\n"
    );
    // Bad specs are usage errors naming the format, before any request.
    let e = c.ctl(&["get", "pods", "-o", "jsonpath={.items[*"]).err();
    assert!(e.contains("jsonpath") && e.contains("unclosed"), "{e}");
    let e = c.ctl(&["get", "pods", "-o", "custom-columns=NAME"]).err();
    assert!(
        e.contains("custom-columns") && e.contains("HEADER:PATH"),
        "{e}"
    );
    let e = c.ctl(&["get", "pods", "--sort-by", ".a[?"]).err();
    assert!(e.contains("--sort-by"), "{e}");
}

#[test]
fn annotate_rollout_restart_and_taint() {
    let c = Controller::start();
    c.ctl(&["apply", "-f", &web_yaml()]).ok();
    let get = |what: &str| -> Value {
        serde_json::from_str(&c.ctl(&["get", what, "-o", "json"]).ok()).expect("JSON")
    };

    assert_eq!(
        c.ctl(&["annotate", "deploy", "web", "note=hello world, with spaces"])
            .ok(),
        "deployment/web annotated\n"
    );
    assert_eq!(
        get("deploy/web")["metadata"]["annotations"]["note"],
        "hello world, with spaces"
    );
    let e = c.ctl(&["annotate", "deploy", "web", "note=other"]).err();
    assert!(e.contains("--overwrite"), "{e}");
    c.ctl(&["annotate", "deploy/web", "note-"]).ok();
    assert!(
        get("deploy/web")["metadata"]["annotations"]
            .get("note")
            .is_none()
    );

    let generation = get("deploy/web")["metadata"]["generation"]
        .as_i64()
        .unwrap();
    assert_eq!(
        c.ctl(&["rollout", "restart", "deployment/web"]).ok(),
        "deployment/web restarted\n"
    );
    let d = get("deploy/web");
    let stamp =
        d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .as_str()
            .expect("restartedAt set");
    assert!(
        chrono::DateTime::parse_from_rfc3339(stamp).is_ok(),
        "{stamp}"
    );
    assert_eq!(
        d["metadata"]["generation"].as_i64().unwrap(),
        generation + 1
    );
    let e = c.ctl(&["rollout", "restart", "deployment/nosuch"]).err();
    assert!(e.contains("nosuch"), "{e}");

    let node = json!({"apiVersion": "shoal/v1", "kind": "Node",
        "metadata": {"name": "n1"}, "spec": {}});
    let f = c.write("node.json", &node.to_string());
    c.ctl(&["create", "-f", f.to_str().unwrap()]).ok();
    assert_eq!(
        c.ctl(&[
            "taint",
            "node",
            "n1",
            "gpu=yes:NoSchedule",
            "maint:NoExecute"
        ])
        .ok(),
        "node/n1 tainted\n"
    );
    assert_eq!(
        get("node/n1")["spec"]["taints"],
        json!([{"key": "gpu", "value": "yes", "effect": "NoSchedule"},
               {"key": "maint", "effect": "NoExecute"}])
    );
    let e = c.ctl(&["taint", "node/n1", "gpu=no:NoSchedule"]).err();
    assert!(e.contains("--overwrite"), "{e}");
    let e = c.ctl(&["taint", "n1", "gpu=no:Sometimes"]).err();
    assert!(e.contains("unknown effect"), "{e}");
    c.ctl(&["taint", "n1", "gpu-", "maint:NoExecute-"]).ok();
    assert!(get("node/n1")["spec"].get("taints").is_none());
    let e = c.ctl(&["taint", "n1", "gpu-"]).err();
    assert!(e.contains("taint gpu not found"), "{e}");
}

#[test]
fn api_resources_explain_and_completion_scripts_load_in_bash() {
    // Neither needs a cluster.
    let out = Command::new(shoalctl_bin())
        .arg("api-resources")
        .output()
        .expect("run shoalctl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.starts_with("NAME "), "{text}");
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["deployments", "deploy", "apps/v1", "true", "Deployment"]),
        "{text}"
    );

    // explain: from the schema, no cluster either.
    let explain = |args: &[&str]| {
        Command::new(shoalctl_bin())
            .arg("explain")
            .args(args)
            .output()
            .expect("run shoalctl")
    };
    let out = explain(&["deploy.spec.template.spec.containers"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("KIND:     Deployment")
            && text.contains("VERSION:  apps/v1")
            && text.contains("FIELD:    containers <[]Container>")
            && text.contains("   image\t<"),
        "{text}"
    );
    let out = explain(&["pod.spec.contaners"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("\"contaners\" does not exist in Pod.spec"),
        "{err}"
    );

    let bin = shoalctl_bin();
    let script = format!(
        "source <({} completion bash) && complete -p shoalctl",
        bin.display()
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .output()
        .expect("run bash");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("complete") && text.contains("shoalctl"),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for shell in ["zsh", "fish"] {
        let out = Command::new(&bin)
            .args(["completion", shell])
            .output()
            .expect("run shoalctl");
        assert!(out.status.success() && !out.stdout.is_empty(), "{shell}");
    }
    let out = Command::new(&bin)
        .args(["completion", "powershell7"])
        .output()
        .expect("run shoalctl");
    assert!(!out.status.success());
}

#[test]
fn wait_for_conditions_jsonpath_and_delete() {
    let c = Controller::start();
    let node = json!({"apiVersion": "shoal/v1", "kind": "Node",
        "metadata": {"name": "w1"}, "spec": {},
        // A heartbeat now, so that the node controller leaves Ready alone meanwhile.
        "status": {"conditions": [{"type": "Ready", "status": "True"}],
                   "heartbeatTime": chrono::Utc::now().to_rfc3339()}});
    let f = c.write("node.json", &node.to_string());
    c.ctl(&["create", "-f", f.to_str().unwrap()]).ok();
    assert_eq!(
        c.ctl(&["wait", "node/w1", "--for=condition=Ready"]).ok(),
        "node/w1 condition met\n"
    );
    assert_eq!(
        c.ctl(&[
            "wait",
            "node",
            "w1",
            "--for",
            "jsonpath={.metadata.name}=w1"
        ])
        .ok(),
        "node/w1 condition met\n"
    );
    // Not met: a timeout naming the object and the condition.
    let e = c
        .ctl(&[
            "wait",
            "node/w1",
            "--for=condition=Ready=False",
            "--timeout",
            "1s",
        ])
        .err();
    assert!(e.contains("timed out") && e.contains("node/w1"), "{e}");

    // Deleted while waiting: the wait ends when it is gone.
    let bin = shoalctl_bin();
    let conf = conf_for(&c.addr);
    let waiter = Command::new(&bin)
        .args([
            "--server",
            &c.addr,
            "wait",
            "node/w1",
            "--for=delete",
            "--timeout",
            "30s",
        ])
        .env("SHOAL_CONFIG", &conf)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn shoalctl wait");
    std::thread::sleep(std::time::Duration::from_millis(500));
    c.ctl(&["delete", "node", "w1"]).ok();
    let out = waiter.wait_with_output().expect("wait");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "node/w1 deleted\n");

    let e = c.ctl(&["wait", "node/w1", "--for=ready"]).err();
    assert!(e.contains("--for"), "{e}");
}

#[test]
fn events_for_one_object_and_of_one_type() {
    let c = Controller::start();
    c.ctl(&["apply", "-f", &web_yaml()]).ok();
    // No node: the scheduler explains why `client` waits.
    crate::harness::eventually(
        "a FailedScheduling event about pod/client",
        std::time::Duration::from_secs(30),
        || {
            let out = c.ctl(&["events", "--for", "pod/client"]).ok();
            if out.contains("FailedScheduling") {
                Ok(())
            } else {
                Err(out)
            }
        },
    );
    let out = c.ctl(&["events", "--for", "pod/client"]).ok();
    let mut lines = out.lines();
    assert_eq!(
        lines
            .next()
            .map(|h| h.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"])
    );
    assert!(
        lines.all(|l| l.contains("pod/client") && !l.contains("deployment/")),
        "{out}"
    );
    let warnings = c
        .ctl(&[
            "events",
            "--types",
            "Warning",
            "-o",
            "jsonpath={.items[*].type}",
        ])
        .ok();
    assert!(
        !warnings.is_empty() && warnings.split(' ').all(|t| t == "Warning"),
        "{warnings}"
    );
    let e = c.ctl(&["events", "--types", "Bogus"]).err();
    assert!(e.contains("Bogus"), "{e}");
    let e = c.ctl(&["events", "--for", "pod"]).err();
    assert!(e.contains("TYPE/NAME"), "{e}");
}
