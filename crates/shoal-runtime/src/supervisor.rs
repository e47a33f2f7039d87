//! The per-container supervisor: `EXE supervise DIR`, a single-threaded
//! process (no async runtime) that detaches from the agent, creates the
//! container's cgroup, starts the container with `clone`, owns its stdout
//! and stderr (written to the log), waits for it, records every transition
//! in `DIR/state.json`, restarts it by policy with back-off, and stops it on
//! SIGTERM (grace period from `DIR/stop`, then SIGKILL). It holds an
//! exclusive `flock` on `DIR/supervisor.lock` while alive, which is how a
//! restarted agent tells a live container from a dead one.

use std::convert::Infallible;
use std::fs::{self, File};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::logs::{LogWriter, Stream};
use crate::state::{ContainerConfig, ContainerState, ExitInfo, StateFile, files};

/// Entry point of `supervise DIR`. Returns the process exit code.
pub fn main(dir: &Path) -> i32 {
    let cfg: ContainerConfig = match fs::read(dir.join(files::CONFIG))
        .map_err(|e| e.to_string())
        .and_then(|d| serde_json::from_slice(&d).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            report(&format!(
                "err reading {}: {e}",
                dir.join(files::CONFIG).display()
            ));
            return 1;
        }
    };
    // Detach: the agent's child exits at once; the grandchild, adopted by
    // init, lives on even if the agent dies.
    // SAFETY: this process is single-threaded (freshly exec'd), so fork is safe.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { .. }) => return 0,
        Ok(nix::unistd::ForkResult::Child) => {}
        Err(e) => {
            report(&format!("err fork: {e}"));
            return 1;
        }
    }
    let _ = nix::unistd::setsid();
    // Do not pin the agent's working directory (it may be unmounted).
    let _ = nix::unistd::chdir("/");
    let mut sup = match Supervisor::init(cfg, dir) {
        Ok(s) => s,
        Err(e) => {
            report(&format!("err {e}"));
            // SAFETY: exiting the forked child without running atexit handlers twice.
            unsafe { libc::_exit(1) };
        }
    };
    let code = sup.run();
    // SAFETY: as above.
    unsafe { libc::_exit(code) };
}

struct Running {
    pid: Pid,
    out: Option<OwnedFd>,
    err: Option<OwnedFd>,
    /// The writing side of the process' stdin (a pipe's write end, or the pty master with
    /// a TTY) while it is open; `attach` gets a copy through `pidfd_getfd` (see
    /// `files::STDIN`). SIGUSR1 closes it (the attached client ended its input).
    input: Option<OwnedFd>,
    started_at: chrono::DateTime<Utc>,
    started: Instant,
    oom_base: u64,
}

struct Supervisor {
    cfg: ContainerConfig,
    dir: std::path::PathBuf,
    _lock: File,
    sfd: SignalFd,
    log: LogWriter,
    state: StateFile,
}

