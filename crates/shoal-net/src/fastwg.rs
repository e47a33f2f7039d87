//! Shoal's own userspace WireGuard data path ("shoal engine"): a TUN device,
//! one UDP socket and per-peer [`boringtun::noise::Tunn`] state for the
//! crypto and the handshakes.
//!
//! Compared with `boringtun::device` it moves data in large pieces:
//!
//! - **TUN offloads** (`IFF_VNET_HDR`, `TUNSETOFFLOAD` with checksum and
//!   TCPv4 segmentation): the kernel hands us TCP super-packets of up to
//!   64 KiB in one read; we cut them into MSS-sized segments and compute
//!   their checksums. On the way in, consecutive in-order segments of one
//!   TCP flow are coalesced (`Gro`) into one super-packet written
//!   with a `virtio_net_hdr`, so the kernel's stack sees one packet, not ~45.
//! - **UDP batching and offloads**: up to [`BATCH`] ciphertexts per
//!   `sendmmsg`, equal-sized datagrams to one endpoint sent as one train
//!   with `UDP_SEGMENT` (UDP GSO); `recvmmsg` of up to 16 messages on a
//!   socket with `UDP_GRO`, each message possibly a train of datagrams.
//! - 4 MiB socket buffers (`SO_*BUFFORCE`).
//!
//! Threads: TUN -> UDP (read, segment, encrypt, send), UDP -> TUN (receive,
//! decrypt, coalesce, write) and a timer thread that ticks the WireGuard
//! timers (handshake retries, rekeying, keepalives) every 100 ms. Peers are
//! replaced as a whole list, atomically (a new routing table is swapped in);
//! a peer whose key and keepalive did not change keeps its session. Each
//! peer's `Tunn` sits behind a mutex (its `encapsulate`/`decapsulate` take
//! `&mut self`), so one peer's crypto runs on one core per direction.
//!
//! Routing: an outgoing packet goes to the peer whose allowed IPs hold its
//! destination (longest prefix); an incoming data packet is dispatched by its
//! receiver index (the upper 24 bits name the peer, as in boringtun's own
//! device), a handshake initiation by the initiator's static key. IPv4 only
//! (inner packets and underlay endpoints).
//!
//! The device lives in the network namespace of the thread that calls
//! [`Device::new`]. Dropping it stops the threads and closes the TUN, which
//! removes the interface.

use std::collections::HashMap;
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use ipnet::Ipv4Net;

use crate::wg::Peer;

/// Packets moved per `recvmmsg` / `sendmmsg` call (and TUN reads per wake-up).
pub const BATCH: usize = 64;
/// Receive and send buffer of the UDP socket.
const UDP_BUFFER_BYTES: libc::c_int = 4 << 20;
/// Size of one packet buffer: an inner packet up to 1500 bytes plus the
/// 32-byte WireGuard data overhead, rounded up (handshakes need 148).
const PACKET_BUF: usize = 2048;
/// Largest inner packet we read from the TUN (fits a buffer with overhead).
const MAX_INNER: usize = PACKET_BUF - 64;
/// Size of the `virtio_net_hdr` in front of every TUN packet (IFF_VNET_HDR).
const VNET: usize = 10;
/// Largest TUN read: a TSO super-packet of up to 64 KiB plus its header.
const TUN_READ: usize = 65_536 + VNET;
/// `virtio_net_hdr.flags`: the checksum at csum_start + csum_offset is partial.
const VNET_F_NEEDS_CSUM: u8 = 1;
/// `virtio_net_hdr.gso_type`: a TCP over IPv4 super-packet.
const VNET_GSO_TCPV4: u8 = 1;
/// `virtio_net_hdr.gso_type` bit: ECN (CWR) set on the super-packet.
const VNET_GSO_ECN: u8 = 0x80;
/// TUNSETOFFLOAD features: checksum offload and TCPv4 segmentation offload.
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
/// How often the timer thread runs `update_timers`, and how long the I/O
/// threads wait in `poll` before checking for shutdown.
const TICK: Duration = Duration::from_millis(100);

/// Errors of the shoal WireGuard engine; each names the interface.
#[derive(Debug, thiserror::Error)]
pub enum FastWgError {
    /// Opening or configuring the TUN device failed.
    #[error("interface {iface}: tun device: {source}")]
    Tun {
        /// The interface.
        iface: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Binding or configuring the UDP socket failed.
    #[error("interface {iface}: udp socket on port {port}: {source}")]
    Udp {
        /// The interface.
        iface: String,
        /// The port asked for (0: any).
        port: u16,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Starting a device thread failed.
    #[error("interface {iface}: starting thread {name}: {source}")]
    Thread {
        /// The interface.
        iface: String,
        /// The thread's name.
        name: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A peer's endpoint is not IPv4 (the engine's socket is IPv4 only).
    #[error(
        "interface {iface}: peer endpoint {endpoint}: the shoal engine supports IPv4 endpoints only"
    )]
    Endpoint {
        /// The interface.
        iface: String,
        /// The endpoint given.
        endpoint: SocketAddr,
    },
}

/// One peer's live state: its tunnel (sessions, handshake, timers) and the
/// endpoint datagrams go to (updated when it roams).
struct PeerSlot {
    public_key: [u8; 32],
    keepalive: Option<u16>,
    /// The 24-bit index boringtun puts in the upper bits of our session indices.
    index: u32,
    tunn: Mutex<Tunn>,
    /// `ip << 16 | port` of the current endpoint.
    endpoint: AtomicU64,
}

impl PeerSlot {
    fn endpoint(&self) -> SocketAddrV4 {
        let v = self.endpoint.load(Ordering::Relaxed);
        SocketAddrV4::new(Ipv4Addr::from((v >> 16) as u32), v as u16)
    }

    fn set_endpoint(&self, addr: SocketAddrV4) {
        self.endpoint.store(pack(addr), Ordering::Relaxed);
    }

