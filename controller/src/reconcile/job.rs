//! The job reconciler: runs a Job's pods until `completions` of them succeeded, at most
//! `parallelism` at a time, and fails the Job after more than `backoffLimit` failures or
//! past `activeDeadlineSeconds`. Finished pods are kept (for their logs and status) until
//! the Job goes; the garbage collector then removes them by owner. A finished Job is
//! deleted `ttlSecondsAfterFinished` after it finished.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use shoal_api::{
    CONTROLLER_UID_LABEL, ConditionStatus, JOB_NAME_LABEL, Job, JobStatus, Kind, Object,
    ObjectMeta, OwnerReference, Pod, PodPhase, RestartPolicy,
};

use super::action::{Action, Names, namespace, pod_key, revision, set_condition};

/// Groups objects' keys by the uid of their controlling owner of `kind`.
pub fn by_owner<'a, T: shoal_api::Resource>(
    kind: Kind,
    objects: impl IntoIterator<Item = &'a T>,
) -> BTreeMap<String, Vec<&'a T>> {
    let mut out: BTreeMap<String, Vec<&'a T>> = BTreeMap::new();
    for o in objects {
        if let Some(r) = o.metadata().controller_owner().filter(|r| r.kind == kind) {
            out.entry(r.uid.clone()).or_default().push(o);
        }
    }
    out
}

/// The store key of a Job.
pub fn job_key(j: &Job) -> String {
    shoal_api::key_for(Kind::Job, namespace(&j.metadata), &j.metadata.name)
}

