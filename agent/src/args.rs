//! Command-line arguments of the agent (`shoal-agent --name N --controller …`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// Arguments of the agent itself (top-level flags of `shoal-agent`).
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// This node's name (the Node object `Node//<name>`).
    #[arg(long)]
    pub name: Option<String>,
    /// Controller addresses, `HOST:PORT[,HOST:PORT…]`; the agent fails over between them.
    #[arg(long, env = "SHOAL_SERVER", default_value = "127.0.0.1:7000")]
    pub controller: String,
    /// Join token for the first start (from `shoalctl token create`); not needed once the
    /// node has its certificate in --data-dir.
    #[arg(
        long,
        env = "SHOAL_JOIN_TOKEN",
        value_name = "ID.SECRET",
        hide_env_values = true
    )]
    pub join_token: Option<String>,
    /// The cluster CA's hash for the first start (`sha256:HEX`, printed by `shoalctl token
    /// create`): the agent trusts only a CA with this public key.
    #[arg(long, value_name = "sha256:HEX")]
    pub ca_hash: Option<String>,
    /// Data directory (images, pods, containers, agent state).
    #[arg(long, env = "SHOAL_DATA_DIR", default_value = "/var/lib/shoal")]
    pub data_dir: PathBuf,
    /// Largest uncompressed size, in bytes, of the layers an image import or pull
    /// unpacks (decompression bombs and huge sparse files stop there).
    #[arg(long, default_value_t = shoal_runtime::image::limits::Limits::default().max_unpacked_bytes)]
    pub image_max_unpacked_bytes: u64,
    /// Largest size, in bytes, of the build cache (`shoalctl build`): the layers of the
    /// images in this node's build store, blobs and unpacked. Past it, after a build, the
    /// least recently used images are dropped (10 GiB by default; 0: no bound).
    #[arg(long, default_value_t = 10 << 30)]
    pub build_cache_max_bytes: u64,
    /// Most tar entries (files, directories, links) in the layers of one image.
    #[arg(long, default_value_t = shoal_runtime::image::limits::Limits::default().max_entries)]
    pub image_max_entries: u64,
    /// Registry mirrors, credentials and TLS settings for pulling images, in k3s's
    /// `registries.yaml` format (`mirrors` with `endpoint` lists, `configs` per host with
    /// `auth` and `tls`); see docs/images.md. Read at start.
    #[arg(long, value_name = "FILE", env = "SHOAL_REGISTRIES")]
    pub registries: Option<PathBuf>,
    /// Pull only from the mirrors `--registries` gives, never from a registry itself
    /// (as k3s's flag of the same name): a node without a way out never tries one.
    #[arg(long)]
    pub disable_default_registry_endpoint: bool,
    /// Where the node looks for an image, in order: `cluster` (the controllers' image
    /// store, images imported or pushed to the built-in registry) and `registry` (the
    /// image's registry or its --registries mirrors). `registry,cluster` prefers
    /// registries; `cluster` alone never leaves the cluster. See docs/images.md.
    #[arg(long, value_name = "SOURCES", default_value = "cluster,registry", value_parser = crate::pull::parse_order)]
    pub image_sources: crate::pull::SourceOrder,
    /// Address to serve the Agent API (logs, exec, stats) on.
    #[arg(long, default_value = "127.0.0.1:7100")]
    pub listen: SocketAddr,
    /// `HOST:PORT` controllers use to reach this agent (default: --listen).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Node labels, `k=v,k2=v2`.
    #[arg(long, default_value = "")]
    pub labels: String,
    /// Seconds between heartbeats.
    #[arg(long, default_value_t = 2.0)]
    pub heartbeat_interval: f64,
    /// First restart back-off of a failing container in milliseconds (doubles up to 5 min).
    #[arg(long, default_value_t = 10_000)]
    pub restart_backoff_ms: u64,
    /// Stop and remove every pod, container and sandbox in --data-dir, then exit.
    #[arg(long)]
    pub cleanup: bool,
    /// Pod network: `bridge` (pod IPs, WireGuard overlay, services, DNS) or `none` (loopback only).
    #[arg(long, value_enum, default_value = "bridge")]
    pub network: crate::network::NetworkMode,
    /// Cluster (pod) CIDR; must match the controllers' `--cluster-cidr`.
    #[arg(long, default_value = shoal_net::ipam::DEFAULT_CLUSTER_CIDR)]
    pub cluster_cidr: ipnet::Ipv4Net,
    /// Service CIDR; must match the controllers' `--service-cidr`.
    #[arg(long, default_value = shoal_net::ipam::DEFAULT_SERVICE_CIDR)]
    pub service_cidr: ipnet::Ipv4Net,
    /// UDP port of the WireGuard overlay on the node's address.
    #[arg(long, default_value_t = 51820)]
    pub wireguard_port: u16,
    /// Userspace WireGuard engine when the kernel has no WireGuard: `shoal` (Shoal's
    /// own data path: batched, with UDP and TUN offloads) or `boringtun` (boringtun's
    /// own device).
    #[arg(long, value_enum, default_value = "shoal")]
    pub wireguard_engine: crate::network::WgEngine,
    /// Upstream DNS resolvers for names outside the cluster zone: `IP` or `IP:PORT`, repeatable
    /// or comma-separated; `none` turns forwarding off. Default: the `nameserver`s of the
    /// node's /etc/resolv.conf.
    #[arg(long, value_name = "ADDR", value_delimiter = ',', value_parser = parse_upstream_dns)]
    pub upstream_dns: Vec<UpstreamDns>,
    /// MTU of the overlay and of pod interfaces (underlay MTU − 80).
    #[arg(long, default_value_t = 1420)]
    pub mtu: u32,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "SHOAL_LOG", default_value = "info")]
    pub log: String,
    /// Log format on stderr: `text` (colours only on a terminal) or `json` (one object a line).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: shoal_observe::LogFormat,
    /// Where Prometheus metrics (/metrics), /healthz and /readyz are served over plain
    /// HTTP: HOST:PORT, or `none`. No authentication: keep it on loopback or a private net.
    #[arg(long, value_name = "HOST:PORT|none", default_value = "127.0.0.1:7180")]
    pub metrics_listen: shoal_observe::Listen,
}

