//! The WireGuard overlay between nodes: [`Overlay`], one WireGuard interface
//! whose peers are the other nodes (allowed IPs = their pod CIDRs), its
//! interface name ([`iface_name`]) and the node's key pair ([`KeyPair`]).
//!
//! Three engines sit behind the same API, each in its own file; this file
//! chooses one and drives it:
//!
//! - **Kernel WireGuard** (`kernel.rs`), chosen when the kernel can create a
//!   `wireguard` link (tried with rtnetlink), whatever [`Engine`] says. It is
//!   configured over generic netlink; peer updates keep the sessions of peers
//!   that stay. The development and CI machines have no WireGuard module:
//!   this path is tested in VMs (`scripts/test-vms.sh`, docs/vm-clusters.md).
//! - Otherwise a userspace engine on a TUN interface, the one [`Engine`] names
//!   (the tested path):
//!   - **shoal** (`shoal/`, [`Engine::Shoal`]): Shoal's own data path, with
//!     batched UDP I/O, UDP GSO/GRO and TUN offloads, boringtun's `noise`
//!     module doing only the crypto and handshakes. It takes the peer list
//!     directly.
//!   - **boringtun** (`boringtun.rs`, [`Engine::Boringtun`]): boringtun's own
//!     device, configured over the UAPI text protocol.
//!
//!   For either, `wg show <iface>` works: we serve
//!   `/var/run/wireguard/<iface>.sock` ourselves, read-only (`uapi.rs`).
//!
//! Keys (`keys.rs`) are made and stored as `wg genkey` would. Peers are only
//! ever set as a whole list ([`Overlay::set_peers`]).
//!
//! Everything happens in the network namespace of the thread that calls
//! [`Overlay::up`]; the overlay keeps a handle on that namespace so later
//! calls (and `Drop`) act there from any thread. The API is blocking: call it
//! from `spawn_blocking` in async code.

mod boringtun;
mod kernel;
mod keys;
mod shoal;
mod uapi;

pub use keys::{KeyPair, parse_public_key};
pub use uapi::UAPI_DIR;

use std::collections::BTreeSet;
use std::fmt;
use std::fs::{self, File};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::TryStreamExt as _;
use ipnet::Ipv4Net;
use nix::sched::CloneFlags;

use self::boringtun::BoringtunDevice;
use uapi::{GetFn, WgSocket};

/// Which userspace WireGuard engine runs when the kernel has no WireGuard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// boringtun's own device (`boringtun::device`), configured over UAPI.
    #[default]
    Boringtun,
    /// Shoal's own batched data path, with boringtun's `noise` crypto.
    Shoal,
}

