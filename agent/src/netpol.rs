//! From the cluster's NetworkPolicies, Pods and Namespaces to what this node enforces (pure):
//! one [`PolicyRules`] per policy, with the addresses of this node's pods it selects and of
//! the peer pods (on any node) each rule allows. Every policy is planned on every node, also
//! one that selects none of its pods yet, so that the table's shape depends on the policies
//! only and pods coming and going change set elements, not rules (see
//! [`shoal_net::netpol`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use shoal_api::{
    LabelSelector, Namespace, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, Pod, PodPhase,
    PolicyType, Protocol, namespace_labels,
};
use shoal_net::netpol::{Peers, PolicyRule, PolicyRules, PortRange};
use shoal_net::nft::Proto;
use tracing::warn;

use crate::mirror::Snapshot;

/// A pod with an address, as policies see it.
struct PodView<'a> {
    namespace: &'a str,
    labels: &'a BTreeMap<String, String>,
    ip: Ipv4Addr,
    local: bool,
}

/// The policy rules of node `node` (pure). Pods count once they have an address and until
/// they finished (Succeeded/Failed pods' addresses go back to the pool).
pub fn plan(
    node: &str,
    policies: &Snapshot<NetworkPolicy>,
    pods: &Snapshot<Pod>,
    namespaces: &Snapshot<Namespace>,
) -> Vec<PolicyRules> {
    let views: Vec<PodView<'_>> = pods
        .values()
        .filter_map(|p| {
            let st = p.status.as_ref()?;
            if matches!(st.phase, PodPhase::Succeeded | PodPhase::Failed) {
                return None;
            }
            Some(PodView {
                namespace: p.metadata.namespace.as_deref().unwrap_or("default"),
                labels: &p.metadata.labels,
                ip: st.pod_ip.as_deref()?.parse().ok()?,
                local: p.spec.node_name.as_deref() == Some(node),
            })
        })
        .collect();
    let ns_labels: BTreeMap<&str, BTreeMap<String, String>> = views
        .iter()
        .map(|v| v.namespace)
        .chain(namespaces.values().map(|n| n.metadata.name.as_str()))
        .map(|name| {
            let own = namespaces
                .values()
                .find(|n| n.metadata.name == name)
                .map(|n| &n.metadata.labels);
            (name, namespace_labels(name, own))
        })
        .collect();
    let mut out = Vec::new();
    for np in policies.values() {
        let ns = np.metadata.namespace.as_deref().unwrap_or("default");
        let id = format!("{ns}/{}", np.metadata.name);
        let Ok(sel) = np.spec.pod_selector.to_selector() else {
            warn!("network policy {id}: invalid podSelector; ignored");
            continue;
        };
        let selected = views
            .iter()
            .filter(|v| v.local && v.namespace == ns && sel.matches(v.labels))
            .map(|v| v.ip)
            .collect();
        let types = np.spec.effective_policy_types();
        let rules = |pairs: Vec<(&Vec<NetworkPolicyPeer>, &Vec<NetworkPolicyPort>)>| {
            pairs
                .into_iter()
                .map(|(peers, ports)| PolicyRule {
                    peers: (!peers.is_empty()).then(|| peers_of(ns, peers, &views, &ns_labels)),
                    ports: ports.iter().map(port_range).collect(),
                })
                .collect::<Vec<_>>()
        };
        let ingress = types.contains(&PolicyType::Ingress).then(|| {
            rules(
                np.spec
                    .ingress
                    .iter()
                    .map(|r| (&r.from, &r.ports))
                    .collect(),
            )
        });
        let egress = types
            .contains(&PolicyType::Egress)
            .then(|| rules(np.spec.egress.iter().map(|r| (&r.to, &r.ports)).collect()));
        out.push(PolicyRules {
            id,
            selected,
            ingress,
            egress,
        });
    }
    out
}

