//! What lives in a container's state directory: `config.json` (written once
//! by the runtime: everything the supervisor and exec need) and `state.json`
//! (rewritten atomically by the supervisor at every transition).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::cgroup::Cgroup;
use crate::spec::ContainerSpec;

/// File names inside a container directory.
pub mod files {
    /// The container plan.
    pub const CONFIG: &str = "config.json";
    /// The supervisor's view of the container.
    pub const STATE: &str = "state.json";
    /// Held (flock) by the supervisor for its whole life.
    pub const LOCK: &str = "supervisor.lock";
    /// Written by `stop`: the grace period in milliseconds.
    pub const STOP: &str = "stop";
    /// The default log file.
    pub const LOG: &str = "container.log";
    /// `SUPERVISOR_PID FD DEV INO` of the writing side of the main process' stdin (with
    /// `stdin` or `tty`), for `attach`.
    pub const STDIN: &str = "stdin.fd";
}

/// Everything needed to start (and exec into) the container, fixed at create time.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// The caller's spec.
    pub spec: ContainerSpec,
    /// Pod name.
    pub pod: String,
    /// Hostname.
    pub hostname: String,
    /// The pod's network namespace file.
    pub netns: PathBuf,
    /// The pod's `/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf`.
    pub etc_files: Vec<(String, PathBuf)>,
    /// Resolved bind mounts: (host source, container destination, read-only).
    pub binds: Vec<(PathBuf, PathBuf, bool)>,
    /// Image manifest digest.
    pub image_digest: String,
    /// Unpacked layer directories, bottom first.
    pub layer_dirs: Vec<PathBuf>,
    /// The process: argv.
    pub argv: Vec<String>,
    /// The process: environment.
    pub env: Vec<(String, String)>,
    /// The process: working directory.
    pub cwd: String,
    /// The process: user spec (resolved inside the rootfs).
    pub user: String,
    /// The container's cgroup.
    pub cgroup: Cgroup,
    /// Empty directory the overlay is mounted on (inside the container's
    /// mount namespace only, so all containers share it).
    pub rootfs_mountpoint: PathBuf,
    /// The log file.
    pub log_path: PathBuf,
}

/// How a run of the container ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// Exit code (128 + signal when killed by a signal).
    pub exit_code: i32,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
    /// `Completed`, `Error`, `OOMKilled` or `StartError`.
    pub reason: String,
    /// Details (e.g. why it could not start).
    pub message: String,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
}

/// The container's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    /// Being set up.
    Created,
    /// Its process runs.
    Running {
        /// Host pid of the container's PID 1.
        pid: i32,
        /// Start time.
        started_at: DateTime<Utc>,
    },
    /// Exited and waiting for the back-off delay before the next start.
    BackOff {
        /// When it will be started again.
        next_start: DateTime<Utc>,
    },
    /// Exited for good (no restart, stopped, or the supervisor is gone).
    Exited(ExitInfo),
}

/// The content of `state.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFile {
    /// The supervisor's pid.
    pub supervisor_pid: i32,
    /// Current state.
    pub state: ContainerState,
    /// Restarts so far.
    pub restart_count: u32,
    /// How the previous run ended.
    pub last_exit: Option<ExitInfo>,
}

impl StateFile {
    /// Reads `dir/state.json`.
    pub fn read(dir: &Path) -> io::Result<Self> {
        let data = fs::read(dir.join(files::STATE))?;
        serde_json::from_slice(&data).map_err(io::Error::other)
    }

    /// Writes `dir/state.json` atomically.
    pub fn write(&self, dir: &Path) -> io::Result<()> {
        let data = serde_json::to_vec(self).map_err(io::Error::other)?;
        crate::util::write_atomic(&dir.join(files::STATE), &data)
    }
}

/// What `status` and `list` report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStatus {
    /// Container id.
    pub id: String,
    /// Name within the pod.
    pub name: String,
    /// Pod name.
    pub pod: String,
    /// Image reference as asked.
    pub image: String,
    /// Current state.
    pub state: ContainerState,
    /// Restarts so far.
    pub restart_count: u32,
    /// How the previous run ended.
    pub last_exit: Option<ExitInfo>,
    /// Whether the supervisor process is alive.
    pub supervisor_alive: bool,
}

impl ContainerStatus {
    /// Whether the container process is running.
    pub fn is_running(&self) -> bool {
        matches!(self.state, ContainerState::Running { .. })
    }

    /// The exit information if it exited for good.
    pub fn exit(&self) -> Option<&ExitInfo> {
        match &self.state {
            ContainerState::Exited(e) => Some(e),
            _ => None,
        }
    }
}
