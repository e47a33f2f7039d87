//! `shoalctl patch TYPE/NAME -p PATCH [--type merge|json]`: read-modify-write of one
//! object with an RFC 7386 JSON merge patch (the default; kubectl's default, a strategic
//! merge patch, behaves the same except for lists) or an RFC 6902 JSON patch, applied
//! by the `json-patch` crate. The patched object is validated here, then written with
//! its resourceVersion as precondition (re-read and re-patched on a conflict).

use serde_json::Value;
use shoal_api::{Kind, Object};

use super::{Context, one_target, print};
use crate::cli::{PatchArgs, PatchType};
use crate::error::CtlError;
use crate::merge;

/// Runs `patch`.
pub async fn run(ctx: &mut Context, args: PatchArgs) -> Result<(), CtlError> {
    let all: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
    let (kind, name) = one_target(&args.target, &all)?;
    let ns = ctx.namespace_for(&kind);
    // Parse once, before anything is read: a malformed patch is a usage error.
    let patch = parse_patch(&args.patch, args.patch_type)?;
    let changed = ctx
        .modify(&kind, &ns, &name, None, |obj| {
            let patched = apply_patch(obj, &patch, args.patch_type)?;
            if merge::comparable(&patched) == merge::comparable(obj) {
                return Ok(false);
            }
            *obj = patched;
            Ok(true)
        })
        .await?;
    let note = if changed.is_some() {
        ""
    } else {
        " (no change)"
    };
    print(&format!("{} patched{note}\n", kind.slash_name(&name)))
}

/// Reads a patch given as JSON (or YAML): a mapping for `merge`, a list of operations
/// for `json`.
pub fn parse_patch(text: &str, kind: PatchType) -> Result<Value, CtlError> {
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(json_err) => serde_yaml_ng::from_str(text)
            .map_err(|_| CtlError::Usage(format!("--patch is not valid JSON: {json_err}")))?,
    };
    match (kind, &v) {
        (PatchType::Merge, Value::Object(_)) => Ok(v),
        (PatchType::Merge, _) => Err(CtlError::Usage(
            "a merge patch must be a JSON object, e.g. '{\"spec\":{\"replicas\":3}}'".into(),
        )),
        (PatchType::Json, Value::Array(_)) => {
            serde_json::from_value::<json_patch::Patch>(v.clone()).map_err(|e| {
                CtlError::Usage(format!(
                    "invalid JSON patch: {e} (expected a list such as '[{{\"op\":\"replace\",\"path\":\"/spec/replicas\",\"value\":3}}]')"
                ))
            })?;
            Ok(v)
        }
        (PatchType::Json, _) => Err(CtlError::Usage(
            "a JSON patch must be a list of operations, e.g. '[{\"op\":\"remove\",\"path\":\"/metadata/labels/tier\"}]'".into(),
        )),
    }
}

/// The object with the patch applied, checked: it must still be the same object (kind,
/// name, namespace) and valid.
pub fn apply_patch(obj: &Value, patch: &Value, kind: PatchType) -> Result<Value, CtlError> {
    let mut out = obj.clone();
    match kind {
        PatchType::Merge => json_patch::merge(&mut out, patch),
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| CtlError::Usage(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(&mut out, &ops)
                .map_err(|e| CtlError::Usage(format!("the JSON patch does not apply: {e}")))?;
        }
    }
    for (ptr, what) in [
        ("/kind", "kind"),
        ("/metadata/name", "metadata.name"),
        ("/metadata/namespace", "metadata.namespace"),
    ] {
        if out.pointer(ptr) != obj.pointer(ptr) {
            return Err(CtlError::Usage(format!(
                "the patch changes {what}, which identifies the object"
            )));
        }
    }
    let mut o = Object::from_json(&out).map_err(|e| patched_invalid(&e))?;
    o.set_defaults();
    o.validate().map_err(|e| patched_invalid(&e))?;
    Ok(o.to_json())
}

fn patched_invalid(e: &shoal_api::ValidationErrors) -> CtlError {
    CtlError::Manifest(
        e.errors
            .iter()
            .map(|f| format!("the patched object is invalid: {f}"))
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({"apiVersion": "shoal/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web", "tier": "a"},
                            "resourceVersion": "3"},
               "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}},
                                     "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}})
    }

    fn patched(text: &str, kind: PatchType) -> Result<Value, CtlError> {
        apply_patch(&deployment(), &parse_patch(text, kind)?, kind)
    }

    #[test]
    fn merge_patches_set_and_remove() {
        let out = patched(
            r#"{"spec": {"replicas": 5}, "metadata": {"labels": {"tier": null, "x": "y"}}}"#,
            PatchType::Merge,
        )
        .unwrap();
        assert_eq!(out["spec"]["replicas"], 5);
        assert_eq!(out["metadata"]["labels"], json!({"app": "web", "x": "y"}));
        // The resourceVersion read stays: it is the write's precondition.
        assert_eq!(out["metadata"]["resourceVersion"], "3");
        // YAML works too.
        let out = patched("spec: {paused: true}", PatchType::Merge).unwrap();
        assert_eq!(out["spec"]["paused"], true);
    }

    #[test]
    fn json_patches_run_their_operations() {
        let out = patched(
            r#"[{"op": "test", "path": "/spec/replicas", "value": 2},
                {"op": "replace", "path": "/spec/replicas", "value": 4},
                {"op": "add", "path": "/spec/template/spec/containers/-", "value": {"name": "d", "image": "busybox"}},
                {"op": "remove", "path": "/metadata/labels/tier"}]"#,
            PatchType::Json,
        )
        .unwrap();
        assert_eq!(out["spec"]["replicas"], 4);
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][1]["name"],
            "d"
        );
        assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
        let e = patched(
            r#"[{"op": "test", "path": "/spec/replicas", "value": 9}]"#,
            PatchType::Json,
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("the JSON patch does not apply"), "{e}");
    }

    #[test]
    fn bad_patches_are_refused_with_the_reason() {
        let e = patched("[1, 2]", PatchType::Merge).unwrap_err().to_string();
        assert!(e.starts_with("a merge patch must be a JSON object"), "{e}");
        let e = patched(r#"{"op": "add"}"#, PatchType::Json)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("a JSON patch must be a list"), "{e}");
        let e = patched(r#"[{"op": "jump"}]"#, PatchType::Json)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("invalid JSON patch"), "{e}");
        let e = patched(r#"{"metadata": {"name": "other"}}"#, PatchType::Merge)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "the patch changes metadata.name, which identifies the object"
        );
        let e = patched(r#"{"spec": {"replicas": "many"}}"#, PatchType::Merge)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "the patched object is invalid: spec.replicas: expected a non-negative integer, got \"many\""
        );
        let e = patched(r#"{"spec": {"replicaz": 1}}"#, PatchType::Merge)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "the patched object is invalid: spec.replicaz: unknown field `replicaz`, did you mean `replicas`?"
        );
    }
}
