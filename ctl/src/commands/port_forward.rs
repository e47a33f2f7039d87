//! `shoalctl port-forward TARGET [LOCAL:]REMOTE…`: listens on `127.0.0.1:LOCAL` and carries
//! each accepted connection over its own `Proxy.PortForward` stream to the pod's agent,
//! which connects to the pod's port inside the pod's network namespace. `svc/NAME` picks a
//! pod the service selects (running ones first) and maps the service's port to its target
//! port, as kubectl does; `deploy/NAME` (any owner kind) one of the owner's pods. Runs until
//! interrupted.

use serde_json::Value;
use shoal_proto::port_forward_input::Input;
use shoal_proto::proxy_client::ProxyClient;
use shoal_proto::{PortForwardInput, PortForwardStart};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tonic::transport::Channel;

use super::logs::owned_pods;
use super::{Context, note, pod_name};
use crate::cli::PortForwardArgs;
use crate::error::{CtlError, Service, Target, service_error};
use crate::{kinds, output};

/// Bytes per message to the pod.
const CHUNK: usize = 32 * 1024;

/// A `[LOCAL:]REMOTE` argument: the local port (0: any free one) and the remote port.
pub fn parse_ports(arg: &str) -> Result<(u16, u16), CtlError> {
    let bad = || {
        CtlError::Usage(format!(
            "{arg:?}: expected [LOCAL:]REMOTE with ports 1-65535 (e.g. 8080:80, 80, :80)"
        ))
    };
    let port = |s: &str| s.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad);
    match arg.split_once(':') {
        Some(("", r)) => Ok((0, port(r)?)),
        Some((l, r)) => Ok((port(l)?, port(r)?)),
        None => {
            let p = port(arg)?;
            Ok((p, p))
        }
    }
}

/// The port of a pod a service port leads to: the service port's `targetPort` (a number, or
/// a container port's name looked up in the pod), or the same number without one.
pub fn service_target_port(service: &Value, pod: &Value, port: u16) -> Result<u16, CtlError> {
    let name = output::name_of(service);
    let ports = service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let Some(sp) = ports
        .iter()
        .find(|p| p.get("port").and_then(Value::as_u64) == Some(u64::from(port)))
    else {
        let have: Vec<String> = ports
            .iter()
            .filter_map(|p| p.get("port").and_then(Value::as_u64))
            .map(|p| p.to_string())
            .collect();
        return Err(CtlError::Usage(format!(
            "service {name:?} has no port {port} (its ports: {})",
            have.join(", ")
        )));
    };
    match sp.get("targetPort") {
        None | Some(Value::Null) => Ok(port),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .ok_or_else(|| CtlError::Usage(format!("service {name:?}: bad targetPort {n}"))),
        Some(Value::String(s)) => {
            if let Ok(n) = s.parse::<u16>() {
                return Ok(n);
            }
            pod.pointer("/spec/containers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .flat_map(|c| {
                    c.get("ports")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                })
                .find(|p| p.get("name").and_then(Value::as_str) == Some(s.as_str()))
                .and_then(|p| p.get("containerPort").and_then(Value::as_u64))
                .and_then(|n| u16::try_from(n).ok())
                .ok_or_else(|| {
                    CtlError::Usage(format!(
                        "service {name:?}: pod/{} has no container port named {s:?}",
                        output::name_of(pod)
                    ))
                })
        }
        Some(other) => Err(CtlError::Usage(format!(
            "service {name:?}: bad targetPort {other}"
        ))),
    }
}

/// The first of `pods` to use, running ones first, with kubectl's note when there are
/// several.
fn pick<'a>(pods: &[&'a Value], what: &str) -> Result<&'a Value, CtlError> {
    let mut pods = pods.to_vec();
    pods.sort_by_key(|p| {
        (
            p.pointer("/status/phase").and_then(Value::as_str) != Some("Running"),
            output::name_of(p).to_string(),
        )
    });
    let first = pods
        .first()
        .copied()
        .ok_or_else(|| CtlError::NotFound(format!("{what} has no pods")))?;
    if pods.len() > 1 {
        note(&format!(
            "Found {} pods, using pod/{}",
            pods.len(),
            output::name_of(first)
        ));
    }
    Ok(first)
}