/// The addresses a rule's peers stand for: pods by pod and namespace selectors (in the
/// policy's namespace `ns` when no namespace selector is given), and ipBlock ranges.
fn peers_of(
    ns: &str,
    peers: &[NetworkPolicyPeer],
    views: &[PodView<'_>],
    ns_labels: &BTreeMap<&str, BTreeMap<String, String>>,
) -> Peers {
    let mut pods: Option<BTreeSet<Ipv4Addr>> = None;
    let mut ranges = Vec::new();
    for p in peers {
        if let Some(b) = &p.ip_block {
            ranges.extend(b.ranges());
            continue;
        }
        let set = pods.get_or_insert_with(BTreeSet::new);
        let pod_sel = match p.pod_selector.as_ref().map(|s| s.to_selector()) {
            None => LabelSelector::everything(),
            Some(Ok(s)) => s,
            Some(Err(_)) => continue,
        };
        let ns_sel = match p.namespace_selector.as_ref().map(|s| s.to_selector()) {
            None => None,
            Some(Ok(s)) => Some(s),
            Some(Err(_)) => continue,
        };
        for v in views {
            let ns_ok = match &ns_sel {
                None => v.namespace == ns,
                Some(s) => ns_labels.get(v.namespace).is_some_and(|l| s.matches(l)),
            };
            if ns_ok && pod_sel.matches(v.labels) {
                set.insert(v.ip);
            }
        }
    }
    Peers { pods, ranges }
}

/// A policy port as a range: unset port means every port of the protocol.
fn port_range(p: &NetworkPolicyPort) -> PortRange {
    let proto = match p.protocol {
        Protocol::Tcp => Proto::Tcp,
        Protocol::Udp => Proto::Udp,
    };
    let (first, last) = p.range().unwrap_or((0, u16::MAX));
    PortRange { proto, first, last }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror;
    use serde_json::json;

    fn snap<T: shoal_api::Resource>(items: Vec<serde_json::Value>) -> Snapshot<T> {
        items
            .into_iter()
            .map(|v| serde_json::from_value::<T>(v).unwrap())
            .map(|o| (mirror::key_of(&o), o))
            .collect()
    }

    fn pod(
        ns: &str,
        name: &str,
        node: &str,
        ip: &str,
        labels: serde_json::Value,
    ) -> serde_json::Value {
        json!({"metadata": {"name": name, "namespace": ns, "labels": labels},
               "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]},
               "status": {"phase": "Running", "podIP": ip}})
    }

    fn ips(v: &[&str]) -> BTreeSet<Ipv4Addr> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn pods() -> Snapshot<Pod> {
        snap(vec![
            pod("prod", "web-1", "n1", "10.244.1.5", json!({"app": "web"})),
            pod("prod", "web-2", "n2", "10.244.2.5", json!({"app": "web"})),
            pod(
                "prod",
                "client",
                "n2",
                "10.244.2.9",
                json!({"role": "client"}),
            ),
            pod(
                "dev",
                "client",
                "n1",
                "10.244.1.9",
                json!({"role": "client"}),
            ),
            pod("ops", "mon", "n2", "10.244.2.20", json!({"app": "mon"})),
            // Finished: its address is not a peer any more.
            json!({"metadata": {"name": "done", "namespace": "prod", "labels": {"role": "client"}},
                   "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]},
                   "status": {"phase": "Succeeded", "podIP": "10.244.1.30"}}),
            // No address yet.
            json!({"metadata": {"name": "new", "namespace": "prod", "labels": {"app": "web"}},
                   "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]},
                   "status": {"phase": "Pending"}}),
        ])
    }

    fn namespaces() -> Snapshot<Namespace> {
        snap(vec![
            json!({"metadata": {"name": "ops", "labels": {"team": "ops"}}}),
        ])
    }

    #[test]
    fn selected_pods_are_local_and_peers_are_cluster_wide() {
        let policies = snap(vec![json!({
            "metadata": {"name": "web", "namespace": "prod"},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                     "ingress": [
                        {"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                         "ports": [{"port": 80}, {"protocol": "UDP", "port": 5000, "endPort": 5010}]},
                        {"from": [{"namespaceSelector": {"matchLabels": {"team": "ops"}}},
                                  {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dev"}},
                                   "podSelector": {"matchLabels": {"role": "client"}}},
                                  {"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/24"]}}]},
                        {"ports": [{"protocol": "UDP"}]}
                     ]}
        })]);
        let p = plan("n1", &policies, &pods(), &namespaces());
        assert_eq!(p.len(), 1);
        let p = &p[0];
        assert_eq!(p.id, "prod/web");
        assert_eq!(p.selected, ips(&["10.244.1.5"]), "local, with an address");
        assert!(p.egress.is_none(), "default policyTypes: Ingress only");
        let ing = p.ingress.as_ref().unwrap();
        // Same namespace only, finished pods left out.
        let peers = ing[0].peers.as_ref().unwrap();
        assert_eq!(peers.pods, Some(ips(&["10.244.2.9"])));
        assert!(peers.ranges.is_empty());
        assert_eq!(
            ing[0].ports,
            [
                PortRange {
                    proto: Proto::Tcp,
                    first: 80,
                    last: 80
                },
                PortRange {
                    proto: Proto::Udp,
                    first: 5000,
                    last: 5010
                }
            ]
        );
        // By namespace labels (own and the name label), and an ipBlock.
        let peers = ing[1].peers.as_ref().unwrap();
        assert_eq!(peers.pods, Some(ips(&["10.244.1.9", "10.244.2.20"])));
        assert_eq!(peers.ranges.len(), 2);
        assert!(ing[1].ports.is_empty());
        // No `from`: any peer; a protocol without port: all its ports.
        assert!(ing[2].peers.is_none());
        assert_eq!(
            ing[2].ports,
            [PortRange {
                proto: Proto::Udp,
                first: 0,
                last: 65535
            }]
        );
        // On n2 the same policy selects web-2; on n3 nothing, but it is still planned.
        let n2 = plan("n2", &policies, &pods(), &namespaces());
        assert_eq!(n2[0].selected, ips(&["10.244.2.5"]));
        let n3 = plan("n3", &policies, &pods(), &namespaces());
        assert!(n3[0].selected.is_empty());
        assert_eq!(n3[0].ingress, p.ingress);
    }

    #[test]
    fn policy_types_and_deny_all() {
        let policies = snap(vec![
            json!({
                "metadata": {"name": "deny", "namespace": "prod"},
                "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
            }),
            json!({
                "metadata": {"name": "out", "namespace": "dev"},
                "spec": {"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]}
            }),
        ]);
        let p = plan("n1", &policies, &pods(), &namespaces());
        let deny = p.iter().find(|p| p.id == "prod/deny").unwrap();
        assert_eq!(deny.selected, ips(&["10.244.1.5"]));
        assert_eq!(deny.ingress.as_deref(), Some(&[][..]));
        assert_eq!(deny.egress.as_deref(), Some(&[][..]));
        let out = p.iter().find(|p| p.id == "dev/out").unwrap();
        assert_eq!(out.selected, ips(&["10.244.1.9"]));
        assert!(out.ingress.is_some(), "egress rules given: both directions");
        let e = &out.egress.as_ref().unwrap()[0];
        let peers = e.peers.as_ref().unwrap();
        assert_eq!(peers.pods, None, "ipBlock only");
        assert_eq!(
            peers.ranges,
            [(
                "10.0.0.0".parse().unwrap(),
                "10.255.255.255".parse().unwrap()
            )]
        );
    }

    #[test]
    fn relabelling_a_pod_changes_only_set_elements() {
        let policies = snap(vec![json!({
            "metadata": {"name": "web", "namespace": "prod"},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                     "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}]}
        })]);
        let before = plan("n1", &policies, &pods(), &namespaces());
        let mut relabelled = pods();
        relabelled
            .get_mut("prod/client")
            .unwrap()
            .metadata
            .labels
            .insert("role".into(), "other".into());
        let after = plan("n1", &policies, &relabelled, &namespaces());
        let peers = |p: &[PolicyRules]| p[0].ingress.as_ref().unwrap()[0].peers.clone().unwrap();
        assert_eq!(peers(&before).pods, Some(ips(&["10.244.2.9"])));
        assert_eq!(peers(&after).pods, Some(ips(&[])));
        let (a, b) = (
            shoal_net::netpol::render(&before),
            shoal_net::netpol::render(&after),
        );
        assert_eq!(a.ingress, b.ingress, "same rules");
        assert_ne!(a.dynamic(), b.dynamic());
    }
}
