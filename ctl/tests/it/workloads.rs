//! The cluster-workload verbs against a real controller (its leader runs the deployment
//! reconciler and the scheduler): scale, set image, cordon/uncordon, drain, rollout
//! status/history/undo, get all, and image import/ls/rm of a real busybox tarball.
//! Nodes here are SIMULATED: Node objects (label `shoal.test/simulated: "true"`) with a
//! fresh heartbeat; a test marks pods bound to them Ready as an agent would.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Controller, eventually, watcher};

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn deployment(name: &str, replicas: u32, image: &str) -> String {
    format!(
        "apiVersion: shoal/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
        - name: app
          image: {image}
          command: [sleep, '3600']
          resources: {{requests: {{cpu: 10m, memory: 8Mi}}}}
"
    )
}

/// A SIMULATED node: heartbeat now, Ready=True, room for many pods.
fn sim_node(name: &str) -> String {
    json!({
        "apiVersion": "shoal/v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"shoal.test/simulated": "true"}},
        "status": {
            "capacity": {"cpu": "8", "memory": "16Gi", "pods": 110},
            "conditions": [{"type": "Ready", "status": "True"}],
            "heartbeatTime": chrono::Utc::now().to_rfc3339(),
        }
    })
    .to_string()
}

fn get(c: &Controller, what: &[&str]) -> Value {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend_from_slice(&["-o", "json"]);
    json(&c.ctl(&args).ok())
}

fn pods_on(c: &Controller, node: &str) -> Vec<Value> {
    let sel = format!("spec.nodeName={node}");
    let v = get(c, &["pods", "-A", "--field-selector", &sel]);
    v["items"].as_array().cloned().unwrap_or_default()
}

fn generation(d: &Value) -> i64 {
    d["metadata"]["generation"].as_i64().unwrap_or(0)
}

#[test]
fn scale_and_set_image_rewrite_the_spec() {
    let c = Controller::start();
    let f = c.write("d.yaml", &deployment("scaled", 1, "busybox:1"));
    c.ctl(&["apply", "-f", f.to_str().unwrap()]).ok();
    let before = get(&c, &["deployment/scaled"]);

    let out = c
        .ctl(&["scale", "deployment", "scaled", "--replicas", "5"])
        .ok();
    assert_eq!(out, "deployment/scaled scaled\n");
    let after = get(&c, &["deployment/scaled"]);
    assert_eq!(after["spec"]["replicas"], 5);
    assert!(generation(&after) > generation(&before), "{after}");
    let out = c.ctl(&["scale", "deploy/scaled", "--replicas", "5"]).ok();
    assert_eq!(out, "deployment/scaled unchanged\n");
    // The resourceVersion precondition.
    let e = c
        .ctl(&[
            "scale",
            "deploy/scaled",
            "--replicas",
            "2",
            "--resource-version",
            "1",
        ])
        .err();
    assert!(
        e.contains("conflict: deployment \"scaled\" is at resourceVersion"),
        "{e}"
    );
    assert_eq!(get(&c, &["deployment/scaled"])["spec"]["replicas"], 5);
    let e = c.ctl(&["scale", "deploy/nope", "--replicas", "2"]).err();
    assert_eq!(
        e,
        "error: deployment \"nope\" not found in namespace \"default\""
    );
    let e = c.ctl(&["scale", "svc/scaled", "--replicas", "2"]).err();
    assert!(e.contains("services is not supported here"), "{e}");

    let g = generation(&get(&c, &["deployment/scaled"]));
    let out = c
        .ctl(&["set", "image", "deployment/scaled", "app=busybox:2"])
        .ok();
    assert_eq!(out, "deployment/scaled image updated\n");
    let d = get(&c, &["deployment/scaled"]);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox:2"
    );
    assert!(generation(&d) > g, "generation not bumped: {d}");
    let out = c
        .ctl(&["set", "image", "deployment", "scaled", "app=busybox:2"])
        .ok();
    assert_eq!(out, "deployment/scaled image unchanged\n");
    let e = c
        .ctl(&["set", "image", "deploy/scaled", "db=postgres"])
        .err();
    assert_eq!(
        e,
        "error: deployment \"scaled\" has no container \"db\" (its containers: app)"
    );
    let e = c.ctl(&["set", "image", "deploy/scaled", "app"]).err();
    assert!(e.contains("CONTAINER=IMAGE"), "{e}");
}