impl Engine {
    /// The engine's name, as `--wireguard-engine` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Boringtun => "boringtun",
            Engine::Shoal => "shoal",
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors of the WireGuard overlay; each names the file, socket or interface involved.
#[derive(Debug, thiserror::Error)]
pub enum WgError {
    /// The key file could not be read, created or written.
    #[error("key file {path}: {source}")]
    KeyFile {
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The key file does not hold a key as `wg genkey` writes it.
    #[error("key file {path}: expected one base64 private key of 32 bytes, as `wg genkey` writes")]
    KeyFormat {
        /// The key file.
        path: PathBuf,
    },
    /// A public key string is neither base64 nor hex of 32 bytes.
    #[error("public key {key:?}: expected 32 bytes as base64 (44 characters) or hex (64)")]
    PublicKey {
        /// The string given.
        key: String,
    },
    /// The interface name is not a valid Linux interface name.
    #[error(
        "interface name {name:?}: expected 1 to 15 characters without '/', ':', whitespace or NUL"
    )]
    IfaceName {
        /// The name given.
        name: String,
    },
    /// The same public key appears twice in a peer list.
    #[error("interface {iface}: peer public key {key} appears twice in the peer list")]
    DuplicatePeer {
        /// The interface.
        iface: String,
        /// The duplicated key (base64).
        key: String,
    },
    /// A netlink request failed.
    #[error("interface {iface}: netlink {op}: {detail}")]
    Netlink {
        /// The interface.
        iface: String,
        /// What was being done.
        op: &'static str,
        /// The error reported.
        detail: String,
    },
    /// Entering the overlay's network namespace failed.
    #[error("interface {iface}: network namespace: {source}")]
    Netns {
        /// The interface.
        iface: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A userspace engine's device could not be created or configured.
    #[error("interface {iface}: {engine} engine: {detail}")]
    Device {
        /// The interface.
        iface: String,
        /// The engine.
        engine: Engine,
        /// The error reported.
        detail: String,
    },
    /// A worker thread that entered the overlay's network namespace panicked.
    #[error("interface {iface}: worker thread in its network namespace panicked")]
    Worker {
        /// The interface.
        iface: String,
    },
    /// Talking to the UAPI socket failed (including a timeout).
    #[error("uapi socket {path}: {source}")]
    Uapi {
        /// The socket path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The device rejected a UAPI request.
    #[error("uapi socket {path}: {op} answered errno={errno}")]
    UapiErrno {
        /// The socket path.
        path: PathBuf,
        /// `get` or `set`.
        op: &'static str,
        /// The errno it answered.
        errno: i32,
    },
    /// The device's UAPI answer could not be parsed.
    #[error("uapi socket {path}: unexpected answer {line:?}")]
    UapiParse {
        /// The socket path.
        path: PathBuf,
        /// The offending line.
        line: String,
    },
}

/// The WireGuard interface name for a node: unique per node name, at most 15 characters.
///
/// Short names of lower-case letters, digits and `-` stay readable (`node1` ->
/// `wg-node1`); anything else becomes `wgh` + 12 hex digits of a stable hash
/// (FNV-1a), so the two forms never collide.
pub fn iface_name(node: &str) -> String {
    let plain = !node.is_empty()
        && node.len() <= 12
        && node
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if plain {
        format!("wg-{node}")
    } else {
        format!("wgh{:012x}", fnv1a64(node.as_bytes()) & 0xffff_ffff_ffff)
    }
}

fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn check_iface(name: &str) -> Result<(), WgError> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| !c.is_whitespace() && c != '/' && c != ':' && c != '\0');
    if ok {
        Ok(())
    } else {
        Err(WgError::IfaceName {
            name: name.to_string(),
        })
    }
}

/// One peer of the overlay: another node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Peer {
    /// The peer's public key.
    pub public_key: [u8; 32],
    /// The peer's underlay address and WireGuard port.
    pub endpoint: SocketAddr,
    /// Destinations routed to this peer (its pod CIDR).
    pub allowed_ips: Vec<Ipv4Net>,
    /// Persistent keepalive interval in seconds (`None` or 0: off).
    pub keepalive: Option<u16>,
}

/// A peer as the running interface reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerState {
    /// The peer's public key.
    pub public_key: [u8; 32],
    /// The endpoint in use, if known.
    pub endpoint: Option<SocketAddr>,
    /// The peer's allowed IPv4 networks.
    pub allowed_ips: Vec<Ipv4Net>,
    /// Time since the last completed handshake, if there was one.
    pub last_handshake: Option<Duration>,
    /// Bytes received from this peer.
    pub rx_bytes: u64,
    /// Bytes sent to this peer.
    pub tx_bytes: u64,
}

/// Sorts and de-duplicates a peer list into the form we compare and send;
/// fails on a public key given twice (boringtun would treat the second one as
/// an in-place update and hang).
fn normalize_peers(iface: &str, peers: &[Peer]) -> Result<Vec<Peer>, WgError> {
    let mut out: Vec<Peer> = peers
        .iter()
        .map(|p| {
            let ips: BTreeSet<Ipv4Net> = p.allowed_ips.iter().map(Ipv4Net::trunc).collect();
            Peer {
                public_key: p.public_key,
                endpoint: p.endpoint,
                allowed_ips: ips.into_iter().collect(),
                keepalive: p.keepalive.filter(|k| *k > 0),
            }
        })
        .collect();
    out.sort();
    for pair in out.windows(2) {
        if pair[0].public_key == pair[1].public_key {
            return Err(WgError::DuplicatePeer {
                iface: iface.to_string(),
                key: BASE64.encode(pair[0].public_key),
            });
        }
    }
    Ok(out)
}

