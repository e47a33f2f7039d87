//! `shoalctl describe TYPE NAME`: one object in detail, with the events about it.

use chrono::Utc;
use serde_json::Value;

use super::{Context, note, print};
use crate::cli::DescribeArgs;
use crate::error::CtlError;
use crate::kinds;
use crate::output;

/// Runs `describe`.
pub async fn run(ctx: &mut Context, args: DescribeArgs) -> Result<(), CtlError> {
    let (kind, slash_name) = kinds::split_kind_name(&args.kind)?;
    let mut names = args.names.clone();
    if let Some(n) = slash_name {
        names.insert(0, n);
    }
    if args.all_namespaces && ctx.explicit_namespace().is_some() {
        return Err(CtlError::Usage(
            "--all-namespaces (-A) and --namespace (-n) exclude each other".into(),
        ));
    }
    let all_ns = args.all_namespaces && kind.namespaced;
    let ns = if all_ns {
        String::new()
    } else {
        ctx.namespace_for(&kind)
    };
    let objects: Vec<Value> = if names.is_empty() {
        let selector = args.selector.clone().unwrap_or_default();
        let (items, _) = ctx.list(&kind, &ns, &selector, "").await?;
        if items.is_empty() {
            note(&super::get::no_resources(&kind, all_ns, &ns));
            return Ok(());
        }
        items
    } else {
        if args.selector.is_some() || all_ns {
            return Err(CtlError::Usage(
                "give object names or a selector / --all-namespaces, not both".into(),
            ));
        }
        let mut v = Vec::new();
        for n in &names {
            v.push(ctx.get(&kind, &ns, n).await?);
        }
        v
    };
    let event_kind = kinds::resolve("Event")?;
    let endpoints_kind = kinds::resolve("Endpoints")?;
    let mut pages = Vec::new();
    for o in &objects {
        let o_ns = output::namespace_of(o).to_string();
        // Events about a cluster-scoped object may be in any namespace ("" lists all).
        let events: Vec<Value> = match ctx.list(&event_kind, &o_ns, "", "").await {
            Ok((evs, _)) => evs
                .into_iter()
                .filter(|e| involves(e, kind.kind, o))
                .collect(),
            Err(e) => {
                note(&format!("warning: cannot list events: {e}"));
                Vec::new()
            }
        };
        let endpoints = if kind.kind == "Service" {
            ctx.get(&endpoints_kind, &o_ns, output::name_of(o))
                .await
                .ok()
        } else {
            None
        };
        pages.push(output::describe(
            &kind,
            o,
            &events,
            endpoints.as_ref(),
            Utc::now(),
        ));
    }
    print(&pages.join("\n"))
}

/// Whether an event's `involvedObject` is this object (by uid when both have one).
fn involves(event: &Value, kind: &str, object: &Value) -> bool {
    let io = |f: &str| {
        event
            .pointer(&format!("/involvedObject/{f}"))
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    if io("kind") != kind || io("name") != output::name_of(object) {
        return false;
    }
    let ns = output::namespace_of(object);
    if !ns.is_empty() && !io("namespace").is_empty() && io("namespace") != ns {
        return false;
    }
    let uid = object
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("");
    uid.is_empty() || io("uid").is_empty() || io("uid") == uid
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_match_kind_name_namespace_and_uid() {
        let obj = json!({"metadata": {"name": "web", "namespace": "default", "uid": "u1"}});
        let ev = |kind: &str, name: &str, ns: &str, uid: &str| json!({"involvedObject": {"kind": kind, "name": name, "namespace": ns, "uid": uid}});
        assert!(involves(
            &ev("Deployment", "web", "default", "u1"),
            "Deployment",
            &obj
        ));
        assert!(involves(
            &ev("Deployment", "web", "default", ""),
            "Deployment",
            &obj
        ));
        assert!(!involves(
            &ev("Pod", "web", "default", "u1"),
            "Deployment",
            &obj
        ));
        assert!(!involves(
            &ev("Deployment", "web2", "default", "u1"),
            "Deployment",
            &obj
        ));
        assert!(!involves(
            &ev("Deployment", "web", "other", "u1"),
            "Deployment",
            &obj
        ));
        assert!(
            !involves(
                &ev("Deployment", "web", "default", "u0"),
                "Deployment",
                &obj
            ),
            "an older object's events"
        );
    }
}
