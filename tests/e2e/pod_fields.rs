//! The pod fields real applications use, on a real cluster (1 controller + 1 agent):
//! `securityContext` (user, groups, fsGroup, read-only root, runAsNonRoot), lifecycle
//! hooks (postStart; preStop before SIGTERM) and probes (httpGet with headers,
//! startupProbe gating liveness).

use std::time::Duration;

use serde_json::Value;

use crate::harness::{NetnsCluster, eventually, phase};

const SECURE: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: secure}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {runAsUser: 1000, runAsGroup: 3000, fsGroup: 2000, supplementalGroups: [4000]}
  volumes: [{name: data, emptyDir: {}}]
  containers:
  - name: app
    image: busybox:latest
    command: ["sh", "-c", "exec sleep 3600"]
    volumeMounts: [{name: data, mountPath: /data}]
    securityContext: {readOnlyRootFilesystem: true, allowPrivilegeEscalation: false}
---
apiVersion: v1
kind: Pod
metadata: {name: rootless}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {runAsNonRoot: true}
  containers:
  - name: app
    image: busybox:latest
    command: ["sh", "-c", "exec sleep 3600"]
---
apiVersion: v1
kind: Pod
metadata: {name: privileged}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: busybox:latest
    command: ["sh", "-c", "exec sleep 3600"]
    securityContext: {privileged: true}
"#;

/// The first container status of pod `name`.
fn container(c: &NetnsCluster, name: &str) -> Result<Value, String> {
    let p = c.json(&["get", "pod", name])?;
    Ok(p.pointer("/status/containerStatuses/0")
        .cloned()
        .unwrap_or(Value::Null))
}

/// `shoalctl exec POD -- sh -c SCRIPT`: (success, stdout + stderr).
fn sh(c: &NetnsCluster, pod: &str, script: &str) -> (bool, String) {
    let out = c.ctl(&["exec", pod, "--", "sh", "-c", script]);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn wait_running(c: &NetnsCluster, pod: &str) {
    eventually(&format!("{pod} Running"), Duration::from_secs(120), || {
        let p = c.json(&["get", "pod", pod])?;
        if phase(&p) == "Running" {
            Ok(())
        } else {
            Err(format!("{:?}", p.get("status")))
        }
    });
}

#[test]
#[ignore = "requires root: network namespaces, containers, cgroups"]
fn security_context_user_groups_read_only_root_and_run_as_non_root() {
    let c = NetnsCluster::up("e2epf", 1, 1, &[]);
    c.ctl_ok(&["image", "import", c.image_tar.to_str().expect("path")]);
    let out = c.apply(SECURE);
    assert!(out.status.success(), "apply: {out:?}");
    wait_running(&c, "secure");

    let (ok, uid) = sh(&c, "secure", "id -u; id -g; id -G");
    assert!(ok, "{uid}");
    let lines: Vec<&str> = uid.lines().collect();
    assert_eq!(lines[..2], ["1000", "3000"], "{uid}");
    let groups: Vec<&str> = lines[2].split_whitespace().collect();
    for g in ["2000", "4000"] {
        assert!(groups.contains(&g), "group {g} missing from `id -G`: {uid}");
    }

    // The root file system is read-only; the emptyDir volume is writable, owned by the
    // fsGroup and setgid, so a new file gets the group.
    let (ok, out) = sh(&c, "secure", "touch /rootfs-write");
    assert!(!ok, "writing to / must fail: {out}");
    assert!(out.contains("Read-only file system"), "{out}");
    let (ok, out) = sh(
        &c,
        "secure",
        "echo hi > /data/f && stat -c '%g %A' /data && stat -c %g /data/f",
    );
    assert!(ok, "{out}");
    assert_eq!(out, "2000 drwxrwsrwx\n2000\n", "{out}");
    // The process really runs with no_new_privs.
    let (ok, out) = sh(&c, "secure", "grep NoNewPrivs /proc/self/status");
    assert!(ok && out.contains('1'), "{out}");

    // runAsNonRoot with the busybox image (no user: root) is refused with the kubelet's
    // reason and a message saying why; it never runs.
    let st = eventually(
        "rootless refused with CreateContainerConfigError",
        Duration::from_secs(60),
        || {
            let st = container(&c, "rootless")?;
            let w = st.pointer("/state/waiting").cloned().unwrap_or_default();
            if w["reason"] == "CreateContainerConfigError" {
                Ok(w)
            } else {
                Err(format!("{st}"))
            }
        },
    );
    let msg = st["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("runAsNonRoot") && msg.contains("root"),
        "{msg}"
    );
    let p = c.json(&["get", "pod", "rootless"]).expect("pod");
    assert_eq!(phase(&p), "Pending", "{p}");

    // privileged (applied by the admin): every capability, no filter, no no_new_privs,
    // the host's devices and a writable /sys — for exec too.
    wait_running(&c, "privileged");
    let (ok, out) = sh(
        &c,
        "privileged",
        "grep -E '^(CapEff|Seccomp|NoNewPrivs):' /proc/self/status; test -c /dev/net/tun && echo tun; \
         grep -q ' /sys sysfs rw' /proc/mounts && echo sys-rw",
    );
    assert!(ok, "{out}");
    // Every capability the agent holds: the bounding set of this test process, which
    // started it (all of them on an ordinary host).
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let all = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:\t"))
        .expect("CapBnd")
        .trim()
        .to_string();
    for want in [
        format!("CapEff:\t{all}"),
        "Seccomp:\t0".into(),
        "NoNewPrivs:\t0".into(),
        "tun".into(),
        "sys-rw".into(),
    ] {
        assert!(out.lines().any(|l| l == want), "{want:?} missing: {out}");
    }
}

/// A pod whose container logs its start and its SIGTERM into a hostPath directory, with
/// a postStart hook that leaves a file there and a preStop hook that appends its own
/// line: the file's order is what happened.
fn hooks_pod(dir: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: hooks}}
spec:
  terminationGracePeriodSeconds: 20
  volumes: [{{name: out, hostPath: {{path: {dir}}}}}]
  containers:
  - name: app
    image: busybox:latest
    command: ["sh", "-c", "trap 'echo sigterm >> /out/log; exit 0' TERM; echo started >> /out/log; while true; do sleep 1; done"]
    volumeMounts: [{{name: out, mountPath: /out}}]
    lifecycle:
      postStart: {{exec: {{command: ["sh", "-c", "echo poststart > /out/poststart"]}}}}
      preStop: {{exec: {{command: ["sh", "-c", "echo prestop >> /out/log; sleep 2; echo prestop-done >> /out/log"]}}}}
