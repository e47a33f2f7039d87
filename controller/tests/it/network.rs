//! The controller's side of the pod network against real controller processes: node pod
//! CIDRs, Service cluster IPs and node ports (concurrent creates, re-apply, errors), and
//! Endpoints following pod readiness and scale.
//!
//! The nodes here are SIMULATED: Node objects written by the test with fresh heartbeats
//! (blind replaces without `spec.podCIDR`, as a careless agent would), and a simulated
//! agent that gives pods bound to them an IP and a Ready condition. No container runs.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shoal_proto::{ApplyRequest, ObjectRequest};
use tokio::sync::Mutex;

use crate::harness::{TestCluster, client, eventually};
use crate::reconcile::{Api, SimNodes, s, set_replicas, sim_node};

fn pod_cidrs(nodes: &[Value], prefix: &str) -> BTreeMap<String, String> {
    nodes
        .iter()
        .filter(|n| s(n, "/metadata/name").starts_with(prefix))
        .map(|n| {
            (
                s(n, "/metadata/name").to_string(),
                s(n, "/spec/podCIDR").to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_get_distinct_pod_cidrs_and_a_freed_one_is_reused() {
    let c = TestCluster::with(1, 5000, &["--cluster-cidr", "10.250.0.0/16"]);
    c.wait_leader(&[1]).await;
    let api = Api::new(&c);
    let nodes = SimNodes::start(
        &api,
        (1..=3)
            .map(|i| sim_node(&format!("cidr-n{i}"), "4Gi", json!({})))
            .collect(),
    )
    .await;
    let first = eventually(
        "3 nodes with a pod CIDR",
        Duration::from_secs(10),
        || async {
            let m = pod_cidrs(&api.list("Node", "").await?, "cidr-n");
            if m.len() == 3 && m.values().all(|c| !c.is_empty()) {
                Ok(m)
            } else {
                Err(format!("{m:?}"))
            }
        },
    )
    .await;
    let distinct: BTreeSet<&String> = first.values().collect();
    assert_eq!(distinct.len(), 3, "{first:?}");
    for cidr in first.values() {
        let net: Vec<&str> = cidr.split('/').collect();
        assert_eq!(net[1], "24", "{cidr}");
        assert!(
            net[0].starts_with("10.250.") && net[0].ends_with(".0"),
            "{cidr}"
        );
    }
    // The simulated agent keeps replacing its Nodes without spec.podCIDR: it stays. Wait
    // until every Node was replaced after the assignment (a newer heartbeat), then compare.
    let mark = chrono::Utc::now();
    let after = eventually(
        "every Node replaced by the simulated agent after the CIDRs were assigned",
        Duration::from_secs(10),
        || async {
            let nodes = api.list("Node", "").await?;
            let beats: Vec<(String, String)> = nodes
                .iter()
                .filter(|n| s(n, "/metadata/name").starts_with("cidr-n"))
                .map(|n| {
                    (
                        s(n, "/metadata/name").to_string(),
                        s(n, "/status/heartbeatTime").to_string(),
                    )
                })
                .collect();
            let newer = beats
                .iter()
                .filter(|(_, t)| chrono::DateTime::parse_from_rfc3339(t).is_ok_and(|t| t > mark))
                .count();
            if beats.len() == 3 && newer == 3 {
                Ok(nodes)
            } else {
                Err(format!("heartbeats {beats:?}, {newer} newer than {mark}"))
            }
        },
    )
    .await;
    assert_eq!(pod_cidrs(&after, "cidr-n"), first);

    // An update may not change it.
    let mut n1 = api.get("Node", "", "cidr-n1").await.unwrap();
    n1["spec"]["podCIDR"] = json!("10.250.200.0/24");
    n1["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    let e = api.update(&n1).await.unwrap_err();
    assert!(e.contains("spec.podCIDR"), "{e}");

    // Delete node 2; a new node gets its block.
    nodes.stop("cidr-n2").await;
    api.delete("Node", "", "cidr-n2").await.unwrap();
    api.create(&sim_node("cidr-n4", "4Gi", json!({})))
        .await
        .unwrap();
    let n4 = eventually(
        "node 4 gets a pod CIDR",
        Duration::from_secs(10),
        || async {
            let n = api.get("Node", "", "cidr-n4").await?;
            match s(&n, "/spec/podCIDR") {
                "" => Err("none yet".to_string()),
                c => Ok(c.to_string()),
            }
        },
    )
    .await;
    assert_eq!(n4, first["cidr-n2"], "the freed block is reused");
}

fn service(name: &str, node_port: bool, cluster_ip: Option<&str>) -> Value {
    let mut v = json!({
        "apiVersion": "shoal/v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"app": name}, "ports": [{"name": "web", "port": 80}]}
    });
    if node_port {
        v["spec"]["type"] = json!("NodePort");
        v["spec"]["ports"] = json!([
            {"name": "web", "port": 80},
            {"name": "dns", "port": 53, "protocol": "UDP"}
        ]);
    }
    if let Some(ip) = cluster_ip {
        v["spec"]["clusterIP"] = json!(ip);
    }
    v
}

async fn apply(addr: &str, objects: &[Value]) -> Result<Vec<(String, Value)>, String> {
    let mut c = client(addr).await?;
    let r = c
        .apply(ApplyRequest {
            objects_json: objects.iter().map(Value::to_string).collect(),
            dry_run: false,
        })
        .await
        .map_err(|e| format!("{:?}: {}", e.code(), e.message()))?;
    Ok(r.into_inner()
        .results
        .into_iter()
        .map(|r| {
            (
                r.action,
                serde_json::from_str(&r.object_json).unwrap_or(Value::Null),
            )
        })
        .collect())
}

fn node_ports(v: &Value) -> Vec<(String, i64)> {
    v["spec"]["ports"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| {
                    Some((
                        p["protocol"].as_str().unwrap_or("TCP").to_string(),
                        p["nodePort"].as_i64()?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn service_ips_and_node_ports_are_unique_kept_and_checked() {
    let c = TestCluster::with(3, 5000, &["--service-cidr", "10.100.0.0/24"]);
    c.wait_leader(&[1, 2, 3]).await;
    let api = Api::new(&c);
    let cidr: ipnet::Ipv4Net = "10.100.0.0/24".parse().unwrap();

    // 24 Services at once through all three members, half by create, half by apply.
    let mut tasks = Vec::new();
    for i in 0..24 {
        let addr = c.members[i % 3].addr.clone();
        let svc = service(&format!("conc-{i}"), i % 2 == 0, None);
        tasks.push(tokio::spawn(async move {
            if i % 4 < 2 {
                let mut cl = client(&addr).await?;
                let r = cl
                    .create(ObjectRequest {
                        object_json: svc.to_string(),
                    })
                    .await
                    .map_err(|e| e.message().to_string())?;
                serde_json::from_str::<Value>(&r.into_inner().object_json)
                    .map_err(|e| e.to_string())
            } else {
                let mut r = apply(&addr, &[svc]).await?;
                Ok(r.remove(0).1)
            }
        }));
    }
    let mut ips = BTreeSet::new();
    let mut ports = BTreeSet::new();
    let mut returned = BTreeMap::new();
    for t in tasks {
        let v = t.await.unwrap().expect("concurrent create");
        let ip: Ipv4Addr = s(&v, "/spec/clusterIP")
            .parse()
            .expect("clusterIP returned");
        assert!(cidr.contains(&ip), "{ip} outside {cidr}");
        assert!(ips.insert(ip), "{ip} given twice");
        for np in node_ports(&v) {
            assert!((30000..=32767).contains(&np.1), "{np:?}");
            assert!(ports.insert(np.clone()), "{np:?} given twice");
        }
        returned.insert(s(&v, "/metadata/name").to_string(), v);
    }
    assert_eq!(ips.len(), 24);
    assert_eq!(ports.len(), 24, "12 NodePort services x (TCP + UDP)");
    // What was returned is what is stored.
    for v in api.list("Service", "default").await.unwrap() {
        let name = s(&v, "/metadata/name");
        assert_eq!(
            s(&v, "/spec/clusterIP"),
            s(&returned[name], "/spec/clusterIP")
        );
    }

    // Re-applying the manifest (no clusterIP, no nodePorts) keeps both.
    let before = &returned["conc-0"];
    let again = apply(&c.addr(2), &[service("conc-0", true, None)])
        .await
        .unwrap();
    assert_eq!(again[0].0, "unchanged", "{again:?}");
    assert_eq!(
        s(&again[0].1, "/spec/clusterIP"),
        s(before, "/spec/clusterIP")
    );
    assert_eq!(node_ports(&again[0].1), node_ports(before));
    // A changed manifest is configured and still keeps them.
    let mut changed = service("conc-0", true, None);
    changed["metadata"]["labels"] = json!({"tier": "front"});
    let again = apply(&c.addr(3), &[changed]).await.unwrap();
    assert_eq!(again[0].0, "configured");
    assert_eq!(
        s(&again[0].1, "/spec/clusterIP"),
        s(before, "/spec/clusterIP")
    );
    assert_eq!(node_ports(&again[0].1), node_ports(before));
    // An update without clusterIP keeps it too; changing it is refused.
    let kept = api.update(&service("conc-1", false, None)).await.unwrap();
    assert_eq!(
        s(&kept, "/spec/clusterIP"),
        s(&returned["conc-1"], "/spec/clusterIP")
    );
    let e = api
        .update(&service("conc-1", false, Some("10.100.0.250")))
        .await
        .unwrap_err();
    assert!(e.contains("spec.clusterIP: field is immutable"), "{e}");
    let e = apply(
        &c.addr(1),
        &[service("conc-1", false, Some("10.100.0.250"))],
    )
    .await
    .unwrap_err();
    assert!(e.contains("spec.clusterIP: field is immutable"), "{e}");

    // Requested addresses are checked.
    let e = api
        .create(&service("bad-range", false, Some("10.96.0.10")))
        .await
        .unwrap_err();
    assert!(
        e.contains("InvalidArgument")
            && e.contains(
                "spec.clusterIP: 10.96.0.10 is not inside the service CIDR 10.100.0.0/24"
            ),
        "{e}"
    );
    let taken = s(&returned["conc-5"], "/spec/clusterIP").to_string();
    let e = api
        .create(&service("bad-taken", false, Some(&taken)))
        .await
        .unwrap_err();
    assert!(
        e.contains(&format!(
            "spec.clusterIP: {taken} is already allocated to service default/conc-5"
        )),
        "{e}"
    );
    let mut clash = service("bad-port", true, None);
    clash["spec"]["ports"][0]["nodePort"] = json!(node_ports(before)[0].1);
    let e = api.create(&clash).await.unwrap_err();
    assert!(e.contains("spec.ports[0].nodePort:"), "{e}");
    assert!(
        e.contains("is already allocated to service default/conc-0"),
        "{e}"
    );

    // A deleted service's address is free again.
    api.delete("Service", "default", "conc-5").await.unwrap();
    let v = api
        .create(&service("reuse", false, Some(&taken)))
        .await
        .unwrap();
    assert_eq!(s(&v, "/spec/clusterIP"), taken);
}

/// SIMULATED agent for the endpoints test: heartbeats its nodes and gives every pod bound
/// to them phase Running, an IP and Ready=True — or Ready=False for pods in `unready`.
struct SimAgent {
    unready: Arc<Mutex<BTreeSet<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SimAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn pod_status(p: &Value, ip: &str, ready: bool) -> Value {
    let mut st = p["status"].clone();
    if !st.is_object() {
        st = json!({});
    }
    let mut conds: Vec<Value> = st["conditions"].as_array().cloned().unwrap_or_default();
    conds.retain(|c| c["type"] != "Ready");
    conds.push(json!({"type": "Ready", "status": if ready {"True"} else {"False"}}));
    st["conditions"] = json!(conds);
    st["phase"] = json!("Running");
    st["podIP"] = json!(ip);
    st
}

impl SimAgent {
    async fn start(api: &Api, nodes: Vec<Value>) -> Self {
        let names: BTreeSet<String> = nodes
            .iter()
            .map(|n| s(n, "/metadata/name").to_string())
            .collect();
        for n in &nodes {
            api.create(n).await.expect("register simulated node");
        }
        let unready = Arc::new(Mutex::new(BTreeSet::new()));
        let (u, api) = (unready.clone(), api.clone());
        let task = tokio::spawn(async move {
            let mut ips: BTreeMap<String, String> = BTreeMap::new();
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                for n in &nodes {
                    let mut n = n.clone();
                    n["status"]["heartbeatTime"] = json!(chrono::Utc::now().to_rfc3339());
                    let _ = api.update(&n).await;
                }
                let Ok(pods) = api.list("Pod", "").await else {
                    continue;
                };
                for mut p in pods {
                    let name = s(&p, "/metadata/name").to_string();
                    if !names.contains(s(&p, "/spec/nodeName")) {
                        continue;
                    }
                    let next = ips.len() + 10;
                    let ip = ips
                        .entry(name.clone())
                        .or_insert_with(|| format!("10.244.{}.{}", next / 200, next % 200 + 2))
                        .clone();
                    let ready = !u.lock().await.contains(&name);
                    let st = pod_status(&p, &ip, ready);
                    if st != p["status"] {
                        p["status"] = st;
                        let _ = api.update(&p).await;
                    }
                }
            }
        });
        Self { unready, task }
    }
}

fn web_deployment(replicas: i64) -> Value {
    json!({
        "apiVersion": "shoal/v1", "kind": "Deployment",
        "metadata": {"name": "epweb", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "epweb"}},
            "template": {
                "metadata": {"labels": {"app": "epweb"}},
                "spec": {"containers": [{"name": "c", "image": "busybox:1",
                         "ports": [{"name": "http", "containerPort": 8080}]}]}
            }
        }
    })
}

/// (ready ip:port, not-ready ips) of the Endpoints `epweb`.
fn endpoint_sets(e: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut ready = BTreeSet::new();
    let mut not_ready = BTreeSet::new();
    for sub in e["subsets"].as_array().cloned().unwrap_or_default() {
        let port = sub["ports"][0]["port"].as_i64().unwrap_or(0);
        for a in sub["addresses"].as_array().cloned().unwrap_or_default() {
            ready.insert(format!("{}:{port}", s(&a, "/ip")));
        }
        for a in sub["notReadyAddresses"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            not_ready.insert(s(&a, "/ip").to_string());
        }
    }
    (ready, not_ready)
}

async fn wait_endpoints(
    api: &Api,
    what: &str,
    timeout: Duration,
    ok: impl Fn(&BTreeSet<String>, &BTreeSet<String>) -> bool,
) -> Value {
    eventually(what, timeout, || async {
        let e = api.get("Endpoints", "default", "epweb").await?;
        let (r, n) = endpoint_sets(&e);
        if ok(&r, &n) {
            Ok(e)
        } else {
            Err(format!("ready {r:?}, not ready {n:?}"))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn endpoints_follow_readiness_and_scale() {
    let c = TestCluster::with(1, 5000, &[]);
    c.wait_leader(&[1]).await;
    let api = Api::new(&c);
    let agent = SimAgent::start(
        &api,
        (1..=2)
            .map(|i| sim_node(&format!("ep-n{i}"), "8Gi", json!({})))
            .collect(),
    )
    .await;
    api.create(&web_deployment(3)).await.unwrap();
    let mut svc = service("epweb", false, None);
    svc["spec"]["ports"][0]["targetPort"] = json!("http");
    api.create(&svc).await.unwrap();

    let e = wait_endpoints(
        &api,
        "3 ready endpoints",
        Duration::from_secs(15),
        |r, n| r.len() == 3 && n.is_empty(),
    )
    .await;
    // Named targetPort resolved; node and pod referenced; owned by the Service.
    let sub = &e["subsets"][0];
    assert_eq!(
        sub["ports"][0],
        json!({"name": "web", "port": 8080, "protocol": "TCP"})
    );
    let a = &sub["addresses"][0];
    assert!(s(a, "/nodeName").starts_with("ep-n"), "{a}");
    assert_eq!(s(a, "/targetRef/kind"), "Pod");
    assert!(s(a, "/targetRef/name").starts_with("epweb-"), "{a}");
    assert_eq!(s(&e, "/metadata/ownerReferences/0/kind"), "Service");

    // A pod failing readiness moves to notReadyAddresses, quickly.
    let victim = s(a, "/targetRef/name").to_string();
    let victim_ip = s(a, "/ip").to_string();
    agent.unready.lock().await.insert(victim.clone());
    let t0 = eventually("pod marked unready", Duration::from_secs(10), || async {
        let mut p = api.get("Pod", "default", &victim).await?;
        p["status"] = pod_status(&p, &victim_ip, false);
        api.update(&p).await.map(|_| Instant::now())
    })
    .await;
    wait_endpoints(&api, "victim not ready", Duration::from_secs(5), |r, n| {
        r.len() == 2 && n.contains(&victim_ip)
    })
    .await;
    let flip = t0.elapsed();
    eprintln!("readiness change reflected in Endpoints after {flip:?}");
    // Upper bound (2 s) measured by scripts/bench-timings.sh, not asserted here.
    shoal_testkit::timing("endpoints_readiness_flip", flip, Duration::from_secs(2));

    // Recovery, then scale up: every new ready pod is listed.
    agent.unready.lock().await.clear();
    wait_endpoints(
        &api,
        "victim ready again",
        Duration::from_secs(5),
        |r, n| r.len() == 3 && n.is_empty(),
    )
    .await;
    let t0 = Instant::now();
    set_replicas(&api, "epweb", 5).await;
    wait_endpoints(
        &api,
        "5 ready endpoints",
        Duration::from_secs(10),
        |r, n| r.len() == 5 && n.is_empty(),
    )
    .await;
    let scale = t0.elapsed();
    eprintln!(
        "scale 3 -> 5 reflected in Endpoints after {scale:?} (incl. scheduling and the 100 ms simulated agent)"
    );
    shoal_testkit::timing("endpoints_scale_3_to_5", scale, Duration::from_secs(3));
    set_replicas(&api, "epweb", 1).await;
    wait_endpoints(&api, "1 endpoint", Duration::from_secs(5), |r, n| {
        r.len() == 1 && n.is_empty()
    })
    .await;

    // The Endpoints go with the Service.
    api.delete("Service", "default", "epweb").await.unwrap();
    eventually("endpoints deleted", Duration::from_secs(5), || async {
        match api.get("Endpoints", "default", "epweb").await {
            Err(e) if e.contains("NotFound") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    api.delete("Deployment", "default", "epweb").await.unwrap();
}
