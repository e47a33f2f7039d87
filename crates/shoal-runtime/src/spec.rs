//! What a caller asks for: runtime configuration, pod sandboxes and
//! containers, plus the pure rules that turn an image config and a container
//! spec into the process to run.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cgroup::{CgroupLayout, Resources};
use crate::image::ImageConfig;
use crate::restart::{Backoff, RestartPolicy};

/// Default `PATH` when neither the image nor the spec sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How the runtime is set up on this node.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Root of images, pods and containers (see docs/runtime.md).
    pub data_dir: PathBuf,
    /// cgroup layout; `None` detects it from `/proc/self/mountinfo`.
    pub cgroup_layout: Option<CgroupLayout>,
    /// Parent cgroup (relative to each hierarchy root) of all containers.
    pub cgroup_parent: String,
    /// The binary re-executed as `EXE supervise DIR` and `EXE exec DIR SPEC`
    /// (the agent itself).
    pub supervisor_exe: PathBuf,
    /// Limits on what one image may unpack to (see `shoal_image::limits`).
    pub image_limits: shoal_image::limits::Limits,
}

impl RuntimeConfig {
    /// A configuration with auto-detected cgroups under `shoal/`.
    pub fn new(data_dir: impl Into<PathBuf>, supervisor_exe: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            cgroup_layout: None,
            cgroup_parent: "shoal".into(),
            supervisor_exe: supervisor_exe.into(),
            image_limits: shoal_image::limits::Limits::default(),
        }
    }
}

/// A pod's shared environment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodSandboxConfig {
    /// Unique pod name (also the default hostname).
    pub name: String,
    /// Hostname of the pod's containers (default: `name`).
    pub hostname: Option<String>,
    /// An existing network namespace to use (e.g. prepared by the network
    /// code); `None` creates one with loopback up.
    pub netns: Option<PathBuf>,
    /// Name servers for `/etc/resolv.conf` (default: the host's file).
    pub dns_servers: Vec<String>,
    /// Search domains for `/etc/resolv.conf`.
    pub dns_search: Vec<String>,
    /// `options` for `/etc/resolv.conf` (e.g. `ndots:5`).
    #[serde(default)]
    pub dns_options: Vec<String>,
    /// Extra `/etc/hosts` entries: (address, names).
    pub hosts: Vec<(String, Vec<String>)>,
}

/// Where a volume mount comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountSource {
    /// The pod's emptyDir volume of that name (shared by its containers,
    /// removed with the pod).
    EmptyDir(String),
    /// A host directory or file.
    HostPath(PathBuf),
}

/// A bind mount into the container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Source.
    pub source: MountSource,
    /// Absolute path in the container.
    pub destination: PathBuf,
    /// Mount read-only.
    pub read_only: bool,
}

/// Log file settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogConfig {
    /// Rotate when the file would exceed this size.
    pub max_bytes: u64,
    /// Rotated files kept.
    pub max_files: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            max_bytes: 10 << 20,
            max_files: 3,
        }
    }
}

/// A container to run in a pod sandbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Unique id (`[A-Za-z0-9_.-]`, used in paths and cgroup names).
    pub id: String,
    /// The container's name within its pod.
    pub name: String,
    /// Image reference (`busybox`, `busybox:1`, `sha256:…`).
    pub image: String,
    /// Replaces the image's Entrypoint (Kubernetes `command`).
    pub command: Vec<String>,
    /// Replaces the image's Cmd (Kubernetes `args`).
    pub args: Vec<String>,
    /// Extra environment, overriding the image's.
    pub env: Vec<(String, String)>,
    /// Working directory (default: the image's, then `/`).
    pub working_dir: Option<String>,
    /// User (default: the image's, then root).
    pub user: Option<String>,
    /// Volume mounts.
    pub mounts: Vec<Mount>,
    /// cgroup limits.
    pub resources: Resources,
    /// Restart policy.
    pub restart_policy: RestartPolicy,
    /// Restart back-off.
    pub backoff: Backoff,
    /// Time between SIGTERM and SIGKILL when stopping.
    pub grace_period: Duration,
    /// Log file (default: `containers/<id>/container.log`).
    pub log_path: Option<PathBuf>,
    /// Log rotation.
    pub log: LogConfig,
    /// Seccomp and capabilities (`securityContext`); default: the filter
    /// on and the default capability set.
    #[serde(default)]
    pub security: Security,
    /// Give the process a stdin (a pipe the supervisor holds; `attach` writes to it).
    #[serde(default)]
    pub stdin: bool,
    /// Run the process on a pty (stdin, stdout and stderr; output goes to the log as
    /// stdout).
    #[serde(default)]
    pub tty: bool,
}

