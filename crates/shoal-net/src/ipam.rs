//! Address management: node pod CIDRs and service IPs (pure, used by the
//! controller) and persistent pod IPs on a node (used by the agent).

use ipnet::Ipv4Net;
use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Default cluster (pod) CIDR.
pub const DEFAULT_CLUSTER_CIDR: &str = "10.244.0.0/16";
/// Default service CIDR.
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/16";
/// Default prefix length of a node's pod CIDR.
pub const DEFAULT_NODE_PREFIX: u8 = 24;

/// The first subnet of length `prefix` inside `cluster` that is not in `used`
/// (None when all are taken or `prefix` is shorter than the cluster's).
pub fn free_node_cidr(cluster: Ipv4Net, prefix: u8, used: &BTreeSet<Ipv4Net>) -> Option<Ipv4Net> {
    cluster
        .subnets(prefix)
        .ok()?
        .find(|n| !used.iter().any(|u| u.contains(n) || n.contains(u)))
}

/// The gateway address of a pod CIDR: its first host (`.1`), kept by the node's bridge.
pub fn gateway(cidr: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(cidr.network()).saturating_add(1))
}

/// The lowest free service IP in `cidr` (skipping the network address, and the
/// broadcast address), or None when the range is full.
pub fn free_service_ip(cidr: Ipv4Net, used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    cidr.hosts()
        .filter(|ip| *ip != cidr.network() && *ip != cidr.broadcast())
        .find(|ip| !used.contains(ip))
}

/// Errors of the persistent pod IP allocator.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// A file or directory of the allocator could not be read or written.
    #[error("ipam {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Every usable address of the pod CIDR is held.
    #[error("no free pod ip left in {cidr}")]
    Exhausted {
        /// The pod CIDR that is full.
        cidr: Ipv4Net,
    },
}

/// Persistent pod IP allocator of one node: one file per held IP in a
/// directory, named by the address, containing the owner (the sandbox id).
#[derive(Debug)]
pub struct PodIpam {
    dir: PathBuf,
    cidr: Ipv4Net,
    // Serialises allocate/release inside this process; the files themselves
    // are created exclusively, so another process cannot take the same IP.
    lock: Mutex<()>,
}

impl PodIpam {
    /// Opens (creating it if needed) the allocator state in `dir` for pod CIDR `cidr`.
    pub fn open(dir: &Path, cidr: Ipv4Net) -> Result<PodIpam, IpamError> {
        let cidr = cidr.trunc();
        shoal_files::private_dir(dir).map_err(|source| IpamError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let ipam = PodIpam {
            dir: dir.to_path_buf(),
            cidr,
            lock: Mutex::new(()),
        };
        // Leftovers of an allocation interrupted before its rename/link.
        let rd = fs::read_dir(dir).map_err(|source| ipam.io(dir, source))?;
        for entry in rd.flatten() {
            if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(ipam)
    }

    /// The pod CIDR this allocator hands out addresses from.
    pub fn cidr(&self) -> Ipv4Net {
        self.cidr
    }

    /// The IP held by `owner`, allocating the lowest free one if it holds none
    /// (never the network address, the gateway `.1` or the broadcast address).
    pub fn allocate(&self, owner: &str) -> Result<Ipv4Addr, IpamError> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let held = self.scan()?;
        if let Some((ip, _)) = held.iter().find(|(_, o)| o == owner) {
            return Ok(*ip);
        }
        let taken: BTreeSet<Ipv4Addr> = held.iter().map(|(ip, _)| *ip).collect();
        for ip in self.cidr.hosts().filter(|ip| self.usable(*ip)) {
            if taken.contains(&ip) {
                continue;
            }
            if self.claim(ip, owner)? {
                return Ok(ip);
            }
        }
        Err(IpamError::Exhausted { cidr: self.cidr })
    }

    /// The IP held by `owner`, if any.
    pub fn lookup(&self, owner: &str) -> Option<Ipv4Addr> {
        match self.scan() {
            Ok(held) => held.into_iter().find(|(_, o)| o == owner).map(|(ip, _)| ip),
            Err(e) => {
                tracing::warn!(error = %e, owner, "ipam lookup failed");
                None
            }
        }
    }

    /// Frees the IP held by `owner` (nothing held -> Ok).
    pub fn release(&self, owner: &str) -> Result<(), IpamError> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut removed = false;
        for (ip, o) in self.scan()? {
            if o == owner {
                let path = self.dir.join(ip.to_string());
                match fs::remove_file(&path) {
                    Ok(()) => removed = true,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(source) => return Err(IpamError::Io { path, source }),
                }
            }
        }
        if removed {
            self.sync_dir()?;
        }
        Ok(())
    }

