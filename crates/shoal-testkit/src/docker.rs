//! A private Docker daemon for tests (Debian's `docker.io`, as root): `dockerd` with its
//! data root, exec root, pid file and socket in a temporary directory, no iptables and no
//! bridge (containers run with `--network none`), never the system's daemon. The guard
//! stops it by PID on drop (SIGTERM, so that it stops the containerd it started; then
//! that containerd by the PID in its pid file if it is still there), lazily unmounts
//! whatever is left mounted under the directory and removes the directory, also when the
//! test panics.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::Proc;

/// The daemon binary (`apt-get install docker.io`).
pub const DOCKERD_BIN: &str = "/usr/sbin/dockerd";

/// A running private `dockerd`.
#[derive(Debug)]
pub struct Dockerd {
    /// `unix:///…/docker.sock`, for `docker -H`.
    pub host: String,
    proc: Option<Proc>,
    dir: Option<tempfile::TempDir>,
}

impl Dockerd {
    /// Starts a daemon and waits (up to 60 s) until `docker info` answers.
    ///
    /// # Panics
    /// When dockerd is missing (naming the package) or does not answer in time (with its
    /// log).
    pub fn start() -> Dockerd {
        assert!(
            Path::new(DOCKERD_BIN).exists(),
            "{DOCKERD_BIN} is missing: apt-get install docker.io (scripts/setup.sh test)"
        );
        // Short paths: the daemon's sockets live under the exec root (108-byte limit).
        let dir = tempfile::Builder::new()
            .prefix("shoal-dk-")
            .tempdir_in("/tmp")
            .expect("temporary directory for dockerd");
        let p = |name: &str| dir.path().join(name);
        let host = format!("unix://{}", p("docker.sock").display());
        let mut cmd = Command::new(DOCKERD_BIN);
        cmd.arg("--iptables=false")
            .arg("--ip6tables=false")
            .arg("--bridge=none")
            .arg("--data-root")
            .arg(p("data"))
            .arg("--exec-root")
            .arg(p("exec"))
            .arg("--pidfile")
            .arg(p("docker.pid"))
            .arg("-H")
            .arg(&host);
        let proc = Proc::spawn("dockerd", &mut cmd, &p("dockerd.log"));
        let mut d = Dockerd {
            host,
            proc: Some(proc),
            dir: Some(dir),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = d.docker(&["info", "--format", "{{.ServerVersion}}"]);
            if out.status.success() {
                break;
            }
            let running = d.proc.as_mut().is_some_and(Proc::is_running);
            if !running || Instant::now() > deadline {
                let report = d.proc.as_mut().map(|p| p.report(40)).unwrap_or_default();
                panic!(
                    "dockerd does not answer on {}: {}\n{report}",
                    d.host,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        d
    }

    /// Runs `docker -H SOCKET ARGS…` and returns its output.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .arg("-H")
            .arg(&self.host)
            .args(args)
            .env_remove("DOCKER_HOST")
            .env("DOCKER_CONFIG", self.dir().join("client"))
            .output()
            .unwrap_or_else(|e| panic!("docker (apt-get install docker.io): {e}"))
    }

    /// The daemon's log (for failure messages).
    pub fn log(&mut self) -> String {
        self.proc.as_mut().map(|p| p.report(40)).unwrap_or_default()
    }

    fn dir(&self) -> PathBuf {
        self.dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_default()
    }
}

/// The PID in a pid file, if that process still runs.
fn live_pid(pidfile: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

/// Mount points under `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = dir.display().to_string();
    let mut out: Vec<String> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_string)
        .collect();
    out.sort_by_key(|m| std::cmp::Reverse(m.len()));
    out
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let dir = self.dir();
        if let Some(mut p) = self.proc.take()
            && let Err(e) = p.terminate(Duration::from_secs(30))
        {
            eprintln!("dockerd did not stop on SIGTERM ({e}); killed it");
        }
        // The containerd dockerd started, if dockerd could not stop it.
        if let Some(pid) = live_pid(&dir.join("exec/containerd/containerd.pid")) {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&dir.display().to_string()) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
        for m in mounts_under(&dir) {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
        if let Some(d) = self.dir.take()
            && let Err(e) = d.close()
        {
            eprintln!("removing the dockerd directory {}: {e}", dir.display());
        }
    }
}
