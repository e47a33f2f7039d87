//! `shoalctl top pods|nodes`: the controllers' `Proxy.Stats` (every node's agent), printed
//! like kubectl's top tables.

use shoal_proto::StatsRequest;
use shoal_proto::proxy_client::ProxyClient;

use super::{Context, note, print};
use crate::cli::TopCommand;
use crate::error::{CtlError, Service, service_error};
use crate::output;

/// Runs `top …`.
pub async fn run(ctx: &mut Context, command: TopCommand) -> Result<(), CtlError> {
    let node = match &command {
        TopCommand::Nodes { name: Some(n) } => n.clone(),
        _ => String::new(),
    };
    let resp = ctx
        .conn()
        .await?
        .call_on(|ch| {
            let r = StatsRequest { node: node.clone() };
            async move { ProxyClient::new(ch).stats(r).await }
        })
        .await
        .map_err(|s| service_error(&s, None, Service::Workload))?;
    for n in resp.nodes.iter().filter(|n| !n.error.is_empty()) {
        note(&format!(
            "warning: no metrics from node {:?}: {}",
            n.node, n.error
        ));
    }
    let table = match command {
        TopCommand::Pods {
            all_namespaces,
            name,
        } => {
            if all_namespaces && ctx.explicit_namespace().is_some() {
                return Err(CtlError::Usage(
                    "--all-namespaces (-A) and --namespace (-n) exclude each other".into(),
                ));
            }
            let ns = (!all_namespaces).then(|| ctx.namespace().to_string());
            let t = output::top_pods_table(&resp.nodes, ns.as_deref(), name.as_deref());
            if t.rows.is_empty() {
                return match (name, ns) {
                    (Some(p), ns) => Err(CtlError::NotFound(format!(
                        "no metrics for pod {p:?} in namespace {:?}",
                        ns.unwrap_or_default()
                    ))),
                    (None, Some(ns)) => {
                        note(&format!("No resources found in {ns} namespace."));
                        Ok(())
                    }
                    (None, None) => {
                        note("No resources found");
                        Ok(())
                    }
                };
            }
            t
        }
        TopCommand::Nodes { name } => {
            let t = output::top_nodes_table(&resp.nodes, name.as_deref());
            if t.rows.is_empty() {
                note("No resources found");
                return Ok(());
            }
            t
        }
    };
    print(&table.render(false))
}
