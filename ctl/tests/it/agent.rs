//! `logs`, `exec` and `top` through a real controller and a real `shoal-agent` running a
//! real busybox container (imported with `shoalctl image import`).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use shoal_testkit::Proc;

use crate::harness::{Controller, eventually, free_port, shoalctl_bin, watcher};

/// The agent binary (`$SHOAL_AGENT_BIN`, else in the test binary's target directory).
pub(crate) fn agent_bin() -> PathBuf {
    shoal_testkit::bin("shoal-agent")
}

/// A running agent; killed (by PID) on drop, then `--cleanup` removes its pods.
pub(crate) struct Agent {
    proc: Option<Proc>,
    data: PathBuf,
}

impl Agent {
    pub(crate) fn start(c: &Controller, node: &str) -> Agent {
        let data = c.dir.path().join("agent");
        let log = c.dir.path().join("agent.log");
        // A node join token, made as an admin would (`shoalctl token create`).
        let out = c
            .ctl(&["token", "create", "--ttl", "10m", "--uses", "1"])
            .ok();
        let field = |name: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| panic!("no {name} in `token create` output: {out}"))
        };
        let (token, hash) = (field("token:"), field("ca-hash:"));
        let mut cmd = Command::new(agent_bin());
        cmd.args(["--name", node, "--controller", &c.addr, "--listen"])
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--metrics-listen")
            .arg(format!("127.0.0.1:{}", free_port()))
            // Agents of these tests share the host's network namespace: no pod network.
            .args(["--network", "none"])
            .args(["--join-token", &token, "--ca-hash", &hash])
            .args(["--heartbeat-interval", "0.5", "--log", "info", "--data-dir"])
            .arg(&data);
        Agent {
            proc: Some(Proc::spawn("shoal-agent", &mut cmd, &log)),
            data,
        }
    }

    /// The agent's state (running or exit status) and last log lines.
    pub(crate) fn log_tail(&mut self) -> String {
        self.proc.as_mut().map(|p| p.report(20)).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
        match Command::new(agent_bin())
            .args(["--cleanup", "--network", "none"])
            .arg("--data-dir")
            .arg(&self.data)
            .output()
        {
            Ok(o) if !o.status.success() => {
                eprintln!(
                    "agent cleanup failed: {}",
                    String::from_utf8_lossy(&o.stderr)
                )
            }
            Err(e) => eprintln!("agent cleanup failed: {e}"),
            Ok(_) => {}
        }
    }
}

