//! What `shoalctl` prints for the batch kinds (Job, CronJob) and for init containers:
//! table columns, `describe` lines, and the pod STATUS word while init containers run
//! (`Init:0/2`, `Init:Error`, `Init:CrashLoopBackOff`), all like kubectl. Kept apart
//! from `output` so that each part stays one concern; `output` calls in here.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::output::{age_of, human_age, parse_time};

/// A line of a `describe` page: indent, `Key:` (or heading text), value (None: heading).
pub type DescribeLine = (usize, String, Option<String>);

fn s_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

fn i_at(v: &Value, ptr: &str) -> Option<i64> {
    v.pointer(ptr).and_then(Value::as_i64)
}

fn arr<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The headers of the Job and CronJob tables (base, `-o wide` extras), if `kind` is one.
pub fn headers(kind: &str) -> Option<(&'static [&'static str], &'static [&'static str])> {
    match kind {
        "Job" => Some((
            &["NAME", "COMPLETIONS", "DURATION", "AGE"],
            &["CONTAINERS", "IMAGES", "SELECTOR"],
        )),
        "CronJob" => Some((
            &[
                "NAME",
                "SCHEDULE",
                "SUSPEND",
                "ACTIVE",
                "LAST SCHEDULE",
                "AGE",
            ],
            &["CONTAINERS", "IMAGES", "SELECTOR"],
        )),
        _ => None,
    }
}

/// The `-o wide` columns of a workload: CONTAINERS, IMAGES (of `template`) and `selector`.
pub(crate) fn template_columns(template: Option<&Value>, selector: String) -> Vec<String> {
    let containers = template.map(|t| arr(t, "/spec/containers")).unwrap_or(&[]);
    let names: Vec<&str> = containers.iter().filter_map(|c| s_at(c, "/name")).collect();
    let images: Vec<&str> = containers
        .iter()
        .filter_map(|c| s_at(c, "/image"))
        .collect();
    vec![names.join(","), images.join(","), selector]
}

/// `succeeded/completions` and the run time (start to completion, or to `now`).
pub fn job_completions_and_duration(v: &Value, now: DateTime<Utc>) -> (String, String) {
    let completions = i_at(v, "/spec/completions").unwrap_or(1);
    let succeeded = i_at(v, "/status/succeeded").unwrap_or(0);
    let start = parse_time(v.pointer("/status/startTime"));
    let end = parse_time(v.pointer("/status/completionTime")).unwrap_or(now);
    let duration = start.map_or_else(String::new, |s| human_age(end - s));
    (format!("{succeeded}/{completions}"), duration)
}

/// A Job's or CronJob's row after NAME (with AGE), and its `-o wide` cells.
pub fn row(kind: &str, v: &Value, age: String, now: DateTime<Utc>) -> (Vec<String>, Vec<String>) {
    match kind {
        "Job" => {
            let (completions, duration) = job_completions_and_duration(v, now);
            let uid = s_at(v, "/metadata/uid").unwrap_or("");
            (
                vec![completions, duration, age],
                template_columns(v.pointer("/spec/template"), format!("controller-uid={uid}")),
            )
        }
        _ => {
            let last = match v.pointer("/status/lastScheduleTime") {
                Some(t) if !t.is_null() => age_of(Some(t), now),
                _ => "<none>".to_string(),
            };
            let suspend = v.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true);
            (
                vec![
                    s_at(v, "/spec/schedule").unwrap_or("").to_string(),
                    if suspend { "True" } else { "False" }.to_string(),
                    arr(v, "/status/active").len().to_string(),
                    last,
                    age,
                ],
                template_columns(
                    v.pointer("/spec/jobTemplate/spec/template"),
                    "<none>".to_string(),
                ),
            )
        }
    }
}

