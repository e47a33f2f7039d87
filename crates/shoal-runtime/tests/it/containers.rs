//! Running containers: isolation, rootfs, hostname, identity, mounts.

use std::fs;
use std::time::Duration;

use shoal_runtime::{ContainerState, Mount, MountSource};

use crate::common::TestRuntime;

const ROOT: &str = "requires root: namespaces, overlayfs, cgroups";

#[test]
#[ignore = "requires root: namespaces, overlayfs, cgroups"]
fn ps_shows_only_the_container_and_pid1() {
    let t = TestRuntime::new("ps");
    let pod = t.pod("ps-pod");
    t.rt.create_and_start(
        &pod,
        t.sh("ps-c", "ps -o pid,comm; hostname; cat /etc/hostname"),
    )
    .expect("start");
    let st = t.rt.wait("ps-c", Duration::from_secs(20)).expect("wait");
    let lines = t.log_lines("ps-c");
    assert_eq!(st.exit().map(|e| e.exit_code), Some(0), "{st:?} {lines:?}");
    let procs: Vec<(u32, String)> = lines
        .iter()
        .filter_map(|l| {
            let mut f = l.split_whitespace().skip(1);
            Some((f.next()?.parse().ok()?, f.next()?.to_string()))
        })
        .collect();
    assert_eq!(
        procs,
        vec![(1, "sh".to_string()), (2, "ps".to_string())],
        "{lines:?}"
    );
    assert_eq!(
        lines.iter().filter(|l| *l == "stdout ps-pod").count(),
        2,
        "hostname and /etc/hostname: {lines:?}"
    );
    assert!(matches!(st.state, ContainerState::Exited(_)));
    let _ = ROOT;
}

#[test]
#[ignore = "requires root: namespaces, overlayfs, cgroups"]
fn writes_stay_out_of_the_layers_and_go_with_the_container() {
    let t = TestRuntime::new("cow");
    let pod = t.pod("cow-pod");
    let script = "echo new > /newfile && echo changed >> /etc/passwd && rm /bin/vi && cat /newfile";
    t.rt.create_and_start(&pod, t.sh("cow-c", script))
        .expect("start");
    let st = t.rt.wait("cow-c", Duration::from_secs(20)).expect("wait");
    assert_eq!(
        st.exit().map(|e| e.exit_code),
        Some(0),
        "{st:?} {:?}",
        t.log_lines("cow-c")
    );
    let img = t.rt.images().resolve("busybox").expect("image");
    let layer = &img.layer_dirs[0];
    assert!(!layer.join("newfile").exists());
    assert!(
        !fs::read_to_string(layer.join("etc/passwd"))
            .expect("passwd")
            .contains("changed")
    );
    assert!(
        fs::symlink_metadata(layer.join("bin/vi")).is_ok(),
        "deletion reached the layer"
    );
    let upper = t.dir.path().join("containers/cow-c/upper");
    assert_eq!(
        fs::read_to_string(upper.join("newfile")).expect("upper file"),
        "new\n"
    );
    t.rt.remove("cow-c").expect("remove");
    assert!(!upper.exists());
    // A second container from the same image does not see the first one's writes.
    t.rt.create_and_start(&pod, t.sh("cow-d", "test ! -e /newfile && test -e /bin/vi"))
        .expect("start");
    let st = t.rt.wait("cow-d", Duration::from_secs(20)).expect("wait");
    assert_eq!(st.exit().map(|e| e.exit_code), Some(0), "{st:?}");
}

