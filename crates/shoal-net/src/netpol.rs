//! Network policy enforcement in the node's nftables table (pure rendering).
//!
//! The agent turns the cluster's NetworkPolicies into one [`PolicyRules`] per policy that
//! selects a pod of this node; [`render`] makes the chains and named sets that enforce them
//! inside table `ip <table>` (see [`crate::nft`]). The rules depend only on the *shape* of the
//! policies (rules, ports, ipBlocks); which pods are selected and which pods are peers lives
//! in named sets of addresses ([`Policy::sets`]), so a pod that comes, goes or changes labels
//! is one `add element`/`delete element` transaction ([`element_updates`]), never a rewrite.
//!
//! Layout (all in the forward path of the bridge, where br_netfilter hands bridged
//! pod-to-pod frames to the `ip` hooks too, and in the input path for traffic to the node):
//!
//! - `netpol` (jumped from `filter-forward` after `ct state established,related accept`):
//!   packets in from the bridge whose source is in `egress-isolated` go through
//!   `netpol-egress`; packets out to the bridge whose destination is in `ingress-isolated`
//!   go through `netpol-ingress`.
//! - `filter-input` jumps to `netpol-egress` for isolated pods before it accepts DNS.
//! - `netpol-ingress`/`netpol-egress` hold one rule per (policy, rule, peer kind): the
//!   policy's selected pods (`np-H-sel`), the peer pods (`np-H-iK-pods`) or blocks
//!   (`np-H-iK-cidrs`), the ports (`np-H-iK-ports`); a match returns (allowed), the chain
//!   ends with `counter drop`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::nft::Proto;

/// An inclusive port range of one protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    /// Protocol.
    pub proto: Proto,
    /// First port.
    pub first: u16,
    /// Last port (≥ `first`).
    pub last: u16,
}

/// The other ends a rule allows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peers {
    /// Addresses of the pods the rule's selectors match; `None` when the rule has only
    /// ipBlocks.
    pub pods: Option<BTreeSet<Ipv4Addr>>,
    /// Inclusive address ranges of the rule's ipBlocks (`except` already cut out).
    pub ranges: Vec<(Ipv4Addr, Ipv4Addr)>,
}

/// One ingress or egress rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyRule {
    /// `None`: any peer.
    pub peers: Option<Peers>,
    /// Destination ports; empty: every port and protocol.
    pub ports: Vec<PortRange>,
}

/// One NetworkPolicy as this node enforces it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyRules {
    /// `namespace/name`, used (hashed) in set names and in comments.
    pub id: String,
    /// Addresses of the pods of this node the policy selects.
    pub selected: BTreeSet<Ipv4Addr>,
    /// Ingress rules if the policy isolates ingress (empty: deny all).
    pub ingress: Option<Vec<PolicyRule>>,
    /// Egress rules if the policy isolates egress (empty: deny all).
    pub egress: Option<Vec<PolicyRule>>,
}

/// A named set: its declaration, and its elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedSet {
    /// Set name.
    pub name: String,
    /// The type, and a `flags …` line if any.
    pub decl: String,
    /// Elements as nft writes them.
    pub elements: Vec<String>,
    /// True for sets of pod addresses (updated in place); false for sets fixed by the
    /// policies' text (ipBlocks, ports), which are part of the table's shape.
    pub dynamic: bool,
}

/// The rendered policy part of the table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Every set, in a stable order.
    pub sets: Vec<NamedSet>,
    /// The rules of `netpol-ingress` (without the final drop).
    pub ingress: Vec<String>,
    /// The rules of `netpol-egress` (without the final drop).
    pub egress: Vec<String>,
}

/// Name of the set of this node's pods isolated for ingress.
pub const INGRESS_ISOLATED: &str = "ingress-isolated";
/// Name of the set of this node's pods isolated for egress.
pub const EGRESS_ISOLATED: &str = "egress-isolated";

const ADDR: &str = "ipv4_addr";
const ADDR_RANGES: &str = "ipv4_addr\n\t\tflags interval";
const PORTS: &str = "inet_proto . inet_service\n\t\tflags interval";

