//! `shoalctl scale deployment NAME --replicas N`: read-modify-write Update of
//! `spec.replicas` with the object's resourceVersion as precondition.

use serde_json::{Value, json};

use super::{Context, one_target, print};
use crate::cli::ScaleArgs;
use crate::error::CtlError;

/// Runs `scale`.
pub async fn run(ctx: &mut Context, args: ScaleArgs) -> Result<(), CtlError> {
    let (kind, name) = one_target(&args.target, &["Deployment"])?;
    let ns = ctx.namespace_for(&kind);
    let replicas = args.replicas;
    let changed = ctx
        .modify(&kind, &ns, &name, args.resource_version, |obj| {
            set_replicas(obj, replicas)
        })
        .await?;
    let what = if changed.is_some() {
        "scaled"
    } else {
        "unchanged"
    };
    print(&format!("{} {what}\n", kind.slash_name(&name)))
}

/// Sets `spec.replicas`; `false` when it already has that value.
pub fn set_replicas(obj: &mut Value, replicas: u32) -> Result<bool, CtlError> {
    let spec = obj
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| CtlError::BadResponse("the deployment has no spec".into()))?;
    if spec.get("replicas").and_then(Value::as_u64) == Some(u64::from(replicas)) {
        return Ok(false);
    }
    spec.insert("replicas".into(), json!(replicas));
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_are_set_once() {
        let mut d = json!({"spec": {"replicas": 1}});
        assert!(set_replicas(&mut d, 5).unwrap());
        assert_eq!(d["spec"]["replicas"], 5);
        assert!(!set_replicas(&mut d, 5).unwrap());
        assert!(set_replicas(&mut json!({}), 1).is_err());
    }
}
