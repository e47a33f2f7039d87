//! The cron job reconciler: makes a Job from `spec.jobTemplate` at each time of
//! `spec.schedule` (UTC), applies `concurrencyPolicy`, `suspend` and
//! `startingDeadlineSeconds`, and deletes finished Jobs beyond the history limits.
//! The clock is the caller's `now`, so tests step through minutes without waiting.

use std::cmp::Reverse;

use chrono::{DateTime, Utc};
use shoal_api::{
    ConcurrencyPolicy, CronJob, CronJobStatus, Job, Kind, Object, ObjectMeta, ObjectReference,
    OwnerReference, Schedule,
};

use super::action::{Action, namespace, revision};
use super::job::{finished_at, is_complete, job_key};

/// Missed times looked at, at most, after the last schedule time (Kubernetes gives up
/// at 100 too); the latest of them is the one run.
const MAX_MISSED: usize = 100;

/// The name of the Job for the run scheduled at `t`: `<cronjob>-<minutes since the
/// epoch>`, as Kubernetes names them (so a run is made once, even across leaders).
pub fn job_name(cj: &CronJob, t: DateTime<Utc>) -> String {
    format!("{}-{}", cj.metadata.name, t.timestamp() / 60)
}

/// The latest scheduled time in `(after, now]`, if any.
pub fn latest_due(
    schedule: &Schedule,
    after: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let mut due = None;
    let mut t = after;
    for _ in 0..MAX_MISSED {
        match schedule.next_after(t) {
            Some(n) if n <= now => {
                due = Some(n);
                t = n;
            }
            _ => return due,
        }
    }
    // More than MAX_MISSED runs were missed: run the latest one.
    let mut last = due;
    while let Some(n) = schedule.next_after(t).filter(|n| *n <= now) {
        last = Some(n);
        t = n;
    }
    last
}

/// The Job for the run at `t`.
pub fn new_job(cj: &CronJob, t: DateTime<Utc>) -> Job {
    let tmpl = &cj.spec.job_template;
    Job {
        metadata: ObjectMeta {
            labels: tmpl.metadata.labels.clone(),
            annotations: tmpl.metadata.annotations.clone(),
            owner_references: vec![OwnerReference {
                api_version: "batch/v1".to_string(),
                kind: Kind::CronJob,
                name: cj.metadata.name.clone(),
                uid: cj.metadata.uid.clone().unwrap_or_default(),
                controller: true,
                block_owner_deletion: false,
            }],
            ..ObjectMeta::named(namespace(&cj.metadata), &job_name(cj, t))
        },
        spec: tmpl.spec.clone(),
        status: None,
    }
}

fn delete_job(j: &Job) -> Action {
    Action::Delete {
        key: job_key(j),
        revision: revision(&j.metadata),
    }
}

fn reference(j: &Job) -> ObjectReference {
    ObjectReference {
        kind: Kind::Job,
        namespace: namespace(&j.metadata).to_string(),
        name: j.metadata.name.clone(),
        uid: j.metadata.uid.clone(),
    }
}

