//! A real OCI registry for tests: Debian's `docker-registry` (the CNCF distribution
//! registry) on `127.0.0.1:<free port>` with its own config, storage and htpasswd file
//! in a temporary directory, plain HTTP or TLS; images pushed into it with `skopeo`.
//! The process is owned by a [`Proc`] (killed by PID on drop) and the directory removed
//! with it, also when the test panics.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{Proc, free_port};

/// The registry binary (`apt-get install docker-registry`).
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A running test registry.
#[derive(Debug)]
pub struct TestRegistry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The user and password htpasswd accepts, if auth is on.
    pub creds: Option<(String, String)>,
    /// The CA certificate (PEM file) that signed the server's, when TLS is on.
    pub ca_file: Option<PathBuf>,
    proc: Option<Proc>,
    dir: tempfile::TempDir,
}

impl TestRegistry {
    /// Starts a registry. `creds`: htpasswd auth with this user and password; `tls`:
    /// (certificate chain PEM, key PEM, CA PEM) for HTTPS.
    ///
    /// # Panics
    /// When a tool is missing (naming the package) or the registry does not listen
    /// within 20 s (with its log).
    pub fn start(creds: Option<(&str, &str)>, tls: Option<(&str, &str, &str)>) -> TestRegistry {
        let dir = tempfile::tempdir().expect("temporary directory for the registry");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: shoal-test-{port}\n",
            dir.path().join("data").display()
        );
        let mut ca_file = None;
        if let Some((cert, key, ca)) = tls {
            let (c, k, a) = (
                dir.path().join("server.pem"),
                dir.path().join("server.key"),
                dir.path().join("ca.pem"),
            );
            for (p, d) in [(&c, cert), (&k, key), (&a, ca)] {
                std::fs::write(p, d).expect("write the registry's TLS files");
            }
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                c.display(),
                k.display()
            ));
            ca_file = Some(a);
        }
        if let Some((user, pass)) = creds {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, pass])
                .output()
                .unwrap_or_else(|e| panic!("htpasswd (apt-get install apache2-utils): {e}"));
            assert!(out.status.success(), "htpasswd: {out:?}");
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, &out.stdout).expect("write htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: shoal-test\n    path: {}\n",
                file.display()
            ));
        }
        let conf = dir.path().join("config.yml");
        std::fs::write(&conf, config).expect("write the registry config");
        assert!(
            Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} is missing: apt-get install docker-registry (scripts/setup.sh test)"
        );
        let mut proc = Proc::spawn(
            "docker-registry",
            Command::new(REGISTRY_BIN).arg("serve").arg(&conf),
            &dir.path().join("registry.log"),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                Instant::now() < deadline && proc.is_running(),
                "the registry does not listen on {addr}: {}",
                proc.report(30)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        TestRegistry {
            addr,
            creds: creds.map(|(u, p)| (u.to_string(), p.to_string())),
            ca_file,
            proc: Some(proc),
            dir,
        }
    }

    /// The registry's log (for failure messages).
    pub fn log(&mut self) -> String {
        self.proc.as_mut().map(|p| p.report(30)).unwrap_or_default()
    }

    /// Pushes a `docker save` tarball as `REPO:TAG` with skopeo (`format`: `v2s2` or
    /// `oci`) and returns the manifest digest skopeo reports.
    ///
    /// # Panics
    /// When skopeo fails (with its output).
    pub fn push(&self, archive: &Path, repo_tag: &str, format: &str) -> String {
        let digest_file = self.dir.path().join("digest");
        let mut cmd = Command::new("skopeo");
        cmd.args([
            "--insecure-policy",
            "copy",
            "--format",
            format,
            "--digestfile",
        ])
        .arg(&digest_file);
        if let Some((u, p)) = &self.creds {
            cmd.arg("--dest-creds").arg(format!("{u}:{p}"));
        }
        if let Some(ca) = &self.ca_file {
            let certs = self.dir.path().join("certs.d");
            std::fs::create_dir_all(&certs).expect("skopeo cert dir");
            std::fs::copy(ca, certs.join("ca.crt")).expect("copy the CA for skopeo");
            cmd.arg("--dest-cert-dir").arg(&certs);
        } else {
            cmd.arg("--dest-tls-verify=false");
        }
        let src = format!("docker-archive:{}", archive.display());
        let dst = format!("docker://{}/{repo_tag}", self.addr);
        let out = cmd
            .args([&src, &dst])
            .output()
            .unwrap_or_else(|e| panic!("skopeo (apt-get install skopeo): {e}"));
        assert!(
            out.status.success(),
            "skopeo copy {src} {dst}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(&digest_file)
            .expect("skopeo's digest file")
            .trim()
            .to_string()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
        // The TempDir removes config, htpasswd, TLS files and storage.
    }
}
