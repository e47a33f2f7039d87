//! apply / create / get / describe / label / delete / cluster status through the binary.

use serde_json::Value;

use std::time::Duration;

use crate::harness::{Controller, eventually, free_port, run_ctl, workspace};

fn web_yaml() -> String {
    workspace().join("examples/web.yaml").display().to_string()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn apply_reports_each_action() {
    let c = Controller::start();
    let out = c.ctl(&["apply", "-f", &web_yaml()]).ok();
    assert_eq!(
        out,
        "deployment/web created\nservice/web created\npod/client created\n"
    );

    let again = c.ctl(&["apply", "-f", &web_yaml()]).ok();
    assert!(again.contains("deployment/web unchanged\n"), "{again}");
    assert!(again.contains("pod/client "), "{again}");

    // Change one field: only that object is configured.
    let text = std::fs::read_to_string(workspace().join("examples/web.yaml")).unwrap();
    let changed = c.write("web-5.yaml", &text.replace("replicas: 3", "replicas: 5"));
    let out = c.ctl(&["apply", "-f", changed.to_str().unwrap()]).ok();
    assert!(out.starts_with("deployment/web configured\n"), "{out}");
    let dep = json(&c.ctl(&["get", "deploy", "web", "-o", "json"]).ok());
    assert_eq!(dep["spec"]["replicas"], 5);

    // --dry-run changes nothing.
    let out = c.ctl(&["apply", "--dry-run", "-f", &web_yaml()]).ok();
    assert!(
        out.starts_with("deployment/web configured (dry run)\n"),
        "{out}"
    );
    let dep = json(&c.ctl(&["get", "deployment/web", "-o", "json"]).ok());
    assert_eq!(dep["spec"]["replicas"], 5);
}

#[test]
fn bad_manifests_are_rejected_before_anything_is_sent() {
    let c = Controller::start();
    let good_then_bad = "\
apiVersion: shoal/v1
kind: Pod
metadata: {name: fine}
spec:
  containers: [{name: c, image: busybox}]
---
apiVersion: shoal/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: three
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: c, image: busybox}]
";
    let f = c.write("bad.yaml", good_then_bad);
    let e = c.ctl(&["apply", "-f", f.to_str().unwrap()]).err();
    let want = format!(
        "error: {}: document 2 (Deployment web): spec.replicas",
        f.display()
    );
    assert!(e.starts_with(&want), "{e}");
    let e = c.ctl(&["create", "-f", f.to_str().unwrap()]).err();
    assert!(e.starts_with(&want), "{e}");
    // Nothing was written: the good first document was not applied either.
    let r = c.ctl(&["get", "pods"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, ""));
    assert_eq!(r.stderr, "No resources found in default namespace.\n");

    let e = c
        .ctl(&[
            "apply",
            "-f",
            c.dir.path().join("missing.yaml").to_str().unwrap(),
        ])
        .err();
    assert!(e.contains("missing.yaml: No such file or directory"), "{e}");
    let e = c
        .ctl_stdin(
            &["apply", "-f", "-"],
            "kind: Pod\nmetadata: {name: x}\n: : :\n",
        )
        .err();
    assert!(e.starts_with("error: <stdin>: document 1"), "{e}");
    let e = c.ctl(&["get", "widgets"]).err();
    assert!(e.contains("unknown kind \"widgets\""), "{e}");
}

#[test]
fn directory_and_stdin_manifests() {
    let c = Controller::start();
    let pod = |name: &str| {
        format!(
            "apiVersion: shoal/v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: dir}}}}\nspec:\n  containers: [{{name: c, image: busybox}}]\n"
        )
    };
    c.write("manifests/b.yaml", &pod("b"));
    c.write("manifests/a.yml", &pod("a"));
    c.write("manifests/readme.txt", "not a manifest");
    let dir = c.dir.path().join("manifests");
    let out = c.ctl(&["apply", "-f", dir.to_str().unwrap()]).ok();
    assert_eq!(out, "pod/a created\npod/b created\n");
    let out = c.ctl_stdin(&["create", "-f", "-"], &pod("from-stdin")).ok();
    assert_eq!(out, "pod/from-stdin created\n");
    let e = c
        .ctl_stdin(&["create", "-f", "-"], &pod("from-stdin"))
        .err();
    assert_eq!(
        e,
        r#"error: pod "from-stdin" already exists in namespace "default""#
    );
    let names = c.ctl(&["get", "pods", "-o", "name"]).ok();
    assert_eq!(names, "pod/a\npod/b\npod/from-stdin\n");
}

