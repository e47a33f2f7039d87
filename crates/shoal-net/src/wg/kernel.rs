//! The kernel engine: kernel WireGuard, configured over generic netlink (the
//! kernel's `wireguard` family) as `wg` does it, without running the `wg` tool.
//!
//! Why `netlink-packet-wireguard` + `genetlink` and not `wireguard-control`:
//! these share `netlink-packet-core` 0.9 with the `rtnetlink` stack we already
//! use (one netlink message layer, no second copy of it), are MIT licensed
//! (wireguard-control is LGPL, awkward for a static binary), and give access
//! to the per-peer flags we need for in-place updates.
//!
//! Peer updates keep sessions: [`plan_peers`] removes only the peers that
//! went away (`REMOVE_ME`) and sends the wanted ones with
//! `REPLACE_ALLOWEDIPS`, which the kernel applies to an existing peer in
//! place (keys, session and counters stay), like `wg syncconf`.
//!
//! Every function acts in the network namespace of the calling thread.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt as _;
use ipnet::Ipv4Net;
use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_generic::GenlMessage;
use netlink_packet_wireguard::{
    WireguardAddressFamily, WireguardAllowedIp, WireguardAllowedIpAttr, WireguardAttribute,
    WireguardCmd, WireguardMessage, WireguardPeer, WireguardPeerAttribute, WireguardPeerFlags,
};

use super::{DeviceState, Peer, PeerState};

/// The netlink peer list that turns a device with peers `current` into one
/// with exactly `wanted`: removals first, then every wanted peer with its
/// endpoint, keepalive (0 turns it off) and allowed IPs (replaced).
pub(super) fn plan_peers(current: &[[u8; 32]], wanted: &[Peer]) -> Vec<WireguardPeer> {
    let keep: BTreeSet<[u8; 32]> = wanted.iter().map(|p| p.public_key).collect();
    let mut out: Vec<WireguardPeer> = current
        .iter()
        .filter(|k| !keep.contains(*k))
        .map(|k| {
            WireguardPeer(vec![
                WireguardPeerAttribute::PublicKey(*k),
                WireguardPeerAttribute::Flags(WireguardPeerFlags::RemoveMe),
            ])
        })
        .collect();
    for p in wanted {
        let ips = p
            .allowed_ips
            .iter()
            .map(|net| {
                WireguardAllowedIp(vec![
                    WireguardAllowedIpAttr::Family(WireguardAddressFamily::Ipv4),
                    WireguardAllowedIpAttr::IpAddr(IpAddr::V4(net.network())),
                    WireguardAllowedIpAttr::Cidr(net.prefix_len()),
                ])
            })
            .collect();
        out.push(WireguardPeer(vec![
            WireguardPeerAttribute::PublicKey(p.public_key),
            WireguardPeerAttribute::Flags(WireguardPeerFlags::ReplaceAllowedIps),
            WireguardPeerAttribute::Endpoint(p.endpoint),
            WireguardPeerAttribute::PersistentKeepalive(p.keepalive.unwrap_or(0)),
            WireguardPeerAttribute::AllowedIps(ips),
        ]));
    }
    out
}

/// Sets the private key and listen port of `iface`.
pub(super) fn set_key(iface: &str, private_key: [u8; 32], listen_port: u16) -> Result<(), String> {
    set(
        iface,
        vec![
            WireguardAttribute::PrivateKey(private_key),
            WireguardAttribute::ListenPort(listen_port),
        ],
    )
}

/// Makes the peers of `iface` exactly `wanted`, keeping the sessions of
/// peers that stay (see [`plan_peers`]).
pub(super) fn set_peers(iface: &str, wanted: &[Peer]) -> Result<(), String> {
    let current: Vec<[u8; 32]> = get(iface)?.peers.iter().map(|p| p.public_key).collect();
    let peers = plan_peers(&current, wanted);
    if peers.is_empty() {
        return Ok(());
    }
    set(iface, vec![WireguardAttribute::Peers(peers)])
}

/// Reads the device: listen port and peers (in the kernel's order, merged
/// over the dump's messages).
pub(super) fn get(iface: &str) -> Result<DeviceState, String> {
    let replies = request(
        iface,
        WireguardCmd::GetDevice,
        NLM_F_REQUEST | NLM_F_DUMP,
        vec![WireguardAttribute::IfName(iface.to_string())],
    )?;
    let now = SystemTime::now();
    let mut state = DeviceState::default();
    for msg in replies {
        for attr in msg.attributes {
            match attr {
                WireguardAttribute::ListenPort(p) => state.listen_port = p,
                WireguardAttribute::Peers(peers) => {
                    for p in peers {
                        merge_peer(&mut state.peers, p, now);
                    }
                }
                _ => {}
            }
        }
    }
    Ok(state)
}

