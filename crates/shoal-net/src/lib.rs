//! Shoal's pod network: address management, the node bridge and pod veths,
//! the WireGuard overlay between nodes, service load-balancing and network policy in
//! nftables
//! and the per-node DNS server. Of our crates it uses only `shoal-files` (state on
//! disk: 0700 directories, the WireGuard key and IPAM records 0600, written whole).
#![warn(missing_docs)]

pub mod dns;
pub mod ipam;
pub mod link;
pub mod netpol;
pub mod nft;
pub mod wg;
