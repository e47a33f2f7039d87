//! The Shoal node agent: registers its Node, heartbeats, watches the pods
//! bound to it and converges them through `shoal-runtime` (pull images from
//! the controllers, sandboxes, containers, probes, stop and clean up), writes
//! pod status and Events, and serves logs/exec/stats to the controllers.
//! Depends on shoal-api, shoal-proto and shoal-runtime (images through its
//! `shoal_runtime::image` re-export of shoal-image), and on shoal-observe
//! for metrics, health and logs; never on the controller or the store.
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod agent;
pub mod args;
pub mod build;
pub mod configcache;
pub mod events;
pub mod forward;
pub mod hooks;
pub mod identity;
pub mod metrics;
pub mod mirror;
pub mod naming;
pub mod netpol;
pub mod network;
pub mod node;
pub mod plan;
pub mod podconfig;
pub mod probe;
pub mod pull;
pub mod server;
pub mod spec;
pub mod status;
pub mod sysinfo;
pub mod volumes;

pub use agent::{Agent, cleanup, run};
pub use args::AgentArgs;
