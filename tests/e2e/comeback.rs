//! Nodes that come back (issue "Reliability at the edges", part 3), each behaviour
//! end to end on a `deploy/netns-cluster`:
//!
//! * an agent restarted while no controller is reachable keeps its pods running, also
//!   when the controllers come back after longer than the node timeout;
//! * a pod deleted while its agent was down is stopped with its grace period when the
//!   agent returns;
//! * a node partitioned long enough to be declared lost, then healed: the pods replaced
//!   elsewhere are stopped on it, and the Deployment never runs more replicas than asked
//!   for longer than the pod's grace period plus two heartbeats after the node
//!   reconnects (counted from the real processes on the nodes, not from the API);
//! * an old leader partitioned away while a new one is elected never double-books a
//!   node (hostPort), a pod CIDR or a service address.
//!
//! Replicas are counted as processes: every container of these tests is a busybox `sh`
//! whose `$0` is a token unique to the test run, and the node a process runs on is the
//! one whose state directory holds its overlay upper directory.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{NetnsCluster, bin_dir, eventually, name_of, node_of, phase};

/// The agents' heartbeat interval (`shoal-agent --heartbeat-interval` default).
const HEARTBEAT: Duration = Duration::from_secs(2);
/// `terminationGracePeriodSeconds` of the Deployment's pods.
const GRACE: Duration = Duration::from_secs(3);
/// Slack on top of the bounds: the 100 ms sampling period, the kernel reaping the
/// killed process, and the few hundred milliseconds between the agent's SIGKILL at the
/// end of the grace period and the process being gone from /proc on a 2-core machine
/// that other builds share.
const MARGIN: Duration = Duration::from_secs(1);

/// This machine's uptime in seconds (first field of /proc/uptime text).
fn uptime_of(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

fn uptime_now() -> f64 {
    uptime_of(&std::fs::read_to_string("/proc/uptime").expect("/proc/uptime")).expect("uptime")
}

/// A busybox shell that survives SIGTERM (it notes it in `note`, if given) and runs
/// until killed: stopping it always takes the whole grace period. `token` is its `$0`.
fn container_cmd(token: &str, note: Option<&str>) -> String {
    let on_term = match note {
        // The machine's uptime (not namespaced): when the signal arrived, to 10 ms.
        Some(f) => format!("cat /proc/uptime >> {f}"),
        None => "echo TERM".to_string(),
    };
    // `sleep & wait` so that the trap runs as soon as the signal arrives.
    format!(
        r#"["sh", "-c", "trap '{on_term}' TERM; while :; do sleep 1 & wait $!; done", "{token}"]"#
    )
}

/// Live (not zombie) container shells whose `$0` is `token`, by pid, with the node
/// (`n1`, `n2`, ...) whose state directory holds their root file system.
fn shells(cluster: &str, token: &str) -> BTreeMap<i32, String> {
    let mut out = BTreeMap::new();
    let state = format!("upperdir=/run/shoal-netns/{cluster}/");
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let p = e.path();
        if std::fs::read_to_string(p.join("comm")).map_or(true, |c| c.trim() != "sh") {
            continue;
        }
        let Ok(cmdline) = std::fs::read(p.join("cmdline")) else {
            continue;
        };
        if !cmdline.split(|b| *b == 0).any(|a| a == token.as_bytes()) {
            continue;
        }
        let stat = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
        let after_comm = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("Z");
        if after_comm.starts_with('Z') {
            continue;
        }
        // `sleep 1 &` forks the shell: until the child execs sleep it is a copy (same comm
        // and cmdline) whose parent is the shell. Count the shells, not their copies.
        let ppid: i32 = after_comm
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let parent_cmdline = std::fs::read(format!("/proc/{ppid}/cmdline")).unwrap_or_default();
        if parent_cmdline
            .split(|b| *b == 0)
            .any(|a| a == token.as_bytes())
        {
            continue;
        }
        let node = std::fs::read_to_string(p.join("mountinfo"))
            .ok()
            .and_then(|m| {
                let i = m.find(&state)?;
                let rest = &m[i + state.len()..];
                Some(rest.split('/').next()?.to_string())
            })
            .unwrap_or_default();
        out.insert(pid, node);
    }
    out
}

