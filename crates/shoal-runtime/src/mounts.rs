//! The container's root file system as a plan: [`plan`] turns what a
//! container needs (layers, cgroup, /etc files, volumes) into a list of
//! [`Step`]s without touching the system, and [`apply`] carries them out in
//! the container's new mount namespace (like `shoal-net`'s nftables
//! render/apply). The plan is what the unit tests check; root tests check
//! that the kernel agrees.
//!
//! Hardening lives in the plan: `/dev` is a `nodev` tmpfs whose only devices
//! are bind mounts of the host's standard character devices (a node made
//! later by anyone cannot be opened), and after `pivot_root` runc's masked
//! paths are hidden and its read-only paths remounted read-only.

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use crate::cgroup::CgroupLayout;

/// Paths hidden from the container (runc's and Docker's default
/// `maskedPaths`): a file gets `/dev/null` bound over it, a directory an
/// empty read-only tmpfs. Paths the kernel does not have are skipped.
pub const MASKED_PATHS: [&str; 12] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
];

/// Paths remounted read-only (runc's and Docker's default `readonlyPaths`).
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The character devices every container gets, bound from the host's `/dev`
/// (the same set as runc's default devices).
pub const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// What the container's root file system is built from.
#[derive(Clone, Debug)]
pub struct RootfsInput<'a> {
    /// Where the overlay is mounted (before `pivot_root`).
    pub rootfs: &'a Path,
    /// The container's overlay upper directory.
    pub upper: PathBuf,
    /// The container's overlay work directory.
    pub work: PathBuf,
    /// Unpacked image layers, bottom first.
    pub layers: &'a [PathBuf],
    /// The host's cgroup layout.
    pub cgroup_layout: &'a CgroupLayout,
    /// The container's cgroup, relative to each hierarchy root.
    pub cgroup_rel: &'a Path,
    /// `/etc` files of the pod: (name under /etc, host file).
    pub etc_files: &'a [(String, PathBuf)],
    /// Volumes: (host source, container destination, read-only).
    pub binds: &'a [(PathBuf, PathBuf, bool)],
    /// Where the host's devices are (`/dev`; a directory in tests).
    pub host_dev: &'a Path,
    /// Make the root read-only after the pivot (`readOnlyRootFilesystem`); the mounts
    /// on it (volumes, `/dev`, `/proc`, `/etc` files) keep their own flags.
    pub read_only_root: bool,
    /// `Some(devices)` for a privileged container: the host's device nodes (paths under
    /// `host_dev`, from [`host_devices`]) are bound in place of [`DEVICES`], `/dev` is not
    /// `nodev`, `/sys` and the cgroup mounts are writable and nothing is masked.
    pub privileged: Option<&'a [PathBuf]>,
}

/// The character and block devices under `dev` (relative paths), for a privileged
/// container, leaving out what every container gets a fresh one of (`pts`, `shm`,
/// `mqueue`) and the host's `console`, as runc does. Unreadable entries are skipped.
pub fn host_devices(dev: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    fn walk(dev: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = fs::read_dir(dev.join(rel)) else {
            return;
        };
        for e in rd.flatten() {
            let name = rel.join(e.file_name());
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                if !matches!(
                    name.to_str(),
                    Some("pts" | "shm" | "mqueue" | "hugepages" | ".lxc" | ".udev")
                ) {
                    walk(dev, &name, out);
                }
            } else if (ft.is_char_device() || ft.is_block_device())
                && name.as_os_str() != "console"
                && name.as_os_str() != "ptmx"
            {
                out.push(name);
            }
        }
    }
    let mut out = Vec::new();
    walk(dev, Path::new(""), &mut out);
    out.sort();
    out
}