/// A container's seccomp filter and capabilities.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Security {
    /// Run without the seccomp filter (`seccompProfile.type: Unconfined`).
    #[serde(default)]
    pub seccomp_unconfined: bool,
    /// Capability numbers added to the default set.
    #[serde(default)]
    pub cap_add: Vec<u32>,
    /// Capability numbers removed (after adding).
    #[serde(default)]
    pub cap_drop: Vec<u32>,
    /// Refuse to run as uid 0 (`runAsNonRoot`): the start fails with
    /// [`crate::RuntimeError::Config`] when the user is root or a name (which cannot be
    /// checked before the rootfs exists, as in Kubernetes).
    #[serde(default)]
    pub run_as_non_root: bool,
    /// Mount the root file system read-only (volumes and `/etc` files stay as they are).
    #[serde(default)]
    pub read_only_rootfs: bool,
    /// Supplementary groups added to the user's (`supplementalGroups`, `fsGroup`).
    #[serde(default)]
    pub supplemental_groups: Vec<u32>,
    /// The group that owns the pod's emptyDir volumes (created setgid, group-writable).
    #[serde(default)]
    pub fs_group: Option<u32>,
    /// `privileged`: every capability, no seccomp filter and no `no_new_privs`, every
    /// host device (bound into `/dev`, allowed by the device cgroup), `/sys` and the
    /// cgroup mounts writable, nothing in `/proc` masked. Overrides the fields above
    /// that confine (`seccomp_unconfined`, `cap_add`, `cap_drop`).
    #[serde(default)]
    pub privileged: bool,
}

/// Whether the user spec `user` (`uid`, `uid:gid`, `name`, empty for root) may run
/// with `runAsNonRoot`: the kubelet's rule, so the same manifests fail the same way.
pub fn check_non_root(user: &str) -> Result<(), String> {
    let uid = user.split(':').next().unwrap_or("").trim();
    match uid.parse::<u32>() {
        Ok(0) => Err("container has runAsNonRoot and image will run as root (uid 0)".into()),
        Ok(_) => Ok(()),
        Err(_) if uid.is_empty() => {
            Err("container has runAsNonRoot and image will run as root (no user set)".into())
        }
        Err(_) => Err(format!(
            "container has runAsNonRoot and image has non-numeric user ({uid}), cannot verify user is non-root"
        )),
    }
}

impl Security {
    /// The capability mask of a root process: the default set, plus
    /// `cap_add`, minus `cap_drop` (numbers above 63 are ignored); every capability the
    /// kernel knows when privileged.
    pub fn cap_mask(&self) -> u64 {
        if self.privileged {
            return crate::caps::all_mask(crate::caps::last_cap());
        }
        let bits = |v: &[u32]| {
            v.iter()
                .filter(|n| **n < 64)
                .fold(0u64, |m, n| m | (1u64 << n))
        };
        (crate::caps::default_mask() | bits(&self.cap_add)) & !bits(&self.cap_drop)
    }
}

impl ContainerSpec {
    /// A spec with defaults: restart Never, 10 s grace, no limits.
    pub fn new(id: impl Into<String>, image: impl Into<String>) -> Self {
        let id = id.into();
        Self {
            name: id.clone(),
            id,
            image: image.into(),
            command: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            working_dir: None,
            user: None,
            mounts: Vec::new(),
            resources: Resources::default(),
            restart_policy: RestartPolicy::Never,
            backoff: Backoff::default(),
            grace_period: Duration::from_secs(10),
            log_path: None,
            log: LogConfig::default(),
            security: Security::default(),
            stdin: false,
            tty: false,
        }
    }
}

