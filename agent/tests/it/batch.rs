//! Init containers, Jobs and CronJobs end to end: a real controller (its Job and CronJob
//! reconcilers, scheduler and garbage collector) and a real agent running containers.

use std::time::Duration;

use serde_json::json;
use shoal_api::{CronJob, Job, Object, Pod, PodPhase};
use shoal_proto::{DeleteRequest, ListRequest, ObjectRequest};

use super::{Cluster, cluster, eventually, get_obj};

async fn create(c: &Cluster, object: serde_json::Value) {
    let mut cl = cluster(&c.ctl_addr).await.unwrap();
    cl.create(ObjectRequest {
        object_json: object.to_string(),
    })
    .await
    .expect("create");
}

async fn pods_labelled(c: &Cluster, selector: &str) -> Result<Vec<Pod>, String> {
    let mut cl = cluster(&c.ctl_addr).await?;
    let r = cl
        .list(ListRequest {
            kind: "Pod".into(),
            namespace: "default".into(),
            label_selector: selector.into(),
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    Ok(r.items_json
        .iter()
        .filter_map(|j| match Object::from_json_str(j) {
            Ok(Object::Pod(p)) => Some(p),
            _ => None,
        })
        .collect())
}

fn phase(p: &Pod) -> Option<PodPhase> {
    p.status.as_ref().map(|s| s.phase)
}

fn init_pod(name: &str, node: &str, policy: &str, second_init: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": node,
            "restartPolicy": policy,
            "terminationGracePeriodSeconds": 2,
            "volumes": [{"name": "work", "emptyDir": {}}],
            "initContainers": [
                {"name": "write", "image": "busybox",
                 "command": ["sh", "-c", "echo hello > /work/msg"],
                 "volumeMounts": [{"name": "work", "mountPath": "/work"}]},
                {"name": "append", "image": "busybox",
                 "command": ["sh", "-c", second_init],
                 "volumeMounts": [{"name": "work", "mountPath": "/work"}]}
            ],
            "containers": [{"name": "main", "image": "busybox",
                "command": ["sh", "-c", "test \"$(cat /work/msg)\" = 'hello world'"],
                "volumeMounts": [{"name": "work", "mountPath": "/work"}]}]
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "requires root: real containers, cgroups and namespaces"]
async fn init_containers_run_in_order_and_share_volumes() {
    let c = Cluster::start("agent-it-init").await;
    // The second init container sees the first one's file; the app checks both wrote.
    create(
        &c,
        init_pod(
            "init-ok",
            &c.node,
            "Never",
            "echo \"$(cat /work/msg) world\" > /work/msg",
        ),
    )
    .await;
    // A failing init container with restartPolicy Never fails the pod; the app never runs.
    create(&c, init_pod("init-never", &c.node, "Never", "exit 4")).await;
    // With Always it is restarted (back-off) and the pod stays Pending.
    create(&c, init_pod("init-always", &c.node, "Always", "exit 4")).await;

    let ok = c
        .wait_pod("init-ok", "Succeeded", Duration::from_secs(90), |p, _| {
            phase(p) == Some(PodPhase::Succeeded)
        })
        .await;
    let s = ok.status.unwrap();
    assert_eq!(s.init_container_statuses.len(), 2);
    for cs in &s.init_container_statuses {
        let t = cs.state.terminated.as_ref().expect("init terminated");
        assert_eq!(t.exit_code, 0, "{cs:?}");
    }
    // Ordered: the second init container started after the first finished.
    let end0 = s.init_container_statuses[0]
        .state
        .terminated
        .as_ref()
        .unwrap()
        .finished_at;
    let start1 = s.init_container_statuses[1]
        .state
        .terminated
        .as_ref()
        .unwrap()
        .started_at;
    assert!(start1 >= end0, "{start1:?} before {end0:?}");
    assert_eq!(
        s.container_statuses[0]
            .state
            .terminated
            .as_ref()
            .unwrap()
            .exit_code,
        0
    );

    let failed = c
        .wait_pod("init-never", "Failed", Duration::from_secs(60), |p, _| {
            phase(p) == Some(PodPhase::Failed)
        })
        .await;
    let s = failed.status.unwrap();
    let t = s.init_container_statuses[1]
        .state
        .terminated
        .clone()
        .unwrap();
    assert_eq!((t.exit_code, t.reason.as_str()), (4, "Error"));
    assert_eq!(s.init_container_statuses[1].restart_count, 0);
    let w = s.container_statuses[0].state.waiting.clone().unwrap();
    assert_eq!(w.reason, "PodInitializing", "{s:?}");

    let looping = c
        .wait_pod(
            "init-always",
            "init container restarted",
            Duration::from_secs(60),
            |p, _| {
                p.status
                    .as_ref()
                    .and_then(|s| s.init_container_statuses.get(1))
                    .is_some_and(|cs| cs.restart_count >= 2)
            },
        )
        .await;
    let s = looping.status.unwrap();
    assert_eq!(s.phase, PodPhase::Pending);
    assert!(s.container_statuses[0].state.running.is_none());
    for name in ["init-ok", "init-never", "init-always"] {
        c.delete_pod(name).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "requires root: real containers, cgroups and namespaces"]
async fn a_job_retries_failed_pods_and_its_pods_go_with_it() {
    let c = Cluster::start("agent-it-job").await;
    // Each attempt counts in a file on the host: attempts 1 and 2 fail, 3 succeeds.
    let state = c.dir.path().join("job-state");
    std::fs::create_dir_all(&state).unwrap();
    let job = |name: &str, script: &str, backoff: i32| {
        json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "backoffLimit": backoff,
                "template": {"spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 2,
                    "volumes": [{"name": "state", "hostPath": {"path": state.to_str().unwrap()}}],
                    "containers": [{"name": "main", "image": "busybox",
                        "command": ["sh", "-c", script],
                        "volumeMounts": [{"name": "state", "mountPath": "/state"}]}]
                }}
            }
        })
    };
    create(
        &c,
        job(
            "third-time",
            "n=$(cat /state/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /state/n; [ $n -ge 3 ]",
            3,
        ),
    )
    .await;
    create(&c, job("hopeless", "exit 1", 1)).await;

    let addr = c.ctl_addr.clone();
    let done: Job = eventually("job third-time Complete", Duration::from_secs(120), || {
        let addr = addr.clone();
        async move {
            let j: Job = get_obj(&addr, "default", "third-time").await?;
            match j.status.as_ref().and_then(|s| s.finished()) {
                Some(c) if c.type_ == "Complete" => Ok(j),
                _ => Err(format!("status {:?}", j.status)),
            }
        }
    })
    .await;
    let s = done.status.unwrap();
    assert_eq!((s.succeeded, s.failed, s.active), (1, 2, 0), "{s:?}");
    assert!(s.completion_time.is_some());
    assert_eq!(
        std::fs::read_to_string(state.join("n")).unwrap().trim(),
        "3"
    );
    let pods = pods_labelled(&c, "job-name=third-time").await.unwrap();
    assert_eq!(pods.len(), 3, "{pods:?}");
    let uid = done.metadata.uid.clone().unwrap();
    for p in &pods {
        assert_eq!(p.metadata.labels["controller-uid"], uid);
        let o = p.metadata.controller_owner().unwrap();
        assert_eq!(
            (o.kind, o.uid.as_str()),
            (shoal_api::Kind::Job, uid.as_str())
        );
    }
    let failed: Job = eventually("job hopeless Failed", Duration::from_secs(60), || {
        let addr = addr.clone();
        async move {
            let j: Job = get_obj(&addr, "default", "hopeless").await?;
            match j.status.as_ref().and_then(|s| s.finished()) {
                Some(c) if c.type_ == "Failed" => Ok(j),
                _ => Err(format!("status {:?}", j.status)),
            }
        }
    })
    .await;
    let s = failed.status.unwrap();
    assert_eq!(s.finished().unwrap().reason, "BackoffLimitExceeded");
    assert_eq!(s.failed, 2, "{s:?}");

    // Deleting the Job lets the garbage collector remove its pods.
    let mut cl = cluster(&c.ctl_addr).await.unwrap();
    cl.delete(DeleteRequest {
        kind: "Job".into(),
        namespace: "default".into(),
        name: "third-time".into(),
        resource_version: 0,
    })
    .await
    .unwrap();
    let cc = &c;
    eventually(
        "job pods collected",
        Duration::from_secs(60),
        || async move {
            let left = pods_labelled(cc, "job-name=third-time").await?;
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{} pods left", left.len()))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "requires root: real containers, cgroups and namespaces"]
async fn a_cronjob_runs_a_job_on_the_next_minute() {
    let c = Cluster::start("agent-it-cron").await;
    create(
        &c,
        json!({
            "apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "tick", "namespace": "default"},
            "spec": {
                "schedule": "*/1 * * * *",
                "concurrencyPolicy": "Forbid",
                "jobTemplate": {"spec": {"template": {"spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 2,
                    "containers": [{"name": "main", "image": "busybox", "command": ["true"]}]
                }}}}
            }
        }),
    )
    .await;
    // Two budgets, so a loaded machine slows neither into the other: at most a minute
    // (plus slack) until the schedule fires, then the run itself.
    let cc = &c;
    let fired: CronJob = eventually(
        "cronjob tick scheduled",
        Duration::from_secs(80),
        || async move {
            let cj: CronJob = get_obj(&cc.ctl_addr, "default", "tick").await?;
            match cj.status.as_ref() {
                Some(s) if s.last_schedule_time.is_some() => Ok(cj),
                s => Err(format!("status {s:?}")),
            }
        },
    )
    .await;
    let scheduled = fired.status.unwrap().last_schedule_time.unwrap();
    let job_name = format!("tick-{}", scheduled.timestamp() / 60);
    let cj: CronJob = eventually("a run of cronjob tick", Duration::from_secs(90), || {
        let job_name = job_name.clone();
        async move {
            let cj: CronJob = get_obj(&cc.ctl_addr, "default", "tick").await?;
            match cj.status.as_ref() {
                Some(s) if s.last_successful_time.is_some() => Ok(cj),
                s => {
                    // Say where the run is stuck: the Job's status and its pods'.
                    let job = get_obj::<Job>(&cc.ctl_addr, "default", &job_name)
                        .await
                        .map(|j| format!("{:?}", j.status));
                    let pods = pods_labelled(cc, &format!("job-name={job_name}"))
                        .await
                        .map(|ps| {
                            ps.iter()
                                .map(|p| {
                                    format!(
                                        "{} on {:?}: {:?}",
                                        p.metadata.name, p.spec.node_name, p.status
                                    )
                                })
                                .collect::<Vec<_>>()
                        });
                    Err(format!(
                        "status {s:?}; job {job_name}: {job:?}; pods {pods:?}"
                    ))
                }
            }
        }
    })
    .await;
    let t = cj.status.unwrap().last_schedule_time.unwrap();
    assert_eq!(chrono::Timelike::second(&t), 0, "{t}");
    let job: Job = get_obj(
        &c.ctl_addr,
        "default",
        &format!("tick-{}", t.timestamp() / 60),
    )
    .await
    .unwrap();
    assert_eq!(job.status.unwrap().succeeded, 1);
}
