//! `shoalctl cluster status`: the controllers' Raft membership and health.

use shoal_proto::ClusterStatusRequest;

use super::{Context, print};
use crate::cli::ClusterCommand;
use crate::error::{CtlError, status_error};
use crate::output::{self, Format};

/// Runs `cluster …`.
pub async fn run(ctx: &mut Context, command: ClusterCommand) -> Result<(), CtlError> {
    let ClusterCommand::Status { output: fmt } = command;
    let format: Format = fmt.as_deref().unwrap_or("").parse()?;
    let status = ctx
        .conn()
        .await?
        .call(|mut c| async move { c.status(ClusterStatusRequest {}).await })
        .await
        .map_err(|s| status_error(&s, None))?;
    match format {
        Format::Table | Format::Wide => print(&output::cluster_status(&status)),
        Format::Json => print(&output::to_json(&output::cluster_status_json(&status))),
        Format::Yaml => print(&output::to_yaml(&output::cluster_status_json(&status))?),
        Format::Name => Err(CtlError::Usage(
            "cluster status supports -o json or yaml".into(),
        )),
    }
}
