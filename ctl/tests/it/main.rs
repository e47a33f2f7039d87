//! End-to-end tests of the real `shoalctl` binary against a real `shoal-controller`
//! (one member, loopback port, temporary data directory).
#![allow(clippy::unwrap_used)]

mod agent;
mod apply;
mod batch;
mod commands;
mod config;
mod dashboard;
mod ha;
mod habits;
mod harness;
mod images;
mod membership;
mod services;
mod upstream;
mod verbs;
mod watch;
mod workloads;
