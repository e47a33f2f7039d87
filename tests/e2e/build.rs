//! Image builds on a real cluster (1 controller + 1 agent): the three Dockerfiles
//! build on the agent, land in the cluster's image store and run as pods; a second build
//! is fully cached and a changed `note.txt` rebuilds from its step on; bad Dockerfiles fail
//! with their line; a failed RUN leaves no image; `ADD` of a URL served by a pod; `commit`
//! of a container that wrote a file makes an image whose pods see the file; the build cache
//! keeps to `--build-cache-max-bytes`, least recently used first.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::harness::{NetnsCluster, eventually, phase};

fn context(c: &NetnsCluster, name: &str, dockerfile: &str) -> PathBuf {
    let dir = c.dir().join(name);
    std::fs::create_dir_all(&dir).expect("context dir");
    std::fs::write(dir.join("Dockerfile"), dockerfile).expect("Dockerfile");
    dir
}

fn build(c: &NetnsCluster, tag: &str, dir: &Path) -> String {
    c.ctl_ok(&["build", "-t", tag, dir.to_str().expect("path")])
}

/// `build` that must fail: its stderr.
fn build_err(c: &NetnsCluster, tag: &str, dir: &Path) -> String {
    let out = c.ctl(&["build", "-t", tag, dir.to_str().expect("path")]);
    assert!(!out.status.success(), "build of {tag} should fail: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `image` as a pod to its end and returns its log.
fn run_pod(c: &NetnsCluster, pod: &str, image: &str) -> String {
    let out = c.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}}}\nspec:\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {image}\n"
    ));
    assert!(out.status.success(), "apply pod {pod}: {out:?}");
    eventually(
        &format!("pod {pod} to succeed"),
        Duration::from_secs(120),
        || {
            let p = c.json(&["get", "pod", pod])?;
            match phase(&p) {
                "Succeeded" => Ok(()),
                other => Err(format!("phase {other}: {}", p["status"])),
            }
        },
    );
    c.ctl_ok(&["logs", pod])
}

/// Lines of a build's output that say CACHED, by step number.
fn cached_steps(out: &str) -> Vec<u32> {
    out.lines()
        .filter_map(|l| l.strip_suffix(" CACHED"))
        .filter_map(|l| l.strip_prefix('#')?.parse().ok())
        .collect()
}