/// The argv: `command` replaces Entrypoint (and drops Cmd unless `args` is
/// given), `args` replaces Cmd — Kubernetes' rules.
pub fn resolve_argv(image: &ImageConfig, command: &[String], args: &[String]) -> Vec<String> {
    match (command.is_empty(), args.is_empty()) {
        (false, false) => command.iter().chain(args).cloned().collect(),
        (false, true) => command.to_vec(),
        (true, false) => image.entrypoint.iter().chain(args).cloned().collect(),
        (true, true) => image.entrypoint.iter().chain(&image.cmd).cloned().collect(),
    }
}

/// The environment: image `Env`, then the spec's, then `HOSTNAME`, and
/// `PATH`/`HOME` defaults. Later entries win; order of first appearance kept.
pub fn resolve_env(
    image: &ImageConfig,
    extra: &[(String, String)],
    hostname: &str,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| match out.iter_mut().find(|(ok, _)| ok == k) {
        Some(e) => e.1 = v.to_string(),
        None => out.push((k.to_string(), v.to_string())),
    };
    set("PATH", DEFAULT_PATH);
    for kv in &image.env {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        set(k, v);
    }
    for (k, v) in extra {
        set(k, v);
    }
    set("HOSTNAME", hostname);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_adds_then_drops_capabilities() {
        let def = Security::default();
        assert_eq!(def.cap_mask(), crate::caps::default_mask());
        let s = Security {
            cap_add: vec![12, 0, 99],
            cap_drop: vec![0, 13],
            ..Security::default()
        };
        let m = s.cap_mask();
        assert!(m & (1 << 12) != 0, "NET_ADMIN added");
        assert!(m & 1 == 0, "CHOWN dropped even though also added");
        assert!(m & (1 << 13) == 0, "NET_RAW dropped");
        assert_eq!(m.count_ones(), crate::caps::default_mask().count_ones() - 1);
    }

    #[test]
    fn run_as_non_root_follows_the_kubelet() {
        for ok in ["1000", "1000:0", "65534:65534"] {
            assert_eq!(check_non_root(ok), Ok(()), "{ok}");
        }
        for (bad, want) in [
            ("", "will run as root"),
            ("0", "will run as root (uid 0)"),
            ("0:1000", "will run as root (uid 0)"),
            ("nobody", "non-numeric user (nobody)"),
            ("app:app", "non-numeric user (app)"),
        ] {
            let e = check_non_root(bad).unwrap_err();
            assert!(e.contains(want), "{bad:?}: {e}");
        }
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn argv_rules() {
        let img = ImageConfig {
            entrypoint: s(&["/ep"]),
            cmd: s(&["a"]),
            ..Default::default()
        };
        assert_eq!(resolve_argv(&img, &[], &[]), s(&["/ep", "a"]));
        assert_eq!(resolve_argv(&img, &[], &s(&["b"])), s(&["/ep", "b"]));
        assert_eq!(resolve_argv(&img, &s(&["sh"]), &[]), s(&["sh"]));
        assert_eq!(
            resolve_argv(&img, &s(&["sh"]), &s(&["-c", "x"])),
            s(&["sh", "-c", "x"])
        );
    }

    #[test]
    fn env_rules() {
        let img = ImageConfig {
            env: s(&["PATH=/bin", "A=1"]),
            ..Default::default()
        };
        let env = resolve_env(
            &img,
            &[("A".into(), "2".into()), ("B".into(), "3".into())],
            "pod",
        );
        assert_eq!(
            env,
            vec![
                ("PATH".into(), "/bin".into()),
                ("A".into(), "2".into()),
                ("B".into(), "3".into()),
                ("HOSTNAME".into(), "pod".into())
            ]
        );
        let env = resolve_env(&ImageConfig::default(), &[], "h");
        assert_eq!(env[0], ("PATH".to_string(), DEFAULT_PATH.to_string()));
    }
}