fn per_node(sh: &BTreeMap<i32, String>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for n in sh.values() {
        *m.entry(n.clone()).or_insert(0) += 1;
    }
    m
}

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Ready condition's status of a node ("" if none).
fn node_ready(c: &NetnsCluster, node: &str) -> String {
    c.json(&["get", "node", node])
        .ok()
        .and_then(|n| {
            n.pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready").cloned())
        })
        .and_then(|c| c["status"].as_str().map(String::from))
        .unwrap_or_default()
}

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

/// Waits until `node` has heartbeated twice more (so its agent is connected and has
/// listed and synced its pods at least once since).
fn two_heartbeats(c: &NetnsCluster, node: &str, timeout: Duration) {
    let mut seen = vec![heartbeat(c, node)];
    eventually(&format!("two heartbeats of {node}"), timeout, || {
        let h = heartbeat(c, node);
        if seen.last() != Some(&h) {
            seen.push(h);
        }
        if seen.len() >= 3 {
            Ok(())
        } else {
            Err(format!("heartbeats seen: {seen:?}"))
        }
    });
}

fn uid(p: &Value) -> String {
    p.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn wait_ready_nodes(c: &NetnsCluster, n: usize) {
    eventually(&format!("{n} Ready nodes"), Duration::from_secs(40), || {
        let v = c.json(&["get", "nodes"])?;
        let items = v["items"].as_array().cloned().unwrap_or_default();
        let ready = items
            .iter()
            .filter(|x| {
                x.pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
            })
            .count();
        if ready == n {
            Ok(())
        } else {
            Err(format!("{ready} ready"))
        }
    });
}

/// Removes a directory tree on drop (the hostPath of the tests' pods).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn hostpath_dir(tag: &str) -> TempDir {
    let d = std::env::temp_dir().join(format!("shoal-e2e-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("hostPath dir");
    TempDir(d)
}

fn solo_pod(name: &str, node: &str, grace_s: u64, token: &str, dir: &Path) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeSelector: {{node: {node}}}
  terminationGracePeriodSeconds: {grace_s}
  volumes: [{{name: v, hostPath: {{path: {dir}}}}}]
  containers:
  - name: app
    image: busybox:latest
    command: {cmd}
    volumeMounts: [{{name: v, mountPath: /v}}]
"#,
        dir = dir.display(),
        cmd = container_cmd(token, Some(&format!("/v/{name}")))
    )
}

/// Agent restarted without controllers; pod deleted while its agent was down; node lost
/// and healed. One controller (so that "no controller reachable" is one `stop`), three
/// agents, a node timeout of 3 s and an eviction delay of 2 s.
#[test]
#[ignore = "requires root: network namespaces, containers, cgroups"]
fn agents_and_nodes_that_come_back() {
    let c = NetnsCluster::up(
        "cb",
        1,
        3,
        &["--node-timeout", "3", "--eviction-delay", "2"],
    );
    let name = c.name.clone();
    wait_ready_nodes(&c, 3);
    c.ctl_ok(&["image", "import", c.image_tar.to_str().expect("path")]);
    let token = format!("shoal-e2e-back-{}", std::process::id());
    let solo_token = format!("shoal-e2e-solo-{}", std::process::id());
    let notes = hostpath_dir("comeback");

    let deploy = format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: back}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: back}}}}
  template:
    metadata: {{labels: {{app: back}}}}
    spec:
      terminationGracePeriodSeconds: {grace}
      containers:
      - name: app
        image: busybox:latest
        command: {cmd}
        resources: {{requests: {{cpu: 10m, memory: 8Mi}}}}
