//! A 3-member controller cluster: commands and a running watch survive losing the
//! member shoalctl is connected to.

use crate::harness::{Cluster, watcher, workspace};

fn pod(name: &str) -> String {
    format!(
        "apiVersion: shoal/v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers: [{{name: c, image: busybox}}]\n"
    )
}

#[test]
fn commands_fail_over_when_a_member_dies() {
    let mut c = Cluster::start(3);
    let web = workspace().join("examples/web.yaml");
    c.ctl(&["apply", "-f", web.to_str().unwrap()]).ok();
    // shoalctl connects to the first address: kill that member (leader or not).
    c.kill(1);
    assert_eq!(
        c.ctl(&["get", "pod", "client", "-o", "name"]).ok(),
        "pod/client\n"
    );
    let out = c.ctl_stdin(&["apply", "-f", "-"], &pod("after-kill")).ok();
    assert_eq!(out, "pod/after-kill created\n");
    assert_eq!(
        c.ctl(&["label", "pod", "after-kill", "ha=yes"]).ok(),
        "pod/after-kill labeled\n"
    );
    let status = c.ctl(&["cluster", "status"]).ok();
    let row1 = status
        .lines()
        .find(|l| l.starts_with("1 "))
        .unwrap_or_else(|| panic!("{status}"));
    assert!(row1.contains("unhealthy"), "{status}");
    assert!(
        !status.starts_with("Leader: <none>") && !status.starts_with("Leader: 1 "),
        "{status}"
    );
}

#[test]
fn watch_resumes_on_the_next_member() {
    let mut c = Cluster::start(3);
    let mut w = watcher(
        &c.server_list(),
        &["get", "pods", "-w", "--output-watch-events"],
    );
    c.ctl_stdin(&["apply", "-f", "-"], &pod("before")).ok();
    w.expect("the first pod", |l| {
        l.starts_with("ADDED ") && l.contains(" before ")
    });
    c.kill(1);
    c.ctl_stdin(&["apply", "-f", "-"], &pod("after")).ok();
    c.ctl(&["delete", "pod", "before"]).ok();
    w.expect("the pod created after the kill", |l| {
        l.starts_with("ADDED ") && l.contains(" after ")
    });
    w.expect("the deletion", |l| {
        l.starts_with("DELETED ") && l.contains(" before ")
    });
    let added_before = w
        .seen
        .iter()
        .filter(|l| l.starts_with("ADDED ") && l.contains(" before "))
        .count();
    assert_eq!(
        added_before, 1,
        "resumed after the last revision, no replay: {:#?}",
        w.seen
    );
    assert_eq!(w.interrupt(), Some(0));
}
