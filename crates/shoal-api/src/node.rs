//! Node: a machine running the agent, registered by it.

use crate::meta::{Condition, ObjectMeta, is_default};
use crate::pod::TaintEffect;
use crate::quantity::{ResourceList, Resources};
use crate::validation::{self as v, ValidationErrors, index, join};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A node: `metadata`, `spec` (pod CIDR, cordon, taints) and `status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Node {
    /// Name (DNS-1123 subdomain), labels, server-set fields; no namespace.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Desired state.
    #[serde(default)]
    pub spec: NodeSpec,
    /// Reported by the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<NodeStatus>,
}

/// Desired state of a node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    /// The node's pod network (a /24 of the cluster CIDR, assigned by the controller).
    #[serde(default, rename = "podCIDR", skip_serializing_if = "Option::is_none")]
    pub pod_cidr: Option<String>,
    /// Cordoned: no new pods are scheduled here.
    #[serde(default, skip_serializing_if = "is_default")]
    pub unschedulable: bool,
    /// Taints repelling pods that do not tolerate them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,
}

/// A node taint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Taint {
    /// Key (label-key syntax).
    pub key: String,
    /// Value (label-value syntax, may be empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: TaintEffect,
}

/// Kind of node address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum NodeAddressType {
    /// Address reachable by other nodes (the WireGuard underlay).
    InternalIP,
    /// Address reachable from outside the cluster.
    ExternalIP,
    /// The host name.
    Hostname,
}

/// One address of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeAddress {
    /// Kind of address.
    #[serde(rename = "type")]
    pub type_: NodeAddressType,
    /// The address.
    pub address: String,
}

/// Versions and platform of a node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSystemInfo {
    /// `uname -r`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kernel_version: String,
    /// Distribution name, from os-release.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub os_image: String,
    /// `linux`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub operating_system: String,
    /// `amd64`, `arm64`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub architecture: String,
    /// Version of shoal-agent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub agent_version: String,
    /// Container runtime in use.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub container_runtime_version: String,
}

/// The node's WireGuard identity on the overlay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WireguardInfo {
    /// Public key (base64 as `wg` prints it, or hex).
    pub public_key: String,
    /// Underlay `ip:port` peers send to.
    pub endpoint: String,
}

/// State reported by a node's agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeStatus {
    /// Total resources (cpu, memory, pods, pids).
    #[serde(default, skip_serializing_if = "ResourceList::is_empty")]
    pub capacity: ResourceList,
    /// Resources available to pods.
    #[serde(default, skip_serializing_if = "ResourceList::is_empty")]
    pub allocatable: ResourceList,
    /// `Ready` and others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Addresses; `InternalIP` is the underlay address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<NodeAddress>,
    /// Versions and platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_info: Option<NodeSystemInfo>,
    /// WireGuard public key and endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard: Option<WireguardInfo>,
    /// Last heartbeat from the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_time: Option<DateTime<Utc>>,
    /// `host:port` of the agent's gRPC API (logs, exec, stats), as controllers reach it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_endpoint: Option<String>,
}

impl Node {
    /// True when the `Ready` condition is `True`.
    pub fn is_ready(&self) -> bool {
        self.status.as_ref().is_some_and(|s| {
            crate::meta::find_condition(&s.conditions, "Ready")
                .is_some_and(|c| c.status == crate::ConditionStatus::True)
        })
    }

    /// Allocatable resources (falling back to capacity when allocatable is empty).
    pub fn allocatable(&self) -> Resources {
        self.status.as_ref().map_or_else(Resources::default, |s| {
            if s.allocatable.is_empty() {
                Resources::from_list(&s.capacity)
            } else {
                Resources::from_list(&s.allocatable)
            }
        })
    }

    /// The first `InternalIP` address.
    pub fn internal_ip(&self) -> Option<&str> {
        self.status.as_ref().and_then(|s| {
            s.addresses
                .iter()
                .find(|a| a.type_ == NodeAddressType::InternalIP)
                .map(|a| a.address.as_str())
        })
    }

    /// Checks name, pod CIDR, taints, quantities and addresses.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::new();
        self.metadata
            .validate(crate::Kind::Node, v::check_dns1123_subdomain, &mut errs);
        if let Some(c) = &self.spec.pod_cidr {
            errs.check("spec.podCIDR", v::check_ipv4_cidr(c));
        }
        for (i, t) in self.spec.taints.iter().enumerate() {
            let p = index("spec.taints", i);
            errs.check(join(&p, "key"), v::check_label_key(&t.key));
            errs.check(join(&p, "value"), v::check_label_value(&t.value));
        }
        if let Some(s) = &self.status {
            for (field, list) in [("capacity", &s.capacity), ("allocatable", &s.allocatable)] {
                for (name, q) in list {
                    if q.is_negative() {
                        errs.push(
                            format!("status.{field}.{name}"),
                            format!("must not be negative, got {q}"),
                        );
                    }
                }
            }
            for (i, a) in s.addresses.iter().enumerate() {
                if a.type_ == NodeAddressType::InternalIP || a.type_ == NodeAddressType::ExternalIP
                {
                    errs.check(
                        join(&index("status.addresses", i), "address"),
                        v::check_ipv4(&a.address),
                    );
                }
            }
        }
        errs.into_result()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_helpers_and_validation() {
        let n: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "node1", "labels": {"zone": "a"}},
            "spec": {"podCIDR": "10.244.1.0/24", "taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]},
            "status": {
                "capacity": {"cpu": "2", "memory": "4Gi", "pods": 110},
                "conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                "wireguard": {"publicKey": "abc", "endpoint": "10.0.0.1:51820"}
            }
        }))
        .unwrap();
        n.validate().unwrap();
        assert!(n.is_ready());
        assert_eq!(n.allocatable().cpu_millis, 2000);
        assert_eq!(n.allocatable().pods, 110);
        assert_eq!(n.internal_ip(), Some("10.0.0.1"));
        let mut bad = n.clone();
        bad.spec.pod_cidr = Some("10.244.1.0".into());
        bad.metadata.namespace = Some("default".into());
        let e = bad.validate().unwrap_err().to_string();
        assert!(
            e.contains("spec.podCIDR: \"10.244.1.0\" is not an IPv4 CIDR"),
            "{e}"
        );
        assert!(
            e.contains("metadata.namespace: Node is cluster-scoped"),
            "{e}"
        );
    }
}
