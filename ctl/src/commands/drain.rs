//! `shoalctl drain NODE`: cordon, then delete the pods bound to the node (field selector
//! `spec.nodeName=NODE`) and wait until they are gone. Which pods go, stay or block the
//! drain is decided by [`plan`], a pure function with kubectl's rules.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Context, note, print};
use crate::cli::DrainArgs;
use crate::error::CtlError;
use crate::kinds;
use crate::output;

/// A pod as the drain plan sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Uid (to tell a deleted pod from a new one with the same name).
    pub uid: String,
}

impl PodRef {
    fn of(v: &Value) -> PodRef {
        PodRef {
            namespace: output::namespace_of(v).to_string(),
            name: output::name_of(v).to_string(),
            uid: v
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        }
    }

    fn path(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// What to do with the pods bound to a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainPlan {
    /// Pods to delete.
    pub delete: Vec<PodRef>,
    /// Pods left alone, with the reason (daemon pods with --ignore-daemonsets, pods already
    /// being deleted — those are still waited for).
    pub skip: Vec<(PodRef, String)>,
    /// Pods that block the drain, with the flag that would allow it.
    pub refuse: Vec<(PodRef, String)>,
    /// Warnings to print (pods deleted only because of --force).
    pub warnings: Vec<String>,
}

/// Decides, for the pods bound to a node: finished pods are deleted; pods already being
/// deleted are skipped (and waited for); pods whose controller owner is a DaemonSet are
/// refused unless `ignore_daemonsets` (then skipped); pods without a controller owner are
/// refused unless `force` (then deleted with a warning: nothing recreates them).
pub fn plan(pods: &[Value], ignore_daemonsets: bool, force: bool) -> DrainPlan {
    let mut p = DrainPlan::default();
    for pod in pods {
        let r = PodRef::of(pod);
        if pod
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|t| !t.is_null())
        {
            p.skip.push((r, "already being deleted".into()));
            continue;
        }
        let phase = pod
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("");
        if matches!(phase, "Succeeded" | "Failed") {
            p.delete.push(r);
            continue;
        }
        let controller = pod
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .and_then(|o| {
                o.iter()
                    .find(|o| o.get("controller").and_then(Value::as_bool) == Some(true))
            });
        match controller
            .and_then(|o| o.get("kind"))
            .and_then(Value::as_str)
        {
            Some("DaemonSet") if ignore_daemonsets => {
                p.skip.push((r, "daemon pod (--ignore-daemonsets)".into()));
            }
            Some("DaemonSet") => {
                p.refuse
                    .push((r, "managed by a DaemonSet (use --ignore-daemonsets)".into()));
            }
            Some(_) => p.delete.push(r),
            None if force => {
                p.warnings.push(format!(
                    "deleting pod {} that no controller owns (it will not be recreated)",
                    r.path()
                ));
                p.delete.push(r);
            }
            None => p
                .refuse
                .push((r, "not managed by a controller (use --force)".into())),
        }
    }
    p
}