#[test]
fn cordon_and_uncordon_toggle_unschedulable() {
    let c = Controller::start();
    let f = c.write("n.json", &sim_node("cordon-n1"));
    c.ctl(&["create", "-f", f.to_str().unwrap()]).ok();
    assert_eq!(
        c.ctl(&["cordon", "cordon-n1"]).ok(),
        "node/cordon-n1 cordoned\n"
    );
    assert_eq!(get(&c, &["node/cordon-n1"])["spec"]["unschedulable"], true);
    assert_eq!(
        c.ctl(&["cordon", "node/cordon-n1"]).ok(),
        "node/cordon-n1 already cordoned\n"
    );
    assert_eq!(
        c.ctl(&["uncordon", "cordon-n1"]).ok(),
        "node/cordon-n1 uncordoned\n"
    );
    let n = get(&c, &["node/cordon-n1"]);
    assert!(
        n["spec"].get("unschedulable").is_none_or(|u| u == false),
        "{n}"
    );
    assert_eq!(
        c.ctl(&["cordon", "nope"]).err(),
        "error: node \"nope\" not found"
    );
}

#[test]
fn drain_cordons_and_deletes_only_what_it_may() {
    // The simulated nodes send no heartbeat: a node timeout longer than the test keeps them
    // Ready, so that "the cordoned node gets no pod" is about the cordon and not about the
    // node having gone NotReady (checked at the end, with a positive control).
    let c = Controller::start_with(&["--node-timeout", "3600"]);
    let node = "drain-n1";
    let f = c.write("n.json", &sim_node(node));
    c.ctl(&["create", "-f", f.to_str().unwrap()]).ok();
    let f = c.write("d.yaml", &deployment("drained", 2, "busybox:1"));
    c.ctl(&["apply", "-f", f.to_str().unwrap()]).ok();
    let bare = c.write(
        "bare.yaml",
        &format!(
            "apiVersion: shoal/v1\nkind: Pod\nmetadata: {{name: drain-bare}}\nspec:\n  nodeName: {node}\n  containers: [{{name: c, image: busybox}}]\n"
        ),
    );
    c.ctl(&["create", "-f", bare.to_str().unwrap()]).ok();
    let bound = eventually("3 pods bound to the node", Duration::from_secs(20), || {
        let pods = pods_on(&c, node);
        if pods.len() == 3 {
            Ok(pods)
        } else {
            Err(format!("{} bound", pods.len()))
        }
    });

    // A pod without a controller blocks the drain; the node stays cordoned.
    let run = c.ctl(&["drain", node]);
    assert_eq!(run.stdout, format!("node/{node} cordoned\n"));
    let e = run.err();
    assert!(
        e.contains("cannot drain node \"drain-n1\": 1 pod(s) cannot be deleted: default/drain-bare (not managed by a controller (use --force))"),
        "{e}"
    );
    assert_eq!(
        get(&c, &[&format!("node/{node}")])["spec"]["unschedulable"],
        true
    );
    assert_eq!(pods_on(&c, node).len(), 3, "nothing may be deleted");

    // The positive control: an uncordoned node of the same kind, which must get the
    // replacements the cordoned one may not.
    let control = "drain-n2";
    let f = c.write("n2.json", &sim_node(control));
    c.ctl(&["create", "-f", f.to_str().unwrap()]).ok();
    let run = c.ctl(&["drain", node, "--force", "--timeout", "30s"]);
    assert!(
        run.stderr
            .contains("warning: deleting pod default/drain-bare"),
        "{run:?}"
    );
    let out = run.ok();
    assert!(
        out.starts_with(&format!("node/{node} already cordoned\n")),
        "{out}"
    );
    assert!(out.contains("pod/drain-bare deleted\n"), "{out}");
    assert!(out.ends_with(&format!("node/{node} drained\n")), "{out}");
    let old: Vec<&str> = bound
        .iter()
        .filter_map(|p| p["metadata"]["uid"].as_str())
        .collect();
    let now = pods_on(&c, node);
    assert!(
        now.iter()
            .all(|p| !old.contains(&p["metadata"]["uid"].as_str().unwrap_or(""))),
        "drained pods still bound: {now:?}"
    );
    // The deployment replaces its pods on the control node; the cordoned node gets none.
    eventually(
        "replacement pods on the control node",
        Duration::from_secs(20),
        || {
            let v = get(&c, &["pods", "-l", "app=drained"]);
            let items = v["items"].as_array().cloned().unwrap_or_default();
            if items.len() == 2 && items.iter().all(|p| p["spec"]["nodeName"] == control) {
                Ok(())
            } else {
                Err(format!("{items:?}"))
            }
        },
    );
    // Still Ready: the cordon, not a lost node, kept the pods away.
    let n = get(&c, &[&format!("node/{node}")]);
    let ready = n["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .map(|c| c["status"].clone());
    assert_eq!(ready, Some(json!("True")), "{n}");
    assert_eq!(n["spec"]["unschedulable"], true, "{n}");
}

/// Marks every pod bound to `node` Running with Ready=True, as its agent would.
fn mark_ready(c: &Controller, node: &str) -> Result<usize, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let settings = shoalctl::client::Settings {
            config: crate::harness::conf_for(&c.addr),
            context: None,
            server: Some(c.addr.clone()),
            timeouts: Default::default(),
        };
        let mut ctx = shoalctl::commands::Context::new(settings, None);
        let pod = shoalctl::kinds::resolve("pod").map_err(|e| e.to_string())?;
        let (pods, _) = ctx
            .list(&pod, "", "", &format!("spec.nodeName={node}"))
            .await
            .map_err(|e| e.to_string())?;
        let mut n = 0;
        for mut p in pods {
            p["status"]["phase"] = json!("Running");
            p["status"]["conditions"] = json!([
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "True"}
            ]);
            ctx.update(&pod, &p).await.map_err(|e| e.to_string())?;
            n += 1;
        }
        Ok(n)
    })
}

