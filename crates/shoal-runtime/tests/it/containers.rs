//! Running containers: isolation, rootfs, hostname.

use std::time::Duration;

use shoal_runtime::ContainerState;

use crate::common::TestRuntime;

#[test]
#[ignore = "requires root: namespaces, overlayfs, cgroups"]
fn ps_shows_only_the_container_and_pid1() {
    let t = TestRuntime::new("ps");
    let pod = t.pod("ps-pod");
    t.rt.create_and_start(&pod, t.sh("ps-c", "ps -o pid,comm; hostname; cat /etc/hostname")).expect("start");
    let st = t.rt.wait("ps-c", Duration::from_secs(20)).expect("wait");
    let lines = t.log_lines("ps-c");
    assert_eq!(st.exit().map(|e| e.exit_code), Some(0), "{st:?} {lines:?}");
    // Header, PID 1 (sh running ps as child? busybox sh execs the last command) .
    let procs: Vec<(u32, String)> = lines
        .iter()
        .filter_map(|l| {
            let mut f = l.split_whitespace().skip(1);
            Some((f.next()?.parse().ok()?, f.next()?.to_string()))
        })
        .collect();
    assert_eq!(procs, vec![(1, "sh".to_string()), (2, "ps".to_string())], "{lines:?}");
    assert!(lines.contains(&"stdout ps-pod".to_string()), "{lines:?}");
    assert!(matches!(st.state, ContainerState::Exited(_)));
}
