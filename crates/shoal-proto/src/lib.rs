//! Generated gRPC contract of Shoal (`proto/shoal/v1`): the cluster API, the
//! Raft transport and the agent API. Owns no logic; depends on no crate of ours.
#![allow(missing_docs, clippy::all, clippy::pedantic, clippy::unwrap_used)]
#![allow(missing_debug_implementations)]

/// Messages and services of package `shoal.v1`.
pub mod v1 {
    tonic::include_proto!("shoal.v1");
}

/// Encoded file descriptor set, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/shoal_descriptor.bin"));

pub use v1::*;
