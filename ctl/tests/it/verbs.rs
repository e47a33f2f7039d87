//! `cp`, `port-forward` and `run` through a real controller and a real `shoal-agent`
//! running real busybox containers (root).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::agent::Agent;
use crate::harness::{Controller, eventually, watcher};

/// A controller with the busybox image imported. Callers start the agent after it, so the
/// agent is dropped (killed, cleaned up) before the controller's directory goes.
fn controller() -> Controller {
    let c = Controller::start();
    let tarball = c.dir.path().join("busybox.tar");
    shoal_runtime::testimage::busybox_docker_save(
        Path::new(shoal_runtime::testimage::BUSYBOX),
        &tarball,
        "busybox:latest",
    )
    .expect("build the busybox image tarball (needs Debian's busybox-static)");
    c.ctl(&["image", "import", tarball.to_str().unwrap()]).ok();
    c
}

/// Creates `pod` and waits until it runs.
fn create_running(c: &Controller, agent: &mut Agent, pod: &Value) {
    let name = pod["metadata"]["name"].as_str().unwrap().to_string();
    let f = c.write(&format!("{name}.json"), &pod.to_string());
    c.ctl(&["create", "-f", f.to_str().unwrap()]).ok();
    eventually(
        &format!("pod {name} running"),
        Duration::from_secs(60),
        || {
            let out = c.ctl(&["get", &format!("pod/{name}"), "-o", "json"]).ok();
            let v: Value = serde_json::from_str(&out).unwrap();
            if v["status"]["phase"] == "Running" {
                Ok(())
            } else {
                Err(format!("{}; agent: {}", v["status"], agent.log_tail()))
            }
        },
    );
}

/// 100 KiB of varied bytes (more than one 32 KiB message).
fn payload() -> Vec<u8> {
    (0u32..100 * 1024)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

#[test]
#[ignore = "requires root: a real agent runs containers (namespaces, cgroups, overlay mounts)"]
fn cp_both_ways_files_and_directories() {
    let c = controller();
    let node = format!("ctl-cp-{}", std::process::id());
    let mut agent = Agent::start(&c, &node);
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "files"},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "main", "image": "busybox:latest",
                "command": ["sleep", "1000"]}]}
    });
    create_running(&c, &mut agent, &pod);
    let local = c.dir.path().join("local");
    std::fs::create_dir_all(local.join("tree/sub")).unwrap();
    let data = payload();
    std::fs::write(local.join("big.bin"), &data).unwrap();
    std::fs::write(local.join("tree/a.txt"), "alpha\n").unwrap();
    std::fs::write(local.join("tree/sub/b.txt"), "beta\n").unwrap();
    let path = |p: &str| local.join(p).to_str().unwrap().to_string();

    // Up: a file under a new name, a directory under a new name, a file into a directory.
    let started = std::time::Instant::now();
    c.ctl(&["cp", &path("big.bin"), "files:/tmp/up.bin"]).ok();
    eprintln!("cp of 100 KiB to a pod: {:?}", started.elapsed());
    let sum = |p: &str| c.ctl(&["exec", "files", "--", "md5sum", p]).ok();
    let local_md5 = std::process::Command::new("md5sum")
        .arg(local.join("big.bin"))
        .output()
        .unwrap();
    let local_md5 = String::from_utf8_lossy(&local_md5.stdout).to_string();
    assert_eq!(
        sum("/tmp/up.bin").split_whitespace().next(),
        local_md5.split_whitespace().next()
    );
    c.ctl(&["cp", "-c", "main", &path("tree"), "files:/tmp/uptree"])
        .ok();
    assert_eq!(
        c.ctl(&[
            "exec",
            "files",
            "--",
            "cat",
            "/tmp/uptree/a.txt",
            "/tmp/uptree/sub/b.txt"
        ])
        .ok(),
        "alpha\nbeta\n"
    );
    c.ctl(&["cp", &path("tree/a.txt"), "default/files:/tmp/uptree/sub"])
        .ok();
    assert_eq!(
        c.ctl(&["exec", "files", "--", "cat", "/tmp/uptree/sub/a.txt"])
            .ok(),
        "alpha\n"
    );

    // Down: the file and the directory back, compared byte for byte.
    let started = std::time::Instant::now();
    c.ctl(&["cp", "files:/tmp/up.bin", &path("down.bin")]).ok();
    eprintln!("cp of 100 KiB from a pod: {:?}", started.elapsed());
    assert_eq!(std::fs::read(local.join("down.bin")).unwrap(), data);
    c.ctl(&["cp", "files:/tmp/uptree", &path("downtree")]).ok();
    assert_eq!(
        std::fs::read_to_string(local.join("downtree/a.txt")).unwrap(),
        "alpha\n"
    );
    assert_eq!(
        std::fs::read_to_string(local.join("downtree/sub/b.txt")).unwrap(),
        "beta\n"
    );
    assert_eq!(
        std::fs::read_to_string(local.join("downtree/sub/a.txt")).unwrap(),
        "alpha\n"
    );
    // Into an existing local directory: under the source's name.
    c.ctl(&["cp", "files:/etc/passwd", &path("tree")]).ok();
    assert_eq!(
        std::fs::read_to_string(local.join("tree/passwd")).unwrap(),
        c.ctl(&["exec", "files", "--", "cat", "/etc/passwd"]).ok()
    );

    // A missing remote path: tar's message, naming the path; nothing written here.
    let e = c.ctl(&["cp", "files:/no/such", &path("nothing")]).err();
    assert!(
        e.contains("pod/files:/no/such") && e.contains("/no/such"),
        "{e}"
    );
    assert!(e.contains("exit code"), "{e}");
    assert!(!local.join("nothing").exists());
    let e = c.ctl(&["cp", &path("missing.txt"), "files:/tmp/x"]).err();
    assert!(e.contains("missing.txt"), "{e}");

    // An image without tar.
    c.ctl(&["exec", "files", "--", "rm", "/bin/tar"]).ok();
    let e = c.ctl(&["cp", "files:/etc/passwd", &path("p2")]).err();
    assert!(e.contains("needs `tar` in the container"), "{e}");
    c.ctl(&["delete", "pod", "files"]).ok();
}

