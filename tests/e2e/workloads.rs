//! Cluster workloads on 3 controllers + 3 agents: scheduling and spreading,
//! restarts and failures, logs/exec through any controller, agent restart,
//! node loss, rolling update with a leader kill, bad input.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{NetnsCluster, container0, eventually, is_ready, name_of, node_of, phase};

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: spread}
spec:
  replicas: 6
  selector: {matchLabels: {app: spread}}
  template:
    metadata: {labels: {app: spread}}
    spec:
      containers:
      - name: app
        image: busybox:latest
        command: ["sh", "-c", "echo started; sleep 3600"]
        resources: {requests: {cpu: 10m, memory: 8Mi}}
"#;

/// The node's last heartbeat time as the agent wrote it ("" if none).
fn heartbeat(c: &NetnsCluster, node: &str) -> String {
    c.json(&["get", "node", node])
        .ok()
        .and_then(|n| {
            n.pointer("/status/heartbeatTime")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .unwrap_or_default()
}

fn running(pods: &[Value]) -> usize {
    pods.iter().filter(|p| phase(p) == "Running").count()
}

fn per_node(pods: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for p in pods {
        *m.entry(node_of(p).to_string()).or_insert(0) += 1;
    }
    m
}

#[test]
#[ignore = "requires root: network namespaces, containers, cgroups"]
fn scheduling_restarts_logs_exec_agent_restart_and_node_loss() {
    let c = NetnsCluster::up(
        "e2ework",
        3,
        3,
        &["--node-timeout", "4", "--eviction-delay", "3"],
    );
    eventually("3 Ready nodes", Duration::from_secs(30), || {
        let v = c.json(&["get", "nodes"])?;
        let ready = v["items"]
            .as_array()
            .map(|ns| {
                ns.iter()
                    .filter(|n| {
                        n.pointer("/status/conditions")
                            .and_then(Value::as_array)
                            .is_some_and(|cs| {
                                cs.iter()
                                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
                            })
                    })
                    .count()
            })
            .unwrap_or(0);
        if ready == 3 {
            Ok(())
        } else {
            Err(format!("{ready} ready: {v}"))
        }
    });
    c.ctl_ok(&["image", "import", c.image_tar.to_str().expect("path")]);

    // Bad input is rejected at apply and changes nothing.
    let bad = c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: greedy}\nspec:\n  containers:\n  - name: a\n    image: busybox:latest\n    resources: {requests: {cpu: lots}}\n",
    );
    assert!(!bad.status.success(), "cpu: lots was accepted");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("cpu"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(c.ctl(&["get", "pod", "greedy"]).status.code() != Some(0));

    // 6 replicas on 3 equal nodes spread 2/2/2 and run.
    let out = c.apply(WEB);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pods = eventually("6 running replicas", Duration::from_secs(60), || {
        let pods = c.pods("app=spread")?;
        if pods.len() == 6 && running(&pods) == 6 {
            Ok(pods)
        } else {
            Err(format!("{:?}", per_node(&pods)))
        }
    });
    let spread = per_node(&pods);
    assert_eq!(
        spread.values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2],
        "spread: {spread:?}"
    );

    // A nodeSelector pins; a pod too large stays Pending with the reason.
    c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: pinned}\nspec:\n  nodeSelector: {node: node2}\n  containers:\n  - {name: a, image: busybox:latest, command: [sleep, '3600']}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: huge}\nspec:\n  containers:\n  - name: a\n    image: busybox:latest\n    resources: {requests: {memory: 4000Gi}}\n",
    );
    eventually("pinned pod on node2", Duration::from_secs(30), || {
        let p = c.json(&["get", "pod", "pinned"])?;
        if node_of(&p) == "node2" && phase(&p) == "Running" {
            Ok(())
        } else {
            Err(p.to_string())
        }
    });
    eventually("huge pod explained", Duration::from_secs(20), || {
        let d = String::from_utf8_lossy(&c.ctl(&["describe", "pod", "huge"]).stdout).into_owned();
        if d.contains("0/3 nodes: 3 insufficient memory") {
            Ok(())
        } else {
            Err(d)
        }
    });
    assert_eq!(node_of(&c.json(&["get", "pod", "huge"]).expect("huge")), "");

    // A failing container restarts with back-off; Never leaves it Failed with its code.
    c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: crasher}\nspec:\n  containers:\n  - {name: a, image: busybox:latest, command: [sh, -c, 'exit 3']}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: once}\nspec:\n  restartPolicy: Never\n  containers:\n  - {name: a, image: busybox:latest, command: [sh, -c, 'exit 5']}\n",
    );
    eventually("crasher restarted twice", Duration::from_secs(60), || {
        let p = c.json(&["get", "pod", "crasher"])?;
        let n = container0(&p)["restartCount"].as_u64().unwrap_or(0);
        if n >= 2 {
            Ok(())
        } else {
            Err(p["status"].to_string())
        }
    });
    eventually(
        "once Failed with exit code 5",
        Duration::from_secs(30),
        || {
            let p = c.json(&["get", "pod", "once"])?;
            let code = container0(&p)
                .pointer("/state/terminated/exitCode")
                .and_then(Value::as_i64);
            if phase(&p) == "Failed" && code == Some(5) {
                Ok(())
            } else {
                Err(p["status"].to_string())
            }
        },
    );

    // An unknown image gives ImagePullBackOff with a clear message.
    c.apply("apiVersion: v1\nkind: Pod\nmetadata: {name: noimage}\nspec:\n  containers:\n  - {name: a, image: nosuch:1.0}\n");
    eventually("ImagePullBackOff", Duration::from_secs(30), || {
        let p = c.json(&["get", "pod", "noimage"])?;
        let w = container0(&p)
            .pointer("/state/waiting")
            .cloned()
            .unwrap_or(Value::Null);
        let msg = w["message"].as_str().unwrap_or("");
        if w["reason"] == "ImagePullBackOff" && msg.contains("nosuch") {
            Ok(())
        } else {
            Err(p["status"].to_string())
        }
    });

    // logs and exec work through every controller.
    let pod = name_of(&pods[0]).to_string();
    for ctrl in c.server.split(',') {
        let out = c.ctl_ok(&["--server", ctrl, "logs", &pod]);
        assert!(out.contains("started"), "logs through {ctrl}: {out:?}");
        let out = c.ctl(&[
            "--server",
            ctrl,
            "exec",
            &pod,
            "--",
            "sh",
            "-c",
            "echo hi; exit 7",
        ]);
        assert_eq!(
            out.status.code(),
            Some(7),
            "exec exit code through {ctrl}: {out:?}"
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("hi"));
    }

    // Killing the agent process leaves containers running; a new agent re-adopts them.
    let on_n1: Vec<Value> = c
        .pods("app=spread")
        .expect("pods")
        .into_iter()
        .filter(|p| node_of(p) == "node1")
        .collect();
    assert!(!on_n1.is_empty());
    // Same container instance afterwards: same start time, no restart counted.
    let before: BTreeMap<String, (u64, String)> = on_n1
        .iter()
        .map(|p| {
            let c0 = container0(p);
            let started = c0
                .pointer("/state/running/startedAt")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            (
                name_of(p).to_string(),
                (c0["restartCount"].as_u64().unwrap_or(0), started),
            )
        })
        .collect();
    let agent = c.main_pid("n1");
    // SAFETY: kill(2) of the agent process this test's cluster started.
    unsafe {
        libc::kill(agent, libc::SIGKILL);
    }
    eventually("the agent process to exit", Duration::from_secs(10), || {
        if std::path::Path::new(&format!("/proc/{agent}")).exists() {
            Err(format!("pid {agent} still exists"))
        } else {
            Ok(())
        }
    });
    let st = c.script(&["start", "n1"]);
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    // The new agent has heartbeated twice (so it has listed and synced its
    // pods) before the pods are checked.
    let mut seen = vec![heartbeat(&c, "node1")];
    eventually(
        "two heartbeats from the new agent",
        Duration::from_secs(30),
        || {
            let h = heartbeat(&c, "node1");
            if seen.last() != Some(&h) {
                seen.push(h);
            }
            if seen.len() >= 3 {
                Ok(())
            } else {
                Err(format!("heartbeats seen: {seen:?}"))
            }
        },
    );
    eventually(
        "re-adopted pods Running, same instance",
        Duration::from_secs(30),
        || {
            for (name, (n, started)) in &before {
                let p = c.json(&["get", "pod", name])?;
                let c0 = container0(&p);
                let now = c0["restartCount"].as_u64().unwrap_or(0);
                let s = c0
                    .pointer("/state/running/startedAt")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if phase(&p) != "Running" || now != *n || s != started {
                    return Err(format!("{name}: {}", p["status"]));
                }
            }
            Ok(())
        },
    );

    // Losing a whole node: NotReady within the timeout, its pods replaced elsewhere.
    let on_n3_before: std::collections::BTreeSet<String> = c
        .pods("app=spread")
        .expect("pods")
        .iter()
        .filter(|p| node_of(p) == "node3")
        .map(|p| name_of(p).to_string())
        .collect();
    let killed_at = Instant::now();
    assert!(c.script(&["kill", "n3"]).status.success());
    eventually("node3 NotReady", Duration::from_secs(15), || {
        let n = c.json(&["get", "node", "node3"])?;
        let ready = n
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c["type"] == "Ready")
                    .map(|c| c["status"].as_str().unwrap_or("").to_string())
            });
        if ready.as_deref() != Some("True") {
            Ok(())
        } else {
            Err(n["status"].to_string())
        }
    });
    eprintln!("node3 NotReady after {:?}", killed_at.elapsed());
    eventually(
        "6 running replicas off node3",
        Duration::from_secs(60),
        || {
            let pods = c.pods("app=spread")?;
            let live: Vec<&Value> = pods.iter().filter(|p| node_of(p) != "node3").collect();
            let run = live.iter().filter(|p| phase(p) == "Running").count();
            if run == 6 {
                Ok(())
            } else {
                Err(format!("{:?}", per_node(&pods)))
            }
        },
    );
    // Nothing new is bound to the dead node meanwhile.
    c.ctl_ok(&["scale", "deployment", "spread", "--replicas", "8"]);
    eventually("8 running replicas", Duration::from_secs(60), || {
        let pods = c.pods("app=spread")?;
        let run = pods
            .iter()
            .filter(|p| phase(p) == "Running" && node_of(p) != "node3")
            .count();
        if run == 8 {
            Ok(())
        } else {
            Err(format!("{:?}", per_node(&pods)))
        }
    });
    let new_on_dead: Vec<String> = c
        .pods("app=spread")
        .expect("pods")
        .iter()
        .filter(|p| node_of(p) == "node3" && !on_n3_before.contains(name_of(p)))
        .map(|p| name_of(p).to_string())
        .collect();
    assert!(
        new_on_dead.is_empty(),
        "pods bound to the dead node after it died: {new_on_dead:?}"
    );
}