/// A device as an engine reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct DeviceState {
    /// UDP listen port.
    listen_port: u16,
    /// Peers, in the engine's order.
    peers: Vec<PeerState>,
}

/// The engine behind an [`Overlay`].
enum Backend {
    /// Kernel WireGuard, configured over generic netlink (`kernel.rs`).
    Kernel,
    /// boringtun's device on TUN; `wg` served by `wg_socket`.
    Boringtun {
        device: BoringtunDevice,
        /// `None` until served.
        wg_socket: Option<WgSocket>,
    },
    /// The shoal engine on TUN; `wg` served by `wg_socket`.
    Shoal {
        device: Arc<shoal::Device>,
        /// `None` until served.
        wg_socket: Option<WgSocket>,
    },
}

/// One WireGuard interface in the network namespace where it was brought up.
/// Dropping it stops the device and removes the interface and its UAPI socket.
pub struct Overlay {
    iface: String,
    listen_port: u16,
    netns: File,
    sock: PathBuf,
    backend: Backend,
    /// The normalized peer list last applied successfully (for "skip if unchanged").
    applied: Mutex<Option<Vec<Peer>>>,
}

impl fmt::Debug for Overlay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Overlay")
            .field("iface", &self.iface)
            .field("listen_port", &self.listen_port)
            .field("kernel", &self.is_kernel())
            .finish_non_exhaustive()
    }
}

impl Overlay {
    /// Brings up WireGuard interface `iface` in the calling thread's network
    /// namespace with private key `key`, UDP `listen_port` (0: any free port)
    /// and link `mtu`, set up. Kernel WireGuard if the kernel can create a
    /// `wireguard` link, else boringtun on TUN with its UAPI socket at
    /// `/var/run/wireguard/<iface>.sock`. A stale link or socket of that name is
    /// removed first. Starts without peers. Same as [`Overlay::up_with`] with
    /// [`Engine::Boringtun`].
    pub fn up(iface: &str, key: &KeyPair, listen_port: u16, mtu: u32) -> Result<Overlay, WgError> {
        Overlay::up_with(iface, key, listen_port, mtu, Engine::Boringtun)
    }