/// One HTTP/1.0 GET on an open connection; returns the whole answer.
fn http_get(mut s: TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
#[ignore = "requires root: a real agent runs containers (namespaces, cgroups, overlay mounts)"]
fn port_forward_to_a_pod_and_a_service() {
    let c = controller();
    let node = format!("ctl-pf-{}", std::process::id());
    let mut agent = Agent::start(&c, &node);
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "httpd", "image": "busybox:latest",
                "ports": [{"name": "http", "containerPort": 8080}],
                "command": ["sh", "-c",
                    "mkdir -p /www && echo hello-through-the-tunnel > /www/index.html && exec httpd -f -p 8080 -h /www"]}]}
    });
    create_running(&c, &mut agent, &pod);
    let svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}
    });
    let f = c.write("svc.json", &svc.to_string());
    c.ctl(&["create", "-f", f.to_str().unwrap()]).ok();

    // The service's port 80 leads to the pod's port named http (8080), printed as kubectl does.
    for (target, ports, remote) in [("web", ":8080", "8080"), ("svc/web", ":80", "8080")] {
        let mut pf = watcher(&c.addr, &["port-forward", target, ports]);
        let line = pf.expect("Forwarding from", |l| l.starts_with("Forwarding from"));
        let port: u16 = line
            .strip_prefix("Forwarding from 127.0.0.1:")
            .and_then(|r| r.strip_suffix(&format!(" -> {remote}")))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        // httpd may need a moment to listen after the container started.
        eventually("httpd answers", Duration::from_secs(20), || {
            let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
            let r = http_get(s);
            if r.contains("hello-through-the-tunnel") {
                Ok(())
            } else {
                Err(format!("{r:?}; {}", pf.report()))
            }
        });
        let started = std::time::Instant::now();
        http_get(TcpStream::connect(("127.0.0.1", port)).unwrap());
        eprintln!(
            "one HTTP GET through port-forward {target}: {:?}",
            started.elapsed()
        );
        // Two connections open at once, each its own stream.
        let a = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let b = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (ra, rb) = (http_get(b), http_get(a));
        for r in [ra, rb] {
            assert!(r.starts_with("HTTP/1.") && r.contains(" 200 "), "{r}");
            assert!(r.ends_with("hello-through-the-tunnel\n"), "{r}");
        }
        // A port nothing listens on: this connection closes, the forward goes on.
        drop(pf);
    }
    let mut pf = watcher(&c.addr, &["port-forward", "pod/web", ":9"]);
    let line = pf.expect("Forwarding from", |l| l.starts_with("Forwarding from"));
    let port: u16 = line
        .strip_prefix("Forwarding from 127.0.0.1:")
        .and_then(|r| r.strip_suffix(" -> 9"))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(buf.is_empty());
    eventually("the refusal reported", Duration::from_secs(10), || {
        let e = pf.stderr();
        if e.contains("port 9 of the pod does not accept connections") {
            Ok(())
        } else {
            Err(e)
        }
    });
    assert!(pf.try_status().is_none(), "{}", pf.report());
    drop(pf);
    let e = c.ctl(&["port-forward", "nope", "80"]).err();
    assert!(e.contains("pod \"nope\" not found"), "{e}");
    c.ctl(&["delete", "pod", "web"]).ok();
}

