//! A sealed in-memory copy of the helper binary (the agent), against
//! CVE-2019-5736-style overwrites: the supervisor, the container's process
//! until its `execve`, and the exec helper all run this binary, and a
//! container that makes one of them execute `/proc/self/exe` (as its
//! command, or as the interpreter of a script) can reach it through
//! `/proc/PID/exe`. Spawned from a sealed memfd instead, that link names
//! the memfd: a write through it fails (`F_SEAL_WRITE`) and the file on
//! disk is out of reach. Like runc's memfd re-exec, but the copy is made
//! once per runtime, not per start.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The sealed copy; spawn helpers through [`SealedExe::path`].
#[derive(Debug)]
pub struct SealedExe {
    fd: OwnedFd,
}

impl SealedExe {
    /// Copies `exe` into a new memfd and seals it against any change. The
    /// descriptor is inherited by children (not close-on-exec) so that
    /// `/proc/self/fd/N` can be executed; helpers close it at their start.
    pub fn copy_of(exe: &Path) -> io::Result<Self> {
        let name = CString::new("shoal-helper").map_err(io::Error::other)?;
        // SAFETY: memfd_create with a valid NUL-terminated name and flags.
        let raw = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_ALLOW_SEALING) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut dst = File::from(fd.try_clone()?);
        let mut src = File::open(exe)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", exe.display())))?;
        io::copy(&mut src, &mut dst)?;
        drop(dst);
        let seals =
            libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
        // SAFETY: fcntl on a descriptor we own, integer argument.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { fd })
    }

    /// What to execute: `/proc/self/fd/N` (resolved in the child).
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_runs_and_cannot_be_written() {
        let s = SealedExe::copy_of(Path::new("/bin/true")).unwrap();
        let st = std::process::Command::new(s.path()).status().unwrap();
        assert!(st.success(), "the sealed copy runs");
        let err = std::fs::OpenOptions::new()
            .write(true)
            .open(s.path())
            .and_then(|mut f| io::Write::write_all(&mut f, b"x"))
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
        assert_eq!(
            std::fs::read(s.path()).unwrap(),
            std::fs::read("/bin/true").unwrap()
        );
    }
}