#[test]
fn get_formats_selectors_and_namespaces() {
    let c = Controller::start();
    c.ctl(&["apply", "-f", &web_yaml()]).ok();
    let other = c.write(
        "other.yaml",
        // The namespace and the pod in it, in one apply.
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: staging}\n---\napiVersion: shoal/v1\nkind: Pod\nmetadata: {name: elsewhere, namespace: staging}\nspec:\n  containers: [{name: c, image: busybox}]\n",
    );
    c.ctl(&["apply", "-f", other.to_str().unwrap()]).ok();

    let table = c.ctl(&["get", "pods"]).ok();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    );
    assert!(lines.iter().any(|l| l.starts_with("client ")), "{table}");
    assert!(!table.contains("elsewhere"), "{table}");

    let wide = c.ctl(&["get", "pods", "-o", "wide"]).ok();
    assert_eq!(
        wide.lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    );

    let all = c.ctl(&["get", "pods", "-A"]).ok();
    assert!(all.starts_with("NAMESPACE "), "{all}");
    assert!(
        all.lines()
            .any(|l| l.starts_with("staging ") && l.contains("elsewhere")),
        "{all}"
    );
    let staging = c.ctl(&["-n", "staging", "get", "pods", "-o", "name"]).ok();
    assert_eq!(staging, "pod/elsewhere\n");

    let selected = c
        .ctl(&["get", "pods", "-l", "app=client", "-o", "name"])
        .ok();
    assert_eq!(selected, "pod/client\n");
    let none = c.ctl(&["get", "pods", "-l", "app=nothing"]);
    assert_eq!(
        (none.code, none.stdout.as_str(), none.stderr.as_str()),
        (0, "", "No resources found in default namespace.\n")
    );
    let e = c.ctl(&["get", "pods", "-l", "app in (a"]).err();
    assert!(e.contains("invalid label selector"), "{e}");

    // (The deployment's pods may exist too, if the controller runs reconcilers.)
    let list = json(
        &c.ctl(&["get", "pods", "-l", "app=client", "-o", "json"])
            .ok(),
    );
    assert_eq!(
        (list["kind"].as_str(), list["apiVersion"].as_str()),
        (Some("List"), Some("shoal/v1"))
    );
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["metadata"]["name"], "client");
    let empty = json(&c.ctl(&["get", "nodes", "-o", "json"]).ok());
    assert_eq!(empty["items"], serde_json::json!([]));

    let yaml: Value =
        serde_yaml_ng::from_str(&c.ctl(&["get", "pod", "client", "-o", "yaml"]).ok()).unwrap();
    assert_eq!(yaml["kind"], "Pod");
    assert_eq!(yaml["metadata"]["name"], "client");
    assert!(yaml["metadata"]["resourceVersion"].is_string(), "{yaml}");

    let deploys = c.ctl(&["get", "deployments"]).ok();
    assert_eq!(
        deploys
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    );
    assert!(
        deploys.lines().nth(1).unwrap().starts_with("web "),
        "{deploys}"
    );
    // Several types: one table each, names as kind/name.
    let several = c.ctl(&["get", "deploy,svc"]).ok();
    let sections: Vec<&str> = several.split("\n\n").collect();
    assert_eq!(sections.len(), 2, "{several}");
    assert!(
        sections[0].starts_with("NAME ") && sections[0].contains("\ndeployment/web "),
        "{several}"
    );
    assert!(
        sections[1].starts_with("NAME ") && sections[1].contains("\nservice/web "),
        "{several}"
    );
    assert_eq!(
        c.ctl(&["get", "svc,deploy", "-o", "name"]).ok(),
        "service/web\ndeployment/web\n"
    );
    let list = json(&c.ctl(&["get", "deploy,svc", "-o", "json"]).ok());
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    let svc = c.ctl(&["get", "svc", "-o", "wide"]).ok();
    assert!(svc.contains("80/TCP") && svc.contains("app=web"), "{svc}");

    let nodes = c.ctl(&["get", "nodes"]);
    assert_eq!(
        (nodes.code, nodes.stderr.as_str()),
        (0, "No resources found\n")
    );

    let e = c.ctl(&["get", "pod", "nope"]).err();
    assert_eq!(e, r#"error: pod "nope" not found in namespace "default""#);
    let e = c.ctl(&["get", "pods", "-o", "xml"]).err();
    assert!(e.contains("unknown output format \"xml\""), "{e}");
}

