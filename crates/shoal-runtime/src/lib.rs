//! Container runtime: images, copy-on-write rootfs, namespaces, cgroups,
//! supervision, logs and exec. Must never depend on the controller or the proto.
#![warn(missing_docs)]

pub mod digest;
pub mod image;
pub mod testimage;
pub mod util;
