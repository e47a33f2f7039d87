//! `shoal-bench pods`: pod start latency through a real controller and a real agent, beside
//! `docker run -d` of the same image in the same run (interleaved A B A B …), and the resident
//! memory of the controller, the agent and its container supervisors, idle and with the pods up.
//!
//! One pod at a time: the client notes its wall clock, sends `Cluster.Create`, and waits on a
//! watch (started before the first create) for the pod's first event with phase `Running`.
//! Two figures per pod, both against the send time on the same host clock:
//! `started`  = `status.containerStatuses[0].state.running.startedAt` (the runtime's clock just
//! after it cloned the container's init, before its setup and execve), and `watch` = when the
//! watch delivered phase `Running` (includes the agent's status write through Raft).
//! Docker: the wall time of `docker run -d IMAGE sleep 3600` (it returns once the task has
//! started) and `State.StartedAt` minus the send time.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use shoal_proto::{DeleteRequest, ListRequest, ObjectRequest, WatchRequest};
use tokio::sync::mpsc;

use crate::{cluster_client, percentile};

/// Options of `shoal-bench pods`.
#[derive(Debug, Clone, clap::Args)]
pub struct PodsArgs {
    /// HOST:PORT of a controller.
    #[arg(long)]
    pub endpoint: String,
    /// Pods to start, one at a time (and as many docker containers with `--docker`).
    #[arg(long, default_value_t = 100)]
    pub count: usize,
    /// Pre-bind every pod to this node (`spec.nodeName`); without it the scheduler binds them.
    #[arg(long)]
    pub node: Option<String>,
    /// Namespace of the pods.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Image of the pod's container and of the docker containers.
    #[arg(long, default_value = "busybox:latest")]
    pub image: String,
    /// Docker CLI to interleave `docker run -d` with the pods (none: Shoal only).
    #[arg(long)]
    pub docker: Option<String>,
    /// PID of the controller, for its VmRSS.
    #[arg(long)]
    pub controller_pid: Option<u32>,
    /// PID of the agent, for its VmRSS.
    #[arg(long)]
    pub agent_pid: Option<u32>,
    /// The agent's --data-dir: its container supervisors (`… supervise DIR/…`) are summed too.
    #[arg(long)]
    pub agent_data_dir: Option<String>,
    /// Seconds to wait for one pod to run, and for all to be gone after the delete.
    #[arg(long, default_value_t = 60)]
    pub timeout_secs: u64,
    /// Distinguishes object and container names between runs.
    #[arg(long, default_value = "run")]
    pub tag: String,
}

/// One watch event as the bench needs it.
#[derive(Debug)]
struct Seen {
    kind: String,
    name: String,
    at: SystemTime,
    object: serde_json::Value,
}

/// The benchmark pod: one container, `sleep 3600`.
fn pod_json(ns: &str, name: &str, tag: &str, node: Option<&str>, image: &str) -> String {
    let mut spec = serde_json::json!({
        "containers": [{"name": "c", "image": image, "command": ["sleep", "3600"]}],
        // `sleep` as pid 1 ignores SIGTERM: keep the delete at the end short.
        "terminationGracePeriodSeconds": 1
    });
    if let Some(n) = node {
        spec["nodeName"] = serde_json::Value::String(n.to_string());
    }
    serde_json::json!({
        "apiVersion": "shoal/v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"shoal-bench": tag}},
        "spec": spec,
    })
    .to_string()
}

/// Parses an RFC 3339 UTC or offset timestamp (`2026-11-28T21:05:03.123456789Z`,
/// `…+00:00`) to a `SystemTime`; fractional digits beyond nanoseconds are ignored.
fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut nanos: i64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 9 {
                nanos = nanos * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let digits = (i - start).min(9) as u32;
        nanos *= 10i64.pow(9 - digits);
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' => 0,
        sign @ (b'+' | b'-') => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            let o = oh * 3600 + om * 60;
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos as u32))
}

/// Howard Hinnant's civil-to-days conversion (days since 1970-01-01).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `later - earlier`, negative allowed, in milliseconds.
fn ms_between(earlier: SystemTime, later: SystemTime) -> f64 {
    match later.duration_since(earlier) {
        Ok(d) => d.as_secs_f64() * 1000.0,
        Err(e) => -e.duration().as_secs_f64() * 1000.0,
    }
}

