//! Server-owned parts of a spec, decided when the API writes an object (pure):
//! a Service's `clusterIP` and `nodePort`s (allocated when unset, kept across updates
//! that omit them, checked when set) and a Node's `podCIDR` (kept across updates that
//! omit it). The API serializes allocations through one store key (see `api.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use shoal_api::service::{NODE_PORT_MAX, NODE_PORT_MIN};
use shoal_api::{Node, Protocol, Service, ServiceType};

use crate::reconcile::action::namespace;

/// Why a Service's or Node's addresses cannot be written as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// An update changes an assigned cluster IP.
    #[error(
        "service {service}: spec.clusterIP: field is immutable (it is {current}; got {requested})"
    )]
    ClusterIpImmutable {
        /// `namespace/name`.
        service: String,
        /// The stored IP.
        current: String,
        /// The IP in the request.
        requested: String,
    },
    /// A requested cluster IP is outside the service CIDR.
    #[error(
        "service {service}: spec.clusterIP: {ip} is not inside the service CIDR {cidr} (leave it unset to get one)"
    )]
    OutsideRange {
        /// `namespace/name`.
        service: String,
        /// The requested IP.
        ip: Ipv4Addr,
        /// The service CIDR.
        cidr: Ipv4Net,
    },
    /// A requested cluster IP is the network or broadcast address of the range.
    #[error("service {service}: spec.clusterIP: {ip} is reserved in the service CIDR {cidr}")]
    Reserved {
        /// `namespace/name`.
        service: String,
        /// The requested IP.
        ip: Ipv4Addr,
        /// The service CIDR.
        cidr: Ipv4Net,
    },
    /// A requested cluster IP belongs to another service.
    #[error("service {service}: spec.clusterIP: {ip} is already allocated to service {owner}")]
    IpInUse {
        /// `namespace/name`.
        service: String,
        /// The requested IP.
        ip: Ipv4Addr,
        /// `namespace/name` of the holder.
        owner: String,
    },
    /// A requested node port belongs to another service (or another port of this one).
    #[error(
        "service {service}: spec.ports[{index}].nodePort: {port}/{protocol} is already allocated to service {owner}"
    )]
    NodePortInUse {
        /// `namespace/name`.
        service: String,
        /// Index of the port in `spec.ports`.
        index: usize,
        /// The requested node port.
        port: i32,
        /// Its protocol.
        protocol: Protocol,
        /// `namespace/name` of the holder.
        owner: String,
    },
    /// Every address of the service CIDR is taken.
    #[error("service {service}: spec.clusterIP: no free address left in the service CIDR {cidr}")]
    IpsExhausted {
        /// `namespace/name`.
        service: String,
        /// The service CIDR.
        cidr: Ipv4Net,
    },
    /// Every node port of a protocol is taken.
    #[error(
        "service {service}: spec.ports[{index}].nodePort: no free {protocol} node port left in {NODE_PORT_MIN}-{NODE_PORT_MAX}"
    )]
    NodePortsExhausted {
        /// `namespace/name`.
        service: String,
        /// Index of the port in `spec.ports`.
        index: usize,
        /// Its protocol.
        protocol: Protocol,
    },
    /// An update changes an assigned pod CIDR.
    #[error("node {node}: spec.podCIDR: field is immutable (it is {current}; got {requested})")]
    PodCidrImmutable {
        /// Node name.
        node: String,
        /// The stored CIDR.
        current: String,
        /// The CIDR in the request.
        requested: String,
    },
}

impl AllocError {
    /// True when the request is fine but the ranges are full.
    pub fn is_exhausted(&self) -> bool {
        matches!(
            self,
            AllocError::IpsExhausted { .. } | AllocError::NodePortsExhausted { .. }
        )
    }
}

/// `namespace/name` of a service.
pub fn service_id(s: &Service) -> String {
    format!("{}/{}", namespace(&s.metadata), s.metadata.name)
}

/// Cluster IPs and node ports held by services, with their holders (`namespace/name`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceAddresses {
    /// Cluster IPs in use.
    pub ips: BTreeMap<Ipv4Addr, String>,
    /// Node ports in use, per protocol.
    pub node_ports: BTreeMap<(Protocol, i32), String>,
}

