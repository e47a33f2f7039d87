//! `shoalctl diff -f …`: what `apply -f` would change, as a unified diff of each live
//! object against the object apply would write. The objects are merged as `apply`
//! merges them, then sent as a server dry run, so the "after" side is what the
//! controller would store (validated and admitted, addresses assigned). Server metadata
//! and status are left out of both sides.
//!
//! Exit codes, like kubectl's: 0 no differences, 1 differences, 2 an error.

use serde_json::Value;
use shoal_api::Object;

use super::apply::merge_and_send;
use super::{Context, print};
use crate::cli::DiffArgs;
use crate::error::CtlError;
use crate::{manifest, merge};

/// Runs `diff`: differences end in [`CtlError::Differences`] (exit 1), failures in
/// [`CtlError::DiffFailed`] (exit 2).
pub async fn run(ctx: &mut Context, args: DiffArgs) -> Result<(), CtlError> {
    let text = diff_text(ctx, &args)
        .await
        .map_err(|e| CtlError::DiffFailed(Box::new(e)))?;
    if text.is_empty() {
        return Ok(());
    }
    print(&text).map_err(|e| CtlError::DiffFailed(Box::new(e)))?;
    Err(CtlError::Differences)
}

async fn diff_text(ctx: &mut Context, args: &DiffArgs) -> Result<String, CtlError> {
    let objects = manifest::load(&args.files, &mut std::io::stdin(), ctx.explicit_namespace())?;
    let (live, results) = merge_and_send(ctx, &objects, true).await?;
    let mut out = String::new();
    for ((o, l), r) in objects.iter().zip(&live).zip(&results) {
        let after: Value = serde_json::from_str(&r.object_json).map_err(|e| {
            CtlError::BadResponse(format!("dry run of {} {}: {e}", o.kind.kind, o.name))
        })?;
        let label = format!(
            "{}{}.{}",
            o.kind.kind,
            if o.namespace.is_empty() {
                String::new()
            } else {
                format!(".{}", o.namespace)
            },
            o.name
        );
        if let Some(d) = object_diff(&label, l.as_ref(), &after) {
            out.push_str(&d);
        }
    }
    Ok(out)
}

/// The unified diff (3 lines of context) of `live` (None: the object does not exist)
/// against `after`, both as YAML without server metadata and status, under the headers
/// `LIVE/label` and `MERGED/label`; None when they are the same.
pub fn object_diff(label: &str, live: Option<&Value>, after: &Value) -> Option<String> {
    let before = live.map(yaml_of).unwrap_or_default();
    let after = yaml_of(after);
    if before == after {
        return None;
    }
    let diff = similar::TextDiff::from_lines(&before, &after);
    let mut text = diff
        .unified_diff()
        .context_radius(3)
        .header(&format!("LIVE/{label}"), &format!("MERGED/{label}"))
        .to_string();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Some(text)
}

/// An object as YAML in its fields' declared order, without server metadata and status.
fn yaml_of(v: &Value) -> String {
    let v = merge::comparable(v);
    match Object::from_json(&v) {
        Ok(o) => o.to_yaml_string(),
        Err(_) => serde_yaml_ng::to_string(&v).unwrap_or_else(|e| format!("# {e}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(image: &str) -> Value {
        json!({"apiVersion": "shoal/v1", "kind": "Pod",
               "metadata": {"name": "p", "namespace": "default", "resourceVersion": "4", "uid": "u"},
               "spec": {"containers": [{"name": "c", "image": image}]},
               "status": {"phase": "Running"}})
    }

    #[test]
    fn a_change_is_a_unified_diff_of_the_yaml() {
        let d = object_diff("Pod.default.p", Some(&pod("busybox:1")), &pod("busybox:2")).unwrap();
        assert!(
            d.starts_with("--- LIVE/Pod.default.p\n+++ MERGED/Pod.default.p\n@@ "),
            "{d}"
        );
        assert!(
            d.contains("\n-    image: busybox:1\n+    image: busybox:2\n"),
            "{d}"
        );
        // Server metadata and status are not part of it.
        assert!(
            !d.contains("resourceVersion") && !d.contains("Running"),
            "{d}"
        );
    }

    #[test]
    fn same_objects_have_no_diff_and_new_ones_are_all_added() {
        let mut other_rv = pod("busybox:1");
        other_rv["metadata"]["resourceVersion"] = json!("9");
        assert_eq!(object_diff("p", Some(&pod("busybox:1")), &other_rv), None);
        let d = object_diff("p", None, &pod("busybox:1")).unwrap();
        assert!(d.contains("+kind: Pod\n"), "{d}");
        assert!(
            !d.lines()
                .any(|l| l.starts_with('-') && !l.starts_with("---")),
            "{d}"
        );
    }
}