/// VmRSS of one process in KiB, from `/proc/PID/status`.
fn vm_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `Pss` of one process in KiB (shared pages divided among their users), from
/// `/proc/PID/smaps_rollup`.
fn pss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let line = s.lines().find(|l| l.starts_with("Pss:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Count, summed VmRSS and summed Pss (KiB) of the processes whose argv matches `pred`.
fn procs_memory(pred: impl Fn(&[&[u8]]) -> bool) -> (usize, u64, u64) {
    let (mut n, mut rss, mut pss) = (0, 0, 0);
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return (0, 0, 0);
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|c| *c == 0).collect();
        if pred(&args) {
            n += 1;
            rss += vm_rss_kib(pid).unwrap_or(0);
            pss += pss_kib(pid).unwrap_or(0);
        }
    }
    (n, rss, pss)
}

/// The agent's container supervisors (`… supervise DATA_DIR/…`).
fn supervisors(data_dir: &str) -> (usize, u64, u64) {
    procs_memory(|a| a.len() >= 3 && a[1] == b"supervise" && a[2].starts_with(data_dir.as_bytes()))
}

/// Resident memory of the processes under test, as JSON (KiB).
fn memory(a: &PodsArgs) -> serde_json::Value {
    let sup = a.agent_data_dir.as_deref().map(supervisors);
    let mut out = serde_json::json!({
        "controller_kib": a.controller_pid.and_then(vm_rss_kib),
        "controller_pss_kib": a.controller_pid.and_then(pss_kib),
        "agent_kib": a.agent_pid.and_then(vm_rss_kib),
        "agent_pss_kib": a.agent_pid.and_then(pss_kib),
        "supervisors": sup.map(|s| s.0),
        "supervisors_kib": sup.map(|s| s.1),
        "supervisors_pss_kib": sup.map(|s| s.2),
    });
    if a.docker.is_some() {
        // Docker's per-container process, the counterpart of our supervisor.
        let shims = procs_memory(|a| {
            a.first()
                .is_some_and(|c| c.ends_with(b"containerd-shim-runc-v2"))
        });
        out["docker_shims"] = shims.0.into();
        out["docker_shims_kib"] = shims.1.into();
        out["docker_shims_pss_kib"] = shims.2.into();
    }
    out
}

