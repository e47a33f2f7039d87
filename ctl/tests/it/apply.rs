//! apply's three-way merge, diff, edit, patch, dry runs and manifest validation through
//! the binary against a real controller.

use serde_json::Value;

use crate::harness::{Controller, shoalctl_bin};

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A deployment manifest; `extra` is YAML added under `spec:` (indented by two).
fn deployment(labels: &str, extra: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {{app: web{labels}}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: app, image: busybox:1}}]
{extra}"
    )
}

fn get(c: &Controller, what: &[&str]) -> Value {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend_from_slice(&["-o", "json"]);
    json(&c.ctl(&args).ok())
}

fn apply(c: &Controller, file: &str, text: &str) -> String {
    let f = c.write(file, text);
    c.ctl(&["apply", "-f", f.to_str().unwrap()]).ok()
}

#[test]
fn apply_then_label_then_apply_keeps_the_label() {
    let c = Controller::start();
    let m = deployment("", "");
    assert_eq!(apply(&c, "web.yaml", &m), "deployment/web created\n");
    let d = get(&c, &["deploy", "web"]);
    let last = json(d["metadata"]["annotations"][LAST_APPLIED].as_str().unwrap());
    assert_eq!(last["metadata"]["labels"]["app"], "web");
    assert!(last["spec"].get("replicas").is_none(), "{last}");

    c.ctl(&["label", "deploy", "web", "tier=frontend"]).ok();
    assert_eq!(apply(&c, "web.yaml", &m), "deployment/web unchanged\n");
    let d = get(&c, &["deploy", "web"]);
    assert_eq!(
        d["metadata"]["labels"],
        serde_json::json!({"app": "web", "tier": "frontend"})
    );
}

#[test]
fn scale_then_apply_without_replicas_keeps_replicas() {
    let c = Controller::start();
    let m = deployment("", "");
    apply(&c, "web.yaml", &m);
    assert_eq!(get(&c, &["deploy", "web"])["spec"]["replicas"], 1);
    c.ctl(&["scale", "deploy/web", "--replicas", "4"]).ok();
    apply(&c, "web.yaml", &m);
    assert_eq!(get(&c, &["deploy", "web"])["spec"]["replicas"], 4);
    // A manifest that sets replicas wins again.
    let out = apply(&c, "web.yaml", &deployment("", "  replicas: 2\n"));
    assert_eq!(out, "deployment/web configured\n");
    assert_eq!(get(&c, &["deploy", "web"])["spec"]["replicas"], 2);
}

#[test]
fn fields_removed_from_the_manifest_are_removed() {
    let c = Controller::start();
    apply(
        &c,
        "web.yaml",
        &deployment(", tier: a", "  revisionHistoryLimit: 3\n  paused: true\n"),
    );
    c.ctl(&["label", "deploy", "web", "owner=ops"]).ok();
    let d = get(&c, &["deploy", "web"]);
    assert_eq!(d["spec"]["revisionHistoryLimit"], 3);
    let out = apply(&c, "web.yaml", &deployment("", "  paused: true\n"));
    assert_eq!(out, "deployment/web configured\n");
    let d = get(&c, &["deploy", "web"]);
    // Removed from the manifest: removed (back to the default); set elsewhere: kept.
    assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(d["spec"]["paused"], true);
    assert_eq!(
        d["metadata"]["labels"],
        serde_json::json!({"app": "web", "owner": "ops"})
    );
}

