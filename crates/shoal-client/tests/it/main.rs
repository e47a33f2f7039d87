//! Integration tests of shoal-client against real in-process controller members
//! (Raft stores over loopback gRPC, each serving the `Cluster` API) and a TCP proxy the
//! test controls.

mod cluster;
mod proxy;
mod watch;
