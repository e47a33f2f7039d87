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

/// A static probe that makes one system call and prints the result
/// (`ok` or the errno's name), built with the host's C compiler: busybox
/// has no tool that calls `ptrace` or `kexec_*` directly.
///
/// `probe ptrace PID` (PTRACE_SEIZE, then detach by exiting),
/// `probe kexec_load`, `probe kexec_file_load` (both with invalid flags, so
/// that where the call is allowed it fails with EINVAL after the permission
/// check and changes nothing), `probe getpid`.
fn build_probe(dir: &std::path::Path) -> std::path::PathBuf {
    const SRC: &str = r#"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <unistd.h>
static void report(const char *what, long r) {
    if (r >= 0) { printf("%s ok\n", what); return; }
    const char *n = errno == EPERM ? "EPERM" : errno == EINVAL ? "EINVAL" :
                    errno == ESRCH ? "ESRCH" : errno == ENOSYS ? "ENOSYS" :
                    errno == EBADF ? "EBADF" : "other";
    printf("%s %s (%s)\n", what, n, strerror(errno));
}
int main(int argc, char **argv) {
    if (argc < 2) return 2;
    if (!strcmp(argv[1], "ptrace") && argc == 3)
        report("ptrace", ptrace(PTRACE_SEIZE, atoi(argv[2]), 0, 0));
    else if (!strcmp(argv[1], "kexec_load"))
        report("kexec_load", syscall(SYS_kexec_load, 0UL, 0UL, NULL, 0x7fff0000UL));
    else if (!strcmp(argv[1], "kexec_file_load"))
        report("kexec_file_load", syscall(SYS_kexec_file_load, -1, -1, 0UL, NULL, 0x7fff0000UL));
    else if (!strcmp(argv[1], "getpid"))
        report("getpid", syscall(SYS_getpid));
    else return 2;
    return 0;
}
"#;
    let src = dir.join("probe.c");
    let bin = dir.join("probe");
    std::fs::write(&src, SRC).expect("write probe.c");
    let out = std::process::Command::new("cc")
        .args(["-static", "-O1", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("run cc (the host's C compiler)");
    assert!(
        out.status.success(),
        "cc -static probe.c: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

/// Runs the probe on the host: the control for what the container is refused.
fn host_probe(bin: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(bin)
        .args(args)
        .output()
        .expect("run probe");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The probe's directory as a read-only volume at `/probe`.
fn probe_mount(dir: &std::path::Path) -> shoal_runtime::Mount {
    shoal_runtime::Mount {
        source: shoal_runtime::MountSource::HostPath(dir.to_path_buf()),
        destination: "/probe".into(),
        read_only: true,
    }
}

#[test]
#[ignore = "requires root: namespaces, overlayfs, cgroups, a C compiler"]
fn ptrace_of_a_process_in_another_container_fails() {
    let t = TestRuntime::new("hptrace");
    let probe_dir = t.dir.path().join("probe");
    std::fs::create_dir(&probe_dir).expect("mkdir");
    let bin = build_probe(&probe_dir);
    let pod = t.pod("hptrace-pod");
    let victim =
        t.rt.create_and_start(&pod, t.sh("hptrace-victim", "exec sleep 60"))
            .expect("start victim");
    // Control: from the host, root can seize the victim (the call works and
    // the victim is traceable at all).
    assert_eq!(
        host_probe(&bin, &["ptrace", &victim.pid.to_string()]),
        "ptrace ok",
        "control"
    );
    // The attacker tries the victim's host pid, then its own pid 1 (its
    // shell: not even a process of its own container may be traced), then
    // any other pid it can see (its pid namespace shows no other
    // container's processes, so normally none).
    let mut spec = t.sh(
        "hptrace-attacker",
        &format!(
            "/probe/probe getpid; /probe/probe ptrace {}; /probe/probe ptrace 1; \
             for p in /proc/[0-9]*; do p=${{p#/proc/}}; [ $p = $$ ] && continue; \
             echo \"pid $p\"; /probe/probe ptrace $p; done",
            victim.pid
        ),
    );
    spec.mounts.push(probe_mount(&probe_dir));
    t.rt.create_and_start(&pod, spec).expect("start attacker");
    let st =
        t.rt.wait("hptrace-attacker", Duration::from_secs(20))
            .expect("wait");
    let out = t.log_lines("hptrace-attacker");
    assert_eq!(st.exit().map(|e| e.exit_code), Some(0), "{out:?}");
    assert!(
        has(&out, "stdout getpid ok"),
        "control: the probe runs: {out:?}"
    );
    let tries: Vec<&String> = out
        .iter()
        .filter(|l| l.starts_with("stdout ptrace"))
        .collect();
    assert!(tries.len() >= 2, "{out:?}");
    for l in tries {
        assert!(l.starts_with("stdout ptrace EPERM"), "{l}: {out:?}");
    }
}

#[test]
#[ignore = "requires root: namespaces, overlayfs, cgroups, a C compiler"]
fn kexec_load_and_kexec_file_load_fail() {
    let t = TestRuntime::new("hkexec");
    let probe_dir = t.dir.path().join("probe");
    std::fs::create_dir(&probe_dir).expect("mkdir");
    let bin = build_probe(&probe_dir);
    // Control: on the host root passes the permission check and the call
    // fails on its invalid flags (EINVAL), or the kernel has no kexec
    // (ENOSYS); either way not EPERM, so an EPERM inside is the container's.
    for call in ["kexec_load", "kexec_file_load"] {
        let host = host_probe(&bin, &[call]);
        assert!(
            host.starts_with(&format!("{call} EINVAL"))
                || host.starts_with(&format!("{call} ENOSYS")),
            "control on the host: {host}"
        );
    }
    let pod = t.pod("hkexec-pod");
    let mut spec = t.sh(
        "hkexec-c",
        "/probe/probe getpid; /probe/probe kexec_load; /probe/probe kexec_file_load",
    );
    spec.mounts.push(probe_mount(&probe_dir));
    t.rt.create_and_start(&pod, spec).expect("start");
    let st =
        t.rt.wait("hkexec-c", Duration::from_secs(20))
            .expect("wait");
    let out = t.log_lines("hkexec-c");
    assert_eq!(st.exit().map(|e| e.exit_code), Some(0), "{out:?}");
    assert!(has(&out, "stdout getpid ok"), "control: {out:?}");
    for call in ["kexec_load", "kexec_file_load"] {
        assert!(
            out.iter()
                .any(|l| l.starts_with(&format!("stdout {call} EPERM"))),
            "{call}: {out:?}"
        );
    }
}

#[test]
#[ignore = "requires root: namespaces, overlayfs, cgroups"]
fn no_host_process_is_visible_from_inside() {
    let me = std::process::id();
    // Control: the host's /proc shows this test and many other processes.
    assert!(std::path::Path::new(&format!("/proc/{me}")).exists());
    let host_count = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        })
        .count();
    assert!(
        host_count > 10,
        "control: host shows {host_count} processes"
    );
    let (code, out) = run(
        "hpidns",
        &format!(
            "for p in /proc/[0-9]*; do echo \"proc ${{p#/proc/}} $(cat $p/comm 2>/dev/null)\"; done; \
             [ -e /proc/{me} ] && echo test-pid-visible || echo test-pid-absent; \
             kill -0 {me} 2>/dev/null && echo test-pid-signalable || echo test-pid-unreachable"
        ),
    );
    assert_eq!(code, Some(0), "{out:?}");
    let procs: Vec<&String> = out
        .iter()
        .filter(|l| l.starts_with("stdout proc "))
        .collect();
    // Only the script's shell and its short-lived children.
    assert!(!procs.is_empty() && procs.len() <= 4, "{procs:?}");
    for l in &procs {
        let comm = l.rsplit(' ').next().unwrap_or_default();
        assert!(
            ["sh", "cat", ""].contains(&comm),
            "a process that is not the container's: {l}: {out:?}"
        );
    }
    assert!(has(&out, "stdout test-pid-absent"), "{out:?}");
    assert!(has(&out, "stdout test-pid-unreachable"), "{out:?}");
}

/// Runs `script` in a container with `security` and returns its output.
fn run_with(test: &str, script: &str, security: shoal_runtime::Security) -> Vec<String> {
    let t = TestRuntime::new(test);
    let pod = t.pod(&format!("{test}-pod"));
    let id = format!("{test}-c");
    let mut spec = t.sh(&id, script);
    spec.security = security;
    t.rt.create_and_start(&pod, spec).expect("start");
    let st = t.rt.wait(&id, Duration::from_secs(20)).expect("wait");
    let out = t.log_lines(&id);
    assert_eq!(st.exit().map(|e| e.exit_code), Some(0), "{out:?}");
    out
}

fn cap_eff(out: &[String]) -> u64 {
    out.iter()
        .find_map(|l| l.strip_prefix("stdout CapEff:\t"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no CapEff: {out:?}"))
}

#[test]
#[ignore = "requires root: namespaces, overlayfs, cgroups"]
fn security_context_seccomp_unconfined_and_capabilities() {
    const CHOWN: u64 = 1 << 0;
    const NET_ADMIN: u64 = 1 << 12;
    let script = "grep -E '^(Seccomp|CapEff):' /proc/self/status; \
                  ip addr add 127.1.2.3/8 dev lo 2>/dev/null && echo addr-added || echo no-addr; \
                  touch /tmp/f; chown 1000 /tmp/f 2>/dev/null && echo chowned || echo no-chown";
    // Control: the default container has the filter, CHOWN and not NET_ADMIN.
    let def = run_with("hsecdef", script, shoal_runtime::Security::default());
    assert!(has(&def, "stdout Seccomp:\t2"), "{def:?}");
    assert_eq!(cap_eff(&def) & (CHOWN | NET_ADMIN), CHOWN, "{def:?}");
    assert!(
        has(&def, "stdout chowned") && has(&def, "stdout no-addr"),
        "{def:?}"
    );

    let unconfined = run_with(
        "hsecunc",
        script,
        shoal_runtime::Security {
            seccomp_unconfined: true,
            ..Default::default()
        },
    );
    assert!(has(&unconfined, "stdout Seccomp:\t0"), "{unconfined:?}");

    let tuned = run_with(
        "hseccap",
        script,
        shoal_runtime::Security {
            seccomp_unconfined: false,
            cap_add: vec![12],
            cap_drop: vec![0],
            ..Default::default()
        },
    );
    assert!(has(&tuned, "stdout Seccomp:\t2"), "{tuned:?}");
    assert_eq!(
        cap_eff(&tuned) & (CHOWN | NET_ADMIN),
        NET_ADMIN,
        "{tuned:?}"
    );
    // The capabilities act, not only show: the pod's own network namespace
    // takes an address on its loopback, and chown is refused.
    assert!(has(&tuned, "stdout addr-added"), "{tuned:?}");
    assert!(has(&tuned, "stdout no-chown"), "{tuned:?}");
}

#[test]
#[ignore = "requires root: namespaces, overlayfs, cgroups"]
fn privileged_has_every_capability_device_and_a_writable_sys() {
    let script = "grep -E '^(Seccomp|CapEff|NoNewPrivs):' /proc/self/status; \
                  ( : < /dev/net/tun ) 2>/dev/null && echo tun-open || echo no-tun; \
                  grep -q ' /sys sysfs rw' /proc/mounts && echo sys-rw || echo sys-ro; \
                  grep -q ' /proc/interrupts ' /proc/mounts && echo interrupts-masked || echo interrupts-visible; \
                  mkdir -p /mnt/x; mount -t tmpfs none /mnt/x 2>/dev/null && echo mounted || echo no-mount";
    // Control: an ordinary container has none of it.
    let def = run_with("hprivdef", script, shoal_runtime::Security::default());
    for want in [
        "stdout Seccomp:\t2",
        "stdout NoNewPrivs:\t1",
        "stdout no-tun",
        "stdout sys-ro",
        "stdout interrupts-masked",
        "stdout no-mount",
    ] {
        assert!(has(&def, want), "{want:?} missing: {def:?}");
    }
    let privileged = run_with(
        "hpriv",
        script,
        shoal_runtime::Security {
            privileged: true,
            ..Default::default()
        },
    );
    assert_eq!(
        cap_eff(&privileged),
        // Every capability this (root) test process holds.
        shoal_runtime::caps::bounding_mask(shoal_runtime::caps::last_cap()),
        "{privileged:?}"
    );
    for want in [
        "stdout Seccomp:\t0",
        "stdout NoNewPrivs:\t0",
        "stdout tun-open",
        "stdout sys-rw",
        "stdout interrupts-visible",
        // In the container's own mount namespace, which goes with it.
        "stdout mounted",
    ] {
        assert!(has(&privileged, want), "{want:?} missing: {privileged:?}");
    }
}

#[test]
#[ignore = "requires root: namespaces, overlayfs, cgroups"]
fn read_only_root_groups_fs_group_and_run_as_non_root() {
    let t = TestRuntime::new("hrofs");
    let pod = t.pod("hrofs-pod");
    let id = "hrofs-c";
    let mut spec = t.sh(
        id,
        "touch /rootfile 2>/dev/null && echo root-writable || echo root-read-only; \
         touch /vol/f && echo vol-writable; stat -c 'vol %g %a' /vol; stat -c 'file %g' /vol/f; \
         echo groups $(id -G); echo uid $(id -u)",
    );
    spec.user = Some("1000:3000".into());
    spec.mounts.push(shoal_runtime::Mount {
        source: shoal_runtime::MountSource::EmptyDir("vol".into()),
        destination: "/vol".into(),
        read_only: false,
    });
    spec.security = shoal_runtime::Security {
        read_only_rootfs: true,
        run_as_non_root: true,
        supplemental_groups: vec![4000],
        fs_group: Some(2000),
        ..Default::default()
    };
    t.rt.create_and_start(&pod, spec).expect("start");
    let st = t.rt.wait(id, Duration::from_secs(20)).expect("wait");
    let out = t.log_lines(id);
    assert_eq!(st.exit().map(|e| e.exit_code), Some(0), "{out:?}");
    for want in [
        "stdout root-read-only",
        "stdout vol-writable",
        "stdout vol 2000 2777",
        "stdout file 2000",
        "stdout uid 1000",
    ] {
        assert!(has(&out, want), "{want:?} missing: {out:?}");
    }
    let groups = out
        .iter()
        .find_map(|l| l.strip_prefix("stdout groups "))
        .unwrap_or_else(|| panic!("no groups: {out:?}"));
    let groups: Vec<&str> = groups.split_whitespace().collect();
    assert_eq!(groups, ["3000", "2000", "4000"], "{out:?}");

    // Control: the same script without the settings writes to its root.
    let plain = run("hrofsctl", "touch /rootfile && echo root-writable");
    assert!(has(&plain.1, "stdout root-writable"), "{plain:?}");

    // runAsNonRoot and the image's root user: refused before anything runs.
    let mut root = t.sh("hrofs-root", "echo ran");
    root.security.run_as_non_root = true;
    let e = t.rt.create_and_start(&pod, root).expect_err("root refused");
    assert!(
        matches!(e, shoal_runtime::RuntimeError::Config { .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("runAsNonRoot"), "{e}");
}
