//! The WireGuard overlay between nodes: the node's key pair, the interface
//! name, and [`Overlay`], one WireGuard interface whose peers are the other
//! nodes (allowed IPs = their pod CIDRs).
//!
//! Two backends sit behind the same API:
//!
//! - **Kernel WireGuard**, chosen when the kernel can create a `wireguard`
//!   link (tried with rtnetlink). It is configured over generic netlink
//!   ([`crate::kwg`]); peer updates keep the sessions of peers that stay.
//!   The development and CI machines have no WireGuard module: this path is
//!   tested in VMs (`scripts/test-vms.sh`, docs/vm-clusters.md).
//! - **Embedded boringtun** (the tested path): a `boringtun::device` on a TUN
//!   interface, driven by its own OS threads. We configure it through the UAPI
//!   text protocol over a private socketpair (`uapi_fd`), not through the
//!   socket boringtun would create itself: that mode also installs a signalfd
//!   for SIGINT/SIGTERM which steals those signals from the whole process (the
//!   device stopped, the agent never saw its SIGTERM). For `wg show <iface>`
//!   we serve `/var/run/wireguard/<iface>.sock` ourselves, read-only: `get`
//!   is forwarded, `set` is refused with EPERM, because boringtun panics inside
//!   its device lock on an in-place peer update (what `wg set` does) and
//!   hangs. Peers are only ever replaced as a whole list (see
//!   [`Overlay::set_peers`]). All traffic goes through the device's listen
//!   socket (no per-peer connected sockets), whose receive/send buffers we
//!   raise to 4 MiB by finding the socket among our process's fds: boringtun
//!   has no API for it, and with the default buffer the receiver dropped a
//!   fifth of the datagrams under load (0.30 -> 0.43 Gbit/s measured).
//!
//! - **Shoal's own data path** ([`Engine::Shoal`], [`crate::fastwg`]): our
//!   TUN device and UDP socket with batched I/O (`recvmmsg`/`sendmmsg`), with
//!   boringtun's `noise` module doing only the crypto and handshakes. Chosen
//!   with [`Overlay::up_with`]; it takes the peer list directly (no UAPI text),
//!   and `wg show` is served from the same read-only socket.
//!
//! Everything happens in the network namespace of the thread that calls
//! [`Overlay::up`]; the overlay keeps a handle on that namespace so later
//! calls (and `Drop`) act there from any thread. The API is blocking: call it
//! from `spawn_blocking` in async code.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{self, File};
use std::future::Future;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::net::SocketAddr;
use std::os::fd::IntoRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use boringtun::device::{DeviceConfig, DeviceHandle};
use boringtun::x25519::{PublicKey, StaticSecret};
use futures::TryStreamExt as _;
use ipnet::Ipv4Net;
use nix::sched::CloneFlags;
use rand::RngCore as _;

/// Directory where userspace WireGuard implementations listen for `wg` (UAPI sockets).
pub const UAPI_DIR: &str = "/var/run/wireguard";

/// Which userspace WireGuard data path runs when the kernel has no WireGuard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// boringtun's own device (`boringtun::device`), configured over UAPI.
    #[default]
    Boringtun,
    /// Shoal's batched data path ([`crate::fastwg`]) with boringtun's `noise` crypto.
    Shoal,
}