#[test]
fn rollout_status_waits_for_available_replicas() {
    let c = Controller::start();
    let node = "rollout-n1";
    let f = c.write("n.json", &sim_node(node));
    c.ctl(&["create", "-f", f.to_str().unwrap()]).ok();
    let f = c.write("d.yaml", &deployment("rolled", 2, "busybox:1"));
    c.ctl(&["apply", "-f", f.to_str().unwrap()]).ok();

    // Nothing is ready: a timeout, after a progress line.
    let run = c.ctl(&["rollout", "status", "deployment/rolled", "--timeout", "2s"]);
    assert!(
        run.stdout
            .contains("Waiting for deployment \"rolled\" rollout to finish: "),
        "{run:?}"
    );
    let e = run.err();
    assert!(
        e.contains("timed out after 2s waiting for deployment \"rolled\""),
        "{e}"
    );

    let mut w = watcher(&c.addr, &["rollout", "status", "deploy/rolled"]);
    w.expect("a waiting line", |l| {
        l.starts_with("Waiting for deployment \"rolled\" rollout to finish: ")
    });
    eventually(
        "2 pods marked ready",
        Duration::from_secs(20),
        || match mark_ready(&c, node)? {
            2 => Ok(()),
            n => Err(format!("{n} bound")),
        },
    );
    w.expect("the success line", |l| {
        l == "deployment \"rolled\" successfully rolled out"
    });
}

fn history_len(c: &Controller, name: &str) -> (i64, usize) {
    let d = get(c, &[&format!("deployment/{name}")]);
    (
        d["status"]["revision"].as_i64().unwrap_or(0),
        d["status"]["history"].as_array().map_or(0, Vec::len),
    )
}