#[test]
#[ignore = "requires root: namespaces, overlayfs, cgroups"]
fn identity_capabilities_env_and_filesystems() {
    let t = TestRuntime::new("ident");
    let pod = t.pod("ident-pod");
    let script = "id -u; id -g; pwd; echo $FOO; grep -E '^(CapEff|CapBnd|NoNewPrivs|SigIgn|SigBlk)' /proc/self/status; \
                  ls /dev | tr '\\n' ' '; echo; touch /sys/x 2>/dev/null && echo sys-writable || echo sys-ro; \
                  cat /proc/net/dev | grep -c ':'; grep localhost /etc/hosts | head -1";
    let mut spec = t.sh("ident-c", script);
    spec.user = Some("1000:1000".into());
    spec.working_dir = Some("/tmp".into());
    spec.env = vec![("FOO".into(), "bar".into())];
    t.rt.create_and_start(&pod, spec).expect("start");
    let st = t.rt.wait("ident-c", Duration::from_secs(20)).expect("wait");
    let out: Vec<String> = t
        .log_lines("ident-c")
        .into_iter()
        .map(|l| l.trim_start_matches("stdout ").to_string())
        .collect();
    assert_eq!(st.exit().map(|e| e.exit_code), Some(0), "{st:?} {out:?}");
    assert_eq!(&out[..4], &["1000", "1000", "/tmp", "bar"], "{out:?}");
    assert!(
        out.contains(&"CapEff:\t0000000000000000".to_string()),
        "non-root has no effective caps: {out:?}"
    );
    assert!(
        out.contains(&"CapBnd:\t00000000a00425fb".to_string()),
        "docker default bounding set: {out:?}"
    );
    assert!(out.contains(&"NoNewPrivs:\t1".to_string()), "{out:?}");
    assert!(
        out.contains(&"SigIgn:\t0000000000000000".to_string()),
        "no signal ignored (SIGPIPE!): {out:?}"
    );
    assert!(
        out.contains(&"SigBlk:\t0000000000000000".to_string()),
        "no signal blocked: {out:?}"
    );
    let devs = out.iter().find(|l| l.contains("null")).expect("ls /dev");
    for d in [
        "null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm",
    ] {
        assert!(
            devs.split_whitespace().any(|x| x == d),
            "/dev/{d} missing: {devs}"
        );
    }
    assert!(out.contains(&"sys-ro".to_string()), "{out:?}");
    assert!(
        out.contains(&"1".to_string()),
        "only lo in the pod netns: {out:?}"
    );

    // Root gets the default set as effective capabilities.
    t.rt.create_and_start(&pod, t.sh("ident-r", "grep CapEff /proc/self/status"))
        .expect("start");
    t.rt.wait("ident-r", Duration::from_secs(20)).expect("wait");
    assert_eq!(
        t.log_lines("ident-r"),
        vec!["stdout CapEff:\t00000000a00425fb"]
    );
}

#[test]
#[ignore = "requires root: namespaces, overlayfs, cgroups"]
fn host_path_volumes_honour_read_only() {
    let t = TestRuntime::new("hostpath");
    let pod = t.pod("hp-pod");
    let host = t.dir.path().join("hostdir");
    fs::create_dir(&host).expect("mkdir");
    fs::write(host.join("in"), "from-host\n").expect("write");
    let mut spec = t.sh("hp-c", "cat /ro/in; (echo x > /ro/out) 2>/dev/null && echo ro-writable || echo ro-refused; echo y > /rw/out");
    spec.mounts = vec![
        Mount {
            source: MountSource::HostPath(host.clone()),
            destination: "/ro".into(),
            read_only: true,
        },
        Mount {
            source: MountSource::HostPath(host.clone()),
            destination: "/rw".into(),
            read_only: false,
        },
    ];
    t.rt.create_and_start(&pod, spec).expect("start");
    let st = t.rt.wait("hp-c", Duration::from_secs(20)).expect("wait");
    assert_eq!(st.exit().map(|e| e.exit_code), Some(0), "{st:?}");
    assert_eq!(
        t.log_lines("hp-c"),
        vec!["stdout from-host", "stdout ro-refused"]
    );
    assert_eq!(fs::read_to_string(host.join("out")).expect("out"), "y\n");
}

