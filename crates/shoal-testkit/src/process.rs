//! Processes a test starts: owned from the spawn, reported on failure.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// The last `n` lines of the file at `path` (empty when it cannot be read).
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn describe(status: Option<ExitStatus>) -> String {
    match status {
        None => "running".to_string(),
        Some(s) => format!("exited ({s})"),
    }
}

pub(crate) fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with the PID of a child this process spawned and has not reaped yet
    // (callers hold the `Child`), so the PID cannot have been reused.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// A process owned by a test: stdout and stderr appended to a log file, killed (SIGKILL,
/// by PID) and reaped on drop, also when the test panics.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Option<Child>,
    status: Option<ExitStatus>,
    log: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with stdin from /dev/null and its output appended to `log`.
    ///
    /// # Panics
    /// When the log cannot be opened or the program cannot be started (naming both).
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Proc {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("{name}: open log {}: {e}", log.display()));
        let out = file
            .try_clone()
            .unwrap_or_else(|e| panic!("{name}: log {}: {e}", log.display()));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: spawn {:?}: {e}", cmd.get_program()));
        Proc {
            name: name.to_string(),
            child: Some(child),
            status: None,
            log: log.to_path_buf(),
        }
    }

    /// The process's PID while it has not been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Its exit status if it has exited (reaping it), `None` while it runs.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none()
            && let Some(c) = self.child.as_mut()
            && let Ok(Some(s)) = c.try_wait()
        {
            self.status = Some(s);
            self.child = None;
        }
        self.status
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// SIGKILL and reap; returns the exit status.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            self.status = c.wait().ok();
        }
        self.status
    }

    /// SIGTERM, then waits up to `grace` for the exit; SIGKILL after that.
    /// Returns the exit status, or `Err` with a report when it had to be killed.
    pub fn terminate(&mut self, grace: Duration) -> Result<ExitStatus, String> {
        if let Some(s) = self.try_status() {
            return Ok(s);
        }
        if let Some(pid) = self.pid() {
            signal(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(s) = self.try_status() {
                return Ok(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        Err(format!(
            "did not stop within {grace:?} of SIGTERM; {}",
            self.report(20)
        ))
    }

    /// `NAME (pid P): running|exited (STATUS); last N lines of LOG:` and those lines.
    pub fn report(&mut self, lines: usize) -> String {
        let pid = self
            .pid()
            .map(|p| format!(" (pid {p})"))
            .unwrap_or_default();
        let state = describe(self.try_status());
        format!(
            "{}{pid}: {state}; last {lines} lines of {}:\n{}",
            self.name,
            self.log.display(),
            log_tail(&self.log, lines)
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A long-running command (e.g. `shoalctl get -w`) read line by line from stdout; its
/// stderr is collected and, with its exit status, is part of every failure message. Killed
/// and reaped on drop.
#[derive(Debug)]
pub struct Watcher {
    name: String,
    child: Child,
    status: Option<ExitStatus>,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
    stderr_done: Arc<std::sync::atomic::AtomicBool>,
    /// Every stdout line read so far.
    pub seen: Vec<String>,
    /// How long [`Watcher::expect`] waits (default 20 s).
    pub timeout: Duration,
}

impl Watcher {
    /// Starts `cmd` (stdin from /dev/null, stdout and stderr piped).
    ///
    /// # Panics
    /// When the program cannot be started.
    pub fn spawn(name: &str, cmd: &mut Command) -> Watcher {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: spawn {:?}: {e}", cmd.get_program()));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut err = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let stderr_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = Arc::clone(&stderr_done);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            done.store(true, std::sync::atomic::Ordering::Release);
        });
        Watcher {
            name: name.to_string(),
            child,
            status: None,
            lines: rx,
            stderr,
            stderr_done,
            seen: Vec::new(),
            timeout: Duration::from_secs(20),
        }
    }

    /// Its exit status if it has exited, `None` while it runs.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Its state, stderr and every line seen (for failure messages).
    pub fn report(&mut self) -> String {
        // Give an exiting process a moment to be reaped and its stderr to be read to the end.
        let deadline = Instant::now() + Duration::from_millis(500);
        while (self.try_status().is_none()
            || !self.stderr_done.load(std::sync::atomic::Ordering::Acquire))
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let state = describe(self.try_status());
        format!(
            "{} (pid {}): {state}; stderr: {:?}; stdout lines seen: {:#?}",
            self.name,
            self.child.id(),
            self.stderr(),
            self.seen
        )
    }

    /// Waits up to [`Watcher::timeout`] for a stdout line satisfying `pred` and returns it;
    /// panics with [`Watcher::report`] when none comes or the process ends first.
    pub fn expect(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if pred(&l) {
                        return l;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let r = self.report();
                    panic!("no line with {what} within {:?}; {r}", self.timeout)
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let r = self.report();
                    panic!("stdout closed before a line with {what}; {r}")
                }
            }
        }
    }

    /// Sends SIGINT (as Ctrl-C does), waits up to 10 s and returns the exit code (`None`
    /// when a signal ended it); panics with the report when it does not stop.
    pub fn interrupt(mut self) -> Option<i32> {
        if self.try_status().is_none() {
            signal(self.child.id(), libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.try_status() {
                return s.code();
            }
            if Instant::now() > deadline {
                let r = self.report();
                panic!("did not stop within 10 s of SIGINT; {r}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watcher_failure_carries_stderr_and_exit_status() {
        let mut w = Watcher::spawn(
            "sh",
            Command::new("sh").args(["-c", "echo one; echo 'boom: no such thing' >&2; exit 3"]),
        );
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            w.expect("two", |l| l == "two")
        }));
        let msg = *r
            .expect_err("must fail")
            .downcast::<String>()
            .expect("message");
        assert!(msg.contains("boom: no such thing"), "{msg}");
        assert!(msg.contains("exit status: 3"), "{msg}");
        assert!(msg.contains("\"one\""), "{msg}");
    }

    #[test]
    fn a_proc_is_killed_on_drop_and_reports_its_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("p.log");
        let mut p = Proc::spawn(
            "sleeper",
            Command::new("sh").args(["-c", "echo hi; exec sleep 100"]),
            &log,
        );
        let pid = p.pid().expect("pid");
        crate::eventually("the log line", Duration::from_secs(5), || {
            let t = log_tail(&log, 5);
            if t == "hi" { Ok(()) } else { Err(t) }
        });
        assert!(p.report(5).contains("running"), "{}", p.report(5));
        drop(p);
        // Reaped: the PID no longer names our child.
        // SAFETY: signal 0 only checks for existence.
        let alive = unsafe { libc::kill(pid as libc::pid_t, 0) } == 0;
        assert!(!alive, "pid {pid} still exists after drop");
    }
}
