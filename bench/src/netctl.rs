//! `shoal-bench netctl`: the pod network's control path on one node — how long replacing the
//! node's nftables table takes for growing numbers of services (the agent replaces it whole on
//! every Service/Endpoints change), the same with network policies over many pods and the
//! in-place set update a pod change costs under them, and how fast the node DNS answers a
//! known name and an unknown one. Runs `shoal-net` itself (the agent's code) in a fresh network namespace: start
//! it through `scripts/bench-netctl.sh`, which wraps it in `unshare -n`.

use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use shoal_net::dns::{self, DnsTable};
use shoal_net::netpol::{Peers, PolicyRule, PolicyRules, PortRange};
use shoal_net::nft::{self, Backend, NodeRules, Proto, ServiceRule, UpdateKind};

use crate::percentile;

/// Table name used by the benchmark (never the agent's `shoal`).
const TABLE: &str = "shoal_bench";
/// DNS zone, as the agent's default.
const ZONE: &str = "shoal.local";

/// Options of `shoal-bench netctl`.
#[derive(Debug, Clone, clap::Args)]
pub struct NetctlArgs {
    /// Comma-separated numbers of services (3 ready endpoints each) to program.
    #[arg(long, default_value = "10,100,1000")]
    pub services: String,
    /// Table replacements timed per size.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// DNS queries per kind (known name, unknown name).
    #[arg(long, default_value_t = 5000)]
    pub queries: usize,
    /// Service names in the DNS table.
    #[arg(long, default_value_t = 1000)]
    pub records: usize,
    /// Pods in the cluster for the network policy case (250 per node; this node is the first).
    #[arg(long, default_value_t = 1000)]
    pub policy_pods: usize,
    /// Network policies for the policy case (each selects the pods with one label value).
    #[arg(long, default_value_t = 100)]
    pub policies: usize,
}

/// Runs both measurements and prints one markdown table each.
pub async fn run(a: NetctlArgs) -> anyhow::Result<()> {
    // A fresh namespace has nothing but `lo`: never program a host's real one.
    let dev =
        std::fs::read_to_string("/proc/self/net/dev").context("reading /proc/self/net/dev")?;
    let links: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .collect();
    if links.iter().any(|l| l.trim() != "lo") {
        bail!("run inside a fresh network namespace: scripts/bench-netctl.sh (unshare -n)");
    }
    let sizes: Vec<usize> = a
        .services
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .with_context(|| format!("--services: {s:?}"))
        })
        .collect::<anyhow::Result<_>>()?;
    println!("| services | endpoints | script KiB | render ms | update ms p50 | p90 | max |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for n in sizes {
        let rules = node_rules(n);
        let t = Instant::now();
        let script = nft::render(&rules);
        let render = t.elapsed();
        let mut took = Vec::with_capacity(a.runs);
        for _ in 0..a.runs {
            let t = Instant::now();
            nft::apply(&rules).with_context(|| format!("nft apply of {n} services"))?;
            took.push(t.elapsed());
        }
        took.sort();
        println!(
            "| {n} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} |",
            n * 3,
            script.len() as f64 / 1024.0,
            render.as_secs_f64() * 1000.0,
            percentile(&took, 0.5),
            percentile(&took, 0.9),
            percentile(&took, 1.0),
        );
    }
    nft::remove(TABLE).context("removing the benchmark table")?;
    policy_updates(&a)?;
    nft::remove(TABLE).context("removing the benchmark table")?;
    dns_latency(&a).await
}

/// Pod `i` of the policy case: 250 per node, this node holding pods 0..250.
fn policy_pod(i: usize) -> Ipv4Addr {
    let (node, host) = (i / 250, i % 250);
    Ipv4Addr::new(10, 244, u8::try_from(node).unwrap_or(255), 2 + host as u8)
}

