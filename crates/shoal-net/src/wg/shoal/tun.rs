//! The shoal engine's TUN interface: every packet carries a `virtio_net_hdr`
//! (`IFF_VNET_HDR`), and checksums and TCPv4 segmentation are offloaded to
//! us (`TUNSETOFFLOAD`), so one read can bring a TCP super-packet of up to
//! 64 KiB. Also the packet sizes the engine's buffers are made for.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Size of one packet buffer: an inner packet up to 1500 bytes plus the
/// 32-byte WireGuard data overhead, rounded up (handshakes need 148).
pub(super) const PACKET_BUF: usize = 2048;
/// Largest inner packet we read from the TUN (fits a buffer with overhead).
pub(super) const MAX_INNER: usize = PACKET_BUF - 64;
/// Size of the `virtio_net_hdr` in front of every TUN packet (IFF_VNET_HDR).
pub(super) const VNET: usize = 10;
/// Largest TUN read: a TSO super-packet of up to 64 KiB plus its header.
pub(super) const TUN_READ: usize = 65_536 + VNET;
/// `virtio_net_hdr.flags`: the checksum at csum_start + csum_offset is partial.
pub(super) const VNET_F_NEEDS_CSUM: u8 = 1;
/// `virtio_net_hdr.gso_type`: a TCP over IPv4 super-packet.
pub(super) const VNET_GSO_TCPV4: u8 = 1;
/// `virtio_net_hdr.gso_type` bit: ECN (CWR) set on the super-packet.
pub(super) const VNET_GSO_ECN: u8 = 0x80;
/// TUNSETOFFLOAD features: checksum offload and TCPv4 segmentation offload.
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;

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
pub(super) fn open(iface: &str) -> io::Result<OwnedFd> {
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

/// Writes one packet (at `buf[VNET..VNET + len]`) to the TUN with an all-zero
/// `virtio_net_hdr` (no offload).
pub(super) fn write_plain(tun: RawFd, buf: &mut [u8], len: usize) {
    buf[..VNET].fill(0);
    // SAFETY: writes VNET + `len` initialized bytes of `buf` to our TUN fd.
    let rc = unsafe { libc::write(tun, buf.as_ptr().cast(), VNET + len) };
    if rc < 0 {
        tracing::trace!(error = %io::Error::last_os_error(), "tun write");
    }
}
