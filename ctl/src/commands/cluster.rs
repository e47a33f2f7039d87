//! `shoalctl cluster status|add-member|remove-member|snapshot save`: the controllers' Raft
//! membership, its changes, and backups of the store.

use std::io::Write as _;
use std::path::Path;

use shoal_proto::{
    AddMemberRequest, ClusterStatusRequest, ClusterStatusResponse, RemoveMemberRequest,
    SnapshotRequest,
};

use super::{Context, note, print};
use crate::cli::{ClusterCommand, SnapshotCommand};
use crate::error::{CtlError, Service, service_error, status_error};
use crate::output::{self, Format};

/// Runs `cluster …`.
pub async fn run(ctx: &mut Context, command: ClusterCommand) -> Result<(), CtlError> {
    match command {
        ClusterCommand::Status { output: fmt } => status(ctx, fmt).await,
        ClusterCommand::AddMember { member } => {
            let (id, address) = parse_member(&member)?;
            // Catching up may outlast the request timeout; the controller bounds the call.
            let ch = ctx.conn().await?.channel_without_deadline().await?;
            let s = shoal_client::Client::cluster(ch)
                .add_member(AddMemberRequest {
                    id,
                    address: address.clone(),
                })
                .await
                .map_err(|s| service_error(&s, None, Service::Workload))?
                .into_inner();
            print(&format!("member {id} ({address}) added as a voter\n"))?;
            print(&output::cluster_status(&s))
        }
        ClusterCommand::RemoveMember { id } => {
            let id = parse_id(&id)?;
            let ch = ctx.conn().await?.channel_without_deadline().await?;
            let s = shoal_client::Client::cluster(ch)
                .remove_member(RemoveMemberRequest { id })
                .await
                .map_err(|s| service_error(&s, None, Service::Workload))?
                .into_inner();
            print(&format!("member {id} removed\n"))?;
            print(&output::cluster_status(&s))
        }
        ClusterCommand::Snapshot {
            command: SnapshotCommand::Save { file },
        } => save(ctx, &file).await,
    }
}

async fn status(ctx: &mut Context, fmt: Option<String>) -> Result<(), CtlError> {
    let format: Format = fmt.as_deref().unwrap_or("").parse()?;
    let status: ClusterStatusResponse = ctx
        .conn()
        .await?
        .call(|mut c| async move { c.status(ClusterStatusRequest {}).await })
        .await
        .map_err(|s| status_error(&s, None))?;
    match format {
        Format::Table | Format::Wide => print(&output::cluster_status(&status)),
        Format::Json => print(&output::to_json(&output::cluster_status_json(&status))),
        Format::Yaml => print(&output::to_yaml(&output::cluster_status_json(&status))?),
        Format::JsonPath(t) => print(&t.render(&output::cluster_status_json(&status))),
        Format::Name | Format::CustomColumns(_) => Err(CtlError::Usage(
            "cluster status supports -o json, yaml or jsonpath=…".into(),
        )),
    }
}

/// Reads a member id (a positive integer).
fn parse_id(s: &str) -> Result<u64, CtlError> {
    match s.trim().parse::<u64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(CtlError::Usage(format!(
            "member id {s:?}: expected a positive integer"
        ))),
    }
}

/// Reads `ID=HOST:PORT`.
fn parse_member(s: &str) -> Result<(u64, String), CtlError> {
    let usage = || {
        CtlError::Usage(format!(
            "member {s:?}: expected ID=HOST:PORT, e.g. 2=127.0.0.1:7002"
        ))
    };
    let (id, addr) = s.split_once('=').ok_or_else(usage)?;
    let id = parse_id(id)?;
    let addr = addr.trim();
    match addr.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => Ok((id, addr.to_string())),
        _ => Err(usage()),
    }
}

/// Streams a backup into `FILE.partial`, checks its size, then renames it to `file`.
async fn save(ctx: &mut Context, file: &Path) -> Result<(), CtlError> {
    let io = |e: std::io::Error, p: &Path| CtlError::Io {
        path: p.display().to_string(),
        source: e,
    };
    let partial = {
        let mut name = file.as_os_str().to_owned();
        name.push(".partial");
        std::path::PathBuf::from(name)
    };
    let ch = ctx.conn().await?.channel_without_deadline().await?;
    let mut stream = shoal_client::Client::cluster(ch)
        .snapshot(SnapshotRequest {})
        .await
        .map_err(|s| service_error(&s, None, Service::Workload))?
        .into_inner();
    let mut out = std::fs::File::create(&partial).map_err(|e| io(e, &partial))?;
    let (mut revision, mut objects, mut total, mut written) = (0, 0, 0u64, 0u64);
    let result: Result<(), CtlError> = async {
        let mut first = true;
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|s| service_error(&s, None, Service::Workload))?
        {
            if first {
                (revision, objects, total) = (chunk.revision, chunk.objects, chunk.total_bytes);
                first = false;
            }
            out.write_all(&chunk.data).map_err(|e| io(e, &partial))?;
            written += chunk.data.len() as u64;
        }
        if written != total {
            return Err(CtlError::BadResponse(format!(
                "the snapshot stream ended after {written} of {total} bytes"
            )));
        }
        out.sync_all().map_err(|e| io(e, &partial))?;
        std::fs::rename(&partial, file).map_err(|e| io(e, file))
    }
    .await;
    if let Err(e) = result {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    note(&format!(
        "snapshot saved to {}: revision {revision}, {objects} objects, {written} bytes",
        file.display()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_arguments() {
        assert_eq!(
            parse_member("2=127.0.0.1:7002").unwrap(),
            (2, "127.0.0.1:7002".to_string())
        );
        for bad in ["2", "0=127.0.0.1:1", "x=127.0.0.1:1", "2=127.0.0.1", "2=:7"] {
            assert!(parse_member(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_id("3").unwrap(), 3);
        assert!(parse_id("0").is_err());
        assert!(parse_id("three").is_err());
    }
}
