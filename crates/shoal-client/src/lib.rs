//! The one client for the Shoal controllers, used by `shoalctl`, the agent and the
//! benchmarks.
//!
//! It owns:
//! - the endpoint list and its parsing ([`Endpoints`]), the timeouts and HTTP/2
//!   keep-alive ([`ClientConfig`]), and the one place a channel is built
//!   ([`ClientConfig::connect`]), always mutual TLS (shoal-pki's connector);
//! - the client configuration file, kubeconfig-shaped ([`file`]);
//! - fail-over to the next member and **one retry rule** ([`retry::classify`]) for every
//!   transport-level failure, for unary calls and for watch streams alike;
//! - **one list+watch loop**: a pure state machine ([`watcher::Machine`], states and
//!   inputs in, actions out, unit-tested without sockets) and a thin async driver
//!   ([`Watcher`]) that re-lists after "too old"/"lagged", resumes after a break and
//!   counts a failed open toward the same limit as a break of an open stream.
//!
//! Rules: this crate speaks only the gRPC contract (`shoal-proto`) and the resource
//! types (`shoal-api`). It must never depend on the store, the runtime, the network
//! code or any binary crate (controller, agent, ctl): those depend on it. It prints
//! nothing; user-facing wording stays with the callers (errors carry the address and
//! the gRPC status so that they can word it).
#![warn(missing_docs)]

mod client;
mod config;
mod error;
pub mod file;
pub mod join;
pub mod retry;
pub mod watcher;

pub use client::{Client, decode};
pub use config::{ClientConfig, DEFAULT_SERVER, Endpoints, KeepAlive, ServerAddr, Timeouts};
pub use error::{ClientError, connect_reason, one_line, unreachable};
pub use watcher::{EventKind, ListParams, Machine, WatchOutput, Watcher};
