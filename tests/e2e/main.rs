//! End-to-end tests: real `shoal-controller`, `shoal-agent` and `shoalctl`
//! binaries on a `deploy/netns-cluster` whose nodes are network namespaces.
//! They need root; build the binaries first (`cargo build --workspace`).

mod build;
mod comeback;
mod daemonset;
mod faults;
mod harness;
mod install;
mod network;
mod network_policy;
mod pod_fields;
mod statefulset;
mod workload_api;
mod workloads;
