//! The device allowlist of every container, and its two encodings: the v1
//! devices controller's lines (`devices.deny a`, then one `devices.allow`
//! line per rule) and, for cgroup v2, an eBPF program of type
//! `BPF_PROG_TYPE_CGROUP_DEVICE` attached to the container's cgroup with
//! `bpf(BPF_PROG_ATTACH)`.
//!
//! The plan ([`default_allowlist`], [`v1_lines`], [`bpf_program`]) is pure
//! and unit-tested without root (the program is run by a small interpreter
//! of the instructions it uses); [`attach_v2`] is the thin I/O.
//!
//! The list is runc's default less mknod: `null zero full random urandom tty
//! console ptmx` and every `pts/N`, read and write; everything else,
//! including mknod of any node, is denied. (Containers have no `CAP_MKNOD`
//! and `/dev` is `nodev` too; overlayfs whiteouts are exempt from the device
//! check in the kernel.)
//!
//! Why no crate for the eBPF program: the program is a dozen instructions
//! from a fixed pattern (runc's `devicefilter` emits the same shape), and
//! the eBPF crates either compile programs from C or Rust with a separate
//! toolchain (clang, bpf-linker) or pull a large loader (aya) for what is
//! two `bpf(2)` calls here. The encoding below follows
//! `include/uapi/linux/bpf.h`.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Kind of device node a rule applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DevKind {
    /// Character devices (`c`).
    Char,
    /// Block devices (`b`).
    Block,
    /// Both (`a`).
    All,
}

/// Access bits, as the v1 controller writes them (`r`, `w`, `m`).
pub mod access {
    /// mknod of the node.
    pub const MKNOD: u32 = 1;
    /// Open for reading.
    pub const READ: u32 = 2;
    /// Open for writing.
    pub const WRITE: u32 = 4;
}

/// One allow rule: kind, major and minor (`None` = any), allowed accesses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceRule {
    /// Character, block or both.
    pub kind: DevKind,
    /// Major number, `None` for any.
    pub major: Option<u32>,
    /// Minor number, `None` for any.
    pub minor: Option<u32>,
    /// Bits of [`access`].
    pub access: u32,
}

impl DeviceRule {
    const fn chr(major: u32, minor: Option<u32>) -> DeviceRule {
        DeviceRule {
            kind: DevKind::Char,
            major: Some(major),
            minor,
            access: access::READ | access::WRITE,
        }
    }

    /// Whether this rule allows `access` (bits) to a node of `kind` (not
    /// [`DevKind::All`]) with the given numbers: the reference semantics both
    /// encodings must have.
    pub fn allows(&self, kind: DevKind, major: u32, minor: u32, access: u32) -> bool {
        (self.kind == DevKind::All || self.kind == kind)
            && self.major.is_none_or(|m| m == major)
            && self.minor.is_none_or(|m| m == minor)
            && access & !self.access == 0
    }
}

impl fmt::Display for DeviceRule {
    /// The v1 `devices.allow` form: `c 1:3 rw`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            DevKind::Char => 'c',
            DevKind::Block => 'b',
            DevKind::All => 'a',
        };
        let num = |n: Option<u32>| n.map_or("*".to_string(), |n| n.to_string());
        let mut acc = String::new();
        for (bit, c) in [
            (access::READ, 'r'),
            (access::WRITE, 'w'),
            (access::MKNOD, 'm'),
        ] {
            if self.access & bit != 0 {
                acc.push(c);
            }
        }
        write!(f, "{kind} {}:{} {acc}", num(self.major), num(self.minor))
    }
}

/// The default allowlist (runc's, without mknod): `/dev/null` 1:3, `zero`
/// 1:5, `full` 1:7, `random` 1:8, `urandom` 1:9, `tty` 5:0, `console`
/// 5:1, `ptmx` 5:2 and `pts/*` 136:*, read and write.
pub fn default_allowlist() -> Vec<DeviceRule> {
    vec![
        DeviceRule::chr(1, Some(3)),
        DeviceRule::chr(1, Some(5)),
        DeviceRule::chr(1, Some(7)),
        DeviceRule::chr(1, Some(8)),
        DeviceRule::chr(1, Some(9)),
        DeviceRule::chr(5, Some(0)),
        DeviceRule::chr(5, Some(1)),
        DeviceRule::chr(5, Some(2)),
        DeviceRule::chr(136, None),
    ]
}

