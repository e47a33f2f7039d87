//! The container side of a start: runs in the child created by `clone` with
//! new pid, mount, uts and ipc namespaces, joins the pod's network namespace,
//! builds the rootfs (overlayfs, /proc, /dev, /sys, the cgroup view, /etc
//! files, volumes), pivots into it and becomes the container's process.
//! Also the last steps shared with exec (user, capabilities, execve).

use std::convert::Infallible;
use std::ffi::CString;
use std::fs;
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use nix::sched::CloneFlags;
use nix::unistd::{Gid, Uid};

use crate::caps;
use crate::mounts;
use crate::state::ContainerConfig;

type R<T> = Result<T, String>;

fn mkdir_p(p: &Path) -> R<()> {
    fs::create_dir_all(p).map_err(|e| format!("mkdir {}: {e}", p.display()))
}

/// Joins `dest` (absolute, in the container) to `root`, refusing `..` and
/// refusing to pass through symlinks (they could point out of the rootfs).
pub fn safe_join(root: &Path, dest: &Path) -> R<PathBuf> {
    let mut cur = root.to_path_buf();
    let comps: Vec<_> = dest
        .components()
        .filter(|c| !matches!(c, Component::RootDir | Component::CurDir))
        .collect();
    for (i, c) in comps.iter().enumerate() {
        match c {
            Component::Normal(n) => cur.push(n),
            _ => {
                return Err(format!(
                    "mount destination {}: '..' not allowed",
                    dest.display()
                ));
            }
        }
        if let Ok(md) = fs::symlink_metadata(&cur)
            && md.file_type().is_symlink()
        {
            return Err(format!(
                "mount destination {}: component {} is a symlink",
                dest.display(),
                comps[..=i].len()
            ));
        }
    }
    Ok(cur)
}

/// Body of the cloned child. Never returns on success (execve).
pub(crate) fn container_main(
    cfg: &ContainerConfig,
    dir: &Path,
    sync_fd: RawFd,
    stdin_fd: Option<RawFd>,
    stdout_fd: RawFd,
    stderr_fd: RawFd,
) -> R<Infallible> {
    // Whatever the daemon's umask, what this process creates in the container's root
    // (mount points) and the container itself get Docker's 0022.
    shoal_files::set_umask(shoal_files::CONTAINER_UMASK);
    if !cfg.cgroup.layout.is_v2() {
        // v1: join by ourselves (cheap for a single thread); v2: the
        // supervisor moves us (see the sync below).
        cfg.cgroup.join_self().map_err(|e| e.to_string())?;
    }
    // stdio
    match stdin_fd {
        // SAFETY: a valid pipe end or pty slave inherited from the supervisor.
        Some(fd) => dup2(unsafe { BorrowedFd::borrow_raw(fd) }, 0)?,
        None => {
            let devnull = fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
            dup2(devnull.as_fd(), 0)?;
        }
    }
    // SAFETY: fds are valid pipe ends inherited from the supervisor.
    dup2(unsafe { BorrowedFd::borrow_raw(stdout_fd) }, 1)?;
    // SAFETY: as above.
    dup2(unsafe { BorrowedFd::borrow_raw(stderr_fd) }, 2)?;

    let netns = fs::File::open(&cfg.netns)
        .map_err(|e| format!("pod network namespace {}: {e}", cfg.netns.display()))?;
    nix::sched::setns(netns.as_fd(), CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("setns {}: {e}", cfg.netns.display()))?;
    drop(netns);
    // Every container mounts its overlay on the same empty directory: the
    // mount exists only in the container's own mount namespace.
    nix::unistd::sethostname(&cfg.hostname)
        .map_err(|e| format!("sethostname {}: {e}", cfg.hostname))?;
    // Privileged: every device node of the host (read before the plan: the plan is pure).
    let privileged_devices = if cfg.spec.security.privileged {
        mounts::host_devices(Path::new("/dev"))
    } else {
        Vec::new()
    };
    let steps = mounts::plan(&mounts::RootfsInput {
        rootfs: &cfg.rootfs_mountpoint,
        upper: dir.join("upper"),
        work: dir.join("work"),
        layers: &cfg.layer_dirs,
        cgroup_layout: &cfg.cgroup.layout,
        cgroup_rel: &cfg.cgroup.rel,
        etc_files: &cfg.etc_files,
        binds: &cfg.binds,
        host_dev: Path::new("/dev"),
        read_only_root: cfg.spec.security.read_only_rootfs,
        privileged: cfg
            .spec
            .security
            .privileged
            .then_some(privileged_devices.as_slice()),
    })?;
    mounts::apply(&steps)?;
    // Wait until the supervisor has released us (on v2, after moving us
    // into the cgroup while we set up the rootfs).
    let mut b = [0u8; 1];
    // SAFETY: sync_fd is the read end of a pipe owned by this process.
    let n = unsafe { libc::read(sync_fd, b.as_mut_ptr().cast(), 1) };
    if n != 1 {
        return Err("supervisor went away before the start".into());
    }
    // Now in the container's cgroup (v2: the supervisor has moved us): a new
    // cgroup namespace makes it the root of /proc/self/cgroup and hides the
    // host's hierarchy above it.
    nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP)
        .map_err(|e| format!("unshare cgroup namespace: {e}"))?;
    become_process(
        &cfg.argv,
        &cfg.env,
        &cfg.cwd,
        &cfg.user,
        cfg.spec.tty,
        &cfg.spec.security,
    )
}

