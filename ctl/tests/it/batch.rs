//! Jobs and CronJobs through the real `shoalctl`: apply with the upstream apiVersion,
//! the kubectl columns, `describe`, aliases, `get all`, and a bad schedule refused with
//! the field named. No node runs pods here: the Job's pod stays unscheduled.

use std::time::Duration;

use crate::harness::{Controller, eventually};

const JOB: &str = "apiVersion: batch/v1
kind: Job
metadata: {name: pi}
spec:
  completions: 2
  backoffLimit: 3
  template:
    spec:
      restartPolicy: Never
      containers: [{name: pi, image: busybox}]
";

const CRONJOB: &str = "apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: '0 3 * * *'
  suspend: true
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers: [{name: c, image: busybox}]
";

#[test]
fn jobs_and_cronjobs_apply_get_and_describe() {
    let c = Controller::start();
    let f = c.write("batch.yaml", &format!("{JOB}---\n{CRONJOB}"));
    let out = c.ctl(&["apply", "-f", f.to_str().unwrap()]).ok();
    assert!(out.contains("job/pi created"), "{out}");
    assert!(out.contains("cronjob/nightly created"), "{out}");

    // The controller's Job reconciler makes the first pod (parallelism 1).
    let pods = eventually("a pod of job pi", Duration::from_secs(20), || {
        let out = c
            .ctl(&["get", "pods", "-l", "job-name=pi", "-o", "name"])
            .ok();
        if out.trim().is_empty() {
            Err("no pod yet".to_string())
        } else {
            Ok(out)
        }
    });
    assert_eq!(pods.lines().count(), 1, "{pods}");
    assert!(pods.starts_with("pod/pi-"), "{pods}");

    let out = c.ctl(&["get", "jobs"]).ok();
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "COMPLETIONS", "DURATION", "AGE"], "{out}");
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..2], ["pi", "0/2"], "{out}");

    let out = c.ctl(&["get", "cj"]).ok();
    assert!(
        out.lines()
            .next()
            .unwrap()
            .starts_with("NAME      SCHEDULE    SUSPEND   ACTIVE   LAST SCHEDULE   AGE"),
        "{out}"
    );
    let row = out.lines().nth(1).unwrap();
    assert!(
        row.starts_with("nightly   0 3 * * *   True      0        <none>"),
        "{out}"
    );

    let out = c.ctl(&["describe", "job", "pi"]).ok();
    for want in [
        "Completions:",
        "Pods Statuses:",
        "1 Active / 0 Succeeded / 0 Failed",
        "Backoff Limit:",
        "Restart Policy:",
        "Pod Template:",
    ] {
        assert!(out.contains(want), "{want:?} missing in:\n{out}");
    }
    let out = c.ctl(&["describe", "cronjob", "nightly"]).ok();
    assert!(out.contains("Schedule:"), "{out}");
    assert!(out.contains("0 3 * * *"), "{out}");

    let out = c.ctl(&["get", "all"]).ok();
    assert!(out.contains("job/pi"), "{out}");
    assert!(out.contains("cronjob/nightly"), "{out}");

    let out = c.ctl(&["delete", "job", "pi"]).ok();
    assert!(out.contains("\"pi\" deleted"), "{out}");
    eventually("pods of job pi collected", Duration::from_secs(20), || {
        let out = c
            .ctl(&["get", "pods", "-l", "job-name=pi", "-o", "name"])
            .ok();
        if out.trim().is_empty() {
            Ok(())
        } else {
            Err(out)
        }
    });
}

#[test]
fn bad_schedules_and_restart_policies_are_refused_with_the_field() {
    let c = Controller::start();
    let f = c.write("cj.yaml", &CRONJOB.replace("'0 3 * * *'", "'0 3 * *'"));
    let e = c.ctl(&["apply", "-f", f.to_str().unwrap()]).err();
    assert!(e.contains("spec.schedule"), "{e}");
    assert!(e.contains("expected 5 fields"), "{e}");
    let f = c.write(
        "job.yaml",
        &JOB.replace("restartPolicy: Never", "restartPolicy: Always"),
    );
    let e = c.ctl(&["apply", "-f", f.to_str().unwrap()]).err();
    assert!(e.contains("spec.template.spec.restartPolicy"), "{e}");
}