#[test]
#[ignore = "requires root: network namespaces, containers, cgroups"]
fn dockerfiles_build_on_the_cluster_are_cached_and_run_as_pods() {
    let c = NetnsCluster::up("e2ebld", 1, 1, &[]);
    c.ctl_ok(&["image", "import", c.image_tar.to_str().expect("path")]);

    // 1: the seed's first Dockerfile.
    let one = context(
        &c,
        "one",
        "FROM busybox:latest\nRUN echo \"building super simple docker image\"\nCMD echo \"Hi container\"\n",
    );
    let out = build(&c, "first_image", &one);
    assert!(
        out.contains("#2 RUN echo \"building super simple docker image\"")
            && out.contains("#2 building super simple docker image")
            && out.contains("2 steps, 0 cached"),
        "{out}"
    );
    assert!(c.ctl_ok(&["image", "ls"]).contains("first_image"));
    assert!(run_pod(&c, "one-a", "first_image").contains("Hi container"));
    let again = build(&c, "first_image", &one);
    assert_eq!(cached_steps(&again), vec![2, 3], "{again}");
    assert!(again.contains("2 steps, 2 cached"), "{again}");

    // 2: FROM the image 1 made, ADD of a file and of a tar.gz (extracted).
    let two = context(
        &c,
        "two",
        "FROM first_image\nENV GREETING=hello-env\nWORKDIR /app\nADD note.txt /app/note.txt\nADD files.tar.gz /app/files/\nCMD [\"sh\", \"-c\", \"echo $GREETING; cat note.txt; ls files; pwd\"]\n",
    );
    std::fs::write(two.join("note.txt"), "a note from the context\n").expect("note");
    let src = c.dir().join("tar-src");
    std::fs::create_dir_all(&src).expect("tar src");
    std::fs::write(src.join("alpha.txt"), "a").expect("alpha");
    std::fs::write(src.join("beta.txt"), "b").expect("beta");
    let st = Command::new("tar")
        .arg("czf")
        .arg(two.join("files.tar.gz"))
        .arg("-C")
        .arg(&src)
        .args(["alpha.txt", "beta.txt"])
        .status()
        .expect("tar");
    assert!(st.success());
    std::fs::write(two.join(".dockerignore"), "secret.txt\n").expect("dockerignore");
    std::fs::write(two.join("secret.txt"), "not sent").expect("secret");
    let out = build(&c, "second_image", &two);
    assert!(out.contains("5 steps, 0 cached"), "{out}");
    let logs = run_pod(&c, "two-a", "second_image");
    for want in [
        "hello-env",
        "a note from the context",
        "alpha.txt",
        "beta.txt",
        "/app",
    ] {
        assert!(logs.contains(want), "{want:?} missing from {logs}");
    }
    let again = build(&c, "second_image", &two);
    assert_eq!(cached_steps(&again), vec![2, 3, 4, 5, 6], "{again}");
    // A changed note.txt: ENV and WORKDIR still come from the cache, the rest runs.
    std::fs::write(two.join("note.txt"), "a changed note\n").expect("note");
    let changed = build(&c, "second_image", &two);
    assert_eq!(cached_steps(&changed), vec![2, 3], "{changed}");
    assert!(run_pod(&c, "two-b", "second_image").contains("a changed note"));
    // .dockerignore kept secret.txt out of the context.
    let leak = context(&c, "two", "FROM busybox:latest\nCOPY secret.txt /\n");
    let e = build_err(&c, "leak", &leak);
    assert!(
        e.contains("Dockerfile:2") && e.contains("secret.txt"),
        "{e}"
    );

    // 3: multi-stage.
    let three = context(
        &c,
        "three",
        "FROM busybox:latest AS build\nRUN mkdir /out && echo 'echo built-in-stage-one' > /out/app.sh\nFROM busybox:latest\nCOPY --from=build /out/app.sh /app.sh\nCMD [\"sh\", \"/app.sh\"]\n",
    );
    build(&c, "third_image", &three);
    assert!(run_pod(&c, "three-a", "third_image").contains("built-in-stage-one"));
    let again = build(&c, "third_image", &three);
    assert_eq!(cached_steps(&again), vec![2, 4, 5], "{again}");

    // ADD of a URL: a file served by a pod (busybox httpd) on the pod network, never
    // unpacked, mode 0600; cached while the file is the same, rebuilt when it changes.
    let out = c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: busybox:latest\n    command: [\"sh\", \"-c\", \"mkdir -p /www && echo served-over-http > /www/hello.txt && exec httpd -f -p 8080 -h /www\"]\n    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}\n",
    );
    assert!(out.status.success(), "{out:?}");
    let ip = crate::harness::ready_ip(&c, "web");
    let url = context(
        &c,
        "url",
        &format!(
            "FROM busybox:latest\nADD http://{ip}:8080/hello.txt /srv/\nCMD [\"sh\", \"-c\", \"cat /srv/hello.txt; stat -c %a /srv/hello.txt\"]\n"
        ),
    );
    let out = build(&c, "url_image", &url);
    assert!(out.contains("2 steps, 0 cached"), "{out}");
    let logs = run_pod(&c, "url-a", "url_image");
    assert!(
        logs.contains("served-over-http") && logs.contains("600"),
        "{logs}"
    );
    let again = build(&c, "url_image", &url);
    assert_eq!(cached_steps(&again), vec![2, 3], "{again}");
    c.ctl_ok(&[
        "exec",
        "web",
        "--",
        "sh",
        "-c",
        "echo changed > /www/hello.txt",
    ]);
    let changed = build(&c, "url_image", &url);
    assert!(cached_steps(&changed).is_empty(), "{changed}");
    assert!(run_pod(&c, "url-b", "url_image").contains("changed"));

    // Bad input: each a clear error with its line, and no image.
    let missing = format!("FROM busybox:latest\nADD http://{ip}:8080/missing.txt /x\n");
    let cases = [
        (
            "FROM busybox:latest\nFOO bar\n",
            "Dockerfile:2: unknown instruction",
        ),
        // A registry on loopback that is not there: the pull fails without leaving the node.
        ("FROM 127.0.0.1:9/nosuch:1\nRUN true\n", "Dockerfile:1"),
        (
            "FROM busybox:latest\nCOPY ../outside /x\n",
            "outside the build context",
        ),
        (
            "FROM busybox:latest AS a\nCOPY --from=b /x /y\nFROM busybox:latest AS b\n",
            "cyclic",
        ),
        (
            "FROM busybox:latest\nRUN echo partial > /p; exit 3\n",
            "exit code 3",
        ),
        // A URL that is not there: the line, the URL and why.
        (missing.as_str(), "Dockerfile:2: ADD http://"),
    ];
    let before = c.ctl_ok(&["image", "ls"]);
    for (i, (dockerfile, want)) in cases.iter().enumerate() {
        let dir = context(&c, &format!("bad{i}"), dockerfile);
        let e = build_err(&c, &format!("bad{i}"), &dir);
        assert!(e.contains(want), "case {i}: {want:?} missing from {e}");
    }
    // The failed builds added no image, tagged or not. (Compared as whole rows: a digest is
    // hex and may well contain "bad" — it did, and a substring check failed CI.)
    let after = c.ctl_ok(&["image", "ls"]);
    assert_eq!(
        before.lines().collect::<Vec<_>>(),
        after.lines().collect::<Vec<_>>(),
        "a failed build left an image"
    );

    // commit: a container that wrote a file.
    let out = c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: writer}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: busybox:latest\n    command: [\"sh\", \"-c\", \"echo committed-file > /data.txt; exec sleep 3600\"]\n",
    );
    assert!(out.status.success(), "{out:?}");
    eventually("writer to write its file", Duration::from_secs(120), || {
        let o = c.ctl(&["exec", "writer", "--", "cat", "/data.txt"]);
        let s = String::from_utf8_lossy(&o.stdout).into_owned();
        if s.contains("committed-file") {
            Ok(())
        } else {
            Err(format!("{s} {}", String::from_utf8_lossy(&o.stderr)))
        }
    });
    let out = c.ctl_ok(&[
        "commit",
        "writer",
        "--change",
        "CMD [\"cat\", \"/data.txt\"]",
        "committed:1",
    ]);
    assert!(out.contains("committed:1"), "{out}");
    assert!(run_pod(&c, "reader", "committed:1").contains("committed-file"));
}

