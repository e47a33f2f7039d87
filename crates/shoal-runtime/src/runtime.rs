//! The runtime's public face: pods, containers, logs, exec and stats over
//! the data directory. Synchronous; an async caller wraps calls in
//! `spawn_blocking`.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, BufRead, BufReader};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cgroup::{Cgroup, CgroupError, CgroupLayout, Stats};
use crate::digest::Digest;
use crate::exec::{ExecProcess, ExecSpec};
use crate::image::{ImageError, ImageStore};
use crate::logs::{LogOptions, LogReader};
use crate::sandbox::PodSandbox;
use crate::spec::{
    ContainerSpec, MountSource, PodSandboxConfig, RuntimeConfig, resolve_argv, resolve_env,
};
use crate::state::{ContainerConfig, ContainerState, ContainerStatus, ExitInfo, StateFile, files};
use crate::util::{PhaseTimer, is_locked, valid_name};

/// Errors of the runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Image store failure.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// cgroup failure.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// A file system or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the path or id.
        what: String,
        /// Cause.
        source: io::Error,
    },
    /// No such container or pod.
    #[error("{kind} {id:?} not found")]
    NotFound {
        /// `container` or `pod`.
        kind: &'static str,
        /// Its id or name.
        id: String,
    },
    /// The id or name is taken.
    #[error("{kind} {id:?} already exists")]
    AlreadyExists {
        /// `container` or `pod`.
        kind: &'static str,
        /// Its id or name.
        id: String,
    },
    /// The spec is not acceptable.
    #[error("container {id}: {message}")]
    InvalidSpec {
        /// Container id.
        id: String,
        /// What is wrong.
        message: String,
    },
    /// The container could not be started.
    #[error("container {id}: start failed: {message}")]
    Start {
        /// Container id.
        id: String,
        /// Why.
        message: String,
    },
    /// The spec cannot be honoured with this image (e.g. `runAsNonRoot` and a root
    /// user): the kubelet's `CreateContainerConfigError`.
    #[error("container {id}: {message}")]
    Config {
        /// Container id.
        id: String,
        /// What is wrong.
        message: String,
    },
    /// The container is not running.
    #[error("container {0} is not running")]
    NotRunning(String),
    /// Waiting took too long.
    #[error("container {id}: timed out waiting for {what}")]
    Timeout {
        /// Container id.
        id: String,
        /// What was awaited.
        what: String,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> RuntimeError {
    let what = what.into();
    move |source| RuntimeError::Io { what, source }
}

/// What `create_and_start` returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerHandle {
    /// Container id.
    pub id: String,
    /// Host pid of the container's PID 1.
    pub pid: i32,
    /// The supervisor's pid.
    pub supervisor_pid: i32,
}

/// The container runtime of one node.
#[derive(Debug)]
pub struct Runtime {
    cfg: RuntimeConfig,
    layout: CgroupLayout,
    images: ImageStore,
    /// Sealed copy of `supervisor_exe` that helpers are spawned from.
    helper: crate::sealed_exe::SealedExe,
}

impl Runtime {
    /// Opens the data directory (creating it) and detects cgroups.
    pub fn new(mut cfg: RuntimeConfig) -> Result<Self, RuntimeError> {
        // 0700, tightened if it was made wider before (docs/security.md, "Files and limits").
        shoal_files::private_dir(&cfg.data_dir)
            .map_err(io_err(format!("create {}", cfg.data_dir.display())))?;
        // Supervisors run from `/`: every stored path must be absolute.
        cfg.data_dir = fs::canonicalize(&cfg.data_dir)
            .map_err(io_err(format!("resolve {}", cfg.data_dir.display())))?;
        for d in ["pods", "containers", "trash", "mnt"] {
            let p = cfg.data_dir.join(d);
            shoal_files::private_dir(&p).map_err(io_err(format!("create {}", p.display())))?;
        }
        let layout = match &cfg.cgroup_layout {
            Some(l) => l.clone(),
            None => CgroupLayout::detect()?,
        };
        let images = ImageStore::open(cfg.data_dir.join("images"))?.with_limits(cfg.image_limits);
        let helper = crate::sealed_exe::SealedExe::copy_of(&cfg.supervisor_exe).map_err(io_err(
            format!("sealed copy of {}", cfg.supervisor_exe.display()),
        ))?;
        let rt = Self {
            cfg,
            layout,
            images,
            helper,
        };
        rt.empty_trash();
        Ok(rt)
    }

