//! The pod network on 1 controller + 3 agents: pod IPs from each node's
//! CIDR, pod-to-pod TCP and UDP across nodes through the WireGuard overlay
//! (and nothing else on the underlay), `wg show`, a Service over 3 replicas
//! with readiness and scaling, DNS, NodePort and hostPort from the underlay,
//! fail-closed when the agent dies, membership changes, and cleanup; pods
//! reaching the cluster's outside world (masqueraded) by names its DNS serves.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{NetnsCluster, eventually, is_ready, name_of, node_of, ready_ip};

const ECHO: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo}
spec:
  replicas: 3
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      containers:
      - name: web
        image: busybox:latest
        command: [sh, -c, "mkdir -p /www && hostname > /www/index.html && touch /tmp/ready && exec httpd -f -p 8080 -h /www"]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe:
          exec: {command: [cat, /tmp/ready]}
          periodSeconds: 1
        resources: {requests: {cpu: 10m, memory: 8Mi}}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: echo}
  ports: [{port: 80, targetPort: http, nodePort: 30080}]
---
apiVersion: v1
kind: Pod
metadata: {name: published, labels: {role: published}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: busybox:latest
    command: [sh, -c, "mkdir -p /www && echo published > /www/index.html && exec httpd -f -p 8080 -h /www"]
    ports: [{containerPort: 8080, hostPort: 18080}]
"#;

/// `(name, node, ip)` of the pods matching `selector`, once all are Running with an IP.
fn pod_ips(c: &NetnsCluster, selector: &str, n: usize) -> Vec<(String, String, String)> {
    eventually(
        &format!("{n} pods {selector} with IPs"),
        Duration::from_secs(60),
        || {
            let pods = c.pods(selector)?;
            let out: Vec<_> = pods
                .iter()
                .filter(|p| is_ready(p) && p["metadata"]["deletionTimestamp"].is_null())
                .filter_map(|p| {
                    let ip = p.pointer("/status/podIP")?.as_str()?;
                    Some((name_of(p).into(), node_of(p).into(), ip.to_string()))
                })
                .collect();
            if out.len() == n {
                Ok(out)
            } else {
                Err(format!("{} of {n} ready with an IP", out.len()))
            }
        },
    )
}

/// Runs `sh -c script` in a pod through shoalctl exec.
pub(crate) fn sh(c: &NetnsCluster, pod: &str, script: &str) -> Result<String, String> {
    let out = c.ctl(&["exec", pod, "--", "sh", "-c", script]);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "exec {pod} {script:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Runs a command inside a node's network namespace (through netns-cluster exec).
fn on_node(c: &NetnsCluster, node: &str, cmd: &[&str]) -> std::process::Output {
    let mut args = vec!["exec", node, "--"];
    args.extend_from_slice(cmd);
    c.script(&args)
}

/// The node's number (`node2` → 2).
fn num(node: &str) -> String {
    node.trim_start_matches("node").to_string()
}

/// The network namespace file of a pod (from its uid, as the agent names sandboxes).
pub(crate) fn pod_netns(c: &NetnsCluster, pod: &str) -> String {
    let p = c.json(&["get", "pod", pod]).expect("get pod");
    let uid: String = p["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(16)
        .collect();
    format!(
        "/run/shoal-netns/{}/n{}/data/pods/p{uid}/netns",
        c.name,
        num(node_of(&p))
    )
}

/// A UDP socket bound inside the network namespace at `netns`.
pub(crate) fn udp_in(netns: &str, bind: SocketAddr) -> UdpSocket {
    let netns = netns.to_string();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&netns).unwrap_or_else(|e| panic!("{netns}: {e}"));
        // SAFETY: setns on this short-lived thread only; the fd is valid.
        let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {netns}: {}", std::io::Error::last_os_error());
        UdpSocket::bind(bind).expect("bind udp")
    })
    .join()
    .expect("netns thread")
}

/// A capture on a node's underlay link, stopped (by PID) on drop.
struct Capture {
    child: Option<Child>,
    file: String,
}

