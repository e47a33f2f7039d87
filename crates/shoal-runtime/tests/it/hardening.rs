//! What a container may not do (issue "Host hardening", part 2): each test
//! runs commands as root inside a real container and checks that the
//! dangerous one fails while a harmless control succeeds.

use std::time::Duration;

use crate::common::TestRuntime;

/// Runs `script` as root in a fresh container and returns its exit code and
/// stdout/stderr lines ("stdout text").
fn run(test: &str, script: &str) -> (Option<i32>, Vec<String>) {
    let t = TestRuntime::new(test);
    let pod = t.pod(&format!("{test}-pod"));
    let id = format!("{test}-c");
    t.rt.create_and_start(&pod, t.sh(&id, script))
        .expect("start");
    let st = t.rt.wait(&id, Duration::from_secs(20)).expect("wait");
    (st.exit().map(|e| e.exit_code), t.log_lines(&id))
}

fn has(lines: &[String], l: &str) -> bool {
    lines.iter().any(|x| x == l)
}

#[test]
#[ignore = "requires root: namespaces, overlayfs, cgroups"]
fn mount_fails_but_writing_a_file_works() {
    let (code, out) = run(
        "hmount",
        "mkdir -p /mnt/x; mount -t tmpfs none /mnt/x 2>/dev/null && echo mounted || echo no-mount; \
         mount --bind /tmp /mnt/x 2>/dev/null && echo bound || echo no-bind; \
         echo hi > /tmp/f && cat /tmp/f",
    );
    assert_eq!(code, Some(0), "{out:?}");
    assert!(has(&out, "stdout no-mount"), "{out:?}");
    assert!(has(&out, "stdout no-bind"), "{out:?}");
    assert!(
        has(&out, "stdout hi"),
        "control: a file can be written: {out:?}"
    );
}

#[test]
#[ignore = "requires root: namespaces, overlayfs, cgroups"]
fn mknod_of_a_block_device_fails_and_dev_is_nodev() {
    let (code, out) = run(
        "hmknod",
        "mknod /tmp/sda b 8 0 2>/dev/null && echo made-block || echo no-block; \
         mknod /dev/sda b 8 0 2>/dev/null && echo made-dev || echo no-dev; \
         mkfifo /tmp/fifo && echo fifo-ok; \
         grep -E '^CapInh' /proc/self/status; \
         awk '$5 == \"/dev\" { print \"dev-opts \" $6 }' /proc/self/mountinfo; \
         echo x > /dev/null && head -c 4 /dev/zero | wc -c",
    );
    assert_eq!(code, Some(0), "{out:?}");
    assert!(has(&out, "stdout no-block"), "{out:?}");
    assert!(has(&out, "stdout no-dev"), "{out:?}");
    assert!(
        has(&out, "stdout fifo-ok"),
        "control: a fifo can be made: {out:?}"
    );
    assert!(
        has(&out, "stdout CapInh:\t0000000000000000"),
        "inheritable set cleared: {out:?}"
    );
    let opts = out
        .iter()
        .find_map(|l| l.strip_prefix("stdout dev-opts "))
        .unwrap_or_else(|| panic!("no /dev mount: {out:?}"));
    assert!(opts.split(',').any(|o| o == "nodev"), "/dev: {opts}");
    assert!(
        has(&out, "stdout 4"),
        "control: /dev/null, /dev/zero work: {out:?}"
    );
}

#[test]
#[ignore = "requires root: namespaces, overlayfs, cgroups"]
fn masked_paths_show_nothing() {
    let host_firmware = std::fs::read_dir("/sys/firmware")
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(
        host_firmware > 0,
        "control: the host's /sys/firmware has entries"
    );
    let (code, out) = run(
        "hmask",
        "echo firmware $(ls -A /sys/firmware | wc -l); echo acpi $(ls -A /proc/acpi | wc -l); \
         echo kcore $(head -c 16 /proc/kcore | wc -c); echo keys $(cat /proc/keys | wc -c); \
         touch /sys/firmware/x 2>/dev/null && echo wrote || echo no-write; \
         awk '$5 == \"/proc/acpi\" { print \"acpi-fs \" $9 }' /proc/self/mountinfo; \
         echo cpuinfo $(grep -c . /proc/cpuinfo)",
    );
    assert_eq!(code, Some(0), "{out:?}");
    for l in [
        "stdout firmware 0",
        "stdout acpi 0",
        "stdout kcore 0",
        "stdout keys 0",
        "stdout no-write",
        "stdout acpi-fs tmpfs",
    ] {
        assert!(has(&out, l), "{l}: {out:?}");
    }
    assert!(
        out.iter()
            .any(|l| l.starts_with("stdout cpuinfo ") && l != "stdout cpuinfo 0"),
        "control: unmasked /proc files still read: {out:?}"
    );
}

#[test]
#[ignore = "requires root: namespaces, overlayfs, cgroups"]
fn proc_sys_is_read_only() {
    let (code, out) = run(
        "hprocsys",
        "echo 1 > /proc/sys/net/ipv4/ip_forward 2>/dev/null && echo wrote || echo no-write; \
         echo 1 > /proc/sysrq-trigger 2>/dev/null && echo sysrq || echo no-sysrq; \
         echo x > /tmp/control && echo control-ok; cat /proc/sys/kernel/ostype",
    );
    assert_eq!(code, Some(0), "{out:?}");
    assert!(has(&out, "stdout no-write"), "{out:?}");
    assert!(has(&out, "stdout no-sysrq"), "{out:?}");
    assert!(has(&out, "stdout control-ok"), "{out:?}");
    assert!(
        has(&out, "stdout Linux"),
        "control: /proc/sys reads: {out:?}"
    );
}

