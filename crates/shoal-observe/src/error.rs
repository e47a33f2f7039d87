//! Errors of this crate.

/// What can go wrong setting up logs or the metrics listener.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// `--log` is no tracing filter.
    #[error(
        "--log {filter:?}: invalid filter: {reason} (expected e.g. info or shoal_store=debug,openraft=warn)"
    )]
    LogFilter {
        /// The filter given.
        filter: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A global logger was already installed.
    #[error("installing the logger: {0}")]
    LogInit(String),
    /// The listener's address could not be bound.
    #[error(
        "while binding {flag} {addr} (another process has the port? pick another, or none to turn it off): {source}"
    )]
    Bind {
        /// The flag that names the address.
        flag: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}