/// Resolves the target to a pod name and the (local, pod) port pairs.
async fn resolve(
    ctx: &mut Context,
    namespace: &str,
    target: &str,
    ports: &[(u16, u16)],
) -> Result<(String, Vec<(u16, u16)>), CtlError> {
    let pod_kind = kinds::resolve("Pod")?;
    match target.split_once('/') {
        Some((k, name)) if kinds::resolve(k)?.kind == "Service" => {
            let svc_kind = kinds::resolve(k)?;
            let svc = ctx.get(&svc_kind, namespace, name).await?;
            let selector: Vec<String> = svc
                .pointer("/spec/selector")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect();
            if selector.is_empty() {
                return Err(CtlError::NotPossible(format!(
                    "service {name:?} has no selector, so no pod to forward to"
                )));
            }
            let (pods, _) = ctx
                .list(&pod_kind, namespace, &selector.join(","), "")
                .await?;
            let refs: Vec<&Value> = pods.iter().collect();
            let pod = pick(&refs, &format!("service/{name}"))?;
            let mapped = ports
                .iter()
                .map(|&(l, r)| Ok((l, service_target_port(&svc, pod, r)?)))
                .collect::<Result<Vec<_>, CtlError>>()?;
            Ok((output::name_of(pod).to_string(), mapped))
        }
        Some((k, name)) if kinds::resolve(k)?.kind != "Pod" => {
            let owner = kinds::resolve(k)?;
            ctx.get(&owner, namespace, name).await?;
            let (all, _) = ctx.list(&pod_kind, namespace, "", "").await?;
            let owned = owned_pods(&all, owner.kind, name);
            let pod = pick(&owned, &owner.slash_name(name))?;
            Ok((output::name_of(pod).to_string(), ports.to_vec()))
        }
        _ => Ok((pod_name(target)?, ports.to_vec())),
    }
}

