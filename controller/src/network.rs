//! The cluster's address plan as the controller knows it: the cluster (pod) CIDR cut into
//! per-node blocks, and the service CIDR virtual IPs come from. Checked once at start.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// A bad `--cluster-cidr`, `--node-cidr-prefix` or `--service-cidr`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetConfigError {
    /// A flag value is not an IPv4 CIDR.
    #[error("--{flag} {value:?}: expected an IPv4 CIDR such as {example}")]
    NotCidr {
        /// The flag name without dashes.
        flag: &'static str,
        /// What was given.
        value: String,
        /// An accepted value.
        example: &'static str,
    },
    /// A CIDR has host bits set (`10.244.1.0/16`).
    #[error("--{flag} {value}: host bits are set; did you mean {network}?")]
    HostBits {
        /// The flag name without dashes.
        flag: &'static str,
        /// What was given.
        value: Ipv4Net,
        /// The network it lies in.
        network: Ipv4Net,
    },
    /// The node prefix does not cut the cluster CIDR into usable blocks.
    #[error(
        "--node-cidr-prefix {prefix}: must be longer than the cluster CIDR's /{cluster_prefix} ({cluster}) and at most /29"
    )]
    NodePrefix {
        /// The prefix given.
        prefix: u8,
        /// The cluster CIDR.
        cluster: Ipv4Net,
        /// Its prefix length.
        cluster_prefix: u8,
    },
    /// The service CIDR has no room for addresses.
    #[error("--service-cidr {0}: too small (at most /30)")]
    ServiceTooSmall(Ipv4Net),
    /// The two ranges overlap.
    #[error("--service-cidr {service} overlaps --cluster-cidr {cluster}")]
    Overlap {
        /// The service CIDR.
        service: Ipv4Net,
        /// The cluster CIDR.
        cluster: Ipv4Net,
    },
}

/// The checked address plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetConfig {
    /// Pod addresses of the whole cluster.
    pub cluster_cidr: Ipv4Net,
    /// Prefix length of each node's block of `cluster_cidr`.
    pub node_prefix: u8,
    /// Virtual IPs of services.
    pub service_cidr: Ipv4Net,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            cluster_cidr: Ipv4Net::new(Ipv4Addr::new(10, 244, 0, 0), 16).unwrap_or_default(),
            node_prefix: shoal_net::ipam::DEFAULT_NODE_PREFIX,
            service_cidr: Ipv4Net::new(Ipv4Addr::new(10, 96, 0, 0), 16).unwrap_or_default(),
        }
    }
}

fn parse_cidr(
    flag: &'static str,
    value: &str,
    example: &'static str,
) -> Result<Ipv4Net, NetConfigError> {
    let net: Ipv4Net = value.trim().parse().map_err(|_| NetConfigError::NotCidr {
        flag,
        value: value.to_string(),
        example,
    })?;
    if net.trunc() != net {
        return Err(NetConfigError::HostBits {
            flag,
            value: net,
            network: net.trunc(),
        });
    }
    Ok(net)
}

impl NetConfig {
    /// Parses and checks the three flags: both CIDRs are network addresses, the node
    /// prefix is longer than the cluster CIDR's (so there are at least two node blocks)
    /// and leaves room for pods, the service CIDR has addresses and the ranges are disjoint.
    pub fn parse(cluster: &str, node_prefix: u8, service: &str) -> Result<Self, NetConfigError> {
        let cluster_cidr = parse_cidr(
            "cluster-cidr",
            cluster,
            shoal_net::ipam::DEFAULT_CLUSTER_CIDR,
        )?;
        let service_cidr = parse_cidr(
            "service-cidr",
            service,
            shoal_net::ipam::DEFAULT_SERVICE_CIDR,
        )?;
        if node_prefix <= cluster_cidr.prefix_len() || node_prefix > 29 {
            return Err(NetConfigError::NodePrefix {
                prefix: node_prefix,
                cluster: cluster_cidr,
                cluster_prefix: cluster_cidr.prefix_len(),
            });
        }
        if service_cidr.prefix_len() > 30 {
            return Err(NetConfigError::ServiceTooSmall(service_cidr));
        }
        if service_cidr.contains(&cluster_cidr) || cluster_cidr.contains(&service_cidr) {
            return Err(NetConfigError::Overlap {
                service: service_cidr,
                cluster: cluster_cidr,
            });
        }
        Ok(Self {
            cluster_cidr,
            node_prefix,
            service_cidr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_bad_flags_are_named() {
        let d = NetConfig::parse("10.244.0.0/16", 24, "10.96.0.0/16").unwrap();
        assert_eq!(d, NetConfig::default());
        let e = |c: &str, p: u8, s: &str| NetConfig::parse(c, p, s).unwrap_err().to_string();
        assert_eq!(
            e("10.244.0.0", 24, "10.96.0.0/16"),
            "--cluster-cidr \"10.244.0.0\": expected an IPv4 CIDR such as 10.244.0.0/16"
        );
        assert_eq!(
            e("10.244.0.0/16", 24, "10.96.1.0/12"),
            "--service-cidr 10.96.1.0/12: host bits are set; did you mean 10.96.0.0/12?"
        );
        assert!(e("10.244.0.0/16", 16, "10.96.0.0/16").contains("--node-cidr-prefix 16"));
        assert!(e("10.244.0.0/16", 30, "10.96.0.0/16").contains("at most /29"));
        assert_eq!(
            e("10.0.0.0/8", 24, "10.96.0.0/16"),
            "--service-cidr 10.96.0.0/16 overlaps --cluster-cidr 10.0.0.0/8"
        );
        assert!(e("10.244.0.0/16", 24, "10.96.0.0/31").contains("too small"));
        let small = NetConfig::parse("172.16.0.0/20", 26, "192.168.0.0/24").unwrap();
        assert_eq!(small.node_prefix, 26);
    }
}