    fn tunn(&self) -> std::sync::MutexGuard<'_, Tunn> {
        self.tunn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn pack(addr: SocketAddrV4) -> u64 {
    (u64::from(u32::from(*addr.ip())) << 16) | u64::from(addr.port())
}

/// One peer of the table: its live state, allowed IPs and configured endpoint.
struct Entry {
    slot: Arc<PeerSlot>,
    nets: Vec<Ipv4Net>,
    configured: SocketAddrV4,
}

/// The peer list as the data path sees it; replaced as a whole.
#[derive(Default)]
struct Table {
    /// Peers in configuration order (sorted by key, as `Overlay` normalizes).
    peers: Vec<Entry>,
    /// Peer position by its 24-bit index.
    by_index: HashMap<u32, usize>,
    /// Peer position by public key.
    by_key: HashMap<[u8; 32], usize>,
    /// (network, peer position), longest prefix first.
    routes: Vec<(Ipv4Net, usize)>,
}

impl Table {
    fn route(&self, dst: Ipv4Addr) -> Option<&PeerSlot> {
        self.routes
            .iter()
            .find(|(net, _)| net.contains(&dst))
            .map(|(_, i)| &*self.peers[*i].slot)
    }

    fn allowed(&self, pos: usize, src: Ipv4Addr) -> bool {
        self.peers[pos].nets.iter().any(|n| n.contains(&src))
    }
}

/// State shared by the device threads.
struct Shared {
    iface: String,
    tun: OwnedFd,
    udp: UdpSocket,
    secret: StaticSecret,
    public: PublicKey,
    table: RwLock<Arc<Table>>,
    /// Serializes `set_peers` (index allocation and table swap).
    config: Mutex<u32>,
    stop: AtomicBool,
    /// Whether the kernel takes UDP_SEGMENT (UDP GSO) on our socket.
    udp_gso: bool,
}

impl Shared {
    fn table(&self) -> Arc<Table> {
        Arc::clone(&self.table.read().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The body of one device thread.
type ThreadFn = fn(&Shared);

/// A running shoal WireGuard device: TUN interface, UDP socket and three
/// threads. Dropping it stops the threads and removes the interface.
pub struct Device {
    shared: Arc<Shared>,
    listen_port: u16,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("iface", &self.shared.iface)
            .field("listen_port", &self.listen_port)
            .finish_non_exhaustive()
    }
}

impl Device {
    /// Creates TUN interface `iface` (down, MTU as the kernel defaults) in the
    /// calling thread's network namespace, binds UDP `listen_port` (0: any
    /// free port) on all IPv4 addresses there and starts the device threads.
    /// Starts without peers.
    pub fn new(iface: &str, secret: [u8; 32], listen_port: u16) -> Result<Device, FastWgError> {
        let tun = open_tun(iface).map_err(|source| FastWgError::Tun {
            iface: iface.to_string(),
            source,
        })?;
        let udp_err = |source| FastWgError::Udp {
            iface: iface.to_string(),
            port: listen_port,
            source,
        };
        let udp = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, listen_port))
            .map_err(udp_err)?;
        set_buffers(udp.as_raw_fd(), UDP_BUFFER_BYTES).map_err(udp_err)?;
        let port = udp.local_addr().map_err(udp_err)?.port();
        let udp_gso = probe_udp_gso(udp.as_raw_fd());
        // Let the kernel keep a train of datagrams from one sender together
        // (UDP GRO); `recvmmsg` then reports their size in a cmsg. Optional.
        let one: libc::c_int = 1;
        // SAFETY: setsockopt reads one c_int; `udp` is our socket.
        let gro_on = unsafe {
            libc::setsockopt(
                udp.as_raw_fd(),
                libc::SOL_UDP,
                libc::UDP_GRO,
                (&raw const one).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        } == 0;
        tracing::debug!(iface, udp_gso, udp_gro = gro_on, "shoal wireguard socket");
        let secret = StaticSecret::from(secret);
        let public = PublicKey::from(&secret);
        let shared = Arc::new(Shared {
            iface: iface.to_string(),
            tun,
            udp,
            secret,
            public,
            table: RwLock::new(Arc::new(Table::default())),
            config: Mutex::new(rand::random::<u32>() & 0xff_ffff),
            stop: AtomicBool::new(false),
            udp_gso,
        });
        let device = Device {
            shared: Arc::clone(&shared),
            listen_port: port,
            threads: Mutex::new(Vec::new()),
        };
        let loops: [(&str, ThreadFn); 3] = [
            ("tx", tun_to_udp),
            ("rx", udp_to_tun),
            ("timers", timer_loop),
        ];
        for (what, f) in loops {
            let s = Arc::clone(&shared);
            let name = format!("{iface}-{what}");
            let handle = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || f(&s))
                .map_err(|source| FastWgError::Thread {
                    iface: iface.to_string(),
                    name,
                    source,
                })?;
            device
                .threads
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(handle);
        }
        Ok(device)
    }

    /// The interface name.
    pub fn iface(&self) -> &str {
        &self.shared.iface
    }

    /// The UDP port the device listens on.
    pub fn listen_port(&self) -> u16 {
        self.listen_port
    }

