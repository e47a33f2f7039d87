//! Integration tests of shoal-store: openraft's storage suite and real 3-member clusters
//! over loopback gRPC.

mod cluster;
mod codec;
mod crash;
mod membership;
mod suite;
mod util;
