//! `shoal-agent runtime …`: images, run, ps, logs, stop, rm, exec, stats
//! against a data directory, without a cluster.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use shoal_runtime::{
    ContainerSpec, ContainerState, ExecSpec, LogOptions, Mount, MountSource, PodSandboxConfig,
    RestartPolicy, Runtime, RuntimeConfig,
};

/// Arguments of `shoal-agent runtime`.
#[derive(Debug, Args)]
pub struct RuntimeArgs {
    /// Data directory (images, pods, containers).
    #[arg(long, env = "SHOAL_DATA_DIR", default_value = "/var/lib/shoal")]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: RtCmd,
}

#[derive(Debug, Subcommand)]
enum RtCmd {
    /// Image store commands.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Run a container (in a new pod unless --pod names an existing one).
    Run(Box<RunArgs>),
    /// List containers.
    Ps,
    /// Print a container's log.
    Logs {
        /// Container id.
        id: String,
        /// Keep printing new lines until the container stops.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<usize>,
    },
    /// Stop a container (SIGTERM, grace, SIGKILL).
    Stop {
        /// Container id.
        id: String,
        /// Grace period in milliseconds.
        #[arg(long, default_value_t = 10_000)]
        grace_ms: u64,
    },
    /// Remove a container (killing it if needed) and, if it was the last
    /// container of its pod, the pod.
    Rm {
        /// Container id.
        id: String,
    },
    /// Run a command in a running container.
    Exec {
        /// Container id.
        id: String,
        /// Allocate a TTY.
        #[arg(short, long)]
        tty: bool,
        /// Command and arguments.
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Memory and CPU usage of a container.
    Stats {
        /// Container id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum ImageCmd {
    /// Import a `docker save` or OCI-layout tarball (plain or gzip).
    Import {
        /// The tarball.
        file: PathBuf,
        /// Name to give it instead of the archive's.
        #[arg(long)]
        name: Option<String>,
    },
    /// List images.
    Ls,
    /// Give an image another name.
    Tag {
        /// Existing name or digest.
        source: String,
        /// New name.
        target: String,
    },
    /// Remove a name.
    Rm {
        /// Name or digest.
        name: String,
    },
    /// Delete blobs and layers no image or container uses.
    Gc,
    /// Build the busybox test image from the host's busybox-static.
    BuildBusybox {
        /// Output tarball.
        out: PathBuf,
        /// Image name.
        #[arg(long, default_value = "busybox:latest")]
        name: String,
        /// The static busybox binary.
        #[arg(long, default_value = "/bin/busybox")]
        busybox: PathBuf,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Image reference.
    #[arg(long)]
    image: String,
    /// Container id (default: random).
    #[arg(long)]
    name: Option<String>,
    /// Existing pod to run in (default: a new pod named after the container).
    #[arg(long)]
    pod: Option<String>,
    /// Memory limit (bytes, or with Ki/Mi/Gi/K/M/G).
    #[arg(long)]
    memory: Option<String>,
    /// CPU limit in millicores.
    #[arg(long)]
    cpu_limit: Option<u64>,
    /// CPU request in millicores.
    #[arg(long)]
    cpu_request: Option<u64>,
    /// Maximum number of processes.
    #[arg(long)]
    pids: Option<u64>,
    /// Restart policy: Always, OnFailure or Never.
    #[arg(long, default_value = "Never")]
    restart: String,
    /// User (name, uid, uid:gid).
    #[arg(long)]
    user: Option<String>,
    /// Working directory.
    #[arg(long)]
    workdir: Option<String>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(short, long)]
    env: Vec<String>,
    /// Volume: HOST:DEST[:ro] (hostPath) or NAME:DEST[:ro] (emptyDir).
    #[arg(short, long)]
    volume: Vec<String>,
    /// Return once started instead of waiting for the exit.
    #[arg(short, long)]
    detach: bool,
    /// Remove the container (and its pod, if created here) after it exits.
    #[arg(long)]
    rm: bool,
    /// Stream the log while waiting instead of printing it after the exit.
    #[arg(short, long)]
    follow: bool,
    /// Print the time of each step to stderr.
    #[arg(long)]
    timing: bool,
    /// Run without the seccomp filter (`seccompProfile.type: Unconfined`).
    #[arg(long)]
    seccomp_unconfined: bool,
    /// Every capability, every host device, no seccomp filter, `/sys` writable
    /// (`securityContext.privileged`, Docker's `--privileged`).
    #[arg(long)]
    privileged: bool,
    /// Capability to add to the default set (`NET_ADMIN` or `CAP_NET_ADMIN`; repeatable).
    #[arg(long)]
    cap_add: Vec<String>,
    /// Capability to drop from the default set (repeatable; `ALL` drops all).
    #[arg(long)]
    cap_drop: Vec<String>,
    /// Command and arguments (default: the image's).
    #[arg(last = true)]
    cmd: Vec<String>,
}

/// Runs `shoal-agent runtime …`; returns the process exit code.
pub fn run(args: RuntimeArgs) -> Result<i32> {
    let exe = std::env::current_exe().context("while finding the agent binary")?;
    if let RtCmd::Image(ImageCmd::BuildBusybox { out, name, busybox }) = &args.command {
        shoal_runtime::testimage::busybox_docker_save(busybox, out, name)
            .with_context(|| format!("while building {}", out.display()))?;
        return Ok(0);
    }
    let rt = Runtime::new(RuntimeConfig::new(&args.data_dir, exe))
        .context("while opening the runtime")?;
    match args.command {
        RtCmd::Image(cmd) => image(&rt, cmd),
        RtCmd::Run(a) => run_container(&rt, *a),
        RtCmd::Ps => {
            println!(
                "{:<24} {:<20} {:<20} {:<28} RESTARTS",
                "ID", "POD", "IMAGE", "STATE"
            );
            for c in rt.list()? {
                let state = match &c.state {
                    ContainerState::Created => "Created".to_string(),
                    ContainerState::Running { pid, .. } => format!("Running (pid {pid})"),
                    ContainerState::BackOff { next_start } => {
                        format!("BackOff until {}", next_start.format("%H:%M:%S"))
                    }
                    ContainerState::Exited(e) => format!("Exited {} ({})", e.exit_code, e.reason),
                };
                println!(
                    "{:<24} {:<20} {:<20} {:<28} {}",
                    c.id, c.pod, c.image, state, c.restart_count
                );
            }
            Ok(0)
        }
        RtCmd::Logs { id, follow, tail } => {
            print_logs(
                &rt,
                &id,
                LogOptions {
                    tail,
                    since: None,
                    follow,
                },
            )?;
            Ok(0)
        }
        RtCmd::Stop { id, grace_ms } => {
            let st = rt.stop(&id, Duration::from_millis(grace_ms))?;
            if let Some(e) = st.exit() {
                println!("{id}: exited {} ({})", e.exit_code, e.reason);
            }
            Ok(0)
        }
        RtCmd::Rm { id } => {
            remove_with_pod(&rt, &id)?;
            Ok(0)
        }
        RtCmd::Exec { id, tty, cmd } => exec(&rt, &id, tty, cmd),
        RtCmd::Stats { id } => {
            let s = rt.stats(&id)?;
            println!(
                "memory_bytes {}\ncpu_usage_ns {}",
                s.memory_bytes, s.cpu_usage_ns
            );
            Ok(0)
        }
    }
}

fn image(rt: &Runtime, cmd: ImageCmd) -> Result<i32> {
    let store = rt.images();
    match cmd {
        ImageCmd::Import { file, name } => {
            for r in store.import(&file, name.as_deref())? {
                println!("{} {}", r.name, r.digest);
            }
        }
        ImageCmd::Ls => {
            for i in store.list()? {
                println!("{:<40} {} {:>10}", i.name, i.digest, i.size);
            }
        }
        ImageCmd::Tag { source, target } => {
            let r = store.tag(&source, &target)?;
            println!("{} {}", r.name, r.digest);
        }
        ImageCmd::Rm { name } => store.remove(&name)?,
        ImageCmd::Gc => {
            let r = store.gc(&rt.layers_in_use()?)?;
            println!(
                "removed {} blobs, {} layers",
                r.blobs_removed, r.layers_removed
            );
        }
        ImageCmd::BuildBusybox { .. } => {}
    }
    Ok(0)
}

/// Parses `32Mi`, `64M`, `1Gi`, `1048576`.
fn parse_bytes(s: &str) -> Result<u64> {
    let (num, mult) = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("K", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ]
    .iter()
    .find_map(|(suf, m)| s.strip_suffix(suf).map(|n| (n, *m)))
    .unwrap_or((s, 1));
    let n: u64 = num.parse().with_context(|| {
        format!("--memory {s:?}: expected bytes or a number with Ki/Mi/Gi/K/M/G")
    })?;
    Ok(n * mult)
}

fn run_container(rt: &Runtime, a: RunArgs) -> Result<i32> {
    let t0 = Instant::now();
    let timing = a.timing;
    if timing {
        // SAFETY: no other thread runs yet; the variable is read by this
        // process and inherited by the supervisor.
        unsafe { std::env::set_var("SHOAL_RUNTIME_TIMING", "1") };
    }
    let step = |what: &str| {
        if timing {
            eprintln!("{:>8.3} ms  {what}", t0.elapsed().as_secs_f64() * 1000.0);
        }
    };
    let id = a
        .name
        .clone()
        .unwrap_or_else(|| format!("c-{}", shoal_runtime::util::random_hex()));
    let (pod, own_pod) = match &a.pod {
        Some(p) => (rt.sandbox(p)?, false),
        None => (
            rt.create_sandbox(&PodSandboxConfig {
                name: id.clone(),
                ..Default::default()
            })?,
            true,
        ),
    };
    step("pod sandbox ready");
    let mut spec = ContainerSpec::new(&id, &a.image);
    spec.command = a.cmd;
    spec.user = a.user;
    spec.security.seccomp_unconfined = a.seccomp_unconfined;
    spec.security.privileged = a.privileged;
    for (flag, names, into) in [
        ("--cap-add", &a.cap_add, &mut spec.security.cap_add),
        ("--cap-drop", &a.cap_drop, &mut spec.security.cap_drop),
    ] {
        for n in names {
            let nums = shoal_api::capability_numbers(n).with_context(|| {
                format!("{flag} {n:?}: unknown capability; expected a name such as NET_ADMIN or CAP_NET_ADMIN, or ALL")
            })?;
            into.extend(nums);
        }
    }
    spec.working_dir = a.workdir;
    spec.restart_policy = a
        .restart
        .parse::<RestartPolicy>()
        .map_err(anyhow::Error::msg)?;
    spec.resources.memory_bytes = a.memory.as_deref().map(parse_bytes).transpose()?;
    spec.resources.cpu_limit_millis = a.cpu_limit;
    spec.resources.cpu_request_millis = a.cpu_request;
    spec.resources.pids = a.pids;
    for e in &a.env {
        let (k, v) = e
            .split_once('=')
            .with_context(|| format!("--env {e:?}: expected KEY=VALUE"))?;
        spec.env.push((k.into(), v.into()));
    }
    for v in &a.volume {
        let parts: Vec<&str> = v.split(':').collect();
        let (src, dest, ro) = match parts.as_slice() {
            [s, d] => (*s, *d, false),
            [s, d, "ro"] => (*s, *d, true),
            _ => bail!("--volume {v:?}: expected SRC:DEST[:ro]"),
        };
        let source = if src.starts_with('/') {
            MountSource::HostPath(src.into())
        } else {
            MountSource::EmptyDir(src.into())
        };
        spec.mounts.push(Mount {
            source,
            destination: dest.into(),
            read_only: ro,
        });
    }
    let started = rt.create_and_start(&pod, spec);
    step("container started");
    let h = match started {
        Ok(h) => h,
        Err(e) => {
            if a.rm {
                let _ = rt.remove(&id);
                if own_pod {
                    let _ = rt.remove_sandbox(&pod.name);
                }
            }
            return Err(e.into());
        }
    };
    if a.detach {
        println!("{}", h.id);
        return Ok(0);
    }
    let follower = a.follow.then(|| {
        let opts = LogOptions {
            follow: true,
            ..Default::default()
        };
        rt.logs(&id, opts)
            .map(|reader| std::thread::spawn(move || print_reader(reader)))
    });
    let st = rt.wait(&id, Duration::from_secs(100 * 365 * 86_400))?;
    step("container exited");
    match follower {
        Some(f) => {
            if let Ok(Err(e)) = f?.join() {
                eprintln!("logs: {e}");
            }
        }
        None => print_logs(rt, &id, LogOptions::default())?,
    }
    let code = st.exit().map(|e| e.exit_code).unwrap_or(255);
    if let Some(e) = st.exit()
        && e.reason != "Completed"
        && e.reason != "Error"
    {
        eprintln!("{id}: {} {}", e.reason, e.message);
    }
    if a.rm {
        if own_pod {
            rt.remove_sandbox(&pod.name)?;
            step("container and pod removed");
        } else {
            rt.remove(&id)?;
            step("container removed");
        }
    }
    Ok(code)
}

fn remove_with_pod(rt: &Runtime, id: &str) -> Result<()> {
    let pod = rt.status(id)?.pod;
    rt.remove(id)?;
    if !rt.list()?.iter().any(|c| c.pod == pod) {
        rt.remove_sandbox(&pod)?;
    }
    Ok(())
}

fn print_reader(reader: shoal_runtime::LogReader) -> std::io::Result<()> {
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    for l in reader {
        let l = l?;
        let w: &mut dyn Write = if l.stream == shoal_runtime::Stream::Stdout {
            &mut out
        } else {
            &mut err
        };
        if l.partial {
            write!(w, "{}", l.text)?;
        } else {
            writeln!(w, "{}", l.text)?;
        }
    }
    Ok(())
}

fn print_logs(rt: &Runtime, id: &str, opts: LogOptions) -> Result<()> {
    print_reader(rt.logs(id, opts)?).with_context(|| format!("while printing the log of {id}"))
}

fn exec(rt: &Runtime, id: &str, tty: bool, cmd: Vec<String>) -> Result<i32> {
    let mut p = rt.exec(
        id,
        ExecSpec {
            cmd,
            tty,
            ..Default::default()
        },
    )?;
    if let Some(mut pty) = p.pty.take() {
        let mut input = pty.try_clone()?;
        std::thread::spawn(move || std::io::copy(&mut std::io::stdin(), &mut input));
        let mut buf = [0u8; 4096];
        let mut out = std::io::stdout();
        loop {
            match pty.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    out.write_all(&buf[..n])?;
                    out.flush()?;
                }
            }
        }
    } else {
        if let Some(mut input) = p.stdin.take() {
            std::thread::spawn(move || std::io::copy(&mut std::io::stdin(), &mut input));
        }
        let e = p
            .stderr
            .take()
            .map(|mut e| std::thread::spawn(move || std::io::copy(&mut e, &mut std::io::stderr())));
        if let Some(mut o) = p.stdout.take() {
            std::io::copy(&mut o, &mut std::io::stdout())?;
        }
        if let Some(e) = e {
            let _ = e.join();
        }
    }
    Ok(p.wait()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes() {
        assert_eq!(parse_bytes("32Mi").unwrap(), 32 << 20);
        assert_eq!(parse_bytes("1G").unwrap(), 1_000_000_000);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert!(parse_bytes("lots").is_err());
    }
}