    /// Makes the peers exactly `peers`, atomically. A peer whose public key
    /// and keepalive are unchanged keeps its tunnel (sessions, counters); its
    /// endpoint is reset to the configured one if that changed.
    pub fn set_peers(&self, peers: &[Peer]) -> Result<(), FastWgError> {
        let mut endpoints = Vec::with_capacity(peers.len());
        for p in peers {
            match p.endpoint {
                SocketAddr::V4(a) => endpoints.push(a),
                SocketAddr::V6(_) => {
                    return Err(FastWgError::Endpoint {
                        iface: self.shared.iface.clone(),
                        endpoint: p.endpoint,
                    });
                }
            }
        }
        let mut next_index = self
            .shared
            .config
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let old = self.shared.table();
        let mut table = Table::default();
        for (p, endpoint) in peers.iter().zip(endpoints) {
            let keepalive = p.keepalive.filter(|k| *k > 0);
            let reuse = old
                .by_key
                .get(&p.public_key)
                .map(|i| &old.peers[*i])
                .filter(|e| e.slot.keepalive == keepalive);
            let slot = match reuse {
                Some(e) => {
                    if e.configured != endpoint {
                        e.slot.set_endpoint(endpoint);
                    }
                    Arc::clone(&e.slot)
                }
                None => {
                    let index = loop {
                        *next_index = (*next_index + 1) & 0xff_ffff;
                        if !old.by_index.contains_key(&*next_index) {
                            break *next_index;
                        }
                    };
                    Arc::new(PeerSlot {
                        public_key: p.public_key,
                        keepalive,
                        index,
                        tunn: Mutex::new(Tunn::new(
                            self.shared.secret.clone(),
                            PublicKey::from(p.public_key),
                            None,
                            keepalive,
                            index,
                            None,
                        )),
                        endpoint: AtomicU64::new(pack(endpoint)),
                    })
                }
            };
            let pos = table.peers.len();
            table.by_index.insert(slot.index, pos);
            table.by_key.insert(slot.public_key, pos);
            for net in &p.allowed_ips {
                table.routes.push((net.trunc(), pos));
            }
            table.peers.push(Entry {
                slot,
                nets: p.allowed_ips.iter().map(Ipv4Net::trunc).collect(),
                configured: endpoint,
            });
        }
        table
            .routes
            .sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
        *self
            .shared
            .table
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(table);
        Ok(())
    }

    /// The device state in the lines of a UAPI `get` answer, the way
    /// boringtun's device reports it (own public key, handshake as an age).
    pub fn uapi_get_lines(&self) -> Vec<String> {
        let mut lines = vec![
            format!(
                "own_public_key={}",
                hex::encode(self.shared.public.as_bytes())
            ),
            format!("listen_port={}", self.listen_port),
        ];
        let table = self.shared.table();
        for Entry { slot, nets, .. } in &table.peers {
            let (age, tx, rx, _, _) = slot.tunn().stats();
            lines.push(format!("public_key={}", hex::encode(slot.public_key)));
            lines.push(format!("endpoint={}", slot.endpoint()));
            for net in nets {
                lines.push(format!("allowed_ip={net}"));
            }
            if let Some(k) = slot.keepalive {
                lines.push(format!("persistent_keepalive_interval={k}"));
            }
            if let Some(age) = age {
                lines.push(format!("last_handshake_time_sec={}", age.as_secs()));
                lines.push(format!("last_handshake_time_nsec={}", age.subsec_nanos()));
            }
            lines.push(format!("rx_bytes={rx}"));
            lines.push(format!("tx_bytes={tx}"));
        }
        lines
    }

    /// Stops the device threads (bounded by their 100 ms poll), idempotent.
    fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let threads =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        for t in threads {
            if t.join().is_err() {
                tracing::warn!(iface = %self.shared.iface, "shoal wireguard thread panicked");
            }
        }
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.stop();
        // The TUN fd closes with the last `Shared` (ours, once the threads
        // are joined), which removes the interface.
    }
}

/// `struct ifreq` as TUNSETIFF reads it: the name and the flags.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Opens `/dev/net/tun` (close-on-exec, non-blocking) and attaches it to TUN
/// interface `iface` (created if missing): packets without a protocol header
/// but with a `virtio_net_hdr`, checksum and TCPv4 segmentation offloaded to us.
fn open_tun(iface: &str) -> io::Result<OwnedFd> {
    if iface.is_empty() || iface.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name must have 1 to 15 bytes",
        ));
    }
    // SAFETY: the path is a NUL-terminated literal; open returns a new fd or -1.
    let fd = unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened by us and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short,
        _pad: [0; 22],
    };
    req.name[..iface.len()].copy_from_slice(iface.as_bytes());
    // SAFETY: TUNSETIFF reads (and may write back the name into) an ifreq;
    // `req` is a correctly laid out, live 40-byte ifreq.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &raw mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // Let the kernel hand us unfinished checksums and TCP super-packets of
    // up to 64 KiB (one read instead of ~45); we segment and checksum them.
    let features: libc::c_uint = TUN_F_CSUM | TUN_F_TSO4;
    // SAFETY: TUNSETOFFLOAD takes the feature bits as the integer argument.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETOFFLOAD, features) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Sets the receive and send buffers of socket `fd` to `bytes`, past the
/// sysctl limits when allowed (`SO_*BUFFORCE`, needs CAP_NET_ADMIN).
fn set_buffers(fd: RawFd, bytes: libc::c_int) -> io::Result<()> {
    let len = size_of::<libc::c_int>() as libc::socklen_t;
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        let val = (&raw const bytes).cast::<libc::c_void>();
        // SAFETY: setsockopt reads one c_int from `val`; `fd` is our socket.
        let rc = unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, force, val, len) };
        if rc != 0 {
            // SAFETY: as above.
            let rc = unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, plain, val, len) };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Whether the socket accepts UDP_SEGMENT (Linux 4.18+): set it, then back to 0.
fn probe_udp_gso(fd: RawFd) -> bool {
    let len = size_of::<libc::c_int>() as libc::socklen_t;
    let set = |v: libc::c_int| {
        // SAFETY: setsockopt reads one c_int from `v`; `fd` is our socket.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_UDP,
                libc::UDP_SEGMENT,
                (&raw const v).cast(),
                len,
            ) == 0
        }
    };
    set(1400) && set(0)
}

/// Waits up to [`TICK`] for `fd` to become readable; true if it is.
fn wait_readable(fd: RawFd) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, count 1.
    let rc = unsafe { libc::poll(&raw mut pfd, 1, TICK.as_millis() as libc::c_int) };
    rc > 0 && pfd.revents & libc::POLLIN != 0
}

