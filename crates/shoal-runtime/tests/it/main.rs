//! Integration tests of the container runtime. Kernel tests need root and
//! are `#[ignore]`d; run them with `cargo test -p shoal-runtime -- --include-ignored`.
#![allow(clippy::unwrap_used)]

mod attach;
mod cgroups;
mod common;
mod containers;
mod devices;
mod exec;
mod hardening;
mod logs;
mod pods;
mod supervision;
