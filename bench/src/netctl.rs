//! `shoal-bench netctl`: the pod network's control path on one node — how long replacing the
//! node's nftables table takes for growing numbers of services (the agent replaces it whole on
//! every Service/Endpoints/Pod change), and how fast the node DNS answers a known name and an
//! unknown one. Runs `shoal-net` itself (the agent's code) in a fresh network namespace: start
//! it through `scripts/bench-netctl.sh`, which wraps it in `unshare -n`.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use shoal_net::dns::{self, DnsTable};
use shoal_net::nft::{self, Backend, NodeRules, Proto, ServiceRule};

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
    dns_latency(&a).await
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