#[test]
#[ignore = "requires root: a real agent runs containers (namespaces, cgroups, overlay mounts)"]
fn run_creates_a_pod_and_attaches_to_its_output() {
    let c = controller();
    let _node = format!("ctl-run-{}", std::process::id());
    let mut agent = Agent::start(&c, &_node);
    // --rm --attach: the output comes back, then the pod is deleted.
    let started = std::time::Instant::now();
    let run = c.ctl(&[
        "run",
        "hello",
        "--image",
        "busybox:latest",
        "--restart",
        "Never",
        "--rm",
        "--attach",
        "--command",
        "--",
        "sh",
        "-c",
        "echo hello-from-run; echo second",
    ]);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "hello-from-run\nsecond\npod \"hello\" deleted\n"),
        "{run:?}; agent: {}",
        agent.log_tail()
    );
    eprintln!(
        "run --rm --attach (create, start, log, delete): {:?}",
        started.elapsed()
    );
    let e = c.ctl(&["get", "pod", "hello"]).err();
    assert!(e.contains("not found"), "{e}");
    // The container's exit code becomes shoalctl's.
    let run = c.ctl(&[
        "run",
        "fails",
        "--image",
        "busybox:latest",
        "--restart",
        "Never",
        "--rm",
        "--attach",
        "--command",
        "--",
        "sh",
        "-c",
        "echo bye; exit 3",
    ]);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (3, "bye\npod \"fails\" deleted\n"),
        "{run:?}"
    );
    // Without --attach: created, labelled run=NAME, runs to its end.
    let out = c
        .ctl(&[
            "run",
            "plain",
            "--image",
            "busybox:latest",
            "--restart",
            "Never",
            "--env",
            "GREETING=hi",
            "--command",
            "--",
            "sh",
            "-c",
            "echo $GREETING",
        ])
        .ok();
    assert_eq!(out, "pod/plain created\n");
    eventually("pod plain succeeded", Duration::from_secs(60), || {
        let out = c.ctl(&["get", "pod/plain", "-o", "json"]).ok();
        let v: Value = serde_json::from_str(&out).unwrap();
        if v["status"]["phase"] == "Succeeded" && v["metadata"]["labels"]["run"] == "plain" {
            Ok(())
        } else {
            Err(format!("{v}"))
        }
    });
    assert_eq!(c.ctl(&["logs", "plain"]).ok(), "hi\n");
    let e = c.ctl(&["run", "x", "--image", "busybox", "--rm"]).err();
    assert!(e.contains("--rm should only be used"), "{e}");
    c.ctl(&["delete", "pod", "plain"]).ok();

    // -i: the main process gets stdin; its end closes it (stdinOnce), cat ends, exit 0.
    let run = c.ctl_stdin(
        &[
            "run",
            "echoer",
            "-i",
            "--rm",
            "--restart",
            "Never",
            "--image",
            "busybox:latest",
            "--command",
            "--",
            "cat",
        ],
        "hello\nworld\n",
    );
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "hello\nworld\npod \"echoer\" deleted\n"),
        "{run:?}; agent: {}",
        agent.log_tail()
    );
}