fn sockaddr_v4(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// Sends one datagram (handshakes, cookies, keepalives: the rare path).
fn send_one(shared: &Shared, packet: &[u8], to: SocketAddrV4) {
    if let Err(e) = shared.udp.send_to(packet, to) {
        tracing::debug!(iface = %shared.iface, %to, error = %e, "udp send");
    }
}

/// A batch of outgoing datagrams for one `sendmmsg`.
struct SendBatch {
    bufs: Vec<[u8; PACKET_BUF]>,
    lens: Vec<usize>,
    addrs: Vec<libc::sockaddr_in>,
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    /// One control buffer per message (the UDP_SEGMENT cmsg).
    cmsgs: Vec<Cmsg>,
}

/// A control-message buffer for one `u16`/`int` option, 8-byte aligned.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Cmsg([u8; 32]);

/// `CMSG_LEN(n)`: header plus `n` data bytes.
const fn cmsg_len(n: usize) -> usize {
    size_of::<libc::cmsghdr>() + n
}

/// `CMSG_SPACE(n)`: header plus `n` data bytes, padded to 8.
const fn cmsg_space(n: usize) -> usize {
    size_of::<libc::cmsghdr>() + n.div_ceil(8) * 8
}

impl SendBatch {
    fn new() -> SendBatch {
        // SAFETY: iovec, mmsghdr and sockaddr_in are plain C data; all-zero is valid.
        let (iov, msg, sin) = unsafe { (zeroed(), zeroed(), zeroed()) };
        SendBatch {
            bufs: vec![[0; PACKET_BUF]; BATCH],
            lens: Vec::with_capacity(BATCH),
            addrs: vec![sin; BATCH],
            iovs: vec![iov; BATCH],
            msgs: vec![msg; BATCH],
            cmsgs: vec![Cmsg([0; 32]); BATCH],
        }
    }

    /// Sends the queued datagrams with `sendmmsg` (retrying the rest after a
    /// partial send) and empties the batch. With UDP GSO, consecutive
    /// datagrams to one endpoint of one size (the last may be shorter) go
    /// out as one message with a UDP_SEGMENT cmsg: the kernel cuts them
    /// apart as late as possible (and the receiver may keep them together).
    fn flush(&mut self, shared: &Shared) {
        let n = self.lens.len();
        for i in 0..n {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: self.lens[i],
            };
        }
        let same_dest = |a: &libc::sockaddr_in, b: &libc::sockaddr_in| {
            a.sin_addr.s_addr == b.sin_addr.s_addr && a.sin_port == b.sin_port
        };
        let (mut i, mut m) = (0, 0);
        while i < n {
            let size = self.lens[i];
            let max = if shared.udp_gso {
                (65_000 / size.max(1)).clamp(1, 64)
            } else {
                1
            };
            let mut j = i + 1;
            while j < n
                && j - i < max
                && self.lens[j - 1] == size
                && self.lens[j] <= size
                && same_dest(&self.addrs[i], &self.addrs[j])
            {
                j += 1;
            }
            // SAFETY: msghdr is plain C data; all-zero is valid.
            let mut hdr: libc::msghdr = unsafe { zeroed() };
            hdr.msg_name = (&raw mut self.addrs[i]).cast();
            hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            hdr.msg_iov = &raw mut self.iovs[i];
            hdr.msg_iovlen = j - i;
            if j - i > 1 {
                let buf = &mut self.cmsgs[m];
                let cmsg = libc::cmsghdr {
                    cmsg_len: cmsg_len(size_of::<u16>()),
                    cmsg_level: libc::SOL_UDP,
                    cmsg_type: libc::UDP_SEGMENT,
                };
                // SAFETY: `buf` is 8-aligned and 32 bytes: room for the
                // 16-byte header and the u16 after it.
                unsafe {
                    std::ptr::write(buf.0.as_mut_ptr().cast::<libc::cmsghdr>(), cmsg);
                }
                let at = size_of::<libc::cmsghdr>();
                buf.0[at..at + 2].copy_from_slice(&(size as u16).to_ne_bytes());
                hdr.msg_control = buf.0.as_mut_ptr().cast();
                hdr.msg_controllen = cmsg_space(size_of::<u16>());
            }
            self.msgs[m] = libc::mmsghdr {
                msg_hdr: hdr,
                msg_len: 0,
            };
            m += 1;
            i = j;
        }
        let n = m;
        let mut done = 0;
        while done < n {
            // SAFETY: msgs[done..n] are initialized above and point into
            // iovs/addrs/bufs, which outlive the call.
            let rc = unsafe {
                libc::sendmmsg(
                    shared.udp.as_raw_fd(),
                    self.msgs[done..].as_mut_ptr(),
                    (n - done) as libc::c_uint,
                    0,
                )
            };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // Skip the datagram that failed (e.g. unreachable), keep the rest.
                tracing::debug!(iface = %shared.iface, error = %e, "sendmmsg");
                done += 1;
            } else {
                done += rc as usize;
            }
        }
        self.lens.clear();
    }
}

/// TUN -> UDP: reads a batch of packets (TCP super-packets are cut into
/// MSS-sized segments here), encrypts each for the peer its destination
/// routes to, and sends the ciphertexts with `sendmmsg`, [`BATCH`] at a time.
fn tun_to_udp(shared: &Shared) {
    let tun = shared.tun.as_raw_fd();
    let mut batch = SendBatch::new();
    let mut big = vec![0u8; TUN_READ];
    let mut seg = vec![0u8; PACKET_BUF];
    while !shared.stop.load(Ordering::Relaxed) {
        if !wait_readable(tun) {
            continue;
        }
        let table = shared.table();
        for _ in 0..BATCH {
            // SAFETY: reads at most TUN_READ bytes into `big`.
            let n = unsafe { libc::read(tun, big.as_mut_ptr().cast(), TUN_READ) };
            if n <= VNET as isize {
                break;
            }
            let (hdr, packet) = big[..n as usize].split_at_mut(VNET);
            let gso_type = hdr[1] & !VNET_GSO_ECN;
            let gso_size = usize::from(u16::from_le_bytes([hdr[4], hdr[5]]));
            if gso_type == VNET_GSO_TCPV4 {
                segment_tcp4(packet, gso_size, &mut seg, |s| {
                    emit(shared, &table, &mut batch, s)
                });
                continue;
            }
            if hdr[0] & VNET_F_NEEDS_CSUM != 0 {
                let start = usize::from(u16::from_le_bytes([hdr[6], hdr[7]]));
                let offset = usize::from(u16::from_le_bytes([hdr[8], hdr[9]]));
                finish_checksum(packet, start, offset);
            }
            if packet.len() <= MAX_INNER {
                emit(shared, &table, &mut batch, packet);
            }
        }
        batch.flush(shared);
    }
}

