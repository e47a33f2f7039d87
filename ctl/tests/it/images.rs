//! `shoalctl image tag|save|push|pull` against real things: a controller with a busybox
//! image imported, Debian's `docker-registry` with htpasswd (checked with `skopeo`), the
//! controller's own built-in registry (TLS with the cluster CA, bearer tokens), and, in
//! the root test, a private `dockerd` that loads and runs the saved tarball.

use std::path::Path;
use std::process::Command;

use shoal_testkit::TestRegistry;

use crate::harness::{Controller, free_port};

/// Imports the busybox test image as `name` and returns its digest.
fn import_busybox(c: &Controller, name: &str) -> String {
    let tarball = shoal_testkit::image::busybox(c.dir.path(), name);
    let out = c.ctl(&["image", "import", tarball.to_str().unwrap()]).ok();
    out.split(['(', ','])
        .find(|s| s.trim().starts_with("sha256:"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| panic!("no digest in {out:?}"))
}

/// `skopeo ARGS…`: (success, stdout + stderr).
fn skopeo(args: &[&str]) -> (bool, String) {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("skopeo (apt-get install skopeo): {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The line of `image ls` for `repo` and `tag`, split in cells.
fn ls_row(c: &Controller, repo: &str, tag: &str) -> Option<Vec<String>> {
    let ls = c.ctl(&["image", "ls"]).ok();
    ls.lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|cells| cells.len() == 4 && cells[0] == repo && cells[1] == tag)
}

#[test]
#[ignore = "requires root: the controller's image store unpacks layers (ownership, device nodes)"]
fn tag_push_pull_and_save_through_a_real_registry() {
    let c = Controller::start();
    let pid = std::process::id();
    let name = format!("shoal-img/busybox-{pid}:v1");
    let digest = import_busybox(&c, &name);

    // tag: a second name for the same image; moving it to another image later is the
    // controller's plan (unit-tested there).
    let other = format!("shoal-img/other-{pid}:v2");
    let out = c.ctl(&["image", "tag", &name, &other]).ok();
    assert_eq!(out, format!("Tagged {name} as {other} ({digest})\n"));
    let row = ls_row(&c, &format!("shoal-img/other-{pid}"), "v2").expect("the new name is listed");
    assert_eq!(row[2], digest);
    let e = c.ctl(&["image", "tag", "nosuch:1", "x:1"]).err();
    assert!(e.contains("image \"nosuch:1\" not found"), "{e}");
    let e = c
        .ctl(&["image", "tag", &name, &format!("x@{digest}")])
        .err();
    assert!(e.contains("expected NAME[:TAG], not a digest"), "{e}");

    // push to a registry with htpasswd.
    let mut reg = TestRegistry::start(Some(("ci", "s3cret")), None);
    let addr = reg.addr.clone();
    let dest = format!("{addr}/shoal/busybox:v2");
    let plain = format!("http://{dest}");
    let e = c
        .ctl(&["image", "push", &other, &plain, "--creds", "ci:wrong"])
        .err();
    assert!(
        e.contains(&format!("push {dest}: unauthorized: http://{addr}"))
            && e.contains("the credentials of user \"ci\" were refused"),
        "{e}"
    );
    let e = c.ctl(&["image", "push", &other, &plain]).err();
    assert!(
        e.contains("unauthorized") && e.contains("none were given (--creds USER:PASSWORD"),
        "{e}"
    );
    let run = c.ctl(&["image", "push", &other, &plain, "--creds", "ci:s3cret"]);
    let stderr = run.stderr.clone();
    let out = run.ok();
    assert!(
        out.starts_with(&format!("{dest}: digest: {digest} size: ")),
        "{out}"
    );
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.starts_with("pushed sha256:"))
            .count(),
        2,
        "a layer and the config: {stderr}"
    );
    let (ok, text) = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        "ci:s3cret",
        &format!("docker://{dest}"),
    ]);
    assert!(ok, "skopeo inspect: {text}\n{}", reg.log());
    assert_eq!(json(&text)["Digest"], digest.as_str());
    // Again: every blob is there already.
    let run = c.ctl(&[
        "image",
        "push",
        &other,
        &format!("{addr}/shoal/busybox:v3"),
        "--plain-http",
        "--creds",
        "ci:s3cret",
    ]);
    assert_eq!(
        run.stderr
            .lines()
            .filter(|l| l.starts_with("exists "))
            .count(),
        2,
        "{run:?}"
    );
    run.ok();

    // Errors name what went wrong and where.
    let nobody = format!("127.0.0.1:{}", free_port());
    let e = c
        .ctl(&["image", "push", &name, &format!("http://{nobody}/x:1")])
        .err();
    assert!(
        e.contains(&format!("unreachable: http://{nobody}: connection refused")),
        "{e}"
    );
    let e = c
        .ctl(&[
            "image",
            "pull",
            &format!("http://{addr}/shoal/nosuch:v1"),
            "--creds",
            "ci:s3cret",
        ])
        .err();
    assert!(
        e.contains(&format!(
            "pull {addr}/shoal/nosuch:v1: not found: http://{addr}"
        )),
        "{e}"
    );

    // save: a docker-archive (and OCI layout) that skopeo reads, and our import too.
    let file = c.dir.path().join("saved.tar");
    let out = c
        .ctl(&["image", "save", &name, "-o", file.to_str().unwrap()])
        .ok();
    assert!(out.starts_with("Saved 1 image(s) to "), "{out}");
    assert!(!Path::new(&format!("{}.tmp", file.display())).exists());
    let (ok, text) = skopeo(&["inspect", &format!("docker-archive:{}", file.display())]);
    assert!(ok, "skopeo inspect docker-archive: {text}");
    let v = json(&text);
    assert_eq!(v["Layers"].as_array().map(Vec::len), Some(1), "{text}");
    assert_eq!(v["Architecture"], "amd64", "{text}");
    let (ok, text) = skopeo(&["inspect", &format!("oci-archive:{}", file.display())]);
    assert!(ok, "skopeo inspect oci-archive: {text}");
    assert_eq!(json(&text)["Digest"], digest.as_str(), "{text}");

    let e = c.ctl(&["image", "pull", &plain]).err();
    assert!(
        e.contains(&format!("pull {dest}: unauthorized: http://{addr}"))
            && e.contains("(--creds USER:PASSWORD, or docker login)"),
        "{e}"
    );
    // stdout: the same tarball.
    let run = Command::new(crate::harness::shoalctl_bin())
        .args(["--server", &c.addr, "image", "save", &name, "-o", "-"])
        .env("SHOAL_CONFIG", crate::harness::conf_for(&c.addr))
        .env_remove("SHOAL_SERVER")
        .output()
        .expect("run shoalctl image save -o -");
    assert!(run.status.success(), "{run:?}");
    assert_eq!(
        run.stdout,
        std::fs::read(&file).unwrap(),
        "-o - and -o FILE differ"
    );

    // pull: remove the image from the cluster, bring it back from the registry.
    c.ctl(&["image", "rm", &name, &other]).ok();
    assert!(ls_row(&c, &format!("shoal-img/other-{pid}"), "v2").is_none());
    let run = c.ctl(&[
        "image",
        "pull",
        &plain,
        "--creds",
        "ci:s3cret",
        "--tag",
        &format!("shoal-img/pulled-{pid}:v1"),
    ]);
    let stderr = run.stderr.clone();
    let out = run.ok();
    assert!(out.starts_with("Loaded image: "), "{out}");
    assert!(
        out.contains(&digest),
        "the registry's digest is kept: {out}"
    );
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.starts_with("pulled sha256:"))
            .count(),
        2,
        "{stderr}"
    );
    let row = ls_row(&c, &format!("{addr}/shoal/busybox"), "v2").expect("pulled name listed");
    assert_eq!(row[2], digest);
    let row = ls_row(&c, &format!("shoal-img/pulled-{pid}"), "v1").expect("--tag listed");
    assert_eq!(row[2], digest);
}

