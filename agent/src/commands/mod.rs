//! Subcommands of `shoal-agent`, one file each.
pub mod runtime;