/// Plans one pass for `cj` given the Jobs it owns, at time `now`.
///
/// * History: finished Jobs beyond `successfulJobsHistoryLimit` / `failedJobsHistoryLimit`
///   are deleted, oldest first (their pods follow through the garbage collector).
/// * Schedule: the latest time in `(lastScheduleTime or creation, now]` is due (earlier
///   missed runs are dropped, as in Kubernetes). It is skipped when `suspend` is set,
///   when it is more than `startingDeadlineSeconds` old, or (policy `Forbid`) while a Job
///   is active — then `lastScheduleTime` stays, so a Forbid run starts when the active
///   Job ends if it is still within the deadline. `Replace` deletes the active Jobs first.
/// * Status: `active` Jobs, `lastScheduleTime`, `lastSuccessfulTime`; written only when
///   changed.
pub fn plan(cj: &CronJob, owned: &[&Job], now: DateTime<Utc>) -> Vec<Action> {
    let mut actions = Vec::new();
    if cj.metadata.deletion_timestamp.is_some() || cj.metadata.uid.is_none() {
        return actions;
    }
    let old = cj.status.clone().unwrap_or_default();
    let mut status = CronJobStatus {
        active: Vec::new(),
        ..old.clone()
    };
    let live: Vec<&Job> = owned
        .iter()
        .copied()
        .filter(|j| j.metadata.deletion_timestamp.is_none())
        .collect();
    let (mut done, active): (Vec<&Job>, Vec<&Job>) =
        live.iter().partition(|j| finished_at(j).is_some());
    done.sort_by_key(|j| Reverse(finished_at(j)));
    let (ok, failed): (Vec<&Job>, Vec<&Job>) = done.iter().partition(|j| is_complete(j));
    for (list, limit) in [
        (&ok, cj.spec.successful_jobs_history_limit),
        (&failed, cj.spec.failed_jobs_history_limit),
    ] {
        let keep = usize::try_from(limit).unwrap_or(0);
        actions.extend(list.iter().skip(keep).map(|j| delete_job(j)));
    }
    if let Some(t) = ok.iter().filter_map(|j| finished_at(j)).max() {
        status.last_successful_time = Some(status.last_successful_time.map_or(t, |o| o.max(t)));
    }
    let mut active: Vec<&Job> = active;
    active.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));

    let due = Schedule::parse(&cj.spec.schedule).ok().and_then(|s| {
        let since = old
            .last_schedule_time
            .or(cj.metadata.creation_timestamp)
            .unwrap_or(now);
        latest_due(&s, since, now)
    });
    let too_late = |t: DateTime<Utc>| {
        cj.spec
            .starting_deadline_seconds
            .is_some_and(|d| now > t + chrono::Duration::seconds(d))
    };
    if let Some(t) = due
        && !cj.spec.suspend
        && !too_late(t)
    {
        let name = job_name(cj, t);
        let exists = live.iter().any(|j| j.metadata.name == name);
        let run = match cj.spec.concurrency_policy {
            _ if exists => false,
            ConcurrencyPolicy::Allow => true,
            ConcurrencyPolicy::Forbid => active.is_empty(),
            ConcurrencyPolicy::Replace => {
                actions.extend(active.iter().map(|j| delete_job(j)));
                active.clear();
                true
            }
        };
        if run {
            let job = new_job(cj, t);
            status.active.push(reference(&job));
            actions.push(Action::Create(Object::Job(job)));
        }
        if run || exists {
            status.last_schedule_time = Some(t);
        }
    }
    let mut refs: Vec<ObjectReference> = active.iter().map(|j| reference(j)).collect();
    refs.append(&mut status.active);
    refs.sort_by(|a, b| a.name.cmp(&b.name));
    status.active = refs;
    if status != old {
        let mut updated = cj.clone();
        updated.status = Some(status);
        actions.push(Action::Update(Object::CronJob(updated)));
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use shoal_api::JobStatus;

    /// 2023-11-14 22:13:20 UTC; minute boundaries at t(40), t(100), ...
    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn cronjob(schedule: &str, policy: &str) -> CronJob {
        serde_json::from_value(json!({
            "metadata": {"name": "tick", "namespace": "ns", "uid": "c1", "resourceVersion": "3",
                         "creationTimestamp": t(0)},
            "spec": {"schedule": schedule, "concurrencyPolicy": policy,
                     "jobTemplate": {"metadata": {"labels": {"app": "tick"}},
                                     "spec": {"template": {"spec": {"restartPolicy": "Never",
                                              "containers": [{"name": "c", "image": "busybox"}]}}}}}
        }))
        .unwrap()
    }

    fn created(a: &[Action]) -> Vec<Job> {
        a.iter()
            .filter_map(|a| match a {
                Action::Create(Object::Job(j)) => Some(j.clone()),
                _ => None,
            })
            .collect()
    }

    fn deleted(a: &[Action]) -> Vec<String> {
        a.iter()
            .filter_map(|a| match a {
                Action::Delete { key, .. } => Some(key.clone()),
                _ => None,
            })
            .collect()
    }

    fn advance(cj: &mut CronJob, a: &[Action]) {
        for a in a {
            if let Action::Update(Object::CronJob(u)) = a {
                cj.status = u.status.clone();
            }
        }
    }

    /// A Job as the store holds it (with a uid), finished or not.
    fn stored(mut j: Job, finished: Option<(&str, i64)>) -> Job {
        j.metadata.uid = Some(format!("uid-{}", j.metadata.name));
        j.metadata.resource_version = Some("9".into());
        if let Some((type_, at)) = finished {
            let mut c = shoal_api::Condition::new(type_, shoal_api::ConditionStatus::True);
            c.last_transition_time = Some(t(at));
            j.status = Some(JobStatus {
                conditions: vec![c],
                ..Default::default()
            });
        }
        j
    }

    #[test]
    fn runs_each_minute_from_the_template() {
        let mut cj = cronjob("*/1 * * * *", "Allow");
        assert!(created(&plan(&cj, &[], t(30))).is_empty());
        let a = plan(&cj, &[], t(41));
        let jobs = created(&a);
        assert_eq!(jobs.len(), 1);
        let j = &jobs[0];
        assert_eq!(j.metadata.name, format!("tick-{}", t(40).timestamp() / 60));
        assert_eq!(j.metadata.labels["app"], "tick");
        let o = j.metadata.controller_owner().unwrap();
        assert_eq!((o.kind, o.uid.as_str()), (Kind::CronJob, "c1"));
        advance(&mut cj, &a);
        let s = cj.status.clone().unwrap();
        assert_eq!(s.last_schedule_time, Some(t(40)));
        assert_eq!(s.active.len(), 1);
        // The same minute is not run twice.
        let j1 = stored(j.clone(), None);
        assert!(created(&plan(&cj, &[&j1], t(90))).is_empty());
        // Allow: the next minute runs beside the active one.
        let a = plan(&cj, &[&j1], t(100));
        assert_eq!(created(&a).len(), 1);
        advance(&mut cj, &a);
        assert_eq!(cj.status.unwrap().active.len(), 2);
    }

    #[test]
    fn missed_runs_collapse_to_the_latest_and_respect_the_deadline() {
        let mut cj = cronjob("*/1 * * * *", "Allow");
        let jobs = created(&plan(&cj, &[], t(40 + 600 + 5)));
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].metadata.name, job_name(&cj, t(640)));
        cj.spec.starting_deadline_seconds = Some(3);
        assert!(created(&plan(&cj, &[], t(645))).is_empty());
        assert_eq!(created(&plan(&cj, &[], t(642))).len(), 1);
    }

    #[test]
    fn forbid_skips_while_a_job_is_active() {
        let mut cj = cronjob("*/1 * * * *", "Forbid");
        let a = plan(&cj, &[], t(40));
        advance(&mut cj, &a);
        let running = stored(created(&a)[0].clone(), None);
        let a = plan(&cj, &[&running], t(100));
        assert!(created(&a).is_empty());
        assert!(deleted(&a).is_empty());
        // lastScheduleTime stays at the run made.
        advance(&mut cj, &a);
        assert_eq!(cj.status.clone().unwrap().last_schedule_time, Some(t(40)));
        // Once it finished, the due run starts.
        let done = stored(
            created(&plan(&cronjob("*/1 * * * *", "Forbid"), &[], t(40)))[0].clone(),
            Some(("Complete", 110)),
        );
        let a = plan(&cj, &[&done], t(120));
        assert_eq!(created(&a).len(), 1);
        advance(&mut cj, &a);
        assert_eq!(cj.status.unwrap().last_successful_time, Some(t(110)));
    }

    #[test]
    fn replace_deletes_the_active_job_first() {
        let mut cj = cronjob("*/1 * * * *", "Replace");
        let a = plan(&cj, &[], t(40));
        advance(&mut cj, &a);
        let running = stored(created(&a)[0].clone(), None);
        let a = plan(&cj, &[&running], t(100));
        assert_eq!(deleted(&a), vec![job_key(&running)]);
        let new = created(&a);
        assert_eq!(new.len(), 1);
        advance(&mut cj, &a);
        let active = cj.status.unwrap().active;
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].name, new[0].metadata.name);
    }

    #[test]
    fn suspend_makes_no_jobs() {
        let mut cj = cronjob("*/1 * * * *", "Allow");
        cj.spec.suspend = true;
        assert!(created(&plan(&cj, &[], t(200))).is_empty());
    }

    #[test]
    fn history_limits_keep_the_newest_finished_jobs() {
        let mut cj = cronjob("0 0 1 1 *", "Allow");
        cj.spec.successful_jobs_history_limit = 2;
        cj.spec.failed_jobs_history_limit = 1;
        let mk = |min: i64, how: &str| {
            stored(new_job(&cj, t(40 + 60 * min)), Some((how, 60 * min + 50)))
        };
        let jobs = [
            mk(0, "Complete"),
            mk(1, "Complete"),
            mk(2, "Complete"),
            mk(3, "Failed"),
            mk(4, "Failed"),
        ];
        let refs: Vec<&Job> = jobs.iter().collect();
        let mut d = deleted(&plan(&cj, &refs, t(400)));
        d.sort();
        let mut want = vec![job_key(&jobs[0]), job_key(&jobs[3])];
        want.sort();
        assert_eq!(d, want);
    }
}
