//! The metrics listener of real controllers (docs/observability.md): every documented
//! metric is served with its type, the gRPC request counter moves with requests, Raft
//! metrics follow the cluster, `/readyz` says whether a leader with a quorum answers,
//! and the standard gRPC health service answers SERVING.

use std::time::Duration;

use shoal_testkit::metrics::{Scrape, http_get, missing_documented, scrape};

use crate::harness::{TestCluster, create_pod, eventually};

/// `/metrics` of `addr`, parsed (blocking I/O kept off the runtime's workers).
async fn scrape_of(addr: &str) -> Result<Scrape, String> {
    let addr = addr.to_string();
    tokio::task::spawn_blocking(move || scrape(&addr))
        .await
        .map_err(|e| e.to_string())?
}

async fn get(addr: &str, path: &'static str) -> Result<(u16, String), String> {
    let addr = addr.to_string();
    tokio::task::spawn_blocking(move || http_get(&addr, path))
        .await
        .map_err(|e| e.to_string())?
}

fn creates(s: &Scrape) -> f64 {
    s.value(
        "shoal_grpc_requests_total",
        &[
            ("service", "shoal.v1.Cluster"),
            ("method", "Create"),
            ("code", "OK"),
        ],
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_readiness_and_health_of_three_members() {
    let mut c = TestCluster::start(3);
    let leader = c.wait_leader(&[1, 2, 3]).await;

    // Every member serves every documented controller metric, with its type.
    for id in 1..=3 {
        let m = c.metrics_addr(id);
        let s = scrape_of(&m).await.expect("scrape");
        let bad = missing_documented(&s, "controller");
        assert!(bad.is_empty(), "member {id} ({m}): {bad:#?}");
        assert_eq!(s.value("shoal_raft_members", &[]), Some(3.0), "member {id}");
        assert!(
            s.value("shoal_process_resident_memory_bytes", &[])
                .is_some_and(|v| v > 0.0),
            "member {id}"
        );
    }

    // Raft metrics: the leader says so, everyone knows a leader and the same term.
    let l = scrape_of(&c.metrics_addr(leader)).await.expect("scrape");
    assert_eq!(l.value("shoal_raft_is_leader", &[]), Some(1.0));
    assert!(l.value("shoal_raft_term", &[]).is_some_and(|t| t >= 1.0));
    assert!(
        l.value("shoal_raft_leader_changes_total", &[])
            .is_some_and(|n| n >= 1.0)
    );
    let term = l.value("shoal_raft_term", &[]);
    for id in (1..=3).filter(|id| *id != leader) {
        let m = c.metrics_addr(id);
        eventually(
            &format!("member {id} follows leader {leader} in its metrics"),
            Duration::from_secs(10),
            || {
                let m = m.clone();
                async move {
                    let s = scrape_of(&m).await?;
                    let seen = (
                        s.value("shoal_raft_is_leader", &[]),
                        s.value("shoal_raft_has_leader", &[]),
                        s.value("shoal_raft_term", &[]),
                    );
                    if seen == (Some(0.0), Some(1.0), term) {
                        Ok(())
                    } else {
                        Err(format!("(is_leader, has_leader, term) = {seen:?}"))
                    }
                }
            },
        )
        .await;
    }

    // The request counter of the member that served the requests moves.
    let via = c.addr(leader);
    let before = creates(&l);
    for i in 0..3 {
        create_pod(&via, &format!("metrics-{i}"))
            .await
            .expect("create");
    }
    let m = c.metrics_addr(leader);
    eventually(
        "the Create counter grows by 3",
        Duration::from_secs(10),
        || {
            let m = m.clone();
            async move {
                let s = scrape_of(&m).await?;
                let n = creates(&s);
                let applied = s.value("shoal_raft_applied_index", &[]).unwrap_or(0.0);
                let count = s
                    .value(
                        "shoal_grpc_request_duration_seconds_count",
                        &[("service", "shoal.v1.Cluster"), ("method", "Create")],
                    )
                    .unwrap_or(0.0);
                if n >= before + 3.0 && count >= 3.0 && applied > 0.0 {
                    Ok(())
                } else {
                    Err(format!(
                        "Create OK {n} (before {before}), durations {count}, applied {applied}"
                    ))
                }
            }
        },
    )
    .await;
    // Objects by kind, counted every 10 s.
    eventually(
        "the leader counts the 3 pods",
        Duration::from_secs(30),
        || {
            let m = m.clone();
            async move {
                let s = scrape_of(&m).await?;
                match s.value("shoal_store_objects", &[("kind", "Pod")]) {
                    Some(n) if n >= 3.0 => Ok(()),
                    other => Err(format!("Pod objects: {other:?}")),
                }
            }
        },
    )
    .await;

    // Health and readiness on every member.
    for id in 1..=3 {
        let m = c.metrics_addr(id);
        assert_eq!(get(&m, "/healthz").await.expect("healthz").0, 200);
        eventually(
            &format!("member {id} ready"),
            Duration::from_secs(10),
            || {
                let m = m.clone();
                async move {
                    match get(&m, "/readyz").await? {
                        (200, _) => Ok(()),
                        (code, body) => Err(format!("{code} {body}")),
                    }
                }
            },
        )
        .await;
    }

    // The standard gRPC health service, on the gRPC port.
    let ch = shoal_testkit::channel(&c.admin_conf(), &via)
        .await
        .expect("channel");
    let r = tonic_health::pb::health_client::HealthClient::new(ch)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health check")
        .into_inner();
    assert_eq!(
        r.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // Without the two others the survivor (the leader) has no quorum: not ready, while
    // still alive.
    for id in (1..=3).filter(|id| *id != leader) {
        c.kill(id);
    }
    eventually(
        "the lone member is not ready",
        Duration::from_secs(20),
        || {
            let m = m.clone();
            async move {
                match get(&m, "/readyz").await? {
                    (503, body) if body.starts_with("not ready:") => Ok(body),
                    (code, body) => Err(format!("{code} {body}")),
                }
            }
        },
    )
    .await;
    assert_eq!(get(&m, "/healthz").await.expect("healthz").0, 200);
}
