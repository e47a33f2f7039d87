//! The packet work behind the shoal engine's TUN offloads: TCP super-packets
//! from the TUN are cut into MSS-sized segments with their checksums
//! ([`segment_tcp4`]), partial checksums are completed ([`finish_checksum`]),
//! and received in-order segments of one flow are coalesced into one
//! super-packet for the TUN ([`Gro`]). Plain arithmetic on packet bytes;
//! only [`Gro::flush`] writes (to the TUN fd it is given).

use std::io;
use std::os::fd::RawFd;

use super::tun::{MAX_INNER, TUN_READ, VNET, VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, write_plain};

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
pub(super) fn finish_checksum(packet: &mut [u8], start: usize, offset: usize) {
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
pub(super) fn segment_tcp4(packet: &[u8], mss: usize, seg: &mut [u8], mut f: impl FnMut(&[u8])) {
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

/// Receive-side coalescing (GRO) of consecutive TCP/IPv4 segments of one
/// flow into one super-packet, written to the TUN with a `virtio_net_hdr`
/// asking for TCPv4 segmentation, so the kernel's stack handles one packet
/// instead of up to ~45. Only plain in-order data segments (ACK, PSH on the
/// last) with DF set, no IP options, equal MSS and identical TCP options
/// join a run. The packets were authenticated by WireGuard; the super-packet
/// is handed over with a partial checksum (CHECKSUM_PARTIAL), as a NIC's
/// GRO would after verifying.
pub(super) struct Gro {
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
    pub(super) fn new() -> Gro {
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
    pub(super) fn append(&mut self, p: &[u8]) -> bool {
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
    pub(super) fn flush(&mut self, tun: RawFd) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wg::shoal::tun::PACKET_BUF;
    use std::os::fd::AsRawFd as _;

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