#[test]
#[ignore = "requires root: a real agent runs containers (namespaces, cgroups, overlay mounts)"]
fn logs_exec_and_top_through_a_real_agent() {
    let c = Controller::start();
    let tarball = c.dir.path().join("busybox.tar");
    shoal_runtime::testimage::busybox_docker_save(
        std::path::Path::new(shoal_runtime::testimage::BUSYBOX),
        &tarball,
        "busybox:latest",
    )
    .expect("build the busybox image tarball (needs Debian's busybox-static)");
    c.ctl(&["image", "import", tarball.to_str().unwrap()]).ok();
    let node = format!("ctl-agent-{}", std::process::id());
    let mut agent = Agent::start(&c, &node);
    let pod = json!({
        "apiVersion": "shoal/v1", "kind": "Pod",
        "metadata": {"name": "talker"},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": "busybox:latest", "command": ["sh", "-c",
                "echo line-1; echo line-2; echo line-3; sleep 3; echo late; exec sleep 1000"]}]
        }
    });
    let f = c.write("pod.json", &pod.to_string());
    c.ctl(&["create", "-f", f.to_str().unwrap()]).ok();
    eventually("the pod running", Duration::from_secs(60), || {
        let out = c.ctl(&["get", "pod/talker", "-o", "json"]).ok();
        let v: Value = serde_json::from_str(&out).unwrap();
        if v["status"]["phase"] == "Running" {
            Ok(())
        } else {
            Err(format!("{}; agent: {}", v["status"], agent.log_tail()))
        }
    });

    // Follow: the line written seconds later arrives on the open stream.
    let mut follow = watcher(&c.addr, &["logs", "-f", "talker"]);
    follow.expect("line-1", |l| l == "line-1");
    follow.expect("late", |l| l == "late");
    assert_eq!(follow.seen, ["line-1", "line-2", "line-3", "late"]);
    drop(follow);

    let all = c.ctl(&["logs", "talker"]).ok();
    assert_eq!(all, "line-1\nline-2\nline-3\nlate\n");
    assert_eq!(
        c.ctl(&["logs", "--tail", "2", "pod/talker"]).ok(),
        "line-3\nlate\n"
    );
    let ts = c
        .ctl(&["logs", "--timestamps", "--tail", "1", "talker"])
        .ok();
    let (stamp, line) = ts.trim_end().split_once(' ').unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(stamp).is_ok(), "{ts}");
    assert_eq!(line, "late");
    assert_eq!(c.ctl(&["logs", "--since", "1h", "talker"]).ok(), all);
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    assert_eq!(c.ctl(&["logs", "--since-time", &future, "talker"]).ok(), "");
    let e = c.ctl(&["logs", "-c", "nope", "talker"]).err();
    assert!(e.contains("nope"), "{e}");

    // Exec: streams apart, the remote exit code becomes ours, stdin is forwarded and closed.
    let run = c.ctl(&[
        "exec",
        "talker",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]);
    assert_eq!(
        (run.code, run.stdout.as_str(), run.stderr.as_str()),
        (7, "out\n", "err\n")
    );
    let run = c.ctl_stdin(
        &["exec", "-i", "talker", "--", "sh", "-c", "cat; echo done"],
        "hello\nworld\n",
    );
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "hello\nworld\ndone\n"),
        "{run:?}"
    );
    let started = std::time::Instant::now();
    for _ in 0..5 {
        assert_eq!(c.ctl(&["exec", "talker", "--", "true"]).code, 0);
    }
    eprintln!(
        "exec -- true through controller and agent: {:?} per shoalctl run (mean of 5)",
        started.elapsed() / 5
    );
    let started = std::time::Instant::now();
    c.ctl(&["logs", "talker"]).ok();
    eprintln!("logs (4 lines): {:?}", started.elapsed());
    // -t without a terminal on stdin: a note, then a plain session.
    let run = c.ctl(&["exec", "-t", "talker", "--", "echo", "hi"]);
    assert_eq!((run.code, run.stdout.as_str()), (0, "hi\n"), "{run:?}");
    assert!(run.stderr.contains("Unable to use a TTY"), "{run:?}");
    // -t on a real terminal (a pty from util-linux `script`): the remote side has a TTY,
    // the exit code comes back, and the local terminal settings are restored afterwards.
    let inner = format!(
        "stty -g; {} --server {} exec -t talker -- sh -c 'test -t 1 && echo remote-tty; exit 3'; echo rc=$?; stty -g",
        shoalctl_bin().display(),
        c.addr
    );
    let out = Command::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .env("SHOAL_CONFIG", crate::harness::conf_for(&c.addr))
        .stdin(Stdio::null())
        .output()
        .expect("run util-linux script");
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 4, "{text:?}");
    assert_eq!(&lines[1..3], ["remote-tty", "rc=3"], "{text:?}");
    assert_eq!(
        lines[0], lines[3],
        "terminal settings not restored: {text:?}"
    );
    let e = c.ctl(&["exec", "nope", "--", "true"]).err();
    assert_eq!(e, "error: pod \"nope\" not found in namespace \"default\"");

    // Top: the agent reports the container and the node.
    eventually("top pods", Duration::from_secs(30), || {
        let run = c.ctl(&["top", "pods"]);
        let row = run.stdout.lines().find(|l| l.starts_with("talker "));
        match row {
            Some(r)
                if r.split_whitespace()
                    .nth(2)
                    .is_some_and(|m| m.ends_with("Mi")) =>
            {
                Ok(())
            }
            _ => Err(format!("{run:?}")),
        }
    });
    let top = c.ctl(&["top", "nodes"]).ok();
    let row: Vec<&str> = top
        .lines()
        .find(|l| l.starts_with(&node))
        .unwrap_or_else(|| panic!("{top}"))
        .split_whitespace()
        .collect();
    assert!(row[1].ends_with('m') && row[2].ends_with('%'), "{top}");
    assert!(row[3].ends_with("Mi") && row[4].ends_with('%'), "{top}");
    let all_ns = c.ctl(&["top", "pods", "-A"]).ok();
    assert!(all_ns.starts_with("NAMESPACE "), "{all_ns}");
    c.ctl(&["delete", "pod", "talker"]).ok();
}

