//! `shoalctl label|annotate TYPE NAME KEY=VALUE KEY-`: read-modify-write Update with the
//! object's resourceVersion as precondition; an existing value changes only with
//! `--overwrite`.

use serde_json::{Map, Value};

use super::{Context, finish, note, print};
use crate::cli::LabelArgs;
use crate::error::CtlError;
use crate::kinds::{self, KindInfo};
use crate::labels::{LabelChange, MetaMap, apply_label_changes, parse_meta_args};
use crate::output;

/// How often a label update is retried after a concurrent change of the object.
const ATTEMPTS: usize = 5;

/// Runs `label` (or `annotate`, with `which`).
pub async fn run(ctx: &mut Context, args: LabelArgs, which: MetaMap) -> Result<(), CtlError> {
    let (resources, changes) = parse_meta_args(&args.args, which)?;
    let Some((kind_arg, rest)) = resources.split_first() else {
        return Err(CtlError::Usage(format!(
            "what to {}? use TYPE NAME KEY=VALUE… or TYPE/NAME KEY=VALUE…",
            if which == MetaMap::Labels {
                "label"
            } else {
                "annotate"
            }
        )));
    };
    let (kind, slash_name) = kinds::split_kind_name(kind_arg)?;
    let mut names: Vec<String> = slash_name.into_iter().collect();
    names.extend(rest.iter().cloned());
    let ns = ctx.namespace_for(&kind);
    if let Some(sel) = &args.selector {
        if !names.is_empty() {
            return Err(CtlError::Usage(
                "give object names or -l SELECTOR, not both".into(),
            ));
        }
        shoal_api::selector::LabelSelector::parse(sel)
            .map_err(|e| CtlError::Usage(e.to_string()))?;
        let (items, _) = ctx.list(&kind, &ns, sel, "").await?;
        if items.is_empty() {
            note(&super::get::no_resources(&kind, false, &ns));
            return Ok(());
        }
        names = items
            .iter()
            .map(|v| output::name_of(v).to_string())
            .collect();
    }
    if names.is_empty() {
        return Err(CtlError::Usage(format!(
            "which {}? give a name or -l SELECTOR",
            kind.singular
        )));
    }
    if args.resource_version.is_some() && names.len() > 1 {
        return Err(CtlError::Usage(
            "--resource-version needs exactly one object".into(),
        ));
    }
    let total = names.len();
    let mut failures = Vec::new();
    for name in &names {
        match label_one(ctx, &kind, &ns, name, &changes, &args, which).await {
            Ok(true) => print(&format!("{} {}\n", kind.slash_name(name), which.done()))?,
            Ok(false) => print(&format!("{} not {}\n", kind.slash_name(name), which.done()))?,
            Err(e @ CtlError::Unreachable { .. }) => return Err(e),
            Err(e) => failures.push(e),
        }
    }
    let what = match which {
        MetaMap::Labels => "label updates",
        MetaMap::Annotations => "annotation updates",
    };
    finish(failures, total, what)
}

/// Labels one object; `Ok(false)` when nothing had to change.
async fn label_one(
    ctx: &mut Context,
    kind: &KindInfo,
    ns: &str,
    name: &str,
    changes: &[LabelChange],
    args: &LabelArgs,
    which: MetaMap,
) -> Result<bool, CtlError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut obj = ctx.get(kind, ns, name).await?;
        if let Some(rv) = args.resource_version {
            let current = obj
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("");
            if current != rv.to_string() {
                return Err(CtlError::Conflict(format!(
                    "{} {name:?} is at resourceVersion {current}, not {rv}",
                    kind.singular
                )));
            }
        }
        let meta = obj
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| {
                CtlError::BadResponse(format!("{} {name:?} has no metadata", kind.singular))
            })?;
        let labels = meta
            .entry(which.field())
            .or_insert_with(|| Value::Object(Map::new()));
        if labels.is_null() {
            *labels = Value::Object(Map::new());
        }
        let Some(labels) = labels.as_object_mut() else {
            return Err(CtlError::BadResponse(format!(
                "{} {name:?}: metadata.{} is not a map",
                kind.singular,
                which.field()
            )));
        };
        let outcome = apply_label_changes(labels, changes, args.overwrite)?;
        if attempt == 1 {
            for w in &outcome.warnings {
                note(&format!("warning: {} {w}", which.noun()));
            }
        }
        if !outcome.changed {
            return Ok(false);
        }
        match ctx.update(kind, &obj).await {
            Ok(_) => return Ok(true),
            // Someone else wrote in between: read again and re-check (also --overwrite).
            Err(CtlError::Conflict(_)) if args.resource_version.is_none() && attempt < ATTEMPTS => {
            }
            Err(e) => return Err(e),
        }
    }
}
