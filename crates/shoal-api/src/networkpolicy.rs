//! NetworkPolicy (`networking.k8s.io/v1`): which pods may connect to the pods it selects
//! (ingress) and where those pods may connect to (egress). Policies are additive
//! allow-lists with Kubernetes' semantics: a pod selected by any policy of a direction
//! accepts, in that direction, only what one of those policies allows; replies to allowed
//! connections always flow. The nodes enforce them (docs/network.md).

use crate::intorstring::IntOrString;
use crate::meta::{ObjectMeta, Protocol};
use crate::selector::{LabelSelector, LabelSelectorSpec, SelectorError};
use crate::validation::{self as v, ValidationErrors, index};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The label every namespace has, with its name as the value (as in Kubernetes), so that
/// `namespaceSelector` can pick a namespace by name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A network policy: `metadata` and `spec` (it has no status).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicy {
    /// Name, namespace, labels, server-set fields.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The selected pods and their allowed traffic.
    pub spec: NetworkPolicySpec,
}

/// A direction of traffic a policy isolates.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
pub enum PolicyType {
    /// Connections to the selected pods.
    Ingress,
    /// Connections from the selected pods.
    Egress,
}

/// Desired state of a network policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicySpec {
    /// The pods of the policy's namespace it applies to; `{}` selects every pod of the
    /// namespace.
    pub pod_selector: LabelSelectorSpec,
    /// Allowed incoming connections (any rule allowing is enough); none: deny all ingress.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<NetworkPolicyIngressRule>,
    /// Allowed outgoing connections; none (with `Egress` in `policyTypes`): deny all egress.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<NetworkPolicyEgressRule>,
    /// The directions the policy isolates. Default: `Ingress`, plus `Egress` when `egress`
    /// rules are given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_types: Option<Vec<PolicyType>>,
}

/// One ingress rule: connections from any of `from` to any of `ports`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicyIngressRule {
    /// Sources; empty: every source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<NetworkPolicyPeer>,
    /// Destination ports on the selected pods; empty: every port and protocol.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<NetworkPolicyPort>,
}

/// One egress rule: connections to any of `to` on any of `ports`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicyEgressRule {
    /// Destinations; empty: every destination.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<NetworkPolicyPeer>,
    /// Destination ports; empty: every port and protocol.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<NetworkPolicyPort>,
}

/// The other end of a connection: pods (by pod and/or namespace labels) or an IP block.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicyPeer {
    /// Pods with these labels: in the policy's namespace, or in the namespaces
    /// `namespaceSelector` picks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelectorSpec>,
    /// Namespaces with these labels (every namespace carries
    /// `kubernetes.io/metadata.name: NAME`); alone it means all their pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelectorSpec>,
    /// A range of IPv4 addresses; not together with the selectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_block: Option<IpBlock>,
}

/// An IPv4 CIDR without the `except` blocks inside it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpBlock {
    /// The block, e.g. `10.0.0.0/8`.
    pub cidr: String,
    /// Blocks inside `cidr` that are not part of it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
}

/// A destination port (or range) and protocol.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicyPort {
    /// `TCP` (default) or `UDP`.
    #[serde(default)]
    pub protocol: Protocol,
    /// A port number (or a named port, which Shoal does not support); unset: every port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<IntOrString>,
    /// With a numeric `port`: the last port of the range `port..=endPort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<i32>,
}

impl NetworkPolicyPort {
    /// The inclusive port range (`None`: every port of the protocol). Only for a valid
    /// policy: a named port gives `None` as well.
    pub fn range(&self) -> Option<(u16, u16)> {
        let IntOrString::Int(p) = self.port.as_ref()? else {
            return None;
        };
        let first = u16::try_from(*p).ok()?;
        let last = match self.end_port {
            Some(e) => u16::try_from(e).ok()?,
            None => first,
        };
        Some((first, last))
    }
}

impl NetworkPolicySpec {
    /// The directions the policy isolates, with Kubernetes' default.
    pub fn effective_policy_types(&self) -> Vec<PolicyType> {
        match &self.policy_types {
            Some(t) => {
                let mut t = t.clone();
                t.sort();
                t.dedup();
                t
            }
            None if self.egress.is_empty() => vec![PolicyType::Ingress],
            None => vec![PolicyType::Ingress, PolicyType::Egress],
        }
    }
}

