//! `shoalctl apply -f …`: each object of the manifests merged client-side with its live
//! object and the last-applied configuration ([`crate::merge`]), like kubectl's
//! client-side apply.
//!
//! The live objects are read first (one List per kind and namespace, or a Get each for a
//! few). The merged set then goes to the controller once as a server-side dry run: an
//! object it refuses (validation, access, admission, a service address outside the CIDR)
//! stops the whole apply before anything is written, as it did when apply was one atomic
//! request. The objects that do not exist yet are then created with one CreateMany
//! request, each on its own (one that fails only now — created by someone else meanwhile,
//! or refused because the cluster changed since the dry run — fails alone, with its own
//! error line); the existing ones are written in one atomic Apply request. Each merged object carries the live
//! `resourceVersion`, so that Apply fails (ABORTED) if any object changed after it was
//! read; then what is left is read and merged again (up to [`APPLY_ATTEMPTS`] times), as
//! is an object someone else created between the read and the CreateMany. Dry runs send
//! everything in one Apply with `dry_run` (nothing is written).

use std::collections::BTreeMap;

use serde_json::Value;
use shoal_proto::{ApplyRequest, ApplyResult};

use super::{Context, note, print};
use crate::cli::{ApplyArgs, DryRun};
use crate::error::{CtlError, status_error};
use crate::manifest::ManifestObject;
use crate::{kinds, manifest, merge};

/// How many times the read-merge-write runs when objects change under it.
const APPLY_ATTEMPTS: usize = 5;

/// Groups of at most this many objects of one kind and namespace are read one by one;
/// larger ones with one List.
const GET_EACH_MAX: usize = 8;

/// Runs `apply`.
pub async fn run(ctx: &mut Context, args: ApplyArgs) -> Result<(), CtlError> {
    let objects = manifest::load(&args.files, &mut std::io::stdin(), ctx.explicit_namespace())?;
    let mode = args.dry_run.unwrap_or(DryRun::None);
    let (live, results): (_, Vec<String>) = if mode == DryRun::Client {
        let live = live_objects(ctx, &objects).await?;
        let desired = desired_objects(&objects, &live)?;
        let lines = objects
            .iter()
            .zip(&live)
            .zip(&desired)
            .map(|((o, l), d)| result_line(o.kind.kind, &o.name, merge::action(l.as_ref(), d)))
            .collect();
        (live, lines)
    } else if mode == DryRun::Server {
        let (live, results) = merge_and_send(ctx, &objects, true).await?;
        let lines = results
            .iter()
            .map(|r| result_line(&r.kind, &r.name, &r.action))
            .collect();
        (live, lines)
    } else {
        let (live, results, failed) = create_and_apply(ctx, &objects).await?;
        let lines: Vec<String> = results
            .iter()
            .flatten()
            .map(|r| result_line(&r.kind, &r.name, &r.action))
            .collect();
        if !failed.is_empty() {
            // What was written is reported before the errors of the objects that were not.
            print(&lines.iter().map(|l| format!("{l}\n")).collect::<String>())?;
            return Err(match failed.len() {
                1 => failed
                    .into_iter()
                    .map(|(_, e)| e)
                    .next()
                    .unwrap_or(CtlError::Objects(Vec::new())),
                _ => CtlError::Objects(
                    failed
                        .into_iter()
                        .map(|(i, e)| match i {
                            Some(i) => {
                                format!("{}: {e}", objects[i].kind.slash_name(&objects[i].name))
                            }
                            None => e.to_string(),
                        })
                        .collect(),
                ),
            });
        }
        (live, lines)
    };
    for (o, l) in objects.iter().zip(&live) {
        if let Some(l) = l
            && merge::last_applied(l).is_none()
        {
            note(&format!(
                "Warning: {} has no {} annotation (it was not made by apply), so nothing is removed from it this time",
                o.kind.slash_name(&o.name),
                merge::LAST_APPLIED
            ));
        }
    }
    let suffix = match mode {
        DryRun::None => "",
        DryRun::Client => " (dry run)",
        DryRun::Server => " (server dry run)",
    };
    let text: String = results
        .iter()
        .map(|line| format!("{line}{suffix}\n"))
        .collect();
    print(&text)
}

