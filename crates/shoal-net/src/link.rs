//! Node links over rtnetlink: the pod bridge with the node's gateway address,
//! one veth pair per pod into its network namespace, the fail-closed
//! `unreachable` route for the cluster CIDR and the overlay routes.
//!
//! Everything acts on the network namespace of the calling thread (the agent
//! runs inside its node's netns); pod namespaces are entered only from
//! short-lived threads of their own, never from the caller's thread.

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkUnspec, LinkVeth, RouteMessageBuilder};
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use crate::ipam::gateway;

/// Default name of the node's pod bridge.
pub const BRIDGE: &str = "shoal0";
/// Name of the pod's interface inside its network namespace.
pub const POD_IFACE: &str = "eth0";
/// Default MTU of the bridge, the veths and the overlay (underlay 1500 − 80).
pub const DEFAULT_MTU: u32 = 1420;
/// Prefix of every host-side pod veth name.
pub const VETH_PREFIX: &str = "vsh";
/// Metric of the fail-closed `unreachable` route for the cluster CIDR.
pub const UNREACHABLE_METRIC: u32 = 4000;
/// The IPv4 forwarding switch of the current network namespace.
pub const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
/// br_netfilter's switch (per network namespace): bridged IPv4 frames also go through the
/// `ip` family's hooks, so network policy sees traffic between pods of one node.
pub const BRIDGE_NF_CALL_IPTABLES: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";

const ENOENT: i32 = libc::ENOENT;
const ESRCH: i32 = libc::ESRCH;
const ENODEV: i32 = libc::ENODEV;
const EADDRNOTAVAIL: i32 = libc::EADDRNOTAVAIL;

/// The node's pod network: bridge name, pod CIDR (its `.1` is the gateway on
/// the bridge), the whole cluster CIDR and the MTU of every link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeNet {
    /// Bridge name ("shoal0").
    pub bridge: String,
    /// This node's pod CIDR.
    pub pod_cidr: Ipv4Net,
    /// The cluster CIDR (all nodes' pod CIDRs).
    pub cluster_cidr: Ipv4Net,
    /// MTU of the bridge and the veths.
    pub mtu: u32,
}