fn dup2(from: BorrowedFd<'_>, to: RawFd) -> R<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: both are valid descriptor numbers; dup2 replaces `to` atomically.
    if unsafe { libc::dup2(from.as_raw_fd(), to) } < 0 {
        return Err(format!(
            "dup2 to fd {to}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

fn reset_signal_dispositions() {
    let dfl = KernelSigaction {
        handler: 0,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction with a valid kernel sigaction (SIG_DFL) and no
        // old-action pointer; the mask size is the kernel's 8 bytes.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &dfl as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            );
        }
    }
}

/// Open files a container process gets: soft and hard limit (the systemd
/// and Docker 25+ defaults, 1024 and 524288), never above the hard limit the
/// agent itself runs with.
pub const NOFILE_LIMIT: (u64, u64) = (1024, 524_288);

/// The container's (soft, hard) open-files limit when the agent's hard
/// limit is `current_hard`.
pub fn nofile_limits(current_hard: u64) -> (u64, u64) {
    let hard = NOFILE_LIMIT.1.min(current_hard);
    (NOFILE_LIMIT.0.min(hard), hard)
}

fn set_default_rlimits() -> R<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, cur_hard) =
        getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| format!("getrlimit nofile: {e}"))?;
    let (soft, hard) = nofile_limits(cur_hard);
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard)
        .map_err(|e| format!("setrlimit nofile ({soft}, {hard}): {e}"))
}