/// One step of the root file system setup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// `mount(2)` as given.
    Mount {
        /// Source (`None` for remounts).
        source: Option<PathBuf>,
        /// Target.
        target: PathBuf,
        /// File system type (`None` for binds and remounts).
        fstype: Option<String>,
        /// Flags.
        flags: MsFlags,
        /// File system options.
        data: Option<String>,
    },
    /// Create a directory and its parents.
    Mkdir(PathBuf),
    /// Create an empty file (a mount point for a file bind) if missing.
    Touch(PathBuf),
    /// Create a symbolic link `link` -> `target`.
    Symlink {
        /// What the link points to.
        target: PathBuf,
        /// The link.
        link: PathBuf,
    },
    /// Bind `source` onto `dest` inside `root`: the destination is resolved
    /// at apply time (the overlay must be mounted) refusing `..` and
    /// symlinks, its mount point made as a file or directory like the source.
    BindInto {
        /// Host source.
        source: PathBuf,
        /// Root the destination lives under.
        root: PathBuf,
        /// Absolute path in the container.
        dest: PathBuf,
        /// Remount read-only (and nosuid, nodev).
        read_only: bool,
    },
    /// `pivot_root` into the directory, detach the old root, `chdir /`.
    PivotRoot(PathBuf),
    /// Hide a path (after the pivot): `/dev/null` over a file, an empty
    /// read-only tmpfs over a directory; skipped when missing.
    Mask(PathBuf),
    /// Remount a path read-only (after the pivot); skipped when missing.
    ReadOnly(PathBuf),
}

fn flags_ro() -> MsFlags {
    MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC
}

fn mnt(source: &str, target: PathBuf, fstype: &str, flags: MsFlags, data: Option<&str>) -> Step {
    Step::Mount {
        source: Some(PathBuf::from(source)),
        target,
        fstype: Some(fstype.to_string()),
        flags,
        data: data.map(str::to_string),
    }
}

fn bind_steps(out: &mut Vec<Step>, source: PathBuf, target: PathBuf, read_only: bool) {
    out.push(Step::Mount {
        source: Some(source),
        target: target.clone(),
        fstype: None,
        flags: MsFlags::MS_BIND | MsFlags::MS_REC,
        data: None,
    });
    if read_only {
        out.push(Step::Mount {
            source: None,
            target,
            fstype: None,
            flags: MsFlags::MS_BIND
                | MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV,
            data: None,
        });
    }
}