/// Encrypts one inner IPv4 packet for the peer its destination routes to
/// and queues the datagram, flushing the batch when it is full.
fn emit(shared: &Shared, table: &Table, batch: &mut SendBatch, packet: &[u8]) {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return; // IPv6 and runts: not routed by this overlay.
    }
    let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    let Some(peer) = table.route(dst) else {
        return;
    };
    let slot = batch.lens.len();
    let mut tunn = peer.tunn();
    match tunn.encapsulate(packet, &mut batch.bufs[slot]) {
        TunnResult::WriteToNetwork(out) => {
            let len = out.len();
            batch.addrs[slot] = sockaddr_v4(peer.endpoint());
            batch.lens.push(len);
        }
        TunnResult::Err(e) => {
            tracing::debug!(iface = %shared.iface, error = ?e, "encapsulate");
        }
        _ => {}
    }
    drop(tunn);
    if batch.lens.len() == BATCH {
        batch.flush(shared);
    }
}

/// Adds `data` to a ones'-complement sum (RFC 1071); `data` starts at an
/// even offset of the checksummed range.
fn csum_add(mut acc: u64, data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    if rest.len() >= 2 {
        acc += u64::from(u16::from_be_bytes([rest[0], rest[1]]));
    }
    if rest.len() % 2 == 1 {
        acc += u64::from(rest[rest.len() - 1]) << 8;
    }
    acc
}

/// Folds a sum to 16 bits and complements it: the checksum field value.
fn csum_fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// Completes a partial checksum (CHECKSUM_PARTIAL): the field at
/// `start + offset` holds the pseudo-header sum; the checksum covers
/// `packet[start..]`.
fn finish_checksum(packet: &mut [u8], start: usize, offset: usize) {
    let at = start + offset;
    if at + 2 > packet.len() {
        return;
    }
    let sum = csum_fold(csum_add(0, &packet[start..]));
    packet[at..at + 2].copy_from_slice(&sum.to_be_bytes());
}

/// Cuts an IPv4 TCP super-packet into segments of `mss` payload bytes, each
/// with its own IP length, id and checksum and TCP sequence number, flags
/// and checksum, calling `f` with each (built in `seg`).
fn segment_tcp4(packet: &[u8], mss: usize, seg: &mut [u8], mut f: impl FnMut(&[u8])) {
    const FIN: u8 = 0x01;
    const PSH: u8 = 0x08;
    const CWR: u8 = 0x80;
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return;
    }
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    if ihl < 20 || packet.len() < ihl + 20 {
        return;
    }
    let hl = ihl + usize::from(packet[ihl + 12] >> 4) * 4;
    if packet.len() < hl || mss == 0 || hl + mss > seg.len().min(MAX_INNER) {
        return;
    }
    let payload = &packet[hl..];
    let id0 = u16::from_be_bytes([packet[4], packet[5]]);
    let seq0 = u32::from_be_bytes([
        packet[ihl + 4],
        packet[ihl + 5],
        packet[ihl + 6],
        packet[ihl + 7],
    ]);
    let flags = packet[ihl + 13];
    let count = payload.len().div_ceil(mss).max(1);
    for k in 0..count {
        let chunk = &payload[(k * mss).min(payload.len())..((k + 1) * mss).min(payload.len())];
        let total = hl + chunk.len();
        seg[..hl].copy_from_slice(&packet[..hl]);
        seg[hl..total].copy_from_slice(chunk);
        seg[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        seg[4..6].copy_from_slice(&id0.wrapping_add(k as u16).to_be_bytes());
        seg[10..12].fill(0);
        let ip_sum = csum_fold(csum_add(0, &seg[..ihl]));
        seg[10..12].copy_from_slice(&ip_sum.to_be_bytes());
        let seq = seq0.wrapping_add((k * mss) as u32);
        seg[ihl + 4..ihl + 8].copy_from_slice(&seq.to_be_bytes());
        let mut fl = flags;
        if k + 1 < count {
            fl &= !(FIN | PSH);
        }
        if k > 0 {
            fl &= !CWR;
        }
        seg[ihl + 13] = fl;
        seg[ihl + 16..ihl + 18].fill(0);
        // Pseudo-header: source, destination, protocol, TCP length.
        let mut acc = csum_add(0, &seg[12..20]);
        acc += 6 + (total - ihl) as u64;
        acc = csum_add(acc, &seg[ihl..total]);
        let tcp_sum = csum_fold(acc);
        seg[ihl + 16..ihl + 18].copy_from_slice(&tcp_sum.to_be_bytes());
        f(&seg[..total]);
    }
}

/// Messages per `recvmmsg`; with UDP GRO each may hold many datagrams.
const RX_MSGS: usize = 16;
/// Size of one receive buffer: a coalesced (GRO) message of up to 64 KiB.
const RX_BUF: usize = 65_536;

/// A batch of incoming messages for one `recvmmsg`.
struct RecvBatch {
    bufs: Vec<Vec<u8>>,
    addrs: Vec<libc::sockaddr_in>,
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    /// One control buffer per message (the UDP_GRO cmsg with the segment size).
    cmsgs: Vec<Cmsg>,
}

impl RecvBatch {
    fn new() -> RecvBatch {
        // SAFETY: iovec, mmsghdr and sockaddr_in are plain C data; all-zero is valid.
        let (iov, msg, sin) = unsafe { (zeroed(), zeroed(), zeroed()) };
        RecvBatch {
            bufs: vec![vec![0; RX_BUF]; RX_MSGS],
            addrs: vec![sin; RX_MSGS],
            iovs: vec![iov; RX_MSGS],
            msgs: vec![msg; RX_MSGS],
            cmsgs: vec![Cmsg([0; 32]); RX_MSGS],
        }
    }