/// `pods` pods labelled `app=a(i % policies)`; policy k selects label `a{k}`, allows ingress
/// from `a{k+1}` on TCP 8080 and from 192.168.k.0/24 on UDP 53, and egress to `a{k+2}` on
/// TCP 5432. `extra` adds pod `pods` (local, label `a0`).
fn policy_rules(pods: usize, policies: usize, extra: bool) -> Vec<PolicyRules> {
    let n = pods + usize::from(extra);
    let with = |k: usize, local: bool| -> BTreeSet<Ipv4Addr> {
        (0..n)
            .filter(|i| i % policies == k % policies && (!local || *i < 250 || *i == pods))
            .map(|i| {
                if i == pods {
                    Ipv4Addr::new(10, 244, 0, 253)
                } else {
                    policy_pod(i)
                }
            })
            .collect()
    };
    let tcp = |p: u16| PortRange {
        proto: Proto::Tcp,
        first: p,
        last: p,
    };
    (0..policies)
        .map(|k| PolicyRules {
            id: format!("default/p{k}"),
            selected: with(k, true),
            ingress: Some(vec![
                PolicyRule {
                    peers: Some(Peers {
                        pods: Some(with(k + 1, false)),
                        ranges: vec![],
                    }),
                    ports: vec![tcp(8080)],
                },
                PolicyRule {
                    peers: Some(Peers {
                        pods: None,
                        ranges: vec![(
                            Ipv4Addr::new(192, 168, k as u8, 0),
                            Ipv4Addr::new(192, 168, k as u8, 255),
                        )],
                    }),
                    ports: vec![PortRange {
                        proto: Proto::Udp,
                        first: 53,
                        last: 53,
                    }],
                },
            ]),
            egress: Some(vec![PolicyRule {
                peers: Some(Peers {
                    pods: Some(with(k + 2, false)),
                    ranges: vec![],
                }),
                ports: vec![tcp(5432)],
            }]),
        })
        .collect()
}

/// The policy case: full render + apply of 100 services and the policies, then one pod
/// added and removed again, each an in-place set update ([`nft::update`]).
fn policy_updates(a: &NetctlArgs) -> anyhow::Result<()> {
    let mut base = node_rules(100);
    base.policies = policy_rules(a.policy_pods, a.policies, false);
    let mut more = base.clone();
    more.policies = policy_rules(a.policy_pods, a.policies, true);
    let t = Instant::now();
    let script = nft::render(&base);
    let render = t.elapsed();
    let mut full = Vec::with_capacity(a.runs);
    for _ in 0..a.runs {
        let t = Instant::now();
        nft::apply(&base).context("nft apply with policies")?;
        full.push(t.elapsed());
    }
    full.sort();
    let (mut now, _) = nft::update(None, &base).context("nft update")?;
    let (mut add, mut del) = (Vec::new(), Vec::new());
    for _ in 0..a.runs {
        for (rules, took) in [(&more, &mut add), (&base, &mut del)] {
            let t = Instant::now();
            let (next, kind) = nft::update(Some(&now), rules).context("nft update of one pod")?;
            took.push(t.elapsed());
            if kind != UpdateKind::Elements {
                bail!("a pod change took a {kind:?} update, expected set elements only");
            }
            now = next;
        }
    }
    add.sort();
    del.sort();
    let set_elements: usize = nft::rendered(&base)
        .dynamic
        .values()
        .map(BTreeSet::len)
        .sum();
    println!();
    println!(
        "{} pods ({} on this node), {} policies (3 rules each), 100 services; {} pod addresses in sets, script {:.0} KiB, render {:.1} ms:",
        a.policy_pods,
        a.policy_pods.min(250),
        a.policies,
        set_elements,
        script.len() as f64 / 1024.0,
        render.as_secs_f64() * 1000.0
    );
    println!();
    println!("| update | ms p50 | p90 | max |");
    println!("|---|---:|---:|---:|");
    for (name, t) in [
        ("full render + apply", &full),
        ("one pod added (in place)", &add),
        ("one pod removed (in place)", &del),
    ] {
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} |",
            percentile(t, 0.5),
            percentile(t, 0.9),
            percentile(t, 1.0)
        );
    }
    Ok(())
}

