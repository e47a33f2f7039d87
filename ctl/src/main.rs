//! `shoalctl`: parses the command line and runs the library; prints `error: …` and exits
//! non-zero on failure.

use clap::Parser;
use shoalctl::{Cli, CtlError, run};

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => {}
        // `exec`: the remote command's exit code, already explained by its own output.
        Err(CtlError::RemoteExit(code)) => std::process::exit(code),
        Err(CtlError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            std::process::exit(141)
        }
        Err(CtlError::Differences) => std::process::exit(1),
        Err(CtlError::DiffFailed(e)) => {
            print_error(&e);
            std::process::exit(2);
        }
        Err(e) => {
            print_error(&e);
            std::process::exit(1);
        }
    }
}

/// `error: …`; manifest problems (one per line) get one `error:` line each.
fn print_error(e: &CtlError) {
    for line in e.to_string().lines() {
        eprintln!("error: {line}");
    }
}
