//! A netns cluster for one test (torn down on drop, also on panic) and helpers
//! to drive it through `shoalctl`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Clusters are big (3 controllers + 3 agents on 2 cores): one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
static APPLIED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Directory holding the binaries under test: `$SHOAL_E2E_BIN_DIR` (e.g. the
/// release build of scripts/release.sh), else the workspace's, next to this
/// test binary.
pub fn bin_dir() -> PathBuf {
    let dir = match std::env::var_os("SHOAL_E2E_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe().expect("current exe");
            exe.parent()
                .and_then(Path::parent)
                .expect("target dir")
                .to_path_buf()
        }
    };
    for b in ["shoal-controller", "shoal-agent", "shoalctl"] {
        assert!(
            dir.join(b).exists(),
            "{} is missing: run `cargo build --workspace` before the end-to-end tests",
            dir.join(b).display()
        );
    }
    dir
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
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
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// One netns cluster.
#[derive(Debug)]
pub struct NetnsCluster {
    pub name: String,
    pub server: String,
    pub bin: PathBuf,
    pub image_tar: PathBuf,
    _tmp: tempfile::TempDir,
    _guard: std::sync::MutexGuard<'static, ()>,
}

impl NetnsCluster {
    /// Brings up `controllers` + `agents` nodes with extra controller flags.
    pub fn up(name: &str, controllers: u32, agents: u32, controller_args: &[&str]) -> Self {
        let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let bin = bin_dir();
        let tmp = tempfile::tempdir().expect("tempdir");
        // Leftovers of an earlier, crashed run of the same test.
        let _ = script(name, &bin, &["down"]);
        let mut args: Vec<String> = vec![
            "up".into(),
            "--controllers".into(),
            controllers.to_string(),
            "--agents".into(),
            agents.to_string(),
        ];
        for a in controller_args {
            args.push("--controller-arg".into());
            args.push((*a).to_string());
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = script(name, &bin, &argv);
        assert!(
            out.status.success(),
            "netns-cluster up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let server = stdout
            .lines()
            .find_map(|l| l.strip_prefix("export SHOAL_SERVER="))
            .expect("SHOAL_SERVER in netns-cluster output")
            .trim()
            .to_string();
        let image_tar = tmp.path().join("busybox.tar");
        let st = Command::new(bin.join("shoal-agent"))
            .args(["runtime", "image", "build-busybox"])
            .arg(&image_tar)
            .args(["--name", "busybox:latest"])
            .status()
            .expect("build busybox image");
        assert!(st.success(), "building the busybox test image failed");
        NetnsCluster {
            name: name.to_string(),
            server,
            bin,
            image_tar,
            _tmp: tmp,
            _guard: guard,
        }
    }

    /// Runs `deploy/netns-cluster --name NAME ARGS`.
    pub fn script(&self, args: &[&str]) -> Output {
        script(&self.name, &self.bin, args)
    }

    /// Runs shoalctl against the cluster.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(self.bin.join("shoalctl"))
            .args(args)
            .env("SHOAL_SERVER", &self.server)
            .stdin(Stdio::null())
            .output()
            .expect("run shoalctl")
    }

    /// Runs shoalctl and returns stdout, panicking with stderr on failure.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "shoalctl {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `shoalctl apply -f` of a manifest given as text.
    pub fn apply(&self, yaml: &str) -> Output {
        let n = APPLIED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let f = self._tmp.path().join(format!("m{n}.yaml"));
        std::fs::write(&f, yaml).expect("write manifest");
        self.ctl(&["apply", "-f", f.to_str().expect("utf-8 path")])
    }

    /// `shoalctl ARGS -o json` parsed; Err with stderr on failure.
    pub fn json(&self, args: &[&str]) -> Result<Value, String> {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let out = self.ctl(&a);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    }

    /// Pods (as JSON) matching a label selector.
    pub fn pods(&self, selector: &str) -> Result<Vec<Value>, String> {
        let v = self.json(&["get", "pods", "-l", selector])?;
        Ok(v["items"].as_array().cloned().unwrap_or_default())
    }

    /// PID of a node's main process, from the cluster's state directory.
    pub fn main_pid(&self, node: &str) -> i32 {
        let p = format!("/run/shoal-netns/{}/{node}/pid", self.name);
        let s = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"));
        s.split_whitespace()
            .next()
            .and_then(|x| x.parse().ok())
            .unwrap_or_else(|| panic!("{p}: no pid"))
    }

    /// Prints the tail of every node's log.
    pub fn dump_logs(&self) {
        let dir = format!("/run/shoal-netns/{}", self.name);
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in rd.flatten() {
            let log = e.path().join("log");
            if let Ok(s) = std::fs::read_to_string(&log) {
                let lines: Vec<&str> = s.lines().collect();
                eprintln!("---- {} (last 30 lines) ----", log.display());
                for l in &lines[lines.len().saturating_sub(30)..] {
                    eprintln!("{l}");
                }
            }
        }
    }
}

impl Drop for NetnsCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        let out = script(&self.name, &self.bin, &["down"]);
        if !out.status.success() {
            eprintln!(
                "netns-cluster down failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn script(name: &str, bin: &Path, args: &[&str]) -> Output {
    Command::new(repo().join("deploy/netns-cluster"))
        .arg("--name")
        .arg(name)
        .arg("--bin-dir")
        .arg(bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run deploy/netns-cluster")
}

/// `status.phase` of a pod.
pub fn phase(p: &Value) -> &str {
    p.pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `spec.nodeName` of a pod.
pub fn node_of(p: &Value) -> &str {
    p.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.name` of an object.
pub fn name_of(p: &Value) -> &str {
    p.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// True when the pod's Ready condition is True.
pub fn is_ready(p: &Value) -> bool {
    p.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// First container status of a pod.
pub fn container0(p: &Value) -> Value {
    p.pointer("/status/containerStatuses/0")
        .cloned()
        .unwrap_or(Value::Null)
}