/// The steps that build the container's root file system and pivot into it.
pub fn plan(input: &RootfsInput<'_>) -> Result<Vec<Step>, String> {
    if input.layers.is_empty() {
        return Err("image has no layers".into());
    }
    let root = input.rootfs;
    let mut out = vec![Step::Mount {
        source: None,
        target: PathBuf::from("/"),
        fstype: None,
        flags: MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        data: None,
    }];
    let lower: Vec<String> = input
        .layers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={},volatile",
        lower.join(":"),
        input.upper.display(),
        input.work.display()
    );
    out.push(mnt(
        "overlay",
        root.to_path_buf(),
        "overlay",
        MsFlags::empty(),
        Some(&opts),
    ));

    // /proc
    let proc_ = root.join("proc");
    out.push(Step::Mkdir(proc_.clone()));
    out.push(mnt(
        "proc",
        proc_,
        "proc",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    ));

    // /dev: nodev, so a node made in it (even with CAP_MKNOD) cannot be
    // opened; the standard devices are bind mounts, which keep the host
    // /dev's flags.
    let dev = root.join("dev");
    out.push(Step::Mkdir(dev.clone()));
    // A privileged container may make device nodes (it has CAP_MKNOD and every device
    // is allowed), so its /dev is not nodev, as with runc.
    let dev_flags = match input.privileged {
        None => MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(_) => MsFlags::MS_NOSUID,
    };
    out.push(mnt(
        "tmpfs",
        dev.clone(),
        "tmpfs",
        dev_flags | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    ));
    let devices: Vec<PathBuf> = match input.privileged {
        None => DEVICES.iter().map(PathBuf::from).collect(),
        Some(all) => all.to_vec(),
    };
    for name in &devices {
        out.push(Step::Touch(dev.join(name)));
        out.push(Step::Mount {
            source: Some(input.host_dev.join(name)),
            target: dev.join(name),
            fstype: None,
            flags: MsFlags::MS_BIND,
            data: None,
        });
    }
    let pts = dev.join("pts");
    out.push(Step::Mkdir(pts.clone()));
    out.push(mnt(
        "devpts",
        pts,
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    ));
    let shm = dev.join("shm");
    out.push(Step::Mkdir(shm.clone()));
    out.push(mnt(
        "shm",
        shm,
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    ));
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        out.push(Step::Symlink {
            target: PathBuf::from(target),
            link: dev.join(link),
        });
    }

    // /sys read-only, with the container's own cgroups at /sys/fs/cgroup.
    let sys = root.join("sys");
    out.push(Step::Mkdir(sys.clone()));
    let sys_flags = match input.privileged {
        None => flags_ro(),
        Some(_) => MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
    };
    let cgroup_ro = input.privileged.is_none();
    out.push(mnt("sysfs", sys.clone(), "sysfs", sys_flags, None));
    let cg = sys.join("fs/cgroup");
    match input.cgroup_layout {
        CgroupLayout::V2 { root: cgroot } => {
            bind_steps(&mut out, cgroot.join(input.cgroup_rel), cg, cgroup_ro);
        }
        CgroupLayout::V1 { mounts } => {
            out.push(mnt(
                "tmpfs",
                cg.clone(),
                "tmpfs",
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("mode=755"),
            ));
            let mut done: Vec<&PathBuf> = Vec::new();
            for mp in mounts.values() {
                if done.contains(&mp) {
                    continue;
                }
                done.push(mp);
                let name = mp
                    .file_name()
                    .ok_or_else(|| format!("cgroup mount {} has no name", mp.display()))?;
                let t = cg.join(name);
                out.push(Step::Mkdir(t.clone()));
                bind_steps(&mut out, mp.join(input.cgroup_rel), t, cgroup_ro);
            }
            if cgroup_ro {
                out.push(Step::Mount {
                    source: None,
                    target: cg,
                    fstype: None,
                    flags: MsFlags::MS_REMOUNT | flags_ro(),
                    data: Some("mode=755".into()),
                });
            }
        }
    }

    // /etc files of the pod, then volumes.
    for (name, src) in input.etc_files {
        out.push(Step::BindInto {
            source: src.clone(),
            root: root.to_path_buf(),
            dest: Path::new("/etc").join(name),
            read_only: false,
        });
    }
    for (src, dest, read_only) in input.binds {
        out.push(Step::BindInto {
            source: src.clone(),
            root: root.to_path_buf(),
            dest: dest.clone(),
            read_only: *read_only,
        });
    }

    out.push(Step::PivotRoot(root.to_path_buf()));
    if input.privileged.is_none() {
        out.extend(MASKED_PATHS.iter().map(|p| Step::Mask(PathBuf::from(p))));
        out.extend(
            READONLY_PATHS
                .iter()
                .map(|p| Step::ReadOnly(PathBuf::from(p))),
        );
    }
    if input.read_only_root {
        // A bind remount changes this mount only, not the overlay's super block nor
        // the mounts below it.
        out.push(Step::Mount {
            source: None,
            target: PathBuf::from("/"),
            fstype: None,
            flags: MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            data: None,
        });
    }
    Ok(out)
}

type R<T> = Result<T, String>;

