//! `get -w`: the list, then one row per change, until Ctrl-C (exit 0).

use crate::harness::{Controller, watcher};

fn pod(name: &str) -> String {
    format!(
        "apiVersion: shoal/v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers: [{{name: c, image: busybox}}]\n"
    )
}

#[test]
fn watch_prints_the_list_then_a_row_per_change() {
    let c = Controller::start();
    c.ctl_stdin(&["apply", "-f", "-"], &pod("first")).ok();
    let mut w = watcher(&c.addr, &["get", "pods", "-w", "--output-watch-events"]);
    let header = w.expect("the header", |l| l.starts_with("EVENT "));
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["EVENT", "NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    );
    w.expect("the listed pod", |l| {
        l.starts_with("ADDED ") && l.contains(" first ")
    });

    c.ctl_stdin(&["apply", "-f", "-"], &pod("second")).ok();
    w.expect("the new pod", |l| {
        l.starts_with("ADDED ") && l.contains(" second ")
    });
    c.ctl(&["label", "pod", "first", "k=v"]).ok();
    w.expect("the labelled pod", |l| {
        l.starts_with("MODIFIED ") && l.contains(" first ")
    });
    c.ctl(&["delete", "pod", "second"]).ok();
    w.expect("the deleted pod", |l| {
        l.starts_with("DELETED ") && l.contains(" second ")
    });
    assert_eq!(w.interrupt(), Some(0));
}

#[test]
fn watch_of_an_empty_list_and_by_name() {
    let c = Controller::start();
    c.ctl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: empty}\n",
    )
    .ok();
    c.ctl_stdin(&["apply", "-f", "-"], &pod("wanted")).ok();
    // An empty list prints nothing; rows start with the first change. Writes that race
    // with the watcher's start are either in its list or after its revision: never lost.
    let mut all = watcher(&c.addr, &["-n", "empty", "get", "pods", "-w"]);
    let mut one = watcher(&c.addr, &["get", "pods", "wanted", "-w", "-o", "name"]);
    assert_eq!(
        one.expect("the listed pod", |l| l.starts_with("pod/")),
        "pod/wanted"
    );
    c.ctl_stdin(&["-n", "empty", "apply", "-f", "-"], &pod("other"))
        .ok();
    c.ctl_stdin(&["apply", "-f", "-"], &pod("other")).ok();
    c.ctl(&["label", "pod", "wanted", "k=v"]).ok();
    all.expect("a header before the first row", |l| l.starts_with("NAME "));
    all.expect("the new pod", |l| l.starts_with("other "));
    assert_eq!(
        one.expect("the labelled pod", |l| l.starts_with("pod/")),
        "pod/wanted"
    );
    assert!(
        !one.seen.iter().any(|l| l.contains("other")),
        "{:?}",
        one.seen
    );
    assert_eq!(all.interrupt(), Some(0));
    assert_eq!(one.interrupt(), Some(0));
    let e = c.ctl(&["get", "pod", "nope", "-w"]).err();
    assert_eq!(e, r#"error: pod "nope" not found in namespace "default""#);
}
