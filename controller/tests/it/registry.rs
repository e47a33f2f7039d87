//! The built-in registry through a real OCI client: Debian's `skopeo` logs in with a
//! registry token, pushes a real busybox image into a 3-controller cluster over TLS checked
//! against the cluster CA, and pulls back the same manifest digest — from another
//! controller after the one it pushed to was SIGKILLed. Wrong credentials, a view-only
//! token, a namespace-scoped token outside its namespace and no credentials are refused
//! with their reasons.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use shoal_proto::ResolveRequest;
use shoal_proto::access_client::AccessClient;
use shoal_proto::images_client::ImagesClient;

use crate::harness::{TestCluster, eventually};

/// A registry token through member `addr` with admin credentials.
async fn registry_token(c: &TestCluster, addr: &str, user: &str, role: &str, ns: &str) -> String {
    let conf = c.admin_conf();
    eventually("a registry token", Duration::from_secs(30), || {
        let conf = conf.clone();
        async move {
            let ch = shoal_testkit::channel(&conf, addr).await?;
            AccessClient::new(ch)
                .create_token(shoal_proto::CreateTokenRequest {
                    ttl_seconds: 3600,
                    usage: "registry".into(),
                    user: user.into(),
                    role: role.into(),
                    namespace: ns.into(),
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner().token)
                .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
        }
    })
    .await
}

/// Runs skopeo; returns (success, stdout + stderr).
fn skopeo(args: &[&str]) -> (bool, String) {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("run skopeo (Debian's skopeo; scripts/setup.sh test installs it)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn sha256_file(p: &Path) -> String {
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(std::fs::read(p).expect("read")))
    )
}

