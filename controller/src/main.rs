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

/// jemalloc's options (its `malloc_conf`; the environment variable `_RJEM_MALLOC_CONF`
/// overrides them): one arena and a background thread that returns freed pages. With 20,000
/// pods and 1,000 nodes on a 2-core machine, followers held 110-117 MB after 20 s idle with
/// the defaults (an arena per 4 CPUs' worth of threads, purging only on allocation) and
/// 89-97 MB with these, at the same bind rate (docs/benchmarks.md "Controller memory").
/// Threads still allocate from their own caches, so one arena is not one lock per
/// allocation. A thin pointer to a C string, as jemalloc declares it.
#[cfg(not(feature = "system-allocator"))]
#[unsafe(export_name = "_rjem_malloc_conf")]
#[allow(non_upper_case_globals)]
pub static malloc_conf: &[u8; 33] = b"narenas:1,background_thread:true\0";

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