const ROLL: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: roll}
spec:
  replicas: 4
  selector: {matchLabels: {app: roll}}
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 1}}
  template:
    metadata: {labels: {app: roll}}
    spec:
      containers:
      - name: app
        image: busybox:latest
        command: ["sleep", "3600"]
        readinessProbe: {exec: {command: ["true"]}, periodSeconds: 1}
"#;

fn images(pods: &[Value]) -> Vec<String> {
    pods.iter()
        .filter_map(|p| {
            p.pointer("/spec/containers/0/image")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .collect()
}

#[test]
#[ignore = "requires root: network namespaces, containers, cgroups"]
fn rolling_update_survives_leader_kill_and_undo() {
    let c = NetnsCluster::up("e2eroll", 3, 3, &[]);
    eventually("nodes", Duration::from_secs(30), || {
        let v = c.json(&["get", "nodes"])?;
        if v["items"].as_array().map(Vec::len) == Some(3) {
            Ok(())
        } else {
            Err(v.to_string())
        }
    });
    c.ctl_ok(&["image", "import", c.image_tar.to_str().expect("path")]);
    c.ctl_ok(&[
        "image",
        "import",
        c.image_tar.to_str().expect("path"),
        "--tag",
        "busybox:2",
    ]);
    let out = c.apply(ROLL);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("4 ready", Duration::from_secs(60), || {
        let pods = c.pods("app=roll")?;
        let ready = pods.iter().filter(|p| is_ready(p)).count();
        if ready == 4 {
            Ok(())
        } else {
            Err(format!("{ready} ready"))
        }
    });

    c.ctl_ok(&["set", "image", "deployment/roll", "app=busybox:2"]);
    let started = Instant::now();
    let mut killed = false;
    let mut min_ready = usize::MAX;
    loop {
        if let Ok(pods) = c.pods("app=roll") {
            let ready = pods.iter().filter(|p| is_ready(p)).count();
            min_ready = min_ready.min(ready);
            let imgs = images(&pods);
            let done = pods.len() == 4 && ready == 4 && imgs.iter().all(|i| i == "busybox:2");
            if done {
                break;
            }
            if !killed && imgs.iter().any(|i| i == "busybox:2") {
                // Mid-rollout: kill the leader controller.
                let st = c.json(&["cluster", "status"]).expect("cluster status");
                let leader = st["leaderId"]
                    .as_u64()
                    .or_else(|| st["leader_id"].as_u64())
                    .expect("leader id");
                assert!(c.script(&["kill", &format!("c{leader}")]).status.success());
                killed = true;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "rollout did not finish"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        killed,
        "the rollout finished before the leader could be killed"
    );
    assert!(
        min_ready >= 3,
        "ready pods dropped to {min_ready} (< replicas - maxUnavailable)"
    );

    c.ctl_ok(&["rollout", "undo", "deployment/roll"]);
    eventually("back to busybox:latest", Duration::from_secs(90), || {
        let pods = c.pods("app=roll")?;
        let imgs = images(&pods);
        let ready = pods.iter().filter(|p| is_ready(p)).count();
        if pods.len() == 4 && ready == 4 && imgs.iter().all(|i| i == "busybox:latest") {
            Ok(())
        } else {
            Err(format!("{imgs:?}, {ready} ready"))
        }
    });
}
