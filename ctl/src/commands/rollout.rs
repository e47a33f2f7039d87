//! `shoalctl rollout status|history|undo|restart deployment/NAME` (`status` and `restart`
//! also take `daemonset/NAME`). Status follows the object with a watch and judges each
//! version with [`rollout_state`] or [`daemonset_rollout_state`] (pure functions, kubectl's
//! rules); undo copies a revision's template from `status.history` into `spec.template`
//! with the resourceVersion as precondition; restart sets the template annotation
//! [`RESTARTED_AT`] to now, which changes the template and so rolls every pod.

use serde_json::Value;
use shoal_client::watcher::{DEFAULT_MAX_FAILURES, EventKind, Machine};
use shoal_client::{ListParams, WatchOutput, Watcher};

use super::{Context, note, one_target, print};
use crate::cli::RolloutCommand;
use crate::client::client_error;
use crate::error::CtlError;
use crate::kinds::KindInfo;
use crate::output;

/// The pod-template annotation `rollout restart` sets (kubectl's key, so that manifests
/// and tools that know it keep working).
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// Runs `rollout …`.
pub async fn run(ctx: &mut Context, command: RolloutCommand) -> Result<(), CtlError> {
    match command {
        RolloutCommand::Status { target, timeout } => {
            let (kind, name) = one_target(&target, &["Deployment", "DaemonSet", "StatefulSet"])?;
            let work = status(ctx, &kind, &name);
            match timeout {
                None => work.await,
                Some(t) => tokio::time::timeout(t, work).await.map_err(|_| {
                    CtlError::WaitTimeout(format!(
                        "timed out after {} waiting for {} {name:?} to roll out",
                        output::human_age(chrono::Duration::from_std(t).unwrap_or_default()),
                        kind.singular
                    ))
                })?,
            }
        }
        RolloutCommand::History { target, revision } => {
            let (kind, name) = one_target(&target, &["Deployment"])?;
            let ns = ctx.namespace_for(&kind);
            let d = ctx.get(&kind, &ns, &name).await?;
            history(&d, &name, revision)
        }
        RolloutCommand::Undo {
            target,
            to_revision,
        } => {
            let (kind, name) = one_target(&target, &["Deployment"])?;
            undo(ctx, &kind, &name, to_revision).await
        }
        RolloutCommand::Restart { target } => {
            let (kind, name) = one_target(&target, &["Deployment", "DaemonSet", "StatefulSet"])?;
            let ns = ctx.namespace_for(&kind);
            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            ctx.modify(&kind, &ns, &name, None, |d| {
                set_restarted_at(d, &now)?;
                Ok(true)
            })
            .await?;
            print(&format!("{} restarted\n", kind.slash_name(&name)))
        }
    }
}

/// What a Deployment's rollout looks like right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutState {
    /// Not finished; the line to print.
    Waiting(String),
    /// Finished; the line to print.
    Done(String),
    /// Cannot finish without a change (paused).
    Stuck(String),
}

/// (replicas updated and available, desired replicas) of a Deployment: the progress bar.
pub fn rollout_progress(d: &Value) -> (u64, u64) {
    let int = |p: &str| d.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    let desired = d
        .pointer("/spec/replicas")
        .and_then(Value::as_u64)
        .unwrap_or(1);
    let done = int("/status/updatedReplicas")
        .min(int("/status/availableReplicas"))
        .min(desired);
    (done, desired)
}

/// Judges one version of a Deployment like `kubectl rollout status`: done when
/// `status.observedGeneration >= metadata.generation` and updated == spec.replicas,
/// no old replicas are left and every updated replica is available.
pub fn rollout_state(d: &Value) -> RolloutState {
    let name = d
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let int = |p: &str| d.pointer(p).and_then(Value::as_i64);
    let generation = int("/metadata/generation").unwrap_or(0);
    let observed = int("/status/observedGeneration");
    if d.pointer("/spec/paused").and_then(Value::as_bool) == Some(true) {
        return RolloutState::Stuck(format!(
            "deployment {name:?} is paused; set spec.paused to false to continue the rollout"
        ));
    }
    if observed.is_none_or(|o| o < generation) {
        return RolloutState::Waiting(
            "Waiting for deployment spec update to be observed...".into(),
        );
    }
    let want = int("/spec/replicas").unwrap_or(1);
    let replicas = int("/status/replicas").unwrap_or(0);
    let updated = int("/status/updatedReplicas").unwrap_or(0);
    let available = int("/status/availableReplicas")
        .unwrap_or(0)
        .min(int("/status/readyReplicas").unwrap_or(0));
    let waiting = |what: String| {
        RolloutState::Waiting(format!(
            "Waiting for deployment {name:?} rollout to finish: {what}..."
        ))
    };
    if updated < want {
        return waiting(format!(
            "{updated} out of {want} new replicas have been updated"
        ));
    }
    if replicas > updated {
        return waiting(format!(
            "{} old replicas are pending termination",
            replicas - updated
        ));
    }
    if available < updated {
        return waiting(format!(
            "{available} of {updated} updated replicas are available"
        ));
    }
    RolloutState::Done(format!("deployment {name:?} successfully rolled out"))
}

