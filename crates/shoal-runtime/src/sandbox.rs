//! Pod sandboxes: a network namespace (created with loopback up, or given),
//! the pod's `/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf`, and its
//! emptyDir volumes, under `pods/<name>/`.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use serde::{Deserialize, Serialize};

use crate::spec::PodSandboxConfig;

/// A pod sandbox on disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodSandbox {
    /// Pod name.
    pub name: String,
    /// Hostname of its containers.
    pub hostname: String,
    /// Its directory.
    pub dir: PathBuf,
    /// The network namespace file its containers join.
    pub netns_path: PathBuf,
    /// Whether the sandbox created (and so removes) the namespace.
    pub owns_netns: bool,
}

/// Name of the sandbox description file.
pub const SANDBOX_FILE: &str = "sandbox.json";

impl PodSandbox {
    /// The directory backing the emptyDir volume `name`.
    pub fn volume_dir(&self, name: &str) -> PathBuf {
        self.dir.join("volumes").join(name)
    }

    /// The pod's generated `/etc` files: (name in /etc, host path).
    pub fn etc_files(&self) -> Vec<(String, PathBuf)> {
        ["hostname", "hosts", "resolv.conf"]
            .iter()
            .map(|f| (f.to_string(), self.dir.join("etc").join(f)))
            .collect()
    }

    /// Creates the sandbox under `dir`.
    pub fn create(dir: &Path, cfg: &PodSandboxConfig) -> io::Result<Self> {
        let hostname = cfg.hostname.clone().unwrap_or_else(|| cfg.name.clone());
        shoal_files::private_dir(dir)?;
        shoal_files::private_dir(&dir.join("etc"))?;
        shoal_files::private_dir(&dir.join("volumes"))?;
        // Bind-mounted into the containers, read there by any user: 0644 in a 0700 directory.
        let etc = |name: &str, data: &[u8]| {
            shoal_files::write_atomic(
                &dir.join("etc").join(name),
                data,
                shoal_files::CONTAINER_READABLE_MODE,
            )
        };
        etc("hostname", format!("{hostname}\n").as_bytes())?;
        etc("hosts", hosts_file(&hostname, &cfg.hosts).as_bytes())?;
        let resolv = if cfg.dns_servers.is_empty() {
            fs::read_to_string("/etc/resolv.conf").unwrap_or_default()
        } else {
            resolv_conf(&cfg.dns_servers, &cfg.dns_search, &cfg.dns_options)
        };
        etc("resolv.conf", resolv.as_bytes())?;
        let mut t = crate::util::PhaseTimer::new("sandbox");
        let (netns_path, owns_netns) = match &cfg.netns {
            Some(p) => (p.clone(), false),
            None => {
                let p = dir.join("netns");
                create_netns(&p)?;
                (p, true)
            }
        };
        t.mark("netns");
        let sb = PodSandbox {
            name: cfg.name.clone(),
            hostname,
            dir: dir.to_path_buf(),
            netns_path,
            owns_netns,
        };
        let data = serde_json::to_vec_pretty(&sb).map_err(io::Error::other)?;
        crate::util::write_atomic(&dir.join(SANDBOX_FILE), &data)?;
        Ok(sb)
    }

    /// Loads a sandbox description.
    ///
    /// A namespace the sandbox owns is kept alive by a bind mount, which does
    /// not survive a reboot of the node: what is left at `netns_path` is the
    /// empty file under it, on which `setns` fails (EINVAL) and the pod could
    /// never start again. Such a namespace is created afresh (loopback up);
    /// the agent attaches the pod network to it as after any restart.
    pub fn load(dir: &Path) -> io::Result<Self> {
        let data = fs::read(dir.join(SANDBOX_FILE))?;
        let sb: Self = serde_json::from_slice(&data).map_err(io::Error::other)?;
        if sb.owns_netns && !is_netns(&sb.netns_path)? {
            create_netns(&sb.netns_path)?;
        }
        Ok(sb)
    }

    /// Unmounts the namespace (if owned) and deletes the directory, volumes included.
    pub fn remove(&self) -> io::Result<()> {
        self.unmount_netns()?;
        match fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Unmounts the network namespace if the sandbox created it.
    pub fn unmount_netns(&self) -> io::Result<()> {
        if self.owns_netns {
            match nix::mount::umount2(&self.netns_path, MntFlags::MNT_DETACH) {
                Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
                Err(e) => {
                    return Err(io::Error::other(format!(
                        "unmount {}: {e}",
                        self.netns_path.display()
                    )));
                }
            }
        }
        Ok(())
    }
}

/// `/etc/hosts` for a pod.
pub fn hosts_file(hostname: &str, extra: &[(String, Vec<String>)]) -> String {
    let mut s = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
    );
    for (ip, names) in extra {
        s.push_str(&format!("{ip}\t{}\n", names.join(" ")));
    }
    s
}