/// Runs `port-forward`.
pub async fn run(ctx: &mut Context, args: PortForwardArgs) -> Result<(), CtlError> {
    let ports = args
        .ports
        .iter()
        .map(|p| parse_ports(p))
        .collect::<Result<Vec<_>, _>>()?;
    let namespace = ctx.namespace().to_string();
    let (pod, ports) = resolve(ctx, &namespace, &args.target, &ports).await?;
    // The pod must exist now (a clear not-found rather than one per connection).
    ctx.get(&kinds::resolve("Pod")?, &namespace, &pod).await?;
    let channel = ctx.conn().await?.channel_without_deadline().await?;
    let mut listeners = Vec::new();
    for (local, remote) in ports {
        let l = TcpListener::bind(("127.0.0.1", local)).await.map_err(|e| {
            CtlError::NotPossible(format!("cannot listen on 127.0.0.1:{local}: {e}"))
        })?;
        let bound = l.local_addr().map_err(CtlError::Output)?.port();
        super::print(&format!("Forwarding from 127.0.0.1:{bound} -> {remote}\n"))?;
        listeners.push((l, bound, remote));
    }
    for (l, local, remote) in listeners {
        let (channel, namespace, pod) = (channel.clone(), namespace.clone(), pod.clone());
        tokio::spawn(async move {
            loop {
                let sock = match l.accept().await {
                    Ok((sock, _)) => sock,
                    Err(e) => {
                        // E.g. out of descriptors: say so, and do not spin.
                        note(&format!("error: accepting on 127.0.0.1:{local}: {e}"));
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = super::print(&format!("Handling connection for {local}\n"));
                let (channel, namespace, pod) = (channel.clone(), namespace.clone(), pod.clone());
                tokio::spawn(async move {
                    if let Err(e) = forward(channel, &namespace, &pod, remote, sock).await {
                        note(&format!("error: forwarding {local} -> {remote}: {e}"));
                    }
                });
            }
        });
    }
    let _ = tokio::signal::ctrl_c().await;
    Ok(())
}

/// Carries one local connection to `remote` of the pod until both sides are done.
async fn forward(
    channel: Channel,
    namespace: &str,
    pod: &str,
    remote: u16,
    sock: TcpStream,
) -> Result<(), CtlError> {
    let target = Target::new("pod", namespace, pod);
    let (tx, rx) = mpsc::channel::<PortForwardInput>(16);
    let start = PortForwardInput {
        input: Some(Input::Start(PortForwardStart {
            namespace: namespace.to_string(),
            pod: pod.to_string(),
            port: u32::from(remote),
        })),
    };
    tx.send(start)
        .await
        .map_err(|_| CtlError::Terminal("port-forward input closed".into()))?;
    let mut output = ProxyClient::new(channel)
        .port_forward(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| service_error(&s, Some(&target), Service::Workload))?
        .into_inner();
    let (mut rd, mut wr) = sock.into_split();
    // Local → pod: the data, then `eof` when the local side half-closes.
    tokio::spawn(async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let input = match rd.read(&mut buf).await {
                Ok(0) | Err(_) => Input::Eof(true),
                Ok(n) => Input::Data(buf[..n].to_vec()),
            };
            let eof = matches!(input, Input::Eof(_));
            if tx
                .send(PortForwardInput { input: Some(input) })
                .await
                .is_err()
                || eof
            {
                return;
            }
        }
    });
    // Pod → local, until the pod's side closes.
    let result = loop {
        match output.message().await {
            Ok(Some(m)) => {
                if let Err(e) = wr.write_all(&m.data).await {
                    break Err(CtlError::Output(e));
                }
            }
            Ok(None) => break Ok(()),
            Err(s) => break Err(service_error(&s, Some(&target), Service::Workload)),
        }
    };
    let _ = wr.shutdown().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn port_pairs_parse_like_kubectl() {
        assert_eq!(parse_ports("8080:80").unwrap(), (8080, 80));
        assert_eq!(parse_ports("80").unwrap(), (80, 80));
        assert_eq!(parse_ports(":80").unwrap(), (0, 80));
        for bad in ["", "0", "80:", "x:80", "70000", "1:2:3", "-1"] {
            let e = parse_ports(bad).unwrap_err().to_string();
            assert!(e.contains("[LOCAL:]REMOTE"), "{bad}: {e}");
        }
    }

    #[test]
    fn service_ports_map_to_target_ports() {
        let svc = json!({"metadata": {"name": "web"}, "spec": {"ports": [
            {"port": 80, "targetPort": 8080},
            {"port": 81, "targetPort": "http"},
            {"port": 82},
            {"port": 83, "targetPort": "9090"}
        ]}});
        let pod = json!({"metadata": {"name": "web-1"}, "spec": {"containers": [
            {"name": "a", "ports": [{"name": "http", "containerPort": 8000}]}
        ]}});
        assert_eq!(service_target_port(&svc, &pod, 80).unwrap(), 8080);
        assert_eq!(service_target_port(&svc, &pod, 81).unwrap(), 8000);
        assert_eq!(service_target_port(&svc, &pod, 82).unwrap(), 82);
        assert_eq!(service_target_port(&svc, &pod, 83).unwrap(), 9090);
        let e = service_target_port(&svc, &pod, 99).unwrap_err().to_string();
        assert!(
            e.contains("no port 99") && e.contains("80, 81, 82, 83"),
            "{e}"
        );
        let bare = json!({"metadata": {"name": "web-2"}, "spec": {"containers": [{"name": "a"}]}});
        let e = service_target_port(&svc, &bare, 81)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no container port named \"http\""), "{e}");
    }

    #[test]
    fn running_pods_are_picked_first() {
        let p = |n: &str, phase: &str| json!({"metadata": {"name": n}, "status": {"phase": phase}});
        let (a, b) = (p("a", "Pending"), p("b", "Running"));
        assert_eq!(output::name_of(pick(&[&a, &b], "x").unwrap()), "b");
        assert!(
            pick(&[], "service/web")
                .unwrap_err()
                .to_string()
                .contains("service/web has no pods")
        );
    }
}
