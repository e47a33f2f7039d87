//! Service load-balancing, NodePort/hostPort forwarding and node isolation as one nftables table.
//!
//! [`render`] turns a [`NodeRules`] into a complete `nft -f` script (pure, deterministic) and
//! [`apply`] feeds it to one `nft -f -` run, which the kernel commits as a single transaction,
//! so packets never see a half-written ruleset. The table is updated in place, never deleted:
//! the transaction flushes every rule, set and map and defines them anew, and deletes the
//! chains no longer used. A packet whose evaluation straddles the commit may run the old
//! rules but look up sets with the new generation's view; a set that exists only in the old
//! generation (an anonymous set of a replaced rule, or every set of a deleted table) then
//! matches nothing, the connection's first packet leaves without DNAT, and its conntrack entry
//! keeps that for good (retransmissions are lost too: measured as about one connection in
//! 10,000 timing out while the table was rewritten in a loop). So the table is never deleted,
//! named maps survive (their elements are replaced, old and new both visible across the
//! commit), and no rule on the service path uses an anonymous set. If the update is refused
//! (e.g. a map's type changed with a new version), the table is replaced whole. The layout
//! follows kube-proxy's nftables mode:
//!
//! - `nat-prerouting` (dstnat) and `nat-output` (-100) jump to `services`, which dispatches
//!   `VIP . proto . port` through the verdict map `service-ips`, NodePorts on any local address
//!   (`fib daddr type local`) through `service-nodeports` and hostPorts through `host-ports`.
//! - a service chain `svc-…` picks a backend with `numgen random` rules and goes to an endpoint
//!   chain `sep-…`, which marks traffic for SNAT where the reply would bypass this node's
//!   conntrack (hairpin: the client is the backend; and any same-node client, whose reply would
//!   otherwise be bridged straight back) and DNATs to `ip:port`.
//! - `nat-postrouting` (srcnat) SNATs marked packets, and DNATed packets from outside the cluster
//!   CIDR (NodePort/hostPort from the underlay, the node itself), to the node's `gateway`, so
//!   replies come back through this node.
//! - `egress` (jumped to last from `nat-postrouting`) masquerades traffic from the cluster CIDR
//!   to anything outside the cluster and service CIDRs to the address of the outgoing interface
//!   (the node's own address), like Docker's default bridge: the world has no route back to pod
//!   addresses. Pod-to-pod (overlay) and pod-to-service traffic keeps its pod source. Plain
//!   prefixes, no set: `ip daddr != { … }` with an anonymous set would match *everything* for a
//!   packet that straddles a commit (see above) and masquerade a pod-to-pod connection for good.
//! - `filter-prerouting`/`filter-output` (-110) reject traffic to services without endpoints
//!   (TCP reset, ICMP port-unreachable otherwise), so clients fail fast.
//! - `filter-output` also drops ICMP redirects to pods: a pod talking to a VIP whose backend
//!   is on the same bridge would otherwise be told to send VIP traffic straight to the backend.
//! - `filter-input`/`filter-forward` drop new connections from pods (in on the bridge or from the
//!   cluster CIDR, but not the node itself over `lo`) to the `protected` (address, TCP port)
//!   pairs; DNS to the gateway stays open (unless a network policy isolates the pod's egress).
//! - `policy`, `netpol-ingress`, `netpol-egress` and the `np-…` sets enforce network policies
//!   (see [`crate::netpol`]); the sets of pod addresses are *dynamic*: [`update`] changes only
//!   their elements when nothing else of the table changed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use ipnet::Ipv4Net;

use crate::netpol::{self, PolicyRules};

/// Packet mark bit used to request SNAT to the gateway in `nat-postrouting`.
pub const MASQUERADE_MARK: u32 = 0x4000;

/// Errors from applying or removing the nftables table.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The table name cannot be used as an nftables identifier.
    #[error("invalid nftables table name {0:?}: expected 1-64 characters of [A-Za-z0-9_-]")]
    InvalidTable(String),
    /// `nft` could not be started or fed.
    #[error("running nft for table ip {table}: {source}")]
    Spawn {
        /// Table being changed.
        table: String,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// `nft` rejected the script.
    #[error("nft -f for table ip {table} failed ({status}): {stderr}")]
    Failed {
        /// Table being changed.
        table: String,
        /// Exit status of nft.
        status: String,
        /// What nft printed on stderr.
        stderr: String,
    },
}

/// Transport protocol of a service port or host port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// The protocol's nftables name (`tcp` / `udp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One ready endpoint of a service port: pod IP and target port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Backend {
    /// Pod IP.
    pub ip: Ipv4Addr,
    /// Target port on the pod.
    pub port: u16,
}

/// One service port: ClusterIP VIP:port (and optional NodePort) balanced over backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRule {
    /// Identifier, `namespace/name/port`; used (sanitized) in chain names and comments.
    pub id: String,
    /// The service's virtual IP.
    pub cluster_ip: Ipv4Addr,
    /// Service port on the VIP.
    pub port: u16,
    /// Transport protocol.
    pub protocol: Proto,
    /// NodePort on every local address of the node, if any.
    pub node_port: Option<u16>,
    /// Ready endpoints; empty means clients are rejected.
    pub backends: Vec<Backend>,
}