/// Adds one peer of a dump; a peer continued in the next message (its
/// allowed IPs did not fit) has the same key and extends the last one.
fn merge_peer(peers: &mut Vec<PeerState>, p: WireguardPeer, now: SystemTime) {
    let mut s = PeerState {
        public_key: [0; 32],
        endpoint: None,
        allowed_ips: Vec::new(),
        last_handshake: None,
        rx_bytes: 0,
        tx_bytes: 0,
    };
    for a in p.0 {
        match a {
            WireguardPeerAttribute::PublicKey(k) => s.public_key = k,
            WireguardPeerAttribute::Endpoint(e) => s.endpoint = Some(e),
            WireguardPeerAttribute::RxBytes(b) => s.rx_bytes = b,
            WireguardPeerAttribute::TxBytes(b) => s.tx_bytes = b,
            WireguardPeerAttribute::LastHandshake(t) if t.seconds > 0 => {
                let at = UNIX_EPOCH
                    + Duration::from_secs(t.seconds as u64)
                    + Duration::from_nanos(t.nano_seconds.max(0) as u64);
                s.last_handshake = Some(now.duration_since(at).unwrap_or_default());
            }
            WireguardPeerAttribute::AllowedIps(ips) => {
                for ip in ips {
                    let (mut addr, mut cidr) = (None, None);
                    for x in ip.0 {
                        match x {
                            WireguardAllowedIpAttr::IpAddr(IpAddr::V4(a)) => addr = Some(a),
                            WireguardAllowedIpAttr::Cidr(c) => cidr = Some(c),
                            _ => {}
                        }
                    }
                    if let (Some(a), Some(c)) = (addr, cidr)
                        && let Ok(net) = Ipv4Net::new(a, c)
                    {
                        s.allowed_ips.push(net);
                    }
                }
            }
            _ => {}
        }
    }
    match peers.last_mut() {
        Some(last) if last.public_key == s.public_key => last.allowed_ips.extend(s.allowed_ips),
        _ => peers.push(s),
    }
}

fn set(iface: &str, mut attributes: Vec<WireguardAttribute>) -> Result<(), String> {
    attributes.insert(0, WireguardAttribute::IfName(iface.to_string()));
    request(
        iface,
        WireguardCmd::SetDevice,
        NLM_F_REQUEST | NLM_F_ACK,
        attributes,
    )
    .map(drop)
}

/// One request on a fresh generic netlink socket (created in the calling
/// thread's network namespace); returns the reply messages, fails on the
/// first netlink error.
fn request(
    iface: &str,
    cmd: WireguardCmd,
    flags: u16,
    attributes: Vec<WireguardAttribute>,
) -> Result<Vec<WireguardMessage>, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let (conn, mut handle, _) = genetlink::new_connection().map_err(|e| e.to_string())?;
        let task = tokio::spawn(conn);
        let mut msg = NetlinkMessage::from(GenlMessage::from_payload(WireguardMessage {
            cmd,
            attributes,
        }));
        msg.header.flags = flags;
        let result = async {
            let mut replies = handle
                .request(msg)
                .await
                .map_err(|e| format!("wireguard netlink family: {e}"))?;
            let mut out = Vec::new();
            while let Some(reply) = replies.next().await {
                let reply = reply.map_err(|e| e.to_string())?;
                match reply.payload {
                    NetlinkPayload::InnerMessage(genl) => out.push(genl.payload),
                    NetlinkPayload::Error(e) if e.code.is_some() => {
                        return Err(format!("{iface}: {}", e.to_io()));
                    }
                    _ => {}
                }
            }
            Ok(out)
        }
        .await;
        task.abort();
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn peer(k: u8, net: &str) -> Peer {
        Peer {
            public_key: [k; 32],
            endpoint: SocketAddr::from(([192, 0, 2, k], 51820)),
            allowed_ips: vec![net.parse().unwrap()],
            keepalive: None,
        }
    }

    #[test]
    fn only_departed_peers_are_removed_and_the_rest_updated_in_place() {
        let plan = plan_peers(
            &[[1; 32], [2; 32]],
            &[peer(2, "10.244.2.0/24"), peer(3, "10.244.3.0/24")],
        );
        assert_eq!(plan.len(), 3, "{plan:?}");
        assert_eq!(
            plan[0].0,
            vec![
                WireguardPeerAttribute::PublicKey([1; 32]),
                WireguardPeerAttribute::Flags(WireguardPeerFlags::RemoveMe)
            ]
        );
        for (p, k) in plan[1..].iter().zip([2u8, 3]) {
            assert_eq!(p.0[0], WireguardPeerAttribute::PublicKey([k; 32]));
            assert_eq!(
                p.0[1],
                WireguardPeerAttribute::Flags(WireguardPeerFlags::ReplaceAllowedIps),
                "never REMOVE_ME/re-add for a peer that stays: its session would drop"
            );
            assert!(p.0.contains(&WireguardPeerAttribute::PersistentKeepalive(0)));
        }
        assert!(plan_peers(&[], &[]).is_empty());
    }

    #[test]
    fn a_peer_continued_over_two_dump_messages_is_merged() {
        let part = |net: [u8; 4]| {
            WireguardPeer(vec![
                WireguardPeerAttribute::PublicKey([7; 32]),
                WireguardPeerAttribute::AllowedIps(vec![WireguardAllowedIp(vec![
                    WireguardAllowedIpAttr::Family(WireguardAddressFamily::Ipv4),
                    WireguardAllowedIpAttr::IpAddr(IpAddr::from(net)),
                    WireguardAllowedIpAttr::Cidr(24),
                ])]),
            ])
        };
        let mut peers = Vec::new();
        merge_peer(&mut peers, part([10, 244, 1, 0]), SystemTime::now());
        merge_peer(&mut peers, part([10, 244, 2, 0]), SystemTime::now());
        assert_eq!(peers.len(), 1);
        assert_eq!(
            peers[0].allowed_ips,
            vec![
                "10.244.1.0/24".parse::<Ipv4Net>().unwrap(),
                "10.244.2.0/24".parse().unwrap()
            ]
        );
        assert_eq!(peers[0].last_handshake, None);
    }
}