    /// Receives up to [`RX_MSGS`] messages without blocking; returns how many.
    fn recv(&mut self, fd: RawFd) -> usize {
        for i in 0..RX_MSGS {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: RX_BUF,
            };
            // SAFETY: msghdr is plain C data; all-zero is valid.
            let mut hdr: libc::msghdr = unsafe { zeroed() };
            hdr.msg_name = (&raw mut self.addrs[i]).cast();
            hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            hdr.msg_iov = &raw mut self.iovs[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = self.cmsgs[i].0.as_mut_ptr().cast();
            hdr.msg_controllen = self.cmsgs[i].0.len();
            self.msgs[i] = libc::mmsghdr {
                msg_hdr: hdr,
                msg_len: 0,
            };
        }
        // SAFETY: all RX_MSGS msgs are initialized and point into buffers
        // that outlive the call; a null timeout with MSG_DONTWAIT never blocks.
        let rc = unsafe {
            libc::recvmmsg(
                fd,
                self.msgs.as_mut_ptr(),
                RX_MSGS as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 { 0 } else { rc as usize }
    }

    fn source(&self, i: usize) -> Option<SocketAddrV4> {
        let sin = &self.addrs[i];
        (libc::c_int::from(sin.sin_family) == libc::AF_INET).then(|| {
            SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )
        })
    }

    /// The size of the datagrams coalesced in message `i` (UDP GRO), if any.
    fn segment_size(&self, i: usize) -> Option<usize> {
        let hdr = &self.msgs[i].msg_hdr;
        let head = size_of::<libc::cmsghdr>();
        if hdr.msg_controllen < cmsg_len(size_of::<libc::c_int>()) {
            return None;
        }
        // SAFETY: the kernel wrote at least one cmsghdr (msg_controllen says
        // so) at the start of our 8-aligned control buffer.
        let cmsg = unsafe { std::ptr::read(self.cmsgs[i].0.as_ptr().cast::<libc::cmsghdr>()) };
        if cmsg.cmsg_level != libc::SOL_UDP || cmsg.cmsg_type != libc::UDP_GRO {
            return None;
        }
        let d = &self.cmsgs[i].0[head..head + 4];
        let size = libc::c_int::from_ne_bytes([d[0], d[1], d[2], d[3]]);
        usize::try_from(size).ok().filter(|s| *s > 0)
    }
}

/// UDP -> TUN: receives a batch of messages (each possibly several
/// coalesced datagrams), finds each datagram's peer, decrypts it and hands
/// the inner packets (from allowed sources) to the TUN through [`Gro`].
fn udp_to_tun(shared: &Shared) {
    let udp = shared.udp.as_raw_fd();
    let tun = shared.tun.as_raw_fd();
    let mut rx = RecvBatch::new();
    let mut dst = vec![0u8; PACKET_BUF];
    let mut gro = Gro::new();
    while !shared.stop.load(Ordering::Relaxed) {
        if !wait_readable(udp) {
            continue;
        }
        loop {
            let n = rx.recv(udp);
            if n == 0 {
                break;
            }
            let table = shared.table();
            for i in 0..n {
                let len = rx.msgs[i].msg_len as usize;
                let Some(src) = rx.source(i) else { continue };
                let size = rx.segment_size(i).unwrap_or(len).max(1);
                for datagram in rx.bufs[i][..len].chunks(size) {
                    receive_one(shared, &table, &mut gro, tun, datagram, src, &mut dst);
                }
            }
            gro.flush(tun);
            if n < RX_MSGS {
                break;
            }
        }
    }
}

/// Handles one received datagram: dispatch to its peer, decrypt, then the
/// inner packet goes to `gro` (or alone to the TUN); handshake answers and
/// packets queued during a handshake go back to `src`.
fn receive_one(
    shared: &Shared,
    table: &Table,
    gro: &mut Gro,
    tun: RawFd,
    datagram: &[u8],
    src: SocketAddrV4,
    dst: &mut [u8],
) {
    let pos = match Tunn::parse_incoming_packet(datagram) {
        Ok(Packet::HandshakeInit(p)) => parse_handshake_anon(&shared.secret, &shared.public, &p)
            .ok()
            .and_then(|h| table.by_key.get(&h.peer_static_public)),
        Ok(Packet::HandshakeResponse(p)) => table.by_index.get(&(p.receiver_idx >> 8)),
        Ok(Packet::PacketCookieReply(p)) => table.by_index.get(&(p.receiver_idx >> 8)),
        Ok(Packet::PacketData(p)) => table.by_index.get(&(p.receiver_idx >> 8)),
        Err(_) => None,
    };
    let Some(&pos) = pos else { return };
    let peer = &table.peers[pos].slot;
    let mut tunn = peer.tunn();
    let plen = match tunn.decapsulate(Some((*src.ip()).into()), datagram, &mut dst[VNET..]) {
        TunnResult::WriteToTunnelV4(packet, from) => {
            drop(tunn);
            peer.set_endpoint(src);
            if !table.allowed(pos, from) {
                return;
            }
            packet.len()
        }
        TunnResult::WriteToNetwork(packet) => {
            send_one(shared, packet, src);
            // Packets queued while the handshake ran go out now.
            let mut buf = [0u8; PACKET_BUF];
            while let TunnResult::WriteToNetwork(p) = tunn.decapsulate(None, &[], &mut buf) {
                send_one(shared, p, src);
            }
            peer.set_endpoint(src);
            return;
        }
        TunnResult::Done => {
            peer.set_endpoint(src);
            return;
        }
        TunnResult::Err(_) | TunnResult::WriteToTunnelV6(..) => return,
    };
    let packet = &dst[VNET..VNET + plen];
    if !gro.append(packet) {
        gro.flush(tun);
        if !gro.append(packet) {
            write_plain(tun, dst, plen);
        }
    }
}

/// Writes one packet (at `buf[VNET..VNET + len]`) to the TUN with an all-zero
/// `virtio_net_hdr` (no offload).
fn write_plain(tun: RawFd, buf: &mut [u8], len: usize) {
    buf[..VNET].fill(0);
    // SAFETY: writes VNET + `len` initialized bytes of `buf` to our TUN fd.
    let rc = unsafe { libc::write(tun, buf.as_ptr().cast(), VNET + len) };
    if rc < 0 {
        tracing::trace!(error = %io::Error::last_os_error(), "tun write");
    }
}

/// Receive-side coalescing (GRO) of consecutive TCP/IPv4 segments of one
/// flow into one super-packet, written to the TUN with a `virtio_net_hdr`
/// asking for TCPv4 segmentation, so the kernel's stack handles one packet
/// instead of up to ~45. Only plain in-order data segments (ACK, PSH on the
/// last) with DF set, no IP options, equal MSS and identical TCP options
/// join a run. The packets were authenticated by WireGuard; the super-packet
/// is handed over with a partial checksum (CHECKSUM_PARTIAL), as a NIC's
/// GRO would after verifying.
struct Gro {
    /// `virtio_net_hdr` + the run's packet so far.
    buf: Vec<u8>,
    /// Length of the run's packet (without the header); 0: no run.
    len: usize,
    /// Segments in the run.
    count: usize,
    /// Payload bytes of the first segment (the MSS of the run).
    mss: usize,
    /// IP + TCP header length.
    hl: usize,
    /// The next expected sequence number.
    next_seq: u32,
    /// Whether the last segment was shorter than the MSS or had PSH (run closed).
    closed: bool,
}

impl Gro {
    fn new() -> Gro {
        Gro {
            buf: vec![0; TUN_READ],
            len: 0,
            count: 0,
            mss: 0,
            hl: 0,
            next_seq: 0,
            closed: false,
        }
    }

