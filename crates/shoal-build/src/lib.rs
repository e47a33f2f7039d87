//! Image builds from Dockerfiles (`shoalctl build`, `shoalctl commit`): the parts that do
//! not run containers.
//!
//! * [`dockerfile`]: the parser (every instruction with its line) and variable expansion;
//! * [`plan`]: which stages to build in which order, `FROM`/`COPY --from` resolution
//!   (cycles refused), cache keys;
//! * [`config`]: the image configuration changes of ENV, WORKDIR, CMD, … and manifests;
//! * [`ignore`], the rules of `.dockerignore`;
//! * [`layer`]: layer tarballs from an overlayfs upper directory, context files, a
//!   stage's files and local tarballs;
//! * [`cache`]: the bound on the build cache (least recently used images first).
//!
//! Crate rules: everything but [`layer`] is pure. The agent runs the steps (containers
//! through `shoal-runtime`, images through `shoal-image`); this crate must never depend
//! on the runtime, the agent, the controller or the proto, so that `shoalctl` can parse
//! and check a Dockerfile before it sends anything.
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod cache;
pub mod config;
pub mod dockerfile;
pub mod ignore;
pub mod layer;
pub mod plan;

/// What can go wrong in a build.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile is wrong at `line`.
    #[error("line {line}: {message}")]
    Dockerfile {
        /// 1-based line of the instruction.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// `--target` names no stage.
    #[error("{0}")]
    Target(String),
    /// A `commit --change` line is wrong.
    #[error("--change {0}")]
    Change(String),
}

impl BuildError {
    /// The message without the line.
    pub fn message(&self) -> String {
        match self {
            BuildError::Dockerfile { message, .. } => message.clone(),
            e => e.to_string(),
        }
    }
}
