//! `shoal-lazyfs BACKING MOUNT`: see the library's documentation.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;

/// A FUSE passthrough of BACKING at MOUNT that keeps file data in memory until fsync.
/// SIGUSR1 drops every unsynced write and truncate (a power cut); SIGTERM or SIGINT
/// unmounts without flushing them.
#[derive(Debug, Parser)]
#[command(name = "shoal-lazyfs", version)]
struct Args {
    /// The directory that holds the files.
    backing: PathBuf,
    /// Where to mount it (an existing directory).
    mount: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    shoal_lazyfs::serve(&args.backing, &args.mount).with_context(|| {
        format!(
            "while serving {} at {}",
            args.backing.display(),
            args.mount.display()
        )
    })
}
