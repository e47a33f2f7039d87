//! Shoal's pod network: address management, the node bridge and pod veths,
//! the WireGuard overlay between nodes, service load-balancing in nftables
//! and the per-node DNS server.
#![warn(missing_docs)]

pub mod dns;
pub mod fastwg;
pub mod ipam;
pub mod link;
pub mod nft;
pub mod wg;