#[test]
#[ignore = "requires root: namespaces, overlayfs, cgroups"]
fn cgroup_namespace_rlimits_and_default_pids_limit() {
    let (code, out) = run(
        "hlimits",
        "echo nofile $(ulimit -n) $(ulimit -Hn); grep -E '^NoNewPrivs' /proc/self/status; \
         echo pids $(cat /sys/fs/cgroup/pids.max /sys/fs/cgroup/pids/pids.max 2>/dev/null); \
         echo cgroup-lines $(wc -l < /proc/self/cgroup); \
         echo cgroup-root $(grep -vc ':/$' /proc/self/cgroup)",
    );
    assert_eq!(code, Some(0), "{out:?}");
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit");
    let (soft, hard) = shoal_runtime::init::nofile_limits(hard);
    assert!(
        has(&out, &format!("stdout nofile {soft} {hard}")),
        "{out:?}"
    );
    assert!(has(&out, "stdout NoNewPrivs:\t1"), "{out:?}");
    assert!(
        has(
            &out,
            &format!("stdout pids {}", shoal_runtime::cgroup::DEFAULT_PIDS_LIMIT)
        ),
        "{out:?}"
    );
    // In its own cgroup namespace every hierarchy's path is "/".
    assert!(!has(&out, "stdout cgroup-lines 0"), "{out:?}");
    assert!(has(&out, "stdout cgroup-root 0"), "{out:?}");
}

#[test]
#[ignore = "requires root: namespaces, overlayfs, cgroups"]
fn seccomp_refuses_new_user_namespaces_and_modules() {
    // Control: the same command works on the host (outside any filter). A chrooted
    // host (scripts/fresh-check.sh runs the suite in one) is refused new user
    // namespaces by the kernel itself, for every process, containers included: there
    // no control is possible, the refusal must be the kernel's EPERM, and only the
    // filter's presence (`Seccomp: 2` below) speaks for seccomp. Said, not skipped.
    let host = std::process::Command::new("unshare")
        .args(["-U", "-r", "true"])
        .output()
        .expect("host unshare");
    if !host.status.success() {
        let err = String::from_utf8_lossy(&host.stderr);
        assert!(
            err.contains("Operation not permitted"),
            "control: unshare -U -r on the host failed for another reason than EPERM: {err}"
        );
        eprintln!(
            "note: this host refuses `unshare -U -r` ({}), as a chroot does; \
             the container's refusal below is not attributable to seccomp here",
            err.trim()
        );
    }
    let (code, out) = run(
        "hseccomp",
        "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; \
         unshare -U -r true 2>/dev/null && echo userns || echo no-userns; \
         unshare -U true 2>/dev/null && echo userns2 || echo no-userns2; \
         echo > /tmp/m.ko; insmod /tmp/m.ko 2>/dev/null && echo module || echo no-module; \
         (sleep 0 & wait) && echo fork-ok",
    );
    assert_eq!(code, Some(0), "{out:?}");
    for l in [
        "stdout Seccomp:\t2",
        "stdout NoNewPrivs:\t1",
        "stdout no-userns",
        "stdout no-userns2",
        "stdout no-module",
        "stdout fork-ok",
    ] {
        assert!(has(&out, l), "{l}: {out:?}");
    }
}

#[test]
#[ignore = "requires root: namespaces, overlayfs, cgroups"]
fn the_helper_binary_cannot_be_overwritten_through_proc_exe() {
    let t = TestRuntime::new("hexe");
    let pod = t.pod("hexe-pod");
    let h =
        t.rt.create_and_start(&pod, t.sh("hexe-c", "exec sleep 30"))
            .expect("start");
    let exe = crate::common::helper_exe();
    let before = std::fs::read(&exe).expect("helper binary");
    // The supervisor runs the sealed copy, not the file on disk.
    let link = format!("/proc/{}/exe", h.supervisor_pid);
    let target = std::fs::read_link(&link).expect("readlink");
    assert!(
        target.to_string_lossy().starts_with("/memfd:shoal-helper"),
        "{link} -> {target:?}"
    );
    // The attack holds the file open and writes once nothing executes it
    // any more: here even host root cannot (the copy is sealed).
    let held = std::fs::File::open(&link).expect("open /proc/PID/exe");
    t.rt.stop("hexe-c", Duration::from_millis(100))
        .expect("stop");
    crate::common::eventually("the supervisor to exit", Duration::from_secs(10), || {
        if std::path::Path::new(&format!("/proc/{}", h.supervisor_pid)).exists() {
            Err(format!("supervisor {} still running", h.supervisor_pid))
        } else {
            Ok(())
        }
    });
    use std::os::fd::AsRawFd;
    let err = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/self/fd/{}", held.as_raw_fd()))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"\x7fELF-overwritten"))
        .expect_err("write to the held executable");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    assert_eq!(std::fs::read(&exe).expect("helper binary"), before);
}
