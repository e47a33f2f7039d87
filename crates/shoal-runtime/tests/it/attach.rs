//! The main process' own stdin (`stdin`) and terminal (`tty`), written through `attach`.

use std::time::Duration;

use shoal_runtime::ContainerState;

use crate::common::{TestRuntime, eventually};

/// Waits for the container's run to end and returns its exit code.
fn exit_code(t: &TestRuntime, id: &str) -> i32 {
    let st = t.rt.wait(id, Duration::from_secs(20)).expect("wait");
    match st.state {
        ContainerState::Exited(e) => e.exit_code,
        other => panic!("{id} did not exit: {other:?}; log {:?}", t.log_lines(id)),
    }
}

#[test]
#[ignore = "requires root: namespaces, overlayfs, cgroups"]
fn attach_writes_to_a_pipe_stdin_and_its_end_closes_it() {
    let t = TestRuntime::new("attach");
    let pod = t.pod("attach-pod");
    let mut spec = t.sh(
        "attach-c",
        "echo ready; while read l; do echo got-$l; done; echo eof; exit 6",
    );
    spec.stdin = true;
    t.rt.create_and_start(&pod, spec).expect("start");
    eventually("ready", Duration::from_secs(10), || {
        let l = t.log_lines("attach-c");
        if l == ["stdout ready"] {
            Ok(())
        } else {
            Err(format!("{l:?}"))
        }
    });
    // Two attaches in a row: the second gets its own copy of the same pipe.
    let mut a = t.rt.attach("attach-c").expect("attach");
    a.write(b"one\n").expect("write");
    drop(a);
    let mut b = t.rt.attach("attach-c").expect("attach again");
    b.write(b"two\n").expect("write");
    b.close().expect("close stdin");
    assert_eq!(exit_code(&t, "attach-c"), 6);
    assert_eq!(
        t.log_lines("attach-c"),
        [
            "stdout ready",
            "stdout got-one",
            "stdout got-two",
            "stdout eof"
        ]
    );
    // A container without stdin cannot be attached to; neither can one that ended.
    let e = t.rt.attach("attach-c").unwrap_err().to_string();
    assert!(e.contains("not running"), "{e}");
    let other = t.sh("plain-c", "exec sleep 60");
    t.rt.create_and_start(&pod, other).expect("start");
    let e = t.rt.attach("plain-c").unwrap_err().to_string();
    assert!(e.contains("not started with stdin or tty"), "{e}");
}

#[test]
#[ignore = "requires root: namespaces, overlayfs, cgroups"]
fn a_tty_container_reads_its_terminal() {
    let t = TestRuntime::new("attachtty");
    let pod = t.pod("attachtty-pod");
    let mut spec = t.sh(
        "tty-main",
        "[ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo is-a-tty; stty size; read x; echo got-$x; exit 5",
    );
    spec.tty = true;
    t.rt.create_and_start(&pod, spec).expect("start");
    eventually("started on a tty", Duration::from_secs(10), || {
        let l = t.log_lines("tty-main");
        if l.iter().any(|l| l.contains("is-a-tty")) {
            Ok(())
        } else {
            Err(format!("{l:?}"))
        }
    });
    let mut a = t.rt.attach("tty-main").expect("attach");
    assert!(a.tty);
    a.resize(30, 90).expect("resize");
    a.write(b"abc\n").expect("write");
    assert_eq!(exit_code(&t, "tty-main"), 5);
    let log = t.log_lines("tty-main").join("\n").replace('\r', "");
    // The pty echoes the input, and the shell then reads it; stdout and stderr are one
    // stream. `stty size` runs beside our write, so its line may come before or after the
    // echo (a CI run had "abc", "30 90", "got-abc"): only the echo's order against the read
    // is fixed.
    let lines: Vec<&str> = log.lines().collect();
    let echo = lines.iter().position(|l| *l == "stdout abc");
    let read = lines.iter().position(|l| *l == "stdout got-abc");
    assert!(matches!((echo, read), (Some(e), Some(r)) if e < r), "{log}");
}