impl Capture {
    /// Captures node `node`'s underlay into `<the test's directory>/<name>.pcap`.
    fn start(c: &NetnsCluster, node: &str, name: &str) -> Capture {
        let ns = format!("shoal-{}-n{}", c.name, num(node));
        let path = c.dir().join(format!("{name}.pcap"));
        let file = path.to_str().expect("utf-8 path");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "tcpdump",
                "--immediate-mode",
                "-i",
                "eth0",
                "-n",
                "-U",
                "-w",
                file,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tcpdump");
        // tcpdump writes the file header once the capture is active.
        // (--immediate-mode: packets reach the file at once, not in 1 s
        // blocks that a stop would throw away.)
        eventually(
            "tcpdump to start",
            Duration::from_secs(10),
            || match std::fs::metadata(file) {
                Ok(m) if m.len() >= 24 => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
        Capture {
            child: Some(child),
            file: file.to_string(),
        }
    }

    /// The packets captured so far, without stopping (tcpdump flushes each packet: -U).
    fn peek(&self) -> Vec<String> {
        let out = Command::new("tcpdump")
            .args(["-n", "-r", &self.file])
            .output()
            .expect("tcpdump -r");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect()
    }

    /// The capture file's bytes so far (pcap headers and whole packets: -U flushes each).
    fn raw(&self) -> Vec<u8> {
        std::fs::read(&self.file).expect("read the capture")
    }

    /// Stops the capture and returns its packets as tcpdump prints them.
    fn lines(mut self) -> Vec<String> {
        self.stop();
        let out = Command::new("tcpdump")
            .args(["-n", "-r", &self.file])
            .output()
            .expect("tcpdump -r");
        assert!(
            out.status.success(),
            "tcpdump -r {}: {}",
            self.file,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect()
    }

    fn stop(&mut self) {
        if let Some(mut ch) = self.child.take() {
            // SAFETY: signalling the child we started, by its PID.
            unsafe { libc::kill(ch.id() as i32, libc::SIGINT) };
            let _ = ch.wait();
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.file);
    }
}

/// Packets of a capture that carry a pod address in clear.
fn clear_pod_packets(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l.contains(" 10.244."))
        .cloned()
        .collect()
}

/// Packets of a capture that are neither WireGuard (UDP port 51820) nor the
/// control plane (gRPC to the controller's 7000 or an agent's 7100) nor
/// ARP or IPv6 neighbour discovery.
fn unexpected_packets(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| {
            let wg = l.contains(".51820") && l.contains("UDP");
            let control = [".7000 ", ".7000:", ".7100 ", ".7100:"]
                .iter()
                .any(|p| l.contains(p));
            !(wg || control || l.contains(" ARP,") || l.contains("ICMP6"))
        })
        .cloned()
        .collect()
}

/// Ready endpoint IPs of service `web`.
fn endpoint_ips(c: &NetnsCluster) -> BTreeSet<String> {
    let Ok(e) = c.json(&["get", "endpoints", "web"]) else {
        return BTreeSet::new();
    };
    e["subsets"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["addresses"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a["ip"].as_str().map(String::from))
        .collect()
}

/// Distinct backends (their hostnames) answering 60 requests to `url` from `pod`.
fn backends(c: &NetnsCluster, pod: &str, url: &str) -> BTreeMap<String, usize> {
    let out = sh(
        c,
        pod,
        &format!("for i in $(seq 60); do timeout 5 wget -qO- {url} || echo FAIL; done"),
    )
    .expect("requests");
    let mut m = BTreeMap::new();
    for l in out.lines() {
        *m.entry(l.trim().to_string()).or_insert(0) += 1;
    }
    m
}

/// Peers (public keys) `wg show IFACE peers` lists on a node.
fn wg_peers(c: &NetnsCluster, node: &str) -> BTreeSet<String> {
    let out = on_node(c, node, &["wg", "show", &format!("wg-{node}"), "peers"]);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect()
}

fn wg_key(c: &NetnsCluster, node: &str) -> String {
    c.json(&["get", "node", node]).expect("node")["status"]["wireguard"]["publicKey"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
#[ignore = "requires root: network namespaces, TUN, nftables, containers"]
fn pod_network_overlay_services_dns_and_ports() {
    let c = NetnsCluster::up("e2enet", 1, 3, &[]);
    let nodes = ["node1", "node2", "node3"];
    // Every node gets a distinct /24 of the cluster CIDR and publishes its key.
    let cidrs: BTreeSet<String> = eventually("pod CIDRs", Duration::from_secs(20), || {
        let mut s = BTreeSet::new();
        for n in nodes {
            let v = c.json(&["get", "node", n])?;
            let cidr = v.pointer("/spec/podCIDR").and_then(Value::as_str);
            let key = v
                .pointer("/status/wireguard/publicKey")
                .and_then(Value::as_str);
            match (cidr, key) {
                (Some(cidr), Some(_)) => s.insert(cidr.to_string()),
                _ => return Err(format!("{n}: no podCIDR or WireGuard key yet")),
            };
        }
        Ok(s)
    });
    assert_eq!(cidrs.len(), 3, "{cidrs:?}");
    assert!(
        cidrs
            .iter()
            .all(|c| c.starts_with("10.244.") && c.ends_with("/24"))
    );

    c.ctl_ok(&["image", "import", c.image_tar.to_str().expect("path")]);
    let out = c.apply(ECHO);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let echo = pod_ips(&c, "app=echo", 3);
    let spread: BTreeSet<&str> = echo.iter().map(|(_, n, _)| n.as_str()).collect();
    assert!(spread.len() >= 2, "replicas on one node only: {echo:?}");
    for (name, node, ip) in &echo {
        let cidr = c.json(&["get", "node", node]).expect("node")["spec"]["podCIDR"]
            .as_str()
            .expect("cidr")
            .to_string();
        let prefix = cidr.trim_end_matches("0/24");
        assert!(
            ip.starts_with(prefix),
            "{name} on {node}: {ip} not in {cidr}"
        );
    }

    // Pod to pod, across nodes, TCP (wget) and ICMP, while capturing the underlay.
    let cap = Capture::start(&c, &echo[0].1, "cap1");
    for (from, _, _) in &echo {
        for (to, _, ip) in &echo {
            let got = eventually(&format!("{from} -> {to}"), Duration::from_secs(20), || {
                sh(&c, from, &format!("timeout 5 wget -qO- http://{ip}:8080/"))
            });
            assert_eq!(got.trim(), to.as_str(), "{from} reached {ip}");
        }
        let (_, _, other) = echo.iter().find(|(n, _, _)| n != from).expect("other");
        sh(&c, from, &format!("ping -c1 -W2 {other}")).expect("ping");
    }
    // UDP between pods on different nodes, both ways.
    let (a, b) = {
        let a = &echo[0];
        let b = echo
            .iter()
            .find(|p| p.1 != a.1)
            .expect("pod on another node");
        (a.clone(), b.clone())
    };
    let sa = udp_in(&pod_netns(&c, &a.0), "0.0.0.0:9999".parse().expect("addr"));
    let sb = udp_in(&pod_netns(&c, &b.0), "0.0.0.0:9999".parse().expect("addr"));
    sb.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    sa.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let b_ip: Ipv4Addr = b.2.parse().expect("ip");
    let a_ip: Ipv4Addr = a.2.parse().expect("ip");
    sa.send_to(b"hello b", (b_ip, 9999)).expect("send");
    let mut buf = [0u8; 64];
    let (n, from) = sb.recv_from(&mut buf).expect("b receives UDP from a");
    assert_eq!((&buf[..n], from.ip()), (&b"hello b"[..], a_ip.into()));
    sb.send_to(b"hello a", from).expect("send back");
    let (n, _) = sa.recv_from(&mut buf).expect("a receives the UDP reply");
    assert_eq!(&buf[..n], b"hello a");
    // Controller ↔ agent traffic on the same link (the exec requests and their output
    // above, heartbeats, watches) is TLS: a marker sent both ways never shows in the clear.
    let marker = format!("wire-marker-{}", std::process::id());
    let said = sh(&c, &echo[0].0, &format!("echo {marker} | tr a-z A-Z")).expect("exec");
    assert_eq!(said.trim(), marker.to_uppercase());
    std::thread::sleep(Duration::from_millis(300));
    let wire = cap.raw();
    let found = |needle: &[u8]| wire.windows(needle.len()).any(|w| w == needle);
    assert!(
        wire.windows(3).filter(|w| *w == [0x17, 0x03, 0x03]).count() >= 10,
        "no TLS application data captured on {}",
        echo[0].1
    );
    for plain in [
        marker.as_bytes(),
        marker.to_uppercase().as_bytes(),
        b"PRI * HTTP/2.0",
        b"application/grpc",
        b"/shoal.v1.",
    ] {
        assert!(
            !found(plain),
            "{:?} in the clear on {}'s underlay",
            String::from_utf8_lossy(plain),
            echo[0].1
        );
    }
    let lines = cap.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains(".51820:") && l.contains("UDP")),
        "no WireGuard packets captured: {:?}",
        &lines[..lines.len().min(10)]
    );
    let clear = clear_pod_packets(&lines);
    assert!(
        clear.is_empty(),
        "pod addresses in clear on the underlay: {clear:?}"
    );
    let other = unexpected_packets(&lines);
    assert!(
        other.is_empty(),
        "unexpected packets on the underlay: {other:?}"
    );

    // wg show lists the other two nodes with a handshake.
    for n in nodes {
        let want: BTreeSet<String> = nodes
            .iter()
            .filter(|m| **m != n)
            .map(|m| wg_key(&c, m))
            .collect();
        assert_eq!(wg_peers(&c, n), want, "peers of {n}");
    }
    let out = on_node(&c, &a.1, &["wg", "show", &format!("wg-{}", a.1)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("latest handshake"), "{text}");
    // The agent's metrics (127.0.0.1:7180 in its namespace) say the same: two peers,
    // bytes both ways and a handshake with the node the pod pinged.
    let node = a.1.clone();
    let pinged_key = wg_key(&c, &b.1);
    eventually(
        "overlay metrics of the agent",
        Duration::from_secs(20),
        || {
            let out = on_node(
                &c,
                &node,
                &[
                    "bash",
                    "-c",
                    "exec 3<>/dev/tcp/127.0.0.1/7180 && printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3",
                ],
            );
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            let value = |name: &str| -> Option<f64> {
                text.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.trim().parse().ok())
            };
            let peer = format!("{{peer=\"{pinged_key}\"}} ");
            let ok = value("shoal_agent_overlay_peers ") == Some(2.0)
                && value(&format!("shoal_agent_overlay_received_bytes_total{peer}")).unwrap_or(0.0)
                    > 0.0
                && value(&format!("shoal_agent_overlay_sent_bytes_total{peer}")).unwrap_or(0.0)
                    > 0.0
                && value(&format!("shoal_agent_overlay_handshake_age_seconds{peer}")).is_some();
            if ok { Ok(()) } else { Err(text) }
        },
    );

    // The Service answers from all 3 replicas, by VIP and by DNS name.
    let svc = eventually(
        "service web with a clusterIP",
        Duration::from_secs(10),
        || {
            let s = c.json(&["get", "svc", "web"])?;
            s.pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                .map(String::from)
                .ok_or_else(|| "no clusterIP".to_string())
        },
    );
    assert!(svc.starts_with("10.96."), "{svc}");
    eventually("3 endpoints", Duration::from_secs(10), || {
        let e = endpoint_ips(&c);
        if e.len() == 3 {
            Ok(())
        } else {
            Err(format!("{e:?}"))
        }
    });
    let client = &echo[0].0;
    let seen = eventually("all 3 backends answer", Duration::from_secs(20), || {
        let m = backends(&c, client, &format!("http://{svc}/"));
        if m.len() == 3 && !m.contains_key("FAIL") {
            Ok(m)
        } else {
            Err(format!("{m:?}"))
        }
    });
    let names: BTreeSet<String> = echo.iter().map(|p| p.0.clone()).collect();
    assert_eq!(seen.keys().cloned().collect::<BTreeSet<_>>(), names);
    let ns = sh(&c, client, "nslookup web.default.svc.shoal.local").expect("nslookup");
    assert!(ns.contains(&svc), "{ns}");
    let t = Instant::now();
    let bad = sh(&c, client, "nslookup nosuch.default.svc.shoal.local");
    // Answered (NXDOMAIN), not timed out; the time is a benchmark figure.
    shoal_testkit::timing("e2e_nxdomain_from_pod", t.elapsed(), Duration::from_secs(3));
    let bad = bad.expect_err("unknown name resolved");
    assert!(bad.contains("NXDOMAIN"), "{bad}");
    let by_name = sh(&c, client, "timeout 5 wget -qO- http://web/").expect("wget by short name");
    assert!(names.contains(by_name.trim()), "{by_name}");

    // A replica failing its readiness probe gets no traffic until it recovers.
    let sick = &echo[1];
    sh(&c, &sick.0, "rm /tmp/ready").expect("unready");
    eventually("sick endpoint removed", Duration::from_secs(10), || {
        let e = endpoint_ips(&c);
        if e.len() == 2 && !e.contains(&sick.2) {
            Ok(())
        } else {
            Err(format!("{e:?}"))
        }
    });
    // The Endpoints object changes first; every node's service rules follow it.
    eventually(
        "no traffic to the sick replica",
        Duration::from_secs(10),
        || {
            let m = backends(&c, client, &format!("http://{svc}/"));
            if !m.contains_key(&sick.0) && !m.contains_key("FAIL") && m.len() == 2 {
                Ok(())
            } else {
                Err(format!("{m:?}"))
            }
        },
    );
    sh(&c, &sick.0, "touch /tmp/ready").expect("ready again");
    eventually("sick endpoint back", Duration::from_secs(10), || {
        let e = endpoint_ips(&c);
        if e.len() == 3 {
            Ok(())
        } else {
            Err(format!("{e:?}"))
        }
    });

    // Scaling down updates the endpoints (within 2 s: a benchmark figure, not asserted).
    let t = Instant::now();
    c.ctl_ok(&["scale", "deployment", "echo", "--replicas", "2"]);
    eventually("2 endpoints", Duration::from_secs(10), || {
        let e = endpoint_ips(&c);
        if e.len() == 2 {
            Ok(())
        } else {
            Err(format!("{e:?}"))
        }
    });
    shoal_testkit::timing(
        "e2e_endpoints_after_scale_down",
        t.elapsed(),
        Duration::from_secs(2),
    );
    c.ctl_ok(&["scale", "deployment", "echo", "--replicas", "3"]);
    pod_ips(&c, "app=echo", 3);

    // NodePort and hostPort from the underlay of another node.
    let ips: BTreeMap<String, String> = nodes
        .iter()
        .map(|n| {
            let v = c.json(&["get", "node", n]).expect("node");
            let ip = v["status"]["addresses"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["type"] == "InternalIP"))
                .and_then(|x| x["address"].as_str())
                .expect("InternalIP")
                .to_string();
            (n.to_string(), ip)
        })
        .collect();
    let got = eventually(
        "NodePort from the underlay",
        Duration::from_secs(15),
        || {
            let out = on_node(
                &c,
                "node2",
                &[
                    "timeout",
                    "5",
                    "busybox",
                    "wget",
                    "-qO-",
                    &format!("http://{}:30080/", ips["node1"]),
                ],
            );
            if out.status.success() {
                Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        },
    );
    assert!(
        names.iter().any(|n| got.trim() == n) || got.trim().starts_with("echo-"),
        "{got}"
    );
    let published = pod_ips(&c, "role=published", 1);
    let host = &published[0].1;
    let other = nodes
        .iter()
        .find(|n| **n != host.as_str())
        .expect("other node");
    let got = eventually(
        "hostPort from the underlay",
        Duration::from_secs(15),
        || {
            let out = on_node(
                &c,
                other,
                &[
                    "timeout",
                    "5",
                    "busybox",
                    "wget",
                    "-qO-",
                    &format!("http://{}:18080/", ips[host.as_str()]),
                ],
            );
            if out.status.success() {
                Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        },
    );
    assert_eq!(got.trim(), "published");

    // Isolation: pods cannot reach the agent's or the controller's API port.
    let agent_ep = format!("{}:7100", ips[&echo[0].1]);
    let r = sh(
        &c,
        client,
        &format!(
            "nc -w 2 {} </dev/null && echo OPEN",
            agent_ep.replace(':', " ")
        ),
    );
    assert!(
        !r.unwrap_or_default().contains("OPEN"),
        "pod reached the agent API {agent_ep}"
    );

    // Deleting a pod removes its veth (the standalone one: nothing replaces it).
    let before = veths(&c, host);
    c.ctl_ok(&["delete", "pod", "published"]);
    eventually(
        "veth of the deleted pod gone",
        Duration::from_secs(20),
        || {
            let now = veths(&c, host);
            if now.len() + 1 == before.len() {
                Ok(())
            } else {
                Err(format!("{before:?} -> {now:?}"))
            }
        },
    );

    // `down` leaves no namespace, WireGuard socket or interface behind (the
    // bridge, veths, routes and nft table live in the node namespaces). The socket
    // directory is shared by every cluster on the host (other runs may have their own
    // wg-node1): what must be gone is what this cluster's agents held.
    let agents: Vec<i32> = (1..=nodes.len())
        .map(|i| c.main_pid(&format!("n{i}")))
        .collect();
    let out = c.script(&["down"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ns = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns");
    let ns = String::from_utf8_lossy(&ns.stdout);
    let prefix = format!("shoal-{}-", c.name);
    assert!(!ns.contains(&prefix), "namespaces left: {ns}");
    eventually(
        "this cluster's agents gone",
        Duration::from_secs(10),
        || {
            let left: Vec<String> = agents
                .iter()
                .filter_map(|pid| {
                    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
                    let state = st.lines().find(|l| l.starts_with("State:"))?.to_string();
                    Some(format!("{pid} {state}"))
                })
                .collect();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    );
    // A socket file of our node names may exist only while a live process (another
    // cluster's agent; ours are gone) listens on it: one without a listener is a leftover.
    let ss = Command::new("ss").args(["-xlpn"]).output().expect("ss");
    let ss = String::from_utf8_lossy(&ss.stdout);
    for n in nodes {
        let sock = format!("/var/run/wireguard/wg-{n}.sock");
        if std::path::Path::new(&sock).exists() {
            assert!(
                ss.lines().any(|l| l.contains(&sock)),
                "{sock} left behind (no process listens on it): {ss}"
            );
        }
    }
    let links = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("ip link");
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(
        !links.contains("wg-node") && !links.contains(" vsh"),
        "links left: {links}"
    );
}

/// Host-side pod veths on a node.
fn veths(c: &NetnsCluster, node: &str) -> Vec<String> {
    let out = on_node(c, node, &["ip", "-o", "link", "show"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n.starts_with("vsh"))
        .collect()
}

#[test]
#[ignore = "requires root: network namespaces, TUN, nftables, containers"]
fn overlay_fails_closed_and_follows_membership() {
    let c = NetnsCluster::up("e2enet2", 1, 3, &[]);
    c.ctl_ok(&["image", "import", c.image_tar.to_str().expect("path")]);
    let pods = "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec:\n  nodeSelector: {node: node1}\n  containers:\n  - {name: a, image: busybox:latest, command: [sh, -c, 'mkdir -p /www && echo a > /www/index.html && exec httpd -f -p 8080 -h /www']}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: b}\nspec:\n  nodeSelector: {node: node2}\n  containers:\n  - {name: b, image: busybox:latest, command: [sh, -c, 'mkdir -p /www && echo b > /www/index.html && exec httpd -f -p 8080 -h /www']}\n";
    let out = c.apply(pods);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ip_a, ip_b) = (ready_ip(&c, "a"), ready_ip(&c, "b"));
    eventually("a reaches b", Duration::from_secs(20), || {
        sh(&c, "a", &format!("timeout 5 wget -qO- http://{ip_b}:8080/"))
    });
    let cid = |name: &str| -> String {
        c.json(&["get", "pod", name]).expect("pod")["status"]["containerStatuses"][0]["containerID"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let (cid_a, cid_b) = (cid("a"), cid("b"));

    // Kill node1's agent (and with it its userspace WireGuard): traffic from a
    // to b must not leave node1 in clear.
    let cap = Capture::start(&c, "node1", "cap2");
    kill_agent(&c, "n1");
    let r = sh(&c, "b", &format!("timeout 5 wget -qO- http://{ip_a}:8080/"));
    assert!(
        r.is_err(),
        "b reached a while node1's overlay was down: {r:?}"
    );
    // Send from inside pod a's netns directly (exec needs the dead agent).
    let sa = udp_in(&pod_netns(&c, "a"), "0.0.0.0:0".parse().expect("addr"));
    let _ = sa.send_to(
        b"must not leak",
        (ip_b.parse::<Ipv4Addr>().expect("ip"), 9999),
    );
    // Positive control: after that send, a packet in clear from node1 to node2's underlay
    // must show up in the same capture (it sees the underlay, and the pod's packet, sent
    // first, had its chance to be captured).
    let node2 = node_ip(&c, "node2");
    let control = format!("> {node2}: ICMP echo request");
    eventually(
        "the control packet in the capture",
        Duration::from_secs(10),
        || {
            let _ = on_node(&c, "node1", &["ping", "-c1", "-W1", &node2]);
            let seen = cap.peek();
            if seen.iter().any(|l| l.contains(&control)) {
                Ok(())
            } else {
                Err(format!(
                    "{} packets, none with {control:?}: {seen:?}",
                    seen.len()
                ))
            }
        },
    );
    let lines = cap.lines();
    assert!(lines.iter().any(|l| l.contains(&control)), "{lines:?}");
    let clear = clear_pod_packets(&lines);
    assert!(
        clear.is_empty(),
        "pod traffic in clear with the agent down: {clear:?}"
    );

    assert!(c.script(&["start", "n1"]).status.success());
    eventually("a reaches b again", Duration::from_secs(30), || {
        sh(&c, "a", &format!("timeout 5 wget -qO- http://{ip_b}:8080/"))
    });
    eventually("b reaches a again", Duration::from_secs(30), || {
        sh(&c, "b", &format!("timeout 5 wget -qO- http://{ip_a}:8080/"))
    });
    assert_eq!((cid("a"), cid("b")), (cid_a, cid_b), "pods were restarted");

    // A removed node disappears from every peer list; re-added, it comes back.
    let k3 = wg_key(&c, "node3");
    eventually("node3 is a peer", Duration::from_secs(10), || {
        let p1 = wg_peers(&c, "node1");
        if p1.contains(&k3) {
            Ok(())
        } else {
            Err(format!("node1's peers {p1:?} lack {k3}"))
        }
    });
    kill_agent(&c, "n3");
    c.ctl_ok(&["delete", "node", "node3"]);
    eventually("node3 gone from peers", Duration::from_secs(10), || {
        let (p1, p2) = (wg_peers(&c, "node1"), wg_peers(&c, "node2"));
        if !p1.contains(&k3) && !p2.contains(&k3) && p1.len() == 1 {
            Ok(())
        } else {
            Err(format!("{p1:?} {p2:?}"))
        }
    });
    assert!(c.script(&["start", "n3"]).status.success());
    eventually("node3 a peer again", Duration::from_secs(20), || {
        let (p1, p2) = (wg_peers(&c, "node1"), wg_peers(&c, "node2"));
        if p1.contains(&k3) && p2.contains(&k3) {
            Ok(())
        } else {
            Err(format!("{p1:?} {p2:?}"))
        }
    });
}

/// SIGKILLs a node's agent (its main process) and waits until it is gone.
fn kill_agent(c: &NetnsCluster, node: &str) {
    let pid = c.main_pid(node);
    // SAFETY: kill(2) of the agent process this test's cluster started.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    eventually("the agent process to exit", Duration::from_secs(10), || {
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            Err(format!("pid {pid} still exists"))
        } else {
            Ok(())
        }
    });
}

/// The outside world of a netns cluster (see deploy/netns-cluster): its HTTP server's address.
const WORLD_HTTP: &str = "203.0.113.80";
const WORLD_DNS: &str = "203.0.113.53";

const WORLD_PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: busybox:latest
    command: [sh, -c, "mkdir -p /www && echo inside > /www/index.html && exec httpd -f -p 8080 -h /www"]
    ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, labels: {app: client}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: busybox:latest, command: [sleep, "3600"]}
"#;

/// The InternalIP of a node.
fn node_ip(c: &NetnsCluster, node: &str) -> String {
    let v = c.json(&["get", "node", node]).expect("node");
    v["status"]["addresses"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["type"] == "InternalIP"))
        .and_then(|x| x["address"].as_str())
        .expect("InternalIP")
        .to_string()
}

#[test]
#[ignore = "requires root: network namespaces, TUN, nftables, containers, dnsmasq"]
fn pods_reach_the_world_by_name_and_cluster_names_survive_the_world_dns() {
    let c = NetnsCluster::up("e2eworld", 1, 2, &[]);
    c.ctl_ok(&["image", "import", c.image_tar.to_str().expect("path")]);
    let out = c.apply(WORLD_PODS);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let client = pod_ips(&c, "app=client", 1).remove(0);
    pod_ips(&c, "app=web", 1);
    let svc = eventually(
        "service web with an endpoint",
        Duration::from_secs(20),
        || {
            let s = c.json(&["get", "svc", "web"])?;
            let ip = s
                .pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                .ok_or("no clusterIP")?
                .to_string();
            if endpoint_ips(&c).len() == 1 {
                Ok(ip)
            } else {
                Err("no endpoint yet".to_string())
            }
        },
    );

    // The pod's resolver: the node DNS, Kubernetes' search path and ndots.
    let conf = sh(&c, "client", "cat /etc/resolv.conf").expect("resolv.conf");
    assert!(
        conf.contains("search default.svc.shoal.local svc.shoal.local shoal.local\n")
            && conf.contains("options ndots:5\n"),
        "{conf}"
    );

    // A name only the world's DNS knows resolves in the pod, and its page is fetched by name.
    let ns = eventually(
        "www.world.test from the pod",
        Duration::from_secs(20),
        || sh(&c, "client", "nslookup www.world.test"),
    );
    assert!(ns.contains(WORLD_HTTP), "{ns}");
    let page = eventually("the world's page by name", Duration::from_secs(20), || {
        sh(&c, "client", "timeout 10 wget -qO- http://www.world.test/")
    });
    assert_eq!(
        page.trim(),
        format!("hello from the world of cluster {}", c.name)
    );
    // The world saw the node's address, never the pod's (it has no route back to pods).
    let log = std::fs::read_to_string(format!("/run/shoal-netns/{}/world/http/log", c.name))
        .expect("world http log");
    let node_addr = node_ip(&c, &client.1);
    assert!(log.contains(&format!("{node_addr}:")), "{log}");
    assert!(
        !log.contains("10.244."),
        "a pod address reached the world: {log}"
    );

    // Positive controls for what follows: the world's DNS serves api.world.test (asked
    // directly from the node, so the node DNS has not cached it), cluster names resolve.
    let out = on_node(
        &c,
        &client.1,
        &["busybox", "nslookup", "api.world.test", WORLD_DNS],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains(WORLD_HTTP), "{out:?}");
    let ns = sh(&c, "client", "nslookup web.default.svc.shoal.local").expect("cluster name");
    assert!(ns.contains(&svc), "{ns}");

    // The world's DNS stops: cluster names still resolve (full and short, and serve),
    // an outside name fails fast instead of hanging.
    let out = c.script(&["world", "stop", "dns"]);
    assert!(out.status.success(), "{out:?}");
    let t = Instant::now();
    let ns = sh(&c, "client", "nslookup web.default.svc.shoal.local").expect("cluster name");
    assert!(ns.contains(&svc), "{ns}");
    shoal_testkit::timing(
        "e2e_cluster_name_world_dns_down",
        t.elapsed(),
        Duration::from_secs(3),
    );
    let got = sh(&c, "client", "timeout 10 wget -qO- http://web/").expect("service by short name");
    assert_eq!(got.trim(), "inside");
    let t = Instant::now();
    let bad = sh(&c, "client", "nslookup api.world.test");
    let took = t.elapsed();
    println!("outside name with the world DNS down: {bad:?} after {took:?}");
    assert!(bad.is_err(), "resolved with the world DNS down: {bad:?}");
    assert!(took < Duration::from_secs(4), "took {took:?}");
    let t = Instant::now();
    let bad = sh(&c, "client", "timeout 20 wget -qO- http://api.world.test/");
    let took = t.elapsed();
    println!("wget by an outside name with the world DNS down: {bad:?} after {took:?}");
    assert!(bad.is_err(), "{bad:?}");
    assert!(took < Duration::from_secs(6), "took {took:?}");

    // Back up: the same name resolves and its page loads.
    let out = c.script(&["world", "start", "dns"]);
    assert!(out.status.success(), "{out:?}");
    let page = eventually(
        "api.world.test after the DNS is back",
        Duration::from_secs(20),
        || sh(&c, "client", "timeout 10 wget -qO- http://api.world.test/"),
    );
    assert_eq!(
        page.trim(),
        format!("hello from the world of cluster {}", c.name)
    );
}
