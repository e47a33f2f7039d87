//! Image builds on a real cluster (1 controller + 1 agent): the three Dockerfiles
//! build on the agent, land in the cluster's image store and run as pods; a second build
//! is fully cached and a changed `note.txt` rebuilds from its step on; bad Dockerfiles fail
//! with their line; a failed RUN leaves no image; `commit` of a container that wrote a
//! file makes an image whose pods see the file.

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

    // Bad input: each a clear error with its line, and no image.
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
