//! Job: pods made from a template, run until a number of them succeed.

use crate::deployment::{PodTemplateSpec, non_negative};
use crate::meta::{Condition, ObjectMeta};
use crate::pod::RestartPolicy;
use crate::validation::{self as v, ValidationErrors};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Label every pod of a Job carries: the Job's name.
pub const JOB_NAME_LABEL: &str = "job-name";
/// Label every pod of a Job carries: the Job's uid.
pub const CONTROLLER_UID_LABEL: &str = "controller-uid";

/// A job: `metadata`, desired `spec`, observed `status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Job {
    /// Name, namespace, labels, server-set fields.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Completions, parallelism, limits and the pod template.
    pub spec: JobSpec,
    /// Pod counts and conditions (written by the controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<JobStatus>,
}

fn one() -> i32 {
    1
}

fn default_backoff() -> i32 {
    6
}

/// Desired state of a job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobSpec {
    /// Succeeded pods needed for the job to be complete (default 1).
    #[serde(default = "one", deserialize_with = "non_negative")]
    pub completions: i32,
    /// Pods running at the same time, at most (default 1; 0 pauses the job).
    #[serde(default = "one", deserialize_with = "non_negative")]
    pub parallelism: i32,
    /// Failed pods tolerated before the job fails (default 6).
    #[serde(default = "default_backoff", deserialize_with = "non_negative")]
    pub backoff_limit: i32,
    /// Seconds after the job started when it fails and its pods are stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<i64>,
    /// Seconds after the job finished when it is deleted (with its pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<i64>,
    /// The pods to run; `restartPolicy` must be `Never` or `OnFailure`.
    pub template: PodTemplateSpec,
}

/// Observed state of a job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobStatus {
    /// Pods pending or running.
    #[serde(default)]
    pub active: i32,
    /// Pods that succeeded.
    #[serde(default)]
    pub succeeded: i32,
    /// Pods that failed.
    #[serde(default)]
    pub failed: i32,
    /// When the controller first saw the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<DateTime<Utc>>,
    /// When the job completed (only for `Complete`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<DateTime<Utc>>,
    /// `Complete` or `Failed` (reason `BackoffLimitExceeded` or `DeadlineExceeded`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl JobStatus {
    /// The finishing condition (`Complete` or `Failed` with status True), if any.
    pub fn finished(&self) -> Option<&Condition> {
        self.conditions.iter().find(|c| {
            (c.type_ == "Complete" || c.type_ == "Failed")
                && c.status == crate::ConditionStatus::True
        })
    }
}

impl Job {
    /// Checks metadata and spec (see [`JobSpec::validate`]).
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::new();
        self.metadata
            .validate(crate::Kind::Job, v::check_dns1123_subdomain, &mut errs);
        // Pod names are `<job>-<5 characters>`: keep the job name a label.
        if self.metadata.name.len() > 63 - 6 {
            errs.push(
                "metadata.name",
                format!(
                    "must be at most 57 characters (pods are named <job>-<suffix>), got {}",
                    self.metadata.name.len()
                ),
            );
        }
        self.spec.validate("spec", &mut errs);
        errs.into_result()
    }
}

impl JobSpec {
    /// Checks counts, deadlines and the template (restartPolicy `Never` or `OnFailure`,
    /// no `nodeName`, no `job-name`/`controller-uid` labels, which the controller sets).
    pub fn validate(&self, path: &str, errs: &mut ValidationErrors) {
        let p = |f: &str| v::join(path, f);
        if self.completions < 1 {
            errs.push(p("completions"), "must be at least 1");
        }
        if let Some(d) = self.active_deadline_seconds
            && d < 1
        {
            errs.push(
                p("activeDeadlineSeconds"),
                format!("must be a positive number of seconds, got {d}"),
            );
        }
        if let Some(t) = self.ttl_seconds_after_finished
            && t < 0
        {
            errs.push(
                p("ttlSecondsAfterFinished"),
                format!("must not be negative, got {t}"),
            );
        }
        let t = &self.template;
        let tp = p("template");
        v::validate_labels(&t.metadata.labels, &v::join(&tp, "metadata.labels"), errs);
        v::validate_annotations(
            &t.metadata.annotations,
            &v::join(&tp, "metadata.annotations"),
            errs,
        );
        for l in [JOB_NAME_LABEL, CONTROLLER_UID_LABEL] {
            if t.metadata.labels.contains_key(l) {
                errs.push(
                    v::join(&tp, "metadata.labels"),
                    format!("must not set {l:?}: the controller sets it"),
                );
            }
        }
        let sp = v::join(&tp, "spec");
        t.spec.validate(&sp, errs);
        if t.spec.restart_policy == RestartPolicy::Always {
            errs.push(
                v::join(&sp, "restartPolicy"),
                "must be Never or OnFailure for a Job (Always is the default: set it)",
            );
        }
        if t.spec.node_name.is_some() {
            errs.push(v::join(&sp, "nodeName"), "must not be set in a template");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Object, parse_manifests};

    const JOB: &str = "apiVersion: batch/v1
kind: Job
metadata: {name: pi}
spec:
  completions: 3
  parallelism: 2
  backoffLimit: 2
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox, command: [sh, -c, 'exit 0']}]
";

    #[test]
    fn parses_with_upstream_api_version_and_defaults() {
        let objs = parse_manifests("job.yaml", JOB).unwrap();
        let Object::Job(j) = &objs[0] else {
            panic!("{objs:?}")
        };
        assert_eq!(
            (j.spec.completions, j.spec.parallelism, j.spec.backoff_limit),
            (3, 2, 2)
        );
        let j: Job = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "x"},
            "spec": {"template": {"spec": {"restartPolicy": "OnFailure",
                     "containers": [{"name": "c", "image": "b"}]}}}
        }))
        .unwrap();
        assert_eq!(
            (j.spec.completions, j.spec.parallelism, j.spec.backoff_limit),
            (1, 1, 6)
        );
        j.validate().unwrap();
    }

    #[test]
    fn restart_policy_always_is_rejected_with_the_field() {
        let text = JOB.replace("restartPolicy: Never", "restartPolicy: Always");
        let e = parse_manifests("job.yaml", &text).unwrap_err().to_string();
        assert!(e.contains("spec.template.spec.restartPolicy"), "{e}");
        assert!(e.contains("Never or OnFailure"), "{e}");
        let text = JOB.replace("      restartPolicy: Never\n", "");
        let e = parse_manifests("job.yaml", &text).unwrap_err().to_string();
        assert!(e.contains("spec.template.spec.restartPolicy"), "{e}");
    }

    #[test]
    fn counts_and_deadlines_are_checked() {
        let text = JOB.replace("completions: 3", "completions: 0");
        let e = parse_manifests("job.yaml", &text).unwrap_err().to_string();
        assert!(e.contains("spec.completions"), "{e}");
        let text = JOB.replace("backoffLimit: 2", "backoffLimit: -1");
        let e = parse_manifests("job.yaml", &text).unwrap_err().to_string();
        assert!(e.contains("backoffLimit"), "{e}");
        let text = JOB.replace("backoffLimit: 2", "activeDeadlineSeconds: 0");
        let e = parse_manifests("job.yaml", &text).unwrap_err().to_string();
        assert!(e.contains("spec.activeDeadlineSeconds"), "{e}");
    }
}