    /// Every held IP of the pod CIDR with its owner, sorted by address.
    pub fn entries(&self) -> Vec<(Ipv4Addr, String)> {
        self.scan().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "ipam scan failed");
            Vec::new()
        })
    }

    fn usable(&self, ip: Ipv4Addr) -> bool {
        self.cidr.contains(&ip)
            && ip != self.cidr.network()
            && ip != gateway(self.cidr)
            && ip != self.cidr.broadcast()
    }

    fn io(&self, path: &Path, source: io::Error) -> IpamError {
        IpamError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Held (ip, owner) pairs inside the CIDR, sorted by address.
    fn scan(&self) -> Result<Vec<(Ipv4Addr, String)>, IpamError> {
        let rd = fs::read_dir(&self.dir).map_err(|e| self.io(&self.dir, e))?;
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| self.io(&self.dir, e))?;
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            if !self.usable(ip) {
                continue;
            }
            let path = entry.path();
            match fs::read_to_string(&path) {
                Ok(owner) => out.push((ip, owner)),
                // Released concurrently.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io(&path, e)),
            }
        }
        out.sort();
        Ok(out)
    }

    /// Takes `ip` for `owner` atomically: the owner is written and synced to a
    /// temporary file which is then hard-linked to the address's name, which
    /// fails if it exists (O_EXCL semantics, and never a half-written entry).
    /// Returns false if someone else holds `ip`.
    fn claim(&self, ip: Ipv4Addr, owner: &str) -> Result<bool, IpamError> {
        let tmp = self
            .dir
            .join(format!("{TMP_PREFIX}{ip}-{}", std::process::id()));
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(shoal_files::FILE_MODE)
            .open(&tmp)
            .map_err(|e| self.io(&tmp, e))?;
        let written = f
            .write_all(owner.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| self.io(&tmp, e));
        drop(f);
        let linked = written.and_then(|()| {
            let path = self.dir.join(ip.to_string());
            match fs::hard_link(&tmp, &path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(self.io(&path, e)),
            }
        });
        let removed = fs::remove_file(&tmp).map_err(|e| self.io(&tmp, e));
        let linked = linked?;
        removed?;
        if linked {
            self.sync_dir()?;
        }
        Ok(linked)
    }

    fn sync_dir(&self) -> Result<(), IpamError> {
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.io(&self.dir, e))
    }
}