"#,
        grace = GRACE.as_secs(),
        cmd = container_cmd(&token, None)
    );
    ok(&c.apply(&deploy), "apply deployment");
    ok(
        &c.apply(&solo_pod("solo", "node1", 4, &solo_token, &notes.0)),
        "apply pod solo",
    );
    let pods = eventually(
        "3 replicas and solo Running",
        Duration::from_secs(60),
        || {
            let pods = c.pods("app=back")?;
            let solo = c.json(&["get", "pod", "solo"])?;
            let run = pods.iter().filter(|p| phase(p) == "Running").count();
            if run == 3 && phase(&solo) == "Running" {
                Ok(pods)
            } else {
                Err(format!("{run} running; solo {}", phase(&solo)))
            }
        },
    );
    let procs = eventually("4 container shells", Duration::from_secs(20), || {
        let d = shells(&name, &token);
        let s = shells(&name, &solo_token);
        if d.len() == 3 && s.len() == 1 {
            Ok((d, s))
        } else {
            Err(format!(
                "deployment {:?}, solo {:?}",
                per_node(&d),
                per_node(&s)
            ))
        }
    });
    assert_eq!(
        procs.1.values().collect::<Vec<_>>(),
        vec!["n1"],
        "solo runs on n1"
    );
    assert!(
        procs.0.values().any(|n| n == "n1"),
        "a replica runs on n1: {:?}",
        procs.0
    );

    // ---- 1. An agent restarted while no controller is reachable keeps its pods. ----
    let before: BTreeMap<String, String> = pods
        .iter()
        .map(|p| (name_of(p).to_string(), uid(p)))
        .collect();
    let on_n1_before: BTreeSet<i32> = shells(&name, &token)
        .into_iter()
        .chain(shells(&name, &solo_token))
        .filter(|(_, n)| n == "n1")
        .map(|(p, _)| p)
        .collect();
    ok(&c.script(&["stop", "c1"]), "stop c1");
    let agent = c.main_pid("n1");
    // SAFETY: kill(2) of the agent process this test's cluster started.
    unsafe {
        libc::kill(agent, libc::SIGKILL);
    }
    eventually("the agent to exit", Duration::from_secs(10), || {
        if Path::new(&format!("/proc/{agent}")).exists() {
            Err(format!("pid {agent} still exists"))
        } else {
            Ok(())
        }
    });
    ok(&c.script(&["start", "n1"]), "start n1");
    // Longer than node timeout + eviction delay without any controller: the agent keeps
    // retrying and its containers run on, the same processes.
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(7) {
        let now: BTreeSet<i32> = shells(&name, &token)
            .into_iter()
            .chain(shells(&name, &solo_token))
            .filter(|(_, n)| n == "n1")
            .map(|(p, _)| p)
            .collect();
        assert_eq!(
            now,
            on_n1_before,
            "node1's containers changed {:?} after the agent restarted without controllers",
            outage.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = String::from_utf8_lossy(&c.script(&["logs", "n1"]).stdout).into_owned();
    assert!(
        log.contains("registering node node1"),
        "the restarted agent did not try to reach the controllers:\n{log}"
    );
    // The controller comes back after more than node timeout + eviction delay: it must
    // not take the silent nodes' pods away before their agents could heartbeat again.
    ok(&c.script(&["start", "c1"]), "start c1");
    for n in ["node1", "node2", "node3"] {
        two_heartbeats(&c, n, Duration::from_secs(30));
    }
    let after: BTreeMap<String, String> = c
        .pods("app=back")
        .expect("pods")
        .iter()
        .map(|p| (name_of(p).to_string(), uid(p)))
        .collect();
    assert_eq!(
        after, before,
        "the replicas changed after the controller came back"
    );
    let now_n1: BTreeSet<i32> = shells(&name, &token)
        .into_iter()
        .chain(shells(&name, &solo_token))
        .filter(|(_, n)| n == "n1")
        .map(|(p, _)| p)
        .collect();
    assert_eq!(now_n1, on_n1_before, "node1's containers were restarted");
    let solo = c.json(&["get", "pod", "solo"]).expect("solo");
    assert_eq!(phase(&solo), "Running", "{}", solo["status"]);
    eprintln!("agent restarted without controllers: pods kept ({now_n1:?})");

    // ---- 2. A pod deleted while its agent was down is stopped with its grace period. ----
    let t = Instant::now();
    let st = c.script(&["stop", "n1"]);
    ok(&st, "stop n1");
    let said = String::from_utf8_lossy(&st.stderr).into_owned();
    // A SIGTERMed agent exits by itself (containers keep running); netns-cluster's
    // SIGKILL after 10 s would take the containers' supervisors with it.
    assert!(
        !said.contains("killed"),
        "the agent did not exit within 10 s of SIGTERM: {said}"
    );
    eprintln!("agent stopped in {:?}", t.elapsed());
    ok(
        &c.ctl(&["delete", "pod", "solo"]),
        "delete pod solo while its agent is down",
    );
    // Positive control: nothing else stops it meanwhile.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        shells(&name, &solo_token).len(),
        1,
        "solo's container stopped while its agent was down"
    );
    let note = notes.0.join("solo");
    assert!(!note.exists(), "solo got SIGTERM while its agent was down");
    ok(&c.script(&["start", "n1"]), "start n1");
    let termed = eventually("solo to get SIGTERM", Duration::from_secs(30), || {
        std::fs::read_to_string(&note)
            .ok()
            .and_then(|t| uptime_of(&t))
            .ok_or_else(|| format!("nothing in {}", note.display()))
    });
    let gone = eventually("solo's container to end", Duration::from_secs(30), || {
        if shells(&name, &solo_token).is_empty() {
            Ok(uptime_now())
        } else {
            Err::<_, String>("still running".into())
        }
    });
    let graced = gone - termed;
    eprintln!("deleted pod: killed {graced:.2} s after SIGTERM (grace 4 s)");
    // SIGKILL comes at the end of the grace period: not before (less 100 ms for the
    // trap to run), not much after.
    assert!(
        graced >= 3.9,
        "solo was killed {graced:.2} s after SIGTERM, before its 4 s grace period"
    );
    assert!(
        graced <= 4.0 + MARGIN.as_secs_f64(),
        "solo outlived its grace period: {graced:.2} s"
    );

    // ---- 3. A node lost, then healed: its replaced pods stop within the bound. ----
    ok(
        &c.apply(&solo_pod("solo2", "node1", 2, &solo_token, &notes.0)),
        "apply pod solo2",
    );
    eventually("solo2 Running", Duration::from_secs(30), || {
        let p = c.json(&["get", "pod", "solo2"])?;
        if phase(&p) == "Running" && shells(&name, &solo_token).len() == 1 {
            Ok(())
        } else {
            Err(p["status"].to_string())
        }
    });
    let old_on_n1: BTreeSet<String> = c
        .pods("app=back")
        .expect("pods")
        .iter()
        .filter(|p| node_of(p) == "node1")
        .map(|p| name_of(p).to_string())
        .collect();
    assert!(!old_on_n1.is_empty(), "no replica on node1");
    ok(&c.script(&["partition", "n1"]), "partition n1");
    let _heal = HealOnDrop(&c, "n1");
    eventually(
        "node1's replicas replaced and solo2 NodeLost",
        Duration::from_secs(60),
        || {
            let pods = c.pods("app=back")?;
            let elsewhere = pods
                .iter()
                .filter(|p| node_of(p) != "node1" && phase(p) == "Running")
                .count();
            let still: Vec<&str> = pods
                .iter()
                .map(name_of)
                .filter(|n| old_on_n1.contains(*n))
                .collect();
            let solo2 = c.json(&["get", "pod", "solo2"])?;
            let lost = phase(&solo2) == "Failed"
                && solo2.pointer("/status/reason").and_then(Value::as_str) == Some("NodeLost");
            if elsewhere == 3 && still.is_empty() && lost {
                Ok(())
            } else {
                Err(format!(
                    "{elsewhere} running elsewhere, old {still:?}, solo2 {}",
                    solo2["status"]
                ))
            }
        },
    );
    // Positive control: the processes show the excess the partition causes (3 replicas
    // elsewhere + the old one on node1), so the count below can see one.
    let excess = eventually(
        "4 replica processes (3 + node1's)",
        Duration::from_secs(30),
        || {
            let d = shells(&name, &token);
            let pn = per_node(&d);
            if d.len() == 3 + old_on_n1.len() && pn.get("n1") == Some(&old_on_n1.len()) {
                Ok(pn)
            } else {
                Err(format!("{pn:?}"))
            }
        },
    );
    assert_eq!(shells(&name, &solo_token).len(), 1, "solo2 runs on");
    eprintln!("partitioned: replica processes per node {excess:?}");
    ok(&c.script(&["heal", "n1"]), "heal n1");
    let healed = Instant::now();
    let bound = GRACE + HEARTBEAT * 2;
    let mut last_excess = None;
    let mut min_after = usize::MAX;
    let mut samples = Vec::new();
    // Sample until the count has been exactly 3 for 3 s, and at least bound + 3 s.
    let mut good_since: Option<Instant> = None;
    loop {
        let t = healed.elapsed();
        let d = shells(&name, &token);
        samples.push((t, d.len()));
        min_after = min_after.min(d.len());
        if d.len() > 3 {
            last_excess = Some(t);
            good_since = None;
        } else if good_since.is_none() {
            good_since = Some(Instant::now());
        }
        if t > bound + Duration::from_secs(3)
            && good_since.is_some_and(|g| g.elapsed() > Duration::from_secs(3))
        {
            break;
        }
        assert!(
            t < Duration::from_secs(60),
            "still more than 3 replicas 60 s after heal: {:?}",
            per_node(&d)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let excess_for = last_excess.unwrap_or_default();
    eprintln!(
        "after heal: more than 3 replicas for {excess_for:?} (bound {bound:?} + margin {MARGIN:?}); samples {:?}",
        samples
            .iter()
            .step_by(5)
            .map(|(t, n)| format!("{:.1}s:{n}", t.as_secs_f64()))
            .collect::<Vec<_>>()
    );
    assert!(
        excess_for <= bound + MARGIN,
        "more than 3 replicas ran for {excess_for:?} after the node reconnected (bound {bound:?} + {MARGIN:?})"
    );
    assert!(
        min_after >= 3,
        "the replicas elsewhere dropped to {min_after} after heal"
    );
    assert_eq!(
        per_node(&shells(&name, &token)).get("n1"),
        None,
        "node1 still runs replicas"
    );
    // The standalone pod marked Failed (NodeLost) stops too, and stays Failed.
    eventually("solo2's container to stop", Duration::from_secs(20), || {
        if shells(&name, &solo_token).is_empty() {
            Ok(())
        } else {
            Err::<_, String>("solo2 still runs".into())
        }
    });
    assert!(notes.0.join("solo2").exists(), "solo2 was not sent SIGTERM");
    two_heartbeats(&c, "node1", Duration::from_secs(20));
    assert_eq!(node_ready(&c, "node1"), "True");
    let solo2 = c.json(&["get", "pod", "solo2"]).expect("solo2");
    assert_eq!(
        phase(&solo2),
        "Failed",
        "solo2 came back to life: {}",
        solo2["status"]
    );
    // Node1 is usable again: scaling up may place replicas there.
    let run = c.pods("app=back").expect("pods");
    assert_eq!(
        run.iter().filter(|p| phase(p) == "Running").count(),
        3,
        "replicas after heal"
    );
}

/// Heals a node's link on drop (a failed assertion must not leave it cut for `down`).
struct HealOnDrop<'a>(&'a NetnsCluster, &'a str);

impl Drop for HealOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.script(&["heal", self.1]);
    }
}

