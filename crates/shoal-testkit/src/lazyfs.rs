//! A `shoal-lazyfs` mount owned by a test: a disk whose unsynced data a test can drop
//! ("cut the power"), unmounted and its process reaped on drop, also when the test panics.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::process::{Proc, log_tail};
use crate::{bin, eventually};

/// The line `shoal-lazyfs` prints for each power cut.
const CUT_LINE: &str = "shoal-lazyfs: power cut:";

/// True while `mount` (canonical) is a mount point in this process's mount namespace.
pub fn is_mounted(mount: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = mount.as_os_str().as_bytes();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| m.as_bytes() == want)
}

/// Detaches whatever is mounted at `mount` (`umount2(MNT_DETACH)`).
fn detach(mount: &Path) -> Result<(), String> {
    let c = CString::new(mount.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: umount2(2) with a NUL-terminated path that lives across the call.
    let r = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    if r == 0 {
        Ok(())
    } else {
        Err(format!(
            "umount {}: {}",
            mount.display(),
            std::io::Error::last_os_error()
        ))
    }
}

/// A running `shoal-lazyfs BACKING MOUNT` (root only: it mounts with mount(2)).
#[derive(Debug)]
pub struct LazyMount {
    proc: Proc,
    mount: PathBuf,
    cuts: usize,
}

impl LazyMount {
    /// Mounts `backing` at `mount` (both created if missing) with [`bin`]`("shoal-lazyfs")`,
    /// its output appended to `log`; returns once the mount is there.
    pub fn start(backing: &Path, mount: &Path, log: &Path) -> LazyMount {
        Self::start_with(&bin("shoal-lazyfs"), backing, mount, log)
    }

    /// [`LazyMount::start`] with the binary at `program`.
    ///
    /// # Panics
    /// When the process exits or the mount does not appear within 10 s (with its log).
    pub fn start_with(program: &Path, backing: &Path, mount: &Path, log: &Path) -> LazyMount {
        for d in [backing, mount] {
            std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
        }
        let mount = mount
            .canonicalize()
            .unwrap_or_else(|e| panic!("{}: {e}", mount.display()));
        let name = format!("shoal-lazyfs at {}", mount.display());
        let proc = Proc::spawn(
            &name,
            std::process::Command::new(program).arg(backing).arg(&mount),
            log,
        );
        let mut m = LazyMount {
            proc,
            mount,
            cuts: 0,
        };
        eventually(
            &format!("{name} to be mounted"),
            Duration::from_secs(10),
            || {
                if is_mounted(&m.mount) {
                    Ok(())
                } else if !m.proc.is_running() {
                    panic!("{name} did not mount: {}", m.proc.report(20))
                } else {
                    Err(log_tail(log, 5))
                }
            },
        );
        m
    }

    /// The mount point (canonical).
    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// The process's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// Sends SIGUSR1 (drop every unsynced write) without waiting for it to be done; see
    /// [`LazyMount::wait_cut`].
    pub fn signal_cut(&mut self) {
        let pid = self.pid().expect("shoal-lazyfs is running");
        // SAFETY: kill(2) on the PID of our own child, which is not reaped yet (we hold
        // its `Child`), so the PID cannot have been reused.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGUSR1);
        }
        self.cuts += 1;
    }

    /// Waits (10 s) until every cut signalled so far is done; returns the last cut's line
    /// (`… dropped N unsynced bytes of F files`).
    pub fn wait_cut(&mut self) -> String {
        let want = self.cuts;
        let log = self.proc.log().to_path_buf();
        eventually(
            &format!("power cut {want} of {}", self.mount.display()),
            Duration::from_secs(10),
            || {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().filter(|l| l.contains(CUT_LINE)).collect();
                if lines.len() >= want {
                    Ok(lines[want - 1].to_string())
                } else {
                    Err(format!(
                        "{} cut lines; log: {}",
                        lines.len(),
                        log_tail(&log, 5)
                    ))
                }
            },
        )
    }

    /// Cuts the power ([`LazyMount::signal_cut`], [`LazyMount::wait_cut`]).
    pub fn cut(&mut self) -> String {
        self.signal_cut();
        self.wait_cut()
    }

    /// `NAME (pid P): running|exited; last N lines of its log`.
    pub fn report(&mut self, lines: usize) -> String {
        self.proc.report(lines)
    }

    /// SIGTERM (unmount; unsynced data is dropped), wait 10 s for the exit, then make
    /// sure nothing is left mounted (SIGKILL and a lazy unmount otherwise). `Err` says what
    /// had to be forced.
    pub fn unmount(&mut self) -> Result<(), String> {
        let mut problems = Vec::new();
        if let Err(e) = self.proc.terminate(Duration::from_secs(10)) {
            problems.push(e);
        }
        if is_mounted(&self.mount) {
            problems.push(format!("{} still mounted after exit", self.mount.display()));
            if let Err(e) = detach(&self.mount) {
                problems.push(e);
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

impl Drop for LazyMount {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            eprintln!("shoal-lazyfs at {}: {e}", self.mount.display());
        }
    }
}