/// Reads the live objects, merges, and sends the result in one Apply request; when an
/// object changed after it was read (ABORTED), all of it again, up to
/// [`APPLY_ATTEMPTS`] times. Returns the live objects used and the answer.
pub async fn merge_and_send(
    ctx: &mut Context,
    objects: &[ManifestObject],
    dry_run: bool,
) -> Result<(Vec<Option<Value>>, Vec<ApplyResult>), CtlError> {
    // A manifest that names a resourceVersion makes it the precondition: retrying with a
    // fresh read cannot help then.
    let own_versions = objects
        .iter()
        .any(|o| o.raw.pointer("/metadata/resourceVersion").is_some());
    let mut attempt = 0;
    loop {
        attempt += 1;
        let live = live_objects(ctx, objects).await?;
        let desired = desired_objects(objects, &live)?;
        match send(ctx, &desired, dry_run).await {
            Ok(results) => return Ok((live, results)),
            Err(CtlError::Conflict(_)) if !own_versions && attempt < APPLY_ATTEMPTS => {}
            Err(e) => return Err(e),
        }
    }
}

/// The live objects read last, the result of each manifest object (None where it
/// failed), and the errors: of one object (its index), or of the Apply of the existing
/// objects as a whole (None).
type Written = (
    Vec<Option<Value>>,
    Vec<Option<ApplyResult>>,
    Vec<(Option<usize>, CtlError)>,
);

