//! The one test kit of Shoal's test suites (a dev-dependency only: no binary or library
//! of Shoal may depend on it).
//!
//! It owns what every suite needs and used to write for itself:
//!
//! - [`eventually`] / [`eventually_async`]: poll a condition with a deadline; on failure
//!   the panic names what was awaited and the last value seen.
//! - [`free_port`], [`bin`] / [`bin_dir`] / [`workspace_root`]: ports and the binaries
//!   under test.
//! - [`Proc`]: a process owned by a test from its spawn (killed by PID and reaped on
//!   drop), whose exit status and log tail go into every failure report; [`Watcher`]: a
//!   long-running command read line by line whose stderr and exit status are part of
//!   every failure message.
//! - [`ControllerCluster`]: real `shoal-controller` processes on loopback, formed with the
//!   one membership model (member 1 alone, the others with `--join` then `AddMember`).
//! - [`NetnsCluster`]: a `deploy/netns-cluster` of network-namespace nodes with a name
//!   unique to the process, owned (torn down on drop) from before its `up`.
//! - `image::busybox` (feature `image`): the busybox test image tarball.
//! - [`TestRegistry`]: Debian's `docker-registry` on a loopback port (htpasswd, HTTP or
//!   TLS), images pushed into it with skopeo.
//! - [`docker::Dockerd`]: a private `dockerd` (data root, exec root and socket in a
//!   temporary directory), stopped by PID and removed on drop.
//! - [`metrics`]: scraping a daemon's `/metrics`, `/healthz`, `/readyz` over plain HTTP
//!   and parsing the Prometheus text, checked against docs/observability.md.
//! - [`linearizability`]: a checker (Wing & Gong with Lowe's search, Porcupine-style)
//!   for histories of creates, updates, deletes and reads of objects.
//! - [`LazyMount`]: a `shoal-lazyfs` mount (a disk that drops unsynced data on a "power
//!   cut"), unmounted and reaped on drop; [`ControllerCluster::mount_lazyfs`] puts one
//!   under a member's data directory and [`ControllerCluster::cut_power`] cuts them all.
//! - [`unique_name`]: names for namespaces, links and clusters that do not clash with
//!   another test or another test process.
//!
//! It depends on shoal-proto (to form clusters) and, with the `image` feature, on
//! shoal-image's test image code; nothing else of Shoal.
#![warn(missing_docs)]

mod bins;
mod controller;
pub mod docker;
#[cfg(feature = "image")]
pub mod image;
mod lazyfs;
pub mod linearizability;
pub mod metrics;
mod names;
mod netns;
mod process;
pub mod registry;
mod wait;

pub use bins::{bin, bin_dir, workspace_root};
pub use controller::{
    ControllerCluster, Member, agent_channel, channel, channel_timeout, client_of, conf_for,
    create_token, grpc_client, register_conf,
};
pub use lazyfs::{LazyMount, is_mounted};
pub use names::unique_name;
pub use netns::NetnsCluster;
pub use process::{Proc, Watcher, log_tail};
pub use registry::TestRegistry;
pub use wait::{eventually, eventually_async};

/// A loopback TCP port nothing listens on right now (bound, then released: another
/// process may take it before the caller binds it, which the harnesses accept as rare).
///
/// Never the same port twice in one process: the kernel may hand a just-released port out
/// again, and a controller was once given one port for both its API and its registry
/// ("address already in use").
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind 127.0.0.1:0 for a free port");
        if GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(port)
        {
            return port;
        }
    }
}

/// Reports a measured duration as one line on stderr, `timing: NAME MS ms (budget B ms)`,
/// instead of asserting an upper bound: wall-clock bounds on a shared 2-core machine fail
/// for load, not for bugs. `scripts/bench-timings.sh` runs the tests that report timings,
/// collects these lines and compares them with their budgets (docs/benchmarks.md).
pub fn timing(name: &str, took: std::time::Duration, budget: std::time::Duration) {
    eprintln!(
        "timing: {name} {} ms (budget {} ms)",
        took.as_millis(),
        budget.as_millis()
    );
}
