//! `shoal-controller`: parses arguments and runs the controller library.

use shoal_controller::{Args, run};

#[tokio::main]
async fn main() {
    // Flags may also come from `--config FILE` (YAML; the command line wins).
    let args: Args = shoal_flags::parse();
    if let Err(e) = shoal_controller::init_tracing(&args) {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    if let Err(e) = run(args).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