/// The allowlist of a container: [`default_allowlist`], or for a privileged container
/// (`securityContext.privileged`) one rule allowing every device, as Docker's
/// `--privileged` does.
pub fn allowlist(privileged: bool) -> Vec<DeviceRule> {
    if privileged {
        vec![DeviceRule {
            kind: DevKind::All,
            major: None,
            minor: None,
            access: access::MKNOD | access::READ | access::WRITE,
        }]
    } else {
        default_allowlist()
    }
}

/// Whether any rule of `rules` allows the access (deny by default).
pub fn allowed(rules: &[DeviceRule], kind: DevKind, major: u32, minor: u32, access: u32) -> bool {
    rules.iter().any(|r| r.allows(kind, major, minor, access))
}

/// The v1 devices controller writes: `("devices.deny", "a")` first, then one
/// `("devices.allow", rule)` per rule.
pub fn v1_lines(rules: &[DeviceRule]) -> Vec<(&'static str, String)> {
    let mut out = vec![("devices.deny", "a".to_string())];
    out.extend(rules.iter().map(|r| ("devices.allow", r.to_string())));
    out
}

/// One eBPF instruction (`struct bpf_insn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    /// Opcode.
    pub code: u8,
    /// Destination register (low nibble) and source register (high nibble).
    pub regs: u8,
    /// Signed offset (jumps: instructions to skip; loads: bytes).
    pub off: i16,
    /// Signed immediate.
    pub imm: i32,
}

// Opcodes used (class | op | source), from include/uapi/linux/bpf.h.
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU32_AND_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const ALU32_RSH_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const ALU32_MOV_X: u8 = 0xbc; // BPF_ALU | BPF_MOV | BPF_X
const ALU64_MOV_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const JMP_JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JMP_EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

// bpf_cgroup_dev_ctx: u32 access_type (access << 16 | type), u32 major, u32 minor.
const BPF_DEVCG_DEV_BLOCK: i32 = 1;
const BPF_DEVCG_DEV_CHAR: i32 = 2;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (dst & 0x0f) | (src << 4),
        off,
        imm,
    }
}

/// The program for `rules`: R2 = device type, R3 = access bits, R4 = major,
/// R5 = minor; then per rule a block of checks that jumps to the next block
/// on a mismatch and otherwise returns 1 (allow); after the last block,
/// return 0 (deny).
pub fn bpf_program(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU32_AND_K, 2, 0, 0, 0xffff),
        insn(LDX_MEM_W, 3, 1, 0, 0),
        insn(ALU32_RSH_K, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for r in rules {
        // Checks as (instructions before the jump, register, value); the jump
        // offsets are filled in once the block's length is known.
        let mut block: Vec<Insn> = Vec::new();
        let mut jumps: Vec<usize> = Vec::new();
        match r.kind {
            DevKind::Char => {
                jumps.push(block.len());
                block.push(insn(JMP_JNE_K, 2, 0, 0, BPF_DEVCG_DEV_CHAR));
            }
            DevKind::Block => {
                jumps.push(block.len());
                block.push(insn(JMP_JNE_K, 2, 0, 0, BPF_DEVCG_DEV_BLOCK));
            }
            DevKind::All => {}
        }
        // R1 = access & !allowed; any bit left means not allowed by this rule.
        block.push(insn(ALU32_MOV_X, 1, 3, 0, 0));
        block.push(insn(ALU32_AND_K, 1, 0, 0, (!r.access & 0x7) as i32));
        jumps.push(block.len());
        block.push(insn(JMP_JNE_K, 1, 0, 0, 0));
        if let Some(m) = r.major {
            jumps.push(block.len());
            block.push(insn(JMP_JNE_K, 4, 0, 0, m as i32));
        }
        if let Some(m) = r.minor {
            jumps.push(block.len());
            block.push(insn(JMP_JNE_K, 5, 0, 0, m as i32));
        }
        block.push(insn(ALU64_MOV_K, 0, 0, 0, 1));
        block.push(insn(JMP_EXIT, 0, 0, 0, 0));
        let len = block.len();
        for j in jumps {
            // Skip to the first instruction after this block.
            block[j].off = (len - 1 - j) as i16;
        }
        p.extend(block);
    }
    p.push(insn(ALU64_MOV_K, 0, 0, 0, 0));
    p.push(insn(JMP_EXIT, 0, 0, 0, 0));
    p
}