/// Runs `drain`.
pub async fn run(ctx: &mut Context, args: DrainArgs) -> Result<(), CtlError> {
    let node = super::cordon::node_name(&args.node)?;
    let node_kind = kinds::of_kind(shoal_api::Kind::Node);
    let pod_kind = kinds::of_kind(shoal_api::Kind::Pod);
    // The node must exist (a typo would otherwise "drain" nothing).
    ctx.get(&node_kind, "", &node).await?;
    let fields = format!("spec.nodeName={node}");
    if args.dry_run {
        let (pods, _) = ctx.list(&pod_kind, "", "", &fields).await?;
        let p = plan(&pods, args.ignore_daemonsets, args.force);
        print(&format!(
            "{} cordoned (dry run)\n",
            node_kind.slash_name(&node)
        ))?;
        for (r, why) in &p.refuse {
            note(&format!("error: cannot delete pod {}: {why}", r.path()));
        }
        for r in &p.delete {
            print(&format!("deleting pod {} (dry run)\n", r.path()))?;
        }
        return Ok(());
    }
    if super::cordon::set_unschedulable(ctx, &node_kind, &node, true).await? {
        print(&format!("{} cordoned\n", node_kind.slash_name(&node)))?;
    } else {
        print(&format!(
            "{} already cordoned\n",
            node_kind.slash_name(&node)
        ))?;
    }
    let (pods, _) = ctx.list(&pod_kind, "", "", &fields).await?;
    let p = plan(&pods, args.ignore_daemonsets, args.force);
    if !p.refuse.is_empty() {
        let list = p
            .refuse
            .iter()
            .map(|(r, why)| format!("{} ({why})", r.path()))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(CtlError::NotPossible(format!(
            "cannot drain node {node:?}: {} pod(s) cannot be deleted: {list}; the node stays cordoned",
            p.refuse.len()
        )));
    }
    for w in &p.warnings {
        note(&format!("warning: {w}"));
    }
    for (r, why) in &p.skip {
        note(&format!("ignoring pod {}: {why}", r.path()));
    }
    for r in &p.delete {
        match ctx.delete(&pod_kind, &r.namespace, &r.name).await {
            Ok(()) | Err(CtlError::NotFound(_)) => {
                print(&format!("pod/{} deleted\n", r.name))?;
            }
            Err(e) => return Err(e),
        }
    }
    // Wait until no deleted (or already terminating) pod is bound to the node any more.
    let mut waiting: Vec<PodRef> = p.delete.clone();
    waiting.extend(
        p.skip
            .iter()
            .filter(|(_, why)| why.starts_with("already"))
            .map(|(r, _)| r.clone()),
    );
    let deadline = args.timeout.map(|t| Instant::now() + t);
    loop {
        let (now, _) = ctx.list(&pod_kind, "", "", &fields).await?;
        let left: Vec<&PodRef> = waiting
            .iter()
            .filter(|w| now.iter().any(|v| PodRef::of(v).uid == w.uid))
            .collect();
        if left.is_empty() {
            break;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(CtlError::WaitTimeout(format!(
                "timed out waiting for {} pod(s) to leave node {node:?}: {}",
                left.len(),
                left.iter().map(|r| r.path()).collect::<Vec<_>>().join(", ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    print(&format!("{} drained\n", node_kind.slash_name(&node)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, owner: Option<&str>, phase: &str) -> Value {
        let mut p = json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}")},
            "spec": {"nodeName": "n1"},
            "status": {"phase": phase}
        });
        if let Some(kind) = owner {
            p["metadata"]["ownerReferences"] =
                json!([{"kind": kind, "name": "o", "uid": "x", "controller": true}]);
        }
        p
    }

    fn names(v: &[PodRef]) -> Vec<&str> {
        v.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn drain_plan_follows_kubectl_rules() {
        let mut terminating = pod("going", Some("Deployment"), "Running");
        terminating["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        let mut not_controller = pod("loose", None, "Running");
        not_controller["metadata"]["ownerReferences"] =
            json!([{"kind": "Deployment", "name": "o", "uid": "x"}]);
        let pods = vec![
            pod("web-1", Some("Deployment"), "Running"),
            pod("bare", None, "Running"),
            pod("done", None, "Succeeded"),
            pod("ds", Some("DaemonSet"), "Running"),
            terminating,
            not_controller,
        ];
        let p = plan(&pods, false, false);
        assert_eq!(names(&p.delete), ["web-1", "done"]);
        assert_eq!(
            p.refuse
                .iter()
                .map(|(r, w)| format!("{}: {w}", r.name))
                .collect::<Vec<_>>(),
            [
                "bare: not managed by a controller (use --force)",
                "ds: managed by a DaemonSet (use --ignore-daemonsets)",
                "loose: not managed by a controller (use --force)",
            ]
        );
        assert_eq!(p.skip.len(), 1);
        assert_eq!(p.skip[0].0.name, "going");
        assert!(p.warnings.is_empty());

        let p = plan(&pods, true, true);
        assert_eq!(names(&p.delete), ["web-1", "bare", "done", "loose"]);
        assert!(p.refuse.is_empty());
        assert_eq!(
            p.skip
                .iter()
                .map(|(r, _)| r.name.as_str())
                .collect::<Vec<_>>(),
            ["ds", "going"]
        );
        assert_eq!(p.warnings.len(), 2);
        assert!(p.warnings[0].contains("default/bare"));
        assert_eq!(plan(&[], false, false), DrainPlan::default());
    }
}