#[test]
fn patch_with_merge_and_json_patches() {
    let c = Controller::start();
    apply(&c, "web.yaml", &deployment(", tier: a", ""));
    let out = c
        .ctl(&[
            "patch",
            "deploy/web",
            "-p",
            r#"{"spec":{"replicas":3},"metadata":{"labels":{"tier":null,"x":"y"}}}"#,
        ])
        .ok();
    assert_eq!(out, "deployment/web patched\n");
    let d = get(&c, &["deploy", "web"]);
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(
        d["metadata"]["labels"],
        serde_json::json!({"app": "web", "x": "y"})
    );

    let out = c
        .ctl(&[
            "patch",
            "deployment",
            "web",
            "--type",
            "json",
            "-p",
            r#"[{"op":"test","path":"/spec/replicas","value":3},{"op":"replace","path":"/spec/replicas","value":5},{"op":"remove","path":"/metadata/labels/x"}]"#,
        ])
        .ok();
    assert_eq!(out, "deployment/web patched\n");
    let d = get(&c, &["deploy", "web"]);
    assert_eq!(d["spec"]["replicas"], 5);
    assert_eq!(d["metadata"]["labels"], serde_json::json!({"app": "web"}));
    // (The controller writes the status meanwhile; the spec's generation counts changes.)
    let generation = d["metadata"]["generation"].clone();

    // A failing test operation, an invalid result, no change: nothing is written.
    let e = c
        .ctl(&[
            "patch",
            "deploy/web",
            "--type=json",
            "-p",
            r#"[{"op":"test","path":"/spec/replicas","value":3}]"#,
        ])
        .err();
    assert!(e.starts_with("error: the JSON patch does not apply"), "{e}");
    let e = c
        .ctl(&["patch", "deploy/web", "-p", r#"{"spec":{"replicaz":1}}"#])
        .err();
    assert_eq!(
        e,
        "error: the patched object is invalid: spec.replicaz: unknown field `replicaz`, did you mean `replicas`?"
    );
    let out = c
        .ctl(&["patch", "deploy/web", "-p", r#"{"spec":{"replicas":5}}"#])
        .ok();
    assert_eq!(out, "deployment/web patched (no change)\n");
    let d = get(&c, &["deploy", "web"]);
    assert_eq!(d["metadata"]["generation"], generation);
    assert_eq!(d["spec"]["replicas"], 5);
    assert_eq!(d["metadata"]["labels"], serde_json::json!({"app": "web"}));
    let e = c.ctl(&["patch", "deploy/nope", "-p", "{}"]).err();
    assert_eq!(
        e,
        r#"error: deployment "nope" not found in namespace "default""#
    );
}

#[test]
fn diff_exit_codes_and_output() {
    let c = Controller::start();
    let f = c.write("web.yaml", &deployment("", ""));
    let file = f.to_str().unwrap();

    // A new object: every line added, exit 1, and nothing written.
    let r = c.ctl(&["diff", "-f", file]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout
            .starts_with("--- LIVE/Deployment.default.web\n+++ MERGED/Deployment.default.web\n"),
        "{r:?}"
    );
    assert!(r.stdout.contains("\n+kind: Deployment\n"), "{r:?}");
    let gone = c.ctl(&["get", "deploy", "web"]);
    assert_eq!(gone.code, 1, "{gone:?}");

    // Applied: no differences, exit 0, nothing printed.
    c.ctl(&["apply", "-f", file]).ok();
    let r = c.ctl(&["diff", "-f", file]);
    assert_eq!((r.code, r.stdout.as_str(), r.stderr.as_str()), (0, "", ""));

    // A changed image: exit 1 and the change.
    let f2 = c.write(
        "web2.yaml",
        &deployment("", "").replace("busybox:1", "busybox:2"),
    );
    let r = c.ctl(&["diff", "-f", f2.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{r:?}");
    let changed: Vec<String> = r
        .stdout
        .lines()
        .filter(|l| {
            (l.starts_with('-') || l.starts_with('+'))
                && !l.starts_with("---")
                && !l.starts_with("+++")
        })
        .map(|l| format!("{} {}", &l[..1], l[1..].trim()))
        .collect();
    // The image, and the last-applied annotation that holds it.
    assert!(
        changed.contains(&"- image: busybox:1".to_string()),
        "{}",
        r.stdout
    );
    assert!(
        changed.contains(&"+ image: busybox:2".to_string()),
        "{}",
        r.stdout
    );
    assert_eq!(
        get(&c, &["deploy", "web"])["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox:1"
    );

    // An error: exit 2.
    let bad = c.write("bad.yaml", &deployment("", "  replicas: three\n"));
    let r = c.ctl(&["diff", "-f", bad.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.starts_with("error: "), "{r:?}");
}

/// Writes an executable editor script into the test's directory.
fn editor(c: &Controller, name: &str, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let p = c.write(name, &format!("#!/bin/sh\nset -e\n{body}\n"));
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p.display().to_string()
}

#[test]
fn edit_with_a_scripted_editor() {
    let c = Controller::start();
    apply(&c, "web.yaml", &deployment("", "  replicas: 2\n"));

    // A change is written.
    let ed = editor(&c, "bump.sh", r#"sed -i 's/replicas: 2/replicas: 3/' "$1""#);
    let out = c.ctl_env(&["edit", "deploy/web"], &[("EDITOR", &ed)]).ok();
    assert_eq!(out, "deployment/web edited\n");
    assert_eq!(get(&c, &["deploy", "web"])["spec"]["replicas"], 3);

    // VISUAL comes before EDITOR; no change writes nothing.
    let r = c.ctl_env(
        &["edit", "deployment", "web"],
        &[("VISUAL", "true"), ("EDITOR", &ed)],
    );
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (0, "", "Edit cancelled, no changes made.\n")
    );

    // Someone else changes another field meanwhile: the edit still goes on top.
    let server = c.addr.clone();
    let ctl = shoalctl_bin().display().to_string();
    let ed = editor(
        &c,
        "label-then-bump.sh",
        &format!(
            "\"{ctl}\" --server {server} label deploy web meanwhile=yes >/dev/null\nsed -i 's/replicas: 3/replicas: 4/' \"$1\""
        ),
    );
    let out = c.ctl_env(&["edit", "deploy/web"], &[("EDITOR", &ed)]).ok();
    assert_eq!(out, "deployment/web edited\n");
    let d = get(&c, &["deploy", "web"]);
    assert_eq!(d["spec"]["replicas"], 4);
    assert_eq!(d["metadata"]["labels"]["meanwhile"], "yes");

    // Someone else changes the same field: a conflict, nothing of the edit written, the
    // edit kept in a file named in the error.
    let ed = editor(
        &c,
        "scale-then-bump.sh",
        &format!(
            "\"{ctl}\" --server {server} scale deploy web --replicas 7 >/dev/null\nsed -i 's/replicas: 4/replicas: 5/' \"$1\""
        ),
    );
    let e = c.ctl_env(&["edit", "deploy/web"], &[("EDITOR", &ed)]).err();
    assert!(e.starts_with("error: conflict: "), "{e}");
    assert!(e.contains("(/spec/replicas)"), "{e}");
    let kept = e
        .split("your edit is kept in ")
        .nth(1)
        .unwrap_or_else(|| panic!("no kept file in {e}"))
        .trim()
        .to_string();
    let text = std::fs::read_to_string(&kept).unwrap();
    std::fs::remove_file(&kept).unwrap();
    assert!(text.contains("replicas: 5"), "{text}");
    assert_eq!(get(&c, &["deploy", "web"])["spec"]["replicas"], 7);

    // An invalid edit says why; a failing editor changes nothing.
    let ed = editor(&c, "typo.sh", r#"sed -i 's/replicas: 7/replicaz: 7/' "$1""#);
    let r = c.ctl_env(&["edit", "deploy/web"], &[("EDITOR", &ed)]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.starts_with(
            "error: the edited object is invalid: spec.replicaz: unknown field `replicaz`, did you mean `replicas`?\n"
        ),
        "{r:?}"
    );
    let kept = r
        .stderr
        .split("your edit is kept in ")
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    std::fs::remove_file(&kept).unwrap();
    let e = c
        .ctl_env(&["edit", "deploy/web"], &[("EDITOR", "false")])
        .err();
    assert!(e.contains("failed"), "{e}");
    assert_eq!(get(&c, &["deploy", "web"])["spec"]["replicas"], 7);
}

const POD: &str = "apiVersion: v1
kind: Pod
metadata: {name: p1}
spec:
  containers: [{name: c, image: busybox}]
";

#[test]
fn server_dry_run_refuses_what_the_controller_refuses_and_writes_nothing() {
    let c = Controller::start();
    // Valid for the client, refused by the controller: a cluster IP outside its range.
    let text = format!(
        "{POD}---\napiVersion: v1\nkind: Service\nmetadata: {{name: s1}}\nspec:\n  clusterIP: 10.97.0.1\n  ports: [{{port: 80}}]\n"
    );
    let f = c.write("both.yaml", &text);
    let e = c
        .ctl(&["apply", "--dry-run=server", "-f", f.to_str().unwrap()])
        .err();
    assert!(
        e.starts_with("error: rejected by the controller: ")
            && e.contains("10.97.0.1 is not inside the service CIDR"),
        "{e}"
    );
    // The client dry run does not ask the controller, so it does not know.
    let out = c
        .ctl(&["apply", "--dry-run=client", "-f", f.to_str().unwrap()])
        .ok();
    assert_eq!(
        out,
        "pod/p1 created (dry run)\nservice/s1 created (dry run)\n"
    );

    let f = c.write("pod.yaml", POD);
    let out = c
        .ctl(&["apply", "--dry-run=server", "-f", f.to_str().unwrap()])
        .ok();
    assert_eq!(out, "pod/p1 created (server dry run)\n");
    for what in ["pods", "services"] {
        let r = c.ctl(&["get", what]);
        assert_eq!((r.code, r.stdout.as_str()), (0, ""), "{what}: {r:?}");
    }
    // Admission runs too: a user of the edit role may not mount a host path.
    let conf = c
        .ctl(&["config", "create-user", "alice", "--role", "edit"])
        .ok();
    let conf = c.write("alice.conf", &conf);
    let host = c.write(
        "host.yaml",
        &POD.replace("p1", "hp").replace(
            "  containers:",
            "  volumes: [{name: h, hostPath: {path: /etc}}]\n  containers:",
        ),
    );
    let as_alice = [("SHOAL_CONFIG", conf.to_str().unwrap())];
    let e = c
        .ctl_env(
            &["apply", "--dry-run=server", "-f", host.to_str().unwrap()],
            &as_alice,
        )
        .err();
    assert!(
        e.starts_with("error: permission denied: ") && e.contains("hostPath"),
        "{e}"
    );
    let out = c
        .ctl_env(
            &["apply", "--dry-run=server", "-f", f.to_str().unwrap()],
            &as_alice,
        )
        .ok();
    assert_eq!(out, "pod/p1 created (server dry run)\n");
    let r = c.ctl(&["get", "pods"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "{r:?}");

    // Once it exists, a server dry run of a change says configured and changes nothing.
    c.ctl(&["apply", "-f", f.to_str().unwrap()]).ok();
    let f2 = c.write(
        "pod2.yaml",
        &POD.replace("{name: p1}", "{name: p1, labels: {v: \"2\"}}"),
    );
    let out = c
        .ctl(&["apply", "--dry-run=server", "-f", f2.to_str().unwrap()])
        .ok();
    assert_eq!(out, "pod/p1 configured (server dry run)\n");
    assert!(
        get(&c, &["pod", "p1"])["metadata"]
            .get("labels")
            .is_none_or(|l| l.get("v").is_none())
    );
}

#[test]
fn apply_over_an_object_made_by_create_warns_and_removes_nothing() {
    let c = Controller::start();
    let f = c.write(
        "p.yaml",
        &POD.replace("{name: p1}", "{name: p1, labels: {a: \"1\"}}"),
    );
    c.ctl(&["create", "-f", f.to_str().unwrap()]).ok();
    let f = c.write("p2.yaml", POD);
    let r = c.ctl(&["apply", "-f", f.to_str().unwrap()]);
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (
            0,
            "pod/p1 configured\n",
            "Warning: pod/p1 has no kubectl.kubernetes.io/last-applied-configuration annotation (it was not made by apply), so nothing is removed from it this time\n"
        )
    );
    assert_eq!(get(&c, &["pod", "p1"])["metadata"]["labels"]["a"], "1");
    // From now on the annotation is there, and the label goes when the manifest drops it.
    let f = c.write(
        "p3.yaml",
        &POD.replace("{name: p1}", "{name: p1, labels: {b: \"2\"}}"),
    );
    let r = c.ctl(&["apply", "-f", f.to_str().unwrap()]);
    assert_eq!((r.code, r.stderr.as_str()), (0, ""), "{r:?}");
    assert_eq!(
        get(&c, &["pod", "p1"])["metadata"]["labels"],
        serde_json::json!({"a": "1", "b": "2"})
    );
    let f = c.write("p4.yaml", POD);
    c.ctl(&["apply", "-f", f.to_str().unwrap()]).ok();
    assert_eq!(
        get(&c, &["pod", "p1"])["metadata"]["labels"],
        serde_json::json!({"a": "1"})
    );
}

#[test]
fn a_stale_resource_version_in_the_manifest_is_a_conflict() {
    let c = Controller::start();
    apply(&c, "p.yaml", POD);
    let stale = POD.replace(
        "{name: p1}",
        "{name: p1, resourceVersion: \"1\", labels: {v: x}}",
    );
    let f = c.write("stale.yaml", &stale);
    let e = c.ctl(&["apply", "-f", f.to_str().unwrap()]).err();
    assert!(e.starts_with("error: conflict: "), "{e}");
    assert!(
        get(&c, &["pod", "p1"])["metadata"]
            .get("labels")
            .is_none_or(|l| l.get("v").is_none())
    );
}

#[test]
fn every_manifest_error_is_reported_and_nothing_is_applied() {
    let c = Controller::start();
    let text = format!(
        "{POD}---\n{}---\n{}",
        POD.replace("p1", "p2").replace("containers", "contaners"),
        deployment("", "  minReadySeconds: 5\n  replicas: three\n")
    );
    let f = c.write("three.yaml", &text);
    let file = f.display().to_string();
    let r = c.ctl(&["apply", "-f", &file]);
    assert_eq!(r.code, 1, "{r:?}");
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(
        lines,
        [
            format!(
                "error: {file}: document 2 (Pod p2): spec.contaners: unknown field `contaners`, did you mean `containers`? (line 11)"
            ),
            format!(
                "error: {file}: document 2 (Pod p2): spec.containers: required field is missing (line 10)"
            ),
            format!(
                "error: {file}: document 3 (Deployment web): spec.minReadySeconds: not supported by Shoal (a Kubernetes field) (line 24)"
            ),
            format!(
                "error: {file}: document 3 (Deployment web): spec.replicas: expected a non-negative integer, got \"three\" (line 25)"
            ),
        ]
    );
    let r = c.ctl(&["get", "pods"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "{r:?}");
}

/// `n` ConfigMaps `c<first>…` in namespace `ns`, with `value` in their data.
fn config_maps(ns: &str, range: std::ops::Range<usize>, value: &str) -> String {
    range
        .map(|i| {
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{i}, namespace: {ns}}}\ndata: {{k: \"{value}\"}}\n---\n"
            )
        })
        .collect()
}

#[test]
fn apply_of_many_objects_creates_the_new_ones_each_on_its_own() {
    let c = Controller::start();
    // A namespace and twelve objects in it (one List reads them), and a pod elsewhere.
    let first = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: shop}}\n---\n{}{POD}",
        config_maps("shop", 0..12, "a")
    );
    let out = apply(&c, "many.yaml", &first);
    let mut want = String::from("namespace/shop created\n");
    for i in 0..12 {
        want.push_str(&format!("configmap/c{i} created\n"));
    }
    want.push_str("pod/p1 created\n");
    assert_eq!(out, want);
    let cm = get(&c, &["configmap", "c11", "-n", "shop"]);
    assert_eq!(cm["data"]["k"], "a");
    assert!(
        cm["metadata"]["annotations"][LAST_APPLIED].is_string(),
        "{cm}"
    );

    // Existing objects keep apply's merge (one changed, the rest unchanged), new ones are
    // created; the output keeps the manifest's order.
    let second = format!(
        "{}{}{}",
        config_maps("shop", 0..3, "a"),
        config_maps("shop", 3..4, "b"),
        config_maps("shop", 12..14, "a"),
    );
    let out = apply(&c, "more.yaml", &second);
    assert_eq!(
        out,
        "configmap/c0 unchanged\nconfigmap/c1 unchanged\nconfigmap/c2 unchanged\n\
         configmap/c3 configured\nconfigmap/c12 created\nconfigmap/c13 created\n"
    );
    assert_eq!(
        get(&c, &["configmap", "c3", "-n", "shop"])["data"]["k"],
        "b"
    );

    // A new object the controller refuses stops the whole apply before anything is
    // written (the server-side dry run first), with the error a single apply of it gives.
    let bad = "apiVersion: v1\nkind: Service\nmetadata: {name: s1, namespace: shop}\nspec:\n  clusterIP: 10.97.0.1\n  ports: [{port: 80}]\n---\n";
    let f = c.write(
        "mixed.yaml",
        &format!(
            "{}{bad}{}",
            config_maps("shop", 20..21, "x"),
            config_maps("shop", 21..22, "x")
        ),
    );
    let r = c.ctl(&["apply", "-f", f.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.stdout, "", "{r:?}");
    assert!(
        r.stderr.starts_with("error: ")
            && r.stderr
                .contains("10.97.0.1 is not inside the service CIDR"),
        "{r:?}"
    );
    for cm in ["c20", "c21"] {
        let r = c.ctl(&["get", "configmap", cm, "-n", "shop"]);
        assert_ne!(r.code, 0, "{cm} must not exist: {r:?}");
    }
    let r = c.ctl(&["get", "services", "-n", "shop"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "{r:?}");
}
