//! The default seccomp filter of every container and exec process, with
//! Docker's default profile as the reference: the system calls Docker's
//! profile refuses to a container without extra capabilities fail with
//! `EPERM` (new namespaces through `unshare`/`clone`, `mount`, module and
//! kexec loading, `bpf`, keyrings, `ptrace`, …), and `clone3` fails with
//! `ENOSYS` so that the C library falls back to `clone`, whose flags the
//! filter can see (as Docker does).
//!
//! Docker's profile is an allowlist of ~350 calls; this is the matching
//! denylist of what it leaves out, which keeps new harmless system calls
//! working. The filter is compiled by `seccompiler` (firecracker's) to BPF:
//! [`default_program`] is pure and unit-tested, [`apply_default`] loads it
//! (after `no_new_privs`, right before `execve`).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// System calls refused outright (`EPERM`), by name and number.
pub fn blocked_syscalls() -> Vec<(&'static str, i64)> {
    let mut v = vec![
        ("acct", libc::SYS_acct),
        ("add_key", libc::SYS_add_key),
        ("bpf", libc::SYS_bpf),
        ("clock_adjtime", libc::SYS_clock_adjtime),
        ("clock_settime", libc::SYS_clock_settime),
        ("delete_module", libc::SYS_delete_module),
        ("finit_module", libc::SYS_finit_module),
        ("fsconfig", libc::SYS_fsconfig),
        ("fsmount", libc::SYS_fsmount),
        ("fsopen", libc::SYS_fsopen),
        ("fspick", libc::SYS_fspick),
        ("get_mempolicy", libc::SYS_get_mempolicy),
        ("init_module", libc::SYS_init_module),
        ("kcmp", libc::SYS_kcmp),
        ("kexec_file_load", libc::SYS_kexec_file_load),
        ("kexec_load", libc::SYS_kexec_load),
        ("keyctl", libc::SYS_keyctl),
        ("mbind", libc::SYS_mbind),
        ("mount", libc::SYS_mount),
        ("mount_setattr", libc::SYS_mount_setattr),
        ("move_mount", libc::SYS_move_mount),
        ("move_pages", libc::SYS_move_pages),
        ("name_to_handle_at", libc::SYS_name_to_handle_at),
        ("open_by_handle_at", libc::SYS_open_by_handle_at),
        ("open_tree", libc::SYS_open_tree),
        ("perf_event_open", libc::SYS_perf_event_open),
        ("pivot_root", libc::SYS_pivot_root),
        ("process_vm_readv", libc::SYS_process_vm_readv),
        ("process_vm_writev", libc::SYS_process_vm_writev),
        ("ptrace", libc::SYS_ptrace),
        ("quotactl", libc::SYS_quotactl),
        ("reboot", libc::SYS_reboot),
        ("request_key", libc::SYS_request_key),
        ("set_mempolicy", libc::SYS_set_mempolicy),
        ("setns", libc::SYS_setns),
        ("settimeofday", libc::SYS_settimeofday),
        ("swapoff", libc::SYS_swapoff),
        ("swapon", libc::SYS_swapon),
        ("umount2", libc::SYS_umount2),
        ("unshare", libc::SYS_unshare),
        ("userfaultfd", libc::SYS_userfaultfd),
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        ("_sysctl", libc::SYS__sysctl),
        ("create_module", 174), // numbers of calls removed from the kernel: libc has no constant
        ("get_kernel_syms", 177),
        ("ioperm", libc::SYS_ioperm),
        ("iopl", libc::SYS_iopl),
        ("lookup_dcookie", libc::SYS_lookup_dcookie),
        ("nfsservctl", libc::SYS_nfsservctl),
        ("query_module", 178),
        ("sysfs", libc::SYS_sysfs),
        ("uselib", libc::SYS_uselib),
        ("ustat", libc::SYS_ustat),
    ]);
    v
}

/// The `clone` flags that make new namespaces (Docker refuses `clone` with
/// any of them to a container without `CAP_SYS_ADMIN`).
pub const CLONE_NAMESPACE_FLAGS: [u64; 7] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
];

/// x32 system calls share x86_64's architecture tag and carry this bit: a
/// denylist must refuse those numbers too.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: i64 = 0x4000_0000;

fn arch() -> Result<TargetArch, String> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|e| {
        format!(
            "seccomp: unsupported architecture {}: {e}",
            std::env::consts::ARCH
        )
    })
}

