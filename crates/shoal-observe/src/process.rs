//! The process's own metrics, read from `/proc/self` at each scrape (the path is
//! injected so the parsing is tested on files a test writes): resident and virtual
//! memory, threads, open file descriptors, CPU seconds.

use std::path::PathBuf;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// What one read of `/proc/self` found (`None`: that file could not be read).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessStats {
    /// `VmRSS` in bytes.
    pub resident_bytes: Option<u64>,
    /// `VmSize` in bytes.
    pub virtual_bytes: Option<u64>,
    /// `Threads`.
    pub threads: Option<u64>,
    /// Entries of `fd/`.
    pub open_fds: Option<u64>,
    /// utime + stime of `stat`, in seconds (clock ticks of 1/100 s, Linux's USER_HZ).
    pub cpu_seconds: Option<f64>,
}

/// Parses `/proc/self/status` text: (VmRSS, VmSize, Threads).
pub fn parse_status(text: &str) -> (Option<u64>, Option<u64>, Option<u64>) {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            let mut it = rest.split_whitespace();
            let n: u64 = it.next()?.parse().ok()?;
            Some(match it.next() {
                Some("kB") => n * 1024,
                _ => n,
            })
        })
    };
    (field("VmRSS"), field("VmSize"), field("Threads"))
}

/// Parses `/proc/self/stat` text: utime + stime in seconds. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_stat_cpu(text: &str) -> Option<f64> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime 14, stime 15 (1-based) → indexes 11, 12.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// Reads the stats of the process whose proc directory is `dir`.
pub fn read(dir: &std::path::Path) -> ProcessStats {
    let (resident_bytes, virtual_bytes, threads) = std::fs::read_to_string(dir.join("status"))
        .map(|t| parse_status(&t))
        .unwrap_or_default();
    ProcessStats {
        resident_bytes,
        virtual_bytes,
        threads,
        open_fds: std::fs::read_dir(dir.join("fd"))
            .ok()
            .map(|d| d.count() as u64),
        cpu_seconds: std::fs::read_to_string(dir.join("stat"))
            .ok()
            .and_then(|t| parse_stat_cpu(&t)),
    }
}

/// The collector of [`read`]'s stats.
#[derive(Debug)]
struct ProcessCollector {
    dir: PathBuf,
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = read(&self.dir);
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory of the process (VmRSS)",
                s.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory of the process (VmSize)",
                s.virtual_bytes,
            ),
            ("process_threads", "Threads of the process", s.threads),
            (
                "process_open_fds",
                "Open file descriptors of the process",
                s.open_fds,
            ),
        ];
        for (name, help, v) in gauges {
            if let Some(v) = v {
                let m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
                ConstGauge::new(v as i64).encode(m)?;
            }
        }
        // Tasks of the runtime serving this scrape (the process's main one): a task leak
        // shows here long before it shows in memory.
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            let m = encoder.encode_descriptor(
                "process_tokio_tasks",
                "Tasks alive in the process's main async runtime (tokio)",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(h.metrics().num_alive_tasks() as i64).encode(m)?;
        }
        if let Some(cpu) = s.cpu_seconds {
            let m = encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time of the process",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(cpu).encode(m)?;
        }
        Ok(())
    }
}

/// Registers the process metrics of the process whose proc directory is `dir`.
pub fn register(r: &mut Registry, dir: PathBuf) {
    r.register_collector(Box::new(ProcessCollector { dir }));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn status_and_stat_parse() {
        let status = "Name:\tshoal\nVmSize:\t  2048 kB\nVmRSS:\t    100 kB\nThreads:\t7\n";
        assert_eq!(
            parse_status(status),
            (Some(102_400), Some(2_097_152), Some(7))
        );
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 1 2 3";
        assert_eq!(parse_stat_cpu(stat), Some(3.0));
        assert_eq!(parse_stat_cpu("garbage"), None);
    }

    #[test]
    fn reads_a_directory_and_the_real_process() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("status"), "VmRSS: 4 kB\nThreads: 3\n").unwrap();
        std::fs::create_dir(d.path().join("fd")).unwrap();
        std::fs::write(d.path().join("fd").join("0"), "").unwrap();
        let s = read(d.path());
        assert_eq!(s.resident_bytes, Some(4096));
        assert_eq!(s.threads, Some(3));
        assert_eq!(s.open_fds, Some(1));
        assert_eq!(s.cpu_seconds, None);
        let me = read(std::path::Path::new("/proc/self"));
        assert!(me.resident_bytes.unwrap() > 0 && me.open_fds.unwrap() > 0);
        assert!(me.cpu_seconds.is_some());
    }
}