impl IpBlock {
    /// The block as inclusive address ranges, `except` blocks cut out (only for a valid
    /// block: an unparsable one gives no range).
    pub fn ranges(&self) -> Vec<(Ipv4Addr, Ipv4Addr)> {
        let Some(whole) = parse_cidr(&self.cidr) else {
            return Vec::new();
        };
        let mut out = vec![whole];
        for e in self.except.iter().filter_map(|e| parse_cidr(e)) {
            out = out
                .into_iter()
                .flat_map(|(a, b)| {
                    let mut keep = Vec::new();
                    if e.1 < a || e.0 > b {
                        keep.push((a, b));
                    } else {
                        if e.0 > a {
                            keep.push((a, e.0 - 1));
                        }
                        if e.1 < b {
                            keep.push((e.1 + 1, b));
                        }
                    }
                    keep
                })
                .collect();
        }
        out.into_iter()
            .map(|(a, b)| (Ipv4Addr::from(a), Ipv4Addr::from(b)))
            .collect()
    }
}

/// `a.b.c.d/n` as its first and last address.
fn parse_cidr(s: &str) -> Option<(u32, u32)> {
    let (ip, len) = s.split_once('/')?;
    let ip = u32::from(ip.parse::<Ipv4Addr>().ok()?);
    let len: u32 = len.parse().ok().filter(|l| *l <= 32)?;
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Some((ip & mask, (ip & mask) | !mask))
}

/// The labels a namespace selector sees for namespace `name`: its own labels plus
/// [`NAMESPACE_NAME_LABEL`].
pub fn namespace_labels(
    name: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    let mut l = labels.cloned().unwrap_or_default();
    l.insert(NAMESPACE_NAME_LABEL.to_string(), name.to_string());
    l
}

fn check_selector(spec: &LabelSelectorSpec, field: &str, errs: &mut ValidationErrors) {
    match LabelSelector::from_spec(spec) {
        Ok(_) => {}
        Err(SelectorError::Invalid { field: f, message }) => {
            errs.push(format!("{field}.{f}"), message)
        }
        Err(e) => errs.push(field, e.to_string()),
    }
}

