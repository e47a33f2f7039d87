//! `shoalctl delete`: by TYPE NAME…, TYPE/NAME, `-l SELECTOR`, `--all` or `-f FILE`.

use super::{Context, finish, note, print};
use crate::cli::DeleteArgs;
use crate::error::CtlError;
use crate::kinds::{self, KindInfo};
use crate::{manifest, output};

/// Runs `delete`.
pub async fn run(ctx: &mut Context, args: DeleteArgs) -> Result<(), CtlError> {
    let targets = targets(ctx, &args).await?;
    let Some(targets) = targets else {
        return Ok(());
    };
    let total = targets.len();
    let mut failures = Vec::new();
    for (kind, ns, name) in targets {
        match ctx.delete(&kind, &ns, &name).await {
            Ok(()) => print(&format!("{} {name:?} deleted\n", kind.singular))?,
            Err(CtlError::NotFound(_)) if args.ignore_not_found => {}
            Err(e @ CtlError::Unreachable { .. }) => return Err(e),
            Err(e) => failures.push(e),
        }
    }
    finish(failures, total, "deletions")
}

/// The objects to delete; `None` when a selector matched nothing (already reported).
async fn targets(
    ctx: &mut Context,
    args: &DeleteArgs,
) -> Result<Option<Vec<(KindInfo, String, String)>>, CtlError> {
    if !args.files.is_empty() {
        if args.kind.is_some() || args.selector.is_some() || args.all {
            return Err(CtlError::Usage(
                "give either -f FILE or TYPE NAME / -l / --all, not both".into(),
            ));
        }
        let objects = manifest::load(&args.files, &mut std::io::stdin(), ctx.explicit_namespace())?;
        return Ok(Some(
            objects
                .into_iter()
                .map(|o| (o.kind, o.namespace, o.name))
                .collect(),
        ));
    }
    let Some(kind_arg) = &args.kind else {
        return Err(CtlError::Usage(
            "what to delete? use TYPE NAME, TYPE/NAME, TYPE -l SELECTOR, TYPE --all or -f FILE"
                .into(),
        ));
    };
    let (kind, slash_name) = kinds::split_kind_name(kind_arg)?;
    let mut names = args.names.clone();
    if let Some(n) = slash_name {
        names.insert(0, n);
    }
    let ns = ctx.namespace_for(&kind);
    match (names.is_empty(), args.selector.as_deref(), args.all) {
        (false, None, false) => Ok(Some(
            names.into_iter().map(|n| (kind, ns.clone(), n)).collect(),
        )),
        (true, Some(_), false) | (true, None, true) => {
            let selector = args.selector.clone().unwrap_or_default();
            if !selector.is_empty() {
                shoal_api::selector::LabelSelector::parse(&selector)
                    .map_err(|e| CtlError::Usage(e.to_string()))?;
            }
            let (items, _) = ctx.list(&kind, &ns, &selector, "").await?;
            if items.is_empty() {
                note(&super::get::no_resources(&kind, false, &ns));
                return Ok(None);
            }
            Ok(Some(
                items
                    .iter()
                    .map(|v| {
                        (
                            kind,
                            output::namespace_of(v).to_string(),
                            output::name_of(v).to_string(),
                        )
                    })
                    .collect(),
            ))
        }
        (true, None, false) => Err(CtlError::Usage(format!(
            "which {}? give names, -l SELECTOR or --all",
            kind.plural
        ))),
        _ => Err(CtlError::Usage(
            "give names, -l SELECTOR or --all, only one of them".into(),
        )),
    }
}
