//! `shoalctl logs POD`: the controllers' `Proxy.Logs` stream, written to stdout as it comes.

use std::io::Write;

use shoal_proto::LogsRequest;
use shoal_proto::proxy_client::ProxyClient;

use super::{Context, pod_name};
use crate::cli::LogsArgs;
use crate::error::{CtlError, Service, Target, service_error};

/// Runs `logs`.
pub async fn run(ctx: &mut Context, args: LogsArgs) -> Result<(), CtlError> {
    let pod = pod_name(&args.pod)?;
    let namespace = ctx.namespace().to_string();
    let req = request(&args, namespace.clone(), pod.clone(), chrono::Utc::now())?;
    let target = Target::new("pod", &namespace, &pod);
    let mut stream = ctx
        .conn()
        .await?
        .call_on(|ch| {
            let r = req.clone();
            async move { ProxyClient::new(ch).logs(r).await }
        })
        .await
        .map_err(|s| service_error(&s, Some(&target), Service::Workload))?;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let msg = tokio::select! {
            m = stream.message() => m,
            _ = &mut ctrl_c => return Ok(()),
        };
        match msg {
            Ok(Some(chunk)) => {
                let mut out = std::io::stdout().lock();
                out.write_all(&chunk.data)
                    .and_then(|_| out.flush())
                    .map_err(CtlError::Output)?;
            }
            Ok(None) => return Ok(()),
            Err(s) => return Err(service_error(&s, Some(&target), Service::Workload)),
        }
    }
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