fn check_peer(p: &NetworkPolicyPeer, field: &str, errs: &mut ValidationErrors) {
    if let Some(s) = &p.pod_selector {
        check_selector(s, &format!("{field}.podSelector"), errs);
    }
    if let Some(s) = &p.namespace_selector {
        check_selector(s, &format!("{field}.namespaceSelector"), errs);
    }
    match (
        &p.ip_block,
        p.pod_selector.is_some() || p.namespace_selector.is_some(),
    ) {
        (None, false) => errs.push(
            field,
            "must set one of podSelector, namespaceSelector or ipBlock",
        ),
        (Some(_), true) => errs.push(
            format!("{field}.ipBlock"),
            "must not be set together with podSelector or namespaceSelector",
        ),
        (Some(b), false) => {
            let at = format!("{field}.ipBlock");
            match v::check_ipv4_cidr(&b.cidr) {
                Err(e) => errs.push(format!("{at}.cidr"), e),
                Ok(()) => {
                    let whole = parse_cidr(&b.cidr);
                    for (i, e) in b.except.iter().enumerate() {
                        let path = index(&format!("{at}.except"), i);
                        match (v::check_ipv4_cidr(e), whole, parse_cidr(e)) {
                            (Err(m), _, _) => errs.push(path, m),
                            (Ok(()), Some(w), Some(x)) if x.0 < w.0 || x.1 > w.1 => {
                                errs.push(path, format!("{e:?} must lie inside cidr {:?}", b.cidr))
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        (None, true) => {}
    }
}

fn check_port(p: &NetworkPolicyPort, field: &str, errs: &mut ValidationErrors) {
    match &p.port {
        None => {
            if p.end_port.is_some() {
                errs.push(format!("{field}.endPort"), "requires a numeric port");
            }
        }
        Some(IntOrString::String(name)) => errs.push(
            format!("{field}.port"),
            format!(
                "named port {name:?} is not supported by Shoal: use the port number (a Kubernetes feature)"
            ),
        ),
        Some(IntOrString::Int(n)) => {
            errs.check(format!("{field}.port"), v::check_port(*n));
            if let Some(e) = p.end_port {
                errs.check(format!("{field}.endPort"), v::check_port(e));
                if e < *n {
                    errs.push(
                        format!("{field}.endPort"),
                        format!("must not be less than port {n}, got {e}"),
                    );
                }
            }
        }
    }
}

impl NetworkPolicy {
    /// Checks metadata, selectors, peers (one of podSelector/namespaceSelector or ipBlock;
    /// CIDRs with `except` inside `cidr`), ports (numbers 1-65535, `endPort` ≥ `port`) and
    /// `policyTypes` (no repeats).
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::new();
        self.metadata.validate(
            crate::Kind::NetworkPolicy,
            v::check_dns1123_subdomain,
            &mut errs,
        );
        let spec = &self.spec;
        check_selector(&spec.pod_selector, "spec.podSelector", &mut errs);
        let rules = spec
            .ingress
            .iter()
            .map(|r| ("ingress", "from", &r.from, &r.ports))
            .enumerate()
            .chain(
                spec.egress
                    .iter()
                    .map(|r| ("egress", "to", &r.to, &r.ports))
                    .enumerate(),
            );
        for (i, (dir, peers_key, peers, ports)) in rules {
            let at = index(&format!("spec.{dir}"), i);
            for (j, p) in peers.iter().enumerate() {
                check_peer(p, &index(&format!("{at}.{peers_key}"), j), &mut errs);
            }
            for (j, p) in ports.iter().enumerate() {
                check_port(p, &index(&format!("{at}.ports"), j), &mut errs);
            }
        }
        if let Some(t) = &spec.policy_types {
            let mut seen = Vec::new();
            for (i, p) in t.iter().enumerate() {
                if seen.contains(p) {
                    errs.push(
                        index("spec.policyTypes", i),
                        format!("{p:?} is listed twice"),
                    );
                }
                seen.push(*p);
            }
        }
        errs.into_result()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Object, parse_manifests};

    const NP: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: prod}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - podSelector: {matchLabels: {role: client}}
    - namespaceSelector: {matchLabels: {team: a}}
      podSelector: {matchExpressions: [{key: tier, operator: In, values: [fe]}]}
    - ipBlock: {cidr: 192.168.0.0/16, except: [192.168.1.0/24]}
    ports:
    - {protocol: TCP, port: 80}
    - {protocol: UDP, port: 5000, endPort: 5010}
  egress:
  - ports: [{protocol: UDP, port: 53}]
";

    fn error(text: &str) -> String {
        parse_manifests("np.yaml", text).unwrap_err().to_string()
    }

    fn policy(text: &str) -> NetworkPolicy {
        let Object::NetworkPolicy(p) = parse_manifests("np.yaml", text).unwrap().remove(0) else {
            panic!()
        };
        p
    }

    #[test]
    fn parses_with_upstream_api_version() {
        let p = policy(NP);
        p.validate().unwrap();
        assert_eq!(p.metadata.namespace.as_deref(), Some("prod"));
        let r = &p.spec.ingress[0];
        assert_eq!(r.from.len(), 3);
        assert_eq!(r.ports[0].range(), Some((80, 80)));
        assert_eq!(r.ports[1].range(), Some((5000, 5010)));
        assert_eq!(r.ports[1].protocol, Protocol::Udp);
        assert_eq!(
            p.spec.effective_policy_types(),
            [PolicyType::Ingress, PolicyType::Egress]
        );
        let round = Object::from_json(&Object::NetworkPolicy(p.clone()).to_json()).unwrap();
        assert_eq!(round, Object::NetworkPolicy(p));
    }

    #[test]
    fn default_policy_types_follow_kubernetes() {
        let mut s = NetworkPolicySpec::default();
        assert_eq!(s.effective_policy_types(), [PolicyType::Ingress]);
        s.egress.push(NetworkPolicyEgressRule::default());
        assert_eq!(
            s.effective_policy_types(),
            [PolicyType::Ingress, PolicyType::Egress]
        );
        s.policy_types = Some(vec![PolicyType::Egress]);
        assert_eq!(s.effective_policy_types(), [PolicyType::Egress]);
    }

    #[test]
    fn ip_block_ranges_cut_out_excepts() {
        let b = |cidr: &str, except: &[&str]| IpBlock {
            cidr: cidr.into(),
            except: except.iter().map(|s| s.to_string()).collect(),
        };
        let r = |a: &str, z: &str| (a.parse().unwrap(), z.parse().unwrap());
        assert_eq!(
            b("10.0.0.0/8", &[]).ranges(),
            [r("10.0.0.0", "10.255.255.255")]
        );
        assert_eq!(
            b("10.1.2.3/24", &["10.1.2.0/26", "10.1.2.128/25"]).ranges(),
            [r("10.1.2.64", "10.1.2.127")]
        );
        assert_eq!(
            b("0.0.0.0/0", &["10.0.0.0/8"]).ranges(),
            [
                r("0.0.0.0", "9.255.255.255"),
                r("11.0.0.0", "255.255.255.255")
            ]
        );
        assert_eq!(b("10.0.0.1/32", &["10.0.0.1/32"]).ranges(), []);
    }

    #[test]
    fn errors_name_the_field() {
        for (from, to, want) in [
            (
                "    - {protocol: TCP, port: 80}\n",
                "    - {protocol: TCP, port: http}\n",
                "spec.ingress[0].ports[0].port: named port \"http\" is not supported by Shoal",
            ),
            (
                "port: 5000, endPort: 5010",
                "port: 5000, endPort: 4000",
                "spec.ingress[0].ports[1].endPort: must not be less than port 5000, got 4000",
            ),
            (
                "{protocol: TCP, port: 80}",
                "{protocol: TCP, port: 70000}",
                "spec.ingress[0].ports[0].port: must be between 1 and 65535",
            ),
            (
                "{protocol: TCP, port: 80}",
                "{protocol: SCTP, port: 80}",
                "spec.ingress[0].ports[0].protocol",
            ),
            (
                "except: [192.168.1.0/24]",
                "except: [10.0.0.0/24]",
                "spec.ingress[0].from[2].ipBlock.except[0]: \"10.0.0.0/24\" must lie inside cidr \"192.168.0.0/16\"",
            ),
            (
                "cidr: 192.168.0.0/16",
                "cidr: 192.168.0.0",
                "spec.ingress[0].from[2].ipBlock.cidr: \"192.168.0.0\" is not an IPv4 CIDR",
            ),
            (
                "    - ipBlock:",
                "    - podSelector: {}\n      ipBlock:",
                "spec.ingress[0].from[2].ipBlock: must not be set together with podSelector",
            ),
            (
                "    - podSelector: {matchLabels: {role: client}}\n",
                "    - {}\n",
                "spec.ingress[0].from[0]: must set one of podSelector, namespaceSelector or ipBlock",
            ),
            (
                "[Ingress, Egress]",
                "[Ingress, Ingress]",
                "spec.policyTypes[1]: Ingress is listed twice",
            ),
            (
                "values: [fe]",
                "values: []",
                "spec.ingress[0].from[1].podSelector.matchExpressions[0].values",
            ),
            (
                "  egress:\n  - ports: [{protocol: UDP, port: 53}]\n",
                "  egress:\n  - ports: [{protocol: UDP, endPort: 53}]\n",
                "spec.egress[0].ports[0].endPort: requires a numeric port",
            ),
        ] {
            assert!(NP.contains(from), "{from}");
            let e = error(&NP.replace(from, to));
            assert!(e.contains(want), "{to}: {e}");
        }
        let e = error(&NP.replace("  podSelector: {matchLabels: {app: web}}\n", ""));
        assert!(
            e.contains("spec.podSelector: required field is missing"),
            "{e}"
        );
    }

    #[test]
    fn namespace_labels_carry_the_name() {
        let l = namespace_labels("prod", None);
        assert_eq!(l[NAMESPACE_NAME_LABEL], "prod");
        let own = BTreeMap::from([("team".to_string(), "a".to_string())]);
        assert_eq!(namespace_labels("prod", Some(&own)).len(), 2);
    }
}