impl Supervisor {
    fn init(cfg: ContainerConfig, dir: &Path) -> Result<Self, String> {
        let lock_path = dir.join(files::LOCK);
        let lock = File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
        // SAFETY: valid fd owned by `lock`.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(format!(
                "container {} already has a supervisor",
                cfg.spec.id
            ));
        }
        let mut mask = SigSet::empty();
        for s in [
            Signal::SIGCHLD,
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGHUP,
            Signal::SIGUSR1,
        ] {
            mask.add(s);
        }
        mask.thread_block()
            .map_err(|e| format!("block signals: {e}"))?;
        let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .map_err(|e| format!("signalfd: {e}"))?;
        let log = LogWriter::open(
            &cfg.log_path,
            cfg.spec.log.max_bytes,
            cfg.spec.log.max_files,
        )
        .map_err(|e| format!("log {}: {e}", cfg.log_path.display()))?;
        let mut t = crate::util::PhaseTimer::new("supervisor init");
        let _ = fs::remove_file(dir.join(files::STOP));
        cfg.cgroup
            .remove(Duration::from_secs(2))
            .map_err(|e| e.to_string())?;
        t.mark("lock, signals, log, stale cgroup");
        cfg.cgroup
            .create_with_devices(
                &cfg.spec.resources,
                &crate::devices::allowlist(cfg.spec.security.privileged),
            )
            .map_err(|e| e.to_string())?;
        t.mark("cgroup create");
        let state = StateFile {
            supervisor_pid: std::process::id() as i32,
            state: ContainerState::Created,
            restart_count: 0,
            last_exit: None,
        };
        Ok(Self {
            cfg,
            dir: dir.to_path_buf(),
            _lock: lock,
            sfd,
            log,
            state,
        })
    }

    fn save(&self) {
        if let Err(e) = self.state.write(&self.dir) {
            eprintln!("supervisor: writing state of {}: {e}", self.cfg.spec.id);
        }
    }

    fn run(&mut self) -> i32 {
        let mut first = true;
        let mut consecutive = 0u32;
        loop {
            let started = self.start();
            let mut run = match started {
                Ok(r) => {
                    self.state.state = ContainerState::Running {
                        pid: r.pid.as_raw(),
                        started_at: r.started_at,
                    };
                    self.save();
                    if first {
                        report(&format!("ok {} {}", r.pid, std::process::id()));
                        detach_stdio(&self.dir);
                    }
                    r
                }
                Err(msg) => {
                    let exit = ExitInfo {
                        exit_code: 128,
                        signal: None,
                        reason: "StartError".into(),
                        message: msg.clone(),
                        started_at: None,
                        finished_at: Utc::now(),
                    };
                    if first {
                        self.finish(exit);
                        report(&format!("err {msg}"));
                        return 1;
                    }
                    eprintln!("supervisor: restart of {} failed: {msg}", self.cfg.spec.id);
                    self.state.last_exit = Some(exit.clone());
                    if self.after_exit(exit, Duration::ZERO, &mut consecutive) {
                        continue;
                    }
                    return 0;
                }
            };
            first = false;
            let mut t = crate::util::PhaseTimer::new("supervisor exit");
            let (status, stop_requested) = self.wait(&mut run);
            t.mark("running, until SIGCHLD and pipes closed");
            let oom = self.cfg.cgroup.oom_kills() > run.oom_base;
            let (exit_code, signal) = match status {
                WaitStatus::Exited(_, c) => (c, None),
                WaitStatus::Signaled(_, s, _) => (128 + s as i32, Some(s as i32)),
                _ => (255, None),
            };
            let reason = if oom {
                "OOMKilled"
            } else if exit_code == 0 {
                "Completed"
            } else {
                "Error"
            };
            let exit = ExitInfo {
                exit_code,
                signal,
                reason: reason.into(),
                message: String::new(),
                started_at: Some(run.started_at),
                finished_at: Utc::now(),
            };
            self.state.last_exit = Some(exit.clone());
            if stop_requested {
                self.finish(exit);
                return 0;
            }
            if !self.after_exit(exit, run.started.elapsed(), &mut consecutive) {
                return 0;
            }
        }
    }

    /// Decides about a restart and waits out the back-off. True: start again.
    fn after_exit(&mut self, exit: ExitInfo, ran_for: Duration, consecutive: &mut u32) -> bool {
        let success = exit.exit_code == 0 && exit.signal.is_none();
        if !self.cfg.spec.restart_policy.should_restart(success) {
            self.finish(exit);
            return false;
        }
        let (n, delay) = self.cfg.spec.backoff.next(*consecutive, ran_for);
        *consecutive = n;
        let next_start = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
        self.state.state = ContainerState::BackOff { next_start };
        self.save();
        let deadline = Instant::now() + delay;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if self.poll(&[], left).stop {
                self.finish(exit);
                return false;
            }
        }
        self.state.restart_count += 1;
        true
    }

    fn finish(&mut self, exit: ExitInfo) {
        let _ = self.log.finish(Stream::Stdout);
        let _ = self.log.finish(Stream::Stderr);
        let mut t = crate::util::PhaseTimer::new("supervisor exit");
        if let Err(e) = self.cfg.cgroup.remove(Duration::from_secs(5)) {
            eprintln!("supervisor: {e}");
        }
        t.mark("cgroup remove");
        self.state.state = ContainerState::Exited(exit);
        self.save();
    }

    fn start(&mut self) -> Result<Running, String> {
        let mut t = crate::util::PhaseTimer::new("supervisor start");
        let upper = self.dir.join("upper");
        let work = self.dir.join("work");
        for d in [&upper, &work] {
            if d.exists() {
                fs::remove_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
            }
        }
        // The upper directory is the container's `/` (its mode is the root's mode):
        // 0755 as in every image; `work` is the kernel's alone.
        for (d, mode) in [(&upper, 0o755), (&work, shoal_files::DIR_MODE)] {
            shoal_files::dir_with_mode(d, mode).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        t.mark("upper/work dirs");
        let oom_base = self.cfg.cgroup.oom_kills();
        let pipe =
            || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"));
        // stdio: pipes for stdout and stderr (the log); with `tty` one pty for all three,
        // with `stdin` a pipe for stdin; otherwise the child opens /dev/null.
        let (out_r, out_w, err_r, err_w, in_r, input) = if self.cfg.spec.tty {
            let pty = nix::pty::openpty(None, None).map_err(|e| format!("openpty: {e}"))?;
            for fd in [&pty.master, &pty.slave] {
                nix::fcntl::fcntl(
                    fd,
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
                )
                .map_err(|e| format!("pty: {e}"))?;
            }
            let out_r = pty.master.try_clone().map_err(|e| format!("pty: {e}"))?;
            let out_w = pty.slave.try_clone().map_err(|e| format!("pty: {e}"))?;
            let err_w = pty.slave.try_clone().map_err(|e| format!("pty: {e}"))?;
            (out_r, out_w, None, err_w, Some(pty.slave), Some(pty.master))
        } else {
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            let (in_r, in_w) = if self.cfg.spec.stdin {
                let (r, w) = pipe()?;
                (Some(r), Some(w))
            } else {
                (None, None)
            };
            (out_r, out_w, Some(err_r), err_w, in_r, in_w)
        };
        let (sync_r, sync_w) = pipe()?;
        let (fail_r, fail_w) = pipe()?;
        let mut stack = vec![0u8; 1 << 20];
        let cfg = &self.cfg;
        let dir = &self.dir;
        let (sr, ow, ew, fw) = (
            sync_r.as_raw_fd(),
            out_w.as_raw_fd(),
            err_w.as_raw_fd(),
            fail_w.as_raw_fd(),
        );
        let ir = in_r.as_ref().map(|f| f.as_raw_fd());
        let cb = Box::new(move || -> isize {
            let r: Result<Infallible, String> =
                crate::init::container_main(cfg, dir, sr, ir, ow, ew);
            let Err(msg) = r;
            // SAFETY: writing a byte buffer to our own pipe end.
            unsafe { libc::write(fw, msg.as_ptr().cast(), msg.len()) };
            127
        });
        let flags = CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC;
        // SAFETY: the process is single-threaded; the child runs on its own
        // stack in a copy of our address space (no CLONE_VM) and ends in
        // execve or returns.
        let pid = unsafe { nix::sched::clone(cb, &mut stack, flags, Some(libc::SIGCHLD)) }
            .map_err(|e| format!("clone: {e}"))?;
        t.mark("clone");
        drop((out_w, err_w, sync_r, fail_w, in_r));
        let started_at = Utc::now();
        let started = Instant::now();
        if self.cfg.cgroup.layout.is_v2()
            && let Err(e) = self.cfg.cgroup.add_pid(pid.as_raw())
        {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            return Err(e.to_string());
        }
        t.mark("cgroup join");
        let _ = nix::unistd::write(&sync_w, b"x");
        drop(sync_w);
        let mut msg = Vec::new();
        let _ = std::io::Read::read_to_end(&mut File::from(fail_r), &mut msg);
        t.mark("container setup until execve");
        if !msg.is_empty() {
            let _ = waitpid(pid, None);
            return Err(String::from_utf8_lossy(&msg).into_owned());
        }
        if let Some(w) = &input {
            // Where `attach` finds the writing side: our pid, the descriptor, and its
            // device and inode (checked after `pidfd_getfd`, so a reused number is refused).
            let st = nix::sys::stat::fstat(w).map_err(|e| format!("stdin: {e}"))?;
            let line = format!(
                "{} {} {} {}\n",
                std::process::id(),
                w.as_raw_fd(),
                st.st_dev,
                st.st_ino
            );
            let _ = fs::write(self.dir.join(files::STDIN), line);
        }
        Ok(Running {
            pid,
            out: Some(out_r),
            err: err_r,
            input,
            started_at,
            started,
            oom_base,
        })
    }

    /// Waits for the container to exit, logging its output and handling stop
    /// requests. Returns its wait status and whether a stop was requested.
    fn wait(&mut self, run: &mut Running) -> (WaitStatus, bool) {
        let mut stop_requested = false;
        let mut kill_at: Option<Instant> = None;
        let mut status: Option<WaitStatus> = None;
        let mut drain_until: Option<Instant> = None;
        loop {
            if let Some(s) = status
                && (run.out.is_none() && run.err.is_none()
                    || drain_until.is_some_and(|d| Instant::now() >= d))
            {
                return (s, stop_requested);
            }
            let timeout = match (kill_at, drain_until) {
                (_, Some(d)) => d.saturating_duration_since(Instant::now()),
                (Some(k), None) => k.saturating_duration_since(Instant::now()),
                (None, None) => Duration::from_secs(3600),
            };
            let fds: Vec<(RawFd, Stream)> = [
                (run.out.as_ref(), Stream::Stdout),
                (run.err.as_ref(), Stream::Stderr),
            ]
            .into_iter()
            .filter_map(|(f, s)| f.map(|f| (f.as_raw_fd(), s)))
            .collect();
            let ev = self.poll(&fds, timeout);
            // The end of an attached client's input closes a pipe stdin (the process reads
            // EOF); a pty gets ^D from the agent instead and stays open.
            if ev.close_stdin && !self.cfg.spec.tty && run.input.take().is_some() {
                let _ = fs::remove_file(self.dir.join(files::STDIN));
            }
            for (stream, data) in ev.data {
                if data.is_empty() {
                    match stream {
                        Stream::Stdout => run.out = None,
                        Stream::Stderr => run.err = None,
                    }
                    let _ = self.log.finish(stream);
                } else if let Err(e) = self.log.feed(stream, &data) {
                    eprintln!("supervisor: log of {}: {e}", self.cfg.spec.id);
                }
            }
            if ev.stop && status.is_none() && !stop_requested {
                stop_requested = true;
                let grace = fs::read_to_string(self.dir.join(files::STOP))
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .map(Duration::from_millis)
                    .unwrap_or(self.cfg.spec.grace_period);
                if grace.is_zero() {
                    let _ = nix::sys::signal::kill(run.pid, Signal::SIGKILL);
                } else {
                    let _ = nix::sys::signal::kill(run.pid, Signal::SIGTERM);
                    kill_at = Some(Instant::now() + grace);
                }
            }
            if status.is_none() && kill_at.is_some_and(|k| Instant::now() >= k) {
                let _ = nix::sys::signal::kill(run.pid, Signal::SIGKILL);
                kill_at = None;
            }
            if status.is_none() && ev.child {
                match waitpid(run.pid, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) | Err(_) => {}
                    Ok(s) => {
                        status = Some(s);
                        drain_until = Some(Instant::now() + Duration::from_millis(500));
                    }
                }
            }
        }
    }

    /// Polls the signalfd and the given pipes once.
    fn poll(&mut self, fds: &[(RawFd, Stream)], timeout: Duration) -> Events {
        let mut pfds: Vec<libc::pollfd> = vec![libc::pollfd {
            fd: self.sfd.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        pfds.extend(fds.iter().map(|(fd, _)| libc::pollfd {
            fd: *fd,
            events: libc::POLLIN,
            revents: 0,
        }));
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: pfds is a valid array of pollfd for the duration of the call.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
        let mut ev = Events::default();
        if n <= 0 {
            return ev;
        }
        if pfds[0].revents != 0 {
            while let Ok(Some(si)) = self.sfd.read_signal() {
                match Signal::try_from(si.ssi_signo as i32) {
                    Ok(Signal::SIGCHLD) => ev.child = true,
                    Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) => ev.stop = true,
                    Ok(Signal::SIGUSR1) => ev.close_stdin = true,
                    _ => {}
                }
            }
        }
        for (i, (fd, stream)) in fds.iter().enumerate() {
            if pfds[i + 1].revents != 0 {
                let mut buf = vec![0u8; 64 * 1024];
                // SAFETY: reading into a buffer we own from a pipe fd we own.
                let r = unsafe { libc::read(*fd, buf.as_mut_ptr().cast(), buf.len()) };
                if r > 0 {
                    buf.truncate(r as usize);
                    ev.data.push((*stream, buf));
                } else if r == 0
                    || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR)
                {
                    ev.data.push((*stream, Vec::new()));
                }
            }
        }
        ev
    }
}

#[derive(Default)]
struct Events {
    child: bool,
    stop: bool,
    close_stdin: bool,
    data: Vec<(Stream, Vec<u8>)>,
}

/// Writes the start report to stdout. Never panics: if the agent died and
/// the pipe is gone, the supervisor carries on regardless.
fn report(line: &str) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn detach_stdio(dir: &Path) {
    let _ = std::io::stdout().flush();
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        // SAFETY: dup2 onto the standard descriptors of this process.
        unsafe {
            libc::dup2(null.as_raw_fd(), 0);
            libc::dup2(null.as_raw_fd(), 1);
        }
    }
    if let Ok(log) = File::options()
        .create(true)
        .append(true)
        .open(dir.join("supervisor.log"))
    {
        // SAFETY: as above.
        unsafe { libc::dup2(log.as_raw_fd(), 2) };
    }
}
