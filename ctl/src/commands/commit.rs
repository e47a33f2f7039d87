//! `shoalctl commit POD [-c CONTAINER] [--change LINE]… NAME[:TAG]`: the controllers'
//! `Proxy.Commit`. The pod's node makes an image of the container's writable layer on top
//! of the container's image (its config changed by the `--change` lines) and the
//! controller stores it in the cluster's image store (docs/build.md).

use shoal_proto::CommitRequest;
use shoal_proto::proxy_client::ProxyClient;

use super::{Context, pod_name};
use crate::cli::CommitArgs;
use crate::error::{CtlError, Service, Target, service_error};

/// Runs `commit`.
pub async fn run(ctx: &mut Context, args: CommitArgs) -> Result<(), CtlError> {
    let pod = pod_name(&args.pod)?;
    for c in &args.changes {
        shoal_build::config::parse_change(c).map_err(|e| CtlError::Usage(e.to_string()))?;
    }
    shoal_image::normalize_reference(&args.name)
        .map_err(|e| CtlError::Usage(format!("{}: {e}", args.name)))?;
    let namespace = ctx.namespace().to_string();
    let target = Target::new("pod", &namespace, &pod);
    let req = CommitRequest {
        namespace,
        pod,
        container: args.container.clone().unwrap_or_default(),
        name: args.name.clone(),
        changes: args.changes.clone(),
    };
    let channel = ctx.conn().await?.channel_without_deadline().await?;
    let output = ProxyClient::new(channel)
        .commit(req)
        .await
        .map_err(|s| service_error(&s, Some(&target), Service::Workload))?
        .into_inner();
    let r = super::build::follow(output, false).await?;
    println!("{} ({}) committed on node {}", r.name, r.digest, r.node);
    Ok(())
}
