//! What every Shoal daemon shares to be observed: the metrics listener (Prometheus text
//! on `/metrics`, `/healthz`, `/readyz`), the process's own metrics from `/proc/self`,
//! the gRPC request metrics (a tower layer for tonic servers), log setup
//! (`--log`, `--log-format`) and the build's version (`--version`).
//!
//! The daemons' own metrics (Raft, reconcilers, pods) live in their crates
//! (`controller/src/metrics.rs`, `agent/src/metrics.rs`) and register into the one
//! [`Registry`] a daemon builds at start. See docs/observability.md for every metric.
//!
//! It depends on prometheus-client, hyper, tower and tracing only, and must never
//! depend on another Shoal crate: every daemon depends on it.
#![warn(missing_docs)]

mod error;
pub mod grpc;
pub mod listen;
pub mod log;
pub mod process;
pub mod version;

pub use error::ObserveError;
pub use listen::{Listen, ReadyCheck, ready_fn, serve};
pub use log::{LogFormat, init_logging};
pub use prometheus_client::registry::Registry;

/// A registry with the `shoal_` prefix, the process metrics of `/proc/self` and
/// `shoal_build_info` already in it.
pub fn new_registry() -> Registry {
    let mut r = Registry::with_prefix("shoal");
    process::register(&mut r, std::path::PathBuf::from("/proc/self"));
    version::register(&mut r);
    r
}

/// The registry's metrics in the Prometheus (OpenMetrics) text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; a metric that cannot be encoded is left out.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::warn!("encoding metrics: {e}");
    }
    out
}