    /// The image store.
    pub fn images(&self) -> &ImageStore {
        &self.images
    }

    /// The cgroup layout in use.
    pub fn cgroup_layout(&self) -> &CgroupLayout {
        &self.layout
    }

    fn pod_dir(&self, name: &str) -> PathBuf {
        self.cfg.data_dir.join("pods").join(name)
    }

    fn container_dir(&self, id: &str) -> PathBuf {
        self.cfg.data_dir.join("containers").join(id)
    }

    /// Creates a pod sandbox (network namespace, /etc files, volume dir).
    pub fn create_sandbox(&self, cfg: &PodSandboxConfig) -> Result<PodSandbox, RuntimeError> {
        if !valid_name(&cfg.name) {
            return Err(RuntimeError::InvalidSpec {
                id: cfg.name.clone(),
                message: "pod name must be 1-100 of [A-Za-z0-9_.-]".into(),
            });
        }
        let dir = self.pod_dir(&cfg.name);
        if dir.exists() {
            return Err(RuntimeError::AlreadyExists {
                kind: "pod",
                id: cfg.name.clone(),
            });
        }
        PodSandbox::create(&dir, cfg).map_err(|e| {
            let _ = fs::remove_dir_all(&dir);
            RuntimeError::Io {
                what: format!("create pod sandbox {}", cfg.name),
                source: e,
            }
        })
    }

    /// Loads a pod sandbox.
    pub fn sandbox(&self, name: &str) -> Result<PodSandbox, RuntimeError> {
        let dir = self.pod_dir(name);
        if !valid_name(name) || !dir.is_dir() {
            return Err(RuntimeError::NotFound {
                kind: "pod",
                id: name.to_string(),
            });
        }
        PodSandbox::load(&dir).map_err(io_err(format!("load pod {name}")))
    }

    /// All pod sandboxes.
    pub fn list_sandboxes(&self) -> Result<Vec<PodSandbox>, RuntimeError> {
        let mut out = Vec::new();
        let root = self.cfg.data_dir.join("pods");
        for e in fs::read_dir(&root).map_err(io_err(format!("read {}", root.display())))? {
            let e = e.map_err(io_err("read pods"))?;
            if let Ok(sb) = PodSandbox::load(&e.path()) {
                out.push(sb);
            }
        }
        Ok(out)
    }

    /// Removes a pod sandbox; its containers are killed and removed first.
    pub fn remove_sandbox(&self, name: &str) -> Result<(), RuntimeError> {
        let sb = self.sandbox(name)?;
        let mut t = PhaseTimer::new("remove_sandbox");
        for c in self.list()? {
            if c.pod == name {
                self.remove_inner(&c.id)?;
            }
        }
        t.mark("containers");
        // The cleaner unmounts the namespace (unmounting waits for an RCU
        // grace period, often tens of milliseconds) and deletes the files.
        self.discard(&sb.dir)?;
        self.empty_trash();
        t.mark("netns and files");
        Ok(())
    }