/// How long one UAPI exchange with the userspace device may take before it is an error.
const UAPI_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `Drop` waits for the userspace device threads to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Event-loop threads of the userspace device (the machine class has 2 cores).
const DEVICE_THREADS: usize = 2;
/// Receive and send buffer of the userspace device's UDP sockets. With the
/// default 208 KiB the receiving node dropped about a fifth of the datagrams
/// under one iperf3 stream; 4 MiB dropped none (docs/benchmarks.md, Pod network throughput).
const UDP_BUFFER_BYTES: i32 = 4 << 20;

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
    /// The userspace (boringtun) device could not be created.
    #[error("interface {iface}: boringtun device: {detail}")]
    Device {
        /// The interface.
        iface: String,
        /// The error reported.
        detail: String,
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
    /// The `wg` tool failed (kernel backend only).
    #[error("interface {iface}: `wg {args}`: {detail}")]
    WgTool {
        /// The interface.
        iface: String,
        /// The arguments given to `wg`.
        args: String,
        /// Exit status and stderr, or the spawn error.
        detail: String,
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

/// A node's WireGuard key pair (Curve25519). `Debug` shows only the public key.
#[derive(Clone)]
pub struct KeyPair {
    secret: StaticSecret,
    public: PublicKey,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public_base64())
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A fresh random key pair (clamped like `wg genkey`).
    pub fn generate() -> KeyPair {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        // Clamp as `wg genkey` does, so the stored file equals what wg would write.
        bytes[0] &= 248;
        bytes[31] &= 127;
        bytes[31] |= 64;
        KeyPair::from_secret(bytes)
    }

    fn from_secret(bytes: [u8; 32]) -> KeyPair {
        let secret = StaticSecret::from(bytes);
        let public = PublicKey::from(&secret);
        KeyPair { secret, public }
    }

    /// Loads the private key from `path` (base64, as `wg genkey` writes), or
    /// creates a new one there (mode 0600, parent directories created).
    /// A key file readable by others is tightened to 0600.
    pub fn load_or_create(path: &Path) -> Result<KeyPair, WgError> {
        let key_err = |source| WgError::KeyFile {
            path: path.to_path_buf(),
            source,
        };
        match fs::read_to_string(path) {
            Ok(text) => return KeyPair::load_existing(path, &text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(key_err(e)),
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(key_err)?;
        }
        let pair = KeyPair::generate();
        let line = format!("{}\n", BASE64.encode(pair.secret.to_bytes()));
        // 0600, written in full before it appears (a crash never leaves an empty key).
        match shoal_files::write_new_atomic(path, line.as_bytes(), shoal_files::FILE_MODE) {
            Ok(()) => Ok(pair),
            // Someone created it between our read and our create: use theirs.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let text = fs::read_to_string(path).map_err(key_err)?;
                KeyPair::load_existing(path, &text)
            }
            Err(e) => Err(key_err(e)),
        }
    }

    fn load_existing(path: &Path, text: &str) -> Result<KeyPair, WgError> {
        let bytes = decode_key(text.trim()).ok_or_else(|| WgError::KeyFormat {
            path: path.to_path_buf(),
        })?;
        let meta = fs::metadata(path).map_err(|source| WgError::KeyFile {
            path: path.to_path_buf(),
            source,
        })?;
        if meta.permissions().mode() & 0o077 != 0 {
            fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(|source| {
                WgError::KeyFile {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
        }
        Ok(KeyPair::from_secret(bytes))
    }

    /// The public key as raw bytes.
    pub fn public_key(&self) -> [u8; 32] {
        self.public.to_bytes()
    }

    /// The public key in base64, exactly as `wg pubkey` / `wg show` print it.
    pub fn public_base64(&self) -> String {
        BASE64.encode(self.public.as_bytes())
    }

    fn private_hex(&self) -> String {
        hex::encode(self.secret.to_bytes())
    }

    #[cfg(test)]
    fn private_base64(&self) -> String {
        BASE64.encode(self.secret.to_bytes())
    }
}

fn decode_key(s: &str) -> Option<[u8; 32]> {
    let bytes = match s.len() {
        64 => hex::decode(s).ok()?,
        44 => BASE64.decode(s).ok()?,
        _ => return None,
    };
    bytes.try_into().ok()
}

/// Parses a WireGuard public key given as base64 (as `wg` prints) or hex.
pub fn parse_public_key(s: &str) -> Result<[u8; 32], WgError> {
    decode_key(s.trim()).ok_or_else(|| WgError::PublicKey { key: s.to_string() })
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

/// The UAPI `set` request that replaces the whole peer list (normalized peers).
fn render_uapi_replace(peers: &[Peer]) -> String {
    let mut s = String::from("set=1\nreplace_peers=true\n");
    for p in peers {
        s.push_str(&format!("public_key={}\n", hex::encode(p.public_key)));
        s.push_str(&format!("endpoint={}\n", p.endpoint));
        if let Some(k) = p.keepalive {
            s.push_str(&format!("persistent_keepalive_interval={k}\n"));
        }
        for ip in &p.allowed_ips {
            s.push_str(&format!("allowed_ip={ip}\n"));
        }
    }
    s.push('\n');
    s
}

/// The UAPI `set` request that removes the given peers one by one.
fn render_uapi_remove(keys: &[[u8; 32]]) -> String {
    let mut s = String::from("set=1\n");
    for k in keys {
        s.push_str(&format!("public_key={}\nremove=true\n", hex::encode(k)));
    }
    s.push('\n');
    s
}

/// What a UAPI `get` reports about the device.
#[derive(Debug, Default, PartialEq, Eq)]
struct UapiState {
    listen_port: u16,
    peers: Vec<PeerState>,
}

/// Parses the lines of a UAPI `get` answer (without the final `errno=`).
/// boringtun reports the handshake *age* in `last_handshake_time_*`.
fn parse_uapi_get(lines: &[String]) -> Result<UapiState, String> {
    let mut state = UapiState::default();
    let mut hs_sec: Option<u64> = None;
    for line in lines {
        let (key, val) = line.split_once('=').ok_or_else(|| line.clone())?;
        let bad = || line.clone();
        if key == "public_key" {
            let pk = decode_key(val).ok_or_else(bad)?;
            state.peers.push(PeerState {
                public_key: pk,
                endpoint: None,
                allowed_ips: Vec::new(),
                last_handshake: None,
                rx_bytes: 0,
                tx_bytes: 0,
            });
            hs_sec = None;
            continue;
        }
        let Some(peer) = state.peers.last_mut() else {
            if key == "listen_port" {
                state.listen_port = val.parse().map_err(|_| bad())?;
            }
            // own_public_key, fwmark, private_key: not needed.
            continue;
        };
        match key {
            "endpoint" => peer.endpoint = Some(val.parse().map_err(|_| bad())?),
            "allowed_ip" => {
                // IPv6 allowed IPs are not ours; keep only IPv4.
                if let Ok(net) = val.parse::<Ipv4Net>() {
                    peer.allowed_ips.push(net);
                }
            }
            "last_handshake_time_sec" => {
                let secs: u64 = val.parse().map_err(|_| bad())?;
                hs_sec = Some(secs);
                peer.last_handshake = Some(Duration::from_secs(secs));
            }
            "last_handshake_time_nsec" => {
                let nsec: u32 = val.parse().map_err(|_| bad())?;
                if let Some(secs) = hs_sec {
                    peer.last_handshake = Some(Duration::new(secs, nsec.min(999_999_999)));
                }
            }
            "rx_bytes" => peer.rx_bytes = val.parse().map_err(|_| bad())?,
            "tx_bytes" => peer.tx_bytes = val.parse().map_err(|_| bad())?,
            _ => {}
        }
    }
    Ok(state)
}

enum Backend {
    /// Kernel WireGuard, configured over generic netlink ([`crate::kwg`]).
    Kernel,
    /// boringtun on TUN, configured over `uapi`; `wg` served by `listener`.
    User {
        /// The device; `None` once stopped.
        device: Option<DeviceHandle>,
        /// Our end of the device's UAPI socketpair.
        uapi: Arc<UapiChannel>,
        /// The thread serving the `wg` socket; `None` once stopped.
        listener: Option<JoinHandle<()>>,
        /// Tells `listener` to stop.
        stop: Arc<AtomicBool>,
    },
    /// Shoal's own data path on TUN; `wg` served by `listener`.
    Shoal {
        /// The device; `None` once stopped.
        device: Option<Arc<crate::fastwg::Device>>,
        /// The thread serving the `wg` socket; `None` once stopped.
        listener: Option<JoinHandle<()>>,
        /// Tells `listener` to stop.
        stop: Arc<AtomicBool>,
    },
}

/// Answers a UAPI `get`: the answer lines before `errno=` and the errno.
type GetFn = Box<dyn Fn() -> Result<(Vec<String>, i32), WgError> + Send>;

/// Our end of the socketpair whose other end boringtun reads as its UAPI
/// (`DeviceConfig::uapi_fd`). One exchange at a time; closing it stops the
/// device.
struct UapiChannel {
    /// Named in errors: the `wg` socket path of this interface.
    path: PathBuf,
    chan: Mutex<Option<Channel>>,
}

struct Channel {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl UapiChannel {
    /// Sends one request and returns the answer lines before `errno=` and the errno.
    /// After an I/O error or timeout the channel is closed (the answer stream
    /// would be out of step), which also stops the device.
    fn exchange(&self, request: &str) -> Result<(Vec<String>, i32), WgError> {
        let mut guard = self.chan.lock().unwrap_or_else(PoisonError::into_inner);
        let chan = guard.as_mut().ok_or_else(|| WgError::Uapi {
            path: self.path.clone(),
            source: io::Error::new(
                io::ErrorKind::NotConnected,
                "channel to the boringtun device is closed",
            ),
        })?;
        let result = exchange_on(chan, request);
        if result.is_err() {
            *guard = None;
        }
        result.map_err(|e| match e {
            ExchangeError::Io(source) => WgError::Uapi {
                path: self.path.clone(),
                source,
            },
            ExchangeError::Parse(line) => WgError::UapiParse {
                path: self.path.clone(),
                line,
            },
        })
    }

    fn close(&self) {
        *self.chan.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// Adapts boringtun's `get` answer to what `wg` expects: the private key
/// (as kernel WireGuard and wireguard-go report it to root, so `wg show`
/// prints the public key) instead of boringtun's `own_public_key`, and the
/// last handshake as an epoch time instead of boringtun's age (else `wg`
/// shows "56 years ago", or nothing for an age under a second).
fn wg_view(lines: Vec<String>, private_hex: &str, now: SystemTime) -> Vec<String> {
    let mut out = Vec::with_capacity(lines.len() + 1);
    let mut age_sec: Option<u64> = None;
    for line in lines {
        let (key, val) = line.split_once('=').unwrap_or((line.as_str(), ""));
        match key {
            "own_public_key" => out.push(format!("private_key={private_hex}")),
            "last_handshake_time_sec" => age_sec = val.parse().ok(),
            "last_handshake_time_nsec" => {
                let nsec: u32 = val.parse().unwrap_or(0).min(999_999_999);
                if let Some(sec) = age_sec.take() {
                    let at = now
                        .checked_sub(Duration::new(sec, nsec))
                        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                        .unwrap_or_default();
                    out.push(format!("last_handshake_time_sec={}", at.as_secs()));
                    out.push(format!("last_handshake_time_nsec={}", at.subsec_nanos()));
                }
            }
            _ => out.push(line),
        }
    }
    out
}

enum ExchangeError {
    Io(io::Error),
    Parse(String),
}

fn exchange_on(chan: &mut Channel, request: &str) -> Result<(Vec<String>, i32), ExchangeError> {
    chan.writer
        .write_all(request.as_bytes())
        .map_err(ExchangeError::Io)?;
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = chan
            .reader
            .read_line(&mut line)
            .map_err(ExchangeError::Io)?;
        if n == 0 {
            return Err(ExchangeError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "device closed its uapi end",
            )));
        }
        let line = line.trim_end_matches('\n');
        if let Some(errno) = line.strip_prefix("errno=") {
            let errno = errno
                .parse()
                .map_err(|_| ExchangeError::Parse(line.to_string()))?;
            // The answer ends with a blank line after errno.
            let mut blank = String::new();
            chan.reader
                .read_line(&mut blank)
                .map_err(ExchangeError::Io)?;
            return Ok((lines, errno));
        }
        if !line.is_empty() {
            lines.push(line.to_string());
        }
    }
}

/// Serves the `wg` UAPI socket until `stop` is set (and a connection wakes it).
fn serve_wg_socket(
    listener: UnixListener,
    path: PathBuf,
    get: GetFn,
    stop: Arc<AtomicBool>,
    private_hex: String,
) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        match conn {
            Ok(conn) => {
                if let Err(e) = serve_wg_client(&get, conn, &private_hex) {
                    tracing::debug!(path = %path.display(), error = %e, "uapi client");
                }
            }
            Err(e) => tracing::debug!(path = %path.display(), error = %e, "uapi accept"),
        }
    }
}

/// One `wg` client: `get=1` is answered by the device (answer adapted by
/// [`wg_view`]), `set=1` refused (EPERM).
fn serve_wg_client(get: &GetFn, conn: UnixStream, private_hex: &str) -> io::Result<()> {
    conn.set_read_timeout(Some(UAPI_TIMEOUT))?;
    conn.set_write_timeout(Some(UAPI_TIMEOUT))?;
    let mut reader = BufReader::new(&conn);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    let mut out = BufWriter::new(&conn);
    match first.trim_end() {
        "get=1" => match get() {
            Ok((lines, errno)) => {
                for l in wg_view(lines, private_hex, SystemTime::now()) {
                    writeln!(out, "{l}")?;
                }
                write!(out, "errno={errno}\n\n")?;
            }
            Err(e) => {
                tracing::warn!(error = %e, "forwarding wg get");
                write!(out, "errno={}\n\n", libc::EIO)?;
            }
        },
        // Refused: boringtun hangs on in-place peer updates; the agent owns the peers.
        "set=1" => write!(out, "errno={}\n\n", libc::EPERM)?,
        _ => write!(out, "errno={}\n\n", libc::EINVAL)?,
    }
    out.flush()
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

    /// Like [`Overlay::up`], with `engine` choosing the userspace data path
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
        let sock = PathBuf::from(format!("{UAPI_DIR}/{iface}.sock"));
        let name = iface.to_string();

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
                    tracing::debug!(iface, error = %e, "no kernel wireguard, using boringtun");
                    Ok(false)
                }
            }
        })?;

        let mut overlay = if kernel {
            Overlay {
                iface: name,
                listen_port,
                netns,
                sock,
                backend: Backend::Kernel,
                applied: Mutex::new(None),
            }
        } else if engine == Engine::Shoal {
            let secret = key.secret.to_bytes();
            let device = in_netns(&netns, iface, || {
                crate::fastwg::Device::new(iface, secret, listen_port).map_err(|e| {
                    WgError::Device {
                        iface: iface.to_string(),
                        detail: e.to_string(),
                    }
                })
            })?;
            let device = Arc::new(device);
            let stop = Arc::new(AtomicBool::new(false));
            let mut overlay = Overlay {
                iface: name,
                listen_port: device.listen_port(),
                netns,
                sock: sock.clone(),
                backend: Backend::Shoal {
                    device: Some(Arc::clone(&device)),
                    listener: None,
                    stop: Arc::clone(&stop),
                },
                applied: Mutex::new(None),
            };
            let io_err = |source| WgError::Uapi {
                path: sock.clone(),
                source,
            };
            fs::create_dir_all(UAPI_DIR).map_err(io_err)?;
            let listener = UnixListener::bind(&sock).map_err(io_err)?;
            // It hands out the private key (like kernel WireGuard to root).
            fs::set_permissions(&sock, fs::Permissions::from_mode(0o600)).map_err(io_err)?;
            let private_hex = key.private_hex();
            let get: GetFn = Box::new(move || Ok((device.uapi_get_lines(), 0)));
            let path = sock.clone();
            let thread = std::thread::Builder::new()
                .name(format!("{iface}-uapi"))
                .spawn(move || serve_wg_socket(listener, path, get, stop, private_hex))
                .map_err(io_err)?;
            if let Backend::Shoal { listener, .. } = &mut overlay.backend {
                *listener = Some(thread);
            }
            overlay
        } else {
            // The device's UAPI is one end of a socketpair (see the module doc).
            let (ours, theirs) = UnixStream::pair().map_err(|source| WgError::Uapi {
                path: sock.clone(),
                source,
            })?;
            // boringtun takes ownership of this fd (it leaks if TUN creation fails).
            let theirs = theirs.into_raw_fd();
            // Created on a worker thread inside the namespace: the TUN, the UDP
            // sockets and the device threads live there.
            let device = in_netns(&netns, iface, || {
                let before = open_fds();
                let device = DeviceHandle::new(
                    iface,
                    DeviceConfig {
                        n_threads: DEVICE_THREADS,
                        // All traffic through the listen socket, whose buffers we
                        // can enlarge (per-peer connected sockets appear at each
                        // handshake with default buffers; see the module doc).
                        use_connected_socket: false,
                        use_multi_queue: false,
                        uapi_fd: theirs,
                    },
                )
                .map_err(|e| WgError::Device {
                    iface: iface.to_string(),
                    detail: e.to_string(),
                })?;
                // boringtun opens the TUN (and its epoll/event fds) without
                // O_CLOEXEC: keep them out of every process we spawn later.
                // Another thread may have closed an fd whose number boringtun
                // then reused, so new fds are those with a new number or a
                // new target, and the TUN is found by its interface.
                for (fd, target) in open_fds() {
                    if before.get(&fd) != Some(&target) || is_tun_of(fd, iface) {
                        set_cloexec(fd);
                    }
                }
                Ok(device)
            })?;
            let io_err = |source| WgError::Uapi {
                path: sock.clone(),
                source,
            };
            let chan = (|| {
                ours.set_read_timeout(Some(UAPI_TIMEOUT))?;
                ours.set_write_timeout(Some(UAPI_TIMEOUT))?;
                Ok(Channel {
                    reader: BufReader::new(ours.try_clone()?),
                    writer: ours,
                })
            })()
            .map_err(io_err)?;
            let uapi = Arc::new(UapiChannel {
                path: sock.clone(),
                chan: Mutex::new(Some(chan)),
            });
            let stop = Arc::new(AtomicBool::new(false));
            let mut overlay = Overlay {
                iface: name,
                listen_port,
                netns,
                sock: sock.clone(),
                backend: Backend::User {
                    device: Some(device),
                    uapi: Arc::clone(&uapi),
                    listener: None,
                    stop: Arc::clone(&stop),
                },
                applied: Mutex::new(None),
            };
            fs::create_dir_all(UAPI_DIR).map_err(io_err)?;
            let listener = UnixListener::bind(&sock).map_err(io_err)?;
            // It hands out the private key (like kernel WireGuard to root).
            fs::set_permissions(&sock, fs::Permissions::from_mode(0o600)).map_err(io_err)?;
            let private_hex = key.private_hex();
            let path = sock.clone();
            let get: GetFn = Box::new(move || uapi.exchange("get=1\n"));
            let thread = std::thread::Builder::new()
                .name(format!("{iface}-uapi"))
                .spawn(move || serve_wg_socket(listener, path, get, stop, private_hex))
                .map_err(io_err)?;
            if let Backend::User { listener, .. } = &mut overlay.backend {
                *listener = Some(thread);
            }
            overlay
        };
        // From here on, `overlay`'s Drop cleans up on error.
        overlay.configure_key(key, listen_port)?;
        overlay.listen_port = overlay.read_listen_port()?;
        if matches!(overlay.backend, Backend::User { .. }) {
            let tuned = enlarge_udp_buffers(overlay.listen_port, UDP_BUFFER_BYTES);
            if tuned == 0 {
                tracing::warn!(iface = %overlay.iface, "found no udp socket of the device to enlarge");
            }
        }
        let name = overlay.iface.clone();
        let iface = name.as_str();
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
            Backend::User { .. } => Some(Engine::Boringtun),
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
    /// Userspace: existing peers are first removed (`remove=true`, which also
    /// closes their connected UDP sockets), then the full list is sent with
    /// `replace_peers=true`; a peer is never modified in place. Handshakes
    /// restart, so traffic pauses for one round trip. Each exchange is bounded
    /// by a 5 s socket timeout.
    pub fn set_peers(&self, peers: &[Peer]) -> Result<(), WgError> {
        let wanted = normalize_peers(&self.iface, peers)?;
        let mut applied = self.applied.lock().unwrap_or_else(PoisonError::into_inner);
        if applied.as_ref() == Some(&wanted) {
            return Ok(());
        }
        *applied = None;
        match &self.backend {
            Backend::User { .. } => {
                let current: Vec<[u8; 32]> = self
                    .uapi_get()?
                    .peers
                    .iter()
                    .map(|p| p.public_key)
                    .collect();
                if !current.is_empty() {
                    self.uapi(&render_uapi_remove(&current), "set")?;
                }
                self.uapi(&render_uapi_replace(&wanted), "set")?;
            }
            Backend::Shoal { device, .. } => {
                if let Some(device) = device {
                    device.set_peers(&wanted).map_err(|e| WgError::Device {
                        iface: self.iface.clone(),
                        detail: e.to_string(),
                    })?;
                }
            }
            Backend::Kernel => {
                let iface = self.iface.as_str();
                in_netns(&self.netns, iface, || {
                    crate::kwg::set_peers(iface, &wanted).map_err(|detail| WgError::Netlink {
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
        match &self.backend {
            Backend::User { .. } | Backend::Shoal { .. } => Ok(self.uapi_get()?.peers),
            Backend::Kernel => Ok(self.kernel_get()?.peers),
        }
    }

    fn configure_key(&self, key: &KeyPair, listen_port: u16) -> Result<(), WgError> {
        match &self.backend {
            Backend::User { .. } => {
                let req = format!(
                    "set=1\nprivate_key={}\nlisten_port={listen_port}\n\n",
                    key.private_hex()
                );
                self.uapi(&req, "set").map(drop)
            }
            // Key and port were given to the device when it was created.
            Backend::Shoal { .. } => Ok(()),
            Backend::Kernel => {
                let iface = self.iface.as_str();
                let secret = key.secret.to_bytes();
                in_netns(&self.netns, iface, || {
                    crate::kwg::set_key(iface, secret, listen_port).map_err(|detail| {
                        WgError::Netlink {
                            iface: iface.to_string(),
                            op: "set wireguard key and port",
                            detail,
                        }
                    })
                })
            }
        }
    }

    fn read_listen_port(&self) -> Result<u16, WgError> {
        match &self.backend {
            Backend::User { .. } => Ok(self.uapi_get()?.listen_port),
            Backend::Shoal { .. } => Ok(self.listen_port),
            Backend::Kernel => Ok(self.kernel_get()?.listen_port),
        }
    }

    fn uapi_get(&self) -> Result<UapiState, WgError> {
        let lines = match &self.backend {
            Backend::Shoal {
                device: Some(device),
                ..
            } => device.uapi_get_lines(),
            _ => self.uapi("get=1\n", "get")?,
        };
        parse_uapi_get(&lines).map_err(|line| WgError::UapiParse {
            path: self.sock.clone(),
            line,
        })
    }

    /// One UAPI exchange with the userspace device: returns the answer lines
    /// before `errno=0`; another errno is an error.
    fn uapi(&self, request: &str, op: &'static str) -> Result<Vec<String>, WgError> {
        let Backend::User { uapi, .. } = &self.backend else {
            return Err(WgError::Uapi {
                path: self.sock.clone(),
                source: io::Error::new(io::ErrorKind::Unsupported, "kernel wireguard has no uapi"),
            });
        };
        let (lines, errno) = uapi.exchange(request)?;
        if errno != 0 {
            return Err(WgError::UapiErrno {
                path: self.sock.clone(),
                op,
                errno,
            });
        }
        Ok(lines)
    }

    /// The kernel device's state, read over generic netlink.
    fn kernel_get(&self) -> Result<crate::kwg::DeviceState, WgError> {
        let iface = self.iface.as_str();
        in_netns(&self.netns, iface, || {
            crate::kwg::get(iface).map_err(|detail| WgError::Netlink {
                iface: iface.to_string(),
                op: "get wireguard device",
                detail,
            })
        })
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

/// Stops serving `wg` on `sock` (set the flag, wake the accept with a
/// connection, join the thread) and removes the socket file.
fn stop_uapi_server(
    iface: &str,
    sock: &Path,
    stop: &AtomicBool,
    listener: &mut Option<JoinHandle<()>>,
) {
    stop.store(true, Ordering::SeqCst);
    if let Some(thread) = listener.take() {
        let _ = UnixStream::connect(sock);
        if thread.join().is_err() {
            tracing::warn!(%iface, "uapi socket thread panicked");
        }
    }
    if let Err(e) = fs::remove_file(sock)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %sock.display(), error = %e, "removing uapi socket");
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        if let Backend::User {
            device,
            uapi,
            listener,
            stop,
        } = &mut self.backend
        {
            stop_uapi_server(&self.iface, &self.sock, stop, listener);
            // Closing our end of the UAPI socketpair makes every device thread
            // exit; join them (bounded), then drop the device, which closes the
            // TUN and so removes the link.
            uapi.close();
            if let Some(mut device) = device.take() {
                let (tx, rx) = mpsc::channel();
                let spawned = std::thread::Builder::new()
                    .name(format!("{}-stop", self.iface))
                    .spawn(move || {
                        device.wait();
                        drop(device);
                        let _ = tx.send(());
                    });
                match spawned {
                    Ok(_) => {
                        if rx.recv_timeout(STOP_TIMEOUT).is_err() {
                            tracing::warn!(iface = %self.iface, "boringtun device did not stop in time");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(iface = %self.iface, error = %e, "spawning stop thread")
                    }
                }
            }
        }
        if let Backend::Shoal {
            device,
            listener,
            stop,
        } = &mut self.backend
        {
            stop_uapi_server(&self.iface, &self.sock, stop, listener);
            // The last reference (the listener's is gone): stops the threads
            // and closes the TUN.
            drop(device.take());
        }
        if let Err(e) = self.delete_link() {
            tracing::warn!(iface = %self.iface, error = %e, "deleting wireguard link");
        }
    }
}

/// Sets the receive and send buffers of every UDP socket of this process
/// bound to `port` to `bytes` (SO_*BUFFORCE, past `net.core.*mem_max`, if
/// allowed), returning how many sockets it tuned. boringtun never sets them
/// and offers no API for it.
fn enlarge_udp_buffers(port: u16, bytes: i32) -> usize {
    let Ok(dir) = fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    let mut tuned = 0;
    for entry in dir.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let is_socket = fs::read_link(entry.path())
            .map(|t| t.to_string_lossy().starts_with("socket:"))
            .unwrap_or(false);
        if !is_socket || socket_port(fd, libc::SOCK_DGRAM) != Some(port) {
            continue;
        }
        let int_len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        for (force, plain) in [
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        ] {
            // SAFETY: setsockopt on an fd number of this process with a valid
            // pointer to a c_int; if the fd was closed meanwhile the call fails.
            unsafe {
                let val = (&raw const bytes).cast::<libc::c_void>();
                if libc::setsockopt(fd, libc::SOL_SOCKET, force, val, int_len) != 0 {
                    libc::setsockopt(fd, libc::SOL_SOCKET, plain, val, int_len);
                }
            }
        }
        tuned += 1;
    }
    tuned
}

/// The file descriptors open in this process now.
fn open_fds() -> BTreeMap<i32, PathBuf> {
    fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| {
                    let fd = e.file_name().to_str()?.parse().ok()?;
                    Some((fd, fs::read_link(e.path()).ok()?))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `fd` is a TUN file attached to interface `iface`.
fn is_tun_of(fd: i32, iface: &str) -> bool {
    fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).is_ok_and(|info| {
        info.lines()
            .any(|l| l.strip_prefix("iff:").is_some_and(|v| v.trim() == iface))
    })
}

/// Sets FD_CLOEXEC on `fd` (errors ignored: the fd may be gone already).
fn set_cloexec(fd: i32) {
    // SAFETY: fcntl F_GETFD/F_SETFD take no pointers; on a closed fd they fail.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
            libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
    }
}

/// The local port of socket `fd` if it is an IPv4/IPv6 socket of type `ty`.
fn socket_port(fd: i32, ty: libc::c_int) -> Option<u16> {
    let mut got: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: SO_TYPE writes one c_int into `got`, `len` holds its size.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&raw mut got).cast::<libc::c_void>(),
            &mut len,
        )
    };
    if rc != 0 || got != ty {
        return None;
    }
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut sl = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: getsockname writes at most `sl` bytes into `ss`.
    let rc = unsafe { libc::getsockname(fd, (&raw mut ss).cast::<libc::sockaddr>(), &mut sl) };
    if rc != 0 {
        return None;
    }
    match libc::c_int::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says `ss` holds a sockaddr_in.
            let sin = unsafe { &*(&raw const ss).cast::<libc::sockaddr_in>() };
            Some(u16::from_be(sin.sin_port))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says `ss` holds a sockaddr_in6.
            let sin6 = unsafe { &*(&raw const ss).cast::<libc::sockaddr_in6>() };
            Some(u16::from_be(sin6.sin6_port))
        }
        _ => None,
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
            Err(WgError::Device {
                iface: iface.to_string(),
                detail: "worker thread panicked".to_string(),
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
    use std::process::{Command, Stdio};

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

    #[test]
    fn key_file_is_created_0600_and_reloaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/wg.key");
        let a = KeyPair::load_or_create(&path).expect("create");
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = KeyPair::load_or_create(&path).expect("load");
        assert_eq!(a.public_key(), b.public_key());
        assert_eq!(a.public_base64().len(), 44);
        let text = fs::read_to_string(&path).expect("read");
        assert_eq!(text.trim().len(), 44);
        assert!(
            !format!("{a:?}").contains(text.trim()),
            "Debug leaks the private key"
        );
    }

    #[test]
    fn loose_key_file_is_tightened_and_garbage_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wg.key");
        let k = KeyPair::generate();
        fs::write(&path, format!("{}\n", k.private_base64())).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let loaded = KeyPair::load_or_create(&path).expect("load");
        assert_eq!(loaded.public_key(), k.public_key());
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        fs::write(&path, "not a key\n").expect("write");
        let err = KeyPair::load_or_create(&path).expect_err("garbage");
        assert!(err.to_string().contains("wg.key"), "{err}");
    }

    #[test]
    fn public_key_matches_wg_pubkey() {
        let k = KeyPair::generate();
        let mut child = Command::new("wg")
            .arg("pubkey")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("wg (wireguard-tools) installed");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{}\n", k.private_base64()).as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("wg pubkey");
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            k.public_base64()
        );
    }

    #[test]
    fn public_keys_parse_from_base64_and_hex() {
        let k = KeyPair::generate();
        let raw = k.public_key();
        assert_eq!(parse_public_key(&k.public_base64()).expect("b64"), raw);
        assert_eq!(parse_public_key(&hex::encode(raw)).expect("hex"), raw);
        assert_eq!(
            parse_public_key(&format!(" {}\n", k.public_base64())).expect("trim"),
            raw
        );
        for bad in ["", "abc", &"z".repeat(64), &"!".repeat(44)] {
            let err = parse_public_key(bad).expect_err("bad key");
            assert!(matches!(err, WgError::PublicKey { .. }));
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

    #[test]
    fn uapi_requests_replace_whole_list() {
        let mut p = peer(1, 51821, &["10.244.1.0/24"]);
        p.keepalive = Some(25);
        let req = render_uapi_replace(&[p]);
        let hex1 = hex::encode([1u8; 32]);
        assert_eq!(
            req,
            format!(
                "set=1\nreplace_peers=true\npublic_key={hex1}\nendpoint=10.0.0.1:51821\n\
                 persistent_keepalive_interval=25\nallowed_ip=10.244.1.0/24\n\n"
            )
        );
        assert_eq!(
            render_uapi_remove(&[[1; 32]]),
            format!("set=1\npublic_key={hex1}\nremove=true\n\n")
        );
        assert_eq!(render_uapi_replace(&[]), "set=1\nreplace_peers=true\n\n");
    }

    #[test]
    fn uapi_get_answer_parses() {
        let hex1 = hex::encode([1u8; 32]);
        let hex2 = hex::encode([2u8; 32]);
        let text = format!(
            "own_public_key=00\nlisten_port=51820\npublic_key={hex1}\nendpoint=10.0.0.1:51821\n\
             allowed_ip=10.244.1.0/24\nallowed_ip=fd00::/64\nlast_handshake_time_sec=3\n\
             last_handshake_time_nsec=500\nrx_bytes=10\ntx_bytes=20\npublic_key={hex2}\n\
             rx_bytes=0\ntx_bytes=0\n"
        );
        let lines: Vec<String> = text.lines().map(String::from).collect();
        let st = parse_uapi_get(&lines).expect("parse");
        assert_eq!(st.listen_port, 51820);
        assert_eq!(st.peers.len(), 2);
        let p = &st.peers[0];
        assert_eq!(p.public_key, [1; 32]);
        assert_eq!(p.endpoint, Some(SocketAddr::from(([10, 0, 0, 1], 51821))));
        assert_eq!(p.allowed_ips.len(), 1);
        assert_eq!(p.last_handshake, Some(Duration::new(3, 500)));
        assert_eq!((p.rx_bytes, p.tx_bytes), (10, 20));
        assert_eq!(st.peers[1].last_handshake, None);
        assert!(parse_uapi_get(&["endpoint".to_string()]).is_err());
    }

    #[test]
    fn wg_view_reports_private_key_and_epoch_handshakes() {
        let now = UNIX_EPOCH + Duration::new(1000, 500_000_000);
        let lines: Vec<String> = [
            "own_public_key=abcd",
            "listen_port=51820",
            "public_key=00",
            "last_handshake_time_sec=3",
            "last_handshake_time_nsec=250000000",
            "rx_bytes=1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            wg_view(lines, "PRIV", now),
            vec![
                "private_key=PRIV",
                "listen_port=51820",
                "public_key=00",
                "last_handshake_time_sec=997",
                "last_handshake_time_nsec=250000000",
                "rx_bytes=1",
            ]
        );
    }
}
