//! Fixtures: a runtime on a temporary data directory with its own cgroup
//! parent, the busybox image, and cleanup of everything on drop.

use std::path::{Path, PathBuf};
use std::time::Duration;

use shoal_runtime::cgroup::CgroupLayout;
use shoal_runtime::{
    ContainerSpec, LogOptions, PodSandbox, PodSandboxConfig, Runtime, RuntimeConfig,
};

/// The supervisor/exec helper binary of this crate.
pub fn helper_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_shoal-runtime-helper"))
}

pub use shoal_testkit::eventually;

/// A runtime for one test; removes its containers, pods, cgroups and data on drop.
pub struct TestRuntime {
    pub rt: Runtime,
    pub dir: tempfile::TempDir,
    pub cgroup_parent: String,
}

impl TestRuntime {
    pub fn new(test: &str) -> Self {
        Self::with_layout(test, None)
    }

    /// A runtime with a given cgroup layout (`None`: detected).
    pub fn with_layout(test: &str, layout: Option<CgroupLayout>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("shoal-rt-{test}-"))
            .tempdir()
            .expect("tempdir");
        let cgroup_parent = format!("shoal-test-{test}-{}", std::process::id());
        let mut cfg = Self::config(dir.path(), &cgroup_parent);
        cfg.cgroup_layout = layout;
        let rt = Runtime::new(cfg).expect("runtime");
        let t = Self {
            rt,
            dir,
            cgroup_parent,
        };
        let img = t.dir.path().join("busybox.tar");
        shoal_runtime::testimage::busybox_docker_save(
            Path::new(shoal_runtime::testimage::BUSYBOX),
            &img,
            "busybox:latest",
        )
        .expect("build busybox image");
        t.rt.images().import(&img, None).expect("import busybox");
        t
    }

    pub fn config(dir: &Path, cgroup_parent: &str) -> RuntimeConfig {
        let mut cfg = RuntimeConfig::new(dir, helper_exe());
        cfg.cgroup_parent = cgroup_parent.to_string();
        cfg
    }

    /// Another runtime instance on the same data directory (a "restarted agent").
    pub fn reopen(&self) -> Runtime {
        Runtime::new(Self::config(self.dir.path(), &self.cgroup_parent)).expect("runtime")
    }

    pub fn pod(&self, name: &str) -> PodSandbox {
        self.rt
            .create_sandbox(&PodSandboxConfig {
                name: name.into(),
                ..Default::default()
            })
            .expect("create sandbox")
    }

    /// A spec running `sh -c script` in busybox.
    pub fn sh(&self, id: &str, script: &str) -> ContainerSpec {
        let mut s = ContainerSpec::new(id, "busybox:latest");
        s.command = vec!["sh".into(), "-c".into(), script.into()];
        s.grace_period = Duration::from_secs(2);
        s
    }

    /// The container's log lines as "stream text".
    pub fn log_lines(&self, id: &str) -> Vec<String> {
        self.rt
            .logs(id, LogOptions::default())
            .expect("logs")
            .map(|l| {
                let l = l.expect("log line");
                format!("{} {}", l.stream.as_str(), l.text)
            })
            .collect()
    }
}

impl Drop for TestRuntime {
    fn drop(&mut self) {
        if let Ok(list) = self.rt.list() {
            for c in list {
                if let Err(e) = self.rt.remove(&c.id) {
                    eprintln!("cleanup: remove container {}: {e}", c.id);
                }
            }
        }
        if let Ok(pods) = self.rt.list_sandboxes() {
            for p in pods {
                if let Err(e) = self.rt.remove_sandbox(&p.name) {
                    eprintln!("cleanup: remove pod {}: {e}", p.name);
                }
            }
        }
        let dirs: Vec<PathBuf> = match self.rt.cgroup_layout() {
            CgroupLayout::V2 { root } => vec![root.join(&self.cgroup_parent)],
            CgroupLayout::V1 { mounts } => mounts
                .values()
                .map(|m| m.join(&self.cgroup_parent))
                .collect(),
        };
        for d in dirs {
            if d.exists()
                && let Err(e) = std::fs::remove_dir(&d)
            {
                eprintln!("cleanup: rmdir {}: {e}", d.display());
            }
        }
        // Removing containers and pods moves their directories to DATA/trash and starts a
        // detached cleaner on it. Wait until it is done (bounded), or the data directory's
        // removal races it and stops at the first entry the cleaner took away, leaving
        // the directory behind (TempDir ignores that error).
        let trash = self.dir.path().join("trash");
        let emptied = || {
            std::fs::read_dir(&trash).map_or(true, |mut d| {
                d.all(|e| e.is_ok_and(|e| e.file_name() == ".lock"))
            })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while (!emptied() || shoal_runtime::util::is_locked(&trash.join(".lock")))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Err(e) = std::fs::remove_dir_all(self.dir.path()) {
            eprintln!("cleanup: remove {}: {e}", self.dir.path().display());
        }
    }
}
