//! A `deploy/netns-cluster` of network-namespace nodes for one test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

use crate::{bin_dir, unique_name, workspace_root};

/// Clusters are big (up to 3 controllers + 3 agents on 2 cores): one at a time per process.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
static APPLIED: AtomicUsize = AtomicUsize::new(0);

/// The longest `--name` netns-cluster accepts (its bridge is `shb-NAME`).
const MAX_NAME: usize = 11;

/// One netns cluster, owned from before its `up`: whatever `up`, the test image build or
/// the test itself does, drop runs `netns-cluster down` (printing every node's log tail
/// first when the test is panicking), so nothing is left behind.
///
/// Its name is the test's prefix plus a suffix unique to this process and call
/// ([`unique_name`]), so two runs of the suite at once, or two tests, never clash.
#[derive(Debug)]
pub struct NetnsCluster {
    /// The cluster name (`--name`), unique per process: `<prefix><suffix>`.
    pub name: String,
    /// `SHOAL_SERVER` for shoalctl: every controller address, comma-separated.
    pub server: String,
    /// `SHOAL_CONFIG` for shoalctl: the first controller's admin.conf.
    pub config: PathBuf,
    /// Directory of the binaries under test.
    pub bin: PathBuf,
    /// The busybox test image (`docker save` tarball, `busybox:latest`).
    pub image_tar: PathBuf,
    down: bool,
    tmp: tempfile::TempDir,
    _guard: std::sync::MutexGuard<'static, ()>,
}

impl NetnsCluster {
    /// Brings up `controllers` + `agents` nodes with extra controller flags, named
    /// `prefix` (cut to fit) plus a unique suffix; builds the busybox test image.
    ///
    /// # Panics
    /// When `up` or the image build fails, with their output; the cluster is torn down
    /// first.
    pub fn up(prefix: &str, controllers: u32, agents: u32, controller_args: &[&str]) -> Self {
        Self::up_with(prefix, controllers, agents, controller_args, &[])
    }

    /// [`Self::up`] with extra flags for every agent as well.
    ///
    /// # Panics
    /// As [`Self::up`].
    pub fn up_with(
        prefix: &str,
        controllers: u32,
        agents: u32,
        controller_args: &[&str],
        agent_args: &[&str],
    ) -> Self {
        let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let bin = bin_dir();
        for b in ["shoal-controller", "shoal-agent", "shoalctl"] {
            assert!(
                bin.join(b).is_file(),
                "{} is missing: run `cargo build --workspace` before the end-to-end tests",
                bin.join(b).display()
            );
        }
        let tmp = tempfile::Builder::new()
            .prefix("shoal-e2e-")
            .tempdir()
            .expect("tempdir");
        let mut c = NetnsCluster {
            name: unique_name(prefix, MAX_NAME),
            server: String::new(),
            config: PathBuf::new(),
            image_tar: tmp.path().join("busybox.tar"),
            bin,
            down: false,
            tmp,
            _guard: guard,
        };
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
        for a in agent_args {
            args.push("--agent-arg".into());
            args.push((*a).to_string());
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = c.script(&argv);
        assert!(
            out.status.success(),
            "netns-cluster --name {} up failed ({}): {}",
            c.name,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        c.server = stdout
            .lines()
            .find_map(|l| l.strip_prefix("export SHOAL_SERVER="))
            .unwrap_or_else(|| panic!("no SHOAL_SERVER in netns-cluster up output: {stdout}"))
            .trim()
            .to_string();
        c.config = stdout
            .lines()
            .find_map(|l| l.strip_prefix("export SHOAL_CONFIG="))
            .unwrap_or_else(|| panic!("no SHOAL_CONFIG in netns-cluster up output: {stdout}"))
            .trim()
            .into();
        let out = Command::new(c.bin.join("shoal-agent"))
            .args(["runtime", "image", "build-busybox"])
            .arg(&c.image_tar)
            .args(["--name", "busybox:latest"])
            .stdin(Stdio::null())
            .output()
            .expect("run shoal-agent runtime image build-busybox");
        assert!(
            out.status.success(),
            "building the busybox test image failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        c
    }

    /// The test's scratch directory.
    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// The cluster's state directory (`/run/shoal-netns/NAME`).
    pub fn state_dir(&self) -> PathBuf {
        PathBuf::from(format!("/run/shoal-netns/{}", self.name))
    }

    /// Runs `deploy/netns-cluster --name NAME --bin-dir BIN ARGS`.
    pub fn script(&self, args: &[&str]) -> Output {
        Command::new(workspace_root().join("deploy/netns-cluster"))
            .arg("--name")
            .arg(&self.name)
            .arg("--bin-dir")
            .arg(&self.bin)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run deploy/netns-cluster")
    }

    /// Runs `cmd` inside node `node`'s network namespace (`netns-cluster exec`); `node` is
    /// `c1`, `n2`, `node2` or the namespace name.
    pub fn exec(&self, node: &str, cmd: &[&str]) -> Output {
        let mut args = vec!["exec", node, "--"];
        args.extend_from_slice(cmd);
        self.script(&args)
    }

    /// [`NetnsCluster::exec`] that must succeed; returns stdout.
    pub fn exec_ok(&self, node: &str, cmd: &[&str]) -> String {
        let out = self.exec(node, cmd);
        assert!(
            out.status.success(),
            "{node}: {cmd:?} failed ({}): stdout={:?} stderr={:?}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs shoalctl against the cluster.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(self.bin.join("shoalctl"))
            .args(args)
            .env("SHOAL_SERVER", &self.server)
            .env("SHOAL_CONFIG", &self.config)
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
        let n = APPLIED.fetch_add(1, Ordering::Relaxed);
        let f = self.tmp.path().join(format!("m{n}.yaml"));
        std::fs::write(&f, yaml).expect("write manifest");
        self.ctl(&["apply", "-f", f.to_str().expect("utf-8 path")])
    }

    /// `shoalctl ARGS -o json` parsed; `Err` with stderr on failure.
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
        let p = self.state_dir().join(node).join("pid");
        let s = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        s.split_whitespace()
            .next()
            .and_then(|x| x.parse().ok())
            .unwrap_or_else(|| panic!("{}: no pid", p.display()))
    }

    /// The tail of every node's log.
    pub fn logs(&self, lines: usize) -> String {
        let Ok(rd) = std::fs::read_dir(self.state_dir()) else {
            return String::new();
        };
        let mut out = Vec::new();
        for e in rd.flatten() {
            let log = e.path().join("log");
            if log.is_file() {
                out.push(format!(
                    "---- {} (last {lines} lines) ----\n{}",
                    log.display(),
                    crate::log_tail(&log, lines)
                ));
            }
        }
        out.join("\n")
    }

    /// Prints the tail of every node's log to stderr.
    pub fn dump_logs(&self) {
        eprintln!("{}", self.logs(30));
    }

    /// Tears the cluster down now (`netns-cluster down`) and returns its output; drop
    /// then does nothing more.
    pub fn down(&mut self) -> Output {
        let out = self.script(&["down"]);
        self.down = out.status.success();
        out
    }
}

impl Drop for NetnsCluster {
    fn drop(&mut self) {
        if self.down {
            return;
        }
        if std::thread::panicking() {
            self.dump_logs();
        }
        let out = self.script(&["down"]);
        if !out.status.success() {
            eprintln!(
                "netns-cluster --name {} down failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