/// The pod template of a Job or CronJob (for its containers on the `describe` page).
pub fn pod_template<'a>(kind: &str, v: &'a Value) -> Option<&'a Value> {
    match kind {
        "Job" => v.pointer("/spec/template"),
        "CronJob" => v.pointer("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

/// The `describe` lines of a Job or CronJob, after the common metadata lines.
pub fn describe(kind: &str, v: &Value, now: DateTime<Utc>) -> Vec<DescribeLine> {
    let mut out: Vec<DescribeLine> = Vec::new();
    let mut kv = |ind: usize, k: &str, val: String| out.push((ind, format!("{k}:"), Some(val)));
    let opt = |v: Option<&Value>| match v {
        Some(Value::Number(n)) => n.to_string(),
        _ => "<unset>".to_string(),
    };
    let spec = if kind == "CronJob" {
        kv(
            0,
            "Schedule",
            s_at(v, "/spec/schedule").unwrap_or("").into(),
        );
        kv(
            0,
            "Concurrency Policy",
            s_at(v, "/spec/concurrencyPolicy").unwrap_or("Allow").into(),
        );
        let suspend = v.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true);
        kv(0, "Suspend", if suspend { "True" } else { "False" }.into());
        kv(
            0,
            "Successful Job History Limit",
            i_at(v, "/spec/successfulJobsHistoryLimit")
                .unwrap_or(3)
                .to_string(),
        );
        kv(
            0,
            "Failed Job History Limit",
            i_at(v, "/spec/failedJobsHistoryLimit")
                .unwrap_or(1)
                .to_string(),
        );
        kv(
            0,
            "Starting Deadline Seconds",
            opt(v.pointer("/spec/startingDeadlineSeconds")),
        );
        let last = v.pointer("/status/lastScheduleTime");
        kv(
            0,
            "Last Schedule Time",
            if last.is_some() {
                format!("{} ago", age_of(last, now))
            } else {
                "<unset>".into()
            },
        );
        let active: Vec<&str> = arr(v, "/status/active")
            .iter()
            .filter_map(|r| s_at(r, "/name"))
            .collect();
        kv(
            0,
            "Active Jobs",
            if active.is_empty() {
                "<none>".into()
            } else {
                active.join(", ")
            },
        );
        v.pointer("/spec/jobTemplate/spec")
    } else {
        kv(
            0,
            "Selector",
            format!("controller-uid={}", s_at(v, "/metadata/uid").unwrap_or("")),
        );
        let (completions, duration) = job_completions_and_duration(v, now);
        kv(0, "Completions", completions);
        if !duration.is_empty() {
            kv(0, "Duration", duration);
        }
        kv(
            0,
            "Pods Statuses",
            format!(
                "{} Active / {} Succeeded / {} Failed",
                i_at(v, "/status/active").unwrap_or(0),
                i_at(v, "/status/succeeded").unwrap_or(0),
                i_at(v, "/status/failed").unwrap_or(0)
            ),
        );
        if let Some(c) = arr(v, "/status/conditions")
            .iter()
            .find(|c| s_at(c, "/status") == Some("True"))
        {
            let mut text = s_at(c, "/type").unwrap_or("").to_string();
            if let Some(r) = s_at(c, "/reason").filter(|r| !r.is_empty()) {
                text = format!("{text} ({r})");
            }
            kv(0, "Condition", text);
        }
        v.pointer("/spec")
    };
    if let Some(spec) = spec {
        kv(
            0,
            "Parallelism",
            i_at(spec, "/parallelism").unwrap_or(1).to_string(),
        );
        if kind == "CronJob" {
            kv(
                0,
                "Completions",
                i_at(spec, "/completions").unwrap_or(1).to_string(),
            );
        }
        kv(
            0,
            "Backoff Limit",
            i_at(spec, "/backoffLimit").unwrap_or(6).to_string(),
        );
        kv(
            0,
            "Active Deadline Seconds",
            opt(spec.pointer("/activeDeadlineSeconds")),
        );
        kv(
            0,
            "TTL Seconds After Finished",
            opt(spec.pointer("/ttlSecondsAfterFinished")),
        );
        kv(
            0,
            "Restart Policy",
            s_at(spec, "/template/spec/restartPolicy")
                .unwrap_or("")
                .into(),
        );
    }
    out.push((0, "Pod Template:".to_string(), None));
    out
}

/// The pod's STATUS while it initializes, like kubectl: `Init:<done>/<total>`, or
/// `Init:<reason>` for a failed or waiting init container; None once initialized (then
/// the app containers decide). Also the init containers' restarts.
pub fn init_status(v: &Value) -> (Option<String>, i64) {
    let total = arr(v, "/spec/initContainers").len();
    let mut restarts = 0;
    let mut status = None;
    for (i, c) in arr(v, "/status/initContainerStatuses").iter().enumerate() {
        restarts += i_at(c, "/restartCount").unwrap_or(0);
        if status.is_some() {
            continue;
        }
        let waiting = s_at(c, "/state/waiting/reason").filter(|r| *r != "PodInitializing");
        status = if c.pointer("/state/terminated").is_some() {
            if i_at(c, "/state/terminated/exitCode") == Some(0) {
                continue;
            }
            Some(
                match s_at(c, "/state/terminated/reason").filter(|r| !r.is_empty()) {
                    Some(r) => format!("Init:{r}"),
                    None => match i_at(c, "/state/terminated/signal").filter(|s| *s != 0) {
                        Some(sig) => format!("Init:Signal:{sig}"),
                        None => format!(
                            "Init:ExitCode:{}",
                            i_at(c, "/state/terminated/exitCode").unwrap_or(0)
                        ),
                    },
                },
            )
        } else if let Some(r) = waiting.filter(|r| !r.is_empty()) {
            Some(format!("Init:{r}"))
        } else {
            Some(format!("Init:{i}/{total}"))
        };
    }
    (status, restarts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn job_and_cronjob_rows() {
        let job = json!({"kind": "Job", "metadata": {"name": "pi", "uid": "u1"},
            "spec": {"completions": 3, "template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
            "status": {"succeeded": 2, "startTime": "2026-11-28T11:58:00Z"}});
        let (base, wide) = row("Job", &job, "5m".into(), now());
        assert_eq!(base, vec!["2/3", "2m", "5m"]);
        assert_eq!(wide, vec!["c", "busybox", "controller-uid=u1"]);
        let done = json!({"kind": "Job", "metadata": {"name": "pi"}, "spec": {},
            "status": {"succeeded": 1, "startTime": "2026-11-28T11:00:00Z",
                       "completionTime": "2026-11-28T11:00:45Z"}});
        assert_eq!(
            row("Job", &done, "1h".into(), now()).0,
            vec!["1/1", "45s", "1h"]
        );
        let cj = json!({"kind": "CronJob", "metadata": {"name": "tick"},
            "spec": {"schedule": "*/1 * * * *"},
            "status": {"active": [{"kind": "Job", "name": "tick-1"}], "lastScheduleTime": "2026-11-28T11:59:00Z"}});
        assert_eq!(
            row("CronJob", &cj, "3m".into(), now()).0,
            vec!["*/1 * * * *", "False", "1", "60s", "3m"]
        );
        assert_eq!(headers("CronJob").unwrap().0.len(), 6);
        assert!(headers("Pod").is_none());
    }

    #[test]
    fn init_status_like_kubectl() {
        let pod = |statuses: Value| {
            json!({"kind": "Pod", "spec": {"initContainers": [{"name": "a"}, {"name": "b"}]},
                   "status": {"phase": "Pending", "initContainerStatuses": statuses}})
        };
        let running = json!({"name": "a", "state": {"running": {}}});
        let done =
            json!({"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}});
        let waiting = json!({"name": "b", "state": {"waiting": {"reason": "PodInitializing"}}});
        assert_eq!(
            init_status(&pod(json!([running, waiting]))).0.as_deref(),
            Some("Init:0/2")
        );
        let b_running = json!({"name": "b", "state": {"running": {}}});
        assert_eq!(
            init_status(&pod(json!([done, b_running]))).0.as_deref(),
            Some("Init:1/2")
        );
        let failed = json!({"name": "a", "restartCount": 2, "state": {"terminated": {"exitCode": 1, "reason": "Error"}}});
        assert_eq!(
            init_status(&pod(json!([failed, waiting]))),
            (Some("Init:Error".to_string()), 2)
        );
        let crash = json!({"name": "a", "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}}});
        assert_eq!(
            init_status(&pod(json!([crash, waiting]))).0.as_deref(),
            Some("Init:CrashLoopBackOff")
        );
        let b_done = json!({"name": "b", "state": {"terminated": {"exitCode": 0}}});
        assert_eq!(init_status(&pod(json!([done, b_done]))).0, None);
        // Not reported yet: kubectl shows the phase.
        assert_eq!(init_status(&pod(json!([]))).0, None);
        assert_eq!(init_status(&json!({"spec": {}})), (None, 0));
    }

    #[test]
    fn describe_lines_of_a_job() {
        let job = json!({"kind": "Job", "metadata": {"name": "pi", "uid": "u1"},
            "spec": {"completions": 1, "backoffLimit": 2,
                     "template": {"spec": {"restartPolicy": "Never", "containers": []}}},
            "status": {"succeeded": 1, "failed": 2,
                       "conditions": [{"type": "Complete", "status": "True"}]}});
        let lines = describe("Job", &job, now());
        let get = |k: &str| {
            lines
                .iter()
                .find(|l| l.1 == format!("{k}:"))
                .and_then(|l| l.2.clone())
        };
        assert_eq!(
            get("Pods Statuses").as_deref(),
            Some("0 Active / 1 Succeeded / 2 Failed")
        );
        assert_eq!(get("Backoff Limit").as_deref(), Some("2"));
        assert_eq!(get("Condition").as_deref(), Some("Complete"));
        assert_eq!(get("Restart Policy").as_deref(), Some("Never"));
    }
}
