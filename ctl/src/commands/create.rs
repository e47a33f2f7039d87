//! `shoalctl create -f …`: creates each object; existing ones are errors.

use super::{Context, finish, print};
use crate::cli::CreateArgs;
use crate::error::{CtlError, Target};
use crate::manifest;

/// Runs `create`.
pub async fn run(ctx: &mut Context, args: CreateArgs) -> Result<(), CtlError> {
    if let Some(what) = args.object {
        return super::create_config::run(ctx, what).await;
    }
    if args.files.is_empty() {
        return Err(CtlError::Usage(
            "create: give -f FILE, or `create secret generic|docker-registry NAME …` or `create configmap NAME …`"
                .into(),
        ));
    }
    let objects = manifest::load(&args.files, &mut std::io::stdin(), ctx.explicit_namespace())?;
    let mut failures = Vec::new();
    for o in &objects {
        let target = Target::new(o.kind.singular, &o.namespace, &o.name);
        match ctx.create(&target, &o.json).await {
            Ok(_) => print(&format!("{} created\n", o.kind.slash_name(&o.name)))?,
            Err(e @ CtlError::Unreachable { .. }) => return Err(e),
            Err(e) => failures.push(e),
        }
    }
    finish(failures, objects.len(), "creations")
}