/// (pods updated and available, nodes that should run one) of a DaemonSet: the progress bar.
pub fn daemonset_rollout_progress(d: &Value) -> (u64, u64) {
    let int = |p: &str| d.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    let desired = int("/status/desiredNumberScheduled");
    let done = int("/status/updatedNumberScheduled")
        .min(int("/status/numberAvailable"))
        .min(desired);
    (done, desired)
}

/// Judges one version of a DaemonSet like `kubectl rollout status`: only for
/// `RollingUpdate`; done when `status.observedGeneration >= metadata.generation` and every
/// node that should run the pod runs an updated, available one.
pub fn daemonset_rollout_state(d: &Value) -> RolloutState {
    let name = d
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let int = |p: &str| d.pointer(p).and_then(Value::as_i64);
    let strategy = d
        .pointer("/spec/updateStrategy/type")
        .and_then(Value::as_str)
        .unwrap_or("RollingUpdate");
    if strategy != "RollingUpdate" {
        return RolloutState::Stuck(format!(
            "rollout status is only available for RollingUpdate strategy type (daemon set {name:?} has {strategy})"
        ));
    }
    let generation = int("/metadata/generation").unwrap_or(0);
    if int("/status/observedGeneration").is_none_or(|o| o < generation) {
        return RolloutState::Waiting(
            "Waiting for daemon set spec update to be observed...".into(),
        );
    }
    let desired = int("/status/desiredNumberScheduled").unwrap_or(0);
    let updated = int("/status/updatedNumberScheduled").unwrap_or(0);
    let available = int("/status/numberAvailable").unwrap_or(0);
    if updated < desired {
        return RolloutState::Waiting(format!(
            "Waiting for daemon set {name:?} rollout to finish: {updated} out of {desired} new pods have been updated..."
        ));
    }
    if available < desired {
        return RolloutState::Waiting(format!(
            "Waiting for daemon set {name:?} rollout to finish: {available} of {desired} updated pods are available..."
        ));
    }
    RolloutState::Done(format!("daemon set {name:?} successfully rolled out"))
}

/// (pods ready and of the update revision, desired replicas) of a StatefulSet: the
/// progress bar.
pub fn statefulset_rollout_progress(s: &Value) -> (u64, u64) {
    let int = |p: &str| s.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    let desired = s
        .pointer("/spec/replicas")
        .and_then(Value::as_u64)
        .unwrap_or(1);
    let done = int("/status/updatedReplicas")
        .min(int("/status/readyReplicas"))
        .min(desired);
    (done, desired)
}

