//! The shoal engine ([`Engine::Shoal`](super::Engine::Shoal)): Shoal's own
//! userspace WireGuard data path, a TUN device, one UDP socket and per-peer
//! `boringtun::noise::Tunn` state for the crypto and the handshakes.
//!
//! Compared with boringtun's device it moves data in large pieces:
//!
//! - **TUN offloads** (`tun.rs`: `IFF_VNET_HDR`, `TUNSETOFFLOAD` with
//!   checksum and TCPv4 segmentation): the kernel hands us TCP super-packets
//!   of up to 64 KiB in one read; we cut them into MSS-sized segments and
//!   compute their checksums (`offload.rs`). On the way in, consecutive
//!   in-order segments of one TCP flow are coalesced (`Gro`) into one
//!   super-packet written with a `virtio_net_hdr`, so the kernel's stack sees
//!   one packet, not ~45.
//! - **UDP batching and offloads** (`udp.rs`): up to 64 ciphertexts per
//!   `sendmmsg`, equal-sized datagrams to one endpoint sent as one train
//!   with `UDP_SEGMENT` (UDP GSO); `recvmmsg` of up to 16 messages on a
//!   socket with `UDP_GRO`, each message possibly a train of datagrams.
//! - 4 MiB socket buffers (`SO_*BUFFORCE`).
//!
//! Threads (this file): TUN -> UDP (read, segment, encrypt, send), UDP -> TUN
//! (receive, decrypt, coalesce, write) and a timer thread that ticks the
//! WireGuard timers (handshake retries, rekeying, keepalives) every 100 ms.
//! Peers are replaced as a whole list, atomically (a new routing table is
//! swapped in); a peer whose key and keepalive did not change keeps its
//! session. Each peer's `Tunn` sits behind a mutex (its
//! `encapsulate`/`decapsulate` take `&mut self`), so one peer's crypto runs on
//! one core per direction.
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

mod offload;
mod tun;
mod udp;

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use ipnet::Ipv4Net;

use super::Peer;
use offload::{Gro, finish_checksum, segment_tcp4};
use tun::{MAX_INNER, PACKET_BUF, TUN_READ, VNET, VNET_F_NEEDS_CSUM, VNET_GSO_ECN, VNET_GSO_TCPV4};
use udp::{BATCH, RX_MSGS, RecvBatch, SendBatch, Udp};

/// How often the timer thread runs `update_timers`, and how long the I/O
/// threads wait in `poll` before checking for shutdown.
const TICK: Duration = Duration::from_millis(100);

/// Errors of the shoal engine; each names the interface.
#[derive(Debug, thiserror::Error)]
pub(super) enum ShoalEngineError {
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
    udp: Udp,
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

/// A running shoal engine device: TUN interface, UDP socket and three
/// threads. Dropping it stops the threads and removes the interface.
pub(super) struct Device {
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
    pub(super) fn new(
        iface: &str,
        secret: [u8; 32],
        listen_port: u16,
    ) -> Result<Device, ShoalEngineError> {
        let tun = tun::open(iface).map_err(|source| ShoalEngineError::Tun {
            iface: iface.to_string(),
            source,
        })?;
        let udp_err = |source| ShoalEngineError::Udp {
            iface: iface.to_string(),
            port: listen_port,
            source,
        };
        let udp = Udp::bind(iface, listen_port).map_err(udp_err)?;
        let port = udp.port().map_err(udp_err)?;
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
                .map_err(|source| ShoalEngineError::Thread {
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

    /// The UDP port the device listens on.
    pub(super) fn listen_port(&self) -> u16 {
        self.listen_port
    }

    /// Makes the peers exactly `peers`, atomically. A peer whose public key
    /// and keepalive are unchanged keeps its tunnel (sessions, counters); its
    /// endpoint is reset to the configured one if that changed.
    pub(super) fn set_peers(&self, peers: &[Peer]) -> Result<(), ShoalEngineError> {
        let mut endpoints = Vec::with_capacity(peers.len());
        for p in peers {
            match p.endpoint {
                SocketAddr::V4(a) => endpoints.push(a),
                SocketAddr::V6(_) => {
                    return Err(ShoalEngineError::Endpoint {
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
    pub(super) fn uapi_get_lines(&self) -> Vec<String> {
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
                tracing::warn!(iface = %self.shared.iface, "shoal engine thread panicked");
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

/// Sends one datagram (handshakes, cookies, keepalives: the rare path).
fn send_one(shared: &Shared, packet: &[u8], to: SocketAddrV4) {
    if let Err(e) = shared.udp.send_to(packet, to) {
        tracing::debug!(iface = %shared.iface, %to, error = %e, "udp send");
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
        batch.flush(&shared.udp, &shared.iface);
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
    let mut tunn = peer.tunn();
    match tunn.encapsulate(packet, batch.next_buf()) {
        TunnResult::WriteToNetwork(out) => {
            let len = out.len();
            batch.push(len, peer.endpoint());
        }
        TunnResult::Err(e) => {
            tracing::debug!(iface = %shared.iface, error = ?e, "encapsulate");
        }
        _ => {}
    }
    drop(tunn);
    if batch.is_full() {
        batch.flush(&shared.udp, &shared.iface);
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
            let n = rx.recv(&shared.udp);
            if n == 0 {
                break;
            }
            let table = shared.table();
            for i in 0..n {
                let Some((src, datagrams)) = rx.message(i) else {
                    continue;
                };
                for datagram in datagrams {
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
            tun::write_plain(tun, dst, plen);
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