/// Errors of loading or attaching the device program.
#[derive(Debug, thiserror::Error)]
pub enum DeviceFilterError {
    /// The cgroup directory could not be opened.
    #[error("device filter: {path}: {source}")]
    Open {
        /// The cgroup directory.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// `BPF_PROG_LOAD` failed (the verifier's log, when it gave one).
    #[error("device filter: loading the eBPF program failed: {source}{log}")]
    Load {
        /// Cause.
        source: io::Error,
        /// `: verifier log …`, or empty.
        log: String,
    },
    /// `BPF_PROG_ATTACH` failed.
    #[error("device filter: attaching the eBPF program to {path} failed: {source}")]
    Attach {
        /// The cgroup directory.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 1 << 1;

/// The `BPF_PROG_LOAD` part of `union bpf_attr`, up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_PROG_ATTACH` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, fully initialised #[repr(C)] prefix of
    // `union bpf_attr` for `cmd`, and its size is passed along; the kernel
    // treats missing trailing fields as zero.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Loads `prog` as a cgroup device program; returns its fd.
pub fn load(prog: &[Insn]) -> Result<OwnedFd, DeviceFilterError> {
    let license = c"Apache-2.0";
    let mut name = [0u8; 16];
    name[..12].copy_from_slice(b"shoal_device");
    let attempt = |log: Option<&mut Vec<u8>>| {
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
            insn_cnt: prog.len() as u32,
            insns: prog.as_ptr() as u64,
            license: license.as_ptr() as u64,
            prog_name: name,
            expected_attach_type: BPF_CGROUP_DEVICE,
            ..Default::default()
        };
        if let Some(buf) = log {
            attr.log_level = 1;
            attr.log_size = buf.len() as u32;
            attr.log_buf = buf.as_mut_ptr() as u64;
        }
        bpf(BPF_PROG_LOAD, &mut attr)
    };
    match attempt(None) {
        // SAFETY: a successful BPF_PROG_LOAD returns a new fd that we own.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(source) => {
            // Again with the verifier's log, to say why.
            let mut buf = vec![0u8; 64 * 1024];
            let _ = attempt(Some(&mut buf));
            let text = String::from_utf8_lossy(&buf);
            let text = text.trim_end_matches('\0').trim();
            let log = if text.is_empty() {
                String::new()
            } else {
                format!(": verifier log: {text}")
            };
            Err(DeviceFilterError::Load { source, log })
        }
    }
}

/// Loads the program for `rules` and attaches it to the v2 cgroup directory
/// `cgroup` (`BPF_F_ALLOW_MULTI`, as runc, so that a policy of a parent
/// cgroup applies too). The program stays attached after the fds are
/// closed, for the life of the cgroup.
pub fn attach_v2(cgroup: &Path, rules: &[DeviceRule]) -> Result<(), DeviceFilterError> {
    let prog = load(&bpf_program(rules))?;
    let dir = File::open(cgroup).map_err(|source| DeviceFilterError::Open {
        path: cgroup.to_path_buf(),
        source,
    })?;
    let mut attr = ProgAttachAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    bpf(BPF_PROG_ATTACH, &mut attr).map_err(|source| DeviceFilterError::Attach {
        path: cgroup.to_path_buf(),
        source,
    })?;
    Ok(())
}

/// Whether `dir` is on a cgroup2 file system (`statfs` magic), i.e. a real
/// v2 cgroup a device program can be attached to.
pub fn is_cgroup2_dir(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

/// The cgroup2 mount point in mountinfo text, also on hybrid hosts (where
/// [`crate::cgroup::CgroupLayout`] is v1 and the unified mount carries no
/// controllers, but device programs still attach there).
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mount_point = left.split(' ').nth(4)?;
        (right.split(' ').next()? == "cgroup2").then(|| PathBuf::from(mount_point))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `prog` on one device access: an interpreter for exactly the
    /// instructions [`bpf_program`] emits, with the kernel's semantics
    /// (32-bit ALU ops zero-extend, `JNE` compares 64 bits with the
    /// sign-extended immediate, jumps are relative to the next instruction).
    fn run(prog: &[Insn], kind: DevKind, major: u32, minor: u32, acc: u32) -> u64 {
        let ty = match kind {
            DevKind::Block => 1u32,
            DevKind::Char => 2,
            DevKind::All => unreachable!(),
        };
        let ctx = [(acc << 16) | ty, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_MEM_W => {
                    assert_eq!(src, 1, "loads only from the context");
                    r[dst] = u64::from(ctx[(i.off / 4) as usize]);
                }
                ALU32_AND_K => r[dst] = u64::from((r[dst] as u32) & (i.imm as u32)),
                ALU32_RSH_K => r[dst] = u64::from((r[dst] as u32) >> i.imm),
                ALU32_MOV_X => r[dst] = u64::from(r[src] as u32),
                ALU64_MOV_K => r[dst] = i.imm as i64 as u64,
                JMP_JNE_K => {
                    if r[dst] != i.imm as i64 as u64 {
                        pc += i.off as usize;
                    }
                }
                JMP_EXIT => return r[0],
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn v1_lines_deny_all_then_allow_each_rule() {
        let lines = v1_lines(&default_allowlist());
        assert_eq!(lines[0], ("devices.deny", "a".to_string()));
        let allow: Vec<&str> = lines[1..].iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(
            allow,
            [
                "c 1:3 rw",
                "c 1:5 rw",
                "c 1:7 rw",
                "c 1:8 rw",
                "c 1:9 rw",
                "c 5:0 rw",
                "c 5:1 rw",
                "c 5:2 rw",
                "c 136:* rw"
            ]
        );
        assert!(lines.iter().all(|(_, l)| !l.contains('m')), "no mknod");
    }

    #[test]
    fn the_program_agrees_with_the_allowlist_everywhere() {
        let rules = default_allowlist();
        let prog = bpf_program(&rules);
        let mut allowed_seen = 0;
        for kind in [DevKind::Char, DevKind::Block] {
            for major in [0, 1, 4, 5, 8, 10, 136, 137, 254, 1 << 20] {
                for minor in [0, 1, 2, 3, 5, 7, 8, 9, 10, 200, 1 << 19] {
                    for acc in 1..8 {
                        let want = allowed(&rules, kind, major, minor, acc);
                        let got = run(&prog, kind, major, minor, acc);
                        assert_eq!(
                            got,
                            u64::from(want),
                            "{kind:?} {major}:{minor} access {acc}"
                        );
                        allowed_seen += usize::from(want);
                    }
                }
            }
        }
        assert!(allowed_seen > 0);
        // Spot checks against the rule text, not only against `allowed`.
        let rw = access::READ | access::WRITE;
        assert_eq!(run(&prog, DevKind::Char, 1, 3, rw), 1, "/dev/null rw");
        assert_eq!(run(&prog, DevKind::Char, 136, 4, rw), 1, "/dev/pts/4");
        assert_eq!(run(&prog, DevKind::Char, 1, 1, access::READ), 0, "/dev/mem");
        assert_eq!(
            run(&prog, DevKind::Block, 8, 0, access::READ),
            0,
            "/dev/sda"
        );
        assert_eq!(
            run(&prog, DevKind::Char, 1, 3, access::MKNOD),
            0,
            "mknod null"
        );
        assert_eq!(
            run(&prog, DevKind::Block, 1, 3, access::READ),
            0,
            "block 1:3"
        );
    }

    #[test]
    fn a_privileged_container_may_use_every_device() {
        let rules = allowlist(true);
        let prog = bpf_program(&rules);
        for kind in [DevKind::Char, DevKind::Block] {
            for (major, minor) in [(1, 1), (8, 0), (10, 200), (254, 3)] {
                for acc in 1..8 {
                    assert_eq!(
                        run(&prog, kind, major, minor, acc),
                        1,
                        "{kind:?} {major}:{minor}"
                    );
                }
            }
        }
        assert_eq!(
            v1_lines(&rules)[1],
            ("devices.allow", "a *:* rwm".to_string())
        );
        assert_eq!(allowlist(false), default_allowlist());
    }

    #[test]
    fn wildcard_and_all_kind_rules() {
        let rules = [
            DeviceRule {
                kind: DevKind::All,
                major: None,
                minor: None,
                access: access::MKNOD,
            },
            DeviceRule {
                kind: DevKind::Block,
                major: Some(7),
                minor: None,
                access: access::READ,
            },
        ];
        assert_eq!(rules[0].to_string(), "a *:* m");
        assert_eq!(rules[1].to_string(), "b 7:* r");
        let prog = bpf_program(&rules);
        for kind in [DevKind::Char, DevKind::Block] {
            for major in [1, 7, 8] {
                for minor in [0, 9] {
                    for acc in 1..8 {
                        assert_eq!(
                            run(&prog, kind, major, minor, acc),
                            u64::from(allowed(&rules, kind, major, minor, acc)),
                            "{kind:?} {major}:{minor} {acc}"
                        );
                    }
                }
            }
        }
        // An empty list denies everything.
        assert_eq!(run(&bpf_program(&[]), DevKind::Char, 1, 3, 2), 0);
    }

    #[test]
    fn finds_the_cgroup2_mount_on_a_hybrid_host() {
        let text = "30 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                    35 25 0:31 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount(text),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(cgroup2_mount("30 25 0:26 / /x rw - tmpfs t rw\n"), None);
    }
}