    /// Like [`Overlay::up`], with `engine` choosing the userspace engine
    /// used when the kernel has no WireGuard.
    pub fn up_with(
        iface: &str,
        key: &KeyPair,
        listen_port: u16,
        mtu: u32,
        engine: Engine,
    ) -> Result<Overlay, WgError> {
        check_iface(iface)?;
        let netns = File::open("/proc/thread-self/ns/net").map_err(|source| WgError::Netns {
            iface: iface.to_string(),
            source,
        })?;
        let sock = uapi::socket_path(iface);

        // Replace whatever is left from a previous run.
        in_netns(&netns, iface, || {
            netlink(iface, "remove stale link", |h| async move {
                if let Some(index) = link_index(&h, iface).await? {
                    h.link().del(index).execute().await?;
                }
                Ok(())
            })
        })?;
        match fs::remove_file(&sock) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(WgError::Uapi {
                    path: sock,
                    source: e,
                });
            }
            _ => {}
        }

        // Kernel WireGuard: detect by trying.
        let kernel = in_netns(&netns, iface, || {
            match netlink(iface, "add wireguard link", |h| async move {
                h.link()
                    .add(rtnetlink::LinkWireguard::new(iface).build())
                    .execute()
                    .await
            }) {
                Ok(()) => Ok(true),
                Err(e) => {
                    tracing::debug!(iface, error = %e, %engine, "no kernel wireguard, using the userspace engine");
                    Ok(false)
                }
            }
        })?;

        // Created on a worker thread inside the namespace: the TUN, the UDP
        // sockets and the device threads live there.
        let backend = if kernel {
            Backend::Kernel
        } else if engine == Engine::Shoal {
            let secret = key.secret_bytes();
            let device = in_netns(&netns, iface, || {
                shoal::Device::new(iface, secret, listen_port).map_err(|e| WgError::Device {
                    iface: iface.to_string(),
                    engine,
                    detail: e.to_string(),
                })
            })?;
            Backend::Shoal {
                device: Arc::new(device),
                wg_socket: None,
            }
        } else {
            let device = in_netns(&netns, iface, || BoringtunDevice::new(iface, &sock))?;
            Backend::Boringtun {
                device,
                wg_socket: None,
            }
        };
        let mut overlay = Overlay {
            iface: iface.to_string(),
            listen_port,
            netns,
            sock,
            backend,
            applied: Mutex::new(None),
        };
        // From here on, `overlay`'s Drop cleans up on error.
        overlay.serve_wg_socket(key)?;
        overlay.listen_port = overlay.configure(key, listen_port)?;
        in_netns(&overlay.netns, iface, || {
            netlink(iface, "set mtu and up", |h| async move {
                let index = link_index(&h, iface)
                    .await?
                    .ok_or(rtnetlink::Error::RequestFailed)?;
                h.link()
                    .set(
                        rtnetlink::LinkUnspec::new_with_index(index)
                            .mtu(mtu)
                            .up()
                            .build(),
                    )
                    .execute()
                    .await
            })
        })?;
        Ok(overlay)
    }

    /// The interface name.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// Whether this is kernel WireGuard (else a userspace engine).
    pub fn is_kernel(&self) -> bool {
        matches!(self.backend, Backend::Kernel)
    }

    /// The userspace engine running this interface; `None` for kernel WireGuard.
    pub fn engine(&self) -> Option<Engine> {
        match self.backend {
            Backend::Kernel => None,
            Backend::Boringtun { .. } => Some(Engine::Boringtun),
            Backend::Shoal { .. } => Some(Engine::Shoal),
        }
    }

    /// The UDP port WireGuard listens on (the one chosen if 0 was asked).
    pub fn listen_port(&self) -> u16 {
        self.listen_port
    }

    /// The UAPI socket path of the userspace device (`wg` reads it); unused by the kernel backend.
    pub fn uapi_socket(&self) -> &Path {
        &self.sock
    }

    /// Makes the peers exactly `peers`. Does nothing if the list (sorted,
    /// allowed IPs truncated to their networks) equals the last one applied.
    ///
    /// Userspace: the whole list is replaced; a peer is never modified in
    /// place (boringtun: existing peers are first removed, then the list is
    /// sent with `replace_peers=true`, each exchange bounded by a 5 s socket
    /// timeout; handshakes restart, so traffic pauses for one round trip.
    /// shoal: peers whose key and keepalive stay keep their sessions). Kernel:
    /// departed peers are removed, the others updated in place.
    pub fn set_peers(&self, peers: &[Peer]) -> Result<(), WgError> {
        let wanted = normalize_peers(&self.iface, peers)?;
        let mut applied = self.applied.lock().unwrap_or_else(PoisonError::into_inner);
        if applied.as_ref() == Some(&wanted) {
            return Ok(());
        }
        *applied = None;
        match &self.backend {
            Backend::Boringtun { device, .. } => device.set_peers(&wanted)?,
            Backend::Shoal { device, .. } => {
                device.set_peers(&wanted).map_err(|e| WgError::Device {
                    iface: self.iface.clone(),
                    engine: Engine::Shoal,
                    detail: e.to_string(),
                })?;
            }
            Backend::Kernel => {
                let iface = self.iface.as_str();
                in_netns(&self.netns, iface, || {
                    kernel::set_peers(iface, &wanted).map_err(|detail| WgError::Netlink {
                        iface: iface.to_string(),
                        op: "set wireguard peers",
                        detail,
                    })
                })?;
            }
        }
        *applied = Some(wanted);
        Ok(())
    }

    /// The peers as the interface reports them now.
    pub fn peers(&self) -> Result<Vec<PeerState>, WgError> {
        Ok(self.state()?.peers)
    }

    /// Serves `wg` on the interface's UAPI socket (userspace engines).
    fn serve_wg_socket(&mut self, key: &KeyPair) -> Result<(), WgError> {
        let (get, slot): (GetFn, _) = match &mut self.backend {
            Backend::Kernel => return Ok(()),
            Backend::Boringtun { device, wg_socket } => (device.forward_get(), wg_socket),
            Backend::Shoal { device, wg_socket } => {
                let device = Arc::clone(device);
                let get: GetFn = Box::new(move || Ok((device.uapi_get_lines(), 0)));
                (get, wg_socket)
            }
        };
        *slot = Some(WgSocket::serve(
            &self.iface,
            &self.sock,
            get,
            key.private_hex(),
        )?);
        Ok(())
    }

    /// Gives the device its key and listen port (0: any free port) unless it
    /// was created with them; returns the port it listens on.
    fn configure(&self, key: &KeyPair, listen_port: u16) -> Result<u16, WgError> {
        match &self.backend {
            Backend::Boringtun { device, .. } => device.configure(key, listen_port),
            // Key and port were given to the device when it was created.
            Backend::Shoal { device, .. } => Ok(device.listen_port()),
            Backend::Kernel => {
                let iface = self.iface.as_str();
                let secret = key.secret_bytes();
                in_netns(&self.netns, iface, || {
                    kernel::set_key(iface, secret, listen_port).map_err(|detail| WgError::Netlink {
                        iface: iface.to_string(),
                        op: "set wireguard key and port",
                        detail,
                    })
                })?;
                Ok(self.state()?.listen_port)
            }
        }
    }

    /// The device's state as its engine reports it.
    fn state(&self) -> Result<DeviceState, WgError> {
        match &self.backend {
            Backend::Boringtun { device, .. } => device.get(),
            Backend::Shoal { device, .. } => {
                uapi::parse_get(&device.uapi_get_lines()).map_err(|line| WgError::UapiParse {
                    path: self.sock.clone(),
                    line,
                })
            }
            Backend::Kernel => {
                let iface = self.iface.as_str();
                in_netns(&self.netns, iface, || {
                    kernel::get(iface).map_err(|detail| WgError::Netlink {
                        iface: iface.to_string(),
                        op: "get wireguard device",
                        detail,
                    })
                })
            }
        }
    }

    /// Deletes the link if it still exists (namespace of the overlay).
    fn delete_link(&self) -> Result<(), WgError> {
        let iface = self.iface.as_str();
        in_netns(&self.netns, iface, || {
            netlink(iface, "delete link", |h| async move {
                if let Some(index) = link_index(&h, iface).await? {
                    h.link().del(index).execute().await?;
                }
                Ok(())
            })
        })
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        // Stop serving `wg` first, then the device: boringtun's closes its
        // UAPI and waits for its threads (bounded), the shoal engine's last
        // reference (the `wg` socket's is gone) stops its threads; either
        // closes the TUN, which removes the link.
        match std::mem::replace(&mut self.backend, Backend::Kernel) {
            Backend::Kernel => {}
            Backend::Boringtun { device, wg_socket } => {
                uapi::stop_serving(&self.iface, &self.sock, wg_socket);
                drop(device);
            }
            Backend::Shoal { device, wg_socket } => {
                uapi::stop_serving(&self.iface, &self.sock, wg_socket);
                drop(device);
            }
        }
        if let Err(e) = self.delete_link() {
            tracing::warn!(iface = %self.iface, error = %e, "deleting wireguard link");
        }
    }
}