/// Errors of link, address and route setup.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The rtnetlink socket could not be opened.
    #[error("open rtnetlink socket: {0}")]
    Connect(#[source] std::io::Error),
    /// A netlink request about a link failed.
    #[error("{op} link {link}: {source}")]
    Link {
        /// What was being done ("create", "set", "delete", "get").
        op: &'static str,
        /// The link's name.
        link: String,
        /// The netlink error.
        source: Box<rtnetlink::Error>,
    },
    /// A link that must exist does not.
    #[error("link {link} not found{hint}")]
    NotFound {
        /// The link's name.
        link: String,
        /// Extra context (e.g. where it was looked for).
        hint: String,
    },
    /// A netlink request about an address failed.
    #[error("{op} address {addr} on {link}: {source}")]
    Address {
        /// What was being done.
        op: &'static str,
        /// The address with its prefix.
        addr: String,
        /// The link's name.
        link: String,
        /// The netlink error.
        source: Box<rtnetlink::Error>,
    },
    /// A netlink request about a route failed.
    #[error("{op} route {route}: {source}")]
    Route {
        /// What was being done.
        op: &'static str,
        /// The route, as `ip route` would print it.
        route: String,
        /// The netlink error.
        source: Box<rtnetlink::Error>,
    },
    /// The pod's network namespace file could not be opened or entered.
    #[error("netns {path}: {what}: {source}")]
    Netns {
        /// The namespace file.
        path: PathBuf,
        /// What failed.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The thread configuring a pod namespace died without an answer.
    #[error("netns {path}: configuration thread panicked")]
    NetnsThread {
        /// The namespace file.
        path: PathBuf,
    },
    /// A sysctl file could not be written.
    #[error("write {path}: {source}")]
    Sysctl {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Name of the host-side veth of sandbox `sandbox`: "vsh" + 11 hex digits of
/// a stable (FNV-1a) hash, 14 characters, within IFNAMSIZ.
pub fn host_veth_name(sandbox: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in sandbox.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{VETH_PREFIX}{:011x}", h >> 20)
}

/// Makes the node's bridge (gateway address of the pod CIDR, MTU, up),
/// enables IPv4 forwarding and adds the fail-closed `unreachable` route for
/// the cluster CIDR (metric 4000). Idempotent.
pub async fn ensure_node(n: &NodeNet) -> Result<(), LinkError> {
    write_sysctl(Path::new(IP_FORWARD), "1")?;
    ensure_bridge_netfilter();
    let nl = Netlink::connect()?;
    let h = &nl.handle;
    let bridge = match get_link(h, &n.bridge).await? {
        Some(l) if link_kind(&l) == Some(&InfoKind::Bridge) => l,
        Some(_) => {
            // Same name, wrong kind (left by something else): replace it.
            del_link(h, &n.bridge, None).await?;
            create_bridge(h, n).await?
        }
        None => create_bridge(h, n).await?,
    };
    let idx = bridge.header.index;
    h.link()
        .change(LinkUnspec::new_with_index(idx).mtu(n.mtu).up().build())
        .execute()
        .await
        .map_err(|source| link_err("set mtu/up", &n.bridge, source))?;
    set_only_address(
        h,
        idx,
        &n.bridge,
        gateway(n.pod_cidr),
        n.pod_cidr.prefix_len(),
    )
    .await?;
    let route = unreachable_route(n.cluster_cidr);
    put_route(
        h,
        route,
        format!("unreachable {} metric {UNREACHABLE_METRIC}", n.cluster_cidr),
    )
    .await?;
    Ok(())
}

/// Connects sandbox `sandbox` (network namespace file `netns`) to the bridge:
/// host veth `host_veth_name(sandbox)` on the bridge, pod side `eth0` with
/// `ip`/prefix, MTU, up, `lo` up and a default route via the gateway.
/// Idempotent, also after an agent restart with the veth already there.
pub async fn attach_pod(
    n: &NodeNet,
    netns: &Path,
    sandbox: &str,
    ip: Ipv4Addr,
) -> Result<(), LinkError> {
    let ns = File::open(netns).map_err(|source| LinkError::Netns {
        path: netns.to_path_buf(),
        what: "open",
        source,
    })?;
    let host = host_veth_name(sandbox);
    let nl = Netlink::connect()?;
    let h = &nl.handle;
    let Some(bridge) = get_link(h, &n.bridge).await? else {
        return Err(LinkError::NotFound {
            link: n.bridge.clone(),
            hint: " (ensure_node not run)".into(),
        });
    };

    // Is the pair already there and intact (host side and eth0 are peers)?
    let existing = get_link(h, &host).await?;
    let pod_side = in_netns(&ns, netns, |h| async move { pod_iface_peer(&h).await }).await??;
    let intact = match (&existing, pod_side) {
        (Some(l), Some((pod_idx, pod_peer))) => {
            link_kind(l) == Some(&InfoKind::Veth)
                && pod_peer == Some(l.header.index)
                && peer_index(l) == Some(pod_idx)
        }
        _ => false,
    };
    let host_idx = if intact {
        existing.map(|l| l.header.index).unwrap_or_default()
    } else {
        // Partial or foreign state: start over.
        if existing.is_some() {
            del_link(h, &host, None).await?;
        }
        if pod_side.is_some() {
            in_netns(&ns, netns, |h| async move {
                del_link(&h, POD_IFACE, None).await
            })
            .await??;
        }
        let peer = LinkUnspec::new_with_name(POD_IFACE)
            .mtu(n.mtu)
            .setns_by_fd(ns.as_fd().as_raw_fd())
            .build();
        let msg = LinkVeth::new(&host, POD_IFACE)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .mtu(n.mtu)
            .build();
        h.link()
            .add(msg)
            .execute()
            .await
            .map_err(|source| link_err("create veth", &host, source))?;
        match get_link(h, &host).await? {
            Some(l) => l.header.index,
            None => {
                return Err(LinkError::NotFound {
                    link: host,
                    hint: " right after creating it".into(),
                });
            }
        }
    };
    h.link()
        .change(
            LinkUnspec::new_with_index(host_idx)
                .controller(bridge.header.index)
                .mtu(n.mtu)
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(|source| link_err("set master/mtu/up", &host, source))?;
    // Hairpin: a pod reaching itself through a service VIP gets the DNAT-ed
    // frame back on its own port (with bridge netfilter on, as in a fresh netns).
    h.link()
        .set_port(LinkBridgePort::new(host_idx).hairpin(true).build())
        .execute()
        .await
        .map_err(|source| link_err("set hairpin", &host, source))?;

    let (mtu, prefix, gw) = (n.mtu, n.pod_cidr.prefix_len(), gateway(n.pod_cidr));
    in_netns(&ns, netns, move |h| async move {
        configure_pod_side(&h, ip, prefix, gw, mtu).await
    })
    .await??;
    Ok(())
}

/// Deletes the host veth of `sandbox` (its pod side goes with it); absent -> Ok.
pub async fn detach_pod(sandbox: &str) -> Result<(), LinkError> {
    let nl = Netlink::connect()?;
    del_link(&nl.handle, &host_veth_name(sandbox), None).await
}

/// Makes the routes on `wg_iface` exactly `remote` (scope link, preferred
/// source `src`, normally our gateway), removing stale ones. `wg_iface` must
/// be up and `src` a local address (call after `ensure_node`).
pub async fn sync_overlay_routes(
    wg_iface: &str,
    remote: &[Ipv4Net],
    src: Ipv4Addr,
) -> Result<(), LinkError> {
    let nl = Netlink::connect()?;
    let h = &nl.handle;
    let Some(link) = get_link(h, wg_iface).await? else {
        return Err(LinkError::NotFound {
            link: wg_iface.to_string(),
            hint: String::new(),
        });
    };
    let idx = link.header.index;
    let want: Vec<Ipv4Net> = remote.iter().map(|n| n.trunc()).collect();
    let routes = main_routes(h).await?;
    let mut have = Vec::new();
    for r in routes {
        if r.header.kind != RouteType::Unicast
            || r.header.protocol == RouteProtocol::Kernel
            || route_oif(&r) != Some(idx)
        {
            continue;
        }
        let Some(dst) = route_dst(&r) else { continue };
        if want.contains(&dst) && route_prefsrc(&r) == Some(src) && !have.contains(&dst) {
            have.push(dst);
            continue;
        }
        let desc = format!("{dst} dev {wg_iface}");
        del_route(h, r, &desc).await?;
    }
    for dst in want.iter().filter(|d| !have.contains(d)) {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst.network(), dst.prefix_len())
            .output_interface(idx)
            .pref_source(src)
            .scope(RouteScope::Link)
            .build();
        put_route(h, msg, format!("{dst} dev {wg_iface} src {src}")).await?;
    }
    Ok(())
}

/// Names of every pod veth ("vsh*") on this node, e.g. to remove those of
/// sandboxes that are gone after an agent restart (see `detach_pod`).
pub async fn pod_veths() -> Result<Vec<String>, LinkError> {
    let nl = Netlink::connect()?;
    Ok(list_pod_veths(&nl.handle)
        .await?
        .into_iter()
        .map(|(name, _)| name)
        .collect())
}

/// Removes the bridge, every "vsh*" veth and the `unreachable` route of the
/// cluster CIDR. Absent things -> Ok.
pub async fn teardown_node(n: &NodeNet) -> Result<(), LinkError> {
    let nl = Netlink::connect()?;
    let h = &nl.handle;
    for (name, index) in list_pod_veths(h).await? {
        del_link(h, &name, Some(index)).await?;
    }
    del_link(h, &n.bridge, None).await?;
    let desc = format!("unreachable {} metric {UNREACHABLE_METRIC}", n.cluster_cidr);
    del_route(h, unreachable_route(n.cluster_cidr), &desc).await
}

/// (name, index) of every veth whose name starts with "vsh", sorted by name.
async fn list_pod_veths(h: &Handle) -> Result<Vec<(String, u32)>, LinkError> {
    let links: Vec<LinkMessage> = h
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|source| link_err("list", "*", source))?;
    let mut out: Vec<(String, u32)> = links
        .iter()
        .filter(|l| link_kind(l) == Some(&InfoKind::Veth))
        .filter_map(|l| {
            link_name(l)
                .filter(|n| n.starts_with(VETH_PREFIX))
                .map(|n| (n.to_string(), l.header.index))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// An rtnetlink connection in the calling thread's network namespace, served
/// by a task on the current tokio runtime that stops when this is dropped.
struct Netlink {
    handle: Handle,
    task: tokio::task::JoinHandle<()>,
}

impl Netlink {
    fn connect() -> Result<Netlink, LinkError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(LinkError::Connect)?;
        let task = tokio::spawn(conn);
        Ok(Netlink { handle, task })
    }
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs `f` with an rtnetlink handle inside the network namespace `ns` (file
/// `path`), on a fresh thread that enters it with setns(CLONE_NEWNET) and runs
/// a current-thread runtime; the caller's thread never changes namespace.
async fn in_netns<F, Fut, T>(ns: &File, path: &Path, f: F) -> Result<T, LinkError>
where
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    let ns = ns.try_clone().map_err(|source| LinkError::Netns {
        path: path.to_path_buf(),
        what: "dup fd",
        source,
    })?;
    let owned_path = path.to_path_buf();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("shoal-netns".into())
        .spawn(move || {
            let run = || -> Result<T, LinkError> {
                let err = |what, source| LinkError::Netns {
                    path: owned_path.clone(),
                    what,
                    source,
                };
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| err("setns", std::io::Error::from(e)))?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| err("runtime", e))?;
                rt.block_on(async move {
                    let nl = Netlink::connect()?;
                    Ok(f(nl.handle.clone()).await)
                })
            };
            let _ = tx.send(run());
        })
        .map_err(|source| LinkError::Netns {
            path: path.to_path_buf(),
            what: "spawn thread",
            source,
        })?;
    rx.await.map_err(|_| LinkError::NetnsThread {
        path: path.to_path_buf(),
    })?
}

/// Inside the pod netns: (index of eth0, index of its veth peer) if eth0 exists.
async fn pod_iface_peer(h: &Handle) -> Result<Option<(u32, Option<u32>)>, LinkError> {
    Ok(get_link(h, POD_IFACE).await?.map(|l| {
        let peer = if link_kind(&l) == Some(&InfoKind::Veth) {
            peer_index(&l)
        } else {
            None
        };
        (l.header.index, peer)
    }))
}

/// Inside the pod netns: eth0 with MTU, up, exactly `ip/prefix`; lo up;
/// default route via `gw`.
async fn configure_pod_side(
    h: &Handle,
    ip: Ipv4Addr,
    prefix: u8,
    gw: Ipv4Addr,
    mtu: u32,
) -> Result<(), LinkError> {
    if let Some(lo) = get_link(h, "lo").await? {
        h.link()
            .change(LinkUnspec::new_with_index(lo.header.index).up().build())
            .execute()
            .await
            .map_err(|source| link_err("set up", "lo", source))?;
    }
    let Some(eth) = get_link(h, POD_IFACE).await? else {
        return Err(LinkError::NotFound {
            link: POD_IFACE.into(),
            hint: " in the pod netns".into(),
        });
    };
    let idx = eth.header.index;
    h.link()
        .change(LinkUnspec::new_with_index(idx).mtu(mtu).up().build())
        .execute()
        .await
        .map_err(|source| link_err("set mtu/up", POD_IFACE, source))?;
    set_only_address(h, idx, POD_IFACE, ip, prefix).await?;
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(gw)
        .output_interface(idx)
        .build();
    put_route(h, route, format!("default via {gw} dev {POD_IFACE}")).await?;
    Ok(())
}

/// Adds a route, replacing one to the same destination; an error names it.
async fn put_route(h: &Handle, msg: RouteMessage, route: String) -> Result<(), LinkError> {
    h.route()
        .add(msg)
        .replace()
        .execute()
        .await
        .map_err(|source| LinkError::Route {
            op: "add",
            route,
            source: Box::new(source),
        })
}

async fn create_bridge(h: &Handle, n: &NodeNet) -> Result<LinkMessage, LinkError> {
    h.link()
        .add(LinkBridge::new(&n.bridge).mtu(n.mtu).build())
        .execute()
        .await
        .map_err(|source| link_err("create bridge", &n.bridge, source))?;
    get_link(h, &n.bridge)
        .await?
        .ok_or_else(|| LinkError::NotFound {
            link: n.bridge.clone(),
            hint: " right after creating it".into(),
        })
}

/// Sets `ip/prefix` on link `idx` and removes its other IPv4 addresses.
async fn set_only_address(
    h: &Handle,
    idx: u32,
    name: &str,
    ip: Ipv4Addr,
    prefix: u8,
) -> Result<(), LinkError> {
    let addrs: Vec<AddressMessage> = h
        .address()
        .get()
        .set_link_index_filter(idx)
        .execute()
        .try_collect()
        .await
        .map_err(|source| LinkError::Address {
            op: "list",
            addr: "*".into(),
            link: name.into(),
            source: Box::new(source),
        })?;
    let mut present = false;
    for a in addrs {
        if a.header.family != AddressFamily::Inet || a.header.index != idx {
            continue;
        }
        let local = a.attributes.iter().find_map(|at| match at {
            AddressAttribute::Local(IpAddr::V4(v)) | AddressAttribute::Address(IpAddr::V4(v)) => {
                Some(*v)
            }
            _ => None,
        });
        if local == Some(ip) && a.header.prefix_len == prefix {
            present = true;
            continue;
        }
        let desc = format!(
            "{}/{}",
            local.map(|v| v.to_string()).unwrap_or_default(),
            a.header.prefix_len
        );
        match h.address().del(a).execute().await {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(EADDRNOTAVAIL) => {}
            Err(source) => {
                return Err(LinkError::Address {
                    op: "delete",
                    addr: desc,
                    link: name.into(),
                    source: Box::new(source),
                });
            }
        }
    }
    if !present {
        h.address()
            .add(idx, IpAddr::V4(ip), prefix)
            .replace()
            .execute()
            .await
            .map_err(|source| LinkError::Address {
                op: "add",
                addr: format!("{ip}/{prefix}"),
                link: name.into(),
                source: Box::new(source),
            })?;
    }
    Ok(())
}

fn unreachable_route(cidr: Ipv4Net) -> RouteMessage {
    let cidr = cidr.trunc();
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(cidr.network(), cidr.prefix_len())
        .kind(RouteType::Unreachable)
        .priority(UNREACHABLE_METRIC)
        .build()
}

async fn main_routes(h: &Handle) -> Result<Vec<RouteMessage>, LinkError> {
    let all: Vec<RouteMessage> = h
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(|source| LinkError::Route {
            op: "list",
            route: "*".into(),
            source: Box::new(source),
        })?;
    Ok(all
        .into_iter()
        .filter(|r| route_table(r) == u32::from(RouteHeader::RT_TABLE_MAIN))
        .collect())
}

async fn del_route(h: &Handle, r: RouteMessage, desc: &str) -> Result<(), LinkError> {
    match h.route().del(r).execute().await {
        Ok(()) => Ok(()),
        Err(e) if matches!(errno(&e), Some(ESRCH | ENOENT)) => Ok(()),
        Err(source) => Err(LinkError::Route {
            op: "delete",
            route: desc.to_string(),
            source: Box::new(source),
        }),
    }
}

/// The link named `name`, or None.
async fn get_link(h: &Handle, name: &str) -> Result<Option<LinkMessage>, LinkError> {
    match h.link().get().match_name(name).execute().try_next().await {
        Ok(l) => Ok(l),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
        Err(source) => Err(link_err("get", name, source)),
    }
}

/// Deletes link `name` (by `index` if known); absent -> Ok.
async fn del_link(h: &Handle, name: &str, index: Option<u32>) -> Result<(), LinkError> {
    let idx = match index {
        Some(i) => i,
        None => match get_link(h, name).await? {
            Some(l) => l.header.index,
            None => return Ok(()),
        },
    };
    match h.link().del(idx).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(()),
        Err(source) => Err(link_err("delete", name, source)),
    }
}

fn link_err(op: &'static str, link: &str, source: rtnetlink::Error) -> LinkError {
    LinkError::Link {
        op,
        link: link.to_string(),
        source: Box::new(source),
    }
}

/// The positive errno of a netlink error answer.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

fn link_name(l: &LinkMessage) -> Option<&str> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

fn link_kind(l: &LinkMessage) -> Option<&InfoKind> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k),
            _ => None,
        }),
        _ => None,
    })
}

