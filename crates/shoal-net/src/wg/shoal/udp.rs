//! The shoal engine's UDP socket and its batching: 4 MiB buffers, up to
//! [`BATCH`] datagrams per `sendmmsg` with equal-sized datagrams to one
//! endpoint sent as one train (`UDP_SEGMENT`, UDP GSO), and up to
//! [`RX_MSGS`] messages per `recvmmsg` on a socket with `UDP_GRO`, each
//! message possibly a train of datagrams. IPv4 only.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use super::tun::PACKET_BUF;

/// Packets moved per `recvmmsg` / `sendmmsg` call (and TUN reads per wake-up).
pub(super) const BATCH: usize = 64;
/// Receive and send buffer of the UDP socket.
const UDP_BUFFER_BYTES: libc::c_int = 4 << 20;
/// Messages per `recvmmsg`; with UDP GRO each may hold many datagrams.
pub(super) const RX_MSGS: usize = 16;
/// Size of one receive buffer: a coalesced (GRO) message of up to 64 KiB.
const RX_BUF: usize = 65_536;

/// The engine's UDP socket, bound on all IPv4 addresses.
pub(super) struct Udp {
    socket: UdpSocket,
    /// Whether the kernel takes UDP_SEGMENT (UDP GSO) on the socket.
    gso: bool,
}

impl Udp {
    /// Binds UDP `port` (0: any free port) on all IPv4 addresses of the
    /// calling thread's network namespace, with 4 MiB buffers, and lets the
    /// kernel keep trains of datagrams together (UDP GRO) where it can.
    pub(super) fn bind(iface: &str, port: u16) -> io::Result<Udp> {
        let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))?;
        set_buffers(socket.as_raw_fd(), UDP_BUFFER_BYTES)?;
        let gso = probe_udp_gso(socket.as_raw_fd());
        // Let the kernel keep a train of datagrams from one sender together
        // (UDP GRO); `recvmmsg` then reports their size in a cmsg. Optional.
        let one: libc::c_int = 1;
        // SAFETY: setsockopt reads one c_int; `socket` is our socket.
        let gro_on = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_UDP,
                libc::UDP_GRO,
                (&raw const one).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        } == 0;
        tracing::debug!(
            iface,
            udp_gso = gso,
            udp_gro = gro_on,
            "shoal engine socket"
        );
        Ok(Udp { socket, gso })
    }

    /// The port the socket is bound to.
    pub(super) fn port(&self) -> io::Result<u16> {
        Ok(self.socket.local_addr()?.port())
    }

    /// Sends one datagram (handshakes, cookies, keepalives: the rare path).
    pub(super) fn send_to(&self, packet: &[u8], to: SocketAddrV4) -> io::Result<usize> {
        self.socket.send_to(packet, to)
    }
}

impl AsRawFd for Udp {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
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

/// A batch of outgoing datagrams for one `sendmmsg`.
pub(super) struct SendBatch {
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
    pub(super) fn new() -> SendBatch {
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

    /// The buffer the next datagram is to be written to.
    pub(super) fn next_buf(&mut self) -> &mut [u8] {
        let slot = self.lens.len();
        &mut self.bufs[slot]
    }

    /// Queues the `len` bytes written to [`SendBatch::next_buf`] as a datagram to `to`.
    pub(super) fn push(&mut self, len: usize, to: SocketAddrV4) {
        let slot = self.lens.len();
        self.addrs[slot] = sockaddr_v4(to);
        self.lens.push(len);
    }

    /// Whether the batch holds [`BATCH`] datagrams (flush before the next).
    pub(super) fn is_full(&self) -> bool {
        self.lens.len() == BATCH
    }

    /// Sends the queued datagrams with `sendmmsg` (retrying the rest after a
    /// partial send) and empties the batch. With UDP GSO, consecutive
    /// datagrams to one endpoint of one size (the last may be shorter) go
    /// out as one message with a UDP_SEGMENT cmsg: the kernel cuts them
    /// apart as late as possible (and the receiver may keep them together).
    pub(super) fn flush(&mut self, udp: &Udp, iface: &str) {
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
            let max = if udp.gso {
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
                    udp.as_raw_fd(),
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
                tracing::debug!(%iface, error = %e, "sendmmsg");
                done += 1;
            } else {
                done += rc as usize;
            }
        }
        self.lens.clear();
    }
}

/// A batch of incoming messages for one `recvmmsg`.
pub(super) struct RecvBatch {
    bufs: Vec<Vec<u8>>,
    addrs: Vec<libc::sockaddr_in>,
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    /// One control buffer per message (the UDP_GRO cmsg with the segment size).
    cmsgs: Vec<Cmsg>,
}

impl RecvBatch {
    pub(super) fn new() -> RecvBatch {
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
    pub(super) fn recv(&mut self, udp: &Udp) -> usize {
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
                udp.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                RX_MSGS as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 { 0 } else { rc as usize }
    }

    /// The source of message `i` of the last [`RecvBatch::recv`] and the
    /// datagrams it holds (several if UDP GRO coalesced them); `None` if the
    /// source is not IPv4.
    pub(super) fn message(&self, i: usize) -> Option<(SocketAddrV4, std::slice::Chunks<'_, u8>)> {
        let len = self.msgs[i].msg_len as usize;
        let src = self.source(i)?;
        let size = self.segment_size(i).unwrap_or(len).max(1);
        Some((src, self.bufs[i][..len].chunks(size)))
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