#[test]
#[ignore = "requires root: the controller's image store unpacks layers (ownership, device nodes)"]
fn push_to_the_built_in_registry_with_a_token_over_tls() {
    let c = Controller::start();
    let name = format!("shoal-img/builtin-{}:v1", std::process::id());
    let digest = import_busybox(&c, &name);
    let out = c
        .ctl(&[
            "token",
            "create",
            "--usage",
            "registry",
            "--user",
            "alice",
            "--role",
            "edit",
            "--namespace",
            "team-a",
        ])
        .ok();
    let token = out
        .lines()
        .find_map(|l| l.strip_prefix("token:"))
        .map(|t| t.trim().to_string())
        .unwrap_or_else(|| panic!("no token in {out:?}"));
    let reg = c.registry_addr();
    let dest = format!("{reg}/team-a/copy:v1");
    let creds = format!("alice:{token}");
    // The registry's certificate is signed by the cluster CA: unknown without --ca-file.
    let e = c
        .ctl(&["image", "push", &name, &dest, "--creds", &creds])
        .err();
    assert!(e.contains(&format!("TLS: https://{reg}")), "{e}");
    // A bearer challenge answered with a push-scoped token.
    let ca = c.data_dir().join("pki/ca.crt");
    let out = c
        .ctl(&[
            "image",
            "push",
            &name,
            &dest,
            "--creds",
            &creds,
            "--ca-file",
            ca.to_str().unwrap(),
        ])
        .ok();
    assert!(
        out.starts_with(&format!("{dest}: digest: {digest}")),
        "{out}"
    );
    let e = c
        .ctl(&[
            "image",
            "push",
            &name,
            &dest,
            "--creds",
            "alice:abcdef.0123456789abcdef",
            "--ca-file",
            ca.to_str().unwrap(),
        ])
        .err();
    assert!(e.contains("unauthorized"), "{e}");
}