impl ServiceAddresses {
    /// What `services` hold, leaving out the service `except` (`namespace/name`), whose
    /// own addresses an update may keep.
    pub fn held_by<'a>(services: impl IntoIterator<Item = &'a Service>, except: &str) -> Self {
        let mut out = Self::default();
        for s in services {
            let id = service_id(s);
            if id != except {
                out.claim(s, &id);
            }
        }
        out
    }

    fn claim(&mut self, s: &Service, id: &str) {
        if let Some(ip) = s.spec.cluster_ip.as_deref().and_then(|i| i.parse().ok()) {
            self.ips.entry(ip).or_insert_with(|| id.to_string());
        }
        if s.spec.type_ == ServiceType::NodePort {
            for p in &s.spec.ports {
                if let Some(np) = p.node_port {
                    self.node_ports
                        .entry((p.protocol, np))
                        .or_insert_with(|| id.to_string());
                }
            }
        }
    }
}

/// Fills in the server-owned addresses of `desired` (a create when `current` is None, an
/// update otherwise) so that every service keeps distinct ones:
///
/// * `spec.clusterIP`: an update that omits it keeps the current one; changing it is an
///   error; a requested one must lie in `cidr`, not be its network or broadcast address
///   and be free; unset on both, the lowest free address of `cidr` is taken.
/// * `nodePort` of each port of a `NodePort` service: an update that omits it keeps the
///   current port's (same port number and protocol); a requested one must be free; unset,
///   the lowest free port in 30000-32767 of its protocol is taken.
///
/// Returns true when `desired` holds an address `current` did not (the write must then
/// be serialized with other allocations).
pub fn assign_service(
    desired: &mut Service,
    current: Option<&Service>,
    used: &ServiceAddresses,
    cidr: Ipv4Net,
) -> Result<bool, AllocError> {
    let id = service_id(desired);
    let mut claims_new = false;
    let current_ip = current.and_then(|c| c.spec.cluster_ip.clone());
    match (desired.spec.cluster_ip.clone(), current_ip) {
        (Some(want), None) if want == shoal_api::service::CLUSTER_IP_NONE => {}
        (None, Some(cur)) => desired.spec.cluster_ip = Some(cur),
        (Some(want), Some(cur)) => {
            let same = match (want.parse::<Ipv4Addr>(), cur.parse::<Ipv4Addr>()) {
                (Ok(a), Ok(b)) => a == b,
                _ => want == cur,
            };
            if !same {
                return Err(AllocError::ClusterIpImmutable {
                    service: id,
                    current: cur,
                    requested: want,
                });
            }
            desired.spec.cluster_ip = Some(cur);
        }
        (Some(want), None) => {
            // Validation already checked the syntax.
            let ip: Ipv4Addr = want.parse().map_err(|_| AllocError::OutsideRange {
                service: id.clone(),
                ip: Ipv4Addr::UNSPECIFIED,
                cidr,
            })?;
            if !cidr.contains(&ip) {
                return Err(AllocError::OutsideRange {
                    service: id,
                    ip,
                    cidr,
                });
            }
            if ip == cidr.network() || ip == cidr.broadcast() {
                return Err(AllocError::Reserved {
                    service: id,
                    ip,
                    cidr,
                });
            }
            if let Some(owner) = used.ips.get(&ip) {
                return Err(AllocError::IpInUse {
                    service: id,
                    ip,
                    owner: owner.clone(),
                });
            }
            desired.spec.cluster_ip = Some(ip.to_string());
            claims_new = true;
        }
        (None, None) => {
            let taken: BTreeSet<Ipv4Addr> = used.ips.keys().copied().collect();
            let ip = shoal_net::ipam::free_service_ip(cidr, &taken).ok_or_else(|| {
                AllocError::IpsExhausted {
                    service: id.clone(),
                    cidr,
                }
            })?;
            desired.spec.cluster_ip = Some(ip.to_string());
            claims_new = true;
        }
    }

    if desired.spec.type_ != ServiceType::NodePort {
        for p in &mut desired.spec.ports {
            p.node_port = None;
        }
        return Ok(claims_new);
    }
    // Node ports the current version holds (and may keep).
    let mut held: BTreeMap<(i32, Protocol), i32> = BTreeMap::new();
    let mut held_ports: BTreeSet<(Protocol, i32)> = BTreeSet::new();
    if let Some(c) = current.filter(|c| c.spec.type_ == ServiceType::NodePort) {
        for p in &c.spec.ports {
            if let Some(np) = p.node_port {
                held.insert((p.port, p.protocol), np);
                held_ports.insert((p.protocol, np));
            }
        }
    }
    let mut mine: BTreeSet<(Protocol, i32)> = BTreeSet::new();
    // Requested (or kept) ports first, so that allocation avoids them.
    for (index, p) in desired.spec.ports.iter_mut().enumerate() {
        if p.node_port.is_none() {
            p.node_port = held.get(&(p.port, p.protocol)).copied();
        }
        let Some(np) = p.node_port else { continue };
        if !mine.insert((p.protocol, np)) {
            return Err(AllocError::NodePortInUse {
                service: id.clone(),
                index,
                port: np,
                protocol: p.protocol,
                owner: id.clone(),
            });
        }
        if let Some(owner) = used.node_ports.get(&(p.protocol, np)) {
            return Err(AllocError::NodePortInUse {
                service: id.clone(),
                index,
                port: np,
                protocol: p.protocol,
                owner: owner.clone(),
            });
        }
        if !held_ports.contains(&(p.protocol, np)) {
            claims_new = true;
        }
    }
    for (index, p) in desired.spec.ports.iter_mut().enumerate() {
        if p.node_port.is_some() {
            continue;
        }
        let free = (NODE_PORT_MIN..=NODE_PORT_MAX).find(|np| {
            !mine.contains(&(p.protocol, *np)) && !used.node_ports.contains_key(&(p.protocol, *np))
        });
        let Some(np) = free else {
            return Err(AllocError::NodePortsExhausted {
                service: id.clone(),
                index,
                protocol: p.protocol,
            });
        };
        mine.insert((p.protocol, np));
        p.node_port = Some(np);
        claims_new = true;
    }
    Ok(claims_new)
}

