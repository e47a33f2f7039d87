//! `shoalctl version`.

use shoal_proto::ClusterStatusRequest;

use super::{Context, print};
use crate::error::{CtlError, status_error};

/// Runs `version`: the client's version, the version of the controller that answers
/// (unless `client_only`) and the API they speak. An unreachable controller is an error
/// after the client's line.
pub async fn run(ctx: &mut Context, client_only: bool) -> Result<(), CtlError> {
    print(&format!(
        "Client Version: v{}\n",
        shoal_observe::version::LINE
    ))?;
    if !client_only {
        let status = ctx
            .conn()
            .await?
            .call(|mut c| async move { c.status(ClusterStatusRequest {}).await })
            .await
            .map_err(|s| status_error(&s, None))?;
        let v = if status.server_version.is_empty() {
            "unknown (a controller older than shoalctl)".to_string()
        } else {
            format!("v{}", status.server_version)
        };
        print(&format!(
            "Server Version: {v} (controller {})\n",
            status.answered_by
        ))?;
    }
    print("API: shoal/v1 (gRPC shoal.v1.Cluster)\n")
}
