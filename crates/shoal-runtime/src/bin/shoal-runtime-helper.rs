//! The supervisor and exec helper for the runtime's own tests (the agent
//! binary embeds the same entry points), plus `test-agent`, a stand-in for
//! an agent process that starts a container and is then killed by a test.
use std::time::Duration;

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(code) = shoal_runtime::helper::dispatch(&args) {
        std::process::exit(code);
    }
    let s: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if s.len() == 6 && s[1] == "test-agent" {
        // test-agent DATA_DIR CGROUP_PARENT POD ID: start `sleep 300` in a new pod, then idle.
        let mut cfg = shoal_runtime::RuntimeConfig::new(&s[2], &s[0]);
        cfg.cgroup_parent = s[3].clone();
        let run = || -> Result<(), shoal_runtime::RuntimeError> {
            let rt = shoal_runtime::Runtime::new(cfg)?;
            let pod = rt.create_sandbox(&shoal_runtime::PodSandboxConfig {
                name: s[4].clone(),
                ..Default::default()
            })?;
            let mut spec = shoal_runtime::ContainerSpec::new(&s[5], "busybox:latest");
            spec.command = vec!["sleep".into(), "300".into()];
            spec.grace_period = Duration::from_millis(200);
            let h = rt.create_and_start(&pod, spec)?;
            println!("started {}", h.pid);
            Ok(())
        };
        if let Err(e) = run() {
            eprintln!("test-agent: {e}");
            std::process::exit(1);
        }
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    eprintln!(
        "usage: shoal-runtime-helper supervise DIR | exec DIR SPEC_JSON | test-agent DATA_DIR CGROUP_PARENT POD ID"
    );
    std::process::exit(2);
}
