//! `shoalctl cordon NODE` / `uncordon NODE`: sets `spec.unschedulable` (read-modify-write
//! with the node's resourceVersion as precondition).

use serde_json::{Value, json};

use super::{Context, print};
use crate::cli::NodeArgs;
use crate::error::CtlError;
use crate::kinds::{self, KindInfo};

/// Runs `cordon` (`unschedulable` true) or `uncordon` (false).
pub async fn run(ctx: &mut Context, args: NodeArgs, unschedulable: bool) -> Result<(), CtlError> {
    let name = node_name(&args.node)?;
    let kind = kinds::of_kind(shoal_api::Kind::Node);
    let changed = set_unschedulable(ctx, &kind, &name, unschedulable).await?;
    let verb = match (unschedulable, changed) {
        (true, true) => "cordoned",
        (false, true) => "uncordoned",
        (true, false) => "already cordoned",
        (false, false) => "already uncordoned",
    };
    print(&format!("{} {verb}\n", kind.slash_name(&name)))
}

/// Reads a node argument: `NAME` or `node/NAME`.
pub fn node_name(arg: &str) -> Result<String, CtlError> {
    match kinds::split_kind_name(arg) {
        Ok((k, Some(n))) if k.kind == "Node" => Ok(n),
        _ if !arg.contains('/') => Ok(arg.to_string()),
        _ => Err(CtlError::Usage(format!(
            "{arg:?}: expected a node name or node/NAME"
        ))),
    }
}

/// Writes `spec.unschedulable`; `false` when it already had that value.
pub async fn set_unschedulable(
    ctx: &mut Context,
    kind: &KindInfo,
    name: &str,
    unschedulable: bool,
) -> Result<bool, CtlError> {
    let written = ctx
        .modify(kind, "", name, None, |obj| mark(obj, unschedulable))
        .await?;
    Ok(written.is_some())
}

/// Sets or clears `spec.unschedulable` (cleared means the field is removed, as kubectl does).
pub fn mark(obj: &mut Value, unschedulable: bool) -> Result<bool, CtlError> {
    let current = obj
        .pointer("/spec/unschedulable")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if current == unschedulable {
        return Ok(false);
    }
    let root = obj
        .as_object_mut()
        .ok_or_else(|| CtlError::BadResponse("the node is not an object".into()))?;
    let spec = root.entry("spec").or_insert_with(|| json!({}));
    let spec = spec
        .as_object_mut()
        .ok_or_else(|| CtlError::BadResponse("the node's spec is not a map".into()))?;
    if unschedulable {
        spec.insert("unschedulable".into(), json!(true));
    } else {
        spec.remove("unschedulable");
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_and_clears() {
        let mut n = json!({"metadata": {"name": "n1"}});
        assert!(mark(&mut n, true).unwrap());
        assert_eq!(n["spec"]["unschedulable"], true);
        assert!(!mark(&mut n, true).unwrap());
        assert!(mark(&mut n, false).unwrap());
        assert!(n["spec"].get("unschedulable").is_none());
        assert!(!mark(&mut n, false).unwrap());
    }

    #[test]
    fn node_arguments() {
        assert_eq!(node_name("n1").unwrap(), "n1");
        assert_eq!(node_name("node/n1").unwrap(), "n1");
        assert_eq!(node_name("no/n1").unwrap(), "n1");
        assert!(node_name("pod/n1").is_err());
    }
}
