//! `shoalctl taint NODE KEY[=VALUE]:EFFECT… KEY[:EFFECT]-…`: adds or removes taints of
//! `spec.taints` as kubectl does (read-modify-write with the node's resourceVersion as
//! precondition). [`parse_taint_args`] and [`apply_taints`] are pure.

use serde_json::{Value, json};

use super::cordon::node_name;
use super::{Context, print};
use crate::cli::TaintArgs;
use crate::error::CtlError;
use crate::kinds;

const EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// One requested change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaintChange {
    /// `KEY[=VALUE]:EFFECT`.
    Add {
        /// Key.
        key: String,
        /// Value ("" when none).
        value: String,
        /// Effect.
        effect: String,
    },
    /// `KEY-` (every effect) or `KEY:EFFECT-`.
    Remove {
        /// Key.
        key: String,
        /// Only this effect.
        effect: Option<String>,
    },
}

fn check_effect(e: &str, arg: &str) -> Result<String, CtlError> {
    if EFFECTS.contains(&e) {
        Ok(e.to_string())
    } else {
        Err(CtlError::Usage(format!(
            "taint {arg:?}: unknown effect {e:?} (expected NoSchedule, PreferNoSchedule or NoExecute)"
        )))
    }
}

/// Parses the taint arguments.
pub fn parse_taint_args(args: &[String]) -> Result<Vec<TaintChange>, CtlError> {
    if args.is_empty() {
        return Err(CtlError::Usage(
            "at least one taint is required (KEY=VALUE:EFFECT, KEY:EFFECT- or KEY-)".into(),
        ));
    }
    args.iter()
        .map(|arg| {
            let check_key = |k: &str| {
                shoal_api::validation::check_label_key(k)
                    .map_err(|m| CtlError::Usage(format!("taint {arg:?}: {m}")))
            };
            if let Some(rest) = arg.strip_suffix('-') {
                let (key, effect) = match rest.split_once(':') {
                    Some((k, e)) => (k, Some(check_effect(e, arg)?)),
                    None => (rest, None),
                };
                check_key(key)?;
                return Ok(TaintChange::Remove {
                    key: key.to_string(),
                    effect,
                });
            }
            let (kv, effect) = arg.rsplit_once(':').ok_or_else(|| {
                CtlError::Usage(format!(
                    "taint {arg:?}: expected KEY[=VALUE]:EFFECT, KEY:EFFECT- or KEY-"
                ))
            })?;
            let effect = check_effect(effect, arg)?;
            let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
            check_key(key)?;
            shoal_api::validation::check_label_value(value)
                .map_err(|m| CtlError::Usage(format!("taint {arg:?}: {m}")))?;
            Ok(TaintChange::Add {
                key: key.to_string(),
                value: value.to_string(),
                effect,
            })
        })
        .collect()
}

/// Applies `changes` to a node object's `spec.taints`; `Ok(false)` when nothing changed.
/// A taint with the same key and effect but another value is replaced only with
/// `overwrite`; removing a taint the node does not have is an error, as in kubectl.
pub fn apply_taints(
    node: &mut Value,
    changes: &[TaintChange],
    overwrite: bool,
) -> Result<bool, CtlError> {
    let spec = node
        .as_object_mut()
        .ok_or_else(|| CtlError::BadResponse("the node is not an object".into()))?
        .entry("spec")
        .or_insert_with(|| json!({}));
    let spec = spec
        .as_object_mut()
        .ok_or_else(|| CtlError::BadResponse("the node's spec is not an object".into()))?;
    let mut taints: Vec<Value> = spec
        .get("taints")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let field = |t: &Value, f: &str| t.get(f).and_then(Value::as_str).unwrap_or("").to_string();
    let mut changed = false;
    for c in changes {
        match c {
            TaintChange::Add { key, value, effect } => {
                let same = taints
                    .iter()
                    .position(|t| field(t, "key") == *key && field(t, "effect") == *effect);
                let new = if value.is_empty() {
                    json!({"key": key, "effect": effect})
                } else {
                    json!({"key": key, "value": value, "effect": effect})
                };
                match same {
                    Some(i) if field(&taints[i], "value") == *value => {}
                    Some(i) if overwrite => {
                        taints[i] = new;
                        changed = true;
                    }
                    Some(i) => {
                        return Err(CtlError::Usage(format!(
                            "node already has a taint {key}={}:{effect}, and --overwrite is false",
                            field(&taints[i], "value")
                        )));
                    }
                    None => {
                        taints.push(new);
                        changed = true;
                    }
                }
            }
            TaintChange::Remove { key, effect } => {
                let before = taints.len();
                taints.retain(|t| {
                    !(field(t, "key") == *key
                        && effect.as_ref().is_none_or(|e| field(t, "effect") == *e))
                });
                if taints.len() == before {
                    return Err(CtlError::NotFound(format!(
                        "taint {key}{} not found",
                        effect.as_ref().map(|e| format!(":{e}")).unwrap_or_default()
                    )));
                }
                changed = true;
            }
        }
    }
    if changed {
        if taints.is_empty() {
            spec.remove("taints");
        } else {
            spec.insert("taints".into(), Value::Array(taints));
        }
    }
    Ok(changed)
}

