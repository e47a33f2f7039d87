//! Integration tests of `shoal-lazyfs`: the real binary mounted on temporary directories
//! (root: it mounts with mount(2)), power cuts with SIGUSR1, every mount owned by a
//! `LazyMount` guard that unmounts and reaps it also when a test panics.

mod args;
mod power_cut;