#[test]
#[ignore = "requires root: namespaces, overlayfs, cgroups"]
fn start_errors_are_reported_and_leave_no_cgroup() {
    let t = TestRuntime::new("starterr");
    let pod = t.pod("se-pod");
    let mut spec = t.sh("se-c", "");
    spec.command = vec!["/no/such/binary".into()];
    let err = t.rt.create_and_start(&pod, spec).expect_err("must fail");
    assert!(err.to_string().contains("/no/such/binary"), "{err}");
    let st = t.rt.status("se-c").expect("status");
    assert_eq!(
        st.exit().map(|e| e.reason.as_str()),
        Some("StartError"),
        "{st:?}"
    );
    assert!(
        !std::path::Path::new("/sys/fs/cgroup/memory")
            .join(&t.cgroup_parent)
            .join("se-c")
            .exists()
    );
}

fn layer(entries: &[(&str, tar::EntryType)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, kind) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(*kind);
        h.set_mode(if *kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_size(0);
        b.append_data(&mut h, path, std::io::empty())
            .expect("append");
    }
    b.into_inner().expect("tar")
}

#[test]
#[ignore = "requires root: namespaces, overlayfs, cgroups"]
fn whiteouts_and_opaque_directories_hide_lower_layers() {
    use tar::EntryType::{Directory, Regular};
    let t = TestRuntime::new("whiteout");
    let base = shoal_runtime::testimage::busybox_layer(std::path::Path::new(
        shoal_runtime::testimage::BUSYBOX,
    ))
    .expect("layer");
    let l2 = layer(&[
        ("data/", Directory),
        ("data/keep", Regular),
        ("data/gone", Regular),
        ("opq/", Directory),
        ("opq/old", Regular),
    ]);
    let l3 = layer(&[
        ("data/.wh.gone", Regular),
        ("opq/", Directory),
        ("opq/.wh..wh..opq", Regular),
        ("opq/new", Regular),
        ("bin/.wh.vi", Regular),
    ]);
    let archive = t.dir.path().join("wh.tar");
    shoal_runtime::testimage::write_docker_save(&archive, "layered:1", &[base, l2, l3], &["sh"])
        .expect("archive");
    t.rt.images().import(&archive, None).expect("import");
    let pod = t.pod("wh-pod");
    let mut spec = t.sh(
        "wh-c",
        "ls /data; ls /opq; test -e /bin/vi && echo vi-present || echo vi-gone",
    );
    spec.image = "layered:1".into();
    t.rt.create_and_start(&pod, spec).expect("start");
    let st = t.rt.wait("wh-c", Duration::from_secs(20)).expect("wait");
    assert_eq!(st.exit().map(|e| e.exit_code), Some(0), "{st:?}");
    assert_eq!(
        t.log_lines("wh-c"),
        vec!["stdout keep", "stdout new", "stdout vi-gone"]
    );
}

#[test]
#[ignore = "requires root: namespaces, overlayfs, cgroups"]
fn descriptors_the_caller_leaked_do_not_reach_the_container() {
    let t = TestRuntime::new("fds");
    // Descriptors without close-on-exec, as a userspace WireGuard's TUN
    // device and sockets in the agent would be.
    let fds: Vec<i32> = (0..5)
        // SAFETY: opening a file; the descriptors are closed below.
        .map(|_| unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) })
        .collect();
    assert!(
        fds.iter().all(|fd| *fd > 2),
        "open: {}",
        std::io::Error::last_os_error()
    );
    let pod = t.pod("fds-pod");
    t.rt.create_and_start(&pod, t.sh("fds-c", "ls /proc/self/fd"))
        .expect("start");
    let st = t.rt.wait("fds-c", Duration::from_secs(20)).expect("wait");
    for fd in fds {
        // SAFETY: closing a descriptor opened above.
        unsafe { libc::close(fd) };
    }
    let lines = t.log_lines("fds-c");
    assert_eq!(st.exit().map(|e| e.exit_code), Some(0), "{st:?} {lines:?}");
    let seen: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("stdout "))
        .collect();
    // 0-2 and the one `ls` opened for /proc/self/fd.
    assert!(seen.len() <= 4, "container inherited descriptors: {seen:?}");
}