#[test]
fn rollout_history_and_undo() {
    let c = Controller::start();
    let f = c.write("d.yaml", &deployment("hist", 1, "busybox:1"));
    c.ctl(&["apply", "-f", f.to_str().unwrap()]).ok();
    eventually(
        "revision 1",
        Duration::from_secs(20),
        || match history_len(&c, "hist") {
            (1, 1) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    let e = c.ctl(&["rollout", "undo", "deployment/hist"]).err();
    assert_eq!(
        e,
        "error: deployment \"hist\" has no previous revision to go back to"
    );
    c.ctl(&["set", "image", "deployment/hist", "app=busybox:2"])
        .ok();
    eventually(
        "revision 2",
        Duration::from_secs(20),
        || match history_len(&c, "hist") {
            (2, 2) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    let out = c.ctl(&["rollout", "history", "deployment/hist"]).ok();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "deployment/hist", "{out}");
    assert!(lines[1].starts_with("REVISION"), "{out}");
    assert!(
        lines[2].starts_with("1 ") && lines[2].ends_with("app=busybox:1"),
        "{out}"
    );
    assert!(
        lines[3].starts_with("2 (current)") && lines[3].ends_with("app=busybox:2"),
        "{out}"
    );
    let out = c
        .ctl(&["rollout", "history", "deploy/hist", "--revision", "1"])
        .ok();
    assert!(out.contains("image: busybox:1"), "{out}");

    let e = c
        .ctl(&["rollout", "undo", "deploy/hist", "--to-revision", "9"])
        .err();
    assert_eq!(
        e,
        "error: deployment \"hist\" has no revision 9 in its history (revisions: 1, 2)"
    );
    let out = c.ctl(&["rollout", "undo", "deployment/hist"]).ok();
    assert_eq!(out, "deployment/hist rolled back to revision 1\n");
    let d = get(&c, &["deployment/hist"]);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox:1"
    );
    // The reconciler moves revision 1's template to the end as revision 3.
    eventually("revision 3", Duration::from_secs(20), || {
        let d = get(&c, &["deployment/hist"]);
        let last = d["status"]["history"]
            .as_array()
            .and_then(|h| h.last().cloned())
            .unwrap_or_default();
        if d["status"]["revision"] == 3
            && last["template"]["spec"]["containers"][0]["image"] == "busybox:1"
        {
            Ok(())
        } else {
            Err(d["status"].to_string())
        }
    });
    let out = c
        .ctl(&["rollout", "undo", "deployment/hist", "--to-revision", "3"])
        .ok();
    assert_eq!(
        out,
        "deployment/hist skipped rollback (current template already matches revision 3)\n"
    );
}

#[test]
fn get_all_lists_pods_services_and_deployments() {
    let c = Controller::start();
    let f = c.write("d.yaml", &deployment("every", 0, "busybox:1"));
    c.ctl(&["apply", "-f", f.to_str().unwrap()]).ok();
    let svc = c.write(
        "s.yaml",
        "apiVersion: shoal/v1\nkind: Service\nmetadata: {name: every}\nspec:\n  selector: {app: every}\n  ports: [{port: 80}]\n",
    );
    c.ctl(&["apply", "-f", svc.to_str().unwrap()]).ok();
    let pod = c.write(
        "p.yaml",
        "apiVersion: shoal/v1\nkind: Pod\nmetadata: {name: every-pod}\nspec:\n  containers: [{name: c, image: busybox}]\n",
    );
    c.ctl(&["create", "-f", pod.to_str().unwrap()]).ok();
    let out = c.ctl(&["get", "all"]).ok();
    assert!(out.contains("pod/every-pod"), "{out}");
    assert!(out.contains("service/every"), "{out}");
    assert!(out.contains("deployment/every"), "{out}");
    let p = out.find("pod/every-pod").unwrap();
    let s = out.find("service/every").unwrap();
    let d = out.find("deployment/every").unwrap();
    assert!(p < s && s < d, "{out}");
}

#[test]
#[ignore = "requires root: the controller's image store unpacks layers (ownership, device nodes)"]
fn image_import_ls_rm_of_a_real_busybox_tarball() {
    let c = Controller::start();
    let name = format!("shoal-ctl-test/busybox-{}:v1", std::process::id());
    let tarball = c.dir.path().join("busybox.tar");
    shoal_runtime::testimage::busybox_docker_save(
        std::path::Path::new(shoal_runtime::testimage::BUSYBOX),
        &tarball,
        &name,
    )
    .expect("build the busybox image tarball (needs Debian's busybox-static)");
    let extra = format!("shoal-ctl-test/extra-{}:v2", std::process::id());
    let started = std::time::Instant::now();
    let out = c
        .ctl(&[
            "image",
            "import",
            tarball.to_str().unwrap(),
            "--tag",
            &extra,
        ])
        .ok();
    eprintln!(
        "image import of {} bytes took {:?}",
        std::fs::metadata(&tarball).map(|m| m.len()).unwrap_or(0),
        started.elapsed()
    );
    assert!(out.starts_with("Loaded image: "), "{out}");
    assert!(out.contains(&name) && out.contains(&extra), "{out}");
    let digest = out
        .split(['(', ','])
        .find(|s| s.trim().starts_with("sha256:"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| panic!("no digest in {out:?}"));
    assert_eq!(digest.len(), "sha256:".len() + 64, "{digest}");

    let ls = c.ctl(&["image", "ls"]).ok();
    let lines: Vec<&str> = ls.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "TAG", "DIGEST", "SIZE"]
    );
    let (repo, tag) = name.rsplit_once(':').unwrap();
    assert!(
        lines.iter().any(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            cells.len() == 4 && cells[0] == repo && cells[1] == tag && cells[2] == digest
        }),
        "{ls}"
    );
    assert!(
        ls.contains(
            &extra
                .replace(':', " ")
                .split(' ')
                .next()
                .unwrap()
                .to_string()
        ),
        "{ls}"
    );

    let out = c.ctl(&["image", "rm", &extra]).ok();
    assert!(out.starts_with(&format!("Untagged: {extra} (")), "{out}");
    let ls = c.ctl(&["image", "ls"]).ok();
    assert!(!ls.contains("extra-"), "{ls}");
    assert!(ls.contains(repo), "{ls}");
    c.ctl(&["image", "rm", &name]).ok();
    let run = c.ctl(&["image", "ls"]);
    assert!(!run.stdout.contains(repo), "{run:?}");
    let e = c.ctl(&["image", "rm", &name]).err();
    assert!(e.contains("not found"), "{e}");
    let e = c
        .ctl(&[
            "image",
            "import",
            c.dir.path().join("missing.tar").to_str().unwrap(),
        ])
        .err();
    assert!(e.contains("missing.tar: No such file"), "{e}");
}
