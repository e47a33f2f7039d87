//! `shoal-controller`: parses arguments and runs the controller library.

use shoal_controller::{Args, run};

/// jemalloc rather than glibc's malloc: under churn glibc's per-thread arenas kept the peak
/// of every snapshot build resident, so the controller grew step by step
/// (docs/reliability.md); jemalloc returns freed pages to the system after a few seconds.
/// The `system-allocator` feature leaves glibc's malloc in place for heap profilers
/// (docs/benchmarks.md "Controller memory").
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
