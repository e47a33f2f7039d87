//! `shoal-agent`: the Shoal node agent. Also the per-container supervisor
//! and exec helper (`supervise`, `exec`: re-executed modes handled before
//! anything else starts), and `runtime`, a by-hand driver of the container
//! runtime for debugging.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod commands;

use clap::{Parser, Subcommand};

/// The Shoal node agent.
#[derive(Debug, Parser)]
#[command(
    name = "shoal-agent",
    version = shoal_observe::version::LINE,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    agent: shoal_agent::AgentArgs,
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
    // Flags may also come from `--config FILE` (YAML; the command line wins).
    let cli: Cli = shoal_flags::parse();
    let result = match cli.command {
        Some(Cmd::Runtime(a)) => commands::runtime::run(a),
        None => run_agent(cli.agent),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("shoal-agent: {e:#}");
            std::process::exit(1);
        }
    }
}

/// Runs the agent (or its `--cleanup`) with logs on stderr.
fn run_agent(args: shoal_agent::AgentArgs) -> anyhow::Result<i32> {
    shoal_observe::init_logging(&args.log, args.log_format)?;
    if args.cleanup {
        shoal_agent::cleanup(&args)?;
        return Ok(0);
    }
    let rt = tokio::runtime::Runtime::new()?;
    let result = rt.block_on(shoal_agent::run(args));
    // Dropping a runtime waits for every blocking task without limit; one stuck in the
    // kernel (a netlink call, a WireGuard device's threads) would hold the stop until a
    // supervisor (netns-cluster, systemd) SIGKILLs the whole session, containers'
    // supervisors included. Containers are meant to outlive the agent: leave promptly.
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    result?;
    Ok(0)
}
