//! `get -w`: the list, then one row per change, until Ctrl-C (exit 0).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::harness::{Controller, shoalctl_bin};

/// A running `shoalctl get … -w`; killed on drop if still running.
struct Watcher {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Watcher {
    fn start(c: &Controller, args: &[&str]) -> Watcher {
        let mut child = Command::new(shoalctl_bin())
            .arg("--server")
            .arg(&c.addr)
            .args(args)
            .env_remove("SHOAL_SERVER")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Watcher {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a line satisfying `pred`; panics with everything seen after `timeout`.
    fn expect(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if pred(&l) {
                        return l;
                    }
                }
                Err(_) => panic!("no line with {what} within 20s; saw: {:#?}", self.seen),
            }
        }
    }

    /// Sends SIGINT (as Ctrl-C does) and returns the exit code.
    fn interrupt(mut self) -> Option<i32> {
        let ok = Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "shoalctl did not stop on SIGINT");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pod(name: &str) -> String {
    format!(
        "apiVersion: shoal/v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers: [{{name: c, image: busybox}}]\n"
    )
}

#[test]
fn watch_prints_the_list_then_a_row_per_change() {
    let c = Controller::start();
    c.ctl_stdin(&["apply", "-f", "-"], &pod("first")).ok();
    let mut w = Watcher::start(&c, &["get", "pods", "-w", "--output-watch-events"]);
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
    c.ctl_stdin(&["apply", "-f", "-"], &pod("wanted")).ok();
    // An empty list prints nothing; rows start with the first change. Writes that race
    // with the watcher's start are either in its list or after its revision: never lost.
    let mut all = Watcher::start(&c, &["-n", "empty", "get", "pods", "-w"]);
    let mut one = Watcher::start(&c, &["get", "pods", "wanted", "-w", "-o", "name"]);
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
}