/// Creates the objects that do not exist with one CreateMany, then applies the existing
/// ones in one Apply (see the module docs); repeats for what changed under it, up to
/// [`APPLY_ATTEMPTS`] times. A refused create fails that object only.
pub async fn create_and_apply(
    ctx: &mut Context,
    objects: &[ManifestObject],
) -> Result<Written, CtlError> {
    let own_versions = objects
        .iter()
        .any(|o| o.raw.pointer("/metadata/resourceVersion").is_some());
    let mut results: Vec<Option<ApplyResult>> = vec![None; objects.len()];
    let mut live_all: Vec<Option<Value>> = vec![None; objects.len()];
    let mut failed: Vec<(Option<usize>, CtlError)> = Vec::new();
    // Indexes still to write.
    let mut left: Vec<usize> = (0..objects.len()).collect();
    let mut attempt = 0;
    while !left.is_empty() {
        attempt += 1;
        let todo: Vec<ManifestObject> = left.iter().map(|&i| objects[i].clone()).collect();
        let live = live_objects(ctx, &todo).await?;
        let desired = desired_objects(&todo, &live)?;
        if attempt == 1 {
            // Nothing half-applied: whatever the controller would refuse, it refuses now.
            // A conflict (an object changed since the read) is left to the writes below,
            // which read and merge again.
            match send(ctx, &desired, true).await {
                Ok(_) | Err(CtlError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        for (&i, l) in left.iter().zip(&live) {
            live_all[i] = l.clone();
        }
        let (new, existing): (Vec<usize>, Vec<usize>) =
            (0..todo.len()).partition(|&k| live[k].is_none());
        let mut again = Vec::new();
        if !new.is_empty() {
            let docs: Vec<Value> = new.iter().map(|&k| desired[k].clone()).collect();
            let outcomes = ctx
                .conn()
                .await?
                .client()
                .create_many(&docs)
                .await
                .map_err(crate::client::client_error)?;
            for (&k, outcome) in new.iter().zip(outcomes) {
                let i = left[k];
                match outcome {
                    Ok(v) => results[i] = Some(created(&objects[i], v)),
                    // Created by someone else since the read: merge with it next round.
                    Err(s)
                        if s.code() == tonic::Code::AlreadyExists && attempt < APPLY_ATTEMPTS =>
                    {
                        again.push(i)
                    }
                    Err(s) => failed.push((Some(i), status_error(&s, None))),
                }
            }
        }
        if !existing.is_empty() {
            let docs: Vec<Value> = existing.iter().map(|&k| desired[k].clone()).collect();
            match send(ctx, &docs, false).await {
                Ok(rs) => {
                    for (&k, r) in existing.iter().zip(rs) {
                        results[left[k]] = Some(r);
                    }
                }
                Err(CtlError::Conflict(_)) if !own_versions && attempt < APPLY_ATTEMPTS => {
                    again.extend(existing.iter().map(|&k| left[k]));
                }
                // Nothing of the Apply was written; what CreateMany wrote is reported.
                Err(e) => failed.push((None, e)),
            }
        }
        again.sort_unstable();
        left = again;
    }
    failed.sort_by_key(|(i, _)| i.unwrap_or(usize::MAX));
    Ok((live_all, results, failed))
}

/// The result line's data for an object CreateMany created.
fn created(o: &ManifestObject, stored: Value) -> ApplyResult {
    ApplyResult {
        kind: o.kind.kind.to_string(),
        namespace: o.namespace.clone(),
        name: o.name.clone(),
        action: "created".into(),
        object_json: stored.to_string(),
    }
}

/// `deployment/web configured`.
fn result_line(kind: &str, name: &str, action: &str) -> String {
    let shown = kinds::resolve(kind)
        .map(|k| k.slash_name(name))
        .unwrap_or_else(|_| format!("{}/{name}", kind.to_lowercase()));
    format!("{shown} {action}")
}

/// The object to write for each manifest object (see [`merge::desired`]); every
/// problem is reported, one per line.
pub fn desired_objects(
    objects: &[ManifestObject],
    live: &[Option<Value>],
) -> Result<Vec<Value>, CtlError> {
    let mut out = Vec::with_capacity(objects.len());
    let mut problems = Vec::new();
    for (o, l) in objects.iter().zip(live) {
        match merge::desired(o, l.as_ref()) {
            Ok(d) => out.push(d),
            Err(e) => problems.push(e.to_string()),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(CtlError::Manifest(problems.join("\n")))
    }
}

/// Sends the objects in one Apply request.
pub async fn send(
    ctx: &mut Context,
    objects: &[Value],
    dry_run: bool,
) -> Result<Vec<ApplyResult>, CtlError> {
    let req = ApplyRequest {
        objects_json: objects.iter().map(Value::to_string).collect(),
        dry_run,
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
    Ok(resp.results)
}

/// The live version of each manifest object (None where it does not exist), in order.
/// Small groups of one kind and namespace are read object by object, larger ones with
/// one List.
pub async fn live_objects(
    ctx: &mut Context,
    objects: &[ManifestObject],
) -> Result<Vec<Option<Value>>, CtlError> {
    let mut groups: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
    for (i, o) in objects.iter().enumerate() {
        groups
            .entry((o.kind.kind, o.namespace.as_str()))
            .or_default()
            .push(i);
    }
    let mut live = vec![None; objects.len()];
    for (_, members) in groups {
        let first = &objects[members[0]];
        if members.len() <= GET_EACH_MAX {
            for i in members {
                let o = &objects[i];
                live[i] = match ctx.get(&o.kind, &o.namespace, &o.name).await {
                    Ok(v) => Some(v),
                    Err(CtlError::NotFound(_)) => None,
                    Err(e) => return Err(e),
                };
            }
        } else {
            let (items, _) = ctx.list(&first.kind, &first.namespace, "", "").await?;
            let by_name: BTreeMap<&str, &Value> = items
                .iter()
                .map(|v| (crate::output::name_of(v), v))
                .collect();
            for i in members {
                live[i] = by_name.get(objects[i].name.as_str()).map(|v| (*v).clone());
            }
        }
    }
    Ok(live)
}
