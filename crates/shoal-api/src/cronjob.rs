//! CronJob: makes a Job from a template on a cron schedule.

use crate::deployment::{PodTemplateMeta, non_negative};
use crate::job::JobSpec;
use crate::meta::{ObjectMeta, ObjectReference, is_default};
use crate::validation::{self as v, ValidationErrors};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A cron job: `metadata`, desired `spec`, observed `status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CronJob {
    /// Name, namespace, labels, server-set fields.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Schedule, policies and the job template.
    pub spec: CronJobSpec,
    /// Active jobs and last schedule time (written by the controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<CronJobStatus>,
}

/// What happens when a run is due while an earlier Job still runs.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum ConcurrencyPolicy {
    /// Start the new Job anyway (the default).
    #[default]
    Allow,
    /// Skip the run.
    Forbid,
    /// Delete the running Jobs, then start the new one.
    Replace,
}

fn three() -> i32 {
    3
}

fn one() -> i32 {
    1
}

/// Desired state of a cron job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CronJobSpec {
    /// Standard 5-field cron expression (`minute hour day-of-month month day-of-week`)
    /// or a nickname such as `@hourly`, in UTC.
    pub schedule: String,
    /// A run missed by more than this many seconds is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_deadline_seconds: Option<i64>,
    /// `Allow` (default), `Forbid` or `Replace`.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// Make no new Jobs (running ones go on).
    #[serde(default, skip_serializing_if = "is_default")]
    pub suspend: bool,
    /// Finished successful Jobs kept (default 3).
    #[serde(default = "three", deserialize_with = "non_negative")]
    pub successful_jobs_history_limit: i32,
    /// Finished failed Jobs kept (default 1).
    #[serde(default = "one", deserialize_with = "non_negative")]
    pub failed_jobs_history_limit: i32,
    /// The Jobs to make.
    pub job_template: JobTemplateSpec,
}

/// The job template of a cron job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobTemplateSpec {
    /// Labels and annotations of the Jobs.
    #[serde(default)]
    pub metadata: PodTemplateMeta,
    /// Spec of the Jobs.
    pub spec: JobSpec,
}

/// Observed state of a cron job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CronJobStatus {
    /// Jobs it made that have not finished.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active: Vec<ObjectReference>,
    /// The scheduled time of the last Job made (or run skipped by Forbid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<DateTime<Utc>>,
    /// When the last Job it made completed successfully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<DateTime<Utc>>,
}

/// A parsed, valid schedule.
#[derive(Debug, Clone)]
pub struct Schedule(croner::Cron);

impl Schedule {
    /// Parses a 5-field cron expression or nickname (`@hourly`, `@daily`, ...); the error
    /// says what is wrong and the accepted form.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let fields = text.split_whitespace().count();
        if !text.trim_start().starts_with('@') && fields != 5 {
            return Err(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week, e.g. \"*/5 * * * *\"), got {fields} in {text:?}"
            ));
        }
        croner::Cron::new(text.trim())
            .parse()
            .map(Schedule)
            .map_err(|e| {
                format!(
                    "invalid cron expression {text:?}: {e} (expected minute hour day-of-month month day-of-week, e.g. \"*/5 * * * *\")"
                )
            })
    }

    /// The first scheduled time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.0.find_next_occurrence(&t, false).ok()
    }
}

impl CronJob {
    /// Checks metadata, the schedule and the job template.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::new();
        self.metadata
            .validate(crate::Kind::CronJob, v::check_dns1123_subdomain, &mut errs);
        // Jobs are named `<cronjob>-<minutes since the epoch>` (up to 11 digits).
        if self.metadata.name.len() > 52 {
            errs.push(
                "metadata.name",
                format!(
                    "must be at most 52 characters (jobs are named <cronjob>-<time>), got {}",
                    self.metadata.name.len()
                ),
            );
        }
        if let Err(e) = Schedule::parse(&self.spec.schedule) {
            errs.push("spec.schedule", e);
        }
        if let Some(d) = self.spec.starting_deadline_seconds
            && d < 0
        {
            errs.push(
                "spec.startingDeadlineSeconds",
                format!("must not be negative, got {d}"),
            );
        }
        let t = &self.spec.job_template;
        v::validate_labels(
            &t.metadata.labels,
            "spec.jobTemplate.metadata.labels",
            &mut errs,
        );
        v::validate_annotations(
            &t.metadata.annotations,
            "spec.jobTemplate.metadata.annotations",
            &mut errs,
        );
        t.spec.validate("spec.jobTemplate.spec", &mut errs);
        errs.into_result()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Object, parse_manifests};

    const CJ: &str = "apiVersion: batch/v1
kind: CronJob
metadata: {name: tick}
spec:
  schedule: '*/1 * * * *'
  concurrencyPolicy: Forbid
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers: [{name: c, image: busybox}]
";

    #[test]
    fn parses_with_defaults() {
        let objs = parse_manifests("cj.yaml", CJ).unwrap();
        let Object::CronJob(c) = &objs[0] else {
            panic!("{objs:?}")
        };
        assert_eq!(c.spec.concurrency_policy, ConcurrencyPolicy::Forbid);
        assert_eq!(
            (
                c.spec.successful_jobs_history_limit,
                c.spec.failed_jobs_history_limit
            ),
            (3, 1)
        );
        assert!(!c.spec.suspend);
    }

    #[test]
    fn invalid_schedules_name_the_field() {
        for bad in ["*/1 * * *", "61 * * * *", "* * * * * *", "every minute"] {
            let text = CJ.replace("'*/1 * * * *'", &format!("'{bad}'"));
            let e = parse_manifests("cj.yaml", &text).unwrap_err().to_string();
            assert!(e.contains("spec.schedule"), "{bad}: {e}");
            assert!(e.contains("minute hour"), "{bad}: {e}");
        }
        let text = CJ.replace("restartPolicy: OnFailure", "restartPolicy: Always");
        let e = parse_manifests("cj.yaml", &text).unwrap_err().to_string();
        assert!(
            e.contains("spec.jobTemplate.spec.template.spec.restartPolicy"),
            "{e}"
        );
    }

    #[test]
    fn next_after_follows_the_schedule() {
        let s = Schedule::parse("*/15 * * * *").unwrap();
        let t = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap(); // 22:13:20
        let n = s.next_after(t).unwrap();
        assert_eq!(n.timestamp(), 1_700_000_100); // 22:15:00
        assert_eq!(s.next_after(n).unwrap().timestamp(), 1_700_001_000);
        assert!(Schedule::parse("@hourly").is_ok());
    }
}
