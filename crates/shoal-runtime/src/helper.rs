//! Dispatch for the re-executed modes of the binary that embeds the runtime
//! (the agent, or the test helper): `supervise DIR`, `exec DIR SPEC` and
//! `cleanup DIR`.
//! Call [`dispatch`] first thing in `main`, before any thread is started.

use std::ffi::OsString;
use std::path::Path;

/// If `args` (including argv[0]) name a helper mode, runs it and returns
/// the exit code; otherwise returns `None`.
pub fn dispatch(args: &[OsString]) -> Option<i32> {
    let mode = args.get(1)?.to_str()?;
    if matches!(mode, "supervise" | "exec" | "cleanup") {
        close_inherited_fds();
    }
    match mode {
        "supervise" => Some(match args.get(2) {
            Some(dir) => crate::supervisor::main(Path::new(dir)),
            None => usage(),
        }),
        "exec" => Some(match (args.get(2), args.get(3).and_then(|s| s.to_str())) {
            (Some(dir), Some(spec)) => crate::exec::main(Path::new(dir), spec),
            _ => usage(),
        }),
        "cleanup" => Some(match args.get(2) {
            Some(dir) => cleanup(Path::new(dir)),
            None => usage(),
        }),
        _ => None,
    }
}

/// Closes every descriptor above stderr that the helper inherited: whatever
/// the parent (the agent) held without close-on-exec — a userspace
/// WireGuard's TUN device and UDP sockets, say — must never reach a
/// supervisor or, through it, a container.
fn close_inherited_fds() {
    // SAFETY: close_range(2) only closes descriptors; nothing in this freshly
    // exec'd, single-threaded process uses a descriptor above 2 yet.
    let r = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if r != 0 {
        // Kernels before 5.9: close them one by one.
        if let Ok(rd) = std::fs::read_dir("/proc/self/fd") {
            let fds: Vec<i32> = rd
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .filter(|fd| *fd > 2)
                .collect();
            for fd in fds {
                // SAFETY: closing a descriptor number; a stale one gives EBADF.
                unsafe { libc::close(fd) };
            }
        }
    }
}

fn usage() -> i32 {
    eprintln!("usage: supervise DIR | exec DIR SPEC_JSON | cleanup DIR");
    2
}

/// `cleanup DIR`: detaches, then deletes every entry of DIR (the runtime's
/// trash; a pod directory's `netns` bind mount is unmounted first), holding
/// `DIR/.lock` so that only one cleaner runs at a time.
pub fn cleanup(dir: &Path) -> i32 {
    // SAFETY: called in a freshly exec'd, single-threaded helper process.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { .. }) => return 0,
        Ok(nix::unistd::ForkResult::Child) => {}
        Err(_) => return 1,
    }
    let _ = nix::unistd::setsid();
    let lock_path = dir.join(".lock");
    let Ok(lock) = std::fs::File::create(&lock_path) else {
        return 1;
    };
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return 0; // another cleaner is at work
    }
    loop {
        let entries: Vec<_> = match std::fs::read_dir(dir) {
            Ok(d) => d
                .filter_map(Result::ok)
                .filter(|e| e.file_name() != ".lock")
                .collect(),
            Err(_) => return 1,
        };
        if entries.is_empty() {
            return 0;
        }
        for e in entries {
            // A discarded pod directory may still carry its netns bind mount.
            let netns = e.path().join("netns");
            if netns.exists() {
                let _ = nix::mount::umount2(&netns, nix::mount::MntFlags::MNT_DETACH);
            }
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
