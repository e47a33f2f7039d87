//! Pure placement logic: (pending pods, nodes) -> bindings. No I/O; depends only
//! on shoal-api.
#![warn(missing_docs)]