/// shoalctl run inside controller `node`'s namespace against that controller only.
fn ctl_in(c: &NetnsCluster, node: &str, server: &str, args: &[&str]) -> Output {
    let ctl = bin_dir().join("shoalctl");
    let conf = c.config.to_str().expect("utf-8 path");
    let mut a: Vec<&str> = vec![
        "exec",
        node,
        "--",
        ctl.to_str().expect("utf-8 path"),
        "--config",
        conf,
        "--server",
        server,
        "--request-timeout",
        "8s",
    ];
    a.extend_from_slice(args);
    c.script(&a)
}

fn leader_via(c: &NetnsCluster, servers: &str) -> Result<u64, String> {
    let out = c.ctl(&["--server", servers, "cluster", "status", "-o", "json"]);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    v["leaderId"]
        .as_u64()
        .or_else(|| v["leader_id"].as_u64())
        .filter(|l| *l != 0)
        .ok_or_else(|| v.to_string())
}

fn service(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  selector: {{app: {name}}}\n  ports: [{{port: 80}}]\n"
    )
}

fn node_obj(name: &str) -> String {
    format!("apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\n")
}

fn hostport_pod(name: &str, token: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: hp}}}}
spec:
  containers:
  - name: app
    image: busybox:latest
    command: {cmd}
    ports: [{{containerPort: 8080, hostPort: 18080}}]
