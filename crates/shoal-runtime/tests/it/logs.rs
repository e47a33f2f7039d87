//! Container logs: order, stream tags, tail, follow, rotation.

use std::time::Duration;

use shoal_runtime::{LogConfig, LogOptions, Stream};

use crate::common::{TestRuntime, eventually};

#[test]
#[ignore = "requires root: namespaces, overlayfs, cgroups"]
fn logs_hold_output_in_order_with_streams() {
    let t = TestRuntime::new("logs");
    let pod = t.pod("logs-pod");
    t.rt.create_and_start(
        &pod,
        t.sh(
            "logs-c",
            "echo one; sleep 0.1; echo two >&2; sleep 0.1; echo three; printf 'no-newline'",
        ),
    )
    .expect("start");
    t.rt.wait("logs-c", Duration::from_secs(20)).expect("wait");
    assert_eq!(
        t.log_lines("logs-c"),
        vec![
            "stdout one",
            "stderr two",
            "stdout three",
            "stdout no-newline"
        ]
    );
    let tail: Vec<String> =
        t.rt.logs(
            "logs-c",
            LogOptions {
                tail: Some(2),
                ..Default::default()
            },
        )
        .expect("logs")
        .map(|l| l.expect("line").text)
        .collect();
    assert_eq!(tail, vec!["three", "no-newline"]);
    let all: Vec<_> =
        t.rt.logs("logs-c", LogOptions::default())
            .expect("logs")
            .map(|l| l.expect("line"))
            .collect();
    let since: Vec<String> =
        t.rt.logs(
            "logs-c",
            LogOptions {
                since: Some(all[2].time),
                ..Default::default()
            },
        )
        .expect("logs")
        .map(|l| l.expect("line").text)
        .collect();
    assert_eq!(since, vec!["three", "no-newline"]);
    assert!(all.windows(2).all(|w| w[0].time <= w[1].time));
}

#[test]
#[ignore = "requires root: namespaces, overlayfs, cgroups"]
fn follow_sees_new_lines_and_ends_with_the_container() {
    let t = TestRuntime::new("follow");
    let pod = t.pod("follow-pod");
    let mut spec = t.sh(
        "follow-c",
        "i=0; while [ $i -lt 30 ]; do echo line $i; i=$((i+1)); sleep 0.05; done",
    );
    spec.log = LogConfig {
        max_bytes: 400,
        max_files: 20,
    };
    t.rt.create_and_start(&pod, spec).expect("start");
    eventually("the first lines", Duration::from_secs(10), || {
        let l = t.log_lines("follow-c");
        if l.len() >= 2 {
            Ok(())
        } else {
            Err(format!("{l:?}"))
        }
    });
    let reader =
        t.rt.logs(
            "follow-c",
            LogOptions {
                follow: true,
                ..Default::default()
            },
        )
        .expect("follow");
    let got: Vec<String> = reader
        .map(|l| l.expect("line"))
        .filter(|l| l.stream == Stream::Stdout)
        .map(|l| l.text)
        .collect();
    let want: Vec<String> = (0..30).map(|i| format!("line {i}")).collect();
    assert_eq!(
        got, want,
        "follow must see every line once, across rotations, and end when the container exits"
    );
    assert!(
        t.dir
            .path()
            .join("containers/follow-c/container.log.1")
            .exists(),
        "rotation happened"
    );
}