/// `/etc/resolv.conf` from servers, search domains and options.
pub fn resolv_conf(servers: &[String], search: &[String], options: &[String]) -> String {
    let mut s = String::new();
    if !search.is_empty() {
        s.push_str(&format!("search {}\n", search.join(" ")));
    }
    for n in servers {
        s.push_str(&format!("nameserver {n}\n"));
    }
    if !options.is_empty() {
        s.push_str(&format!("options {}\n", options.join(" ")));
    }
    s
}

/// Whether `path` is a network namespace (an nsfs file, e.g. a bind mount of
/// one), not the plain file left when the mount is gone. A missing path is not.
pub fn is_netns(path: &Path) -> io::Result<bool> {
    match nix::sys::statfs::statfs(path) {
        Ok(st) => Ok(st.filesystem_type() == nix::sys::statfs::NSFS_MAGIC),
        Err(nix::errno::Errno::ENOENT) => Ok(false),
        Err(e) => Err(io::Error::other(format!("statfs {}: {e}", path.display()))),
    }
}

/// Creates a network namespace with loopback up, kept alive by a bind mount
/// at `path` (like `ip netns add`). Runs on a short-lived thread so the
/// caller's namespaces stay untouched.
pub fn create_netns(path: &Path) -> io::Result<()> {
    fs::File::create(path)?;
    let p = path.to_path_buf();
    let r = std::thread::spawn(move || -> io::Result<()> {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET)
            .map_err(|e| io::Error::other(format!("unshare(CLONE_NEWNET): {e}")))?;
        set_loopback_up()?;
        nix::mount::mount(
            Some("/proc/thread-self/ns/net"),
            &p,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| io::Error::other(format!("bind mount netns on {}: {e}", p.display())))
    })
    .join()
    .map_err(|_| io::Error::other("netns thread panicked"))?;
    if r.is_err() {
        let _ = fs::remove_file(path);
    }
    r
}

#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Brings `lo` up in the current network namespace.
pub fn set_loopback_up() -> io::Result<()> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = IfReqFlags {
        name: [0; libc::IFNAMSIZ],
        flags: 0,
        _pad: [0; 22],
    };
    req.name[..2].copy_from_slice(b"lo");
    // SAFETY: req is a properly sized ifreq for SIOCGIFFLAGS.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    req.flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: as above, for SIOCSIFFLAGS.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[ignore = "requires root: network namespaces, mounts"]
    fn a_sandbox_whose_netns_mount_is_gone_gets_a_new_namespace() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("pods/p1");
        let sb = PodSandbox::create(&dir, &PodSandboxConfig::default()).expect("create");
        assert!(sb.owns_netns);
        assert!(
            is_netns(&sb.netns_path).unwrap(),
            "a fresh sandbox has a live namespace"
        );
        // What a reboot leaves: the file without the mount on it.
        sb.unmount_netns().unwrap();
        assert!(sb.netns_path.exists());
        assert!(
            !is_netns(&sb.netns_path).unwrap(),
            "the plain file is not a namespace"
        );
        let again = PodSandbox::load(&dir).expect("load");
        assert!(
            is_netns(&again.netns_path).unwrap(),
            "load makes a new namespace"
        );
        again.remove().unwrap();
        assert!(!dir.exists());
        assert!(!is_netns(&again.netns_path).unwrap());
    }

    #[test]
    fn etc_files() {
        let h = hosts_file("web-0", &[("10.0.0.5".into(), vec!["db".into()])]);
        assert!(
            h.contains("127.0.0.1\tlocalhost\n")
                && h.contains("\tweb-0\n")
                && h.contains("10.0.0.5\tdb\n")
        );
        assert_eq!(
            resolv_conf(&["10.96.0.10".into()], &["svc.local".into()], &[]),
            "search svc.local\nnameserver 10.96.0.10\n"
        );
        assert_eq!(
            resolv_conf(
                &["10.244.0.1".into()],
                &["default.svc.shoal.local".into(), "svc.shoal.local".into()],
                &["ndots:5".into()]
            ),
            "search default.svc.shoal.local svc.shoal.local\nnameserver 10.244.0.1\noptions ndots:5\n"
        );
    }
}