    /// Creates the container and starts it under its supervisor. Returns once
    /// the container's process runs (or with the reason it could not start).
    pub fn create_and_start(
        &self,
        sandbox: &PodSandbox,
        spec: ContainerSpec,
    ) -> Result<ContainerHandle, RuntimeError> {
        let id = spec.id.clone();
        if !valid_name(&id) {
            return Err(RuntimeError::InvalidSpec {
                id,
                message: "id must be 1-100 of [A-Za-z0-9_.-]".into(),
            });
        }
        let dir = self.container_dir(&id);
        if dir.exists() {
            return Err(RuntimeError::AlreadyExists {
                kind: "container",
                id,
            });
        }
        let mut t = PhaseTimer::new("create_and_start");
        let image = self.images.resolve(&spec.image)?;
        t.mark("resolve image");
        let mut binds = Vec::new();
        for m in &spec.mounts {
            if !m.destination.is_absolute() {
                return Err(RuntimeError::InvalidSpec {
                    id,
                    message: format!(
                        "mount destination {} must be absolute",
                        m.destination.display()
                    ),
                });
            }
            let src = match &m.source {
                MountSource::EmptyDir(v) => {
                    if !valid_name(v) {
                        return Err(RuntimeError::InvalidSpec {
                            id,
                            message: format!("volume name {v:?} is invalid"),
                        });
                    }
                    let p = sandbox.volume_dir(v);
                    // 0777 like Kubernetes' emptyDir: any user of the pod writes it; no
                    // user of the host reaches it (the pod directory is 0700). With an
                    // fsGroup, owned by that group and setgid, so what is made in it
                    // belongs to the group too.
                    let fs_group = spec.security.fs_group;
                    let mode = if fs_group.is_some() { 0o2777 } else { 0o777 };
                    shoal_files::dir_with_mode(&p, mode)
                        .map_err(io_err(format!("create volume {}", p.display())))?;
                    if let Some(g) = fs_group {
                        crate::util::own_by_group(&p, g, mode)
                            .map_err(io_err(format!("fsGroup {g} on volume {}", p.display())))?;
                    }
                    p
                }
                MountSource::HostPath(p) => {
                    if !p.exists() {
                        return Err(RuntimeError::InvalidSpec {
                            id,
                            message: format!("hostPath {} does not exist", p.display()),
                        });
                    }
                    p.clone()
                }
            };
            binds.push((src, m.destination.clone(), m.read_only));
        }
        let argv = resolve_argv(&image.config, &spec.command, &spec.args);
        if argv.is_empty() {
            return Err(RuntimeError::InvalidSpec {
                id,
                message: "no command: the image has no Entrypoint/Cmd and none was given".into(),
            });
        }
        let env = resolve_env(&image.config, &spec.env, &sandbox.hostname);
        let cwd = spec
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| image.config.working_dir.clone());
        let user = spec
            .user
            .clone()
            .unwrap_or_else(|| image.config.user.clone());
        if spec.security.run_as_non_root {
            crate::spec::check_non_root(&user).map_err(|message| RuntimeError::Config {
                id: id.clone(),
                message,
            })?;
        }
        let log_path = spec
            .log_path
            .clone()
            .unwrap_or_else(|| dir.join(files::LOG));
        let cgroup = Cgroup::new(
            self.layout.clone(),
            Path::new(&self.cfg.cgroup_parent).join(&id),
        );
        let config = ContainerConfig {
            pod: sandbox.name.clone(),
            hostname: sandbox.hostname.clone(),
            netns: sandbox.netns_path.clone(),
            etc_files: sandbox.etc_files(),
            binds,
            image_digest: image.digest.to_string(),
            layer_dirs: image.layer_dirs.clone(),
            argv,
            env,
            cwd,
            user,
            cgroup,
            rootfs_mountpoint: self.cfg.data_dir.join("mnt"),
            log_path,
            spec,
        };
        fs::create_dir_all(&dir).map_err(io_err(format!("create {}", dir.display())))?;
        let result = self.write_and_spawn(&dir, &config);
        t.mark("config, supervisor, container start");
        if result.is_err() {
            let _ = config.cgroup.remove(Duration::from_secs(2));
        }
        result
    }

    fn write_and_spawn(
        &self,
        dir: &Path,
        config: &ContainerConfig,
    ) -> Result<ContainerHandle, RuntimeError> {
        let id = config.spec.id.clone();
        let data = serde_json::to_vec_pretty(config).map_err(|e| RuntimeError::Io {
            what: format!("encode config of {id}"),
            source: io::Error::other(e),
        })?;
        crate::util::write_atomic(&dir.join(files::CONFIG), &data)
            .map_err(io_err(format!("write config of {id}")))?;
        let mut child = Command::new(self.helper.path())
            .arg("supervise")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("SHOAL_RUNTIME_TIMING").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .map_err(io_err(format!(
                "spawn supervisor {} for {id}",
                self.cfg.supervisor_exe.display()
            )))?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            BufReader::new(out)
                .read_line(&mut line)
                .map_err(io_err(format!("read supervisor of {id}")))?;
        }
        let _ = child.wait();
        let line = line.trim();
        let mut it = line.split(' ');
        match (it.next(), it.next(), it.next()) {
            (Some("ok"), Some(pid), Some(sup)) => Ok(ContainerHandle {
                id,
                pid: pid.parse().unwrap_or(0),
                supervisor_pid: sup.parse().unwrap_or(0),
            }),
            _ => Err(RuntimeError::Start {
                id,
                message: line
                    .strip_prefix("err ")
                    .unwrap_or(if line.is_empty() {
                        "supervisor exited without a word"
                    } else {
                        line
                    })
                    .to_string(),
            }),
        }
    }

    fn load_config(&self, id: &str) -> Result<ContainerConfig, RuntimeError> {
        let dir = self.container_dir(id);
        if !valid_name(id) || !dir.is_dir() {
            return Err(RuntimeError::NotFound {
                kind: "container",
                id: id.to_string(),
            });
        }
        let data =
            fs::read(dir.join(files::CONFIG)).map_err(io_err(format!("read config of {id}")))?;
        serde_json::from_slice(&data).map_err(|e| RuntimeError::Io {
            what: format!("decode config of {id}"),
            source: io::Error::other(e),
        })
    }

    /// The container's status, read from its state directory.
    pub fn status(&self, id: &str) -> Result<ContainerStatus, RuntimeError> {
        let cfg = self.load_config(id)?;
        let dir = self.container_dir(id);
        let alive = is_locked(&dir.join(files::LOCK));
        let st = StateFile::read(&dir).ok();
        let st_missing = st.is_none();
        let (mut state, restart_count, last_exit) = match st {
            Some(s) => (s.state, s.restart_count, s.last_exit),
            None => (ContainerState::Created, 0, None),
        };
        // Between writing the config and the supervisor taking its lock there
        // is neither a lock nor a state file: that is a container starting.
        let starting = st_missing
            && fs::metadata(dir.join(files::CONFIG))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age < Duration::from_secs(10));
        if !alive && !starting && !matches!(state, ContainerState::Exited(_)) {
            // The supervisor died without recording an exit (killed, crash,
            // reboot): the container is gone or unsupervised.
            state = ContainerState::Exited(ExitInfo {
                exit_code: 255,
                signal: None,
                reason: "Unknown".into(),
                message: "the supervisor is gone".into(),
                started_at: None,
                finished_at: chrono::Utc::now(),
            });
        }
        Ok(ContainerStatus {
            id: id.to_string(),
            name: cfg.spec.name,
            pod: cfg.pod,
            image: cfg.spec.image,
            state,
            restart_count,
            last_exit,
            supervisor_alive: alive,
        })
    }

    /// Every container in the data directory (this is how a restarted agent
    /// re-adopts running containers).
    pub fn list(&self) -> Result<Vec<ContainerStatus>, RuntimeError> {
        let root = self.cfg.data_dir.join("containers");
        let mut out = Vec::new();
        for e in fs::read_dir(&root).map_err(io_err(format!("read {}", root.display())))? {
            let e = e.map_err(io_err("read containers"))?;
            let id = e.file_name().to_string_lossy().into_owned();
            if let Ok(s) = self.status(&id) {
                out.push(s);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Waits until the supervisor has finished (the container exited for
    /// good) and returns the final status.
    pub fn wait(&self, id: &str, timeout: Duration) -> Result<ContainerStatus, RuntimeError> {
        let lock = self.container_dir(id).join(files::LOCK);
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_micros(200);
        while is_locked(&lock) {
            if Instant::now() >= deadline {
                return Err(RuntimeError::Timeout {
                    id: id.to_string(),
                    what: "the container to exit".into(),
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(1));
        }
        self.status(id)
    }

    /// Stops the container: SIGTERM, `grace`, SIGKILL; no restart follows.
    /// Returns the final status.
    pub fn stop(&self, id: &str, grace: Duration) -> Result<ContainerStatus, RuntimeError> {
        let cfg = self.load_config(id)?;
        let dir = self.container_dir(id);
        if is_locked(&dir.join(files::LOCK)) {
            let st = StateFile::read(&dir).map_err(io_err(format!("read state of {id}")))?;
            crate::util::write_atomic(
                &dir.join(files::STOP),
                grace.as_millis().to_string().as_bytes(),
            )
            .map_err(io_err(format!("write stop request of {id}")))?;
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(st.supervisor_pid),
                nix::sys::signal::Signal::SIGTERM,
            );
            return self.wait(id, grace + Duration::from_secs(15));
        }
        // No supervisor: kill whatever is left in the cgroup.
        cfg.cgroup.remove(Duration::from_secs(5))?;
        self.status(id)
    }

    /// Stops (without grace) and deletes the container: state directory,
    /// writable layer, cgroup.
    pub fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.remove_inner(id)?;
        self.empty_trash();
        Ok(())
    }

    fn remove_inner(&self, id: &str) -> Result<(), RuntimeError> {
        let mut t = PhaseTimer::new("remove");
        let cfg = self.load_config(id)?;
        self.stop(id, Duration::ZERO)?;
        t.mark("stop");
        cfg.cgroup.remove(Duration::from_secs(5))?;
        t.mark("cgroup");
        let dir = self.container_dir(id);
        self.discard(&dir)?;
        t.mark("state dir and writable layer");
        Ok(())
    }

    /// Moves a directory to `trash/` (one rename) and has a detached helper
    /// delete it: removing directories costs milliseconds each on ext4.
    fn discard(&self, dir: &Path) -> Result<(), RuntimeError> {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dest = self
            .cfg
            .data_dir
            .join("trash")
            .join(format!("{name}.{}", crate::util::random_hex()));
        fs::rename(dir, &dest).map_err(io_err(format!(
            "move {} to {}",
            dir.display(),
            dest.display()
        )))?;
        Ok(())
    }

    /// Starts `EXE cleanup DATA/trash` (detached) to delete discarded
    /// directories. Failure to start it only delays the deletion.
    fn empty_trash(&self) {
        let trash = self.cfg.data_dir.join("trash");
        let busy = |d: &Path| {
            fs::read_dir(d)
                .map(|e| e.filter_map(Result::ok).any(|e| e.file_name() != ".lock"))
                .unwrap_or(false)
        };
        // A running cleaner rescans until the trash is empty: do not start another.
        if !busy(&trash) || is_locked(&trash.join(".lock")) {
            return;
        }
        if let Ok(mut c) = Command::new(self.helper.path())
            .arg("cleanup")
            .arg(&trash)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            // The helper forks and its parent exits at once; reap it off the
            // caller's path (the caller may be a short-lived CLI).
            std::thread::spawn(move || c.wait());
        }
    }

    /// The container's writable layer (its overlayfs upper directory): every file it
    /// wrote, and a 0/0 character device for every file it deleted from its image. Read
    /// by image builds once the container exited, and by `commit`.
    pub fn upper_dir(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("upper")
    }

    /// Reads the container's log.
    pub fn logs(&self, id: &str, opts: LogOptions) -> Result<LogReader, RuntimeError> {
        let cfg = self.load_config(id)?;
        let lock = self.container_dir(id).join(files::LOCK);
        LogReader::open(
            &cfg.log_path,
            cfg.spec.log.max_files,
            opts,
            Box::new(move || !is_locked(&lock)),
        )
        .map_err(io_err(format!("open log of {id}")))
    }

    /// Current memory and CPU usage.
    pub fn stats(&self, id: &str) -> Result<Stats, RuntimeError> {
        Ok(self.load_config(id)?.cgroup.stats()?)
    }

    /// The writing side of the running container's stdin (its spec has `stdin` or `tty`).
    pub fn attach(&self, id: &str) -> Result<crate::AttachInput, RuntimeError> {
        let cfg = self.load_config(id)?;
        if !self.status(id)?.is_running() {
            return Err(RuntimeError::NotRunning(id.to_string()));
        }
        if !cfg.spec.stdin && !cfg.spec.tty {
            return Err(RuntimeError::InvalidSpec {
                id: id.to_string(),
                message: "attach: the container was not started with stdin or tty".into(),
            });
        }
        crate::AttachInput::open(&self.container_dir(id), cfg.spec.tty)
            .map_err(io_err(format!("attach to the stdin of {id}")))
    }

    /// Starts a command inside the running container.
    pub fn exec(&self, id: &str, spec: ExecSpec) -> Result<ExecProcess, RuntimeError> {
        self.load_config(id)?;
        if !self.status(id)?.is_running() {
            return Err(RuntimeError::NotRunning(id.to_string()));
        }
        if spec.cmd.is_empty() {
            return Err(RuntimeError::InvalidSpec {
                id: id.to_string(),
                message: "exec: empty command".into(),
            });
        }
        let json = serde_json::to_string(&spec).map_err(|e| RuntimeError::Io {
            what: format!("encode exec spec for {id}"),
            source: io::Error::other(e),
        })?;
        let mut cmd = Command::new(self.helper.path());
        cmd.arg("exec").arg(self.container_dir(id)).arg(json);
        if spec.tty {
            let size = spec.tty_size.map(|(rows, cols)| nix::pty::Winsize {
                ws_row: rows,
                ws_col: cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            });
            let pty = nix::pty::openpty(size.as_ref(), None).map_err(|e| RuntimeError::Io {
                what: format!("openpty for exec in {id}"),
                source: e.into(),
            })?;
            let slave: OwnedFd = pty.slave;
            let s1 = slave.try_clone().map_err(io_err("dup pty"))?;
            let s2 = slave.try_clone().map_err(io_err("dup pty"))?;
            cmd.stdin(Stdio::from(slave))
                .stdout(Stdio::from(s1))
                .stderr(Stdio::from(s2));
            let child = cmd
                .spawn()
                .map_err(io_err(format!("spawn exec helper for {id}")))?;
            drop(cmd);
            Ok(ExecProcess {
                child,
                stdin: None,
                stdout: None,
                stderr: None,
                pty: Some(fs::File::from(pty.master)),
            })
        } else {
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = cmd
                .spawn()
                .map_err(io_err(format!("spawn exec helper for {id}")))?;
            let stdin = child.stdin.take().map(|s| fs::File::from(OwnedFd::from(s)));
            let stdout = child
                .stdout
                .take()
                .map(|s| fs::File::from(OwnedFd::from(s)));
            let stderr = child
                .stderr
                .take()
                .map(|s| fs::File::from(OwnedFd::from(s)));
            Ok(ExecProcess {
                child,
                stdin,
                stdout,
                stderr,
                pty: None,
            })
        }
    }

    /// Layers used by existing containers (keep them in `ImageStore::gc`).
    pub fn layers_in_use(&self) -> Result<BTreeSet<Digest>, RuntimeError> {
        let mut out = BTreeSet::new();
        for c in self.list()? {
            if let Ok(cfg) = self.load_config(&c.id) {
                for d in &cfg.layer_dirs {
                    if let Some(dg) = d
                        .file_name()
                        .and_then(|n| Digest::from_hex(&n.to_string_lossy()).ok())
                    {
                        out.insert(dg);
                    }
                }
            }
        }
        Ok(out)
    }
}
