//! cgroup limits, OOM kills, pids limit, usage, and the container's view of
//! /sys/fs/cgroup.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use shoal_runtime::cgroup::CgroupLayout;
use shoal_runtime::{ContainerState, Resources};

use crate::common::{TestRuntime, eventually};

fn cgroup_file(t: &TestRuntime, id: &str, controller: &str, file: &str) -> PathBuf {
    match t.rt.cgroup_layout() {
        CgroupLayout::V2 { root } => root.join(&t.cgroup_parent).join(id).join(file),
        CgroupLayout::V1 { mounts } => mounts[controller]
            .join(&t.cgroup_parent)
            .join(id)
            .join(file),
    }
}

#[test]
#[ignore = "requires root: namespaces, overlayfs, cgroups"]
fn memory_limit_oom_kill_is_reported() {
    let t = TestRuntime::new("oom");
    let pod = t.pod("oom-pod");
    let mut spec = t.sh("oom-c", "");
    spec.command = vec![
        "dd".into(),
        "if=/dev/zero".into(),
        "of=/dev/null".into(),
        "bs=100M".into(),
        "count=1".into(),
    ];
    spec.resources.memory_bytes = Some(32 << 20);
    t.rt.create_and_start(&pod, spec).expect("start");
    let st = t.rt.wait("oom-c", Duration::from_secs(30)).expect("wait");
    let exit = st.exit().expect("exited");
    assert_eq!(exit.reason, "OOMKilled", "{st:?}");
    assert_eq!(exit.signal, Some(9), "{st:?}");
    assert_eq!(exit.exit_code, 137);
}

#[test]
#[ignore = "requires root: namespaces, overlayfs, cgroups"]
fn limit_files_hold_the_values_and_the_container_sees_them() {
    let t = TestRuntime::new("limits");
    let pod = t.pod("lim-pod");
    let v2 = t.rt.cgroup_layout().is_v2();
    let inside = if v2 {
        "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/cpu.max /sys/fs/cgroup/pids.max; sleep 60"
    } else {
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.shares /sys/fs/cgroup/pids/pids.max; \
         grep -c . /sys/fs/cgroup/memory/cgroup.procs; touch /sys/fs/cgroup/memory/x 2>/dev/null && echo rw || echo ro; sleep 60"
    };
    let mut spec = t.sh("lim-c", inside);
    spec.resources = Resources {
        memory_bytes: Some(64 << 20),
        cpu_request_millis: Some(250),
        cpu_limit_millis: Some(250),
        pids: Some(20),
    };
    spec.grace_period = Duration::from_millis(100);
    t.rt.create_and_start(&pod, spec).expect("start");
    let read = |c: &str, f: &str| {
        fs::read_to_string(cgroup_file(&t, "lim-c", c, f))
            .expect("cgroup file")
            .trim()
            .to_string()
    };
    if v2 {
        assert_eq!(read("memory", "memory.max"), "67108864");
        assert_eq!(read("cpu", "cpu.max"), "25000 100000");
        assert_eq!(read("cpu", "cpu.weight"), "10");
        assert_eq!(read("pids", "pids.max"), "20");
    } else {
        assert_eq!(read("memory", "memory.limit_in_bytes"), "67108864");
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "25000");
        assert_eq!(read("cpu", "cpu.cfs_period_us"), "100000");
        assert_eq!(read("cpu", "cpu.shares"), "256");
        assert_eq!(read("pids", "pids.max"), "20");
    }
    let want: Vec<String> = if v2 {
        vec!["stdout 67108864", "stdout 25000 100000", "stdout 20"]
            .into_iter()
            .map(String::from)
            .collect()
    } else {
        vec![
            "stdout 67108864",
            "stdout 25000",
            "stdout 256",
            "stdout 20",
            "stdout 2",
            "stdout ro",
        ]
        .into_iter()
        .map(String::from)
        .collect()
    };
    eventually(
        "the container's view of its limits",
        Duration::from_secs(10),
        || {
            let l = t.log_lines("lim-c");
            if l.len() >= want.len() {
                Ok(())
            } else {
                Err(format!("{l:?}"))
            }
        },
    );
    assert_eq!(t.log_lines("lim-c"), want);
    let stats = t.rt.stats("lim-c").expect("stats");
    assert!(
        stats.memory_bytes > 0 && stats.cpu_usage_ns > 0,
        "{stats:?}"
    );
    t.rt.stop("lim-c", Duration::from_millis(100))
        .expect("stop");
    assert!(
        !cgroup_file(&t, "lim-c", "memory", "").exists(),
        "cgroup removed after exit"
    );
}

