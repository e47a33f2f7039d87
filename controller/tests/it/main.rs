//! Integration tests of the controller: real `shoal-controller` processes on
//! loopback forming a Raft cluster, driven over the gRPC cluster API.

mod access;
mod cluster;
mod harness;
mod images;
mod jobs;
mod membership;
mod metrics;
mod namespaces;
mod network;
mod power_loss;
mod reconcile;
mod registry;
mod secrets;