/// A directory skopeo reads as `--cert-dir`: the cluster CA as `ca.crt`.
fn cert_dir(c: &TestCluster, dir: &Path) -> PathBuf {
    let d = dir.join("certs");
    std::fs::create_dir_all(&d).expect("mkdir");
    std::fs::copy(c.data_dir(1).join("pki/ca.crt"), d.join("ca.crt")).expect("copy the CA");
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn skopeo_pushes_and_pulls_back_the_same_digest_with_tokens_and_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tarball = dir.path().join("busybox.tar");
    shoal_image::testimage::busybox_docker_save(
        Path::new(shoal_image::testimage::BUSYBOX),
        &tarball,
        "busybox:1",
    )
    .expect("build the busybox image tarball (needs Debian's busybox-static)");
    let mut c = TestCluster::start(3);
    c.wait_leader(&[1, 2, 3]).await;
    let a1 = c.addr(1);
    let (r1, r3) = (c.registry_addr(1), c.registry_addr(3));
    let certs = cert_dir(&c, dir.path());
    let certs = certs.to_str().expect("utf8");
    let auth = dir.path().join("auth.json");
    let auth = auth.to_str().expect("utf8");

    let editor = registry_token(&c, &a1, "alice", "edit", "team-a").await;
    let viewer = registry_token(&c, &a1, "bob", "view", "").await;

    // docker/skopeo login: basic credentials exchanged for a bearer token.
    let (ok, out) = skopeo(&[
        "login",
        "--authfile",
        auth,
        "--cert-dir",
        certs,
        "-u",
        "alice",
        "-p",
        &editor,
        &r1,
    ]);
    assert!(ok && out.contains("Login Succeeded"), "{out}");
    let (ok, out) = skopeo(&[
        "login",
        "--authfile",
        auth,
        "--cert-dir",
        certs,
        "-u",
        "alice",
        "-p",
        "abcdef.0123456789abcdef",
        &r1,
    ]);
    assert!(!ok, "a made-up token logs in: {out}");
    // skopeo login shows its own words for a 401 (ours are in the body; see below).
    assert!(out.contains("invalid username/password"), "{out}");

    // Push with the logged-in credentials.
    let digest_file = dir.path().join("pushed.digest");
    let dest = format!("docker://{r1}/team-a/busybox:1");
    let (ok, out) = skopeo(&[
        "copy",
        "--authfile",
        auth,
        "--dest-cert-dir",
        certs,
        "--digestfile",
        digest_file.to_str().expect("utf8"),
        &format!("docker-archive:{}", tarball.display()),
        &dest,
    ]);
    assert!(ok, "skopeo copy into the built-in registry: {out}");
    let pushed = std::fs::read_to_string(&digest_file).expect("digest file");
    let pushed = pushed.trim().to_string();
    assert!(pushed.starts_with("sha256:"), "{pushed}");

    // It is a cluster image now, by its repository name, with the pushed digest.
    let ch = shoal_testkit::channel(&c.admin_conf(), &c.addr(2))
        .await
        .expect("channel");
    let info = ImagesClient::new(ch)
        .resolve(ResolveRequest {
            name: "team-a/busybox:1".into(),
        })
        .await
        .expect("resolve the pushed image")
        .into_inner();
    assert_eq!(info.digest, pushed);
    assert_eq!(info.layers.len(), 1);

    // Refusals: no credentials; a view-only token pushing; an editor of team-a outside it;
    // a wrong password.
    let (ok, out) = skopeo(&[
        "inspect",
        "--cert-dir",
        certs,
        "--no-creds",
        &format!("docker://{r1}/team-a/busybox:1"),
    ]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("401") || out.to_lowercase().contains("unauthorized"),
        "{out}"
    );
    let (ok, out) = skopeo(&[
        "copy",
        "--dest-cert-dir",
        certs,
        "--dest-creds",
        &format!("bob:{viewer}"),
        &format!("docker-archive:{}", tarball.display()),
        &format!("docker://{r1}/team-a/other:1"),
    ]);
    assert!(!ok, "{out}");
    assert!(out.contains("edit role"), "{out}");
    let (ok, out) = skopeo(&[
        "copy",
        "--dest-cert-dir",
        certs,
        "--dest-creds",
        &format!("alice:{editor}"),
        &format!("docker-archive:{}", tarball.display()),
        &format!("docker://{r1}/team-b/busybox:1"),
    ]);
    assert!(!ok, "{out}");
    // skopeo's first request is a HEAD (no body for our reason): the status names it.
    assert!(out.contains("team-b") && out.contains("403"), "{out}");
    // The same id with a secret that differs in every character (replacing only the last
    // one with a fixed letter left it equal one time in 36).
    let (id, secret) = editor.split_once('.').expect("ID.SECRET");
    let secret: String = secret
        .chars()
        .map(|ch| if ch == 'a' { 'b' } else { 'a' })
        .collect();
    let wrong = format!("{id}.{secret}");
    let (ok, out) = skopeo(&[
        "inspect",
        "--cert-dir",
        certs,
        "--creds",
        &format!("alice:{wrong}"),
        &format!("docker://{r1}/team-a/busybox:1"),
    ]);
    assert!(!ok, "{out}");
    assert!(out.contains("wrong secret"), "{out}");

    // The controller it was pushed to dies; a view-only user pulls the same digest from
    // another one (which fetches the blobs it lacks from the second copy).
    c.kill(1);
    let out_dir = dir.path().join("pulled");
    let out_dir_s = out_dir.to_str().expect("utf8").to_string();
    let src = format!("docker://{r3}/team-a/busybox:1");
    let viewer_creds = format!("bob:{viewer}");
    eventually("pull back from member 3", Duration::from_secs(60), || {
        let (src, out_dir_s, viewer_creds) = (src.clone(), out_dir_s.clone(), viewer_creds.clone());
        async move {
            let _ = std::fs::remove_dir_all(&out_dir_s);
            let (ok, out) = skopeo(&[
                "copy",
                "--src-cert-dir",
                certs,
                "--src-creds",
                &viewer_creds,
                &src,
                &format!("dir:{out_dir_s}"),
            ]);
            if ok { Ok(()) } else { Err(out) }
        }
    })
    .await;
    assert_eq!(sha256_file(&out_dir.join("manifest.json")), pushed);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("manifest.json")).expect("manifest"))
            .expect("json");
    for l in manifest["layers"].as_array().expect("layers") {
        let d = l["digest"].as_str().expect("digest");
        let f = out_dir.join(d.trim_start_matches("sha256:"));
        assert_eq!(sha256_file(&f), d, "layer {d} pulled byte-exact");
    }
    let (ok, out) = skopeo(&[
        "inspect",
        "--cert-dir",
        certs,
        "--creds",
        &viewer_creds,
        &format!("docker://{r3}/team-a/busybox:1"),
    ]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("inspect json");
    assert_eq!(v["Digest"], pushed.as_str());
    let (ok, out) = skopeo(&[
        "list-tags",
        "--cert-dir",
        certs,
        "--creds",
        &viewer_creds,
        &format!("docker://{r3}/team-a/busybox"),
    ]);
    assert!(ok && out.contains("\"1\""), "{out}");
}