#[test]
#[ignore = "requires root: namespaces, overlayfs, cgroups"]
fn pids_limit_stops_a_fork_loop() {
    let t = TestRuntime::new("pids");
    let pod = t.pod("pids-pod");
    let mut spec = t.sh("pids-c", "(i=0; while [ $i -lt 100 ]; do sleep 30 & i=$((i+1)); done) 2>/dev/null; echo done; exec sleep 30");
    spec.resources.pids = Some(20);
    spec.grace_period = Duration::from_millis(100);
    t.rt.create_and_start(&pod, spec).expect("start");
    eventually("the loop to finish", Duration::from_secs(20), || {
        let l = t.log_lines("pids-c");
        if l.contains(&"stdout done".to_string()) {
            Ok(())
        } else {
            Err(format!("{l:?}"))
        }
    });
    let current: u64 = fs::read_to_string(cgroup_file(&t, "pids-c", "pids", "pids.current"))
        .expect("pids.current")
        .trim()
        .parse()
        .expect("number");
    assert!(current <= 20, "pids.current {current}");
    assert!(
        current >= 15,
        "the loop should have filled the limit, pids.current {current}"
    );
    // The host can still fork.
    assert!(
        std::process::Command::new("true")
            .status()
            .expect("host fork")
            .success()
    );
    let st =
        t.rt.stop("pids-c", Duration::from_millis(100))
            .expect("stop");
    assert!(matches!(st.state, ContainerState::Exited(_)), "{st:?}");
}

/// The v2 code path on a real cgroup2 file system: this hybrid host's
/// `unified` hierarchy carries no controllers, so no limits, but joining,
/// the container's view of its own cgroup and removal are the real thing.
#[test]
#[ignore = "requires root: namespaces, overlayfs, cgroups (cgroup2 mounted at /sys/fs/cgroup/unified or /sys/fs/cgroup)"]
fn cgroup_v2_path_on_a_real_cgroup2_mount() {
    let root = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.procs").exists() && p.join("cgroup.subtree_control").exists())
        .expect("a cgroup2 mount");
    let t = TestRuntime::with_layout("v2", Some(CgroupLayout::V2 { root: root.clone() }));
    let pod = t.pod("v2-pod");
    let mut spec = t.sh("v2-c", "grep '^0::' /proc/self/cgroup; test -e /sys/fs/cgroup/cgroup.procs && echo view-ok; exec sleep 30");
    spec.grace_period = Duration::from_millis(100);
    let h = t.rt.create_and_start(&pod, spec).expect("start");
    let dir = root.join(&t.cgroup_parent).join("v2-c");
    // Every kernel this runs on (5.14+) has cgroup.kill, which removal uses.
    assert!(
        dir.join("cgroup.kill").exists(),
        "{}/cgroup.kill",
        dir.display()
    );
    let procs = fs::read_to_string(dir.join("cgroup.procs")).expect("cgroup.procs");
    assert!(
        procs.lines().any(|l| l.trim() == h.pid.to_string()),
        "{procs:?} should hold {}",
        h.pid
    );
    let want = vec![
        // Its own cgroup namespace: the container's cgroup is its root.
        "stdout 0::/".to_string(),
        "stdout view-ok".to_string(),
    ];
    eventually("the container's view", Duration::from_secs(10), || {
        let l = t.log_lines("v2-c");
        if l == want {
            Ok(())
        } else {
            Err(format!("{l:?}"))
        }
    });
    t.rt.stop("v2-c", Duration::from_millis(100)).expect("stop");
    assert!(!dir.exists(), "cgroup removed after exit");
}
