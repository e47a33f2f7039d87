//! Shoal's own userspace WireGuard data path ("shoal engine"): a TUN device,
//! one UDP socket and per-peer [`boringtun::noise::Tunn`] state for the
//! crypto and the handshakes.
//!
//! Compared with `boringtun::device` it moves packets in batches: the
//! UDP -> TUN thread takes up to [`BATCH`] datagrams per `recvmmsg`, the
//! TUN -> UDP thread reads up to [`BATCH`] packets per wake-up from the
//! non-blocking TUN and hands all their ciphertexts to one `sendmmsg`. The
//! socket gets 4 MiB receive and send buffers (`SO_*BUFFORCE`). A third thread
//! ticks the WireGuard timers (handshake retries, rekeying, keepalives) every
//! 100 ms. Peers are replaced as a whole list, atomically (a new routing table
//! is swapped in); a peer whose key and keepalive did not change keeps its
//! session.
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
/// interface `iface` (created if missing), IPv4/IPv6 packets without a
/// protocol header.
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
        flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
        _pad: [0; 22],
    };
    req.name[..iface.len()].copy_from_slice(iface.as_bytes());
    // SAFETY: TUNSETIFF reads (and may write back the name into) an ifreq;
    // `req` is a correctly laid out, live 40-byte ifreq.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &raw mut req) };
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
        }
    }

    /// Sends the queued datagrams with `sendmmsg` (retrying the rest after a
    /// partial send) and empties the batch.
    fn flush(&mut self, shared: &Shared) {
        let n = self.lens.len();
        for i in 0..n {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: self.lens[i],
            };
            // SAFETY: msghdr is plain C data; all-zero is valid.
            let mut hdr: libc::msghdr = unsafe { zeroed() };
            hdr.msg_name = (&raw mut self.addrs[i]).cast();
            hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            hdr.msg_iov = &raw mut self.iovs[i];
            hdr.msg_iovlen = 1;
            self.msgs[i] = libc::mmsghdr {
                msg_hdr: hdr,
                msg_len: 0,
            };
        }
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

/// TUN -> UDP: reads a batch of packets, encrypts each for the peer its
/// destination routes to, sends all ciphertexts with one `sendmmsg`.
fn tun_to_udp(shared: &Shared) {
    let tun = shared.tun.as_raw_fd();
    let mut batch = SendBatch::new();
    let mut inner = vec![0u8; PACKET_BUF];
    while !shared.stop.load(Ordering::Relaxed) {
        if !wait_readable(tun) {
            continue;
        }
        let table = shared.table();
        for _ in 0..BATCH {
            // SAFETY: reads at most MAX_INNER bytes into `inner`.
            let n = unsafe { libc::read(tun, inner.as_mut_ptr().cast(), MAX_INNER) };
            if n <= 0 {
                break;
            }
            let packet = &inner[..n as usize];
            if packet.len() < 20 || packet[0] >> 4 != 4 {
                continue; // IPv6 and runts: not routed by this overlay.
            }
            let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
            let Some(peer) = table.route(dst) else {
                continue;
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
        }
        batch.flush(shared);
    }
}

/// A batch of incoming datagrams for one `recvmmsg`.
struct RecvBatch {
    bufs: Vec<[u8; PACKET_BUF]>,
    addrs: Vec<libc::sockaddr_in>,
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

impl RecvBatch {
    fn new() -> RecvBatch {
        // SAFETY: iovec, mmsghdr and sockaddr_in are plain C data; all-zero is valid.
        let (iov, msg, sin) = unsafe { (zeroed(), zeroed(), zeroed()) };
        RecvBatch {
            bufs: vec![[0; PACKET_BUF]; BATCH],
            addrs: vec![sin; BATCH],
            iovs: vec![iov; BATCH],
            msgs: vec![msg; BATCH],
        }
    }

    /// Receives up to [`BATCH`] datagrams without blocking; returns how many.
    fn recv(&mut self, fd: RawFd) -> usize {
        for i in 0..BATCH {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: PACKET_BUF,
            };
            // SAFETY: msghdr is plain C data; all-zero is valid.
            let mut hdr: libc::msghdr = unsafe { zeroed() };
            hdr.msg_name = (&raw mut self.addrs[i]).cast();
            hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            hdr.msg_iov = &raw mut self.iovs[i];
            hdr.msg_iovlen = 1;
            self.msgs[i] = libc::mmsghdr {
                msg_hdr: hdr,
                msg_len: 0,
            };
        }
        // SAFETY: all BATCH msgs are initialized and point into buffers that
        // outlive the call; a null timeout with MSG_DONTWAIT never blocks.
        let rc = unsafe {
            libc::recvmmsg(
                fd,
                self.msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
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
}

/// UDP -> TUN: receives a batch of datagrams, finds each one's peer,
/// decrypts it and writes the inner packets (from allowed sources) to the TUN.
fn udp_to_tun(shared: &Shared) {
    let udp = shared.udp.as_raw_fd();
    let tun = shared.tun.as_raw_fd();
    let mut rx = RecvBatch::new();
    let mut out = vec![[0u8; PACKET_BUF]; BATCH];
    let mut ready: Vec<(usize, usize)> = Vec::with_capacity(BATCH);
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
            for (i, dst) in out.iter_mut().enumerate().take(n) {
                let len = rx.msgs[i].msg_len as usize;
                let Some(src) = rx.source(i) else { continue };
                let datagram = &rx.bufs[i][..len];
                let pos = match Tunn::parse_incoming_packet(datagram) {
                    Ok(Packet::HandshakeInit(p)) => {
                        parse_handshake_anon(&shared.secret, &shared.public, &p)
                            .ok()
                            .and_then(|h| table.by_key.get(&h.peer_static_public))
                    }
                    Ok(Packet::HandshakeResponse(p)) => table.by_index.get(&(p.receiver_idx >> 8)),
                    Ok(Packet::PacketCookieReply(p)) => table.by_index.get(&(p.receiver_idx >> 8)),
                    Ok(Packet::PacketData(p)) => table.by_index.get(&(p.receiver_idx >> 8)),
                    Err(_) => None,
                };
                let Some(&pos) = pos else { continue };
                let peer = &table.peers[pos].slot;
                let mut tunn = peer.tunn();
                match tunn.decapsulate(Some((*src.ip()).into()), datagram, dst) {
                    TunnResult::WriteToTunnelV4(packet, from) => {
                        let plen = packet.len();
                        if table.allowed(pos, from) {
                            ready.push((i, plen));
                        }
                        peer.set_endpoint(src);
                    }
                    TunnResult::WriteToNetwork(packet) => {
                        send_one(shared, packet, src);
                        // Packets queued while the handshake ran go out now.
                        let mut buf = [0u8; PACKET_BUF];
                        while let TunnResult::WriteToNetwork(p) =
                            tunn.decapsulate(None, &[], &mut buf)
                        {
                            send_one(shared, p, src);
                        }
                        peer.set_endpoint(src);
                    }
                    TunnResult::Done => peer.set_endpoint(src),
                    TunnResult::Err(_) | TunnResult::WriteToTunnelV6(..) => {}
                }
            }
            for (i, plen) in ready.drain(..) {
                // SAFETY: writes `plen` initialized bytes of out[i] to our TUN fd.
                let rc = unsafe { libc::write(tun, out[i].as_ptr().cast(), plen) };
                if rc < 0 {
                    tracing::trace!(iface = %shared.iface, error = %io::Error::last_os_error(), "tun write");
                }
            }
            if n < BATCH {
                break;
            }
        }
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
