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

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::CloneFlags;
use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use nix::unistd::{Gid, Uid};

use crate::caps;
use crate::cgroup::CgroupLayout;
use crate::state::ContainerConfig;

type R<T> = Result<T, String>;

fn m(
    src: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> R<()> {
    mount(src, target, fstype, flags, data).map_err(|e| {
        format!(
            "mount {} on {} ({}): {e}",
            src.map(|p| p.display().to_string()).unwrap_or_default(),
            target.display(),
            fstype.unwrap_or("bind")
        )
    })
}

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

fn bind(src: &Path, target: &Path, read_only: bool) -> R<()> {
    m(
        Some(src),
        target,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    if read_only {
        m(
            None,
            target,
            None,
            MsFlags::MS_BIND
                | MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV,
            None,
        )?;
    }
    Ok(())
}

fn ensure_mountpoint(target: &Path, is_dir: bool) -> R<()> {
    if is_dir {
        mkdir_p(target)
    } else {
        if let Some(p) = target.parent() {
            mkdir_p(p)?;
        }
        if !target.exists() {
            fs::write(target, b"").map_err(|e| format!("create {}: {e}", target.display()))?;
        }
        Ok(())
    }
}

/// Sets up the rootfs in the current (new) mount namespace, mounted at `rootfs`.
fn build_rootfs(cfg: &ContainerConfig, dir: &Path, rootfs: &Path) -> R<()> {
    m(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )?;
    let upper = dir.join("upper");
    let work = dir.join("work");
    let lower: Vec<String> = cfg
        .layer_dirs
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    if lower.is_empty() {
        return Err("image has no layers".into());
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={},volatile",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    m(
        Some(Path::new("overlay")),
        rootfs,
        Some("overlay"),
        MsFlags::empty(),
        Some(&opts),
    )?;

    // /proc
    let proc_ = rootfs.join("proc");
    mkdir_p(&proc_)?;
    m(
        Some(Path::new("proc")),
        &proc_,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )?;

    // /dev
    let dev = rootfs.join("dev");
    mkdir_p(&dev)?;
    m(
        Some(Path::new("tmpfs")),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        let p = dev.join(name);
        mknod(
            &p,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(major, minor),
        )
        .map_err(|e| format!("mknod {}: {e}", p.display()))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o666))
            .map_err(|e| format!("chmod {}: {e}", p.display()))?;
    }
    let pts = dev.join("pts");
    mkdir_p(&pts)?;
    m(
        Some(Path::new("devpts")),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    let shm = dev.join("shm");
    mkdir_p(&shm)?;
    m(
        Some(Path::new("shm")),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(link))
            .map_err(|e| format!("symlink /dev/{link}: {e}"))?;
    }

    // /sys read-only, with the container's own cgroups at /sys/fs/cgroup.
    let sys = rootfs.join("sys");
    mkdir_p(&sys)?;
    let ro = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    m(Some(Path::new("sysfs")), &sys, Some("sysfs"), ro, None)?;
    let cg = sys.join("fs/cgroup");
    match &cfg.cgroup.layout {
        CgroupLayout::V2 { root } => bind(&root.join(&cfg.cgroup.rel), &cg, true)?,
        CgroupLayout::V1 { mounts } => {
            m(
                Some(Path::new("tmpfs")),
                &cg,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("mode=755"),
            )?;
            let mut done: Vec<PathBuf> = Vec::new();
            for mp in mounts.values() {
                if done.contains(mp) {
                    continue;
                }
                done.push(mp.clone());
                let name = mp
                    .file_name()
                    .ok_or_else(|| format!("cgroup mount {} has no name", mp.display()))?;
                let t = cg.join(name);
                mkdir_p(&t)?;
                bind(&mp.join(&cfg.cgroup.rel), &t, true)?;
            }
            m(None, &cg, None, MsFlags::MS_REMOUNT | ro, Some("mode=755"))?;
        }
    }

    // /etc files of the pod.
    for (name, src) in &cfg.etc_files {
        let t = safe_join(rootfs, &Path::new("/etc").join(name))?;
        ensure_mountpoint(&t, false)?;
        bind(src, &t, false)?;
    }

    // Volumes.
    for (src, dest, read_only) in &cfg.binds {
        let t = safe_join(rootfs, dest)?;
        let is_dir = fs::metadata(src)
            .map_err(|e| format!("volume source {}: {e}", src.display()))?
            .is_dir();
        ensure_mountpoint(&t, is_dir)?;
        bind(src, &t, *read_only)?;
    }
    Ok(())
}

fn pivot(rootfs: &Path) -> R<()> {
    nix::unistd::chdir(rootfs).map_err(|e| format!("chdir {}: {e}", rootfs.display()))?;
    nix::unistd::pivot_root(".", ".")
        .map_err(|e| format!("pivot_root {}: {e}", rootfs.display()))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("unmount old root: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    // Read-only and masked parts of /proc, as Docker does.
    for p in ["/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"] {
        let p = Path::new(p);
        if p.exists() {
            bind(p, p, true)?;
        }
    }
    for p in ["/proc/kcore", "/proc/keys", "/proc/timer_list"] {
        let p = Path::new(p);
        if p.exists() {
            m(
                Some(Path::new("/dev/null")),
                p,
                None,
                MsFlags::MS_BIND,
                None,
            )?;
        }
    }
    Ok(())
}

/// Body of the cloned child. Never returns on success (execve).
pub(crate) fn container_main(
    cfg: &ContainerConfig,
    dir: &Path,
    sync_fd: RawFd,
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
    let devnull = fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    dup2(devnull.as_fd(), 0)?;
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
    let rootfs = &cfg.rootfs_mountpoint;
    build_rootfs(cfg, dir, rootfs)?;
    nix::unistd::sethostname(&cfg.hostname)
        .map_err(|e| format!("sethostname {}: {e}", cfg.hostname))?;
    pivot(rootfs)?;
    // Wait until the supervisor has released us (on v2, after moving us
    // into the cgroup while we set up the rootfs).
    let mut b = [0u8; 1];
    // SAFETY: sync_fd is the read end of a pipe owned by this process.
    let n = unsafe { libc::read(sync_fd, b.as_mut_ptr().cast(), 1) };
    if n != 1 {
        return Err("supervisor went away before the start".into());
    }
    become_process(&cfg.argv, &cfg.env, &cfg.cwd, &cfg.user, false)
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
) -> R<Infallible> {
    if argv.is_empty() {
        return Err("no command: the image has no Entrypoint/Cmd and none was given".into());
    }
    shoal_files::set_umask(shoal_files::CONTAINER_UMASK);
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = fs::read_to_string("/etc/group").unwrap_or_default();
    let ids = crate::user::resolve_user(user, &passwd, &group)?;
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

    let mask = caps::default_mask();
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
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
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
    fn finds_programs() {
        let env = vec![("PATH".to_string(), "/nonexistent:/bin:/usr/bin".to_string())];
        assert!(find_program("sh", &env).unwrap().ends_with("sh"));
        assert_eq!(find_program("/x/y", &env).unwrap(), PathBuf::from("/x/y"));
        assert!(find_program("no-such-program-here", &env).is_err());
    }
}
