//! shoalctl's tests run the real binary against real controllers from the one test kit
//! (`shoal-testkit`): a one-member [`Controller`] or an n-member [`Cluster`] (member 1 forms
//! it, the others `--join` and are added with `AddMember`), every process owned from its
//! spawn and killed on drop. Watchers (`get -w`, `logs -f`, `rollout status`) are the kit's
//! [`Watcher`]: their stderr and exit status are part of every failure message.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use shoal_testkit::ControllerCluster;

/// Which client configuration (admin.conf) belongs to which controller address, so that
/// `run_ctl(ADDR, …)` uses the credentials of ADDR's cluster, as a user with that
/// cluster's admin.conf would. Addresses of no cluster get a configuration of a CA of no
/// cluster (for the unreachable/invalid address tests).
fn confs() -> &'static std::sync::Mutex<std::collections::HashMap<String, PathBuf>> {
    static M: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<String, PathBuf>>> =
        std::sync::OnceLock::new();
    M.get_or_init(Default::default)
}

/// Records that `addrs` belong to the cluster whose admin configuration is `conf`.
pub fn register(addrs: &[String], conf: PathBuf) {
    let mut m = confs().lock().unwrap_or_else(|p| p.into_inner());
    for a in addrs {
        m.insert(a.clone(), conf.clone());
    }
}

/// A client configuration signed by a CA of no cluster (kept for the whole process).
fn stranger_conf() -> PathBuf {
    static P: std::sync::OnceLock<(tempfile::TempDir, PathBuf)> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        let d = tempfile::tempdir().expect("tempdir");
        let ca = shoal_pki::Ca::generate("stranger").expect("ca");
        let who = shoal_pki::Identity::User {
            name: "stranger".into(),
            role: shoal_pki::Role::Admin,
            namespace: None,
        };
        let (c, k) = ca
            .issue(&who, &[], std::time::Duration::from_secs(3600))
            .expect("cert");
        let f = shoal_client::file::ConfigFile::single(
            "x",
            vec!["127.0.0.1:1".into()],
            ca.cert_pem(),
            "stranger",
            &c,
            &k,
            None,
        );
        let p = d.path().join("config");
        f.save(&p).expect("save");
        (d, p)
    })
    .1
    .clone()
}

/// The configuration for a `--server` list: the first registered address's cluster.
pub fn conf_for(servers: &str) -> PathBuf {
    let m = confs().lock().unwrap_or_else(|p| p.into_inner());
    servers
        .split(',')
        .find_map(|a| m.get(a.trim()).cloned())
        .unwrap_or_else(stranger_conf)
}
pub use shoal_testkit::{Watcher, eventually, free_port};

/// The `shoalctl` binary under test.
pub fn shoalctl_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_shoalctl"))
}

/// The controller binary (`$SHOAL_CONTROLLER_BIN`, else next to the test binary's target
/// directory: `cargo build -p shoal-controller` first).
pub fn controller_bin() -> PathBuf {
    shoal_testkit::bin("shoal-controller")
}

/// The workspace root (for `examples/`).
pub fn workspace() -> PathBuf {
    shoal_testkit::workspace_root()
}

/// One running controller (a one-member cluster), killed on drop.
#[derive(Debug)]
pub struct Controller {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The test's scratch directory (manifests, agent data).
    pub dir: tempfile::TempDir,
    /// Owns the process (killed on drop; its log is printed when the test panics).
    _cluster: ControllerCluster,
}

impl Controller {
    /// Starts a fresh one-member controller and waits until it serves linearizable reads.
    pub fn start() -> Controller {
        Self::start_with(&[])
    }

    /// [`Controller::start`] with extra controller flags.
    pub fn start_with(args: &[&str]) -> Controller {
        let cluster = ControllerCluster::start_args(1, args);
        register(&cluster.addrs(), cluster.admin_conf());
        Controller {
            addr: cluster.addr(1),
            dir: tempfile::tempdir().expect("tempdir"),
            _cluster: cluster,
        }
    }

    /// Runs `shoalctl --server ADDR ARGS…`.
    pub fn ctl(&self, args: &[&str]) -> Run {
        run_ctl(&self.addr, args, None)
    }

    /// Its built-in registry's `127.0.0.1:PORT`.
    pub fn registry_addr(&self) -> String {
        self._cluster.registry_addr(1)
    }

    /// Its data directory (`pki/ca.crt` is the cluster CA).
    pub fn data_dir(&self) -> PathBuf {
        self._cluster.data_dir(1)
    }

    /// Runs `shoalctl --server ADDR ARGS…` with `stdin` as standard input.
    pub fn ctl_stdin(&self, args: &[&str], stdin: &str) -> Run {
        run_ctl(&self.addr, args, Some(stdin))
    }

    /// Runs `shoalctl --server ADDR ARGS…` with extra environment variables.
    pub fn ctl_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        run_ctl_env(&self.addr, args, None, env)
    }

    /// Writes a file into the test's directory and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, text).expect("write");
        p
    }
}

/// A controller cluster of `n` members; every process is killed (by PID) and reaped on drop.
#[derive(Debug)]
pub struct Cluster {
    /// Member addresses; member `i + 1` listens on `addrs[i]`.
    pub addrs: Vec<String>,
    cluster: ControllerCluster,
}

impl Cluster {
    /// Starts `n` members as an operator would: member 1 forms the cluster, the others
    /// start with `--join` and are added one by one.
    pub fn start(n: u64) -> Cluster {
        let cluster = ControllerCluster::start(n);
        register(&cluster.addrs(), cluster.admin_conf());
        Cluster {
            addrs: cluster.addrs(),
            cluster,
        }
    }

    /// Starts member `id` (the next one: `addrs.len() + 1`) on a new port with an empty
    /// data dir and `--join` member 1, without adding it; returns its address.
    pub fn spawn_member(&mut self, id: u64) -> String {
        assert_eq!(
            id as usize,
            self.addrs.len() + 1,
            "members are started in order"
        );
        let addr = self.cluster.new_member(id);
        register(std::slice::from_ref(&addr), self.cluster.admin_conf());
        self.cluster.start_member(id);
        self.addrs.push(addr.clone());
        addr
    }

    /// The test's scratch directory.
    pub fn dir(&self) -> &Path {
        self.cluster.dir()
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
    pub fn kill(&mut self, id: u64) {
        self.cluster.kill(id);
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
    run_ctl_env(server, args, stdin, &[])
}

/// [`run_ctl`] with extra environment variables (`VISUAL` and `EDITOR` are never the
/// caller's).
pub fn run_ctl_env(server: &str, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Run {
    use std::io::Write;
    let mut cmd = Command::new(shoalctl_bin());
    cmd.arg("--server")
        .arg(server)
        .args(args)
        .env_remove("SHOAL_SERVER")
        .env_remove("VISUAL")
        .env_remove("EDITOR")
        .env("SHOAL_CONFIG", conf_for(server))
        .envs(env.iter().copied());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn shoalctl");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(text.as_bytes())
            .expect("write shoalctl stdin");
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("wait for shoalctl");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Runs `shoalctl --server SERVER ARGS…` as a [`Watcher`] (stdout read line by line; stderr
/// and exit status reported on failure).
pub fn watcher(server: &str, args: &[&str]) -> Watcher {
    let mut cmd = Command::new(shoalctl_bin());
    cmd.arg("--server")
        .arg(server)
        .args(args)
        .env_remove("SHOAL_SERVER")
        .env("SHOAL_CONFIG", conf_for(server));
    Watcher::spawn(&format!("shoalctl {}", args.join(" ")), &mut cmd)
}
