//! `shoalctl`, the Shoal command line, as a library: `main.rs` only parses the arguments
//! and calls [`run`]. Talks to the controllers' `Cluster` gRPC service (shoal-proto) with
//! objects as JSON of the shoal-api types; never depends on controller or agent code.
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod cli;
pub mod client;
pub mod commands;
pub mod error;
pub mod kinds;
pub mod labels;
pub mod manifest;
pub mod output;
pub mod sources;

pub use cli::Cli;
pub use error::CtlError;

use client::{Timeouts, parse_servers};
use commands::Context;

/// Runs one `shoalctl` command to completion.
pub async fn run(cli: Cli) -> Result<(), CtlError> {
    let servers = parse_servers(&cli.server)?;
    if let Some(ns) = &cli.namespace {
        shoal_api::validation::check_dns1123_label(ns)
            .map_err(|m| CtlError::Usage(format!("--namespace {ns:?}: {m}")))?;
    }
    let timeouts = Timeouts {
        connect: cli.connect_timeout,
        request: cli.request_timeout,
    };
    let mut ctx = Context::new(servers, timeouts, cli.namespace);
    commands::dispatch(&mut ctx, cli.command).await
}