/// A container's hostPort on this node: local address:host_port forwarded to pod_ip:container_port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPortRule {
    /// Port on the node's local addresses.
    pub host_port: u16,
    /// Transport protocol.
    pub protocol: Proto,
    /// The pod's IP.
    pub pod_ip: Ipv4Addr,
    /// Port inside the pod.
    pub container_port: u16,
}

/// Everything one node programs into its nftables table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRules {
    /// Table name (family `ip`), normally `shoal`.
    pub table: String,
    /// Pod bridge name, e.g. `shoal0`.
    pub bridge: String,
    /// This node's pod CIDR.
    pub pod_cidr: Ipv4Net,
    /// The whole cluster CIDR.
    pub cluster_cidr: Ipv4Net,
    /// The service (VIP) CIDR.
    pub service_cidr: Ipv4Net,
    /// This node's gateway address on the bridge (SNAT source).
    pub gateway: Ipv4Addr,
    /// Service ports.
    pub services: Vec<ServiceRule>,
    /// Host ports of pods on this node.
    pub host_ports: Vec<HostPortRule>,
    /// (address, TCP port) pairs that pods must not reach (the node's own API ports).
    pub protected: Vec<(Ipv4Addr, u16)>,
    /// Network policies selecting pods of this node.
    pub policies: Vec<PolicyRules>,
}

/// Renders the complete `nft -f` script that atomically updates table `ip <table>` in place.
///
/// The script creates the table and its sets and maps if missing, flushes all their rules and
/// elements, then gives the full definition; nft applies the file as one transaction. Chains
/// the definition no longer uses are left empty; [`apply`] also deletes them.
/// Output is deterministic: services are ordered by id, backends and host ports sorted and
/// de-duplicated. A service whose VIP/protocol/port (or NodePort) repeats an earlier one is
/// skipped, with a `#` comment in the script saying so.
pub fn render(r: &NodeRules) -> String {
    let s = build(r);
    let fill = netpol::element_updates(&sanitize_ident(&r.table), &BTreeMap::new(), &s.dynamic);
    format!("{}{}{fill}", s.head, s.body)
}

/// A rendered table: the update prelude and the full definition.
struct Script {
    /// Comments, then: create the table and its sets/maps if missing, flush rules and elements.
    head: String,
    /// `table ip T { … }`: sets/maps with their elements, all chains with their rules; the
    /// dynamic (policy) sets without elements.
    body: String,
    /// The elements of the dynamic sets, by set name.
    dynamic: BTreeMap<String, BTreeSet<String>>,
}

/// What [`update`] last put into the kernel: the table without the dynamic sets' elements,
/// and those elements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rendered {
    /// Head and body of the full script (no dynamic elements).
    pub skeleton: String,
    /// Elements of the dynamic (pod address) sets, by set name.
    pub dynamic: BTreeMap<String, BTreeSet<String>>,
}

/// How [`update`] changed the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateKind {
    /// Nothing changed.
    None,
    /// Only elements of dynamic sets were added or deleted.
    Elements,
    /// The table was rewritten ([`apply`]).
    Full,
}

/// The table [`render`] would write, split into skeleton and dynamic elements (pure).
pub fn rendered(r: &NodeRules) -> Rendered {
    let s = build(r);
    Rendered {
        skeleton: format!("{}{}", s.head, s.body),
        dynamic: s.dynamic,
    }
}

/// The script that takes the kernel from `prev` to `next` in place, if only dynamic elements
/// differ (pure): `Some("")` when nothing differs, `None` when the table must be rewritten.
pub fn element_script(table: &str, prev: Option<&Rendered>, next: &Rendered) -> Option<String> {
    let prev = prev.filter(|p| p.skeleton == next.skeleton)?;
    Some(netpol::element_updates(
        &sanitize_ident(table),
        &prev.dynamic,
        &next.dynamic,
    ))
}

/// Brings table `ip <table>` from `prev` (what the last call returned; `None` when unknown)
/// to `r`: a set-element transaction when only pod addresses of policies changed, else
/// [`apply`]. Returns what is now in the kernel and which kind of update it took.
pub fn update(prev: Option<&Rendered>, r: &NodeRules) -> Result<(Rendered, UpdateKind), NftError> {
    check_table(&r.table)?;
    let next = rendered(r);
    match element_script(&r.table, prev, &next) {
        Some(script) if script.is_empty() => return Ok((next, UpdateKind::None)),
        Some(script) => match run_nft(&r.table, &script) {
            Ok(()) => return Ok((next, UpdateKind::Elements)),
            Err(e) => {
                tracing::warn!(table = %r.table, "updating the policy sets in place failed ({e}); rewriting the table");
            }
        },
        None => {}
    }
    apply(r)?;
    Ok((next, UpdateKind::Full))
}

impl Script {
    /// Names of the chains the body defines (each starts a line with one tab and `chain `).
    fn chains(&self) -> BTreeSet<&str> {
        self.defined("chain")
    }

    /// Names of the policy sets the body defines.
    fn policy_sets(&self) -> BTreeSet<&str> {
        self.defined("set")
            .into_iter()
            .filter(|n| n.starts_with("np-"))
            .collect()
    }