/// Keeps the stored `spec.podCIDR` of a Node when an update omits it; changing an
/// assigned one is an error.
pub fn keep_pod_cidr(desired: &mut Node, current: &Node) -> Result<(), AllocError> {
    match (&desired.spec.pod_cidr, &current.spec.pod_cidr) {
        (None, Some(cur)) => desired.spec.pod_cidr = Some(cur.clone()),
        (Some(want), Some(cur)) => {
            let same = match (want.parse::<Ipv4Net>(), cur.parse::<Ipv4Net>()) {
                (Ok(a), Ok(b)) => a == b,
                _ => want == cur,
            };
            if !same {
                return Err(AllocError::PodCidrImmutable {
                    node: desired.metadata.name.clone(),
                    current: cur.clone(),
                    requested: want.clone(),
                });
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(name: &str, spec: serde_json::Value) -> Service {
        serde_json::from_value(
            json!({"metadata": {"name": name, "namespace": "default"}, "spec": spec}),
        )
        .unwrap()
    }

    fn cidr() -> Ipv4Net {
        "10.96.0.0/16".parse().unwrap()
    }

    #[test]
    fn cluster_ips_are_distinct_kept_and_checked() {
        let mut a = svc("a", json!({"ports": [{"port": 80}]}));
        assert!(assign_service(&mut a, None, &ServiceAddresses::default(), cidr()).unwrap());
        assert_eq!(a.spec.cluster_ip.as_deref(), Some("10.96.0.1"));
        let used = ServiceAddresses::held_by([&a], "default/b");
        let mut b = svc("b", json!({"ports": [{"port": 80}]}));
        assert!(assign_service(&mut b, None, &used, cidr()).unwrap());
        assert_eq!(b.spec.cluster_ip.as_deref(), Some("10.96.0.2"));

        // Re-apply without clusterIP keeps it and claims nothing new.
        let used = ServiceAddresses::held_by([&a, &b], "default/a");
        let mut again = svc("a", json!({"ports": [{"port": 8080}]}));
        assert!(!assign_service(&mut again, Some(&a), &used, cidr()).unwrap());
        assert_eq!(again.spec.cluster_ip.as_deref(), Some("10.96.0.1"));

        let mut changed = svc(
            "a",
            json!({"clusterIP": "10.96.0.9", "ports": [{"port": 80}]}),
        );
        let e = assign_service(&mut changed, Some(&a), &used, cidr()).unwrap_err();
        assert!(
            e.to_string()
                .contains("service default/a: spec.clusterIP: field is immutable"),
            "{e}"
        );

        let used = ServiceAddresses::held_by([&a, &b], "default/c");
        let e = |ip: &str| {
            let mut c = svc("c", json!({"clusterIP": ip, "ports": [{"port": 80}]}));
            assign_service(&mut c, None, &used, cidr())
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            e("10.97.0.1"),
            "service default/c: spec.clusterIP: 10.97.0.1 is not inside the service CIDR 10.96.0.0/16 (leave it unset to get one)"
        );
        assert_eq!(
            e("10.96.0.2"),
            "service default/c: spec.clusterIP: 10.96.0.2 is already allocated to service default/b"
        );
        assert!(e("10.96.255.255").contains("is reserved"));
        let mut c = svc(
            "c",
            json!({"clusterIP": "10.96.7.7", "ports": [{"port": 80}]}),
        );
        assert!(assign_service(&mut c, None, &used, cidr()).unwrap());
        assert_eq!(c.spec.cluster_ip.as_deref(), Some("10.96.7.7"));

        let tiny: Ipv4Net = "10.96.0.0/30".parse().unwrap();
        let used = ServiceAddresses::held_by([&a, &b], "default/c");
        let mut d = svc("d", json!({"ports": [{"port": 80}]}));
        let e = assign_service(&mut d, None, &used, tiny).unwrap_err();
        assert!(e.is_exhausted(), "{e}");
    }

    #[test]
    fn node_ports_per_protocol_kept_and_checked() {
        let mut a = svc(
            "a",
            json!({"type": "NodePort", "ports": [
                {"name": "web", "port": 80},
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "fixed", "port": 81, "nodePort": 30000}]}),
        );
        assert!(assign_service(&mut a, None, &ServiceAddresses::default(), cidr()).unwrap());
        let nps: Vec<Option<i32>> = a.spec.ports.iter().map(|p| p.node_port).collect();
        // UDP has its own range; TCP skips the requested 30000.
        assert_eq!(nps, vec![Some(30001), Some(30000), Some(30000)]);

        let used = ServiceAddresses::held_by([&a], "default/b");
        let mut b = svc("b", json!({"type": "NodePort", "ports": [{"port": 80}]}));
        assign_service(&mut b, None, &used, cidr()).unwrap();
        assert_eq!(b.spec.ports[0].node_port, Some(30002));

        let mut clash = svc(
            "c",
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30001}]}),
        );
        let used = ServiceAddresses::held_by([&a, &b], "default/c");
        let e = assign_service(&mut clash, None, &used, cidr()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "service default/c: spec.ports[0].nodePort: 30001/TCP is already allocated to service default/a"
        );

        // Re-apply keeps every node port (matched by port and protocol), claims nothing.
        let used = ServiceAddresses::held_by([&a, &b], "default/a");
        let mut again = svc(
            "a",
            json!({"type": "NodePort", "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "web", "port": 80},
                {"name": "fixed", "port": 81}]}),
        );
        assert!(!assign_service(&mut again, Some(&a), &used, cidr()).unwrap());
        let nps: Vec<Option<i32>> = again.spec.ports.iter().map(|p| p.node_port).collect();
        assert_eq!(nps, vec![Some(30000), Some(30001), Some(30000)]);

        // A new port gets a new node port; switching to ClusterIP drops them.
        let mut more = again.clone();
        more.spec.ports.push(shoal_api::ServicePort {
            name: Some("extra".into()),
            port: 82,
            ..Default::default()
        });
        assert!(assign_service(&mut more, Some(&a), &used, cidr()).unwrap());
        assert_eq!(more.spec.ports[3].node_port, Some(30003));
        let mut plain = svc("a", json!({"ports": [{"port": 80}]}));
        assert!(!assign_service(&mut plain, Some(&a), &used, cidr()).unwrap());
        assert_eq!(plain.spec.ports[0].node_port, None);

        let mut dup = svc(
            "d",
            json!({"type": "NodePort", "ports": [
                {"name": "x", "port": 80, "nodePort": 31000},
                {"name": "y", "port": 81, "nodePort": 31000}]}),
        );
        let e = assign_service(&mut dup, None, &ServiceAddresses::default(), cidr()).unwrap_err();
        assert!(
            e.to_string().contains("spec.ports[1].nodePort: 31000/TCP"),
            "{e}"
        );
    }

    #[test]
    fn pod_cidr_is_kept_and_immutable() {
        let node = |cidr: Option<&str>| -> Node {
            serde_json::from_value(json!({"metadata": {"name": "n1"}, "spec": {"podCIDR": cidr}}))
                .unwrap()
        };
        let cur = node(Some("10.244.3.0/24"));
        let mut blind = node(None);
        keep_pod_cidr(&mut blind, &cur).unwrap();
        assert_eq!(blind.spec.pod_cidr.as_deref(), Some("10.244.3.0/24"));
        let mut other = node(Some("10.244.4.0/24"));
        let e = keep_pod_cidr(&mut other, &cur).unwrap_err().to_string();
        assert!(
            e.contains("node n1: spec.podCIDR: field is immutable"),
            "{e}"
        );
        let mut first = node(Some("10.244.4.0/24"));
        keep_pod_cidr(&mut first, &node(None)).unwrap();
    }
}
