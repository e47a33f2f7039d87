//! Exec: running a command inside a running container. The caller spawns
//! `EXE exec DIR SPEC_JSON` (a fresh single-threaded process) with the
//! stdio it wants (pipes, or a pty slave); that helper joins the container's
//! cgroup and its ipc, uts, net, pid, cgroup and mount namespaces, forks (so the
//! child is inside the pid namespace), and the child becomes the command
//! with the container's environment and user. The helper exits with the
//! command's exit code (128 + signal when killed; 125 when exec itself failed).

use std::fs::{self, File};
use std::io;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::Child;

use nix::sched::CloneFlags;
use nix::sys::wait::{WaitStatus, waitpid};
use serde::{Deserialize, Serialize};

use crate::state::{ContainerConfig, ContainerState, StateFile, files};

/// Exit code of the helper when the exec itself failed.
pub const EXEC_FAILED: i32 = 125;

/// What to run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSpec {
    /// argv (searched in the container's PATH).
    pub cmd: Vec<String>,
    /// Allocate a pseudo-terminal (stdin, stdout and stderr all on it).
    pub tty: bool,
    /// The terminal's size (rows, columns) from its first moment: set on the pty
    /// before the command starts, so that it never sees 0×0 (a resize after the start
    /// raced with commands that read the size at once, such as `stty size`).
    #[serde(default)]
    pub tty_size: Option<(u16, u16)>,
    /// Extra environment on top of the container's.
    pub env: Vec<(String, String)>,
    /// Working directory (default: the container's).
    pub working_dir: Option<String>,
    /// User (default: the container's).
    pub user: Option<String>,
}

/// A running exec. Without a TTY, `stdin`, `stdout` and `stderr` are pipes;
/// with one, `pty` is the master side carrying all three.
#[derive(Debug)]
pub struct ExecProcess {
    /// The helper process.
    pub child: Child,
    /// Write end of the command's stdin (no TTY).
    pub stdin: Option<File>,
    /// Read end of its stdout (no TTY).
    pub stdout: Option<File>,
    /// Read end of its stderr (no TTY).
    pub stderr: Option<File>,
    /// The pty master (TTY).
    pub pty: Option<File>,
}

impl ExecProcess {
    /// Waits for the command and returns its exit code.
    pub fn wait(&mut self) -> io::Result<i32> {
        self.stdin = None;
        let st = self.child.wait()?;
        use std::os::unix::process::ExitStatusExt;
        Ok(st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0)))
    }

    /// Sets the terminal size (TTY only).
    pub fn resize(&self, rows: u16, cols: u16) -> io::Result<()> {
        let Some(pty) = &self.pty else { return Ok(()) };
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        use std::os::fd::AsRawFd;
        // SAFETY: TIOCSWINSZ with a valid winsize on a pty master we own.
        if unsafe { libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Entry point of `exec DIR SPEC_JSON` (the helper). Returns its exit code.
pub fn main(dir: &Path, spec_json: &str) -> i32 {
    match run(dir, spec_json) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("exec: {e}");
            EXEC_FAILED
        }
    }
}

fn run(dir: &Path, spec_json: &str) -> Result<i32, String> {
    let spec: ExecSpec =
        serde_json::from_str(spec_json).map_err(|e| format!("bad exec spec: {e}"))?;
    let cfg: ContainerConfig = fs::read(dir.join(files::CONFIG))
        .map_err(|e| e.to_string())
        .and_then(|d| serde_json::from_slice(&d).map_err(|e| e.to_string()))
        .map_err(|e| format!("{}: {e}", dir.join(files::CONFIG).display()))?;
    let st = StateFile::read(dir).map_err(|e| format!("state of {}: {e}", cfg.spec.id))?;
    let ContainerState::Running { pid, .. } = st.state else {
        return Err(format!("container {} is not running", cfg.spec.id));
    };
    // Open every namespace first: /proc changes once we are in the mount ns.
    let kinds = [
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ];
    let mut nss = Vec::new();
    for (name, flag) in kinds {
        let p = format!("/proc/{pid}/ns/{name}");
        nss.push((File::open(&p).map_err(|e| format!("{p}: {e}"))?, flag, p));
    }
    // The container's root as its init sees it. Joining a mount namespace puts us at the
    // namespace's root, which is the container's only when its pivot_root replaced that:
    // an agent that itself runs chrooted (a fresh-root check, some node images) would leave
    // exec'd processes at the host's root. So we enter the init's root explicitly.
    let root_path = format!("/proc/{pid}/root");
    let root = File::open(&root_path).map_err(|e| format!("{root_path}: {e}"))?;
    cfg.cgroup.join_self().map_err(|e| e.to_string())?;
    for (f, flag, p) in &nss {
        nix::sched::setns(f.as_fd(), *flag).map_err(|e| format!("setns {p}: {e}"))?;
    }
    drop(nss);
    nix::unistd::fchdir(&root).map_err(|e| format!("fchdir {root_path}: {e}"))?;
    nix::unistd::chroot(".").map_err(|e| format!("chroot {root_path}: {e}"))?;
    drop(root);
    let mut env = cfg.env.clone();
    for (k, v) in &spec.env {
        match env.iter_mut().find(|(ek, _)| ek == k) {
            Some(e) => e.1 = v.clone(),
            None => env.push((k.clone(), v.clone())),
        }
    }
    let cwd = spec.working_dir.clone().unwrap_or_else(|| cfg.cwd.clone());
    let user = spec.user.clone().unwrap_or_else(|| cfg.user.clone());
    // SAFETY: single-threaded helper process; the child only execs or exits.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        nix::unistd::ForkResult::Child => {
            let e = crate::init::become_process(
                &spec.cmd,
                &env,
                &cwd,
                &user,
                spec.tty,
                &cfg.spec.security,
            )
            .err()
            .unwrap_or_default();
            eprintln!("exec: {e}");
            // SAFETY: leave the forked child without unwinding.
            unsafe { libc::_exit(if e.contains("not found") { 127 } else { 126 }) };
        }
        nix::unistd::ForkResult::Parent { child } => {
            // Let the command get terminal signals, not us.
            for s in [
                nix::sys::signal::Signal::SIGINT,
                nix::sys::signal::Signal::SIGQUIT,
                nix::sys::signal::Signal::SIGHUP,
            ] {
                // SAFETY: setting a disposition to SIG_IGN installs no handler code.
                unsafe {
                    let _ = nix::sys::signal::signal(s, nix::sys::signal::SigHandler::SigIgn);
                }
            }
            loop {
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, c)) => return Ok(c),
                    Ok(WaitStatus::Signaled(_, s, _)) => return Ok(128 + s as i32),
                    Ok(_) => continue,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(format!("wait: {e}")),
                }
            }
        }
    }
}
