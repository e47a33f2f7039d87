//! Attaching to a container's main process: a copy of the writing side of its stdin (the
//! pipe's write end, or the pty master with a TTY), taken from the supervisor with
//! `pidfd_getfd(2)` (Linux 5.6). The supervisor records `PID FD DEV INO` in
//! `stdin.fd` at each start; the descriptor got is checked against DEV and INO, so a
//! number the supervisor closed and reused is refused. Output is not carried here: it goes
//! to the log as always, and attach follows the log.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// The writing side of a running container's stdin.
#[derive(Debug)]
pub struct AttachInput {
    file: File,
    /// The process runs on a pty (input is the master; resizes apply).
    pub tty: bool,
    supervisor_pid: i32,
}

/// Reads `stdin.fd` of a container directory: (supervisor pid, fd, dev, ino).
pub fn parse_stdin_record(text: &str) -> Option<(i32, i32, u64, u64)> {
    let mut w = text.split_whitespace();
    let r = (
        w.next()?.parse().ok()?,
        w.next()?.parse().ok()?,
        w.next()?.parse().ok()?,
        w.next()?.parse().ok()?,
    );
    w.next().is_none().then_some(r)
}

impl AttachInput {
    /// Takes a copy of the stdin writer the supervisor of `dir` holds.
    pub fn open(dir: &Path, tty: bool) -> io::Result<AttachInput> {
        let path = dir.join(crate::state::files::STDIN);
        let text = std::fs::read_to_string(&path)?;
        let (pid, fd, dev, ino) = parse_stdin_record(&text).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: unreadable record {text:?}", path.display()),
            )
        })?;
        // SAFETY: pidfd_open with a pid and no flags; the result is checked.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if pidfd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pidfd_open returned a new descriptor that we own from here on.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
        // SAFETY: pidfd_getfd with our pidfd, the target's fd number and no flags.
        let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pidfd_getfd returned a new descriptor (close-on-exec) that we own.
        let file = unsafe { File::from_raw_fd(got as i32) };
        let st = nix::sys::stat::fstat(&file)?;
        if st.st_dev != dev || st.st_ino != ino {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "the container's stdin is closed",
            ));
        }
        Ok(AttachInput {
            file,
            tty,
            supervisor_pid: pid,
        })
    }

    /// Writes input to the process.
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)
    }

    /// The end of the client's input: ^D on a pty; without one, the supervisor closes the
    /// pipe (SIGUSR1), so the process reads EOF (Kubernetes' `stdinOnce`).
    pub fn close(self) -> io::Result<()> {
        if self.tty {
            let mut f = self.file;
            return f.write_all(&[4]);
        }
        drop(self.file);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.supervisor_pid),
            nix::sys::signal::Signal::SIGUSR1,
        )
        .map_err(io::Error::from)
    }

    /// Sets the terminal size (TTY only).
    pub fn resize(&self, rows: u16, cols: u16) -> io::Result<()> {
        if !self.tty {
            return Ok(());
        }
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ with a valid winsize on a pty master we hold a copy of.
        if unsafe { libc::ioctl(self.file.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_records_parse() {
        assert_eq!(parse_stdin_record("12 7 5 99\n"), Some((12, 7, 5, 99)));
        assert_eq!(parse_stdin_record("12 7 5"), None);
        assert_eq!(parse_stdin_record("12 7 5 99 1"), None);
        assert_eq!(parse_stdin_record("x 7 5 99"), None);
    }
}
