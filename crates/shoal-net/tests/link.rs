//! Root tests of `shoal_net::link`: every test makes its own node network
//! namespace and pod namespaces (plain `ip netns` files), runs the link
//! functions inside the node namespace and checks with real traffic.
#![allow(clippy::unwrap_used)]

use ipnet::Ipv4Net;
use shoal_net::ipam::{PodIpam, gateway};
use shoal_net::link::{self, NodeNet};
use std::fs::File;
use std::future::Future;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A named network namespace (`ip netns add`), deleted on drop.
struct Netns {
    name: String,
    path: PathBuf,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("shl{}-{tag}", std::process::id());
        // A leftover of an earlier, killed run with the same pid.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = PathBuf::from(format!("/run/netns/{name}"));
        Netns { name, path }
    }

    /// Runs a command inside this namespace.
    fn exec(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs a command inside this namespace, asserts success, returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "in {}: {args:?}: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `f` on a thread inside this namespace with its own current-thread runtime.
    fn run<T, Fut, F>(&self, f: F) -> T
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        let path = self.path.clone();
        std::thread::spawn(move || {
            let ns = File::open(&path).unwrap();
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(f())
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn node_net() -> NodeNet {
    NodeNet {
        bridge: link::BRIDGE.to_string(),
        pod_cidr: "10.244.1.0/24".parse().unwrap(),
        cluster_cidr: "10.244.0.0/16".parse().unwrap(),
        mtu: 1420,
    }
}

fn ensure(node: &Netns, n: &NodeNet) {
    let n = n.clone();
    node.run(move || async move { link::ensure_node(&n).await })
        .unwrap();
}

fn attach(node: &Netns, n: &NodeNet, pod: &Netns, sandbox: &str, ip: Ipv4Addr) {
    let (n, path, sandbox) = (n.clone(), pod.path.clone(), sandbox.to_string());
    node.run(move || async move { link::attach_pod(&n, &path, &sandbox, ip).await })
        .unwrap();
}

fn detach(node: &Netns, sandbox: &str) {
    let sandbox = sandbox.to_string();
    node.run(move || async move { link::detach_pod(&sandbox).await })
        .unwrap();
}

fn sync_routes(node: &Netns, iface: &str, remote: &[&str], src: Ipv4Addr) {
    let iface = iface.to_string();
    let remote: Vec<Ipv4Net> = remote.iter().map(|s| s.parse().unwrap()).collect();
    node.run(move || async move { link::sync_overlay_routes(&iface, &remote, src).await })
        .unwrap();
}

/// Pings `ip` once from `from` until it answers or `timeout` passes.
fn ping_ok(from: &Netns, ip: Ipv4Addr, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let out = from.exec(&["ping", "-c1", "-W1", &ip.to_string()]);
        if out.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "ping {ip} from {} failed: {}{}",
            from.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ip4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// Names of the links in `ns` starting with `prefix`.
fn links_with_prefix(ns: &Netns, prefix: &str) -> Vec<String> {
    ns.ok(&["ip", "-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

#[test]
#[ignore = "requires root: network namespaces"]
fn two_pods_on_one_node_reach_each_other_and_the_gateway() {
    let node = Netns::new("node-a");
    let pod_a = Netns::new("pod-a1");
    let pod_b = Netns::new("pod-a2");
    let n = node_net();
    let gw = gateway(n.pod_cidr);
    let dir = tempfile::tempdir().unwrap();
    let ipam = PodIpam::open(dir.path(), n.pod_cidr).unwrap();
    let ip_a = ipam.allocate("sandbox-a").unwrap();
    let ip_b = ipam.allocate("sandbox-b").unwrap();

    // New namespaces may inherit forwarding from the host: start from off.
    node.ok(&["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
    assert_eq!(
        node.ok(&["cat", "/proc/sys/net/ipv4/ip_forward"]).trim(),
        "0"
    );
    ensure(&node, &n);
    assert_eq!(
        node.ok(&["cat", "/proc/sys/net/ipv4/ip_forward"]).trim(),
        "1"
    );
    let t = Instant::now();
    attach(&node, &n, &pod_a, "sandbox-a", ip_a);
    let first = t.elapsed();
    attach(&node, &n, &pod_b, "sandbox-b", ip_b);
    let t = Instant::now();
    attach(&node, &n, &pod_a, "sandbox-a", ip_a);
    eprintln!(
        "attach_pod: new veth {first:?}, already attached {:?}",
        t.elapsed()
    );

    ping_ok(&pod_a, ip_b, Duration::from_secs(10));
    ping_ok(&pod_b, ip_a, Duration::from_secs(10));
    ping_ok(&pod_a, gw, Duration::from_secs(10));
    ping_ok(&node, ip_b, Duration::from_secs(10));
    // lo is up in the pod.
    ping_ok(&pod_a, ip4("127.0.0.1"), Duration::from_secs(5));

    // Pod side: eth0 with the IP, MTU 1420, default route via the gateway.
    let addr = pod_a.ok(&["ip", "-o", "-4", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains(&format!("inet {ip_a}/24")), "{addr}");
    let eth0 = pod_a.ok(&["ip", "-o", "link", "show", "eth0"]);
    assert!(
        eth0.contains("mtu 1420") && eth0.contains("state UP"),
        "{eth0}"
    );
    let default = pod_a.ok(&["ip", "route", "show", "default"]);
    assert!(
        default.contains(&format!("default via {gw} dev eth0")),
        "{default}"
    );

    // Node side: bridge with the gateway and MTU; host veth on it with MTU.
    let br = node.ok(&["ip", "-o", "link", "show", "shoal0"]);
    assert!(br.contains("mtu 1420") && br.contains("UP"), "{br}");
    let braddr = node.ok(&["ip", "-o", "-4", "addr", "show", "dev", "shoal0"]);
    assert!(braddr.contains(&format!("inet {gw}/24")), "{braddr}");
    let host = link::host_veth_name("sandbox-a");
    let veth = node.ok(&["ip", "-o", "link", "show", &host]);
    assert!(
        veth.contains("mtu 1420") && veth.contains("master shoal0") && veth.contains("state UP"),
        "{veth}"
    );
    let unreachable = node.ok(&["ip", "route", "show", "type", "unreachable"]);
    assert!(
        unreachable.starts_with("unreachable 10.244.0.0/16 ")
            && unreachable.contains(" metric 4000"),
        "{unreachable}"
    );
}

#[test]
#[ignore = "requires root: network namespaces"]
fn attach_and_ensure_are_idempotent_and_detach_removes_the_veth() {
    let node = Netns::new("node-b");
    let pod = Netns::new("pod-b1");
    let other = Netns::new("pod-b2");
    let n = node_net();
    let (ip, ip_other) = (ip4("10.244.1.10"), ip4("10.244.1.11"));

    ensure(&node, &n);
    ensure(&node, &n);
    attach(&node, &n, &pod, "sb-b1", ip);
    attach(&node, &n, &other, "sb-b2", ip_other);
    let eth0_before = pod.ok(&["ip", "-o", "link", "show", "eth0"]);
    // Again, as after an agent restart: nothing is recreated, nothing duplicated.
    ensure(&node, &n);
    attach(&node, &n, &pod, "sb-b1", ip);
    assert_eq!(pod.ok(&["ip", "-o", "link", "show", "eth0"]), eth0_before);
    let addrs = pod.ok(&["ip", "-o", "-4", "addr", "show", "dev", "eth0"]);
    assert_eq!(addrs.lines().count(), 1, "{addrs}");
    let routes = node.ok(&["ip", "route", "show", "type", "unreachable"]);
    assert_eq!(routes.lines().count(), 1, "{routes}");
    let braddr = node.ok(&["ip", "-o", "-4", "addr", "show", "dev", "shoal0"]);
    assert_eq!(braddr.lines().count(), 1, "{braddr}");
    assert_eq!(links_with_prefix(&node, "vsh").len(), 2);
    ping_ok(&pod, ip_other, Duration::from_secs(10));

    // A veth pair half gone (its host side deleted behind our back) is rebuilt.
    let host = link::host_veth_name("sb-b1");
    node.ok(&["ip", "link", "del", &host]);
    attach(&node, &n, &pod, "sb-b1", ip);
    ping_ok(&pod, ip_other, Duration::from_secs(10));

    detach(&node, "sb-b1");
    assert_eq!(
        links_with_prefix(&node, "vsh"),
        vec![link::host_veth_name("sb-b2")]
    );
    assert!(
        !pod.exec(&["ip", "link", "show", "eth0"]).status.success(),
        "eth0 still in the pod"
    );
    // Absent -> Ok.
    detach(&node, "sb-b1");
    // Attaching again after detach works.
    attach(&node, &n, &pod, "sb-b1", ip);
    ping_ok(&pod, ip_other, Duration::from_secs(10));
}

#[test]
#[ignore = "requires root: network namespaces"]
fn sync_overlay_routes_makes_the_routes_exactly_the_remote_cidrs() {
    let node = Netns::new("node-c");
    let n = node_net();
    let gw = gateway(n.pod_cidr);
    ensure(&node, &n);
    // A TUN link, as the userspace WireGuard uses.
    node.ok(&["ip", "tuntap", "add", "dev", "wgtest0", "mode", "tun"]);
    node.ok(&["ip", "link", "set", "wgtest0", "up"]);
    let routes = || {
        let mut r: Vec<String> = node
            .ok(&["ip", "route", "show", "dev", "wgtest0"])
            .lines()
            // No process holds the TUN open: no carrier.
            .map(|l| l.trim().trim_end_matches(" linkdown").to_string())
            .collect();
        r.sort();
        r
    };
    let want = |nets: &[&str]| -> Vec<String> {
        nets.iter()
            .map(|d| format!("{d} proto static scope link src {gw}"))
            .collect()
    };

    sync_routes(&node, "wgtest0", &["10.244.2.0/24", "10.244.3.0/24"], gw);
    assert_eq!(routes(), want(&["10.244.2.0/24", "10.244.3.0/24"]));
    sync_routes(&node, "wgtest0", &["10.244.2.0/24", "10.244.3.0/24"], gw);
    assert_eq!(routes(), want(&["10.244.2.0/24", "10.244.3.0/24"]));
    // Node-originated packets to a remote pod use the gateway as source.
    let get = node.ok(&["ip", "route", "get", "10.244.3.9"]);
    assert!(get.contains(&format!("dev wgtest0 src {gw}")), "{get}");

    sync_routes(&node, "wgtest0", &["10.244.3.0/24", "10.244.4.0/24"], gw);
    assert_eq!(routes(), want(&["10.244.3.0/24", "10.244.4.0/24"]));
    // A route without our preferred source is replaced.
    node.ok(&["ip", "route", "add", "10.244.5.0/24", "dev", "wgtest0"]);
    sync_routes(&node, "wgtest0", &["10.244.3.0/24", "10.244.5.0/24"], gw);
    assert_eq!(routes(), want(&["10.244.3.0/24", "10.244.5.0/24"]));
    sync_routes(&node, "wgtest0", &[], gw);
    assert_eq!(routes(), Vec::<String>::new());

    // A missing interface is an error naming it.
    let err = node
        .run(|| async { link::sync_overlay_routes("nosuchwg0", &[], ip4("10.244.1.1")).await })
        .unwrap_err();
    assert!(err.to_string().contains("nosuchwg0"), "{err}");
}

#[test]
#[ignore = "requires root: network namespaces"]
fn teardown_node_removes_bridge_veths_and_unreachable_route() {
    let node = Netns::new("node-d");
    let pod_a = Netns::new("pod-d1");
    let pod_b = Netns::new("pod-d2");
    let n = node_net();
    ensure(&node, &n);
    attach(&node, &n, &pod_a, "sb-d1", ip4("10.244.1.2"));
    attach(&node, &n, &pod_b, "sb-d2", ip4("10.244.1.3"));
    assert_eq!(links_with_prefix(&node, "vsh").len(), 2);
    let mut want = vec![link::host_veth_name("sb-d1"), link::host_veth_name("sb-d2")];
    want.sort();
    assert_eq!(
        node.run(|| async { link::pod_veths().await }).unwrap(),
        want
    );

    let n2 = n.clone();
    node.run(move || async move { link::teardown_node(&n2).await })
        .unwrap();
    assert!(links_with_prefix(&node, "vsh").is_empty());
    assert!(links_with_prefix(&node, "shoal0").is_empty());
    assert!(
        node.run(|| async { link::pod_veths().await })
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        node.ok(&["ip", "route", "show", "type", "unreachable"])
            .trim(),
        ""
    );
    for pod in [&pod_a, &pod_b] {
        assert!(!pod.exec(&["ip", "link", "show", "eth0"]).status.success());
    }
    // Absent things -> Ok.
    let n3 = n.clone();
    node.run(move || async move { link::teardown_node(&n3).await })
        .unwrap();
}

#[test]
#[ignore = "requires root: network namespaces"]
fn cluster_traffic_without_an_overlay_route_is_unreachable() {
    let node = Netns::new("node-e");
    let pod = Netns::new("pod-e1");
    let ext = Netns::new("ext-e");
    let n = node_net();
    let gw = gateway(n.pod_cidr);
    // An uplink to a neighbour that holds the cluster addresses we ping and
    // routes the cluster CIDR back to us: a packet that leaked through the
    // default route would get an answer.
    node.ok(&[
        "ip", "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink0p", "netns",
        &ext.name,
    ]);
    node.ok(&["ip", "addr", "add", "192.168.77.1/24", "dev", "uplink0"]);
    node.ok(&["ip", "link", "set", "uplink0", "up"]);
    node.ok(&["ip", "route", "add", "default", "via", "192.168.77.2"]);
    ext.ok(&["ip", "addr", "add", "192.168.77.2/24", "dev", "uplink0p"]);
    ext.ok(&["ip", "link", "set", "uplink0p", "up"]);
    ext.ok(&["ip", "link", "set", "lo", "up"]);
    ext.ok(&["ip", "addr", "add", "10.244.2.7/32", "dev", "lo"]);
    ext.ok(&["ip", "addr", "add", "10.244.200.1/32", "dev", "lo"]);
    ext.ok(&["ip", "route", "add", "10.244.0.0/16", "via", "192.168.77.1"]);
    node.ok(&["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
    ensure(&node, &n);
    attach(&node, &n, &pod, "sb-e1", ip4("10.244.1.2"));
    ping_ok(&pod, gw, Duration::from_secs(10));
    // Forwarding through the node works (ip_forward was turned on).
    ping_ok(&pod, ip4("192.168.77.2"), Duration::from_secs(10));

    // Control: without the fail-closed route, cluster traffic leaks out of
    // the uplink and is answered; ensure_node puts the route back.
    node.ok(&[
        "ip",
        "route",
        "del",
        "unreachable",
        "10.244.0.0/16",
        "metric",
        "4000",
    ]);
    ping_ok(&pod, ip4("10.244.200.1"), Duration::from_secs(10));
    ensure(&node, &n);

    // An overlay link with a route to a remote pod CIDR, then it dies
    // (as when the userspace WireGuard process exits): its routes vanish.
    node.ok(&["ip", "tuntap", "add", "dev", "wgtest1", "mode", "tun"]);
    node.ok(&["ip", "link", "set", "wgtest1", "up"]);
    sync_routes(&node, "wgtest1", &["10.244.2.0/24"], gw);
    let via = node.ok(&["ip", "route", "get", "10.244.2.7"]);
    assert!(via.contains("dev wgtest1"), "{via}");
    node.ok(&["ip", "tuntap", "del", "dev", "wgtest1", "mode", "tun"]);

    for target in ["10.244.2.7", "10.244.200.1"] {
        let get = node.exec(&["ip", "route", "get", target]);
        assert!(
            !get.status.success(),
            "route to {target} exists: {}",
            String::from_utf8_lossy(&get.stdout)
        );
        let start = Instant::now();
        let out = pod.exec(&["ping", "-c1", "-W5", target]);
        let took = start.elapsed();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "ping {target} succeeded: {text}");
        assert!(
            text.to_lowercase().contains("unreachable"),
            "ping {target}: {text}"
        );
        // Answered by our own gateway, not by anything beyond the node.
        assert!(
            text.contains(&format!("From {gw}")),
            "ping {target}: {text}"
        );
        assert!(
            took < Duration::from_secs(3),
            "ping {target} took {took:?} (timed out instead of failing fast): {text}"
        );
    }
    // Addresses outside the cluster CIDR still follow the default route.
    let out = node.ok(&["ip", "route", "get", "192.0.2.1"]);
    assert!(out.contains("dev uplink0"), "{out}");
}