"#,
        cmd = container_cmd(token, None)
    )
}

/// An old leader partitioned away while a new one is elected never double-books a node,
/// a pod CIDR or a service address.
#[test]
#[ignore = "requires root: network namespaces, containers, cgroups"]
fn old_leader_partitioned_never_double_books() {
    // Short node timeouts: the cut-off old leader, which hears no heartbeats, plans to
    // evict every node's pods while it is cut off; none of that may take effect.
    let c = NetnsCluster::up(
        "ol",
        3,
        2,
        &["--node-timeout", "4", "--eviction-delay", "2"],
    );
    let name = c.name.clone();
    wait_ready_nodes(&c, 2);
    c.ctl_ok(&["image", "import", c.image_tar.to_str().expect("path")]);
    let token = format!("shoal-e2e-hp-{}", std::process::id());
    let servers: Vec<String> = c.server.split(',').map(String::from).collect();
    assert_eq!(servers.len(), 3);
    let old = eventually("a leader", Duration::from_secs(20), || {
        leader_via(&c, &c.server)
    });
    let old_node = format!("c{old}");
    let old_addr = servers[old as usize - 1].clone();
    let others = servers
        .iter()
        .filter(|s| **s != old_addr)
        .cloned()
        .collect::<Vec<_>>()
        .join(",");
    // Before: one service and one pod with the hostPort, through the whole cluster.
    ok(&c.apply(&service("before")), "service before");
    ok(
        &c.apply(&hostport_pod("hp-before", &token)),
        "pod hp-before",
    );

    let pods_before = eventually("hp-before bound", Duration::from_secs(30), || {
        let p = c.json(&["get", "pod", "hp-before"])?;
        if phase(&p) == "Running" {
            Ok(vec![(name_of(&p).to_string(), uid(&p))])
        } else {
            Err(p["status"].to_string())
        }
    });
    ok(&c.script(&["partition", &old_node]), "partition old leader");
    let cut = Instant::now();
    let _heal = HealOnDrop(&c, &old_node);
    let new = eventually(
        "a new leader",
        Duration::from_secs(30),
        || match leader_via(&c, &others)? {
            l if l != old => Ok(l),
            l => Err(format!("leader still {l}")),
        },
    );
    eprintln!("old leader c{old} partitioned, new leader c{new}");

    // The new side allocates.
    let new_side = |args: &[&str]| {
        let mut a = vec!["--server", others.as_str()];
        a.extend_from_slice(args);
        c.ctl(&a)
    };
    let tmp = hostpath_dir("oldleader");
    let file = |n: &str, text: &str| {
        let f = tmp.0.join(format!("{n}.yaml"));
        std::fs::write(&f, text).expect("manifest");
        f.to_str().expect("utf-8").to_string()
    };
    for (n, text) in [
        ("new-a", service("new-a")),
        ("new-b", service("new-b")),
        ("new-node-a", node_obj("new-node-a")),
        ("new-node-b", node_obj("new-node-b")),
        ("hp-new", hostport_pod("hp-new", &token)),
        ("hp-new2", hostport_pod("hp-new2", &token)),
    ] {
        ok(&new_side(&["apply", "-f", &file(n, &text)]), n);
    }
    // The old side (its controller and its own shoalctl, in its namespace) is refused.
    // All at once, so that the partition ends within the store's 10 s write deadline
    // of the old leader's own reconciler writes (it plans evicting every node 6 s after
    // it was cut off: see the pod check after the heal).
    let attempts: Vec<(String, String)> = [
        ("old-a", service("old-a")),
        ("old-b", service("old-b")),
        ("old-node-a", node_obj("old-node-a")),
        ("hp-old", hostport_pod("hp-old", &token)),
    ]
    .into_iter()
    .map(|(n, text)| (n.to_string(), file(n, &text)))
    .collect();
    let refused: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = attempts
            .iter()
            .map(|(n, f)| {
                let (c, old_node, old_addr) = (&c, &old_node, &old_addr);
                s.spawn(move || {
                    let t = Instant::now();
                    let out = ctl_in(c, old_node, old_addr, &["apply", "-f", f]);
                    assert!(
                        !out.status.success(),
                        "the partitioned old leader accepted {n}: {}",
                        String::from_utf8_lossy(&out.stdout)
                    );
                    format!(
                        "{n} in {:.1}s: {}",
                        t.elapsed().as_secs_f64(),
                        String::from_utf8_lossy(&out.stderr).trim()
                    )
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("old-side attempt"))
            .collect()
    });
    eprintln!("old side refused: {refused:#?}");
    // Positive control for the hostPort check: the new side already has the port taken
    // on both nodes, so a third such pod stays unbound.
    eventually("hp pods on the new side", Duration::from_secs(30), || {
        let pods = c.json(&["--server", others.as_str(), "get", "pods", "-l", "app=hp"])?;
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        let bound: BTreeMap<String, String> = items
            .iter()
            .map(|p| (name_of(p).to_string(), node_of(p).to_string()))
            .collect();
        let nodes: BTreeSet<&String> = bound.values().filter(|n| !n.is_empty()).collect();
        if bound.len() == 3
            && nodes.len() == 2
            && bound.values().filter(|n| n.is_empty()).count() == 1
        {
            Ok(())
        } else {
            Err(format!("{bound:?}"))
        }
    });

    ok(&c.script(&["heal", &old_node]), "heal old leader");
    eprintln!("old leader healed after {:?}", cut.elapsed());
    let new_pods: Vec<(String, String)> = ["hp-new", "hp-new2"]
        .iter()
        .map(|n| {
            let p = c.json(&["get", "pod", n]).expect(n);
            (n.to_string(), uid(&p))
        })
        .chain(pods_before)
        .collect();
    eventually("the old leader follows", Duration::from_secs(30), || {
        let out = ctl_in(
            &c,
            &old_node,
            &old_addr,
            &["cluster", "status", "-o", "json"],
        );
        let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        let l = v["leaderId"].as_u64().unwrap_or(0);
        if l != 0 && l != old {
            Ok(())
        } else {
            Err(v.to_string())
        }
    });
    // After heal the old member allocates again, through the new leader.
    ok(
        &ctl_in(
            &c,
            &old_node,
            &old_addr,
            &["apply", "-f", &file("after", &service("after"))],
        ),
        "service after, through the old member",
    );

    // The old leader's evictions (planned while it was cut off) never took effect: wait
    // past its writes' deadline, then every pod is still there, the same, not Failed.
    std::thread::sleep(Duration::from_secs(11));
    for (n, u) in &new_pods {
        let p = c
            .json(&["get", "pod", n])
            .unwrap_or_else(|e| panic!("pod {n}: {e}"));
        assert_eq!(&uid(&p), u, "pod {n} was replaced");
        assert_ne!(phase(&p), "Failed", "pod {n}: {}", p["status"]);
    }
    for n in ["node1", "node2"] {
        assert_eq!(node_ready(&c, n), "True", "{n} after the heal");
    }

    // No service address twice; the new side's services are there.
    let svcs = c.json(&["get", "services"]).expect("services");
    let mut ips: BTreeMap<String, String> = BTreeMap::new();
    for s in svcs["items"].as_array().cloned().unwrap_or_default() {
        let ip = s
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if ip.is_empty() || ip == "None" {
            continue;
        }
        if let Some(other) = ips.insert(ip.clone(), name_of(&s).to_string()) {
            panic!("cluster IP {ip} held by {other} and {}", name_of(&s));
        }
    }
    let held: BTreeSet<&str> = ips.values().map(String::as_str).collect();
    for n in ["before", "new-a", "new-b", "after"] {
        assert!(held.contains(n), "service {n} has no cluster IP: {ips:?}");
    }
    eprintln!("service IPs: {ips:?}");
    // No pod CIDR twice; every node got one.
    let nodes = eventually(
        "every node with a pod CIDR",
        Duration::from_secs(20),
        || {
            let v = c.json(&["get", "nodes"])?;
            let items = v["items"].as_array().cloned().unwrap_or_default();
            let cidrs: Vec<(String, String)> = items
                .iter()
                .map(|n| {
                    (
                        name_of(n).to_string(),
                        n.pointer("/spec/podCIDR")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                    )
                })
                .collect();
            if cidrs.iter().all(|(_, c)| !c.is_empty()) {
                Ok(cidrs)
            } else {
                Err(format!("{cidrs:?}"))
            }
        },
    );
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for (n, cidr) in &nodes {
        if let Some(o) = seen.insert(cidr, n) {
            panic!("pod CIDR {cidr} held by {o} and {n}");
        }
    }
    let names: BTreeSet<&str> = nodes.iter().map(|(n, _)| n.as_str()).collect();
    for n in ["node1", "node2", "new-node-a", "new-node-b"] {
        assert!(names.contains(n), "node {n} missing: {nodes:?}");
    }
    eprintln!("pod CIDRs: {nodes:?}");
    // No node has two pods holding the hostPort, in the API or as processes.
    std::thread::sleep(Duration::from_secs(2));
    let pods = c.pods("app=hp").expect("pods");
    let mut by_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in &pods {
        if !node_of(p).is_empty() && !matches!(phase(p), "Failed" | "Succeeded") {
            by_node
                .entry(node_of(p).to_string())
                .or_default()
                .push(name_of(p).to_string());
        }
    }
    eprintln!("hostPort 18080 by node: {by_node:?}");
    for (n, ps) in &by_node {
        assert!(
            ps.len() <= 1,
            "node {n} double-booked with hostPort 18080: {ps:?}"
        );
    }
    let procs = per_node(&shells(&name, &token));
    for (n, k) in &procs {
        assert!(*k <= 1, "node {n} runs {k} hostPort pods: {procs:?}");
    }
}
