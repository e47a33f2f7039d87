//! The agent's metrics listener with a real pod (docs/observability.md): every
//! documented agent metric is served with its type, `/readyz` once the node is
//! registered, pods by phase and the pod's container memory from its cgroup.

use std::time::Duration;

use shoal_testkit::metrics::{http_get, missing_documented, scrape};

use shoal_proto::agent_client::AgentClient;

use crate::{Cluster, eventually};

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "requires root: real containers, cgroups and namespaces"]
async fn metrics_show_pods_by_phase_and_container_memory() {
    let c = Cluster::start("agent-it-metrics").await;
    let m = c.metrics_addr.clone();
    eventually("the agent is ready", Duration::from_secs(30), || {
        let m = m.clone();
        async move {
            match blocking(move || http_get(&m, "/readyz")).await? {
                (200, _) => Ok(()),
                (code, body) => Err(format!("{code} {body}")),
            }
        }
    })
    .await;
    let (code, _) = blocking({
        let m = m.clone();
        move || http_get(&m, "/healthz")
    })
    .await
    .unwrap();
    assert_eq!(code, 200);

    // A request to the Agent API (as the controllers' logs/exec proxy makes), counted by
    // the gRPC layer; the gRPC health service answers SERVING.
    let ch = c.agent_channel().await.unwrap();
    AgentClient::new(ch.clone())
        .ping(shoal_proto::PingRequest {})
        .await
        .unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(ch)
        .check(tonic_health::pb::HealthCheckRequest {
            service: "shoal.v1.Agent".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    c.create_pod(serde_json::json!({
        "apiVersion": "shoal/v1", "kind": "Pod",
        "metadata": {"name": "metered", "namespace": "default"},
        "spec": {
            "nodeName": c.node,
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "main", "image": "busybox",
                // A few MiB held in memory, so that the cgroup has something to count.
                "command": ["sh", "-c", "head -c 4000000 /dev/zero > /dev/shm/x; exec sleep 1000"]
            }]
        }
    }))
    .await;
    c.wait_pod("metered", "running", Duration::from_secs(60), |_, cs| {
        cs.state.running.is_some()
    })
    .await;

    let seen = eventually(
        "the pod and its container's memory in /metrics",
        Duration::from_secs(30),
        || {
            let m = m.clone();
            async move {
                let s = blocking(move || scrape(&m)).await?;
                let bad = missing_documented(&s, "agent");
                if !bad.is_empty() {
                    return Err(format!("{bad:?}"));
                }
                let running = s.value("shoal_agent_pods", &[("phase", "Running")]);
                let containers = s.value("shoal_agent_containers", &[("state", "running")]);
                let labels = [
                    ("namespace", "default"),
                    ("pod", "metered"),
                    ("container", "main"),
                ];
                let memory = s.value("shoal_agent_container_memory_bytes", &labels);
                let cpu = s.value("shoal_agent_container_cpu_seconds_total", &labels);
                let restarts = s.value("shoal_agent_container_restarts_total", &labels);
                // busybox is in the cluster's image store: fetched from it, or present.
                let pulls = ["present", "fetched"]
                    .iter()
                    .map(|r| s.value("shoal_agent_image_pulls_total", &[("result", r)]))
                    .sum::<Option<f64>>();
                let pings = s.value(
                    "shoal_grpc_requests_total",
                    &[("service", "shoal.v1.Agent"), ("method", "Ping"), ("code", "OK")],
                );
                if pings != Some(1.0) {
                    return Err(format!("Ping requests: {pings:?}"));
                }
                match (running, containers, memory, cpu, restarts, pulls) {
                    (Some(r), Some(n), Some(mem), Some(_), Some(0.0), Some(p))
                        if r >= 1.0 && n >= 1.0 && mem >= 4_000_000.0 && p >= 1.0 =>
                    {
                        Ok(mem)
                    }
                    other => Err(format!(
                        "(pods Running, containers running, memory, cpu, restarts, pulls) = {other:?}"
                    )),
                }
            }
        },
    )
    .await;
    eprintln!("container memory of pod metered: {seen} bytes");
}