/// A veth's peer ifindex (in the peer's namespace).
fn peer_index(l: &LinkMessage) -> Option<u32> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::Link(i) => Some(*i),
        _ => None,
    })
}

fn route_table(r: &RouteMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table))
}

fn route_oif(r: &RouteMessage) -> Option<u32> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })
}

fn route_dst(r: &RouteMessage) -> Option<Ipv4Net> {
    let addr = r
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Destination(RouteAddress::Inet(v)) => Some(*v),
            _ => None,
        })
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    Ipv4Net::new(addr, r.header.destination_prefix_length).ok()
}

fn route_prefsrc(r: &RouteMessage) -> Option<Ipv4Addr> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::PrefSource(RouteAddress::Inet(v)) => Some(*v),
        _ => None,
    })
}

/// Turns on br_netfilter for this namespace (loading the module with `modprobe` when its
/// switch is missing). Without it, network policy still holds between nodes and to the node,
/// but not between two pods of the same node: that is logged, not fatal.
fn ensure_bridge_netfilter() {
    let path = Path::new(BRIDGE_NF_CALL_IPTABLES);
    if !path.exists() {
        let loaded = std::process::Command::new("modprobe")
            .arg("br_netfilter")
            .stderr(std::process::Stdio::null())
            .status();
        tracing::info!(
            "{} missing; modprobe br_netfilter: {loaded:?}",
            path.display()
        );
    }
    if let Err(e) = write_sysctl(path, "1") {
        tracing::warn!(
            "{e}: network policies are not enforced between pods of this node (load br_netfilter)"
        );
    }
}

fn write_sysctl(path: &Path, value: &str) -> Result<(), LinkError> {
    std::fs::write(path, value).map_err(|source| LinkError::Sysctl {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_names_are_short_stable_and_distinct() {
        let a = host_veth_name("default_web-1_0123456789abcdef");
        assert_eq!(a.len(), 14);
        assert!(a.starts_with(VETH_PREFIX));
        assert!(a[3..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a, host_veth_name("default_web-1_0123456789abcdef"));
        assert_ne!(a, host_veth_name("default_web-2_0123456789abcdef"));
        // Stable across builds (names of veths from before a restart must match).
        assert_eq!(host_veth_name(""), "vshcbf29ce4842");
    }

    #[test]
    fn unreachable_route_shape() {
        let r = unreachable_route("10.244.3.7/16".parse().unwrap());
        assert_eq!(r.header.kind, RouteType::Unreachable);
        assert_eq!(route_dst(&r), Some("10.244.0.0/16".parse().unwrap()));
        assert!(
            r.attributes
                .contains(&RouteAttribute::Priority(UNREACHABLE_METRIC))
        );
    }
}
