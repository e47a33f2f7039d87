//! Small file-system and process helpers shared by the runtime's modules.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Writes the state file `path` atomically and durably with mode 0600
/// ([`shoal_files::write_atomic`]: temporary file, fsync, rename, fsync of the directory).
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    shoal_files::write_atomic(path, data, shoal_files::FILE_MODE)
}

/// Sixteen random hex digits from the kernel's random source.
pub fn random_hex() -> String {
    let mut buf = [0u8; 8];
    if File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_err()
    {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        buf = (nanos ^ u64::from(std::process::id())).to_le_bytes();
    }
    hex::encode(buf)
}

/// A path as a C string.
pub fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::other(format!("{}: path contains NUL", path.display())))
}

/// Gives directory `dir` to group `gid` and sets `mode` again (after the chown, which
/// may clear a setgid bit).
pub fn own_by_group(dir: &Path, gid: u32, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::os::unix::fs::chown(dir, None, Some(gid))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
}

/// Whether another process holds an exclusive `flock` on `path`.
pub fn is_locked(path: &Path) -> bool {
    let Ok(f) = File::open(path) else {
        return false;
    };
    // SAFETY: valid fd for the duration of the call.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    rc != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EWOULDBLOCK)
}

/// Names accepted for containers, pods and volumes: 1–100 of `[A-Za-z0-9_.-]`, not starting with `.` or `-`.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && !s.starts_with(['.', '-'])
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn names() {
        assert!(valid_name("web-1_a.b"));
        assert!(!valid_name("../x"));
        assert!(!valid_name(""));
        assert!(!valid_name("a/b"));
    }

    #[test]
    fn atomic_write_and_random() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f.json");
        write_atomic(&p, b"1").unwrap();
        write_atomic(&p, b"2").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"2");
        assert_eq!(random_hex().len(), 16);
        assert_ne!(random_hex(), random_hex());
    }
}

/// Prints the time since the previous mark to stderr when the environment
/// variable `SHOAL_RUNTIME_TIMING` is set (a debugging aid for
/// `shoal-agent runtime run --timing`).
#[derive(Debug)]
pub struct PhaseTimer {
    on: bool,
    what: &'static str,
    last: std::time::Instant,
}

impl PhaseTimer {
    /// Starts timing the phases of `what`.
    pub fn new(what: &'static str) -> Self {
        Self {
            on: std::env::var_os("SHOAL_RUNTIME_TIMING").is_some(),
            what,
            last: std::time::Instant::now(),
        }
    }

    /// Reports the phase that just ended.
    pub fn mark(&mut self, phase: &str) {
        if self.on {
            let now = std::time::Instant::now();
            eprintln!(
                "  [{}] {phase}: {:.3} ms",
                self.what,
                (now - self.last).as_secs_f64() * 1000.0
            );
            self.last = now;
        }
    }
}