/// Runs `f` on a fresh thread that has entered the network namespace `netns`.
fn in_netns<T: Send>(
    netns: &File,
    iface: &str,
    f: impl FnOnce() -> Result<T, WgError> + Send,
) -> Result<T, WgError> {
    std::thread::scope(|s| {
        let worker = s.spawn(|| {
            nix::sched::setns(netns, CloneFlags::CLONE_NEWNET).map_err(|e| WgError::Netns {
                iface: iface.to_string(),
                source: io::Error::from(e),
            })?;
            f()
        });
        worker.join().unwrap_or_else(|_| {
            Err(WgError::Worker {
                iface: iface.to_string(),
            })
        })
    })
}

/// Runs one rtnetlink exchange on a private current-thread runtime (so it
/// works from any thread, never inside the caller's runtime).
fn netlink<T, F, Fut>(iface: &str, op: &'static str, f: F) -> Result<T, WgError>
where
    F: FnOnce(rtnetlink::Handle) -> Fut,
    Fut: Future<Output = Result<T, rtnetlink::Error>>,
{
    let err = |detail: String| WgError::Netlink {
        iface: iface.to_string(),
        op,
        detail,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| err(e.to_string()))?;
    rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| err(e.to_string()))?;
        let task = tokio::spawn(conn);
        let result = f(handle).await;
        task.abort();
        result.map_err(|e| err(e.to_string()))
    })
}