/// p50/p99/max/mean of a latency sample in milliseconds.
fn summary(ms: &[f64]) -> serde_json::Value {
    let mut d: Vec<Duration> = ms
        .iter()
        .map(|m| Duration::from_secs_f64(m.max(0.0) / 1000.0))
        .collect();
    d.sort();
    let mean = if ms.is_empty() {
        0.0
    } else {
        ms.iter().sum::<f64>() / ms.len() as f64
    };
    serde_json::json!({
        "n": ms.len(),
        "p50_ms": round1(percentile(&d, 0.50)),
        "p99_ms": round1(percentile(&d, 0.99)),
        "max_ms": round1(percentile(&d, 1.0)),
        "mean_ms": round1(mean),
    })
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Runs `docker ARGS`, returning trimmed stdout or an error with stderr.
fn docker(bin: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .args(args)
        .output()
        .with_context(|| format!("running {bin} {args:?}"))?;
    if !out.status.success() {
        bail!(
            "{bin} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Waits for the next watch event matching `want`, keeping other events out of the way.
async fn wait_for(
    rx: &mut mpsc::UnboundedReceiver<anyhow::Result<Seen>>,
    deadline: Instant,
    what: &str,
    mut want: impl FnMut(&Seen) -> bool,
) -> anyhow::Result<Seen> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Err(_) => bail!("timed out waiting for {what}"),
            Ok(None) => bail!("the pod watch ended while waiting for {what}"),
            Ok(Some(ev)) => {
                let ev = ev?;
                if want(&ev) {
                    return Ok(ev);
                }
            }
        }
    }
}

fn phase(v: &serde_json::Value) -> &str {
    v.pointer("/status/phase")
        .and_then(|p| p.as_str())
        .unwrap_or("")
}

/// Runs the benchmark, prints progress to stderr and one JSON line with the figures.
pub async fn run(a: PodsArgs) -> anyhow::Result<()> {
    let ns = a.namespace.clone();
    let tag = format!("podstart-{}", a.tag);
    let mut c = cluster_client(&a.endpoint).await?;
    crate::ensure_namespace(&mut c, &ns).await?;
    let mut stream = c
        .watch(WatchRequest {
            kind: "Pod".into(),
            namespace: ns.clone(),
            label_selector: format!("shoal-bench={tag}"),
            ..Default::default()
        })
        .await
        .context("watching pods")?
        .into_inner();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let watcher = tokio::spawn(async move {
        loop {
            let ev = match stream.message().await {
                Ok(Some(ev)) => ev,
                Ok(None) => break,
                Err(s) => {
                    let _ = tx.send(Err(anyhow::anyhow!("pod watch: {s}")));
                    break;
                }
            };
            let at = SystemTime::now();
            let seen = serde_json::from_str::<serde_json::Value>(&ev.object_json)
                .context("decoding a watch event")
                .map(|object| Seen {
                    kind: ev.r#type.clone(),
                    name: object
                        .pointer("/metadata/name")
                        .and_then(|n| n.as_str())
                        .unwrap_or("")
                        .to_string(),
                    at,
                    object,
                });
            if tx.send(seen).is_err() {
                break;
            }
        }
    });

    let idle = memory(&a);
    eprintln!("idle memory: {idle}");
    let timeout = Duration::from_secs(a.timeout_secs);
    let (mut started, mut watched, mut create_rpc) = (Vec::new(), Vec::new(), Vec::new());
    let (mut d_wall, mut d_started) = (Vec::new(), Vec::new());
    let mut docker_ids = Vec::new();
    let mut running_without_started = 0usize;
    let result: anyhow::Result<()> = async {
        for i in 0..a.count {
            // A: one Shoal pod.
            let name = format!("{tag}-{i}");
            let body = pod_json(&ns, &name, &tag, a.node.as_deref(), &a.image);
            let sent = SystemTime::now();
            let t = Instant::now();
            c.create(ObjectRequest { object_json: body })
                .await
                .with_context(|| format!("creating pod {name}"))?;
            create_rpc.push(t.elapsed().as_secs_f64() * 1000.0);
            // The first event with phase Running is the watch figure; startedAt comes from the
            // first event whose container state is `running` (normally the same event; a pod can
            // report Running while its only container is still being started or restarted).
            let first = wait_for(&mut rx, t + timeout, &format!("pod {name} to run"), |e| {
                e.name == name && phase(&e.object) == "Running"
            })
            .await?;
            let started_at = |e: &Seen| {
                e.object
                    .pointer("/status/containerStatuses/0/state/running/startedAt")
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            };
            let s = match started_at(&first) {
                Some(s) => s,
                None => {
                    running_without_started += 1;
                    eprintln!(
                        "pod {name}: phase Running with containerStatuses {}",
                        first
                            .object
                            .pointer("/status/containerStatuses")
                            .unwrap_or(&serde_json::Value::Null)
                    );
                    let ev = wait_for(
                        &mut rx,
                        t + timeout,
                        &format!("pod {name}'s container to run"),
                        |e| e.name == name && started_at(e).is_some(),
                    )
                    .await?;
                    started_at(&ev).unwrap_or_default()
                }
            };
            let ev = first;
            let s = parse_rfc3339(&s)
                .with_context(|| format!("pod {name}: startedAt {s:?} is not RFC 3339"))?;
            started.push(ms_between(sent, s));
            watched.push(ms_between(sent, ev.at));
            // B: one docker container of the same image.
            if let Some(bin) = a.docker.as_deref() {
                let cname = format!("shoal-bench-{tag}-{i}");
                let sent = SystemTime::now();
                let t = Instant::now();
                let id = docker(
                    bin,
                    &["run", "-d", "--name", &cname, &a.image, "sleep", "3600"],
                )?;
                d_wall.push(t.elapsed().as_secs_f64() * 1000.0);
                docker_ids.push(id.clone());
                let s = docker(bin, &["inspect", "-f", "{{.State.StartedAt}}", &id])?;
                let s = parse_rfc3339(&s)
                    .with_context(|| format!("docker {id}: StartedAt {s:?} is not RFC 3339"))?;
                d_started.push(ms_between(sent, s));
            }
            if (i + 1) % 10 == 0 {
                eprintln!("{} pods running", i + 1);
            }
        }
        Ok(())
    }
    .await;

    // Memory with every pod up (also measured when the run stopped early).
    let loaded = memory(&a);
    eprintln!("memory with {} pods: {loaded}", started.len());

    // Delete every pod of this run and wait until the agent has removed them.
    let del_t = Instant::now();
    let listed = c
        .list(ListRequest {
            kind: "Pod".into(),
            namespace: ns.clone(),
            label_selector: format!("shoal-bench={tag}"),
            ..Default::default()
        })
        .await
        .context("listing the bench pods")?
        .into_inner();
    let mut left: HashMap<String, ()> = HashMap::new();
    for o in &listed.items_json {
        let v: serde_json::Value = serde_json::from_str(o).context("decoding a listed pod")?;
        if let Some(n) = v.pointer("/metadata/name").and_then(|n| n.as_str()) {
            left.insert(n.to_string(), ());
        }
    }
    for n in left.keys() {
        c.delete(DeleteRequest {
            kind: "Pod".into(),
            namespace: ns.clone(),
            name: n.clone(),
            resource_version: 0,
        })
        .await
        .with_context(|| format!("deleting pod {n}"))?;
    }
    let deadline = Instant::now() + timeout.max(Duration::from_secs(120));
    while !left.is_empty() {
        let ev = wait_for(
            &mut rx,
            deadline,
            &format!("{} pods to be deleted", left.len()),
            |e| e.kind == "DELETED",
        )
        .await?;
        left.remove(&ev.name);
    }
    // The object is gone: wait for the agent to stop the containers (their supervisors exit).
    if let Some(dir) = a.agent_data_dir.as_deref() {
        while supervisors(dir).0 > 0 {
            if Instant::now() > deadline {
                bail!(
                    "{} container supervisors still run after the delete",
                    supervisors(dir).0
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let deleted_s = del_t.elapsed().as_secs_f64();
    eprintln!(
        "deleted {} pods in {deleted_s:.1} s",
        listed.items_json.len()
    );
    if let Some(bin) = a.docker.as_deref() {
        for chunk in docker_ids.chunks(25) {
            let mut args = vec!["rm", "-f"];
            args.extend(chunk.iter().map(String::as_str));
            docker(bin, &args)?;
        }
    }
    watcher.abort();
    result?;

    let mut out = serde_json::json!({
        "pods": a.count,
        "binding": if a.node.is_some() { "pre-bound (spec.nodeName)" } else { "scheduler" },
        "shoal_started": summary(&started),
        "shoal_watch_running": summary(&watched),
        "shoal_create_rpc": summary(&create_rpc),
        "memory_idle": idle,
        "memory_loaded": loaded,
        "delete_all_seconds": round1(deleted_s),
        "running_before_container_started": running_without_started,
    });
    if a.docker.is_some() {
        out["docker_run_wall"] = summary(&d_wall);
        out["docker_started"] = summary(&d_started);
    }
    println!("{out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_parses_nanos_and_offsets() {
        let t = parse_rfc3339("2026-11-28T21:05:03.123456789Z").unwrap();
        let d = t.duration_since(UNIX_EPOCH).unwrap();
        assert_eq!(d.subsec_nanos(), 123_456_789);
        assert_eq!(d.as_secs() % 86_400, 21 * 3600 + 5 * 60 + 3);
        assert_eq!(d.as_secs() / 86_400, days_from_civil(2026, 11, 28) as u64);
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(UNIX_EPOCH));
        assert_eq!(
            parse_rfc3339("1970-01-01T01:00:00.5+01:00"),
            Some(UNIX_EPOCH + Duration::from_millis(500))
        );
        assert_eq!(
            days_from_civil(2000, 3, 1) - days_from_civil(2000, 2, 28),
            2
        );
        assert!(parse_rfc3339("yesterday").is_none());
    }

    #[test]
    fn pod_json_prebinds_only_when_asked() {
        let v: serde_json::Value =
            serde_json::from_str(&pod_json("default", "p", "t", Some("n1"), "busybox:latest"))
                .unwrap();
        assert_eq!(
            v.pointer("/spec/nodeName").and_then(|n| n.as_str()),
            Some("n1")
        );
        let v: serde_json::Value =
            serde_json::from_str(&pod_json("default", "p", "t", None, "busybox:latest")).unwrap();
        assert!(v.pointer("/spec/nodeName").is_none());
    }

    #[test]
    fn own_rss_is_read_from_proc() {
        assert!(vm_rss_kib(std::process::id()).unwrap() > 0);
    }
}
