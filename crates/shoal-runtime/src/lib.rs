//! Container runtime: copy-on-write rootfs, namespaces, cgroups,
//! supervision, logs and exec. Must never depend on the controller or the proto;
//! state files go through `shoal-files` (0600, atomic and durable).
//! Image content (import, digests, blob store, layer unpacking) lives in
//! `shoal-image`; [`image`], [`digest`] and [`testimage`] re-export it so
//! the agent's paths stay as they were.
//!
//! The entry point is [`Runtime`]; the binary that embeds it must call
//! [`helper::dispatch`] first thing in `main` (supervisor and exec modes).
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod attach;
pub mod caps;
pub mod cgroup;
pub mod devices;
pub mod exec;
pub mod helper;
pub mod init;
pub mod logs;
pub mod mounts;
pub mod restart;
pub mod runtime;
pub mod sandbox;
pub mod sealed_exe;
pub mod seccomp;
pub mod spec;
pub mod state;
pub mod supervisor;
pub mod user;
pub mod util;

pub use shoal_image as image;
pub use shoal_image::{digest, testimage};

pub use attach::AttachInput;
pub use cgroup::{CgroupLayout, Resources, Stats};
pub use exec::{ExecProcess, ExecSpec};
pub use image::{Image, ImageConfig, ImageRef, ImageStore};
pub use logs::{LogLine, LogOptions, LogReader, Stream};
pub use restart::{Backoff, RestartPolicy};
pub use runtime::{ContainerHandle, Runtime, RuntimeError};
pub use sandbox::PodSandbox;
pub use spec::{
    ContainerSpec, LogConfig, Mount, MountSource, PodSandboxConfig, RuntimeConfig, Security,
};
pub use state::{ContainerState, ContainerStatus, ExitInfo};
