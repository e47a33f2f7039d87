//! `shoalctl logs POD | TYPE/NAME | -l SELECTOR`: the controllers' `Proxy.Logs` streams,
//! written to stdout as they come. Which pods and containers to read is a pure plan
//! ([`owned_pods`], [`streams`]); several streams are read at once and their lines
//! prefixed with `[pod/NAME/CONTAINER]`, as kubectl does.

use std::io::Write;

use futures::StreamExt;
use serde_json::Value;
use shoal_proto::LogsRequest;
use shoal_proto::proxy_client::ProxyClient;

use super::{Context, note, pod_name};
use crate::cli::LogsArgs;
use crate::error::{CtlError, Service, Target, service_error};
use crate::kinds;
use crate::output;

/// The pods `owner_kind`/`owner` owns (by `ownerReferences`), running ones first, then by
/// name: what `logs deploy/web` chooses from.
pub fn owned_pods<'a>(pods: &'a [Value], owner_kind: &str, owner: &str) -> Vec<&'a Value> {
    let mut out: Vec<&Value> = pods
        .iter()
        .filter(|p| {
            p.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|r| {
                    r.get("kind").and_then(Value::as_str) == Some(owner_kind)
                        && r.get("name").and_then(Value::as_str) == Some(owner)
                })
        })
        .collect();
    out.sort_by_key(|p| {
        (
            p.pointer("/status/phase").and_then(Value::as_str) != Some("Running"),
            output::name_of(p).to_string(),
        )
    });
    out
}

/// The (pod, container) streams to read: each pod's `container` (or "" for the agent's
/// default), or every container with `all_containers`.
pub fn streams(
    pods: &[&Value],
    container: Option<&str>,
    all_containers: bool,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in pods {
        let name = output::name_of(p).to_string();
        if all_containers {
            for c in p
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let c = c.get("name").and_then(Value::as_str).unwrap_or("");
                out.push((name.clone(), c.to_string()));
            }
        } else {
            out.push((name, container.unwrap_or("").to_string()));
        }
    }
    out
}

/// Runs `logs`.
pub async fn run(ctx: &mut Context, args: LogsArgs) -> Result<(), CtlError> {
    let namespace = ctx.namespace().to_string();
    if args.all_containers && args.container.is_some() {
        return Err(CtlError::Usage(
            "--all-containers and -c/--container exclude each other".into(),
        ));
    }
    let pod_kind = kinds::resolve("Pod")?;
    let pods: Vec<Value> = match (&args.selector, &args.pod) {
        (Some(sel), _) => {
            shoal_api::selector::LabelSelector::parse(sel)
                .map_err(|e| CtlError::Usage(e.to_string()))?;
            let (items, _) = ctx.list(&pod_kind, &namespace, sel, "").await?;
            if items.is_empty() {
                note(&format!("No resources found in {namespace} namespace."));
                return Ok(());
            }
            items
        }
        (None, Some(arg)) => match arg.split_once('/') {
            Some((k, name)) if kinds::resolve(k)?.kind != "Pod" => {
                let owner = kinds::resolve(k)?;
                // The owner must exist (a clear not-found otherwise).
                ctx.get(&owner, &namespace, name).await?;
                let (all, _) = ctx.list(&pod_kind, &namespace, "", "").await?;
                let owned = owned_pods(&all, owner.kind, name);
                let Some(first) = owned.first() else {
                    return Err(CtlError::NotFound(format!(
                        "{} has no pods",
                        owner.slash_name(name)
                    )));
                };
                if owned.len() > 1 {
                    note(&format!(
                        "Found {} pods, using pod/{}",
                        owned.len(),
                        output::name_of(first)
                    ));
                }
                vec![(*first).clone()]
            }
            _ => {
                let pod = pod_name(arg)?;
                if !args.all_containers {
                    // One pod, one container: no need to read the pod first.
                    let target = Target::new("pod", &namespace, &pod);
                    let req = request(&args, namespace.clone(), pod, chrono::Utc::now())?;
                    return stream_all(ctx, vec![(req, target)], args.prefix.unwrap_or(false))
                        .await;
                }
                vec![ctx.get(&pod_kind, &namespace, &pod).await?]
            }
        },
        (None, None) => {
            return Err(CtlError::Usage(
                "which pod? give POD, TYPE/NAME or -l SELECTOR".into(),
            ));
        }
    };
    let refs: Vec<&Value> = pods.iter().collect();
    let plan = streams(&refs, args.container.as_deref(), args.all_containers);
    let now = chrono::Utc::now();
    let mut reqs = Vec::new();
    for (pod, container) in plan {
        let target = Target::new("pod", &namespace, &pod);
        let mut req = request(&args, namespace.clone(), pod, now)?;
        req.container = container;
        reqs.push((req, target));
    }
    let prefix = args.prefix.unwrap_or(reqs.len() > 1);
    stream_all(ctx, reqs, prefix).await
}

