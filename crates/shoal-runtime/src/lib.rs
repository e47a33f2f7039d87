//! Container runtime: images, copy-on-write rootfs, namespaces, cgroups,
//! supervision, logs and exec. Must never depend on the controller or the proto.
#![warn(missing_docs)]

pub mod cgroup;
pub mod digest;
pub mod image;
pub mod logs;
pub mod restart;
pub mod testimage;
pub mod user;
pub mod util;