/// Runs `taint`.
pub async fn run(ctx: &mut Context, args: TaintArgs) -> Result<(), CtlError> {
    // `taint node NAME …` (kubectl's TYPE NAME form) as well as `taint NAME` / `node/NAME`.
    let (node, taints) = match args.node.as_str() {
        "node" | "nodes" | "no" => match args.taints.split_first() {
            Some((n, rest)) => (n.clone(), rest.to_vec()),
            None => (args.node.clone(), Vec::new()),
        },
        _ => (args.node.clone(), args.taints.clone()),
    };
    let name = node_name(&node)?;
    let changes = parse_taint_args(&taints)?;
    let kind = kinds::of_kind(shoal_api::Kind::Node);
    let written = ctx
        .modify(&kind, "", &name, None, |obj| {
            apply_taints(obj, &changes, args.overwrite)
        })
        .await?;
    let verb = if written.is_some() {
        "tainted"
    } else {
        "not tainted (unchanged)"
    };
    print(&format!("{} {verb}\n", kind.slash_name(&name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn taints_are_added_replaced_and_removed() {
        let mut node = json!({"metadata": {"name": "n1"}, "spec": {}});
        let add = parse_taint_args(&args(&["gpu=yes:NoSchedule", "maint:NoExecute"])).unwrap();
        assert!(apply_taints(&mut node, &add, false).unwrap());
        assert_eq!(
            node["spec"]["taints"],
            json!([{"key": "gpu", "value": "yes", "effect": "NoSchedule"},
                   {"key": "maint", "effect": "NoExecute"}])
        );
        // Again: nothing changes.
        assert!(!apply_taints(&mut node, &add, false).unwrap());
        let other = parse_taint_args(&args(&["gpu=no:NoSchedule"])).unwrap();
        let e = apply_taints(&mut node, &other, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--overwrite"), "{e}");
        assert!(apply_taints(&mut node, &other, true).unwrap());
        assert_eq!(node["spec"]["taints"][0]["value"], "no");
        let rm = parse_taint_args(&args(&["gpu-", "maint:NoExecute-"])).unwrap();
        assert!(apply_taints(&mut node, &rm, false).unwrap());
        assert!(node["spec"].get("taints").is_none());
        let e = apply_taints(&mut node, &rm, false).unwrap_err().to_string();
        assert!(e.contains("taint gpu not found"), "{e}");
    }

    #[test]
    fn bad_taints_are_clear_errors() {
        for (a, want) in [
            ("gpu=yes", "expected KEY[=VALUE]:EFFECT"),
            ("gpu=yes:Sometimes", "unknown effect \"Sometimes\""),
            ("gpu:Never-", "unknown effect"),
            ("bad key:NoSchedule", "bad key"),
        ] {
            let e = parse_taint_args(&args(&[a])).unwrap_err().to_string();
            assert!(e.contains(want), "{a}: {e}");
        }
        assert!(parse_taint_args(&[]).is_err());
    }
}