    /// The header length and payload length of `p` if it may join a run.
    fn eligible(p: &[u8]) -> Option<(usize, usize)> {
        if p.len() < 40 || p[0] != 0x45 || p[9] != 6 {
            return None;
        }
        // DF set, not a fragment.
        if u16::from_be_bytes([p[6], p[7]]) != 0x4000 {
            return None;
        }
        let hl = 20 + usize::from(p[32] >> 4) * 4;
        // Flags: ACK, optionally PSH; nothing else.
        if hl < 40 || p.len() <= hl || p[33] & !0x08 != 0x10 {
            return None;
        }
        if usize::from(u16::from_be_bytes([p[2], p[3]])) != p.len() {
            return None;
        }
        Some((hl, p.len() - hl))
    }

    /// Adds `p` to the run; false if it cannot join (the caller flushes and
    /// retries once; a packet that cannot start a run is written alone).
    fn append(&mut self, p: &[u8]) -> bool {
        let Some((hl, payload)) = Gro::eligible(p) else {
            return false;
        };
        let seq = u32::from_be_bytes([p[24], p[25], p[26], p[27]]);
        let psh = p[33] & 0x08 != 0;
        if self.len == 0 {
            self.buf[VNET..VNET + p.len()].copy_from_slice(p);
            self.len = p.len();
            self.count = 1;
            self.mss = payload;
            self.hl = hl;
            self.next_seq = seq.wrapping_add(payload as u32);
            self.closed = psh;
            return true;
        }
        let run = &self.buf[VNET..VNET + self.hl];
        let same = !self.closed
            && hl == self.hl
            && payload <= self.mss
            && seq == self.next_seq
            && self.len + payload <= 65_535
            // TOS, TTL, protocol, addresses.
            && p[1] == run[1]
            && p[8..10] == run[8..10]
            && p[12..20] == run[12..20]
            // Ports, ack number, window, options.
            && p[20..24] == run[20..24]
            && p[28..32] == run[28..32]
            && p[34..36] == run[34..36]
            && p[40..hl] == run[40..hl];
        if !same {
            return false;
        }
        let at = VNET + self.len;
        self.buf[at..at + payload].copy_from_slice(&p[hl..]);
        self.len += payload;
        self.count += 1;
        self.next_seq = seq.wrapping_add(payload as u32);
        if psh {
            self.buf[VNET + 33] |= 0x08;
        }
        self.closed = psh || payload < self.mss;
        true
    }

