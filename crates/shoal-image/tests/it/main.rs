//! Integration tests of the image store: real `docker save` and OCI
//! tarballs, a set of malicious images (`malicious`), and pulls from a real
//! registry (`registry`). Tests that make
//! device nodes or change owners need root and are `#[ignore]`d; run them
//! with `cargo test -p shoal-image -- --include-ignored`.
#![allow(clippy::unwrap_used)]

mod images;
mod malicious;
mod registry;