    /// Names of the chains or sets (`what`) the body defines (each starts a line with one tab
    /// and `what `).
    fn defined(&self, what: &str) -> BTreeSet<&str> {
        let prefix = format!("\t{what} ");
        self.body
            .lines()
            .filter_map(|l| l.strip_prefix(prefix.as_str())?.strip_suffix(" {"))
            .collect()
    }
}

/// The sets and maps of the table: keyword, name and type.
const COLLECTIONS: [(&str, &str, &str); 6] = [
    ("set", "protected", "ipv4_addr . inet_service"),
    (
        "map",
        "service-ips",
        "ipv4_addr . inet_proto . inet_service : verdict",
    ),
    (
        "map",
        "service-nodeports",
        "inet_proto . inet_service : verdict",
    ),
    ("map", "host-ports", "inet_proto . inet_service : verdict"),
    (
        "map",
        "no-endpoint-services",
        "ipv4_addr . inet_proto . inet_service : verdict",
    ),
    (
        "map",
        "no-endpoint-nodeports",
        "inet_proto . inet_service : verdict",
    ),
];

fn build(r: &NodeRules) -> Script {
    let table = sanitize_ident(&r.table);
    let bridge = quote(&r.bridge);
    let gw = r.gateway;
    let cluster = r.cluster_cidr.trunc();
    let pod = r.pod_cidr.trunc();
    let service = r.service_cidr.trunc();

    let mut services: Vec<&ServiceRule> = r.services.iter().collect();
    services.sort_by(|a, b| {
        (&a.id, a.cluster_ip, a.port, a.protocol).cmp(&(&b.id, b.cluster_ip, b.port, b.protocol))
    });

    let mut notes = Vec::new();
    let mut vip_keys = BTreeSet::new();
    let mut nodeport_keys = BTreeSet::new();
    let mut service_ips = Vec::new(); // map elements
    let mut service_nodeports = Vec::new();
    let mut no_ep_ips = Vec::new();
    let mut no_ep_nodeports = Vec::new();
    let mut svc_chains = String::new();
    let mut used_chains = BTreeSet::new();

    for s in services {
        let proto = s.protocol.as_str();
        if !vip_keys.insert((s.cluster_ip, s.protocol, s.port)) {
            notes.push(format!(
                "# skipped service {}: {} {} {} already used",
                comment_text(&s.id),
                s.cluster_ip,
                proto,
                s.port
            ));
            continue;
        }
        let svc_chain = unique_name(&mut used_chains, &format!("svc-{}", chain_suffix(&s.id)));
        let comment = quote(&comment_text(&s.id));
        let node_port = match s.node_port {
            Some(np) if !nodeport_keys.insert((s.protocol, np)) => {
                notes.push(format!(
                    "# skipped nodeport {proto} {np} of service {}: already used",
                    comment_text(&s.id)
                ));
                None
            }
            other => other,
        };
        let backends: BTreeSet<Backend> = s.backends.iter().copied().collect();
        if backends.is_empty() {
            no_ep_ips.push(format!(
                "{} . {proto} . {} comment {comment} : goto reject-chain",
                s.cluster_ip, s.port
            ));
            if let Some(np) = node_port {
                no_ep_nodeports.push(format!(
                    "{proto} . {np} comment {comment} : goto reject-chain"
                ));
            }
            continue;
        }
        service_ips.push(format!(
            "{} . {proto} . {} comment {comment} : goto {svc_chain}",
            s.cluster_ip, s.port
        ));
        if let Some(np) = node_port {
            service_nodeports.push(format!(
                "{proto} . {np} comment {comment} : goto {svc_chain}"
            ));
        }
        let mut ep_chains = Vec::new();
        let mut ep_text = String::new();
        for b in &backends {
            let ep = unique_name(
                &mut used_chains,
                &format!(
                    "sep-{}-{}-{}",
                    &chain_suffix(&s.id)[..8],
                    b.ip.to_string().replace('.', "-"),
                    b.port
                ),
            );
            let _ = writeln!(ep_text, "\tchain {ep} {{");
            let _ = writeln!(
                ep_text,
                "\t\tip saddr {} jump mark-for-masquerade comment \"hairpin\"",
                b.ip
            );
            if pod.contains(&b.ip) {
                let _ = writeln!(
                    ep_text,
                    "\t\tip saddr {pod} jump mark-for-masquerade comment \"same-node client\""
                );
            }
            let _ = writeln!(
                ep_text,
                "\t\tmeta l4proto {proto} dnat to {}:{} comment {comment}",
                b.ip, b.port
            );
            ep_text.push_str("\t}\n");
            ep_chains.push(ep);
        }
        // One rule per backend, each drawing again: backend i of n is taken with probability
        // 1/(n-i) among those left, so every backend gets 1/n. No anonymous map here: a rule's
        // anonymous set is emptied when the rule is replaced, and a packet whose evaluation
        // straddles that commit would miss it and leave without DNAT (see the module doc).
        let _ = writeln!(svc_chains, "\tchain {svc_chain} {{");
        let n = ep_chains.len();
        for (i, c) in ep_chains.iter().enumerate() {
            let left = n - i;
            if left > 1 {
                let _ = writeln!(
                    svc_chains,
                    "\t\tnumgen random mod {left} 0 goto {c} comment {comment}"
                );
            } else {
                let _ = writeln!(svc_chains, "\t\tgoto {c} comment {comment}");
            }
        }
        svc_chains.push_str("\t}\n");
        svc_chains.push_str(&ep_text);
    }

    let mut host_ports: Vec<HostPortRule> = r.host_ports.clone();
    host_ports.sort();
    host_ports.dedup();
    let mut hp_keys = BTreeSet::new();
    let mut hp_elems = Vec::new();
    let mut hp_chains = String::new();
    for h in &host_ports {
        let proto = h.protocol.as_str();
        if !hp_keys.insert((h.protocol, h.host_port)) {
            notes.push(format!(
                "# skipped hostport {proto} {} to {}:{}: already used",
                h.host_port, h.pod_ip, h.container_port
            ));
            continue;
        }
        let chain = format!("hostport-{proto}-{}", h.host_port);
        hp_elems.push(format!("{proto} . {} : goto {chain}", h.host_port));
        let _ = writeln!(hp_chains, "\tchain {chain} {{");
        let _ = writeln!(
            hp_chains,
            "\t\tip saddr {pod} jump mark-for-masquerade comment \"same-node client\""
        );
        let _ = writeln!(
            hp_chains,
            "\t\tmeta l4proto {proto} dnat to {}:{}",
            h.pod_ip, h.container_port
        );
        hp_chains.push_str("\t}\n");
    }

    let mut protected: Vec<(Ipv4Addr, u16)> = r.protected.clone();
    protected.sort();
    protected.dedup();
    let protected: Vec<String> = protected
        .iter()
        .map(|(a, p)| format!("{a} . {p}"))
        .collect();

    let policy = netpol::render(&r.policies);

    let mut head = String::new();
    let _ = writeln!(
        head,
        "# shoal node rules for table ip {table}: pods {pod}, cluster {cluster}, services {}",
        r.service_cidr.trunc()
    );
    for n in &notes {
        let _ = writeln!(head, "{n}");
    }
    let _ = writeln!(head, "table ip {table} {{");
    for (kind, name, ty) in COLLECTIONS {
        set_or_map(&mut head, &format!("{kind} {name}"), ty, &[]);
    }
    for set in &policy.sets {
        set_or_map(&mut head, &format!("set {}", set.name), &set.decl, &[]);
    }
    head.push_str("}\n");
    let _ = writeln!(head, "flush table ip {table}");
    for (kind, name, _) in COLLECTIONS {
        let _ = writeln!(head, "flush {kind} ip {table} {name}");
    }
    for set in &policy.sets {
        let _ = writeln!(head, "flush set ip {table} {}", set.name);
    }

    let mut out = String::new();
    let _ = writeln!(out, "table ip {table} {{");
    let elements = [
        &protected,
        &service_ips,
        &service_nodeports,
        &hp_elems,
        &no_ep_ips,
        &no_ep_nodeports,
    ];
    for ((kind, name, ty), elems) in COLLECTIONS.iter().zip(elements) {
        set_or_map(&mut out, &format!("{kind} {name}"), ty, elems);
    }
    for set in &policy.sets {
        let elems: &[String] = if set.dynamic { &[] } else { &set.elements };
        set_or_map(&mut out, &format!("set {}", set.name), &set.decl, elems);
    }

    let local = "fib daddr type local ip daddr != 127.0.0.0/8";
    let egress_isolated = netpol::EGRESS_ISOLATED;
    let _ = write!(
        out,
        "\
\tchain filter-prerouting {{
\t\ttype filter hook prerouting priority -110; policy accept;
\t\tjump endpoints-check
\t}}
\tchain filter-output {{
\t\ttype filter hook output priority -110; policy accept;
\t\toifname {bridge} icmp type redirect drop
\t\tjump endpoints-check
\t}}
\tchain endpoints-check {{
\t\tip daddr . meta l4proto . th dport vmap @no-endpoint-services
\t\t{local} meta l4proto . th dport vmap @no-endpoint-nodeports
\t}}
\tchain reject-chain {{
\t\tmeta l4proto tcp reject with tcp reset
\t\treject with icmp type port-unreachable
\t}}
\tchain filter-input {{
\t\ttype filter hook input priority filter; policy accept;
\t\tct state established,related accept
\t\tiifname {bridge} ip saddr @{egress_isolated} jump netpol-egress
\t\tiifname {bridge} ip daddr {gw} meta l4proto tcp th dport 53 accept
\t\tiifname {bridge} ip daddr {gw} meta l4proto udp th dport 53 accept
\t\tjump isolation
\t}}
\tchain filter-forward {{
\t\ttype filter hook forward priority filter; policy accept;
\t\tct state established,related accept
\t\tjump isolation
\t\tjump netpol
\t}}
\tchain isolation {{
\t\tiifname \"lo\" return
\t\tiifname {bridge} ip daddr . tcp dport @protected drop
\t\tip saddr {cluster} ip daddr . tcp dport @protected drop
\t}}
\tchain nat-prerouting {{
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tjump services
\t}}
\tchain nat-output {{
\t\ttype nat hook output priority -100; policy accept;
\t\tjump services
\t}}
\tchain nat-postrouting {{
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tjump masquerading
\t\tct status dnat ip daddr {cluster} ip saddr != {cluster} snat to {gw}
\t\tjump egress
\t}}
\tchain egress {{
\t\tip saddr != {cluster} return
\t\tip daddr {cluster} return
\t\tip daddr {service} return
\t\tmasquerade comment \"pods to the world\"
\t}}
\tchain mark-for-masquerade {{
\t\tmeta mark set meta mark | {MASQUERADE_MARK:#x}
\t}}
\tchain masquerading {{
\t\tmeta mark & {MASQUERADE_MARK:#x} == 0 return
\t\tmeta mark set meta mark ^ {MASQUERADE_MARK:#x}
\t\tsnat to {gw}
\t}}
\tchain services {{
\t\tip daddr . meta l4proto . th dport vmap @service-ips
\t\t{local} meta l4proto . th dport vmap @service-nodeports
\t\t{local} meta l4proto . th dport vmap @host-ports
\t}}
"
    );
    out.push_str(&policy.chains(&bridge));
    out.push_str(&svc_chains);
    out.push_str(&hp_chains);
    out.push_str("}\n");
    Script {
        head,
        body: out,
        dynamic: policy.dynamic(),
    }
}

/// Applies [`render`]`(r)` with one `nft -f -` run and deletes chains it no longer uses, in the
/// same transaction: table `ip <table>` is updated atomically, its base chains stay registered.
///
/// Lists the table's chains first (one more `nft` run). If the update is refused, the table is
/// replaced whole (deleted and defined again, still one transaction).
pub fn apply(r: &NodeRules) -> Result<(), NftError> {
    check_table(&r.table)?;
    let s = build(r);
    // Without the listing the rules are still right; unused chains stay (empty) until later.
    let existing = chains(&r.table).unwrap_or_else(|e| {
        tracing::warn!(table = %r.table, "listing the table's chains failed: {e}");
        BTreeSet::new()
    });
    let defined = s.chains();
    let stale: Vec<&String> = existing
        .iter()
        .filter(|c| !defined.contains(c.as_str()))
        .collect();
    let existing_sets = sets(&r.table).unwrap_or_else(|e| {
        tracing::warn!(table = %r.table, "listing the table's sets failed: {e}");
        BTreeSet::new()
    });
    let defined_sets = s.policy_sets();
    let mut update = s.head.clone();
    for c in &stale {
        let _ = writeln!(update, "delete chain ip {} {}", r.table, quote_chain(c));
    }
    for set in existing_sets
        .iter()
        .filter(|n| n.starts_with("np-") && !defined_sets.contains(n.as_str()))
    {
        let _ = writeln!(update, "delete set ip {} {}", r.table, quote_chain(set));
    }
    update.push_str(&s.body);
    let fill = netpol::element_updates(&r.table, &BTreeMap::new(), &s.dynamic);
    update.push_str(&fill);
    match run_nft(&r.table, &update) {
        Ok(()) => Ok(()),
        Err(NftError::Failed { stderr, .. }) => {
            tracing::warn!(
                table = %r.table,
                "updating the nftables table in place failed ({stderr}); replacing it whole"
            );
            let table = &r.table;
            run_nft(
                table,
                &format!(
                    "table ip {table} {{}}\ndelete table ip {table}\n{}{fill}",
                    s.body
                ),
            )
        }
        Err(e) => Err(e),
    }
}

/// The names of the chains of table `ip <table>` (empty if it does not exist).
fn chains(table: &str) -> Result<BTreeSet<String>, NftError> {
    let json = nft(table, &["-j", "list", "chains", "ip"], None)?;
    Ok(chains_in_listing(&json, table))
}

/// The names of the sets of table `ip <table>` (terse: without their elements).
fn sets(table: &str) -> Result<BTreeSet<String>, NftError> {
    let json = nft(table, &["-t", "-j", "list", "sets", "ip"], None)?;
    Ok(listed(&json, "set", table))
}

/// Chain names of `table` in the output of `nft -j list chains ip`.
fn chains_in_listing(json: &[u8], table: &str) -> BTreeSet<String> {
    listed(json, "chain", table)
}

/// Names of the objects of type `what` (`chain`, `set`) of `table` in an `nft -j` listing.
fn listed(json: &[u8], what: &str, table: &str) -> BTreeSet<String> {
    let v: serde_json::Value = serde_json::from_slice(json).unwrap_or_default();
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o.get(what))
        .filter(|c| c["family"] == "ip" && c["table"] == table)
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect()
}