/// Judges one version of a StatefulSet like `kubectl rollout status`: only for
/// `RollingUpdate`; waits for the spec to be observed and every replica to be ready; with a
/// `partition`, done once the pods from the partition up are updated; otherwise done when
/// the current revision has caught up with the update revision.
pub fn statefulset_rollout_state(s: &Value) -> RolloutState {
    let int = |p: &str| s.pointer(p).and_then(Value::as_i64);
    let text = |p: &str| s.pointer(p).and_then(Value::as_str).unwrap_or("");
    let strategy = s
        .pointer("/spec/updateStrategy/type")
        .and_then(Value::as_str)
        .unwrap_or("RollingUpdate");
    if strategy != "RollingUpdate" {
        return RolloutState::Stuck(
            "rollout status is only available for RollingUpdate strategy type".into(),
        );
    }
    let generation = int("/metadata/generation").unwrap_or(0);
    if int("/status/observedGeneration").is_none_or(|o| o == 0 || o < generation) {
        return RolloutState::Waiting(
            "Waiting for statefulset spec update to be observed...".into(),
        );
    }
    let replicas = int("/spec/replicas").unwrap_or(1);
    let ready = int("/status/readyReplicas").unwrap_or(0);
    if ready < replicas {
        return RolloutState::Waiting(format!(
            "Waiting for {} pods to be ready...",
            replicas - ready
        ));
    }
    let updated = int("/status/updatedReplicas").unwrap_or(0);
    let partition = int("/spec/updateStrategy/rollingUpdate/partition").unwrap_or(0);
    if partition > 0 {
        if updated < replicas - partition {
            return RolloutState::Waiting(format!(
                "Waiting for partitioned roll out to finish: {updated} out of {} new pods have been updated...",
                replicas - partition
            ));
        }
        return RolloutState::Done(format!(
            "partitioned roll out complete: {updated} new pods have been updated..."
        ));
    }
    let (current, update) = (
        text("/status/currentRevision"),
        text("/status/updateRevision"),
    );
    if current != update {
        return RolloutState::Waiting(format!(
            "waiting for statefulset rolling update to complete {updated} pods at revision {update}..."
        ));
    }
    RolloutState::Done(format!(
        "statefulset rolling update complete {} pods at revision {current}...",
        int("/status/currentReplicas").unwrap_or(0)
    ))
}

/// Follows the Deployment, DaemonSet or StatefulSet until its judge ([`rollout_state`],
/// [`daemonset_rollout_state`], [`statefulset_rollout_state`]) says done (printing each
/// new line).
async fn status(ctx: &mut Context, kind: &KindInfo, name: &str) -> Result<(), CtlError> {
    let ns = ctx.namespace_for(kind);
    let fields = format!("metadata.name={name}");
    let mut last = String::new();
    type Judge = fn(&Value) -> RolloutState;
    type Progress = fn(&Value) -> (u64, u64);
    let (judge, progress): (Judge, Progress) = match kind.kind {
        "DaemonSet" => (daemonset_rollout_state, daemonset_rollout_progress),
        "StatefulSet" => (statefulset_rollout_state, statefulset_rollout_progress),
        _ => (rollout_state, rollout_progress),
    };
    // Updated and available pods of the desired count, on a terminal.
    let bar = crate::progress::count(0, &kind.slash_name(name));
    let mut show =
        |state: &RolloutState, d: &Value| -> Result<Option<Result<(), CtlError>>, CtlError> {
            let (line, end) = match state {
                RolloutState::Waiting(l) => (l, None),
                RolloutState::Done(l) => (l, Some(Ok(()))),
                RolloutState::Stuck(l) => {
                    bar.finish_and_clear();
                    return Ok(Some(Err(CtlError::NotPossible(l.clone()))));
                }
            };
            let (done, total) = progress(d);
            bar.set_length(total);
            bar.set_position(done);
            if *line != last {
                bar.suspend(|| print(&format!("{line}\n")))?;
                last = line.clone();
            }
            if end.is_some() {
                bar.finish_and_clear();
            }
            Ok(end)
        };
    // shoal-client's watcher: a list, then changes; it re-lists when the watch is too old
    // and moves to the next controller when one goes away.
    let client = ctx.conn().await?.client().clone();
    let params = ListParams {
        namespace: ns.clone(),
        label_selector: String::new(),
        field_selector: fields,
    };
    let machine = Machine::new(Some(DEFAULT_MAX_FAILURES));
    let mut watcher = Watcher::json(client, kind.kind, params, machine);
    loop {
        let d = match watcher.next().await.map_err(client_error)? {
            WatchOutput::Listed { items, .. } => {
                match items.into_iter().find(|d| output::name_of(d) == name) {
                    Some(d) => d,
                    None => {
                        return Err(crate::error::Target::new(kind.singular, &ns, name).not_found());
                    }
                }
            }
            WatchOutput::Event {
                kind: ev, object, ..
            } => {
                if output::name_of(&object) != name {
                    continue;
                }
                if ev == EventKind::Deleted {
                    return Err(CtlError::NotPossible(format!(
                        "{} {name:?} was deleted during the rollout",
                        kind.singular
                    )));
                }
                object
            }
        };
        if let Some(end) = show(&judge(&d), &d)? {
            return end;
        }
    }
}

