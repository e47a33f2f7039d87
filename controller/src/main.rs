//! `shoal-controller`: parses arguments and runs the controller library.

use clap::Parser;
use shoal_controller::{Args, run};

#[tokio::main]
async fn main() {
    let args = Args::parse();
    shoal_controller::init_tracing(&args.log);
    if let Err(e) = run(args).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