/// Opens every stream, then copies their bytes to stdout as they come (whole lines with
/// `[pod/P/C] ` in front when `prefix`), until all end or Ctrl-C.
async fn stream_all(
    ctx: &mut Context,
    reqs: Vec<(LogsRequest, Target)>,
    prefix: bool,
) -> Result<(), CtlError> {
    type Item = (usize, Result<Vec<u8>, CtlError>);
    let mut labels = Vec::new();
    let mut opened: Vec<futures::stream::BoxStream<'static, Item>> = Vec::new();
    for (i, (req, target)) in reqs.into_iter().enumerate() {
        labels.push(format!("[pod/{}/{}] ", req.pod, req.container));
        let stream = ctx
            .conn()
            .await?
            .call_on(|ch| {
                let r = req.clone();
                async move { ProxyClient::new(ch).logs(r).await }
            })
            .await
            .map_err(|s| service_error(&s, Some(&target), Service::Workload))?;
        opened.push(Box::pin(stream.map(move |m| {
            (
                i,
                m.map(|c| c.data)
                    .map_err(|s| service_error(&s, Some(&target), Service::Workload)),
            )
        })));
    }
    let mut merged = futures::stream::select_all(opened);
    // Bytes of a line not yet ended, per stream (only when prefixing).
    let mut partial: Vec<Vec<u8>> = vec![Vec::new(); labels.len()];
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let write = |bytes: &[u8]| -> Result<(), CtlError> {
        let mut out = std::io::stdout().lock();
        out.write_all(bytes)
            .and_then(|_| out.flush())
            .map_err(CtlError::Output)
    };
    loop {
        let next = tokio::select! {
            m = merged.next() => m,
            _ = &mut ctrl_c => return Ok(()),
        };
        match next {
            Some((i, Ok(data))) => {
                if prefix {
                    write(&prefixed(&labels[i], &mut partial[i], &data))?;
                } else {
                    write(&data)?;
                }
            }
            Some((_, Err(e))) => return Err(e),
            None => break,
        }
    }
    // Lines cut off without a newline at the end of their stream.
    for (i, rest) in partial.iter().enumerate() {
        if !rest.is_empty() {
            let mut line = labels[i].clone().into_bytes();
            line.extend_from_slice(rest);
            line.push(b'\n');
            write(&line)?;
        }
    }
    Ok(())
}

/// The complete lines of `pending` + `data`, each after `label`; what follows the last
/// newline stays in `pending`. Pure.
pub fn prefixed(label: &str, pending: &mut Vec<u8>, data: &[u8]) -> Vec<u8> {
    pending.extend_from_slice(data);
    let mut out = Vec::new();
    while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
        out.extend_from_slice(label.as_bytes());
        out.extend(pending.drain(..=pos));
    }
    out
}