/// Renders the sets and rules of `policies` (pure, deterministic: policies are ordered by
/// id, ranges merged).
pub fn render(policies: &[PolicyRules]) -> Policy {
    let mut sorted: Vec<&PolicyRules> = policies.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    let mut out = Policy::default();
    let mut isolated_in = BTreeSet::new();
    let mut isolated_out = BTreeSet::new();
    let mut used = BTreeSet::new();
    let mut sets = Vec::new();
    for p in sorted {
        if p.ingress.is_none() && p.egress.is_none() {
            continue;
        }
        let base = crate::nft::unique_name(
            &mut used,
            &format!("np-{:08x}", crate::nft::fnv1a(&p.id) as u32),
        );
        let sel = format!("{base}-sel");
        sets.push(NamedSet {
            name: sel.clone(),
            decl: ADDR.into(),
            elements: addrs(&p.selected),
            dynamic: true,
        });
        let comment = crate::nft::quote(&p.id);
        for (dir, rules, isolated) in [
            ('i', &p.ingress, &mut isolated_in),
            ('e', &p.egress, &mut isolated_out),
        ] {
            let Some(rules) = rules else { continue };
            isolated.extend(p.selected.iter().copied());
            // Ingress: the selected pod is the destination; egress: the source.
            let (own, peer) = if dir == 'i' {
                ("daddr", "saddr")
            } else {
                ("saddr", "daddr")
            };
            let lines = if dir == 'i' {
                &mut out.ingress
            } else {
                &mut out.egress
            };
            for (k, r) in rules.iter().enumerate() {
                let name = format!("{base}-{dir}{k}");
                let ports = merge_ports(&r.ports);
                let port_match = if ports.is_empty() {
                    String::new()
                } else {
                    let set = format!("{name}-ports");
                    sets.push(NamedSet {
                        name: set.clone(),
                        decl: PORTS.into(),
                        elements: ports
                            .iter()
                            .map(|p| {
                                let proto = p.proto.as_str();
                                if p.first == p.last {
                                    format!("{proto} . {}", p.first)
                                } else {
                                    format!("{proto} . {}-{}", p.first, p.last)
                                }
                            })
                            .collect(),
                        dynamic: false,
                    });
                    format!(" meta l4proto . th dport @{set}")
                };
                let head = format!("ip {own} @{sel}");
                let Some(peers) = &r.peers else {
                    lines.push(format!("{head}{port_match} return comment {comment}"));
                    continue;
                };
                if let Some(pods) = &peers.pods {
                    let set = format!("{name}-pods");
                    sets.push(NamedSet {
                        name: set.clone(),
                        decl: ADDR.into(),
                        elements: addrs(pods),
                        dynamic: true,
                    });
                    lines.push(format!(
                        "{head} ip {peer} @{set}{port_match} return comment {comment}"
                    ));
                }
                let ranges = merge_addr_ranges(&peers.ranges);
                if !ranges.is_empty() {
                    let set = format!("{name}-cidrs");
                    sets.push(NamedSet {
                        name: set.clone(),
                        decl: ADDR_RANGES.into(),
                        elements: ranges
                            .iter()
                            .map(|(a, b)| {
                                if a == b {
                                    a.to_string()
                                } else {
                                    format!("{a}-{b}")
                                }
                            })
                            .collect(),
                        dynamic: false,
                    });
                    lines.push(format!(
                        "{head} ip {peer} @{set}{port_match} return comment {comment}"
                    ));
                }
            }
        }
    }
    out.sets.push(NamedSet {
        name: INGRESS_ISOLATED.into(),
        decl: ADDR.into(),
        elements: addrs(&isolated_in),
        dynamic: true,
    });
    out.sets.push(NamedSet {
        name: EGRESS_ISOLATED.into(),
        decl: ADDR.into(),
        elements: addrs(&isolated_out),
        dynamic: true,
    });
    out.sets.extend(sets);
    out
}

impl Policy {
    /// The elements of the dynamic sets (pod addresses), by set name.
    pub fn dynamic(&self) -> BTreeMap<String, BTreeSet<String>> {
        self.sets
            .iter()
            .filter(|s| s.dynamic)
            .map(|s| (s.name.clone(), s.elements.iter().cloned().collect()))
            .collect()
    }

    /// The chains `netpol`, `netpol-ingress` and `netpol-egress` (`bridge` quoted).
    pub fn chains(&self, bridge: &str) -> String {
        let mut out = String::new();
        let _ = write!(
            out,
            "\tchain netpol {{\n\
             \t\tiifname {bridge} ip saddr @{EGRESS_ISOLATED} jump netpol-egress\n\
             \t\toifname {bridge} ip daddr @{INGRESS_ISOLATED} jump netpol-ingress\n\
             \t}}\n"
        );
        for (name, rules) in [
            ("netpol-ingress", &self.ingress),
            ("netpol-egress", &self.egress),
        ] {
            let _ = writeln!(out, "\tchain {name} {{");
            for r in rules {
                let _ = writeln!(out, "\t\t{r}");
            }
            let _ = writeln!(out, "\t\tcounter drop comment \"network policy\"");
            out.push_str("\t}\n");
        }
        out
    }
}