#[test]
fn describe_shows_the_object() {
    let c = Controller::start();
    c.ctl(&["apply", "-f", &web_yaml()]).ok();
    let d = c.ctl(&["describe", "deployment", "web"]).ok();
    for needle in [
        "Name:",
        "Namespace:",
        "default",
        "Labels:",
        "app=web",
        "Annotations:",
        "CreationTimestamp:",
        "Replicas:",
        "3 desired",
        "Pod Template:",
        "busybox:latest",
        "Events:",
    ] {
        assert!(d.contains(needle), "missing {needle:?} in:\n{d}");
    }
    let p = c.ctl(&["describe", "pod/client"]).ok();
    assert!(p.contains("Containers:\n  app:\n"), "{p}");
    assert!(p.contains("Command:"), "{p}");
    let s = c.ctl(&["describe", "svc", "web"]).ok();
    assert!(
        s.contains("Port:") && s.contains("80/TCP") && s.contains("TargetPort:"),
        "{s}"
    );
    let e = c.ctl(&["describe", "deploy", "nope"]).err();
    assert_eq!(
        e,
        r#"error: deployment "nope" not found in namespace "default""#
    );
}

#[test]
fn label_read_modify_write_like_kubectl() {
    let c = Controller::start();
    c.ctl(&["apply", "-f", &web_yaml()]).ok();
    let labels = |c: &Controller| {
        json(&c.ctl(&["get", "pod", "client", "-o", "json"]).ok())["metadata"]["labels"].clone()
    };

    assert_eq!(
        c.ctl(&["label", "pod", "client", "tier=frontend"]).ok(),
        "pod/client labeled\n"
    );
    assert_eq!(labels(&c)["tier"], "frontend");
    let e = c.ctl(&["label", "pod", "client", "tier=backend"]).err();
    assert_eq!(
        e,
        "error: 'tier' already has a value (frontend), and --overwrite is false"
    );
    assert_eq!(labels(&c)["tier"], "frontend");
    assert_eq!(
        c.ctl(&["label", "pod/client", "tier=backend", "--overwrite"])
            .ok(),
        "pod/client labeled\n"
    );
    assert_eq!(labels(&c)["tier"], "backend");
    assert_eq!(
        c.ctl(&["label", "pod", "client", "tier=backend"]).ok(),
        "pod/client not labeled\n"
    );
    assert_eq!(
        c.ctl(&["label", "pod", "client", "tier-"]).ok(),
        "pod/client labeled\n"
    );
    assert!(labels(&c).get("tier").is_none());
    assert_eq!(labels(&c)["app"], "client");

    // The selector now sees the label changes.
    c.ctl(&["label", "pod", "client", "env=prod"]).ok();
    assert_eq!(
        c.ctl(&["get", "pods", "-l", "env=prod", "-o", "name"]).ok(),
        "pod/client\n"
    );

    // A stale --resource-version is refused; the current one works (retried, in case
    // a reconciler writes the pod in between).
    let e = c
        .ctl(&["label", "pod", "client", "x=1", "--resource-version", "1"])
        .err();
    assert!(e.starts_with("error: conflict: "), "{e}");
    eventually(
        "a label update at the current resourceVersion",
        Duration::from_secs(10),
        || {
            let pod = json(&c.ctl(&["get", "pod", "client", "-o", "json"]).ok());
            let rv = pod["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .to_string();
            let r = c.ctl(&["label", "pod", "client", "x=1", "--resource-version", &rv]);
            if r.code == 0 {
                Ok(())
            } else {
                Err(format!("{r:?}"))
            }
        },
    );
    assert_eq!(labels(&c)["x"], "1");

    let e = c.ctl(&["label", "pod", "client", "Bad Key=1"]).err();
    assert!(e.contains("label key"), "{e}");
    let e = c.ctl(&["label", "pod", "nope", "a=b"]).err();
    assert_eq!(e, r#"error: pod "nope" not found in namespace "default""#);
    let e = c.ctl(&["label", "pod", "client"]).err();
    assert!(e.contains("at least one label"), "{e}");
}

#[test]
fn delete_by_name_file_and_selector() {
    let c = Controller::start();
    c.ctl(&["apply", "-f", &web_yaml()]).ok();
    assert_eq!(
        c.ctl(&["delete", "pod", "client"]).ok(),
        "pod \"client\" deleted\n"
    );
    let e = c.ctl(&["delete", "pod", "client"]).err();
    assert_eq!(e, r#"error: pod "client" not found in namespace "default""#);
    let r = c.ctl(&["delete", "pod", "client", "--ignore-not-found"]);
    assert_eq!((r.code, r.stdout.as_str(), r.stderr.as_str()), (0, "", ""));

    // -f deletes every object of the manifest; the pod is already gone.
    let r = c.ctl(&["delete", "-f", &web_yaml()]);
    assert_ne!(r.code, 0);
    assert_eq!(
        r.stdout,
        "deployment \"web\" deleted\nservice \"web\" deleted\n"
    );
    assert_eq!(
        r.stderr,
        "error: pod \"client\" not found in namespace \"default\"\n"
    );
    assert_eq!(c.ctl(&["get", "deployments", "-o", "name"]).ok(), "");
    let r = c.ctl(&["get", "deploy,svc"]);
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (0, "", "No resources found in default namespace.\n")
    );

    c.ctl(&["apply", "-f", &web_yaml()]).ok();
    assert_eq!(
        c.ctl(&["delete", "-f", &web_yaml(), "--ignore-not-found"])
            .ok()
            .lines()
            .count(),
        3
    );

    c.ctl(&["apply", "-f", &web_yaml()]).ok();
    assert_eq!(
        c.ctl(&["delete", "pods", "-l", "app=client"]).ok(),
        "pod \"client\" deleted\n"
    );
    let e = c.ctl(&["delete", "pods"]).err();
    assert!(e.contains("give names, -l SELECTOR or --all"), "{e}");
    assert_eq!(
        c.ctl(&["delete", "svc", "--all"]).ok(),
        "service \"web\" deleted\n"
    );
}

#[test]
fn unreachable_servers_and_fail_over() {
    let (p1, p2) = (free_port(), free_port());
    let dead = format!("127.0.0.1:{p1},127.0.0.1:{p2}");
    let e = run_ctl(&dead, &["get", "pods"], None).err();
    assert_eq!(
        e,
        format!(
            "error: cannot reach any controller (tried 127.0.0.1:{p1}, 127.0.0.1:{p2}): connection refused"
        )
    );
    let e = run_ctl("127.0.0.1", &["get", "pods"], None).err();
    assert!(
        e.starts_with("error: invalid server address \"127.0.0.1\""),
        "{e}"
    );

    // A dead first address is skipped; the command runs on the next one.
    let c = Controller::start();
    let list = format!("127.0.0.1:{p1},{}", c.addr);
    let out = run_ctl(&list, &["apply", "-f", &web_yaml()], None).ok();
    assert!(out.contains("pod/client created"), "{out}");

    // A member that accepts connections but never answers (hung, stopped) is given up
    // after the keep-alive timeout, and the next address serves the command.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_addr = hung.local_addr().unwrap().to_string();
    let started = std::time::Instant::now();
    let out = run_ctl(
        &format!("{hung_addr},{}", c.addr),
        &["get", "pod", "client", "-o", "name"],
        None,
    )
    .ok();
    assert_eq!(out, "pod/client\n");
    // A server that never answers fails the TLS handshake within the connect timeout.
    let e = run_ctl(&hung_addr, &["get", "pods"], None).err();
    assert!(
        e.starts_with(&format!(
            "error: cannot reach any controller (tried {hung_addr}): "
        )),
        "{e}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    drop(hung);

    // SHOAL_SERVER is read when --server is absent.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shoalctl"))
        .args(["get", "pod", "client", "-o", "name"])
        .env("SHOAL_SERVER", &list)
        .env("SHOAL_CONFIG", crate::harness::conf_for(&c.addr))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pod/client\n");
}

#[test]
fn cluster_status_and_version() {
    let c = Controller::start();
    let out = c.ctl(&["cluster", "status"]).ok();
    assert!(out.starts_with("Leader: 1   Term: "), "{out}");
    let member = out
        .lines()
        .find(|l| l.starts_with("1 "))
        .unwrap_or_else(|| panic!("no member row: {out}"));
    assert!(
        member.contains(&c.addr) && member.contains("leader") && member.contains("healthy"),
        "{out}"
    );
    let j = json(&c.ctl(&["cluster", "status", "-o", "json"]).ok());
    assert_eq!(j["leaderId"], 1);
    assert_eq!(j["members"][0]["address"], c.addr.as_str());

    let v = run_ctl("127.0.0.1:1", &["version", "--client"], None).ok();
    assert!(
        v.starts_with(&format!("Client Version: v{}", env!("CARGO_PKG_VERSION")))
            && !v.contains("Server Version"),
        "{v}"
    );
    // The server's version: the controller's build (same workspace, same line).
    let v = c.ctl(&["version"]).ok();
    let client = v.lines().next().unwrap_or_default().to_string();
    let server = v
        .lines()
        .find_map(|l| l.strip_prefix("Server Version: "))
        .unwrap_or_else(|| panic!("no server version: {v}"));
    assert!(
        client.contains(" (commit ") && client.contains(", built "),
        "{v}"
    );
    assert!(
        server.starts_with(&format!("v{} (commit ", env!("CARGO_PKG_VERSION")))
            && server.ends_with("(controller 1)"),
        "{v}"
    );
    // An unreachable controller is an error, after the client's line.
    let e = run_ctl("127.0.0.1:1", &["version"], None);
    assert!(
        e.code != 0 && e.stdout.starts_with("Client Version: v"),
        "{e:?}"
    );
}