/// Finds `prog` in the container's PATH (inside the current root).
pub fn find_program(prog: &str, env: &[(String, String)]) -> R<PathBuf> {
    if prog.contains('/') {
        return Ok(PathBuf::from(prog));
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or(crate::spec::DEFAULT_PATH);
    for d in path.split(':').filter(|d| !d.is_empty()) {
        let p = Path::new(d).join(prog);
        if let Ok(md) = fs::metadata(&p)
            && md.is_file()
            && md.permissions().mode() & 0o111 != 0
        {
            return Ok(p);
        }
    }
    Err(format!("executable {prog:?} not found in PATH {path}"))
}

/// The last steps of a container or exec process, in the container's root:
/// user, working directory, capabilities, no_new_privs, signal mask, execve.
pub(crate) fn become_process(
    argv: &[String],
    env: &[(String, String)],
    cwd: &str,
    user: &str,
    tty: bool,
    security: &crate::spec::Security,
) -> R<Infallible> {
    if argv.is_empty() {
        return Err("no command: the image has no Entrypoint/Cmd and none was given".into());
    }
    shoal_files::set_umask(shoal_files::CONTAINER_UMASK);
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = fs::read_to_string("/etc/group").unwrap_or_default();
    let mut ids = crate::user::resolve_user(user, &passwd, &group)?;
    if security.run_as_non_root && ids.uid == 0 {
        return Err(format!(
            "container has runAsNonRoot and user {user:?} is root (uid 0)"
        ));
    }
    ids.add_groups(&security.supplemental_groups);
    if let Some(g) = security.fs_group {
        ids.add_groups(&[g]);
    }
    let cwd = if cwd.is_empty() { "/" } else { cwd };
    if !Path::new(cwd).exists() {
        mkdir_p(Path::new(cwd))?;
    }
    nix::unistd::chdir(cwd).map_err(|e| format!("chdir {cwd}: {e}"))?;
    let mut env: Vec<(String, String)> = env.to_vec();
    if !env.iter().any(|(k, _)| k == "HOME") {
        env.push(("HOME".into(), ids.home.clone()));
    }
    if tty && !env.iter().any(|(k, _)| k == "TERM") {
        env.push(("TERM".into(), "xterm".into()));
    }
    let prog = find_program(&argv[0], &env)?;

    if tty {
        nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
        // SAFETY: ioctl on fd 0 (the pty slave) with an integer argument.
        if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
            return Err(format!("TIOCSCTTY: {}", std::io::Error::last_os_error()));
        }
    }

    set_default_rlimits()?;
    // Never more than the runtime holds (a privileged container asks for all of them).
    let mask = security.cap_mask() & caps::bounding_mask(caps::last_cap());
    caps::drop_bounding(mask, caps::last_cap()).map_err(|e| e.to_string())?;
    let groups: Vec<Gid> = ids.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    nix::unistd::setgroups(&groups).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::setresgid(
        Gid::from_raw(ids.gid),
        Gid::from_raw(ids.gid),
        Gid::from_raw(ids.gid),
    )
    .map_err(|e| format!("setgid {}: {e}", ids.gid))?;
    nix::unistd::setresuid(
        Uid::from_raw(ids.uid),
        Uid::from_raw(ids.uid),
        Uid::from_raw(ids.uid),
    )
    .map_err(|e| format!("setuid {}: {e}", ids.uid))?;
    if ids.uid == 0 {
        caps::set_caps(mask).map_err(|e| e.to_string())?;
    }
    // A privileged container may gain privileges through setuid binaries, as with
    // Docker's --privileged (Kubernetes: allowPrivilegeEscalation is true).
    // SAFETY: prctl with integer arguments only.
    if !security.privileged && unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(format!("no_new_privs: {}", std::io::Error::last_os_error()));
    }
    // Rust ignores SIGPIPE, the helpers ignore terminal signals, and callers
    // may pass more: ignored dispositions survive execve, so restore every
    // signal's default (raw syscall: libc refuses its reserved 32 and 33).
    reset_signal_dispositions();
    // The supervisor blocks signals for its signalfd; the container must not inherit that.
    nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    )
    .map_err(|e| format!("sigprocmask: {e}"))?;

    // Last: the filter also refuses calls made above (setns, unshare, …).
    if !security.seccomp_unconfined && !security.privileged {
        crate::seccomp::apply_default()?;
    }
    let cprog = CString::new(prog.as_os_str().as_encoded_bytes())
        .map_err(|_| "program path contains NUL".to_string())?;
    let cargs: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<_, _>>()
        .map_err(|_| "argument contains NUL".to_string())?;
    let cenv: Vec<CString> = env
        .iter()
        .map(|(k, v)| CString::new(format!("{k}={v}")))
        .collect::<Result<_, _>>()
        .map_err(|_| "environment contains NUL".to_string())?;
    let e = nix::unistd::execve(&cprog, &cargs, &cenv)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    Err(format!("exec {}: {e}", prog.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_join_rejects_escapes() {
        let t = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc", t.path().join("evil")).unwrap();
        assert_eq!(
            safe_join(t.path(), Path::new("/data/x")).unwrap(),
            t.path().join("data/x")
        );
        assert!(safe_join(t.path(), Path::new("/evil/x")).is_err());
        assert!(safe_join(t.path(), Path::new("/a/../../x")).is_err());
    }

    #[test]
    fn nofile_limits_never_raise_the_hard_limit() {
        assert_eq!(nofile_limits(u64::MAX), (1024, 524_288));
        assert_eq!(nofile_limits(20_000), (1024, 20_000));
        assert_eq!(nofile_limits(512), (512, 512));
    }

    #[test]
    fn finds_programs() {
        let env = vec![("PATH".to_string(), "/nonexistent:/bin:/usr/bin".to_string())];
        assert!(find_program("sh", &env).unwrap().ends_with("sh"));
        assert_eq!(find_program("/x/y", &env).unwrap(), PathBuf::from("/x/y"));
        assert!(find_program("no-such-program-here", &env).is_err());
    }
}