#[test]
#[ignore = "requires root: a real agent runs containers (namespaces, cgroups, overlay mounts)"]
fn attach_to_the_stdin_of_a_running_container() {
    let c = controller();
    let node = format!("ctl-attach-{}", std::process::id());
    let mut agent = Agent::start(&c, &node);
    let pod = |name: &str, tty: bool, script: &str| {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name},
            "spec": {"nodeName": node, "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "main", "image": "busybox:latest", "stdin": true,
                    "tty": tty, "command": ["sh", "-c", script]}]}
        })
    };
    // A pipe: each line written comes back, the end of input ends the loop and the
    // container, whose exit code (4) becomes shoalctl's.
    create_running(
        &c,
        &mut agent,
        &pod(
            "reader",
            false,
            "while read l; do echo got-$l; done; echo bye; exit 4",
        ),
    );
    let run = c.ctl_stdin(&["attach", "-i", "reader"], "one\ntwo\n");
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (4, "got-one\ngot-two\nbye\n"),
        "{run:?}; agent: {}",
        agent.log_tail()
    );
    // A TTY: the process sees a terminal; input is echoed by the pty.
    create_running(
        &c,
        &mut agent,
        &pod(
            "term",
            true,
            "read l; echo got-$l; test -t 0 && echo on-a-tty",
        ),
    );
    let run = c.ctl_stdin(&["attach", "-i", "term"], "x\n");
    let out = run.stdout.replace('\r', "");
    assert_eq!(run.code, 0, "{run:?}");
    assert!(out.contains("got-x\non-a-tty\n"), "{run:?}");
    // run -it on a real terminal (a pty from util-linux `script`): raw mode here, the pty
    // there, the exit code back and the local terminal settings restored.
    let inner = format!(
        "stty -g; {} --server {} run -it --rm --restart Never --image busybox:latest tt --command -- sh -c 'until [ x$x = xgo ]; do read x; done; test -t 0 && echo remote-tty-$x; exit 3'; echo rc=$?; stty -g",
        crate::harness::shoalctl_bin().display(),
        c.addr
    );
    let mut out = std::process::Command::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .env("SHOAL_CONFIG", crate::harness::conf_for(&c.addr))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run util-linux script");
    // `go` typed until the remote side has it (lines typed before the session opened are
    // echoed by the local terminal and not sent; the remote loop waits for one that is).
    let mut input = out.stdin.take().unwrap();
    let typist = std::thread::spawn(move || {
        for _ in 0..100 {
            if input.write_all(b"go\r").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let out = out.wait_with_output().unwrap();
    let _ = typist.join();
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    let at = |want: &str| lines.iter().position(|l| *l == want);
    let (tty, deleted, rc) = (at("remote-tty-go"), at("pod \"tt\" deleted"), at("rc=3"));
    assert!(tty.is_some() && tty < deleted && deleted < rc, "{text:?}");
    // `stty -g` before and after (the lines of colon-separated settings).
    let stty: Vec<&&str> = lines
        .iter()
        .filter(|l| l.matches(':').count() > 10)
        .collect();
    assert_eq!(stty.len(), 2, "{text:?}");
    assert_eq!(stty[0], stty[1], "terminal settings not restored: {text:?}");
    // Not a container with stdin.
    let e = c.ctl(&["attach", "-i", "nope"]).err();
    assert!(e.contains("pod \"nope\" not found"), "{e}");
}
