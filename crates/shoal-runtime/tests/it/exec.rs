//! Exec into running containers, with and without a TTY.

use std::io::{Read, Write};
use std::time::Duration;

use shoal_runtime::ExecSpec;

use crate::common::{TestRuntime, eventually};

fn running(t: &TestRuntime, id: &str) {
    let pod = t.pod(&format!("{id}-pod"));
    let mut spec = t.sh(id, "echo ready; exec sleep 60");
    spec.grace_period = Duration::from_millis(100);
    t.rt.create_and_start(&pod, spec).expect("start");
    eventually("ready", Duration::from_secs(10), || {
        let l = t.log_lines(id);
        if l == ["stdout ready"] {
            Ok(())
        } else {
            Err(format!("{l:?}"))
        }
    });
}

#[test]
#[ignore = "requires root: namespaces, overlayfs, cgroups"]
fn exec_streams_and_returns_the_exit_code() {
    let t = TestRuntime::new("exec");
    running(&t, "exec-c");
    let spec = ExecSpec {
        cmd: vec![
            "sh".into(),
            "-c".into(),
            "cat; echo out $FOO $(hostname); echo err >&2; ps -o pid,comm | grep -c sleep; exit 3"
                .into(),
        ],
        env: vec![("FOO".into(), "bar".into())],
        ..Default::default()
    };
    let mut p = t.rt.exec("exec-c", spec).expect("exec");
    p.stdin
        .as_mut()
        .expect("stdin")
        .write_all(b"from-stdin\n")
        .expect("write");
    p.stdin = None;
    let mut out = String::new();
    p.stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read");
    let mut err = String::new();
    p.stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read");
    assert_eq!(p.wait().expect("wait"), 3, "stderr: {err}");
    assert_eq!(out, "from-stdin\nout bar exec-c-pod\n1\n");
    assert_eq!(err, "err\n");
    // The exec ran inside the container's cgroup and pid namespace: PID 1 is sleep.
    let mut p =
        t.rt.exec(
            "exec-c",
            ExecSpec {
                cmd: vec!["cat".into(), "/proc/1/comm".into()],
                ..Default::default()
            },
        )
        .expect("exec");
    let mut out = String::new();
    p.stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read");
    assert_eq!((p.wait().expect("wait"), out.as_str()), (0, "sleep\n"));
    let mut p =
        t.rt.exec(
            "exec-c",
            ExecSpec {
                cmd: vec!["no-such-cmd".into()],
                ..Default::default()
            },
        )
        .expect("exec");
    assert_eq!(p.wait().expect("wait"), 127);
}

#[test]
#[ignore = "requires root: namespaces, overlayfs, cgroups"]
fn exec_with_a_tty() {
    let t = TestRuntime::new("exectty");
    running(&t, "tty-c");
    let spec = ExecSpec {
        cmd: vec![
            "sh".into(),
            "-c".into(),
            "[ -t 0 ] && [ -t 1 ] && echo is-a-tty; read x; echo got-$x; exit 5".into(),
        ],
        tty: true,
        ..Default::default()
    };
    let mut p = t.rt.exec("tty-c", spec).expect("exec");
    p.resize(40, 100).expect("resize");
    let mut pty = p.pty.take().expect("pty");
    pty.write_all(b"abc\n").expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match pty.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.raw_os_error() == Some(libc_eio()) => break,
            Err(e) => panic!("read pty: {e}"),
        }
        if String::from_utf8_lossy(&out).contains("got-abc") {
            break;
        }
    }
    let out = String::from_utf8_lossy(&out).into_owned();
    assert_eq!(p.wait().expect("wait"), 5, "{out}");
    assert!(out.contains("is-a-tty"), "{out:?}");
    assert!(out.contains("got-abc"), "{out:?}");
}

fn libc_eio() -> i32 {
    5
}