const TMP_PREFIX: &str = ".tmp-";

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn node_cidrs_are_distinct_and_reused_after_free() {
        let cluster = net("10.244.0.0/16");
        let mut used = BTreeSet::new();
        let a = free_node_cidr(cluster, 24, &used).unwrap();
        used.insert(a);
        let b = free_node_cidr(cluster, 24, &used).unwrap();
        assert_eq!((a, b), (net("10.244.0.0/24"), net("10.244.1.0/24")));
        used.remove(&a);
        assert_eq!(free_node_cidr(cluster, 24, &used), Some(a));
        // An overlapping larger block in use excludes its subnets.
        used.insert(net("10.244.0.0/23"));
        assert_eq!(
            free_node_cidr(cluster, 24, &used),
            Some(net("10.244.2.0/24"))
        );
        let tiny = net("10.0.0.0/30");
        let all: BTreeSet<_> = tiny.subnets(31).unwrap().collect();
        assert_eq!(free_node_cidr(tiny, 31, &all), None);
        assert_eq!(free_node_cidr(tiny, 8, &BTreeSet::new()), None);
    }

    #[test]
    fn gateway_and_service_ips() {
        assert_eq!(gateway(net("10.244.3.0/24")), Ipv4Addr::new(10, 244, 3, 1));
        let cidr = net("10.96.0.0/30");
        let mut used = BTreeSet::new();
        let a = free_service_ip(cidr, &used).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 96, 0, 1));
        used.insert(a);
        assert_eq!(
            free_service_ip(cidr, &used),
            Some(Ipv4Addr::new(10, 96, 0, 2))
        );
        used.insert(Ipv4Addr::new(10, 96, 0, 2));
        assert_eq!(free_service_ip(cidr, &used), None);
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn pod_ipam_allocate_is_idempotent_and_skips_gateway() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = PodIpam::open(dir.path(), net("10.244.1.0/24")).unwrap();
        let a = ipam.allocate("sb-a").unwrap();
        assert_eq!(a, ip("10.244.1.2"));
        assert_eq!(ipam.allocate("sb-a").unwrap(), a);
        let b = ipam.allocate("sb-b").unwrap();
        assert_eq!(b, ip("10.244.1.3"));
        assert_eq!(ipam.lookup("sb-a"), Some(a));
        assert_eq!(ipam.lookup("sb-c"), None);
        assert_eq!(
            ipam.entries(),
            vec![(a, "sb-a".to_string()), (b, "sb-b".to_string())]
        );
        // The file holds exactly the owner.
        assert_eq!(
            std::fs::read_to_string(dir.path().join("10.244.1.2")).unwrap(),
            "sb-a"
        );
    }

    #[test]
    fn pod_ipam_no_reuse_while_held_and_release_frees() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = PodIpam::open(dir.path(), net("10.244.1.0/24")).unwrap();
        let a = ipam.allocate("a").unwrap();
        let b = ipam.allocate("b").unwrap();
        let c = ipam.allocate("c").unwrap();
        assert!(a != b && b != c && a != c);
        ipam.release("b").unwrap();
        assert_eq!(ipam.lookup("b"), None);
        assert!(!dir.path().join(b.to_string()).exists());
        // Releasing twice, or an unknown owner, is fine.
        ipam.release("b").unwrap();
        ipam.release("nobody").unwrap();
        // The freed address is handed out again, the held ones are not.
        let d = ipam.allocate("d").unwrap();
        assert_eq!(d, b);
        let e = ipam.allocate("e").unwrap();
        assert!(![a, c, d].contains(&e));
        assert_eq!(ipam.entries().len(), 4);
    }

    #[test]
    fn pod_ipam_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let cidr = net("10.244.7.0/24");
        let (a, b) = {
            let ipam = PodIpam::open(dir.path(), cidr).unwrap();
            (ipam.allocate("a").unwrap(), ipam.allocate("b").unwrap())
        };
        let ipam = PodIpam::open(dir.path(), cidr).unwrap();
        assert_eq!(ipam.lookup("a"), Some(a));
        assert_eq!(ipam.allocate("b").unwrap(), b);
        let c = ipam.allocate("c").unwrap();
        assert!(c != a && c != b);
        // A second allocator on the same directory (another process after a
        // restart) sees the same holdings and cannot take a held address.
        let other = PodIpam::open(dir.path(), cidr).unwrap();
        let d = other.allocate("d").unwrap();
        assert!(![a, b, c].contains(&d));
    }

    #[test]
    fn pod_ipam_exhausted_on_small_cidrs() {
        let dir = tempfile::tempdir().unwrap();
        // /30: .0 network, .1 gateway, .3 broadcast: only .2 is usable.
        let ipam = PodIpam::open(&dir.path().join("30"), net("10.244.0.0/30")).unwrap();
        assert_eq!(ipam.allocate("a").unwrap(), ip("10.244.0.2"));
        let err = ipam.allocate("b").unwrap_err();
        assert!(matches!(err, IpamError::Exhausted { .. }), "{err:?}");
        assert!(err.to_string().contains("10.244.0.0/30"), "{err}");
        // The holder still gets its address.
        assert_eq!(ipam.allocate("a").unwrap(), ip("10.244.0.2"));

        // /29: .2 ..= .6.
        let ipam = PodIpam::open(&dir.path().join("29"), net("10.244.0.8/29")).unwrap();
        let got: Vec<_> = (0..5)
            .map(|i| ipam.allocate(&format!("p{i}")).unwrap())
            .collect();
        let want: Vec<_> = (10..=14).map(|h| Ipv4Addr::new(10, 244, 0, h)).collect();
        assert_eq!(got, want);
        assert!(matches!(
            ipam.allocate("p5"),
            Err(IpamError::Exhausted { .. })
        ));
        ipam.release("p2").unwrap();
        assert_eq!(ipam.allocate("p5").unwrap(), ip("10.244.0.12"));
    }

    #[test]
    fn pod_ipam_ignores_entries_outside_the_cidr() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("10.244.9.5"), "foreign").unwrap();
        std::fs::write(dir.path().join("10.244.1.1"), "gateway").unwrap();
        std::fs::write(dir.path().join("not-an-ip"), "junk").unwrap();
        std::fs::write(dir.path().join("10.244.1.2"), "kept").unwrap();
        let ipam = PodIpam::open(dir.path(), net("10.244.1.0/24")).unwrap();
        assert_eq!(ipam.entries(), vec![(ip("10.244.1.2"), "kept".to_string())]);
        assert_eq!(ipam.lookup("foreign"), None);
        assert_eq!(ipam.lookup("gateway"), None);
        assert_eq!(ipam.lookup("kept"), Some(ip("10.244.1.2")));
        assert_eq!(ipam.allocate("new").unwrap(), ip("10.244.1.3"));
        // Releasing an owner whose only entry is outside the CIDR leaves it alone.
        ipam.release("foreign").unwrap();
        assert!(dir.path().join("10.244.9.5").exists());
    }
}
