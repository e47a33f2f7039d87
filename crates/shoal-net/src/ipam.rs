//! Address management: node pod CIDRs and service IPs (pure, used by the
//! controller) and persistent pod IPs on a node (used by the agent).

use ipnet::Ipv4Net;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// Default cluster (pod) CIDR.
pub const DEFAULT_CLUSTER_CIDR: &str = "10.244.0.0/16";
/// Default service CIDR.
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/16";
/// Default prefix length of a node's pod CIDR.
pub const DEFAULT_NODE_PREFIX: u8 = 24;

/// The first subnet of length `prefix` inside `cluster` that is not in `used`
/// (None when all are taken or `prefix` is shorter than the cluster's).
pub fn free_node_cidr(cluster: Ipv4Net, prefix: u8, used: &BTreeSet<Ipv4Net>) -> Option<Ipv4Net> {
    cluster
        .subnets(prefix)
        .ok()?
        .find(|n| !used.iter().any(|u| u.contains(n) || n.contains(u)))
}

/// The gateway address of a pod CIDR: its first host (`.1`), kept by the node's bridge.
pub fn gateway(cidr: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(cidr.network()).saturating_add(1))
}

/// The lowest free service IP in `cidr` (skipping the network address, and the
/// broadcast address), or None when the range is full.
pub fn free_service_ip(cidr: Ipv4Net, used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    cidr.hosts()
        .filter(|ip| *ip != cidr.network() && *ip != cidr.broadcast())
        .find(|ip| !used.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn node_cidrs_are_distinct_and_reused_after_free() {
        let cluster = net("10.244.0.0/16");
        let mut used = BTreeSet::new();
        let a = free_node_cidr(cluster, 24, &used).unwrap();
        used.insert(a);
        let b = free_node_cidr(cluster, 24, &used).unwrap();
        assert_eq!((a, b), (net("10.244.0.0/24"), net("10.244.1.0/24")));
        used.remove(&a);
        assert_eq!(free_node_cidr(cluster, 24, &used), Some(a));
        // An overlapping larger block in use excludes its subnets.
        used.insert(net("10.244.0.0/23"));
        assert_eq!(free_node_cidr(cluster, 24, &used), Some(net("10.244.2.0/24")));
        let tiny = net("10.0.0.0/30");
        let all: BTreeSet<_> = tiny.subnets(31).unwrap().collect();
        assert_eq!(free_node_cidr(tiny, 31, &all), None);
        assert_eq!(free_node_cidr(tiny, 8, &BTreeSet::new()), None);
    }

    #[test]
    fn gateway_and_service_ips() {
        assert_eq!(gateway(net("10.244.3.0/24")), Ipv4Addr::new(10, 244, 3, 1));
        let cidr = net("10.96.0.0/30");
        let mut used = BTreeSet::new();
        let a = free_service_ip(cidr, &used).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 96, 0, 1));
        used.insert(a);
        assert_eq!(free_service_ip(cidr, &used), Some(Ipv4Addr::new(10, 96, 0, 2)));
        used.insert(Ipv4Addr::new(10, 96, 0, 2));
        assert_eq!(free_service_ip(cidr, &used), None);
    }
}
