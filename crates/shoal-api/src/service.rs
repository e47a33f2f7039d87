//! Service: a stable virtual IP and DNS name load-balanced to the selected pods.

use crate::intorstring::IntOrString;
use crate::meta::{ObjectMeta, Protocol};
use crate::validation::{self as v, ValidationErrors, index, join};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A service: `metadata` and `spec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Service {
    /// Name (DNS-1035 label), namespace, labels, server-set fields.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Selector, ports, type and virtual IP.
    pub spec: ServiceSpec,
}

/// How a service is exposed.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum ServiceType {
    /// A virtual IP reachable inside the cluster (the default).
    #[default]
    ClusterIP,
    /// ClusterIP plus a port on every node (30000-32767).
    NodePort,
}

/// Desired state of a service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    /// `ClusterIP` (default) or `NodePort`.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Pods with all these labels are the endpoints (empty: none are selected).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    /// The ports (at least one, except for a headless service).
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    /// The virtual IP (allocated by the controller when unset), or `None` for a
    /// headless service: no virtual IP, and its DNS name resolves to the ready pods'
    /// addresses (and `HOSTNAME.NAME.NAMESPACE.svc.shoal.local` to each pod with that
    /// `hostname` and `subdomain: NAME`).
    #[serde(default, rename = "clusterIP", skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<String>,
}

/// One port of a service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    /// Name (DNS-1123 label); required when there is more than one port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Port on the virtual IP.
    pub port: i32,
    /// Port number or named container port on the pods (default: `port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<IntOrString>,
    /// `TCP` (default) or `UDP`.
    #[serde(default)]
    pub protocol: Protocol,
    /// Port on every node for `NodePort` services (allocated when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<i32>,
}

impl ServicePort {
    /// The target port, defaulting to `port`.
    pub fn target(&self) -> IntOrString {
        self.target_port
            .clone()
            .unwrap_or(IntOrString::Int(self.port))
    }
}

/// The `clusterIP` of a headless service.
pub const CLUSTER_IP_NONE: &str = "None";

/// Lowest node port.
pub const NODE_PORT_MIN: i32 = 30000;
/// Highest node port.
pub const NODE_PORT_MAX: i32 = 32767;

impl Service {
    /// The DNS name `NAME.NAMESPACE.svc.shoal.local`.
    pub fn dns_name(&self) -> String {
        format!(
            "{}.{}.svc.shoal.local",
            self.metadata.name,
            self.metadata.namespace.as_deref().unwrap_or("default")
        )
    }

    /// True for a headless service (`clusterIP: None`).
    pub fn is_headless(&self) -> bool {
        self.spec.cluster_ip.as_deref() == Some(CLUSTER_IP_NONE)
    }

    /// Fills in `targetPort` (= `port`).
    pub fn set_defaults(&mut self) {
        for p in &mut self.spec.ports {
            if p.target_port.is_none() {
                p.target_port = Some(IntOrString::Int(p.port));
            }
        }
    }

    /// Checks name (DNS-1035 label), selector, ports, node ports and cluster IP.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::new();
        self.metadata
            .validate(crate::Kind::Service, v::check_dns1035_label, &mut errs);
        let spec = &self.spec;
        v::validate_labels(&spec.selector, "spec.selector", &mut errs);
        if spec.ports.is_empty() && !self.is_headless() {
            errs.push(
                "spec.ports",
                "at least one port is required (unless clusterIP is None)",
            );
        }
        let mut names = BTreeSet::new();
        let mut ports = BTreeSet::new();
        for (i, p) in spec.ports.iter().enumerate() {
            let path = index("spec.ports", i);
            match &p.name {
                Some(n) => {
                    errs.check(join(&path, "name"), v::check_dns1123_label(n));
                    if !names.insert(n.as_str()) {
                        errs.push(join(&path, "name"), format!("duplicate port name {n:?}"));
                    }
                }
                None if spec.ports.len() > 1 => errs.push(
                    join(&path, "name"),
                    "required when the service has more than one port",
                ),
                None => {}
            }
            errs.check(join(&path, "port"), v::check_port(p.port));
            if !ports.insert((p.port, p.protocol)) {
                errs.push(
                    join(&path, "port"),
                    format!("port {}/{} is listed twice", p.port, p.protocol),
                );
            }
            match &p.target_port {
                Some(IntOrString::Int(t)) => {
                    errs.check(join(&path, "targetPort"), v::check_port(*t))
                }
                Some(IntOrString::String(s)) => {
                    errs.check(join(&path, "targetPort"), v::check_port_name(s))
                }
                None => {}
            }
            if let Some(np) = p.node_port {
                if spec.type_ != ServiceType::NodePort {
                    errs.push(
                        join(&path, "nodePort"),
                        "may only be set when type is NodePort",
                    );
                } else if !(NODE_PORT_MIN..=NODE_PORT_MAX).contains(&np) {
                    errs.push(
                        join(&path, "nodePort"),
                        format!("must be between {NODE_PORT_MIN} and {NODE_PORT_MAX}, got {np}"),
                    );
                }
            }
        }
        if self.is_headless() {
            if spec.type_ != ServiceType::ClusterIP {
                errs.push(
                    "spec.clusterIP",
                    "None (headless) is only for type ClusterIP",
                );
            }
        } else if let Some(ip) = &spec.cluster_ip {
            errs.check("spec.clusterIP", v::check_ipv4(ip));
        }
        errs.into_result()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_validation() {
        let mut s: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}
        }))
        .unwrap();
        assert_eq!(s.spec.type_, ServiceType::ClusterIP);
        assert_eq!(s.spec.ports[0].protocol, Protocol::Tcp);
        s.validate().unwrap();
        s.spec.ports.push(ServicePort {
            port: 81,
            ..Default::default()
        });
        s.set_defaults();
        assert_eq!(s.spec.ports[1].target(), IntOrString::Int(81));
        let e = s.validate().unwrap_err().to_string();
        assert!(
            e.contains("spec.ports[0].name: required when the service has more than one port"),
            "{e}"
        );
        s.spec.ports[1].node_port = Some(30080);
        s.metadata.name = "1web".into();
        s.spec.cluster_ip = Some("10.96.0".into());
        let e = s.validate().unwrap_err().to_string();
        assert!(
            e.contains("metadata.name: \"1web\" is not a valid DNS-1035 label"),
            "{e}"
        );
        assert!(
            e.contains("spec.ports[1].nodePort: may only be set when type is NodePort"),
            "{e}"
        );
        assert!(
            e.contains("spec.clusterIP: \"10.96.0\" is not an IPv4 address"),
            "{e}"
        );
        assert_eq!(s.dns_name(), "1web.default.svc.shoal.local");
    }

    #[test]
    fn headless_services() {
        let s: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "clusterIP": "None"}
        }))
        .unwrap();
        assert!(s.is_headless());
        s.validate().unwrap();
        let mut np = s.clone();
        np.spec.type_ = ServiceType::NodePort;
        let e = np.validate().unwrap_err().to_string();
        assert!(
            e.contains("spec.clusterIP: None (headless) is only for type ClusterIP"),
            "{e}"
        );
        let mut ported = s.clone();
        ported.spec.cluster_ip = None;
        let e = ported.validate().unwrap_err().to_string();
        assert!(
            e.contains("spec.ports: at least one port is required"),
            "{e}"
        );
    }
}
