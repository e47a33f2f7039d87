//! `shoalctl`, the Shoal command line, as a library: `main.rs` only parses the arguments
//! and calls [`run`]. Talks to the controllers' `Cluster` gRPC service (shoal-proto) with
//! objects as JSON of the shoal-api types; never depends on controller or agent code.
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod cli;
pub mod client;
pub mod commands;
pub mod dashboard;
pub mod error;
pub mod kinds;
pub mod labels;
pub mod manifest;
pub mod merge;
pub mod output;
pub mod progress;
pub mod sources;

pub use cli::Cli;
pub use error::CtlError;

use client::{Settings, Timeouts};
use commands::Context;

/// Runs one `shoalctl` command to completion.
pub async fn run(cli: Cli) -> Result<(), CtlError> {
    if let Some(ns) = &cli.namespace {
        shoal_api::validation::check_dns1123_label(ns)
            .map_err(|m| CtlError::Usage(format!("--namespace {ns:?}: {m}")))?;
    }
    if let Some(s) = &cli.server {
        client::parse_servers(s)?;
    }
    let timeouts = Timeouts {
        connect: cli.connect_timeout,
        request: cli.request_timeout,
    };
    let settings = Settings {
        config: cli
            .config
            .clone()
            .unwrap_or_else(client::default_config_path),
        context: cli.context.clone(),
        server: cli.server.clone(),
        timeouts,
    };
    let mut ctx = Context::new(settings, cli.namespace);
    commands::dispatch(&mut ctx, cli.command).await
}