fn with_x32(rules: &mut BTreeMap<i64, Vec<SeccompRule>>, nr: i64, r: Vec<SeccompRule>) {
    #[cfg(target_arch = "x86_64")]
    rules.insert(nr | X32_SYSCALL_BIT, r.clone());
    rules.insert(nr, r);
}

/// The default filters, to be loaded in order: the `EPERM` denylist (with
/// `clone` refused when it asks for a new namespace), then `clone3` ->
/// `ENOSYS`. Two programs because a seccompiler filter has one match action.
pub fn default_program() -> Result<Vec<BpfProgram>, String> {
    let err = |e: seccompiler::BackendError| format!("seccomp filter: {e}");
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (_, nr) in blocked_syscalls() {
        with_x32(&mut rules, nr, vec![]);
    }
    let mut clone_rules = Vec::new();
    for flag in CLONE_NAMESPACE_FLAGS {
        clone_rules.push(
            SeccompRule::new(vec![
                SeccompCondition::new(
                    0,
                    SeccompCmpArgLen::Qword,
                    SeccompCmpOp::MaskedEq(flag),
                    flag,
                )
                .map_err(err)?,
            ])
            .map_err(err)?,
        );
    }
    with_x32(&mut rules, libc::SYS_clone, clone_rules);
    let deny = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch()?,
    )
    .map_err(err)?;
    let mut clone3 = BTreeMap::new();
    with_x32(&mut clone3, libc::SYS_clone3, vec![]);
    let clone3 = SeccompFilter::new(
        clone3,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch()?,
    )
    .map_err(err)?;
    Ok(vec![
        deny.try_into().map_err(err)?,
        clone3.try_into().map_err(err)?,
    ])
}

/// Loads compiled filters into this thread (needs `no_new_privs` or
/// `CAP_SYS_ADMIN`); inherited by every child and kept across `execve`.
/// Allocates nothing, so it may run in a forked child.
pub fn apply(programs: &[BpfProgram]) -> Result<(), seccompiler::Error> {
    programs
        .iter()
        .try_for_each(|p| seccompiler::apply_filter(p))
}

/// Compiles and loads the default filters into this thread.
pub fn apply_default() -> Result<(), String> {
    apply(&default_program()?).map_err(|e| format!("load seccomp filter: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_denylist_covers_the_escape_routes_and_compiles() {
        let names: Vec<&str> = blocked_syscalls().iter().map(|(n, _)| *n).collect();
        for n in [
            "unshare",
            "mount",
            "kexec_load",
            "init_module",
            "finit_module",
            "bpf",
            "keyctl",
            "ptrace",
            "setns",
            "open_by_handle_at",
        ] {
            assert!(names.contains(&n), "{n} not blocked");
        }
        for n in ["read", "write", "clone", "execve", "socket"] {
            assert!(!names.contains(&n), "{n} must stay allowed");
        }
        let progs = default_program().unwrap();
        assert_eq!(progs.len(), 2);
        assert!(progs.iter().all(|p| !p.is_empty() && p.len() < 4096));
    }

    #[test]
    fn clone_flags_are_the_namespace_ones() {
        let all = CLONE_NAMESPACE_FLAGS.iter().fold(0u64, |a, f| a | f);
        assert_eq!(all, 0x7E02_0000, "Docker's mask for clone");
        assert_eq!(all & libc::CLONE_THREAD as u64, 0);
    }

    #[test]
    fn the_filter_refuses_in_a_child_process() {
        // Loaded in a forked child (no root needed with no_new_privs), so
        // the test process stays unfiltered; compiled before the fork, as
        // the child of a threaded process must not allocate.
        let progs = default_program().unwrap();
        // SAFETY: the child makes only async-signal-safe calls and _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: prctl with integer arguments only.
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
            let code = match apply(&progs) {
                Err(_) => 10,
                Ok(()) => {
                    // SAFETY: unshare and getpid take integer arguments only.
                    let r = unsafe { libc::unshare(libc::CLONE_NEWUSER) };
                    let e = std::io::Error::last_os_error().raw_os_error();
                    // SAFETY: as above.
                    let ok = unsafe { libc::getpid() } > 0;
                    if r == -1 && e == Some(libc::EPERM) && ok {
                        0
                    } else {
                        11
                    }
                }
            };
            // SAFETY: leaves the child without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "status {status}");
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "10: load failed, 11: unshare allowed"
        );
    }
}
