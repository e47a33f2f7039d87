//! `shoalctl run NAME --image IMAGE [-- ARGS…]`: creates a Pod with one container (named
//! NAME, labelled `run=NAME` unless `--labels`), as `kubectl run` does. `--attach` waits
//! for the container to start, follows its log (`Proxy.Logs`) to its end and exits with its
//! exit code; `--rm` then deletes the pod (also on Ctrl-C). `-i` (implies `--attach`) gives
//! the container `stdin: true, stdinOnce: true` and `-t` `tty: true`, and attaches to the
//! main process through `Proxy.Attach` instead (exec's session: raw mode, resizes).

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shoal_proto::LogsRequest;
use shoal_proto::proxy_client::ProxyClient;

use super::{Context, print};
use crate::cli::RunArgs;
use crate::error::{CtlError, Service, Target, service_error};
use crate::kinds;

/// How often `--attach` reads the pod while it waits.
const POLL: Duration = Duration::from_millis(250);

/// How long `--attach` waits for the exit code to be reported after the log ended.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads `K=V[,K=V…]`.
fn pairs(text: &str, what: &str) -> Result<Vec<(String, String)>, CtlError> {
    text.split(',')
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(CtlError::Usage(format!(
                "{what} {kv:?}: expected KEY=VALUE"
            ))),
        })
        .collect()
}

/// The Pod `run` creates (pure; the controller validates it like any other).
pub fn pod_object(args: &RunArgs, namespace: &str) -> Result<Value, CtlError> {
    if !matches!(args.restart.as_str(), "Always" | "OnFailure" | "Never") {
        return Err(CtlError::Usage(format!(
            "--restart {:?}: expected Always, OnFailure or Never",
            args.restart
        )));
    }
    let labels: serde_json::Map<String, Value> = match &args.labels {
        Some(l) => pairs(l, "--labels")?
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
        None => [("run".to_string(), Value::String(args.name.clone()))]
            .into_iter()
            .collect(),
    };
    let mut env = Vec::new();
    for e in &args.env {
        let (k, v) = e
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| CtlError::Usage(format!("--env {e:?}: expected KEY=VALUE")))?;
        env.push(json!({"name": k, "value": v}));
    }
    let mut container = json!({"name": args.name, "image": args.image});
    if args.stdin {
        container["stdin"] = json!(true);
        container["stdinOnce"] = json!(true);
    }
    if args.tty {
        container["tty"] = json!(true);
    }
    if !args.args.is_empty() {
        let key = if args.command { "command" } else { "args" };
        container[key] = json!(args.args);
    } else if args.command {
        return Err(CtlError::Usage(
            "--command needs the command after `--`".into(),
        ));
    }
    if !env.is_empty() {
        container["env"] = Value::Array(env);
    }
    if let Some(p) = args.port {
        container["ports"] = json!([{"containerPort": p}]);
    }
    Ok(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": args.name, "namespace": namespace, "labels": labels},
        "spec": {"restartPolicy": args.restart, "containers": [container]}
    }))
}

/// The container's state once it started or ended, `None` while it waits.
fn started(pod: &Value) -> Option<&'static str> {
    let state = pod.pointer("/status/containerStatuses/0/state");
    if state.and_then(|s| s.get("terminated")).is_some() {
        return Some("terminated");
    }
    if state.and_then(|s| s.get("running")).is_some() {
        return Some("running");
    }
    match pod.pointer("/status/phase").and_then(Value::as_str) {
        Some("Succeeded" | "Failed") => Some("terminated"),
        _ => None,
    }
}

/// The container's exit code once it ended for good (no restart due).
fn exit_code(pod: &Value) -> Option<i32> {
    let terminal = matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    );
    let code = pod
        .pointer("/status/containerStatuses/0/state/terminated/exitCode")
        .and_then(Value::as_i64)?;
    terminal.then_some(code as i32)
}

/// Runs `run`.
pub async fn run(ctx: &mut Context, args: RunArgs) -> Result<(), CtlError> {
    let attached = args.attach || args.stdin;
    if args.rm && !attached {
        return Err(CtlError::Usage(
            "--rm should only be used for attached containers (--attach)".into(),
        ));
    }
    let namespace = ctx.namespace().to_string();
    let pod = pod_object(&args, &namespace)?;
    let target = Target::new("pod", &namespace, &args.name);
    ctx.create(&target, &pod).await?;
    if !attached {
        return print(&format!("pod/{} created\n", args.name));
    }
    let result = tokio::select! {
        r = attach(ctx, &namespace, &args) => r,
        _ = tokio::signal::ctrl_c() => Err(CtlError::Terminal("interrupted".into())),
    };
    if args.rm {
        let kind = kinds::resolve("Pod")?;
        ctx.delete(&kind, &namespace, &args.name).await?;
        print(&format!("pod \"{}\" deleted\n", args.name))?;
    }
    result
}

