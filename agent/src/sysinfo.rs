//! What the machine has and uses, read from `/proc` (the root is injected so
//! the parsers are tested on files).

use std::fs;
use std::path::{Path, PathBuf};

/// Reads machine facts below a root (`/` in production).
#[derive(Debug, Clone)]
pub struct SysInfo {
    root: PathBuf,
}

/// CPU time counters of `/proc/stat` (in USER_HZ ticks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// All time.
    pub total: u64,
    /// Idle and iowait time.
    pub idle: u64,
}

impl SysInfo {
    /// Facts of the machine at `root`.
    pub fn new(root: impl Into<PathBuf>) -> SysInfo {
        SysInfo { root: root.into() }
    }

    fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.root.join(rel)).unwrap_or_default()
    }

    /// CPUs available to this process, in millicores.
    pub fn cpu_millis(&self) -> u64 {
        std::thread::available_parallelism().map_or(1, |n| n.get() as u64) * 1000
    }

    /// `MemTotal` and `MemAvailable` of `/proc/meminfo`, in bytes.
    pub fn memory(&self) -> (u64, u64) {
        parse_meminfo(&self.read("proc/meminfo"))
    }

    /// The aggregate `cpu` line of `/proc/stat`.
    pub fn cpu_times(&self) -> CpuTimes {
        parse_stat(&self.read("proc/stat"))
    }

    /// Kernel release.
    pub fn kernel(&self) -> String {
        self.read("proc/sys/kernel/osrelease").trim().to_string()
    }

    /// `PRETTY_NAME` of `/etc/os-release`.
    pub fn os_image(&self) -> String {
        self.read("etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_default()
    }

    /// The root.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// `(MemTotal, MemAvailable)` in bytes.
pub fn parse_meminfo(text: &str) -> (u64, u64) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("MemTotal"), field("MemAvailable"))
}

/// The `cpu` line of `/proc/stat`.
pub fn parse_stat(text: &str) -> CpuTimes {
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return CpuTimes::default();
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is inside user).
    let total = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    CpuTimes { total, idle }
}

/// Busy millicores between two samples on a machine with `capacity_millis`.
pub fn busy_millis(a: CpuTimes, b: CpuTimes, capacity_millis: u64) -> u64 {
    let total = b.total.saturating_sub(a.total);
    if total == 0 {
        return 0;
    }
    let busy = total.saturating_sub(b.idle.saturating_sub(a.idle));
    busy * capacity_millis / total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("proc")).unwrap();
        fs::write(
            dir.path().join("proc/meminfo"),
            "MemTotal:        4000 kB\nMemFree: 10 kB\nMemAvailable:    1000 kB\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("proc/stat"),
            "cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 1 1 1\n",
        )
        .unwrap();
        let s = SysInfo::new(dir.path());
        assert_eq!(s.memory(), (4000 * 1024, 1000 * 1024));
        assert_eq!(
            s.cpu_times(),
            CpuTimes {
                total: 1000,
                idle: 800
            }
        );
        assert!(s.cpu_millis() >= 1000);
        let a = CpuTimes {
            total: 1000,
            idle: 800,
        };
        let b = CpuTimes {
            total: 2000,
            idle: 1300,
        };
        assert_eq!(busy_millis(a, b, 2000), 1000);
        assert_eq!(busy_millis(a, a, 2000), 0);
    }
}