/// Builds the request: `--since` becomes an RFC 3339 time relative to `now`; `--since-time`
/// is checked; no `--tail` means every line.
pub fn request(
    args: &LogsArgs,
    namespace: String,
    pod: String,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<LogsRequest, CtlError> {
    let since_time = match (&args.since, &args.since_time) {
        (Some(d), _) => {
            let d = chrono::Duration::from_std(*d)
                .map_err(|_| CtlError::Usage("--since: too long".into()))?;
            (now - d).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        }
        (None, Some(t)) => chrono::DateTime::parse_from_rfc3339(t)
            .map_err(|e| {
                CtlError::Usage(format!(
                    "--since-time {t:?}: {e}; expected RFC 3339, e.g. 2026-01-02T15:04:05Z"
                ))
            })?
            .with_timezone(&chrono::Utc)
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        (None, None) => String::new(),
    };
    Ok(LogsRequest {
        namespace,
        pod,
        container: args.container.clone().unwrap_or_default(),
        tail_lines: args.tail.unwrap_or(-1),
        since_time,
        follow: args.follow,
        timestamps: args.timestamps,
        previous: args.previous,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn logs(argv: &[&str]) -> LogsArgs {
        let mut full = vec!["shoalctl", "logs"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full).unwrap().command {
            Command::Logs(l) => l,
            _ => panic!("not logs"),
        }
    }

    #[test]
    fn owners_pods_streams_and_prefixes() {
        let pod = |name: &str, phase: &str, owner: &str| {
            serde_json::json!({"metadata": {"name": name,
                "ownerReferences": [{"kind": "Deployment", "name": owner}]},
                "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
                "status": {"phase": phase}})
        };
        let pods = vec![
            pod("web-2", "Running", "web"),
            pod("web-1", "Pending", "web"),
            pod("db-1", "Running", "db"),
            pod("web-3", "Running", "web"),
        ];
        let owned: Vec<&str> = owned_pods(&pods, "Deployment", "web")
            .into_iter()
            .map(output::name_of)
            .collect();
        assert_eq!(owned, ["web-2", "web-3", "web-1"]);
        assert!(owned_pods(&pods, "Job", "web").is_empty());

        let refs: Vec<&Value> = pods.iter().take(2).collect();
        assert_eq!(
            streams(&refs, None, true),
            [
                ("web-2".to_string(), "a".to_string()),
                ("web-2".into(), "b".into()),
                ("web-1".into(), "a".into()),
                ("web-1".into(), "b".into())
            ]
        );
        assert_eq!(
            streams(&refs, Some("b"), false),
            [
                ("web-2".to_string(), "b".to_string()),
                ("web-1".into(), "b".into())
            ]
        );

        let mut pending = Vec::new();
        assert_eq!(prefixed("[p] ", &mut pending, b"one\ntw"), b"[p] one\n");
        assert_eq!(
            prefixed("[p] ", &mut pending, b"o\nthree\n"),
            b"[p] two\n[p] three\n"
        );
        assert!(pending.is_empty());
    }

    #[test]
    fn requests_carry_the_flags() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-28T20:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let r = request(
            &logs(&["--since", "1h30m", "--tail", "5", "-c", "app", "web"]),
            "ns".into(),
            "web".into(),
            now,
        )
        .unwrap();
        assert_eq!(r.since_time, "2026-11-28T18:30:00Z");
        assert_eq!((r.tail_lines, r.container.as_str()), (5, "app"));
        assert!(!r.follow && !r.previous && !r.timestamps);
        let r = request(
            &logs(&["-f", "--timestamps", "web"]),
            "ns".into(),
            "web".into(),
            now,
        )
        .unwrap();
        assert_eq!((r.tail_lines, r.since_time.as_str()), (-1, ""));
        assert!(r.follow && r.timestamps);
        let r = request(
            &logs(&["--since-time", "2026-11-28T21:00:00+01:00", "web"]),
            "ns".into(),
            "web".into(),
            now,
        )
        .unwrap();
        assert_eq!(r.since_time, "2026-11-28T20:00:00Z");
        let e = request(
            &logs(&["--since-time", "yesterday", "web"]),
            "ns".into(),
            "web".into(),
            now,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--since-time \"yesterday\""), "{e}");
    }
}