/// Waits for the container, prints its log to its end, then returns its exit code as
/// shoalctl's.
async fn attach(ctx: &mut Context, namespace: &str, args: &RunArgs) -> Result<(), CtlError> {
    let kind = kinds::resolve("Pod")?;
    let deadline = Instant::now() + args.pod_running_timeout;
    let state = loop {
        let pod = ctx.get(&kind, namespace, &args.name).await?;
        if let Some(s) = started(&pod) {
            break s;
        }
        if Instant::now() >= deadline {
            let state = pod
                .pointer("/status/containerStatuses/0/state")
                .cloned()
                .unwrap_or(Value::Null);
            return Err(CtlError::WaitTimeout(format!(
                "timed out after {:?} waiting for pod/{} to start (container state: {state})",
                args.pod_running_timeout, args.name
            )));
        }
        tokio::time::sleep(POLL).await;
    };
    // A container that already ended has no stdin to attach to: its log is all there is.
    if args.stdin && state == "running" {
        let start = super::attach::start(namespace, &args.name, None, true, args.tty);
        return super::exec::session(ctx, super::exec::Session::Attach, start).await;
    }
    let target = Target::new("pod", namespace, &args.name);
    let channel = ctx.conn().await?.channel_without_deadline().await?;
    let mut stream = ProxyClient::new(channel)
        .logs(LogsRequest {
            namespace: namespace.to_string(),
            pod: args.name.clone(),
            container: args.name.clone(),
            tail_lines: -1,
            since_time: String::new(),
            follow: true,
            timestamps: false,
            previous: false,
        })
        .await
        .map_err(|s| service_error(&s, Some(&target), Service::Workload))?
        .into_inner();
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(|s| service_error(&s, Some(&target), Service::Workload))?
    {
        let mut out = std::io::stdout().lock();
        out.write_all(&chunk.data)
            .and_then(|_| out.flush())
            .map_err(CtlError::Output)?;
    }
    // The log ends with the container; its exit code is in the status the agent writes next.
    let deadline = Instant::now() + EXIT_TIMEOUT;
    loop {
        let pod = ctx.get(&kind, namespace, &args.name).await?;
        if let Some(code) = exit_code(&pod) {
            return if code == 0 {
                Ok(())
            } else {
                Err(CtlError::RemoteExit(code))
            };
        }
        if Instant::now() >= deadline {
            return Err(CtlError::WaitTimeout(format!(
                "the log of pod/{} ended but no exit code was reported within {EXIT_TIMEOUT:?}",
                args.name
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn args(argv: &[&str]) -> RunArgs {
        let mut full = vec!["shoalctl", "run"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full).unwrap().command {
            Command::Run(a) => a,
            _ => panic!("not run"),
        }
    }

    #[test]
    fn the_pod_carries_the_flags() {
        let a = args(&[
            "web",
            "--image",
            "busybox",
            "--restart",
            "Never",
            "--env",
            "A=1",
            "--env",
            "B=x=y",
            "--port",
            "8080",
            "--",
            "echo",
            "hi",
        ]);
        let p = pod_object(&a, "team").unwrap();
        assert_eq!(p["metadata"]["labels"], json!({"run": "web"}));
        assert_eq!(p["metadata"]["namespace"], "team");
        assert_eq!(p["spec"]["restartPolicy"], "Never");
        let c = &p["spec"]["containers"][0];
        assert_eq!(c["name"], "web");
        assert_eq!(c["image"], "busybox");
        assert_eq!(c["args"], json!(["echo", "hi"]));
        assert!(c.get("command").is_none());
        assert!(c.get("stdin").is_none() && c.get("tty").is_none());
        assert_eq!(
            c["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "x=y"}])
        );
        assert_eq!(c["ports"], json!([{"containerPort": 8080}]));

        let a = args(&[
            "t",
            "--image",
            "busybox",
            "--labels",
            "app=t,tier=x",
            "--command",
            "--",
            "sh",
            "-c",
            "true",
        ]);
        let p = pod_object(&a, "default").unwrap();
        assert_eq!(p["metadata"]["labels"], json!({"app": "t", "tier": "x"}));
        assert_eq!(p["spec"]["restartPolicy"], "Always");
        assert_eq!(
            p["spec"]["containers"][0]["command"],
            json!(["sh", "-c", "true"])
        );
        let p = pod_object(&args(&["t", "--image", "busybox", "-i", "-t"]), "d").unwrap();
        let c = &p["spec"]["containers"][0];
        assert_eq!(
            (&c["stdin"], &c["stdinOnce"], &c["tty"]),
            (&json!(true), &json!(true), &json!(true))
        );
    }

    #[test]
    fn bad_flags_are_named() {
        let e = |argv: &[&str]| pod_object(&args(argv), "d").unwrap_err().to_string();
        assert!(e(&["x", "--image", "i", "--restart", "Sometimes"]).contains("--restart"));
        assert!(e(&["x", "--image", "i", "--env", "=v"]).contains("--env \"=v\""));
        assert!(e(&["x", "--image", "i", "--labels", "a"]).contains("--labels \"a\""));
        assert!(e(&["x", "--image", "i", "--command"]).contains("--command"));
    }

    #[test]
    fn start_and_exit_are_read_from_the_status() {
        let waiting = json!({"status": {"phase": "Pending", "containerStatuses": [
            {"state": {"waiting": {"reason": "ContainerCreating"}}}]}});
        assert_eq!(started(&waiting), None);
        let running = json!({"status": {"phase": "Running", "containerStatuses": [
            {"state": {"running": {}}}]}});
        assert_eq!(started(&running), Some("running"));
        assert_eq!(exit_code(&running), None);
        let done = json!({"status": {"phase": "Failed", "containerStatuses": [
            {"state": {"terminated": {"exitCode": 3}}}]}});
        assert_eq!(started(&done), Some("terminated"));
        assert_eq!(exit_code(&done), Some(3));
        // Terminated but about to restart (phase still Running): not the end yet.
        let restarting = json!({"status": {"phase": "Running", "containerStatuses": [
            {"state": {"terminated": {"exitCode": 1}}}]}});
        assert_eq!(exit_code(&restarting), None);
    }
}
