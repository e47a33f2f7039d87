//! Linux capabilities: Docker's default set, bounding-set drop and capset.

use std::io;

/// The default capabilities, by number: Docker's default set without
/// `CAP_MKNOD` (a container has no business making device nodes; `/dev` is
/// `nodev` as well).
pub const DEFAULT_CAPS: [(u32, &str); 13] = [
    (0, "CAP_CHOWN"),
    (1, "CAP_DAC_OVERRIDE"),
    (3, "CAP_FOWNER"),
    (4, "CAP_FSETID"),
    (5, "CAP_KILL"),
    (6, "CAP_SETGID"),
    (7, "CAP_SETUID"),
    (8, "CAP_SETPCAP"),
    (10, "CAP_NET_BIND_SERVICE"),
    (13, "CAP_NET_RAW"),
    (18, "CAP_SYS_CHROOT"),
    (29, "CAP_AUDIT_WRITE"),
    (31, "CAP_SETFCAP"),
];

/// The default set as a 64-bit mask.
pub fn default_mask() -> u64 {
    DEFAULT_CAPS.iter().fold(0u64, |m, (n, _)| m | (1u64 << n))
}

/// Every capability from 0 to `last` (a privileged container's set).
pub fn all_mask(last: u32) -> u64 {
    if last >= 63 {
        u64::MAX
    } else {
        (1u64 << (last + 1)) - 1
    }
}

/// The bounding set of this process as a mask (capabilities `0..=last` it may still
/// hold): a privileged container gets every capability the runtime itself has, which is
/// all of them on an ordinary host, fewer inside a restricted sandbox.
pub fn bounding_mask(last: u32) -> u64 {
    let held = |c: u32| {
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_CAPBSET_READ, c as libc::c_ulong, 0, 0, 0) == 1 }
    };
    (0..=last.min(63))
        .filter(|c| held(*c))
        .fold(0u64, |m, c| m | (1u64 << c))
}

/// Highest capability number the kernel knows.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_V3: u32 = 0x2008_0522;

/// Drops every capability outside `mask` from the bounding set (needs
/// CAP_SETPCAP, so call it before changing user).
pub fn drop_bounding(mask: u64, last: u32) -> io::Result<()> {
    for cap in 0..=last {
        if mask & (1u64 << cap) == 0 {
            // SAFETY: prctl with integer arguments only.
            let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            if rc != 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINVAL) {
                    return Err(io::Error::other(format!("PR_CAPBSET_DROP {cap}: {e}")));
                }
            }
        }
    }
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    Ok(())
}

/// Sets the effective and permitted sets to `mask` and clears the
/// inheritable set for this thread (so that no file capability can be
/// regained through it after an execve).
pub fn set_caps(mask: u64) -> io::Result<()> {
    let lo = mask as u32;
    let hi = (mask >> 32) as u32;
    let mut hdr = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: lo,
            permitted: lo,
            inheritable: 0,
        },
        CapData {
            effective: hi,
            permitted: hi,
            inheritable: 0,
        },
    ];
    // SAFETY: header and a two-element data array as capset(2) expects for v3.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) };
    if rc != 0 {
        return Err(io::Error::other(format!(
            "capset: {}",
            io::Error::last_os_error()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask() {
        let m = default_mask();
        assert_eq!(m.count_ones(), 13);
        assert!(
            m & (1 << 27) == 0,
            "CAP_MKNOD must not be in the default set"
        );
        assert!(
            m & (1 << 21) == 0,
            "CAP_SYS_ADMIN must not be in the default set"
        );
        assert!(
            m & (1 << 12) == 0,
            "CAP_NET_ADMIN must not be in the default set"
        );
    }
}
