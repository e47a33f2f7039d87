//! NetworkPolicy on a real cluster (1 controller + 2 agents): a client on another node
//! connects to a server in a loop; a deny-all ingress policy stops it, an allow policy for
//! the client's label lets it through again, relabelling the client denies it again. TCP
//! and UDP, across nodes and on the same node; egress of a pod limited to the server, DNS
//! only once a rule allows port 53.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::harness::{NetnsCluster, eventually, ready_ip as ip_of};
use crate::network::{pod_netns, sh, udp_in};

const UDP_PORT: u16 = 9999;

fn httpd(name: &str, node: &str, labels: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{{labels}}}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  nodeSelector: {{node: {node}}}\n  containers:\n  - {{name: main, image: busybox:latest, command: [sh, -c, 'mkdir -p /www; echo {name} > /www/index.html; {extra}exec httpd -f -p 8080 -h /www']}}\n"
    )
}

fn apply(c: &NetnsCluster, yaml: &str) {
    let out = c.apply(yaml);
    assert!(
        out.status.success(),
        "apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One TCP request from pod `from` to `ip`:8080 (a fresh connection). `timeout`, not
/// wget's `-T`: busybox 1.35's wget crashes with `-T`.
fn tcp(c: &NetnsCluster, from: &str, ip: &str) -> Result<String, String> {
    sh(c, from, &format!("timeout 3 wget -qO- http://{ip}:8080/"))
}

/// The last `n` results of the client's connection loop.
fn loop_tail(c: &NetnsCluster, n: usize) -> Result<Vec<String>, String> {
    let out = sh(c, "client", &format!("tail -n {n} /tmp/loop"))?;
    let lines: Vec<String> = out.lines().map(String::from).collect();
    if lines.len() < n {
        return Err(format!("only {} results yet", lines.len()));
    }
    Ok(lines)
}

/// Waits until the client's loop gives only `want` ("ok"/"fail") for 3 connections running.
fn loop_settles(c: &NetnsCluster, what: &str, want: &str) -> Duration {
    let start = Instant::now();
    eventually(what, Duration::from_secs(60), || {
        let t = loop_tail(c, 3)?;
        if t.iter().all(|l| l == want) {
            Ok(())
        } else {
            Err(format!("last results {t:?}"))
        }
    });
    start.elapsed()
}

/// True when one datagram from pod `from` (a fresh socket, so a fresh conntrack entry)
/// reaches the server's socket within a second.
fn udp_reaches(c: &NetnsCluster, from: &str, server: &std::net::UdpSocket, to: Ipv4Addr) -> bool {
    let client = udp_in(&pod_netns(c, from), "0.0.0.0:0".parse().expect("addr"));
    let token = format!("{from}-{:?}", Instant::now());
    let _ = client.send_to(token.as_bytes(), (to, UDP_PORT));
    server
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut buf = [0u8; 256];
    while Instant::now() < deadline {
        if let Ok((n, _)) = server.recv_from(&mut buf)
            && buf[..n] == *token.as_bytes()
        {
            return true;
        }
    }
    false
}

fn expect_udp(
    c: &NetnsCluster,
    from: &str,
    server: &std::net::UdpSocket,
    to: Ipv4Addr,
    want: bool,
) {
    eventually(
        &format!(
            "UDP from {from} {}",
            if want { "allowed" } else { "denied" }
        ),
        Duration::from_secs(30),
        || {
            if udp_reaches(c, from, server, to) == want {
                Ok(())
            } else {
                Err("not yet".to_string())
            }
        },
    );
}

fn expect_tcp(c: &NetnsCluster, from: &str, ip: &str, want: bool) {
    eventually(
        &format!(
            "TCP from {from} to {ip} {}",
            if want { "allowed" } else { "denied" }
        ),
        Duration::from_secs(30),
        || match (tcp(c, from, ip), want) {
            (Ok(_), true) | (Err(_), false) => Ok(()),
            (r, _) => Err(format!("{r:?}")),
        },
    );
}

const DENY_ALL: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
";

const ALLOW_CLIENTS: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-clients}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress:
  - from: [{podSelector: {matchLabels: {role: client}}}]
    ports: [{protocol: TCP, port: 8080}, {protocol: UDP, port: 9999}]
";

fn egress_policy(dns: bool) -> String {
    let dns = if dns {
        "  - ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 53}]\n"
    } else {
        ""
    };
    format!(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: local-egress}}
spec:
  podSelector: {{matchLabels: {{egress: limited}}}}
  policyTypes: [Egress]
  egress:
  - to: [{{namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: default}}}}, podSelector: {{matchLabels: {{app: server}}}}}}]
    ports: [{{protocol: TCP, port: 8080}}]
{dns}"
    )
}