impl AgentArgs {
    /// The image unpacking limits from `--image-max-unpacked-bytes` and `--image-max-entries`.
    pub fn image_limits(&self) -> shoal_runtime::image::limits::Limits {
        shoal_runtime::image::limits::Limits {
            max_unpacked_bytes: self.image_max_unpacked_bytes,
            max_entries: self.image_max_entries,
            ..Default::default()
        }
    }

    /// The registry client of `--registries` (the defaults without the flag).
    pub fn registry_client(
        &self,
    ) -> anyhow::Result<shoal_runtime::image::registry::RegistryClient> {
        use anyhow::Context as _;
        use shoal_runtime::image::registry::{RegistriesConfig, RegistryClient};
        let config = match &self.registries {
            None => RegistriesConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("--registries: reading {}", path.display()))?;
                RegistriesConfig::parse(&text, &path.display().to_string())
                    .context("--registries")?
            }
        };
        let mut config = config;
        config.disable_default_endpoint = self.disable_default_registry_endpoint;
        Ok(RegistryClient::new(config))
    }

    /// The advertised `HOST:PORT`.
    pub fn advertise(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }

    /// The heartbeat interval.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs_f64(self.heartbeat_interval.max(0.1))
    }
}

/// One `--upstream-dns` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamDns {
    /// `none`: no forwarding.
    None,
    /// A resolver.
    Server(std::net::SocketAddr),
}

/// Parses one `--upstream-dns` value: `none`, `IP` or `IP:PORT`.
pub fn parse_upstream_dns(s: &str) -> Result<UpstreamDns, String> {
    if s.trim() == "none" {
        return Ok(UpstreamDns::None);
    }
    shoal_net::dns::forward::parse_upstream(s)
        .map(UpstreamDns::Server)
        .map_err(|e| e.to_string())
}