/// A chain name as nft accepts it on the command line: our own names are plain identifiers;
/// anything else (made by hand) is quoted.
fn quote_chain(name: &str) -> String {
    if name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
    {
        name.to_string()
    } else {
        quote(name)
    }
}

/// Removes table `ip <table>`; an absent table is not an error.
pub fn remove(table: &str) -> Result<(), NftError> {
    check_table(table)?;
    run_nft(
        table,
        &format!("table ip {table} {{}}\ndelete table ip {table}\n"),
    )
}

fn check_table(table: &str) -> Result<(), NftError> {
    if table.is_empty()
        || table.len() > 64
        || !table
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        || !table.starts_with(|c: char| c.is_ascii_alphabetic())
    {
        return Err(NftError::InvalidTable(table.to_string()));
    }
    Ok(())
}

fn run_nft(table: &str, script: &str) -> Result<(), NftError> {
    nft(table, &["-f", "-"], Some(script)).map(drop)
}

/// Runs `nft ARGS` (with `stdin` written to it, if given) and returns its output; a failure
/// carries nft's exit status and message.
fn nft(table: &str, args: &[&str], stdin: Option<&str>) -> Result<Vec<u8>, NftError> {
    let spawn_err = |source| NftError::Spawn {
        table: table.to_string(),
        source,
    };
    let mut child = Command::new("nft")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    let written = match (stdin, child.stdin.take()) {
        (None, _) => Ok(()),
        (Some(text), Some(mut pipe)) => pipe.write_all(text.as_bytes()),
        (Some(_), None) => Err(std::io::Error::other("nft stdin not captured")),
    };
    let output = child.wait_with_output().map_err(spawn_err)?;
    if !output.status.success() {
        return Err(NftError::Failed {
            table: table.to_string(),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    written.map_err(spawn_err)?;
    Ok(output.stdout)
}

fn set_or_map(out: &mut String, head: &str, ty: &str, elems: &[String]) {
    let _ = writeln!(out, "\t{head} {{");
    let _ = writeln!(out, "\t\ttype {ty}");
    if !elems.is_empty() {
        let _ = writeln!(out, "\t\telements = {{");
        for (i, e) in elems.iter().enumerate() {
            let sep = if i + 1 < elems.len() { "," } else { "" };
            let _ = writeln!(out, "\t\t\t{e}{sep}");
        }
        let _ = writeln!(out, "\t\t}}");
    }
    let _ = writeln!(out, "\t}}");
}

/// `svc-` style suffix: 8 hex chars of a stable hash of `id`, then `id` sanitized, ≤ 48 chars.
fn chain_suffix(id: &str) -> String {
    let mut s = format!("{:08x}-", fnv1a(id) as u32);
    let clean: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(39)
        .collect();
    s.push_str(&clean);
    s
}

/// `base`, or `base-2`, `base-3`… when taken; records the name in `used`.
pub(crate) fn unique_name(used: &mut BTreeSet<String>, base: &str) -> String {
    let mut name = base.to_string();
    let mut n = 1;
    while !used.insert(name.clone()) {
        n += 1;
        name = format!("{base}-{n}");
    }
    name
}

/// FNV-1a 64: stable across Rust versions (unlike `DefaultHasher`).
pub(crate) fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn sanitize_ident(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if t.starts_with(|c: char| c.is_ascii_alphabetic()) {
        t
    } else {
        format!("t{t}")
    }
}

/// Comment text: printable ASCII without quotes or backslashes, at most 100 chars.
fn comment_text(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .filter(|c| *c != '"' && *c != '\\')
        .take(100)
        .collect()
}

pub(crate) fn quote(s: &str) -> String {
    format!("\"{}\"", comment_text(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> NodeRules {
        NodeRules {
            table: "shoal".into(),
            bridge: "shoal0".into(),
            pod_cidr: "10.244.1.0/24".parse().unwrap(),
            cluster_cidr: "10.244.0.0/16".parse().unwrap(),
            service_cidr: "10.96.0.0/16".parse().unwrap(),
            gateway: "10.244.1.1".parse().unwrap(),
            services: vec![
                ServiceRule {
                    id: "default/web/80".into(),
                    cluster_ip: "10.96.0.10".parse().unwrap(),
                    port: 80,
                    protocol: Proto::Tcp,
                    node_port: Some(30080),
                    backends: vec![
                        Backend {
                            ip: "10.244.2.7".parse().unwrap(),
                            port: 8080,
                        },
                        Backend {
                            ip: "10.244.1.5".parse().unwrap(),
                            port: 8080,
                        },
                    ],
                },
                ServiceRule {
                    id: "kube\"x/empty/53".into(),
                    cluster_ip: "10.96.0.11".parse().unwrap(),
                    port: 53,
                    protocol: Proto::Udp,
                    node_port: Some(30053),
                    backends: vec![],
                },
            ],
            host_ports: vec![HostPortRule {
                host_port: 8443,
                protocol: Proto::Tcp,
                pod_ip: "10.244.1.9".parse().unwrap(),
                container_port: 443,
            }],
            protected: vec![("172.30.0.1".parse().unwrap(), 7443)],
            policies: vec![],
        }
    }

    fn has(out: &str, line: &str) {
        assert!(
            out.lines().any(|l| l.trim() == line),
            "missing line {line:?} in:\n{out}"
        );
    }

    #[test]
    fn renders_an_in_place_update() {
        let s = build(&rules());
        // The prelude declares the sets and maps (no elements), then flushes everything.
        let head: Vec<&str> = s.head.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(head[0], "table ip shoal {");
        assert!(!s.head.contains("elements"), "{}", s.head);
        let flushes: Vec<&str> = head
            .iter()
            .copied()
            .filter(|l| l.starts_with("flush"))
            .collect();
        assert_eq!(
            flushes,
            [
                "flush table ip shoal",
                "flush set ip shoal protected",
                "flush map ip shoal service-ips",
                "flush map ip shoal service-nodeports",
                "flush map ip shoal host-ports",
                "flush map ip shoal no-endpoint-services",
                "flush map ip shoal no-endpoint-nodeports",
                "flush set ip shoal ingress-isolated",
                "flush set ip shoal egress-isolated",
            ]
        );
        assert_eq!(head.last(), Some(&"flush set ip shoal egress-isolated"));
        // The table is never deleted (its base chains stay registered).
        assert!(!render(&rules()).contains("delete"));
        assert!(s.body.starts_with("table ip shoal {\n"), "{}", s.body);
        assert_eq!(s.body.matches("table ip shoal {\n").count(), 1);
        // The chains found for `apply`: 17 fixed ones (3 of them for network policy), web's
        // service chain and its two endpoint chains, the host port's; none for the service
        // without endpoints; every jump and goto target among them.
        let chains = s.chains();
        assert_eq!(chains.len(), 17 + 3 + 1, "{chains:?}");
        let svc = format!("svc-{}", chain_suffix("default/web/80"));
        assert!(chains.contains("nat-prerouting") && chains.contains("hostport-tcp-8443"));
        assert!(chains.contains(svc.as_str()), "{chains:?}");
        assert!(!chains.iter().any(|c| c.contains("empty")), "{chains:?}");
        for word in ["goto ", "jump "] {
            for target in s.body.split(word).skip(1) {
                let target = target.split([' ', ',', '\n']).next().unwrap_or_default();
                assert!(chains.contains(target), "{word}{target} undefined");
            }
        }
        assert_eq!(format!("{}{}", s.head, s.body), render(&rules()));
    }

    #[test]
    fn finds_the_chains_of_one_table_in_a_listing() {
        let json = br#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
            {"chain": {"family": "ip", "table": "shoal", "name": "services", "handle": 1}},
            {"chain": {"family": "ip", "table": "other", "name": "x", "handle": 2}},
            {"chain": {"family": "ip", "table": "shoal", "name": "sep-old", "handle": 3}}]}"#;
        let got: Vec<String> = chains_in_listing(json, "shoal").into_iter().collect();
        assert_eq!(got, ["sep-old", "services"]);
        assert!(chains_in_listing(b"{\"nftables\": []}", "shoal").is_empty());
        assert!(chains_in_listing(b"garbage", "shoal").is_empty());
        assert_eq!(quote_chain("sep-1"), "sep-1");
        assert_eq!(quote_chain("odd name"), "\"odd name\"");
    }

    #[test]
    fn renders_service_dispatch_and_endpoints() {
        let out = render(&rules());
        let svc = format!("svc-{}", chain_suffix("default/web/80"));
        assert!(svc.ends_with("-default-web-80"), "{svc}");
        has(
            &out,
            &format!("10.96.0.10 . tcp . 80 comment \"default/web/80\" : goto {svc}"),
        );
        has(
            &out,
            &format!("tcp . 30080 comment \"default/web/80\" : goto {svc}"),
        );
        let h = &chain_suffix("default/web/80")[..8];
        has(
            &out,
            &format!(
                "numgen random mod 2 0 goto sep-{h}-10-244-1-5-8080 comment \"default/web/80\""
            ),
        );
        has(
            &out,
            &format!("goto sep-{h}-10-244-2-7-8080 comment \"default/web/80\""),
        );
        has(
            &out,
            "ip saddr 10.244.1.5 jump mark-for-masquerade comment \"hairpin\"",
        );
        has(
            &out,
            "meta l4proto tcp dnat to 10.244.2.7:8080 comment \"default/web/80\"",
        );
        // Local backend: same-node clients are SNATed; remote backend: only hairpin.
        let local_ep = out
            .split(&format!("chain sep-{h}-10-244-1-5-8080 {{"))
            .nth(1)
            .unwrap();
        let local_ep = local_ep.split('}').next().unwrap();
        assert!(local_ep.contains("ip saddr 10.244.1.0/24 jump mark-for-masquerade"));
        let remote_ep = out
            .split(&format!("chain sep-{h}-10-244-2-7-8080 {{"))
            .nth(1)
            .unwrap();
        let remote_ep = remote_ep.split('}').next().unwrap();
        assert!(!remote_ep.contains("10.244.1.0/24"));
    }

    #[test]
    fn renders_reject_for_services_without_endpoints() {
        let out = render(&rules());
        has(
            &out,
            "10.96.0.11 . udp . 53 comment \"kubex/empty/53\" : goto reject-chain",
        );
        has(
            &out,
            "udp . 30053 comment \"kubex/empty/53\" : goto reject-chain",
        );
        has(&out, "meta l4proto tcp reject with tcp reset");
        has(&out, "reject with icmp type port-unreachable");
        assert!(!out.contains("chain svc-") || !out.contains("empty-53 {"));
    }

    #[test]
    fn renders_hostports_nat_and_isolation() {
        let out = render(&rules());
        has(&out, "tcp . 8443 : goto hostport-tcp-8443");
        has(&out, "meta l4proto tcp dnat to 10.244.1.9:443");
        has(
            &out,
            "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @host-ports",
        );
        has(
            &out,
            "ct status dnat ip daddr 10.244.0.0/16 ip saddr != 10.244.0.0/16 snat to 10.244.1.1",
        );
        has(&out, "snat to 10.244.1.1");
        has(&out, "meta mark set meta mark | 0x4000");
        has(
            &out,
            "type nat hook prerouting priority dstnat; policy accept;",
        );
        has(&out, "type nat hook output priority -100; policy accept;");
        has(
            &out,
            "type nat hook postrouting priority srcnat; policy accept;",
        );
        has(&out, "172.30.0.1 . 7443");
        has(&out, "oifname \"shoal0\" icmp type redirect drop");
        for proto in ["tcp", "udp"] {
            has(
                &out,
                &format!(
                    "iifname \"shoal0\" ip daddr 10.244.1.1 meta l4proto {proto} th dport 53 accept"
                ),
            );
        }
        has(
            &out,
            "iifname \"shoal0\" ip daddr . tcp dport @protected drop",
        );
        has(
            &out,
            "ip saddr 10.244.0.0/16 ip daddr . tcp dport @protected drop",
        );
        has(&out, "iifname \"lo\" return");
    }

    #[test]
    fn renders_egress_masquerade_outside_cluster_and_services() {
        let s = build(&rules());
        let chain = |name: &str| -> Vec<String> {
            let body = s
                .body
                .split(&format!("\tchain {name} {{\n"))
                .nth(1)
                .unwrap_or_else(|| panic!("no chain {name}"));
            let body = body.split("\t}\n").next().unwrap();
            body.lines().map(|l| l.trim().to_string()).collect()
        };
        // Last in nat-postrouting: the service SNATs (to the gateway) come first.
        assert_eq!(
            chain("nat-postrouting").last().map(String::as_str),
            Some("jump egress")
        );
        // Only cluster sources; cluster and service destinations keep the pod source; the rest
        // is masqueraded. In this order, and without sets (see the module doc).
        assert_eq!(
            chain("egress"),
            [
                "ip saddr != 10.244.0.0/16 return",
                "ip daddr 10.244.0.0/16 return",
                "ip daddr 10.96.0.0/16 return",
                "masquerade comment \"pods to the world\"",
            ]
        );
        // CIDRs given with host bits are rendered as networks.
        let mut r = rules();
        r.service_cidr = "10.96.3.4/16".parse().unwrap();
        r.cluster_cidr = "10.244.9.9/16".parse().unwrap();
        assert_eq!(render(&r), render(&rules()));
    }

    #[test]
    fn render_is_deterministic_and_order_independent() {
        let a = rules();
        let mut b = rules();
        b.services.reverse();
        b.services[1].backends.reverse();
        assert_eq!(render(&a), render(&b));
    }

    #[test]
    fn duplicates_are_skipped_and_noted() {
        let mut r = rules();
        let mut dup = r.services[0].clone();
        dup.id = "other/web/80".into();
        r.services.push(dup);
        r.host_ports.push(HostPortRule {
            container_port: 444,
            ..r.host_ports[0]
        });
        let b0 = r.services[0].backends[0];
        r.services[0].backends.push(b0);
        let out = render(&r);
        assert!(out.contains("# skipped service other/web/80: 10.96.0.10 tcp 80 already used"));
        assert!(out.contains("# skipped hostport tcp 8443 to 10.244.1.9:444: already used"));
        assert_eq!(out.matches("10.96.0.10 . tcp . 80").count(), 1);
        assert!(out.contains("numgen random mod 2 0 goto"));
    }

    #[test]
    fn hostile_ids_are_sanitized() {
        let mut r = rules();
        r.services[0].id = "ns/we b;\"}\n drop/80".repeat(10);
        let out = render(&r);
        let svc_line = out.lines().find(|l| l.contains("\tchain svc-")).unwrap();
        let name = svc_line
            .trim()
            .trim_start_matches("chain ")
            .trim_end_matches(" {");
        assert!(name.len() <= 4 + 9 + 39, "{name}");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{name}"
        );
        for l in out.lines().filter(|l| l.contains("comment")) {
            let c = l.split("comment \"").nth(1).unwrap();
            assert!(c.split('"').next().unwrap().len() <= 100);
            assert_eq!(l.matches('"').count() % 2, 0, "{l}");
        }
    }

    #[test]
    fn empty_rules_render_empty_maps() {
        let mut r = rules();
        r.services.clear();
        r.host_ports.clear();
        r.protected.clear();
        let out = render(&r);
        assert!(!out.contains("elements"));
        assert!(!out.contains("chain svc-"));
    }

    #[test]
    fn invalid_table_names_are_refused() {
        for bad in ["", "1abc", "a b", "x;flush ruleset", &"a".repeat(65)] {
            assert!(matches!(
                remove(bad),
                Err(NftError::InvalidTable(t)) if t == bad
            ));
        }
    }
}
