//! `shoalctl apply -f …`: every object of the manifests in one atomic Apply request.

use shoal_proto::ApplyRequest;

use super::{Context, print};
use crate::cli::ApplyArgs;
use crate::error::{CtlError, status_error};
use crate::{kinds, manifest};

/// Runs `apply`.
pub async fn run(ctx: &mut Context, args: ApplyArgs) -> Result<(), CtlError> {
    let objects = manifest::load(&args.files, &mut std::io::stdin(), ctx.explicit_namespace())?;
    let req = ApplyRequest {
        objects_json: objects.iter().map(|o| o.json.to_string()).collect(),
        dry_run: args.dry_run,
    };
    let resp = ctx
        .conn()
        .await?
        .call(|mut c| {
            let r = req.clone();
            async move { c.apply(r).await }
        })
        .await
        .map_err(|s| status_error(&s, None))?;
    let suffix = if args.dry_run { " (dry run)" } else { "" };
    let mut text = String::new();
    for r in &resp.results {
        let shown = kinds::resolve(&r.kind)
            .map(|k| k.slash_name(&r.name))
            .unwrap_or_else(|_| format!("{}/{}", r.kind.to_lowercase(), r.name));
        text.push_str(&format!("{shown} {}{suffix}\n", r.action));
    }
    print(&text)
}