#[test]
#[ignore = "requires root: a private dockerd (mounts, namespaces) and the controller's image store"]
fn saved_images_load_and_run_in_docker() {
    let c = Controller::start();
    let name = format!("shoal-img/docker-{}:v1", std::process::id());
    import_busybox(&c, &name);
    let file = c.dir.path().join("for-docker.tar");
    c.ctl(&["image", "save", &name, "-o", file.to_str().unwrap()])
        .ok();
    let mut dockerd = shoal_testkit::docker::Dockerd::start();
    let out = dockerd.docker(&["load", "-i", file.to_str().unwrap()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "docker load: {text}\n{}",
        dockerd.log()
    );
    assert!(text.contains(&format!("Loaded image: {name}")), "{text}");
    let out = dockerd.docker(&["run", "--rm", "--network", "none", &name, "echo", "hello"]);
    assert!(
        out.status.success(),
        "docker run: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        dockerd.log()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
}

/// On a terminal `image import` draws a progress bar on stderr; through a pipe it prints
/// only its result line (what scripts parse).
#[test]
#[ignore = "requires root: the controller's image store unpacks layers (ownership, device nodes)"]
fn import_shows_a_progress_bar_only_on_a_terminal() {
    let c = Controller::start();
    let tarball = shoal_testkit::image::busybox(c.dir.path(), "progress:1");
    let piped = c.ctl(&["image", "import", tarball.to_str().unwrap()]);
    assert!(!piped.stderr.contains("importing"), "{}", piped.stderr);
    assert!(piped.ok().starts_with("Loaded image: progress:1"));

    // util-linux `script` runs the command on a pseudo-terminal and copies what it shows.
    let cmd = format!(
        "{} --server {} image import --tag progress:2 {}",
        crate::harness::shoalctl_bin().display(),
        c.addr,
        tarball.display()
    );
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("SHOAL_CONFIG", crate::harness::conf_for(&c.addr))
        .env("TERM", "xterm")
        .output()
        .expect("run script (util-linux)");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains("importing ") && shown.contains("Loaded image: progress:"),
        "{shown}"
    );
}