/// The `nft -f` commands that turn the dynamic sets' elements `old` into `new` (pure): per
/// set, `delete element` for what went, then `add element` for what came. Sets only in
/// `new` are filled; sets only in `old` are left alone (they were deleted with their
/// policy).
pub fn element_updates(
    table: &str,
    old: &BTreeMap<String, BTreeSet<String>>,
    new: &BTreeMap<String, BTreeSet<String>>,
) -> String {
    let empty = BTreeSet::new();
    let mut out = String::new();
    for (name, want) in new {
        let have = old.get(name).unwrap_or(&empty);
        let gone: Vec<&str> = have.difference(want).map(String::as_str).collect();
        let came: Vec<&str> = want.difference(have).map(String::as_str).collect();
        if !gone.is_empty() {
            let _ = writeln!(
                out,
                "delete element ip {table} {name} {{ {} }}",
                gone.join(", ")
            );
        }
        if !came.is_empty() {
            let _ = writeln!(
                out,
                "add element ip {table} {name} {{ {} }}",
                came.join(", ")
            );
        }
    }
    out
}

fn addrs(s: &BTreeSet<Ipv4Addr>) -> Vec<String> {
    s.iter().map(Ipv4Addr::to_string).collect()
}

/// Sorted, with overlapping and adjacent ranges joined (an interval set refuses overlaps).
fn merge<T: Copy + Ord>(mut v: Vec<(T, T)>, next: impl Fn(T) -> Option<T>) -> Vec<(T, T)> {
    v.sort();
    let mut out: Vec<(T, T)> = Vec::new();
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if a <= last.1 || next(last.1) == Some(a) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

fn merge_addr_ranges(r: &[(Ipv4Addr, Ipv4Addr)]) -> Vec<(Ipv4Addr, Ipv4Addr)> {
    let v = r
        .iter()
        .map(|(a, b)| (u32::from(*a), u32::from(*b)))
        .collect();
    merge(v, |x: u32| x.checked_add(1))
        .into_iter()
        .map(|(a, b)| (Ipv4Addr::from(a), Ipv4Addr::from(b)))
        .collect()
}

fn merge_ports(ports: &[PortRange]) -> Vec<PortRange> {
    let mut out = Vec::new();
    for proto in [Proto::Tcp, Proto::Udp] {
        let v = ports
            .iter()
            .filter(|p| p.proto == proto)
            .map(|p| (p.first, p.last))
            .collect();
        out.extend(
            merge(v, |x: u16| x.checked_add(1))
                .into_iter()
                .map(|(first, last)| PortRange { proto, first, last }),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn ips(v: &[&str]) -> BTreeSet<Ipv4Addr> {
        v.iter().map(|s| ip(s)).collect()
    }

    fn tcp(first: u16, last: u16) -> PortRange {
        PortRange {
            proto: Proto::Tcp,
            first,
            last,
        }
    }

    fn web() -> PolicyRules {
        PolicyRules {
            id: "prod/web".into(),
            selected: ips(&["10.244.1.5", "10.244.1.6"]),
            ingress: Some(vec![
                PolicyRule {
                    peers: Some(Peers {
                        pods: Some(ips(&["10.244.2.7"])),
                        ranges: vec![(ip("192.168.0.0"), ip("192.168.0.255"))],
                    }),
                    ports: vec![
                        tcp(80, 80),
                        tcp(79, 81),
                        PortRange {
                            proto: Proto::Udp,
                            first: 53,
                            last: 53,
                        },
                    ],
                },
                PolicyRule {
                    peers: None,
                    ports: vec![],
                },
            ]),
            egress: Some(vec![]),
        }
    }

    #[test]
    fn renders_sets_and_rules_per_policy_rule() {
        let p = render(&[web()]);
        let h = format!("np-{:08x}", crate::nft::fnv1a("prod/web") as u32);
        let names: Vec<&str> = p.sets.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                INGRESS_ISOLATED.to_string(),
                EGRESS_ISOLATED.to_string(),
                format!("{h}-sel"),
                format!("{h}-i0-ports"),
                format!("{h}-i0-pods"),
                format!("{h}-i0-cidrs"),
            ]
        );
        assert_eq!(
            p.ingress,
            [
                format!(
                    "ip daddr @{h}-sel ip saddr @{h}-i0-pods meta l4proto . th dport @{h}-i0-ports return comment \"prod/web\""
                ),
                format!(
                    "ip daddr @{h}-sel ip saddr @{h}-i0-cidrs meta l4proto . th dport @{h}-i0-ports return comment \"prod/web\""
                ),
                format!("ip daddr @{h}-sel return comment \"prod/web\""),
            ]
        );
        // Egress isolated with no rule: nothing allowed.
        assert!(p.egress.is_empty());
        let ports = &p.sets[3];
        assert_eq!(ports.elements, ["tcp . 79-81", "udp . 53"], "merged");
        assert!(!ports.dynamic);
        assert_eq!(p.sets[5].elements, ["192.168.0.0-192.168.0.255"]);
        let d = p.dynamic();
        assert_eq!(d.len(), 4);
        assert_eq!(d[INGRESS_ISOLATED], d[&format!("{h}-sel")]);
        assert_eq!(d[EGRESS_ISOLATED].len(), 2);
        let chains = p.chains("\"shoal0\"");
        assert!(
            chains
                .contains("\t\tiifname \"shoal0\" ip saddr @egress-isolated jump netpol-egress\n")
        );
        assert!(
            chains.contains(
                "\t\toifname \"shoal0\" ip daddr @ingress-isolated jump netpol-ingress\n"
            )
        );
        assert_eq!(
            chains
                .matches("counter drop comment \"network policy\"")
                .count(),
            2
        );
    }

    #[test]
    fn pod_changes_touch_only_dynamic_sets() {
        let a = render(&[web()]);
        let mut w = web();
        w.selected.insert(ip("10.244.1.9"));
        w.selected.remove(&ip("10.244.1.5"));
        if let Some(rules) = &mut w.ingress
            && let Some(peers) = &mut rules[0].peers
        {
            peers.pods = Some(ips(&[]));
        }
        let b = render(&[w]);
        assert_eq!(a.ingress, b.ingress);
        assert_eq!(a.chains("x"), b.chains("x"));
        let statics = |p: &Policy| -> Vec<NamedSet> {
            p.sets.iter().filter(|s| !s.dynamic).cloned().collect()
        };
        assert_eq!(statics(&a), statics(&b));
        let h = format!("np-{:08x}", crate::nft::fnv1a("prod/web") as u32);
        let script = element_updates("shoal", &a.dynamic(), &b.dynamic());
        let lines: Vec<&str> = script.lines().collect();
        assert_eq!(
            lines,
            [
                "delete element ip shoal egress-isolated { 10.244.1.5 }",
                "add element ip shoal egress-isolated { 10.244.1.9 }",
                "delete element ip shoal ingress-isolated { 10.244.1.5 }",
                "add element ip shoal ingress-isolated { 10.244.1.9 }",
                &format!("delete element ip shoal {h}-i0-pods {{ 10.244.2.7 }}"),
                &format!("delete element ip shoal {h}-sel {{ 10.244.1.5 }}"),
                &format!("add element ip shoal {h}-sel {{ 10.244.1.9 }}"),
            ]
        );
        assert_eq!(element_updates("shoal", &b.dynamic(), &b.dynamic()), "");
        // From nothing: only adds, empty sets skipped.
        let fill = element_updates("shoal", &BTreeMap::new(), &a.dynamic());
        assert!(fill.lines().all(|l| l.starts_with("add element")), "{fill}");
        assert_eq!(fill.lines().count(), 4);
    }

    #[test]
    fn any_peer_with_ports_and_ranges_merge() {
        let p = render(&[PolicyRules {
            id: "a/b".into(),
            selected: ips(&["10.0.0.2"]),
            ingress: None,
            egress: Some(vec![PolicyRule {
                peers: Some(Peers {
                    pods: None,
                    ranges: vec![
                        (ip("10.1.0.0"), ip("10.1.0.127")),
                        (ip("10.1.0.128"), ip("10.1.0.255")),
                        (ip("10.1.0.5"), ip("10.1.0.5")),
                        (ip("8.8.8.8"), ip("8.8.8.8")),
                    ],
                }),
                ports: vec![PortRange {
                    proto: Proto::Udp,
                    first: 53,
                    last: 53,
                }],
            }]),
        }]);
        assert!(p.ingress.is_empty());
        assert_eq!(p.egress.len(), 1, "ipBlocks only: no pods rule");
        assert!(p.egress[0].starts_with("ip saddr @np-"));
        let cidrs = p.sets.iter().find(|s| s.name.ends_with("-cidrs")).unwrap();
        assert_eq!(cidrs.elements, ["8.8.8.8", "10.1.0.0-10.1.0.255"]);
        assert!(p.dynamic()[INGRESS_ISOLATED].is_empty());
        assert_eq!(p.dynamic()[EGRESS_ISOLATED].len(), 1);
    }

    #[test]
    fn policies_without_direction_render_nothing_and_ids_collide_safely() {
        let mut none = web();
        none.ingress = None;
        none.egress = None;
        let p = render(&[none]);
        assert_eq!(p.sets.len(), 2);
        let a = web();
        let b = web();
        let p = render(&[a, b]);
        let sels = p.sets.iter().filter(|s| s.name.ends_with("-sel")).count();
        assert_eq!(sels, 2, "same id twice: two distinct set families");
    }
}