/// The upstream resolvers the flags give: `None` when the flag is absent (use the node's
/// resolv.conf), `Some(empty)` for `none`; `none` with addresses is an error.
pub fn upstream_servers(
    values: &[UpstreamDns],
) -> Result<Option<Vec<std::net::SocketAddr>>, String> {
    if values.is_empty() {
        return Ok(None);
    }
    let servers: Vec<_> = values
        .iter()
        .filter_map(|v| match v {
            UpstreamDns::Server(a) => Some(*a),
            UpstreamDns::None => None,
        })
        .collect();
    if !servers.is_empty() && servers.len() != values.len() {
        return Err("--upstream-dns: `none` cannot be combined with addresses".into());
    }
    Ok(Some(servers))
}

/// Parses `k=v,k2=v2` into labels; names the bad entry.
pub fn parse_labels(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for raw in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (k, v) = raw
            .split_once('=')
            .ok_or_else(|| format!("--labels: entry {raw:?}: expected KEY=VALUE"))?;
        if k.trim().is_empty() {
            return Err(format!("--labels: entry {raw:?}: empty key"));
        }
        out.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok(out)
}

/// The host part of `HOST:PORT` (`[v6]:port` gives `v6`).
pub fn host_of(addr: &str) -> String {
    let h = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
    h.trim_start_matches('[').trim_end_matches(']').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse() {
        assert_eq!(
            parse_labels("a=1, b=x ,").unwrap(),
            vec![("a".into(), "1".into()), ("b".into(), "x".into())]
        );
        assert!(parse_labels("a").unwrap_err().contains("\"a\""));
        assert!(parse_labels("=1").is_err());
        assert!(parse_labels("").unwrap().is_empty());
    }

    #[test]
    fn upstream_dns_flag() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(flatten)]
            a: AgentArgs,
        }
        let parse = |args: &[&str]| {
            let mut argv = vec!["shoal-agent"];
            argv.extend_from_slice(args);
            Cli::try_parse_from(argv).map(|c| upstream_servers(&c.a.upstream_dns))
        };
        assert_eq!(parse(&[]).unwrap(), Ok(None), "default: resolv.conf");
        let got = parse(&[
            "--upstream-dns",
            "203.0.113.53,127.0.0.1:5353",
            "--upstream-dns",
            "[2001:db8::1]:53",
        ])
        .unwrap()
        .unwrap()
        .unwrap();
        let want: Vec<std::net::SocketAddr> =
            ["203.0.113.53:53", "127.0.0.1:5353", "[2001:db8::1]:53"]
                .iter()
                .map(|a| a.parse().unwrap())
                .collect();
        assert_eq!(got, want);
        assert_eq!(
            parse(&["--upstream-dns", "none"]).unwrap(),
            Ok(Some(vec![]))
        );
        assert!(
            parse(&["--upstream-dns", "none,1.1.1.1"])
                .unwrap()
                .unwrap_err()
                .contains("none")
        );
        let e = parse(&["--upstream-dns", "dns.example"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("dns.example") && e.contains("--upstream-dns"),
            "{e}"
        );
    }

    #[test]
    fn metrics_and_log_flags() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(flatten)]
            a: AgentArgs,
        }
        let a = Cli::try_parse_from(["shoal-agent"]).unwrap().a;
        assert_eq!(
            a.metrics_listen,
            shoal_observe::Listen::On("127.0.0.1:7180".parse().unwrap())
        );
        assert_eq!(a.log_format, shoal_observe::LogFormat::Text);
        let a = Cli::try_parse_from([
            "shoal-agent",
            "--metrics-listen",
            "none",
            "--log-format",
            "json",
        ])
        .unwrap()
        .a;
        assert_eq!(a.metrics_listen, shoal_observe::Listen::Off);
        assert_eq!(a.log_format, shoal_observe::LogFormat::Json);
        let e = Cli::try_parse_from(["shoal-agent", "--metrics-listen", "localhost"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--metrics-listen") && e.contains("none"), "{e}");
    }

    #[test]
    fn hosts() {
        assert_eq!(host_of("10.0.0.1:7100"), "10.0.0.1");
        assert_eq!(host_of("[::1]:7100"), "::1");
    }
}