"#
    )
}

#[test]
#[ignore = "requires root: network namespaces, containers, cgroups"]
fn lifecycle_hooks_post_start_runs_and_pre_stop_runs_before_sigterm() {
    let c = NetnsCluster::up("e2ehook", 1, 1, &[]);
    c.ctl_ok(&["image", "import", c.image_tar.to_str().expect("path")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("path").to_string();
    let out = c.apply(&hooks_pod(&d));
    assert!(out.status.success(), "apply: {out:?}");
    wait_running(&c, "hooks");
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
    eventually(
        "the postStart hook's file",
        Duration::from_secs(60),
        || match read("poststart").as_str() {
            "poststart\n" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    c.ctl_ok(&["delete", "pod", "hooks"]);
    let log = eventually(
        "the container's TERM line after the hook's",
        Duration::from_secs(90),
        || {
            let log = read("log");
            if log.contains("sigterm") {
                Ok(log)
            } else {
                Err(format!("{log:?}"))
            }
        },
    );
    // The hook ran (both its lines, with its 2-second pause) before SIGTERM reached the
    // container.
    assert_eq!(log, "started\nprestop\nprestop-done\nsigterm\n", "{log}");
}

/// A server (busybox `nc -ll -e`) that logs every request header and answers 200 only to
/// a request with `X-Probe: shoal`, probed with that header; and a container that
/// becomes healthy only after 8 seconds, whose liveness probe (one failure restarts it)
/// is held back by a startupProbe.
const PROBES: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: probes}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: busybox:latest
    command: ["sh", "-c"]
    args:
    - |
      cat > /tmp/h.sh <<'EOF'
      #!/bin/sh
      code=500
      while read -r l; do
        l=$(echo "$l" | tr -d '\r')
        [ -z "$l" ] && break
        echo "$l" >> /tmp/requests
        case "$l" in "X-Probe: shoal") code=200;; esac
      done
      printf 'HTTP/1.0 %s X\r\n\r\n' "$code"
      EOF
      chmod +x /tmp/h.sh
      exec nc -ll -p 8080 -e /tmp/h.sh
    livenessProbe:
      httpGet:
        path: /healthz
        port: 8080
        httpHeaders: [{name: X-Probe, value: shoal}]
      initialDelaySeconds: 2
      periodSeconds: 1
      failureThreshold: 2
    readinessProbe:
      httpGet: {path: /ready, port: 8080, httpHeaders: [{name: X-Probe, value: shoal}]}
      periodSeconds: 1
  - name: slow
    image: busybox:latest
    command: ["sh", "-c", "sleep 8; touch /tmp/started; exec sleep 3600"]
    startupProbe:
      exec: {command: ["test", "-f", "/tmp/started"]}
      periodSeconds: 1
      failureThreshold: 60
    livenessProbe:
      exec: {command: ["test", "-f", "/tmp/started"]}
      periodSeconds: 1
      failureThreshold: 1
"#;

#[test]
#[ignore = "requires root: network namespaces, containers, cgroups"]
fn http_probe_headers_and_startup_probe_gating_liveness() {
    let c = NetnsCluster::up("e2eprobe", 1, 1, &[]);
    c.ctl_ok(&["image", "import", c.image_tar.to_str().expect("path")]);
    let out = c.apply(PROBES);
    assert!(out.status.success(), "apply: {out:?}");
    // Ready needs both: the web readiness probe (which passes only with the header) and
    // the slow container's startup probe (which passes after about 8 seconds).
    let p = eventually("probes Ready", Duration::from_secs(120), || {
        let p = c.json(&["get", "pod", "probes"])?;
        if crate::harness::is_ready(&p) {
            Ok(p)
        } else {
            Err(format!("{:?}", p.get("status")))
        }
    });
    let restarts: Vec<i64> = p
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|s| s["restartCount"].as_i64().unwrap_or(-1))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        restarts,
        [0, 0],
        "no restart: the liveness probes got the header and waited for startup: {p}"
    );
    let out = c.ctl_ok(&["exec", "probes", "-c", "web", "--", "cat", "/tmp/requests"]);
    for want in [
        "GET /healthz HTTP/1.0",
        "GET /ready HTTP/1.0",
        "X-Probe: shoal",
        "Host: 127.0.0.1:8080",
    ] {
        assert!(out.contains(want), "{want:?} not in the requests:\n{out}");
    }
    let p = c.json(&["get", "pod", "probes"]).expect("pod");
    let slow = p
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|s| s["name"] == "slow").cloned())
        .unwrap_or_default();
    assert_eq!(slow["restartCount"].as_i64(), Some(0), "{slow}");
}