/// Bytes under `dirs` by `du -scb` (apparent sizes, hard links once; directories count
/// too, so this is a little above what the agent counts).
fn du(dirs: &[PathBuf]) -> u64 {
    let out = Command::new("du")
        .arg("-scb")
        .args(dirs)
        .output()
        .expect("du");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("du: {out:?}"))
}

#[test]
#[ignore = "requires root: network namespaces, containers, cgroups"]
fn the_build_cache_keeps_to_its_bound_least_recently_used_first() {
    // 12 MiB: the busybox image (~4 MB with its unpacked copy) and one build of 3 MB of
    // random data (~6 MB: the layer and its unpacked copy) fit; a second such build does not.
    const LIMIT: u64 = 12 << 20;
    let limit = format!("--build-cache-max-bytes={LIMIT}");
    let c = NetnsCluster::up_with("e2ebcache", 1, 1, &[], &[&limit]);
    c.ctl_ok(&["image", "import", c.image_tar.to_str().expect("path")]);
    let store = c.state_dir().join("n1/data/agent/build/images");
    let cache_bytes = || du(&[store.join("blobs"), store.join("layers")]);
    let df = |tag: &str| {
        format!(
            "FROM busybox:latest\nRUN head -c 3000000 /dev/urandom > /{tag}.bin\nCMD [\"ls\", \"-l\", \"/{tag}.bin\"]\n"
        )
    };
    let a = context(&c, "ca", &df("a"));
    let b = context(&c, "cb", &df("b"));

    let out = build(&c, "cache_a", &a);
    assert!(out.contains("2 steps, 0 cached"), "{out}");
    assert_eq!(cached_steps(&build(&c, "cache_a", &a)), vec![2, 3]);
    // B does not fit beside A: A, used least recently, is dropped; the base and B stay.
    build(&c, "cache_b", &b);
    assert!(
        cache_bytes() <= LIMIT,
        "{} bytes in the build store, bound {LIMIT}",
        cache_bytes()
    );
    assert_eq!(cached_steps(&build(&c, "cache_b", &b)), vec![2, 3]);
    let again = build(&c, "cache_a", &a);
    assert!(
        cached_steps(&again).is_empty(),
        "A should have been dropped from the cache: {again}"
    );
    assert!(cache_bytes() <= LIMIT, "{} bytes", cache_bytes());
    // The cluster's images are not the cache: both still run.
    assert!(run_pod(&c, "cache-b-pod", "cache_b").contains("/b.bin"));
    assert!(run_pod(&c, "cache-a-pod", "cache_a").contains("/a.bin"));
}
