//! Endpoints: the addresses behind a Service, kept by the controller.

use crate::meta::{ObjectMeta, ObjectReference, Protocol};
use crate::validation::{self as v, ValidationErrors, index, join};
use serde::{Deserialize, Serialize};

/// The endpoints of the service of the same name and namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoints {
    /// Name (= the service's), namespace.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Groups of addresses sharing the same ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsets: Vec<EndpointSubset>,
}

/// Addresses that share a set of ports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointSubset {
    /// Ready pod addresses (traffic goes here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<EndpointAddress>,
    /// Addresses of pods not ready yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ready_addresses: Vec<EndpointAddress>,
    /// Ports (resolved target ports of the service).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<EndpointPort>,
}

/// One pod address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointAddress {
    /// Pod IP.
    pub ip: String,
    /// The pod's `hostname`, when its `subdomain` is the service's name (its DNS name
    /// `HOSTNAME.SERVICE.NAMESPACE.svc.shoal.local` under a headless service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Node running the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// The pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<ObjectReference>,
}

/// One port of the endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointPort {
    /// Name of the service port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Port number on the pods.
    pub port: i32,
    /// `TCP` or `UDP`.
    #[serde(default)]
    pub protocol: Protocol,
}

impl Endpoints {
    /// Checks name, addresses and ports.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::new();
        self.metadata.validate(
            crate::Kind::Endpoints,
            v::check_dns1123_subdomain,
            &mut errs,
        );
        for (i, s) in self.subsets.iter().enumerate() {
            let p = index("subsets", i);
            for (field, list) in [
                ("addresses", &s.addresses),
                ("notReadyAddresses", &s.not_ready_addresses),
            ] {
                for (j, a) in list.iter().enumerate() {
                    errs.check(
                        join(&index(&join(&p, field), j), "ip"),
                        v::check_ipv4(&a.ip),
                    );
                }
            }
            for (j, port) in s.ports.iter().enumerate() {
                errs.check(
                    join(&index(&join(&p, "ports"), j), "port"),
                    v::check_port(port.port),
                );
            }
        }
        errs.into_result()
    }

    /// Every ready address across subsets.
    pub fn ready_addresses(&self) -> impl Iterator<Item = &EndpointAddress> {
        self.subsets.iter().flat_map(|s| s.addresses.iter())
    }
}
