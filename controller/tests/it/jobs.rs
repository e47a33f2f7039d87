//! The Job and CronJob reconcilers and the garbage collector against a real controller.
//! No node and no agent: the test writes the pods' phases itself (a SIMULATED agent), so
//! every step of a Job is driven and checked exactly. `agent/tests/it/batch.rs` runs
//! Jobs with real containers.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{TestCluster, eventually};
use crate::reconcile::{Api, condition, s};

fn job(name: &str, completions: i64, parallelism: i64, backoff: i64, ttl: Option<i64>) -> Value {
    let mut j = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "completions": completions, "parallelism": parallelism, "backoffLimit": backoff,
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"restartPolicy": "Never",
                                  "containers": [{"name": "c", "image": "busybox"}]}}
        }
    });
    if let Some(t) = ttl {
        j["spec"]["ttlSecondsAfterFinished"] = json!(t);
    }
    j
}

async fn job_pods(api: &Api, name: &str) -> Result<Vec<Value>, String> {
    Ok(api
        .list("Pod", "default")
        .await?
        .into_iter()
        .filter(|p| s(p, "/metadata/labels/job-name") == name)
        .collect())
}

/// Waits until the Job's pods number `total`, `active` of them without a final phase.
async fn wait_pods(api: &Api, name: &str, total: usize, active: usize) -> Vec<Value> {
    eventually(
        &format!("job {name}: {total} pods, {active} active"),
        Duration::from_secs(20),
        || async {
            let pods = job_pods(api, name).await?;
            let running = pods
                .iter()
                .filter(|p| !matches!(s(p, "/status/phase"), "Succeeded" | "Failed"))
                .count();
            if pods.len() == total && running == active {
                Ok(pods)
            } else {
                Err(format!("{} pods, {running} active", pods.len()))
            }
        },
    )
    .await
}

/// Writes a pod's phase as its agent would.
async fn finish(api: &Api, pod: &Value, phase: &str) {
    let name = s(pod, "/metadata/name").to_string();
    eventually(
        &format!("pod {name} {phase}"),
        Duration::from_secs(10),
        || async {
            let mut p = api.get("Pod", "default", &name).await?;
            p["status"] = json!({"phase": phase});
            api.update(&p).await.map(|_| ())
        },
    )
    .await;
}

async fn wait_finished(api: &Api, name: &str, type_: &str) -> Value {
    eventually(
        &format!("job {name} {type_}"),
        Duration::from_secs(20),
        || async {
            let j = api.get("Job", "default", name).await?;
            match condition(&j, type_) {
                Some(c) if c["status"] == "True" => Ok(j),
                _ => Err(format!("status {}", j["status"])),
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_run_to_completions_within_parallelism_and_backoff() {
    let c = TestCluster::with(1, 5000, &[]);
    c.wait_leader(&[1]).await;
    let api = Api::new(&c);
    let created = api.create(&job("work", 3, 2, 1, None)).await.unwrap();
    let uid = s(&created, "/metadata/uid").to_string();

    // Two at a time, labelled and owned.
    let pods = wait_pods(&api, "work", 2, 2).await;
    for p in &pods {
        assert_eq!(s(p, "/metadata/labels/controller-uid"), uid);
        assert_eq!(s(p, "/metadata/labels/app"), "work");
        assert_eq!(s(p, "/metadata/ownerReferences/0/kind"), "Job");
        assert_eq!(s(p, "/metadata/ownerReferences/0/uid"), uid);
    }
    // A failure within backoffLimit 1 is replaced.
    finish(&api, &pods[0], "Failed").await;
    let pods = wait_pods(&api, "work", 3, 2).await;
    // Successes: once 2 succeeded only 1 more completion is needed, so 1 stays active.
    let mut active: Vec<Value> = pods
        .into_iter()
        .filter(|p| s(p, "/status/phase") != "Failed")
        .collect();
    finish(&api, &active.remove(0), "Succeeded").await;
    let pods = wait_pods(&api, "work", 4, 2).await;
    let active: Vec<Value> = pods
        .into_iter()
        .filter(|p| !matches!(s(p, "/status/phase"), "Succeeded" | "Failed"))
        .collect();
    finish(&api, &active[0], "Succeeded").await;
    finish(&api, &active[1], "Succeeded").await;
    let j = wait_finished(&api, "work", "Complete").await;
    assert_eq!(j["status"]["succeeded"], 3, "{}", j["status"]);
    assert_eq!(j["status"]["failed"], 1, "{}", j["status"]);
    assert_eq!(j["status"]["active"], 0, "{}", j["status"]);
    assert!(j["status"]["completionTime"].is_string());
    // Finished: no pod is added later.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(job_pods(&api, "work").await.unwrap().len(), 4);

    // backoffLimit 0: the first failure fails the Job; ttl 1 s then deletes it and the
    // garbage collector its pod.
    api.create(&job("fragile", 1, 1, 0, Some(1))).await.unwrap();
    let pods = wait_pods(&api, "fragile", 1, 1).await;
    finish(&api, &pods[0], "Failed").await;
    let j = wait_finished(&api, "fragile", "Failed").await;
    assert_eq!(
        condition(&j, "Failed").unwrap()["reason"],
        "BackoffLimitExceeded"
    );
    eventually(
        "job fragile and its pod deleted",
        Duration::from_secs(20),
        || async {
            let left = job_pods(&api, "fragile").await?;
            match api.get("Job", "default", "fragile").await {
                Err(e) if e.contains("NotFound") && left.is_empty() => Ok(()),
                other => Err(format!("job: {other:?}, {} pods", left.len())),
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_of_a_deleted_cronjob_are_collected_with_their_pods() {
    let c = TestCluster::with(1, 5000, &[]);
    c.wait_leader(&[1]).await;
    let api = Api::new(&c);
    // A schedule that does not fire during the test; the Job is made by hand, owned by it.
    let cj = api
        .create(&json!({
            "apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "yearly", "namespace": "default"},
            "spec": {"schedule": "0 0 1 1 *", "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}}}
        }))
        .await
        .unwrap();
    let mut j = job("yearly-manual", 1, 1, 6, None);
    j["metadata"]["ownerReferences"] = json!([{"apiVersion": "batch/v1", "kind": "CronJob",
        "name": "yearly", "uid": s(&cj, "/metadata/uid"), "controller": true}]);
    api.create(&j).await.unwrap();
    wait_pods(&api, "yearly-manual", 1, 1).await;
    eventually(
        "cronjob lists its active job",
        Duration::from_secs(20),
        || async {
            let cj = api.get("CronJob", "default", "yearly").await?;
            match cj.pointer("/status/active/0/name").and_then(Value::as_str) {
                Some("yearly-manual") => Ok(()),
                _ => Err(format!("status {}", cj["status"])),
            }
        },
    )
    .await;
    api.delete("CronJob", "default", "yearly").await.unwrap();
    eventually("job and pod collected", Duration::from_secs(20), || async {
        let left = job_pods(&api, "yearly-manual").await?;
        match api.get("Job", "default", "yearly-manual").await {
            Err(e) if e.contains("NotFound") && left.is_empty() => Ok(()),
            other => Err(format!("job: {other:?}, {} pods", left.len())),
        }
    })
    .await;
}