#[test]
#[ignore = "requires root: network namespaces, TUN, nftables, containers"]
fn network_policy_allows_and_denies_tcp_udp_across_nodes_and_follows_updates() {
    let c = NetnsCluster::up("e2enp", 1, 2, &[]);
    c.ctl_ok(&["image", "import", c.image_tar.to_str().expect("path")]);
    apply(&c, &httpd("server", "node1", "app: server", ""));
    apply(&c, &httpd("other", "node2", "role: other", ""));
    apply(
        &c,
        &httpd("local", "node1", "role: client, egress: limited", ""),
    );
    let server_ip = ip_of(&c, "server");
    let other_ip = ip_of(&c, "other");
    ip_of(&c, "local");
    // The client (node2) connects to the server (node1) in a loop, one result a line.
    let looped = format!(
        "(while true; do if timeout 2 wget -qO- http://{server_ip}:8080/ >/dev/null 2>&1; then echo ok; else echo fail; fi >> /tmp/loop; sleep 0.2; done) & "
    );
    apply(&c, &httpd("client", "node2", "role: client", &looped));
    ip_of(&c, "client");
    let server_addr: Ipv4Addr = server_ip.parse().expect("ip");
    let udp_server = udp_in(
        &pod_netns(&c, "server"),
        SocketAddr::from(([0, 0, 0, 0], UDP_PORT)),
    );

    // No policy: everyone reaches the server, over TCP and UDP.

    loop_settles(&c, "the loop connects without a policy", "ok");
    expect_tcp(&c, "other", &server_ip, true);
    expect_udp(&c, "client", &udp_server, server_addr, true);

    // Deny all ingress to the server: the loop fails within seconds, across nodes and on
    // the same node, TCP and UDP.
    apply(&c, DENY_ALL);
    let took = loop_settles(&c, "the loop is denied", "fail");
    println!("deny-all took effect for the running loop within {took:?}");
    expect_tcp(&c, "local", &server_ip, false);
    expect_udp(&c, "client", &udp_server, server_addr, false);
    // The server still reaches out (ingress only), and replies to it flow back.
    expect_tcp(&c, "server", &other_ip, true);

    // Allow role=client on TCP 8080 and UDP 9999: the loop connects again; `other` not.
    apply(&c, ALLOW_CLIENTS);
    let took = loop_settles(&c, "the loop is allowed again", "ok");
    println!("the allow policy took effect within {took:?}");
    expect_tcp(&c, "local", &server_ip, true);
    expect_tcp(&c, "other", &server_ip, false);
    expect_udp(&c, "client", &udp_server, server_addr, true);
    expect_udp(&c, "other", &udp_server, server_addr, false);

    // Relabel the client: denied again (a set element removed in place).
    c.ctl_ok(&["label", "pod", "client", "role=gone", "--overwrite"]);
    let took = loop_settles(&c, "the relabelled client is denied", "fail");
    println!("relabelling took effect within {took:?}");
    expect_udp(&c, "client", &udp_server, server_addr, false);

    // Egress of `local` (node1): only the server's TCP 8080, in a namespace picked by its
    // kubernetes.io/metadata.name label; no DNS without a rule for it.
    apply(&c, &egress_policy(false));
    expect_tcp(&c, "local", &other_ip, false);
    expect_tcp(&c, "local", &server_ip, true);
    let lookup = "nslookup server.default.pod.shoal.local";
    eventually(
        "DNS denied under egress",
        Duration::from_secs(30),
        || match sh(&c, "local", &format!("timeout 4 {lookup}")) {
            Err(_) => Ok(()),
            Ok(o) => Err(format!("answered: {o}")),
        },
    );
    expect_udp(&c, "local", &udp_server, server_addr, false);
    apply(&c, &egress_policy(true));
    eventually(
        "DNS allowed by an egress rule",
        Duration::from_secs(30),
        || {
            sh(&c, "local", &format!("timeout 4 {lookup}"))
                .and_then(|o| o.contains(&server_ip).then_some(()).ok_or(o))
        },
    );
    expect_tcp(&c, "local", &other_ip, false);

    // Policies deleted: open again.
    c.ctl_ok(&[
        "delete",
        "networkpolicy",
        "deny-all",
        "allow-clients",
        "local-egress",
    ]);
    loop_settles(&c, "the loop connects once the policies are gone", "ok");
    expect_tcp(&c, "local", &other_ip, true);
    expect_udp(&c, "other", &udp_server, server_addr, true);
    // The agents' tables keep no policy sets.
    for node in ["node1", "node2"] {
        let sets = c.exec_ok(node, &["nft", "-t", "list", "sets", "ip"]);
        assert!(!sets.contains("set np-"), "{node}: {sets}");
    }
}