fn m(
    src: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> R<()> {
    mount(src, target, fstype, flags, data).map_err(|e| {
        format!(
            "mount {} on {} ({}): {e}",
            src.map(|p| p.display().to_string()).unwrap_or_default(),
            target.display(),
            fstype.unwrap_or("bind")
        )
    })
}

fn mkdir_p(p: &Path) -> R<()> {
    fs::create_dir_all(p).map_err(|e| format!("mkdir {}: {e}", p.display()))
}

fn touch(target: &Path) -> R<()> {
    if let Some(p) = target.parent() {
        mkdir_p(p)?;
    }
    if fs::symlink_metadata(target).is_err() {
        fs::write(target, b"").map_err(|e| format!("create {}: {e}", target.display()))?;
    }
    Ok(())
}

fn bind(src: &Path, target: &Path, read_only: bool) -> R<()> {
    let mut steps = Vec::new();
    bind_steps(
        &mut steps,
        src.to_path_buf(),
        target.to_path_buf(),
        read_only,
    );
    steps.iter().try_for_each(apply_one)
}

fn apply_one(step: &Step) -> R<()> {
    match step {
        Step::Mount {
            source,
            target,
            fstype,
            flags,
            data,
        } => m(
            source.as_deref(),
            target,
            fstype.as_deref(),
            *flags,
            data.as_deref(),
        ),
        Step::Mkdir(p) => mkdir_p(p),
        Step::Touch(p) => touch(p),
        Step::Symlink { target, link } => std::os::unix::fs::symlink(target, link)
            .map_err(|e| format!("symlink {}: {e}", link.display())),
        Step::BindInto {
            source,
            root,
            dest,
            read_only,
        } => {
            let t = crate::init::safe_join(root, dest)?;
            let is_dir = fs::metadata(source)
                .map_err(|e| format!("mount source {}: {e}", source.display()))?
                .is_dir();
            if is_dir {
                mkdir_p(&t)?;
            } else {
                touch(&t)?;
            }
            bind(source, &t, *read_only)
        }
        Step::PivotRoot(rootfs) => {
            nix::unistd::chdir(rootfs.as_path())
                .map_err(|e| format!("chdir {}: {e}", rootfs.display()))?;
            nix::unistd::pivot_root(".", ".")
                .map_err(|e| format!("pivot_root {}: {e}", rootfs.display()))?;
            umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("unmount old root: {e}"))?;
            nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))
        }
        Step::Mask(p) => match fs::symlink_metadata(p) {
            Err(_) => Ok(()),
            Ok(md) if md.is_dir() => m(
                Some(Path::new("tmpfs")),
                p,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("mode=555"),
            ),
            Ok(_) => m(
                Some(Path::new("/dev/null")),
                p,
                None,
                MsFlags::MS_BIND,
                None,
            ),
        },
        Step::ReadOnly(p) => {
            if fs::symlink_metadata(p).is_err() {
                return Ok(());
            }
            bind(p, p, true)
        }
    }
}