/// The index of link `name`, `None` if there is none.
async fn link_index(h: &rtnetlink::Handle, name: &str) -> Result<Option<u32>, rtnetlink::Error> {
    let mut links = h.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(found) => Ok(found.map(|m| m.header.index)),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iface_names_are_short_unique_and_readable() {
        assert_eq!(iface_name("node1"), "wg-node1");
        assert_eq!(iface_name("abcdefghijkl"), "wg-abcdefghijkl");
        let long = iface_name("abcdefghijklm");
        assert!(long.starts_with("wgh") && long.len() == 15, "{long}");
        assert_ne!(iface_name("Node1"), iface_name("node1"));
        assert_ne!(iface_name("node.a"), iface_name("node.b"));
        assert_eq!(iface_name("x.y.z"), iface_name("x.y.z"));
        for n in ["", "a", "Node_1", "a-very-long-node-name.example.org"] {
            let name = iface_name(n);
            assert!(name.len() <= 15, "{name}");
            check_iface(&name).expect("valid name");
        }
    }

    #[test]
    fn bad_iface_names_are_rejected() {
        for n in ["", "a/b", "a b", "sixteen-chars-xx", "a:b"] {
            assert!(
                matches!(check_iface(n), Err(WgError::IfaceName { .. })),
                "{n}"
            );
        }
    }

    fn peer(key: u8, port: u16, nets: &[&str]) -> Peer {
        Peer {
            public_key: [key; 32],
            endpoint: SocketAddr::from(([10, 0, 0, key], port)),
            allowed_ips: nets.iter().map(|n| n.parse().expect("net")).collect(),
            keepalive: None,
        }
    }

    #[test]
    fn peers_are_normalized_and_duplicates_rejected() {
        let a = peer(2, 51820, &["10.244.2.7/24", "10.244.2.0/24"]);
        let b = peer(1, 51820, &["10.244.1.0/24"]);
        let n = normalize_peers("wg-x", &[a.clone(), b.clone()]).expect("ok");
        assert_eq!(n[0].public_key, [1; 32]);
        assert_eq!(
            n[1].allowed_ips,
            vec!["10.244.2.0/24".parse::<Ipv4Net>().expect("net")]
        );
        // Same list in another order compares equal (so set_peers skips it).
        assert_eq!(n, normalize_peers("wg-x", &[b, a.clone()]).expect("ok"));
        let err = normalize_peers("wg-x", &[a.clone(), a]).expect_err("dup");
        assert!(err.to_string().contains("wg-x"), "{err}");
    }
}
