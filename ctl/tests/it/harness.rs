//! Starts a one-member controller (killed on drop) and runs `shoalctl` against it.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The `shoalctl` binary under test.
pub fn shoalctl_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_shoalctl"))
}

/// The controller binary: `SHOAL_CONTROLLER_BIN`, else next to `shoalctl` (same target
/// directory), else `<workspace>/target/debug/shoal-controller`.
pub fn controller_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SHOAL_CONTROLLER_BIN") {
        return PathBuf::from(p);
    }
    let sibling = shoalctl_bin().with_file_name("shoal-controller");
    if sibling.exists() {
        return sibling;
    }
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/shoal-controller");
    assert!(
        ws.exists(),
        "no shoal-controller binary: build it (`cargo build -p shoal-controller`) or set SHOAL_CONTROLLER_BIN"
    );
    ws
}

/// The workspace root (for `examples/`).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A port nothing listens on right now (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// Polls `f` until it returns `Ok`, or panics after `timeout` with the last error.
pub fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// One running controller; the process is killed (by PID) and reaped on drop.
#[derive(Debug)]
pub struct Controller {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    child: Option<Child>,
    /// Holds the data directory and logs.
    pub dir: tempfile::TempDir,
}

impl Controller {
    /// Starts a fresh one-member controller and waits until it serves linearizable reads.
    pub fn start() -> Controller {
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.path().join("controller.log")).unwrap();
        let child = Command::new(controller_bin())
            .args(["--id", "1", "--listen", &addr, "--data-dir"])
            .arg(dir.path().join("data"))
            .env("SHOAL_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", controller_bin().display()));
        let c = Controller {
            addr,
            child: Some(child),
            dir,
        };
        eventually(
            "the controller to elect itself and serve",
            Duration::from_secs(30),
            || {
                let out = c.ctl(&["get", "pods"]);
                if out.code == 0 {
                    Ok(())
                } else {
                    Err(format!("{}; log: {}", out.stderr, c.log_tail()))
                }
            },
        );
        c
    }

    /// Runs `shoalctl --server ADDR ARGS…`.
    pub fn ctl(&self, args: &[&str]) -> Run {
        run_ctl(&self.addr, args, None)
    }

    /// Runs `shoalctl --server ADDR ARGS…` with `stdin` as standard input.
    pub fn ctl_stdin(&self, args: &[&str], stdin: &str) -> Run {
        run_ctl(&self.addr, args, Some(stdin))
    }

    /// The last lines of the controller's log (for failure messages).
    pub fn log_tail(&self) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("controller.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Writes a file into the test's directory and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A controller cluster of `n` members formed with `cluster add-member`; every process is
/// killed (by PID) and reaped on drop.
#[derive(Debug)]
pub struct Cluster {
    /// Member addresses; member `i + 1` listens on `addrs[i]`.
    pub addrs: Vec<String>,
    children: Vec<Option<Child>>,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` members as an operator would: member 1 forms the cluster, the others start
    /// with `--join` and are added one by one with `shoalctl cluster add-member`.
    pub fn start(n: usize) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Cluster {
            addrs: Vec::new(),
            children: Vec::new(),
            dir,
        };
        for id in 1..=n {
            c.spawn_member(id);
            if id == 1 {
                eventually("a leader", Duration::from_secs(30), || {
                    let out = c.ctl(&["cluster", "status"]);
                    if out.code == 0 && !out.stdout.starts_with("Leader: <none>") {
                        Ok(())
                    } else {
                        Err(format!("{out:?}"))
                    }
                });
            } else {
                let member = format!("{id}={}", c.addrs[id - 1]);
                eventually(
                    &format!("adding member {id}"),
                    Duration::from_secs(30),
                    || {
                        let out = run_ctl(&c.addrs[0], &["cluster", "add-member", &member], None);
                        if out.code == 0 {
                            Ok(())
                        } else {
                            Err(format!("{out:?}"))
                        }
                    },
                );
            }
        }
        c
    }

    /// Starts member `id` (the next one: `addrs.len() + 1`) on a new port with an empty data
    /// dir; every member after the first gets `--join` member 1.
    pub fn spawn_member(&mut self, id: usize) -> String {
        assert_eq!(id, self.addrs.len() + 1, "members are started in order");
        let addr = format!("127.0.0.1:{}", free_port());
        let id_s = id.to_string();
        let log = std::fs::File::create(self.dir.path().join(format!("c{id}.log"))).unwrap();
        let mut cmd = Command::new(controller_bin());
        cmd.args(["--id", &id_s, "--listen", &addr, "--data-dir"])
            .arg(self.dir.path().join(format!("c{id}")))
            .env("SHOAL_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if id > 1 {
            cmd.args(["--join", &self.addrs[0]]);
        }
        self.children.push(Some(cmd.spawn().unwrap()));
        self.addrs.push(addr.clone());
        addr
    }

    /// The test's scratch directory.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// All addresses, comma-separated (for `--server`).
    pub fn server_list(&self) -> String {
        self.addrs.join(",")
    }

    /// Runs `shoalctl --server ALL ARGS…`.
    pub fn ctl(&self, args: &[&str]) -> Run {
        run_ctl(&self.server_list(), args, None)
    }

    /// Runs `shoalctl --server ALL ARGS…` with `stdin`.
    pub fn ctl_stdin(&self, args: &[&str], stdin: &str) -> Run {
        run_ctl(&self.server_list(), args, Some(stdin))
    }

    /// SIGKILLs member `id` (1-based) and reaps it.
    pub fn kill(&mut self, id: usize) {
        if let Some(mut c) = self.children[id - 1].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The last lines of every member's log.
    pub fn logs(&self) -> String {
        (1..=self.addrs.len())
            .map(|id| {
                let text = std::fs::read_to_string(self.dir.path().join(format!("c{id}.log")))
                    .unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                format!(
                    "---- member {id} ----\n{}",
                    lines[lines.len().saturating_sub(15)..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for c in self.children.iter_mut().filter_map(Option::take) {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// What one `shoalctl` run did.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Asserts success and returns stdout.
    pub fn ok(self) -> String {
        assert_eq!(
            self.code, 0,
            "shoalctl failed: stdout={:?} stderr={:?}",
            self.stdout, self.stderr
        );
        self.stdout
    }

    /// Asserts failure with exactly one `error: …` line on stderr and returns it.
    pub fn err(self) -> String {
        assert_ne!(
            self.code, 0,
            "shoalctl succeeded unexpectedly: stdout={:?}",
            self.stdout
        );
        let line = self.stderr.trim_end().to_string();
        assert!(line.starts_with("error: "), "stderr: {line:?}");
        line
    }
}

/// Runs `shoalctl` with `--server` (never the caller's `SHOAL_SERVER`).
pub fn run_ctl(server: &str, args: &[&str], stdin: Option<&str>) -> Run {
    use std::io::Write;
    let mut cmd = Command::new(shoalctl_bin());
    cmd.arg("--server")
        .arg(server)
        .args(args)
        .env_remove("SHOAL_SERVER");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// A running `shoalctl get … -w`; killed on drop if still running.
pub struct Watcher {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every line read so far.
    pub seen: Vec<String>,
}

impl Watcher {
    /// Starts `shoalctl --server SERVER ARGS…`, reading its stdout line by line.
    pub fn start(server: &str, args: &[&str]) -> Watcher {
        let mut child = Command::new(shoalctl_bin())
            .arg("--server")
            .arg(server)
            .args(args)
            .env_remove("SHOAL_SERVER")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Watcher {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a line satisfying `pred`; panics with everything seen after `timeout`.
    pub fn expect(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if pred(&l) {
                        return l;
                    }
                }
                Err(_) => panic!("no line with {what} within 20s; saw: {:#?}", self.seen),
            }
        }
    }

    /// Sends SIGINT (as Ctrl-C does) and returns the exit code.
    pub fn interrupt(mut self) -> Option<i32> {
        let ok = Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "shoalctl did not stop on SIGINT");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