/// Carries out the steps in order; stops at the first failure (the mount
/// namespace is the container's own and goes away with it).
pub fn apply(steps: &[Step]) -> Result<(), String> {
    steps.iter().try_for_each(apply_one)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn input<'a>(
        layout: &'a CgroupLayout,
        layers: &'a [PathBuf],
        binds: &'a [(PathBuf, PathBuf, bool)],
        etc: &'a [(String, PathBuf)],
    ) -> RootfsInput<'a> {
        RootfsInput {
            rootfs: Path::new("/run/r"),
            upper: PathBuf::from("/c/upper"),
            work: PathBuf::from("/c/work"),
            layers,
            cgroup_layout: layout,
            cgroup_rel: Path::new("shoal/c1"),
            etc_files: etc,
            binds,
            host_dev: Path::new("/dev"),
            read_only_root: false,
            privileged: None,
        }
    }

    fn target_of(s: &Step) -> Option<&Path> {
        match s {
            Step::Mount { target, .. } => Some(target),
            _ => None,
        }
    }

    #[test]
    fn overlay_stacks_layers_top_first_and_no_layers_is_an_error() {
        let v2 = CgroupLayout::V2 {
            root: PathBuf::from("/sys/fs/cgroup"),
        };
        let layers = [PathBuf::from("/l/base"), PathBuf::from("/l/top")];
        let steps = plan(&input(&v2, &layers, &[], &[])).unwrap();
        assert_eq!(
            steps[1],
            Step::Mount {
                source: Some("overlay".into()),
                target: "/run/r".into(),
                fstype: Some("overlay".into()),
                flags: MsFlags::empty(),
                data: Some(
                    "lowerdir=/l/top:/l/base,upperdir=/c/upper,workdir=/c/work,volatile".into()
                ),
            }
        );
        let err = plan(&input(&v2, &[], &[], &[])).unwrap_err();
        assert!(err.contains("no layers"), "{err}");
    }

    #[test]
    fn privileged_binds_host_devices_leaves_sys_writable_and_masks_nothing() {
        let v2 = CgroupLayout::V2 {
            root: PathBuf::from("/sys/fs/cgroup"),
        };
        let layers = [PathBuf::from("/l/base")];
        let is_ro_sysfs = |s: &Step| {
            matches!(s, Step::Mount { fstype: Some(t), flags, .. }
                if t == "sysfs" && flags.contains(MsFlags::MS_RDONLY))
        };
        let dev_nodev = |s: &Step| {
            matches!(s, Step::Mount { fstype: Some(t), target, flags, .. }
                if t == "tmpfs" && target == Path::new("/run/r/dev")
                    && flags.contains(MsFlags::MS_NODEV))
        };
        let plain = plan(&input(&v2, &layers, &[], &[])).unwrap();
        assert!(plain.iter().any(is_ro_sysfs));
        assert!(plain.iter().any(dev_nodev));
        assert!(plain.iter().any(|s| matches!(s, Step::Mask(_))));
        assert!(plain.contains(&Step::Touch("/run/r/dev/null".into())));

        let devs = [PathBuf::from("loop0"), PathBuf::from("net/tun")];
        let mut inp = input(&v2, &layers, &[], &[]);
        inp.privileged = Some(&devs);
        let steps = plan(&inp).unwrap();
        assert!(!steps.iter().any(is_ro_sysfs), "{steps:#?}");
        assert!(!steps.iter().any(dev_nodev), "{steps:#?}");
        assert!(
            !steps
                .iter()
                .any(|s| matches!(s, Step::Mask(_) | Step::ReadOnly(_))),
            "{steps:#?}"
        );
        // Exactly the listed devices, each touched and bound from the host's /dev.
        for d in ["loop0", "net/tun"] {
            assert!(steps.contains(&Step::Touch(Path::new("/run/r/dev").join(d))));
            assert!(
                steps
                    .iter()
                    .any(|s| matches!(s, Step::Mount { source: Some(src), .. }
                if *src == Path::new("/dev").join(d)))
            );
        }
        assert!(!steps.contains(&Step::Touch("/run/r/dev/null".into())));
        // The cgroup bind is not remounted read-only.
        assert!(
            !steps
                .iter()
                .any(|s| matches!(s, Step::Mount { target, flags, .. }
            if target == Path::new("/run/r/sys/fs/cgroup") && flags.contains(MsFlags::MS_RDONLY)))
        );
    }

    #[test]
    fn host_devices_lists_nodes_but_not_pts_shm_or_console() {
        let devs = host_devices(Path::new("/dev"));
        assert!(devs.contains(&PathBuf::from("null")), "{devs:?}");
        assert!(
            !devs
                .iter()
                .any(|d| d.starts_with("pts") || d.starts_with("shm") || d == Path::new("console")),
            "{devs:?}"
        );
        // Only device nodes: directories and symlinks (fd, stdin, …) are not listed.
        assert!(!devs.contains(&PathBuf::from("fd")), "{devs:?}");
    }

    #[test]
    fn read_only_root_is_remounted_last_and_only_when_asked() {
        let v2 = CgroupLayout::V2 {
            root: PathBuf::from("/sys/fs/cgroup"),
        };
        let layers = [PathBuf::from("/l/base")];
        let binds = [(PathBuf::from("/data"), PathBuf::from("/srv/data"), false)];
        let ro_root = |s: &Step| {
            matches!(s, Step::Mount { source: None, target, flags, .. }
                if target == Path::new("/") && flags.contains(MsFlags::MS_RDONLY))
        };
        let plain = plan(&input(&v2, &layers, &binds, &[])).unwrap();
        assert!(!plain.iter().any(ro_root));
        let mut inp = input(&v2, &layers, &binds, &[]);
        inp.read_only_root = true;
        let steps = plan(&inp).unwrap();
        let last = steps.last().expect("steps");
        assert!(ro_root(last), "{last:?}");
        assert!(matches!(last, Step::Mount { flags, .. }
            if flags.contains(MsFlags::MS_BIND | MsFlags::MS_REMOUNT)));
        // The volume is still bound writable.
        assert!(steps.contains(&Step::BindInto {
            source: "/data".into(),
            root: "/run/r".into(),
            dest: "/srv/data".into(),
            read_only: false,
        }));
    }

    #[test]
    fn dev_is_nodev_and_holds_only_bound_standard_devices() {
        let v2 = CgroupLayout::V2 {
            root: PathBuf::from("/sys/fs/cgroup"),
        };
        let layers = [PathBuf::from("/l/base")];
        let steps = plan(&input(&v2, &layers, &[], &[])).unwrap();
        let dev = steps
            .iter()
            .find_map(|s| match s {
                Step::Mount {
                    target,
                    fstype: Some(t),
                    flags,
                    ..
                } if target == Path::new("/run/r/dev") && t == "tmpfs" => Some(*flags),
                _ => None,
            })
            .expect("a /dev tmpfs");
        assert!(dev.contains(MsFlags::MS_NODEV | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC));
        let binds: Vec<(&Path, &Path)> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Mount {
                    source: Some(src),
                    target,
                    fstype: None,
                    ..
                } if target.starts_with("/run/r/dev") => Some((src.as_path(), target.as_path())),
                _ => None,
            })
            .collect();
        assert_eq!(binds.len(), DEVICES.len(), "{binds:?}");
        for (src, t) in binds {
            assert_eq!(src.file_name(), t.file_name());
            assert!(src.starts_with("/dev"), "{src:?}");
        }
        // Every device's mount point is made first.
        for d in DEVICES {
            let p = Path::new("/run/r/dev").join(d);
            let touch = steps.iter().position(|s| *s == Step::Touch(p.clone()));
            let mount = steps.iter().position(|s| target_of(s) == Some(&p));
            assert!(touch.unwrap() < mount.unwrap(), "{d}");
        }
        // No mknod anywhere in the plan: nodes come from the host only.
        assert!(
            !steps
                .iter()
                .any(|s| matches!(s, Step::Mount { fstype: Some(t), target, .. } if t == "devtmpfs" || target.ends_with("dev/sda")))
        );
    }

    #[test]
    fn masks_and_read_only_paths_come_after_the_pivot() {
        let v2 = CgroupLayout::V2 {
            root: PathBuf::from("/sys/fs/cgroup"),
        };
        let layers = [PathBuf::from("/l/base")];
        let steps = plan(&input(&v2, &layers, &[], &[])).unwrap();
        let pivot = steps
            .iter()
            .position(|s| *s == Step::PivotRoot("/run/r".into()))
            .expect("pivot");
        for p in [
            "/proc/acpi",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/proc/scsi",
            "/sys/firmware",
            "/sys/devices/virtual/powercap",
        ] {
            let i = steps
                .iter()
                .position(|s| *s == Step::Mask(p.into()))
                .unwrap_or_else(|| panic!("{p} not masked"));
            assert!(i > pivot, "{p} masked before the pivot");
        }
        for p in [
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger",
        ] {
            let i = steps
                .iter()
                .position(|s| *s == Step::ReadOnly(p.into()))
                .unwrap_or_else(|| panic!("{p} not read-only"));
            assert!(i > pivot);
        }
    }

    #[test]
    fn sys_and_cgroups_are_read_only_on_v1_and_v2() {
        let layers = [PathBuf::from("/l/base")];
        let v2 = CgroupLayout::V2 {
            root: PathBuf::from("/sys/fs/cgroup"),
        };
        let steps = plan(&input(&v2, &layers, &[], &[])).unwrap();
        let cg = Path::new("/run/r/sys/fs/cgroup");
        let on_cg: Vec<&Step> = steps.iter().filter(|s| target_of(s) == Some(cg)).collect();
        assert_eq!(on_cg.len(), 2, "{on_cg:?}");
        assert!(
            matches!(on_cg[0], Step::Mount { source: Some(s), .. } if s == Path::new("/sys/fs/cgroup/shoal/c1"))
        );
        assert!(
            matches!(on_cg[1], Step::Mount { flags, .. } if flags.contains(MsFlags::MS_RDONLY | MsFlags::MS_REMOUNT))
        );

        let mut mounts = BTreeMap::new();
        mounts.insert("cpu".into(), PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        mounts.insert(
            "cpuacct".into(),
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"),
        );
        mounts.insert("memory".into(), PathBuf::from("/sys/fs/cgroup/memory"));
        let v1 = CgroupLayout::V1 { mounts };
        let steps = plan(&input(&v1, &layers, &[], &[])).unwrap();
        let sources: Vec<&Path> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Mount {
                    source: Some(src),
                    target,
                    ..
                } if target.starts_with(cg) && target != cg => Some(src.as_path()),
                _ => None,
            })
            .collect();
        assert_eq!(
            sources,
            vec![
                Path::new("/sys/fs/cgroup/cpu,cpuacct/shoal/c1"),
                Path::new("/sys/fs/cgroup/memory/shoal/c1")
            ],
            "one bind per hierarchy, co-mounted ones once"
        );
        let last_on_cg = steps.iter().rev().find(|s| target_of(s) == Some(cg));
        assert!(
            matches!(last_on_cg, Some(Step::Mount { flags, .. }) if flags.contains(MsFlags::MS_RDONLY))
        );
    }

    #[test]
    fn etc_files_and_volumes_bind_before_the_pivot() {
        let layers = [PathBuf::from("/l/base")];
        let v2 = CgroupLayout::V2 {
            root: PathBuf::from("/sys/fs/cgroup"),
        };
        let etc = [("hosts".to_string(), PathBuf::from("/pod/hosts"))];
        let binds = [(PathBuf::from("/data"), PathBuf::from("/srv/data"), true)];
        let steps = plan(&input(&v2, &layers, &binds, &etc)).unwrap();
        let pivot = steps
            .iter()
            .position(|s| matches!(s, Step::PivotRoot(_)))
            .unwrap();
        let hosts = steps
            .iter()
            .position(|s| {
                *s == Step::BindInto {
                    source: "/pod/hosts".into(),
                    root: "/run/r".into(),
                    dest: "/etc/hosts".into(),
                    read_only: false,
                }
            })
            .expect("hosts bind");
        let vol = steps
            .iter()
            .position(|s| {
                *s == Step::BindInto {
                    source: "/data".into(),
                    root: "/run/r".into(),
                    dest: "/srv/data".into(),
                    read_only: true,
                }
            })
            .expect("volume bind");
        assert!(hosts < vol && vol < pivot);
    }

    #[test]
    fn apply_builds_files_links_and_refuses_symlinked_destinations() {
        // The non-mount steps run without root on a temporary directory.
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        apply(&[
            Step::Mkdir(d.join("a/b")),
            Step::Touch(d.join("a/b/f")),
            Step::Symlink {
                target: "pts/ptmx".into(),
                link: d.join("a/ptmx"),
            },
        ])
        .unwrap();
        assert!(d.join("a/b/f").is_file());
        assert_eq!(
            fs::read_link(d.join("a/ptmx")).unwrap(),
            Path::new("pts/ptmx")
        );
        std::os::unix::fs::symlink("/etc", d.join("evil")).unwrap();
        let err = apply(&[Step::BindInto {
            source: d.join("a/b/f"),
            root: d.to_path_buf(),
            dest: "/evil/passwd".into(),
            read_only: false,
        }])
        .unwrap_err();
        assert!(err.contains("symlink"), "{err}");
        // Masking or remounting a missing path is a no-op.
        apply(&[
            Step::Mask(d.join("missing")),
            Step::ReadOnly(d.join("missing")),
        ])
        .unwrap();
    }
}