/// A user pushes with skopeo into the built-in registry (a registry token, TLS with the
/// cluster CA) and a pod names the image as `HOST:PORT/default/hello:1`: the agent gets
/// it from the cluster and runs it.
#[test]
#[ignore = "requires root: a real agent runs containers (namespaces, cgroups, overlay mounts)"]
fn a_pod_runs_an_image_pushed_into_the_built_in_registry() {
    let c = Controller::start();
    let tarball = c.dir.path().join("busybox.tar");
    shoal_runtime::testimage::busybox_docker_save(
        std::path::Path::new(shoal_runtime::testimage::BUSYBOX),
        &tarball,
        "hello:1",
    )
    .expect("build the busybox image tarball (needs Debian's busybox-static)");
    let out = c
        .ctl(&[
            "token", "create", "--usage", "registry", "--user", "ci", "--role", "edit",
        ])
        .ok();
    let token = out
        .lines()
        .find_map(|l| l.strip_prefix("token:"))
        .map(|t| t.trim().to_string())
        .unwrap_or_else(|| panic!("no token in `token create` output: {out}"));
    let certs = c.dir.path().join("certs");
    std::fs::create_dir_all(&certs).expect("mkdir");
    std::fs::copy(c.data_dir().join("pki/ca.crt"), certs.join("ca.crt")).expect("copy the CA");
    let registry = c.registry_addr();
    let image = format!("{registry}/default/hello:1");
    let push = Command::new("skopeo")
        .args(["copy", "--dest-cert-dir"])
        .arg(&certs)
        .args(["--dest-creds", &format!("ci:{token}")])
        .arg(format!("docker-archive:{}", tarball.display()))
        .arg(format!("docker://{image}"))
        .output()
        .expect("run skopeo (Debian's skopeo)");
    assert!(
        push.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&push.stderr)
    );

    let node = format!("ctl-reg-{}", std::process::id());
    let mut agent = Agent::start(&c, &node);
    let pod = json!({
        "apiVersion": "shoal/v1", "kind": "Pod",
        "metadata": {"name": "pushed"},
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": image,
                "command": ["sh", "-c", "echo ran-the-pushed-image"]}]
        }
    });
    let f = c.write("pushed.json", &pod.to_string());
    c.ctl(&["create", "-f", f.to_str().unwrap()]).ok();
    eventually("the pod succeeded", Duration::from_secs(60), || {
        let out = c.ctl(&["get", "pod/pushed", "-o", "json"]).ok();
        let v: Value = serde_json::from_str(&out).unwrap();
        if v["status"]["phase"] == "Succeeded" {
            Ok(())
        } else {
            Err(format!("{}; agent: {}", v["status"], agent.log_tail()))
        }
    });
    assert_eq!(c.ctl(&["logs", "pushed"]).ok(), "ran-the-pushed-image\n");
}

/// `logs deploy/NAME`, `logs -l SELECTOR --all-containers` (prefixed lines) and
/// `--prefix=false`, through a real agent.
#[test]
#[ignore = "requires root: a real agent runs containers (namespaces, cgroups, overlay mounts)"]
fn logs_of_a_deployment_and_of_a_selector() {
    let c = Controller::start();
    let tarball = c.dir.path().join("busybox.tar");
    shoal_runtime::testimage::busybox_docker_save(
        std::path::Path::new(shoal_runtime::testimage::BUSYBOX),
        &tarball,
        "busybox:latest",
    )
    .expect("build the busybox image tarball (needs Debian's busybox-static)");
    c.ctl(&["image", "import", tarball.to_str().unwrap()]).ok();
    let node = format!("ctl-logs-{}", std::process::id());
    let mut agent = Agent::start(&c, &node);
    let container = |name: &str| {
        json!({"name": name, "image": "busybox:latest",
            "command": ["sh", "-c", format!("echo from-{name}-$(hostname); exec sleep 1000")],
            "resources": {"requests": {"cpu": "10m", "memory": "8Mi"}}})
    };
    let deploy = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "chatty"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "chatty"}},
            "template": {
                "metadata": {"labels": {"app": "chatty"}},
                "spec": {"terminationGracePeriodSeconds": 1,
                         "containers": [container("a"), container("b")]}
            }
        }
    });
    let f = c.write("chatty.json", &deploy.to_string());
    c.ctl(&["create", "-f", f.to_str().unwrap()]).ok();
    let mut pods = Vec::new();
    eventually("two chatty pods logging", Duration::from_secs(90), || {
        let out = c
            .ctl(&["get", "pods", "-l", "app=chatty", "-o", "json"])
            .ok();
        let v: Value = serde_json::from_str(&out).unwrap();
        let items = v["items"].as_array().cloned().unwrap_or_default();
        let running: Vec<String> = items
            .iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        if running.len() == 2
            && running.iter().all(|p| {
                c.ctl(&["logs", p.as_str(), "-c", "b"])
                    .ok()
                    .starts_with("from-b")
            })
        {
            pods = running;
            Ok(())
        } else {
            Err(format!("{running:?}; agent: {}", agent.log_tail()))
        }
    });

    // deploy/NAME: one of its pods, the first container, no prefix.
    let run = c.ctl(&["logs", "deploy/chatty"]);
    assert!(
        run.stderr.contains("Found 2 pods, using pod/"),
        "{}",
        run.stderr
    );
    let out = run.ok();
    assert!(
        out.starts_with("from-a-") && out.lines().count() == 1,
        "{out}"
    );

    // -l with every container: four lines, each prefixed with its source.
    let out = c
        .ctl(&["logs", "-l", "app=chatty", "--all-containers"])
        .ok();
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    let mut want: Vec<String> = Vec::new();
    for p in &pods {
        for ct in ["a", "b"] {
            want.push(format!("[pod/{p}/{ct}] from-{ct}-{p}"));
        }
    }
    want.sort();
    assert_eq!(lines, want, "{out}");
    let out = c
        .ctl(&["logs", "-l", "app=chatty", "-c", "b", "--prefix=false"])
        .ok();
    assert!(out.lines().all(|l| l.starts_with("from-b-")), "{out}");
    let e = c.ctl(&["logs", "deploy/nosuch"]).err();
    assert!(e.contains("nosuch"), "{e}");
}