    /// Writes the run to the TUN (as one super-packet if it has several
    /// segments) and starts over.
    fn flush(&mut self, tun: RawFd) {
        if self.len == 0 {
            return;
        }
        let len = self.len;
        if self.count == 1 {
            write_plain(tun, &mut self.buf, len);
        } else {
            let p = &mut self.buf[VNET..VNET + len];
            p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            p[10..12].fill(0);
            let ip_sum = csum_fold(csum_add(0, &p[..20]));
            p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
            // CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum.
            let pseudo = csum_add(0, &p[12..20]) + 6 + (len - 20) as u64;
            let partial = !csum_fold(pseudo);
            p[36..38].copy_from_slice(&partial.to_be_bytes());
            let hdr = &mut self.buf[..VNET];
            hdr[0] = VNET_F_NEEDS_CSUM;
            hdr[1] = VNET_GSO_TCPV4;
            hdr[2..4].copy_from_slice(&(self.hl as u16).to_le_bytes());
            hdr[4..6].copy_from_slice(&(self.mss as u16).to_le_bytes());
            hdr[6..8].copy_from_slice(&20u16.to_le_bytes());
            hdr[8..10].copy_from_slice(&16u16.to_le_bytes());
            // SAFETY: writes VNET + `len` initialized bytes of `buf` to our TUN fd.
            let rc = unsafe { libc::write(tun, self.buf.as_ptr().cast(), VNET + len) };
            if rc < 0 {
                tracing::trace!(error = %io::Error::last_os_error(), "tun write (gro)");
            }
        }
        self.len = 0;
        self.count = 0;
    }
}

/// Runs every peer's `update_timers` each [`TICK`]: handshake retries,
/// rekeying, keepalives, expiry of old sessions.
fn timer_loop(shared: &Shared) {
    let mut buf = [0u8; PACKET_BUF];
    while !shared.stop.load(Ordering::Relaxed) {
        std::thread::sleep(TICK);
        let table = shared.table();
        for Entry { slot: peer, .. } in &table.peers {
            let mut tunn = peer.tunn();
            match tunn.update_timers(&mut buf) {
                TunnResult::WriteToNetwork(p) => send_one(shared, p, peer.endpoint()),
                TunnResult::Err(WireGuardError::ConnectionExpired) | TunnResult::Done => {}
                TunnResult::Err(e) => {
                    tracing::debug!(iface = %shared.iface, error = ?e, "update_timers");
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCP/IPv4 super-packet from 10.0.0.1:1000 to 10.0.0.2:2000 with
    /// `len` payload bytes, flags PSH|ACK, checksum fields as garbage.
    fn super_packet(len: usize) -> Vec<u8> {
        let mut p = vec![0u8; 40 + len];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((40 + len) as u16).to_be_bytes());
        p[4..6].copy_from_slice(&0xfffeu16.to_be_bytes());
        p[6] = 0x40; // DF
        p[8] = 64;
        p[9] = 6;
        p[10..12].copy_from_slice(&[0xde, 0xad]);
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        p[20..22].copy_from_slice(&1000u16.to_be_bytes());
        p[22..24].copy_from_slice(&2000u16.to_be_bytes());
        p[24..28].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
        p[32] = 5 << 4;
        p[33] = 0x18;
        p[36..38].copy_from_slice(&[0xbe, 0xef]);
        for (i, b) in p[40..].iter_mut().enumerate() {
            *b = (i * 13 % 251) as u8;
        }
        p
    }

    #[test]
    fn super_packets_are_cut_into_valid_segments() {
        let p = super_packet(3000);
        let mut seg = vec![0u8; PACKET_BUF];
        let mut segs: Vec<Vec<u8>> = Vec::new();
        segment_tcp4(&p, 1380, &mut seg, |s| segs.push(s.to_vec()));
        assert_eq!(segs.len(), 3);
        let mut payload = Vec::new();
        for (k, s) in segs.iter().enumerate() {
            assert_eq!(usize::from(u16::from_be_bytes([s[2], s[3]])), s.len());
            assert_eq!(
                u16::from_be_bytes([s[4], s[5]]),
                0xfffeu16.wrapping_add(k as u16)
            );
            // A correct checksum makes the sum over the header fold to 0.
            assert_eq!(csum_fold(csum_add(0, &s[..20])), 0, "ip checksum of {k}");
            let mut acc = csum_add(0, &s[12..20]) + 6 + (s.len() - 20) as u64;
            acc = csum_add(acc, &s[20..]);
            assert_eq!(csum_fold(acc), 0, "tcp checksum of {k}");
            let seq = u32::from_be_bytes([s[24], s[25], s[26], s[27]]);
            assert_eq!(seq, 0xffff_fff0u32.wrapping_add(1380 * k as u32));
            let psh = s[33] & 0x08 != 0;
            assert_eq!(psh, k == 2, "PSH only on the last segment");
            payload.extend_from_slice(&s[40..]);
        }
        assert_eq!(payload, p[40..]);
    }

    /// Reads what was written to the write end of `pipe` so far (one write).
    fn read_pipe(fd: RawFd) -> Vec<u8> {
        let mut buf = vec![0u8; TUN_READ];
        // SAFETY: reads at most TUN_READ bytes into `buf` from our pipe.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), TUN_READ) };
        assert!(n > 0, "nothing written");
        buf.truncate(n as usize);
        buf
    }

    #[test]
    fn in_order_segments_are_coalesced_into_one_super_packet() {
        let p = super_packet(3000);
        let mut seg = vec![0u8; PACKET_BUF];
        let mut segs: Vec<Vec<u8>> = Vec::new();
        segment_tcp4(&p, 1380, &mut seg, |s| segs.push(s.to_vec()));
        let (read_end, write_end) = nix::unistd::pipe().expect("pipe");
        let (r, w) = (read_end.as_raw_fd(), write_end.as_raw_fd());
        let mut gro = Gro::new();
        for s in &segs {
            assert!(gro.append(s), "segment refused");
        }
        gro.flush(w);
        let out = read_pipe(r);
        let (hdr, sup) = out.split_at(VNET);
        assert_eq!(hdr[0], VNET_F_NEEDS_CSUM);
        assert_eq!(hdr[1], VNET_GSO_TCPV4);
        assert_eq!(u16::from_le_bytes([hdr[2], hdr[3]]), 40);
        assert_eq!(u16::from_le_bytes([hdr[4], hdr[5]]), 1380);
        assert_eq!(sup.len(), p.len());
        assert_eq!(usize::from(u16::from_be_bytes([sup[2], sup[3]])), p.len());
        assert_eq!(csum_fold(csum_add(0, &sup[..20])), 0, "ip checksum");
        assert_eq!(sup[24..28], p[24..28], "first sequence number");
        assert_eq!(sup[33], 0x18, "PSH of the last segment kept");
        assert_eq!(sup[40..], p[40..]);
        // The partial checksum plus the segment bytes gives a valid checksum.
        let mut full = sup.to_vec();
        finish_checksum(&mut full, 20, 16);
        let mut acc = csum_add(0, &full[12..20]) + 6 + (full.len() - 20) as u64;
        acc = csum_add(acc, &full[20..]);
        assert_eq!(csum_fold(acc), 0, "tcp checksum");

        // A gap in the sequence ends the run; a lone segment goes out plain.
        assert!(gro.append(&segs[0]));
        assert!(!gro.append(&segs[2]), "out-of-order segment joined");
        gro.flush(w);
        let out = read_pipe(r);
        assert_eq!(out[..VNET], [0; VNET]);
        assert_eq!(out[VNET..], segs[0][..]);
        drop(gro);
    }

    #[test]
    fn partial_checksums_are_completed() {
        let mut p = super_packet(101);
        // The kernel leaves the pseudo-header sum (not complemented) in the field.
        let pseudo = csum_add(0, &p[12..20]) + 6 + 141;
        let mut folded = pseudo;
        while folded >> 16 != 0 {
            folded = (folded & 0xffff) + (folded >> 16);
        }
        p[36..38].copy_from_slice(&(folded as u16).to_be_bytes());
        finish_checksum(&mut p, 20, 16);
        let mut acc = csum_add(0, &p[12..20]) + 6 + 141;
        acc = csum_add(acc, &p[20..]);
        assert_eq!(csum_fold(acc), 0);
    }
}