/// Prints the history table, or one revision's template.
fn history(d: &Value, name: &str, revision: Option<i64>) -> Result<(), CtlError> {
    let entries = d
        .pointer("/status/history")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if entries.is_empty() {
        note(&format!(
            "No rollout history found for deployment {name:?}."
        ));
        return Ok(());
    }
    match revision {
        None => print(&format!(
            "deployment/{name}\n{}",
            output::rollout_history_table(d).render(false)
        )),
        Some(r) => {
            let (_, template) = pick_revision(d, name, Some(r))?;
            print(&format!(
                "deployment/{name} with revision #{r}\n{}",
                output::to_yaml(&serde_json::json!({"template": template}))?
            ))
        }
    }
}

/// The revision and template to go back to: the entry with `to_revision`, or the one
/// before the current (the second-to-last of `status.history`).
pub fn pick_revision(
    d: &Value,
    name: &str,
    to_revision: Option<i64>,
) -> Result<(i64, Value), CtlError> {
    let entries = d
        .pointer("/status/history")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let rev_of = |e: &Value| e.get("revision").and_then(Value::as_i64).unwrap_or(0);
    let entry = match to_revision {
        Some(r) => entries.iter().find(|e| rev_of(e) == r).ok_or_else(|| {
            let known: Vec<String> = entries.iter().map(|e| rev_of(e).to_string()).collect();
            CtlError::NotPossible(format!(
                "deployment {name:?} has no revision {r} in its history (revisions: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        })?,
        None if entries.len() >= 2 => &entries[entries.len() - 2],
        None => {
            return Err(CtlError::NotPossible(format!(
                "deployment {name:?} has no previous revision to go back to"
            )));
        }
    };
    let template = entry.get("template").cloned().ok_or_else(|| {
        CtlError::BadResponse(format!(
            "deployment {name:?}: history entry without a template"
        ))
    })?;
    Ok((rev_of(entry), template))
}

/// Sets `spec.template.metadata.annotations[RESTARTED_AT]` of a Deployment, DaemonSet or
/// StatefulSet.
pub fn set_restarted_at(d: &mut Value, now: &str) -> Result<(), CtlError> {
    let template = d
        .pointer_mut("/spec/template")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| CtlError::BadResponse("the object has no spec.template".into()))?;
    let meta = template
        .entry("metadata")
        .or_insert_with(|| serde_json::json!({}));
    if !meta.is_object() {
        *meta = serde_json::json!({});
    }
    let annotations = meta
        .as_object_mut()
        .expect("an object")
        .entry("annotations")
        .or_insert_with(|| serde_json::json!({}));
    if !annotations.is_object() {
        *annotations = serde_json::json!({});
    }
    annotations
        .as_object_mut()
        .expect("an object")
        .insert(RESTARTED_AT.into(), Value::String(now.into()));
    Ok(())
}

/// Undo: copies the chosen revision's template into `spec.template`.
async fn undo(
    ctx: &mut Context,
    kind: &KindInfo,
    name: &str,
    to_revision: Option<i64>,
) -> Result<(), CtlError> {
    let ns = ctx.namespace_for(kind);
    let mut chosen = 0;
    let written = ctx
        .modify(kind, &ns, name, None, |d| {
            let (rev, template) = pick_revision(d, name, to_revision)?;
            chosen = rev;
            let spec = d
                .get_mut("spec")
                .and_then(Value::as_object_mut)
                .ok_or_else(|| CtlError::BadResponse(format!("deployment {name:?} has no spec")))?;
            if spec.get("template") == Some(&template) {
                return Ok(false);
            }
            spec.insert("template".into(), template);
            Ok(true)
        })
        .await?;
    if written.is_some() {
        print(&format!(
            "{} rolled back to revision {chosen}\n",
            kind.slash_name(name)
        ))
    } else {
        print(&format!(
            "{} skipped rollback (current template already matches revision {chosen})\n",
            kind.slash_name(name)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_counts_updated_and_available_replicas() {
        let d = serde_json::json!({"spec": {"replicas": 3},
            "status": {"updatedReplicas": 2, "availableReplicas": 3}});
        assert_eq!(rollout_progress(&d), (2, 3));
        assert_eq!(rollout_progress(&serde_json::json!({})), (0, 1));
    }

    #[test]
    fn restart_sets_the_template_annotation() {
        let mut d = serde_json::json!({"spec": {"template": {"spec": {}}}});
        set_restarted_at(&mut d, "2026-12-05T21:00:00Z").unwrap();
        assert_eq!(
            d["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT],
            "2026-12-05T21:00:00Z"
        );
        set_restarted_at(&mut d, "2026-12-05T21:01:00Z").unwrap();
        assert_eq!(
            d["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT],
            "2026-12-05T21:01:00Z"
        );
        assert!(set_restarted_at(&mut serde_json::json!({"spec": {}}), "x").is_err());
    }
    use serde_json::json;

    fn dep(gen_: i64, observed: Option<i64>, want: i64, st: [i64; 4]) -> Value {
        let mut d = json!({
            "metadata": {"name": "web", "generation": gen_},
            "spec": {"replicas": want},
            "status": {"replicas": st[0], "updatedReplicas": st[1], "readyReplicas": st[2], "availableReplicas": st[3]}
        });
        if let Some(o) = observed {
            d["status"]["observedGeneration"] = json!(o);
        }
        d
    }

    fn waiting(s: &str) -> RolloutState {
        RolloutState::Waiting(format!(
            "Waiting for deployment \"web\" rollout to finish: {s}..."
        ))
    }

    #[test]
    fn rollout_status_follows_kubectl_rules() {
        let observe =
            RolloutState::Waiting("Waiting for deployment spec update to be observed...".into());
        assert_eq!(rollout_state(&dep(2, Some(1), 3, [3, 3, 3, 3])), observe);
        assert_eq!(rollout_state(&dep(2, None, 3, [3, 3, 3, 3])), observe);
        assert_eq!(
            rollout_state(&dep(2, Some(2), 3, [3, 1, 2, 2])),
            waiting("1 out of 3 new replicas have been updated")
        );
        assert_eq!(
            rollout_state(&dep(2, Some(2), 3, [5, 3, 3, 3])),
            waiting("2 old replicas are pending termination")
        );
        assert_eq!(
            rollout_state(&dep(2, Some(2), 3, [3, 3, 1, 1])),
            waiting("1 of 3 updated replicas are available")
        );
        // Available counts only what is also ready.
        assert_eq!(
            rollout_state(&dep(2, Some(2), 3, [3, 3, 2, 3])),
            waiting("2 of 3 updated replicas are available")
        );
        assert_eq!(
            rollout_state(&dep(2, Some(3), 3, [3, 3, 3, 3])),
            RolloutState::Done("deployment \"web\" successfully rolled out".into())
        );
        assert_eq!(
            rollout_state(&dep(1, Some(1), 0, [0, 0, 0, 0])),
            RolloutState::Done("deployment \"web\" successfully rolled out".into())
        );
        let mut paused = dep(1, Some(1), 3, [3, 3, 3, 3]);
        paused["spec"]["paused"] = json!(true);
        assert!(matches!(rollout_state(&paused), RolloutState::Stuck(_)));
    }

    #[test]
    fn undo_picks_the_previous_or_given_revision() {
        let t = |img: &str| json!({"spec": {"containers": [{"name": "app", "image": img}]}});
        let d = json!({"status": {"revision": 3, "history": [
            {"revision": 1, "templateHash": "a", "template": t("b:1")},
            {"revision": 2, "templateHash": "b", "template": t("b:2")},
            {"revision": 3, "templateHash": "c", "template": t("b:3")}
        ]}});
        assert_eq!(pick_revision(&d, "web", None).unwrap(), (2, t("b:2")));
        assert_eq!(pick_revision(&d, "web", Some(1)).unwrap(), (1, t("b:1")));
        let e = pick_revision(&d, "web", Some(7)).unwrap_err().to_string();
        assert_eq!(
            e,
            "deployment \"web\" has no revision 7 in its history (revisions: 1, 2, 3)"
        );
        let one = json!({"status": {"history": [{"revision": 1, "template": t("b:1")}]}});
        assert!(
            pick_revision(&one, "web", None)
                .unwrap_err()
                .to_string()
                .contains("no previous revision")
        );
        assert!(pick_revision(&json!({}), "web", None).is_err());
    }

    #[test]
    fn statefulset_rollout_state_like_kubectl() {
        let sts = |generation: i64, st: Value, partition: Option<i64>| {
            let mut v = serde_json::json!({
                "metadata": {"name": "web", "generation": generation},
                "spec": {"replicas": 3, "updateStrategy": {"type": "RollingUpdate"}},
                "status": st
            });
            if let Some(p) = partition {
                v["spec"]["updateStrategy"]["rollingUpdate"] = serde_json::json!({"partition": p});
            }
            v
        };
        let wait = |s: &str| RolloutState::Waiting(s.into());
        let st = |obs: i64, ready: i64, updated: i64, cur: &str, upd: &str| {
            serde_json::json!({"observedGeneration": obs, "readyReplicas": ready,
                "updatedReplicas": updated, "currentReplicas": 3 - updated.min(3),
                "currentRevision": cur, "updateRevision": upd})
        };
        assert_eq!(
            statefulset_rollout_state(&sts(2, st(1, 3, 3, "a", "a"), None)),
            wait("Waiting for statefulset spec update to be observed...")
        );
        assert_eq!(
            statefulset_rollout_state(&sts(2, st(2, 1, 1, "a", "b"), None)),
            wait("Waiting for 2 pods to be ready...")
        );
        assert_eq!(
            statefulset_rollout_state(&sts(2, st(2, 3, 1, "a", "b"), None)),
            wait("waiting for statefulset rolling update to complete 1 pods at revision b...")
        );
        let mut done = st(2, 3, 3, "b", "b");
        done["currentReplicas"] = 3.into();
        assert_eq!(
            statefulset_rollout_state(&sts(2, done, None)),
            RolloutState::Done(
                "statefulset rolling update complete 3 pods at revision b...".into()
            )
        );
        // A partition of 2: only web-2 is to be updated.
        assert_eq!(
            statefulset_rollout_state(&sts(2, st(2, 3, 0, "a", "b"), Some(2))),
            wait(
                "Waiting for partitioned roll out to finish: 0 out of 1 new pods have been updated..."
            )
        );
        assert_eq!(
            statefulset_rollout_state(&sts(2, st(2, 3, 1, "a", "b"), Some(2))),
            RolloutState::Done(
                "partitioned roll out complete: 1 new pods have been updated...".into()
            )
        );
        let mut on_delete = sts(2, st(2, 3, 3, "a", "a"), None);
        on_delete["spec"]["updateStrategy"]["type"] = "OnDelete".into();
        assert!(matches!(
            statefulset_rollout_state(&on_delete),
            RolloutState::Stuck(_)
        ));
        assert_eq!(
            statefulset_rollout_progress(&sts(2, st(2, 2, 1, "a", "b"), None)),
            (1, 3)
        );
    }

    #[test]
    fn daemonset_rollout_state_like_kubectl() {
        let ds = |generation: i64, observed: i64, updated: i64, available: i64| {
            json!({"metadata": {"name": "agent", "generation": generation},
                   "spec": {"updateStrategy": {"type": "RollingUpdate"}},
                   "status": {"observedGeneration": observed, "desiredNumberScheduled": 3,
                              "updatedNumberScheduled": updated, "numberAvailable": available}})
        };
        assert_eq!(
            daemonset_rollout_state(&ds(2, 1, 3, 3)),
            RolloutState::Waiting("Waiting for daemon set spec update to be observed...".into())
        );
        assert_eq!(
            daemonset_rollout_state(&ds(2, 2, 1, 3)),
            RolloutState::Waiting(
                "Waiting for daemon set \"agent\" rollout to finish: 1 out of 3 new pods have been updated...".into()
            )
        );
        assert_eq!(
            daemonset_rollout_state(&ds(2, 2, 3, 2)),
            RolloutState::Waiting(
                "Waiting for daemon set \"agent\" rollout to finish: 2 of 3 updated pods are available...".into()
            )
        );
        assert_eq!(
            daemonset_rollout_state(&ds(2, 2, 3, 3)),
            RolloutState::Done("daemon set \"agent\" successfully rolled out".into())
        );
        assert_eq!(daemonset_rollout_progress(&ds(2, 2, 3, 2)), (2, 3));
        let mut on_delete = ds(2, 2, 3, 3);
        on_delete["spec"]["updateStrategy"]["type"] = json!("OnDelete");
        assert!(matches!(
            daemonset_rollout_state(&on_delete),
            RolloutState::Stuck(m) if m.contains("only available for RollingUpdate")
        ));
        let mut d = json!({"spec": {"template": {"spec": {}}}});
        set_restarted_at(&mut d, "2026-01-01T00:00:00Z").unwrap();
        assert_eq!(
            d["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT],
            "2026-01-01T00:00:00Z"
        );
    }
}