/// `n` ClusterIP services of one TCP port each, every one with 3 ready endpoints; every
/// tenth also a NodePort.
fn node_rules(n: usize) -> NodeRules {
    let services = (0..n)
        .map(|i| {
            let i = u16::try_from(i).unwrap_or(u16::MAX);
            ServiceRule {
                id: format!("default/svc{i}/http"),
                cluster_ip: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 10)) + u32::from(i)),
                port: 80,
                protocol: Proto::Tcp,
                node_port: (i % 10 == 0).then(|| 30000 + i / 10),
                backends: (0..3u32)
                    .map(|b| Backend {
                        ip: Ipv4Addr::from(
                            u32::from(Ipv4Addr::new(10, 244, 0, 2)) + b * 256 + u32::from(i) % 250,
                        ),
                        port: 8080,
                    })
                    .collect(),
            }
        })
        .collect();
    NodeRules {
        table: TABLE.to_string(),
        bridge: "shoal0".to_string(),
        pod_cidr: "10.244.0.0/24".parse().expect("cidr"),
        cluster_cidr: "10.244.0.0/16".parse().expect("cidr"),
        service_cidr: "10.96.0.0/16".parse().expect("cidr"),
        gateway: Ipv4Addr::new(10, 244, 0, 1),
        services,
        host_ports: Vec::new(),
        protected: vec![
            (Ipv4Addr::new(192, 0, 2, 1), 7000),
            (Ipv4Addr::new(192, 0, 2, 1), 7100),
        ],
        policies: Vec::new(),
    }
}

/// Sequential UDP queries against `dns::serve` on loopback: known names, then unknown ones.
async fn dns_latency(a: &NetctlArgs) -> anyhow::Result<()> {
    set_loopback_up()?;
    let table = DnsTable::new();
    let records: HashMap<String, Vec<Ipv4Addr>> = (0..a.records)
        .map(|i| {
            let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 10)) + i as u32);
            (format!("svc{i}.default.svc.{ZONE}"), vec![ip])
        })
        .collect();
    table.replace(records);
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let addr = udp.local_addr()?;
    let tcp = tokio::net::TcpListener::bind(addr).await?;
    let server = tokio::spawn(async move { dns::serve_sockets(udp, tcp, ZONE, table).await });
    let (queries, records) = (a.queries, a.records);
    let rows = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
        let mut rows = Vec::new();
        for (kind, want) in [
            ("known", ResponseCode::NoError),
            ("unknown", ResponseCode::NXDomain),
        ] {
            let mut took = Vec::with_capacity(queries);
            let start = Instant::now();
            for i in 0..queries {
                let name = match kind {
                    "known" => format!("svc{}.default.svc.{ZONE}.", i % records),
                    _ => format!("nope{i}.example."),
                };
                let (code, t) = query(addr, &name)?;
                if code != want {
                    bail!("{name}: answered {code}, expected {want}");
                }
                took.push(t);
            }
            let wall = start.elapsed();
            took.sort();
            rows.push(format!(
                "| {kind} | {queries} | {:.3} | {:.3} | {:.3} | {:.0} |",
                percentile(&took, 0.5),
                percentile(&took, 0.99),
                percentile(&took, 1.0),
                queries as f64 / wall.as_secs_f64(),
            ));
        }
        Ok(rows)
    })
    .await??;
    server.abort();
    println!();
    println!("| name | queries | ms p50 | p99 | max | queries/s (one client) |");
    println!("|---|---:|---:|---:|---:|---:|");
    for r in rows {
        println!("{r}");
    }
    Ok(())
}

/// One A query over UDP; the response code and the round trip.
fn query(server: SocketAddr, name: &str) -> anyhow::Result<(ResponseCode, Duration)> {
    let mut m = Message::new();
    m.set_id(0x5348).set_recursion_desired(true);
    m.add_query(Query::query(Name::from_ascii(name)?, RecordType::A));
    let q = m.to_vec()?;
    let s = UdpSocket::bind("127.0.0.1:0")?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 1500];
    let start = Instant::now();
    s.send_to(&q, server)?;
    let (n, _) = s
        .recv_from(&mut buf)
        .with_context(|| format!("no answer for {name}"))?;
    let took = start.elapsed();
    Ok((Message::from_vec(&buf[..n])?.response_code(), took))
}

/// A fresh network namespace starts with `lo` down.
fn set_loopback_up() -> anyhow::Result<()> {
    let st = std::process::Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .context("running ip")?;
    if !st.success() {
        bail!("ip link set lo up failed: {st}");
    }
    Ok(())
}