/// A new pod of `j` from its template: labelled `job-name` and `controller-uid`, owned
/// by the Job.
pub fn new_pod(j: &Job, names: &mut dyn Names) -> Pod {
    let uid = j.metadata.uid.clone().unwrap_or_default();
    let mut labels = j.spec.template.metadata.labels.clone();
    labels.insert(JOB_NAME_LABEL.to_string(), j.metadata.name.clone());
    labels.insert(CONTROLLER_UID_LABEL.to_string(), uid.clone());
    Pod {
        metadata: ObjectMeta {
            labels,
            annotations: j.spec.template.metadata.annotations.clone(),
            owner_references: vec![OwnerReference {
                api_version: "batch/v1".to_string(),
                kind: Kind::Job,
                name: j.metadata.name.clone(),
                uid,
                controller: true,
                block_owner_deletion: false,
            }],
            ..ObjectMeta::named(
                namespace(&j.metadata),
                &format!("{}-{}", j.metadata.name, names.suffix(5)),
            )
        },
        spec: j.spec.template.spec.clone(),
        status: None,
    }
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn phase(p: &Pod) -> PodPhase {
    p.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

/// Container restarts of a pod (with `OnFailure`, each one is a failed attempt).
fn restarts(p: &Pod) -> i32 {
    p.status.as_ref().map_or(0, |s| {
        s.container_statuses
            .iter()
            .chain(&s.init_container_statuses)
            .map(|c| c.restart_count)
            .sum()
    })
}

fn delete_pod(p: &Pod) -> Action {
    Action::Delete {
        key: pod_key(p),
        revision: revision(&p.metadata),
    }
}

/// When the Job finished (the transition time of its `Complete`/`Failed` condition).
pub fn finished_at(j: &Job) -> Option<DateTime<Utc>> {
    let s = j.status.as_ref()?;
    let c = s.finished()?;
    c.last_transition_time
        .or(s.completion_time)
        .or(s.start_time)
}

/// True when the Job has condition `Complete=True`.
pub fn is_complete(j: &Job) -> bool {
    j.status
        .as_ref()
        .and_then(JobStatus::finished)
        .is_some_and(|c| c.type_ == "Complete")
}

/// Plans one pass for Job `j` given the pods it owns (`owned`, any state).
///
/// * Counts: `succeeded` and `failed` pods (with `OnFailure`, container restarts count as
///   failures too); both only grow, so deleting a finished pod by hand does not make the
///   Job run it again.
/// * Running: keeps `min(parallelism, completions - succeeded)` pods active (creating or
///   deleting the newest).
/// * Complete when `succeeded >= completions`; Failed (`BackoffLimitExceeded`) when
///   `failed > backoffLimit`; Failed (`DeadlineExceeded`) when `now` is
///   `activeDeadlineSeconds` past `status.startTime`. A finished Job's active pods are
///   deleted, and no pod is created again.
/// * `ttlSecondsAfterFinished` past the finish: the Job is deleted.
/// * Status is written (CAS on the Job's revision) only when it changed.
pub fn plan(j: &Job, owned: &[&Pod], now: DateTime<Utc>, names: &mut dyn Names) -> Vec<Action> {
    let mut actions = Vec::new();
    if j.metadata.deletion_timestamp.is_some() || j.metadata.uid.is_none() {
        return actions;
    }
    let old = j.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let start = *status.start_time.get_or_insert(now);

    let mut active: Vec<&Pod> = Vec::new();
    let (mut succeeded, mut failed) = (0usize, 0i32);
    for p in owned {
        match phase(p) {
            PodPhase::Succeeded => succeeded += 1,
            PodPhase::Failed => failed += 1,
            _ if p.metadata.deletion_timestamp.is_none() => active.push(p),
            _ => {}
        }
        if j.spec.template.spec.restart_policy == RestartPolicy::OnFailure {
            failed = failed.saturating_add(restarts(p));
        }
    }
    status.succeeded = status.succeeded.max(count(succeeded));
    status.failed = status.failed.max(failed);

    if let Some(done) = finished_at(j) {
        actions.extend(active.iter().map(|p| delete_pod(p)));
        status.active = 0;
        if let Some(ttl) = j.spec.ttl_seconds_after_finished
            && now >= done + chrono::Duration::seconds(ttl)
        {
            actions.push(Action::Delete {
                key: job_key(j),
                revision: revision(&j.metadata),
            });
            return actions;
        }
    } else {
        let completions = j.spec.completions.max(1);
        let finish = if status.succeeded >= completions {
            Some((
                "Complete",
                "",
                format!("{} of {completions} pods succeeded", status.succeeded),
            ))
        } else if status.failed > j.spec.backoff_limit {
            Some((
                "Failed",
                "BackoffLimitExceeded",
                format!(
                    "{} pods failed, more than the backoffLimit {}",
                    status.failed, j.spec.backoff_limit
                ),
            ))
        } else if let Some(d) = j.spec.active_deadline_seconds
            && now >= start + chrono::Duration::seconds(d)
        {
            Some((
                "Failed",
                "DeadlineExceeded",
                format!("the job ran longer than activeDeadlineSeconds {d}"),
            ))
        } else {
            None
        };
        match finish {
            Some((type_, reason, message)) => {
                actions.extend(active.iter().map(|p| delete_pod(p)));
                status.active = 0;
                if type_ == "Complete" {
                    status.completion_time = Some(now);
                }
                set_condition(
                    &mut status.conditions,
                    type_,
                    ConditionStatus::True,
                    reason,
                    &message,
                    now,
                );
            }
            None => {
                let remaining = usize::try_from(completions - status.succeeded).unwrap_or(0);
                let want = usize::try_from(j.spec.parallelism)
                    .unwrap_or(0)
                    .min(remaining);
                if active.len() < want {
                    for _ in active.len()..want {
                        actions.push(Action::Create(Object::Pod(new_pod(j, names))));
                    }
                } else if active.len() > want {
                    let mut extra = active.clone();
                    extra.sort_by_key(|p| {
                        (
                            Reverse(p.metadata.creation_timestamp),
                            p.metadata.name.clone(),
                        )
                    });
                    actions.extend(
                        extra
                            .iter()
                            .take(active.len() - want)
                            .map(|p| delete_pod(p)),
                    );
                }
                // Counted as after this pass's creates and deletes.
                status.active = count(want);
            }
        }
    }
    if status != old {
        let mut updated = j.clone();
        updated.status = Some(status);
        actions.push(Action::Update(Object::Job(updated)));
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::action::CountingNames;
    use serde_json::json;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn job(completions: i32, parallelism: i32, backoff: i32) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "pi", "namespace": "ns", "uid": "u1", "resourceVersion": "4"},
            "spec": {"completions": completions, "parallelism": parallelism, "backoffLimit": backoff,
                     "template": {"metadata": {"labels": {"app": "pi"}},
                                  "spec": {"restartPolicy": "Never",
                                           "containers": [{"name": "c", "image": "busybox"}]}}}
        }))
        .unwrap()
    }

    fn pod(name: &str, phase: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": "7",
                         "ownerReferences": [{"kind": "Job", "name": "pi", "uid": "u1", "controller": true}]},
            "spec": {"containers": [{"name": "c", "image": "busybox"}], "restartPolicy": "Never"},
            "status": {"phase": phase}
        }))
        .unwrap()
    }

    fn creates(a: &[Action]) -> Vec<&Pod> {
        a.iter()
            .filter_map(|a| match a {
                Action::Create(Object::Pod(p)) => Some(p),
                _ => None,
            })
            .collect()
    }

    fn deletes(a: &[Action]) -> Vec<String> {
        a.iter()
            .filter_map(|a| match a {
                Action::Delete { key, .. } => Some(key.clone()),
                _ => None,
            })
            .collect()
    }

    fn status(a: &[Action]) -> JobStatus {
        a.iter()
            .find_map(|a| match a {
                Action::Update(Object::Job(j)) => j.status.clone(),
                _ => None,
            })
            .expect("a status update")
    }

    /// Applies a plan's status to the Job, as the store would.
    fn advance(j: &mut Job, a: &[Action]) {
        if let Some(Action::Update(Object::Job(u))) = a
            .iter()
            .find(|a| matches!(a, Action::Update(Object::Job(_))))
        {
            j.status = u.status.clone();
        }
    }

    fn condition(s: &JobStatus) -> Option<(&str, &str)> {
        s.finished().map(|c| (c.type_.as_str(), c.reason.as_str()))
    }

    #[test]
    fn first_pass_creates_labelled_owned_pods_up_to_parallelism() {
        let j = job(5, 2, 6);
        let a = plan(&j, &[], t(0), &mut CountingNames(0));
        let made = creates(&a);
        assert_eq!(made.len(), 2);
        let p = made[0];
        assert_eq!(p.metadata.name, "pi-00001");
        assert_eq!(p.metadata.labels[JOB_NAME_LABEL], "pi");
        assert_eq!(p.metadata.labels[CONTROLLER_UID_LABEL], "u1");
        assert_eq!(p.metadata.labels["app"], "pi");
        let o = p.metadata.controller_owner().unwrap();
        assert_eq!((o.kind, o.uid.as_str()), (Kind::Job, "u1"));
        let s = status(&a);
        assert_eq!((s.active, s.succeeded, s.failed), (2, 0, 0));
        assert_eq!(s.start_time, Some(t(0)));
    }

    #[test]
    fn parallelism_is_capped_by_remaining_completions_and_lowered() {
        let j = job(3, 5, 6);
        let (a, b) = (pod("pi-a", "Succeeded"), pod("pi-b", "Running"));
        let acts = plan(&j, &[&a, &b], t(1), &mut CountingNames(0));
        // 2 remaining completions, 1 running: one more.
        assert_eq!(creates(&acts).len(), 1);
        let mut j = job(3, 1, 6);
        j.status = Some(JobStatus {
            start_time: Some(t(0)),
            ..Default::default()
        });
        let (c, d) = (pod("pi-c", "Running"), pod("pi-d", "Pending"));
        let acts = plan(&j, &[&c, &d], t(1), &mut CountingNames(0));
        assert!(creates(&acts).is_empty());
        assert_eq!(deletes(&acts).len(), 1, "{acts:?}");
        let j0 = job(3, 0, 6);
        assert!(creates(&plan(&j0, &[], t(1), &mut CountingNames(0))).is_empty());
    }

    #[test]
    fn fails_twice_then_succeeds_within_backoff_limit() {
        let mut j = job(1, 1, 2);
        let mut names = CountingNames(0);
        let mut pods: Vec<Pod> = Vec::new();
        for (i, outcome) in ["Failed", "Failed", "Succeeded"].into_iter().enumerate() {
            let refs: Vec<&Pod> = pods.iter().collect();
            let a = plan(&j, &refs, t(i as i64), &mut names);
            let made = creates(&a);
            assert_eq!(made.len(), 1, "attempt {i}: {a:?}");
            assert!(condition(&status(&a)).is_none());
            let mut p = made[0].clone();
            advance(&mut j, &a);
            p.status = Some(shoal_api::PodStatus {
                phase: serde_json::from_value(json!(outcome)).unwrap(),
                ..Default::default()
            });
            pods.push(p);
        }
        let refs: Vec<&Pod> = pods.iter().collect();
        let a = plan(&j, &refs, t(5), &mut names);
        assert!(creates(&a).is_empty());
        let s = status(&a);
        assert_eq!((s.active, s.succeeded, s.failed), (0, 1, 2));
        assert_eq!(condition(&s), Some(("Complete", "")));
        assert_eq!(s.completion_time, Some(t(5)));
        advance(&mut j, &a);
        // Finished: nothing more, and no status rewrite.
        assert!(plan(&j, &refs, t(6), &mut names).is_empty());
    }

    #[test]
    fn backoff_exceeded_fails_and_stops_active_pods() {
        let mut j = job(3, 2, 1);
        j.status = Some(JobStatus {
            start_time: Some(t(0)),
            ..Default::default()
        });
        let (a, b, c) = (
            pod("pi-a", "Failed"),
            pod("pi-b", "Failed"),
            pod("pi-c", "Running"),
        );
        let acts = plan(&j, &[&a, &b, &c], t(9), &mut CountingNames(0));
        assert!(creates(&acts).is_empty());
        assert_eq!(deletes(&acts), vec!["Pod/ns/pi-c".to_string()]);
        let s = status(&acts);
        assert_eq!(condition(&s), Some(("Failed", "BackoffLimitExceeded")));
        assert_eq!((s.active, s.failed), (0, 2));
        assert_eq!(s.completion_time, None);
    }

    #[test]
    fn on_failure_restarts_count_against_the_backoff_limit() {
        let mut j = job(1, 1, 2);
        j.spec.template.spec.restart_policy = RestartPolicy::OnFailure;
        let mut p = pod("pi-a", "Running");
        p.status.as_mut().unwrap().container_statuses = vec![shoal_api::ContainerStatus {
            name: "c".into(),
            restart_count: 3,
            ..Default::default()
        }];
        let s = status(&plan(&j, &[&p], t(1), &mut CountingNames(0)));
        assert_eq!(condition(&s), Some(("Failed", "BackoffLimitExceeded")));
    }

    #[test]
    fn active_deadline_fails_the_job() {
        let mut j = job(1, 1, 6);
        j.spec.active_deadline_seconds = Some(30);
        let p = pod("pi-a", "Running");
        let a = plan(&j, &[&p], t(0), &mut CountingNames(0));
        advance(&mut j, &a);
        assert!(deletes(&plan(&j, &[&p], t(29), &mut CountingNames(0))).is_empty());
        let a = plan(&j, &[&p], t(30), &mut CountingNames(0));
        assert_eq!(deletes(&a), vec!["Pod/ns/pi-a".to_string()]);
        assert_eq!(condition(&status(&a)), Some(("Failed", "DeadlineExceeded")));
    }

    #[test]
    fn ttl_after_finished_deletes_the_job() {
        let mut j = job(1, 1, 6);
        j.spec.ttl_seconds_after_finished = Some(60);
        let p = pod("pi-a", "Succeeded");
        let a = plan(&j, &[&p], t(0), &mut CountingNames(0));
        advance(&mut j, &a);
        assert!(plan(&j, &[&p], t(59), &mut CountingNames(0)).is_empty());
        assert_eq!(
            deletes(&plan(&j, &[&p], t(60), &mut CountingNames(0))),
            vec!["Job/ns/pi".to_string()]
        );
    }
}
