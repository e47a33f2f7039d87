//! `shoal-agent`: the Shoal node agent. Also the per-container supervisor
//! and exec helper (`supervise`, `exec`: re-executed modes handled before
//! anything else starts), and `runtime`, a by-hand driver of the container
//! runtime for debugging.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod commands;

use clap::{Parser, Subcommand};

/// The Shoal node agent.
#[derive(Debug, Parser)]
#[command(name = "shoal-agent", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Drive the container runtime by hand (debugging; the cluster is the real interface).
    Runtime(commands::runtime::RuntimeArgs),
}

fn main() {
    // Supervisor and exec modes must run before any thread exists.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(code) = shoal_runtime::helper::dispatch(&args) {
        std::process::exit(code);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Runtime(a) => commands::runtime::run(a),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("shoal-agent: {e:#}");
            std::process::exit(1);
        }
    }
}
