//! The device allowlist, for real: the v2 eBPF program attached to a cgroup
//! under this host's cgroup2 mount (hybrid hosts have one, without
//! controllers: device programs need none), and the v1 devices controller
//! of a real container.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use shoal_runtime::devices;
use shoal_runtime::{ContainerSpec, Mount, MountSource};

use crate::common::TestRuntime;

/// A cgroup directory made for one test; its processes are killed and the
/// directory removed on drop (also when the test panics).
struct TestCgroup(PathBuf);

impl TestCgroup {
    fn new(root: &Path, name: &str) -> Self {
        let p = root.join(format!("shoal-devtest-{name}-{}", std::process::id()));
        fs::create_dir(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        TestCgroup(p)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for _ in 0..200 {
            let procs = fs::read_to_string(self.0.join("cgroup.procs")).unwrap_or_default();
            for pid in procs
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                // SAFETY: kill(2) of a pid listed in our own test cgroup.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            match fs::remove_dir(&self.0) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        eprintln!("cleanup: could not remove {}", self.0.display());
    }
}

/// Starts `sh`, moves it into `cg`, then lets it open `/dev/null` and `node`
/// for reading; returns what it printed.
fn open_in_cgroup(cg: &TestCgroup, node: &Path) -> String {
    let script = format!(
        "read go; (: < /dev/null) 2>&1 && echo null-ok; (: < {}) 2>&1 && echo node-ok; exit 0",
        node.display()
    );
    let mut child = Command::new("/bin/sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sh");
    fs::write(cg.0.join("cgroup.procs"), child.id().to_string()).expect("move into the cgroup");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
#[ignore = "requires root: bpf(2), mknod, a cgroup2 mount"]
fn the_v2_device_program_allows_null_and_denies_kmsg() {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let root = devices::cgroup2_mount(&mountinfo).expect("a cgroup2 mount on this host");
    let tmp = tempfile::tempdir().expect("tempdir");
    // /dev/kmsg's numbers (1:11): outside the allowlist, and a driver this
    // kernel has (it has no /dev/mem: 1:1 opens with ENXIO even on the host,
    // so it could not show the control working).
    let mem = tmp.path().join("kmsg");
    mknod(
        &mem,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o600),
        makedev(1, 11),
    )
    .expect("mknod");

    // Control: in a cgroup without the program the node opens.
    let plain = TestCgroup::new(&root, "plain");
    let out = open_in_cgroup(&plain, &mem);
    assert!(
        out.contains("null-ok") && out.contains("node-ok"),
        "control: {out}"
    );

    let filtered = TestCgroup::new(&root, "filtered");
    devices::attach_v2(&filtered.0, &devices::default_allowlist()).expect("attach");
    let out = open_in_cgroup(&filtered, &mem);
    assert!(out.contains("null-ok"), "/dev/null is allowed: {out}");
    assert!(!out.contains("node-ok"), "1:11 must be refused: {out}");
    assert!(
        out.contains("Operation not permitted"),
        "EPERM expected: {out}"
    );
}

#[test]
#[ignore = "requires root: namespaces, overlayfs, cgroups, mknod"]
fn a_container_cannot_open_a_disallowed_device_node_even_as_root() {
    // Nodes made on the host in a directory bind-mounted into the container
    // without nodev: only the device cgroup stands between root in the
    // container and a kmsg node (1:11; this kernel has no /dev/mem driver);
    // /dev/null (1:3) is the control.
    let t = TestRuntime::new("hdevcg");
    let vol = t.dir.path().join("devvol");
    fs::create_dir(&vol).expect("mkdir");
    for (name, minor) in [("mem", 11), ("null", 3)] {
        mknod(
            &vol.join(name),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(1, minor),
        )
        .expect("mknod");
    }
    // On the host both open (the host is not restricted).
    fs::File::open(vol.join("mem")).expect("host opens its own 1:11 node");
    let pod = t.pod("hdevcg-pod");
    let mut spec: ContainerSpec = t.sh(
        "hdevcg-c",
        "awk '$5 == \"/v\" { print \"v-opts \" $6 }' /proc/self/mountinfo; \
         (: < /v/null) && echo null-ok; (: < /v/mem) 2>&1 || echo mem-refused; \
         (echo x > /v/mem) 2>&1 || echo mem-write-refused",
    );
    spec.mounts.push(Mount {
        source: MountSource::HostPath(vol.clone()),
        destination: "/v".into(),
        read_only: false,
    });
    t.rt.create_and_start(&pod, spec).expect("start");
    let st =
        t.rt.wait("hdevcg-c", Duration::from_secs(20))
            .expect("wait");
    let out = t.log_lines("hdevcg-c");
    assert_eq!(st.exit().map(|e| e.exit_code), Some(0), "{out:?}");
    let opts = out
        .iter()
        .find_map(|l| l.strip_prefix("stdout v-opts "))
        .unwrap_or_else(|| panic!("no /v mount: {out:?}"));
    assert!(
        !opts.split(',').any(|o| o == "nodev"),
        "the volume must not be nodev, or this tests the mount instead: {opts}"
    );
    assert!(
        out.iter().any(|l| l == "stdout null-ok"),
        "control: {out:?}"
    );
    assert!(out.iter().any(|l| l == "stdout mem-refused"), "{out:?}");
    assert!(
        out.iter().any(|l| l == "stdout mem-write-refused"),
        "{out:?}"
    );
    assert!(
        out.iter().any(|l| l.contains("Operation not permitted")),
        "EPERM from the device cgroup: {out:?}"
    );
}
