//! Services through the binary: cluster IPs and node ports assigned by the controller,
//! kept on re-apply, the `get svc` / `get ep` columns and `describe svc`. The pod is
//! SIMULATED: its status (IP, Ready) is written over gRPC as an agent would.

use std::time::Duration;

use serde_json::{Value, json};
use shoal_proto::{GetRequest, ObjectRequest};

use crate::harness::{Controller, eventually};

const SVC: &str = "apiVersion: shoal/v1
kind: Service
metadata: {name: front}
spec:
  type: NodePort
  selector: {app: front}
  ports:
  - {name: http, port: 80, targetPort: http}
";

const POD: &str = "apiVersion: shoal/v1
kind: Pod
metadata: {name: front-1, labels: {app: front}}
spec:
  nodeName: sim-node
  containers:
  - name: c
    image: busybox:latest
    ports: [{name: http, containerPort: 8080}]
";

/// Writes the pod's status as a simulated agent: Running, IP, Ready=True.
fn simulate_ready(addr: &str, name: &str, ip: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = shoal_testkit::client_of(addr).await.unwrap();
        let got = c
            .get(GetRequest {
                kind: "Pod".into(),
                namespace: "default".into(),
                name: name.into(),
                stale: false,
            })
            .await
            .unwrap()
            .into_inner();
        let mut p: Value = serde_json::from_str(&got.object_json).unwrap();
        p["status"] = json!({"phase": "Running", "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True"}]});
        c.update(ObjectRequest {
            object_json: p.to_string(),
        })
        .await
        .unwrap();
    });
}

fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

#[test]
fn services_get_addresses_and_show_endpoints() {
    let c = Controller::start();
    let svc = c.write("front.yaml", SVC);
    let pod = c.write("front-pod.yaml", POD);
    assert_eq!(
        c.ctl(&["apply", "-f", svc.to_str().unwrap()]).ok(),
        "service/front created\n"
    );
    let out = c.ctl(&["get", "svc", "front", "-o", "json"]).ok();
    let applied: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let ip = applied["spec"]["clusterIP"].as_str().unwrap().to_string();
    let node_port = applied["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    assert!(ip.starts_with("10.96."), "{applied}");
    assert!((30000..=32767).contains(&node_port), "{applied}");

    // Re-apply of the same manifest (no clusterIP): unchanged, same addresses.
    let again = c.ctl(&["apply", "-f", svc.to_str().unwrap()]).ok();
    assert_eq!(again, "service/front unchanged\n");

    let table = c.ctl(&["get", "svc"]).ok();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        words(lines[0]),
        ["NAME", "TYPE", "CLUSTER-IP", "PORTS", "AGE"]
    );
    let row = words(lines[1]);
    assert_eq!(
        row[..4],
        [
            "front",
            "NodePort",
            ip.as_str(),
            format!("80:{node_port}/TCP").as_str()
        ]
    );

    // A ready pod appears in the Endpoints and in `get svc -o wide`.
    c.ctl(&["apply", "-f", pod.to_str().unwrap()]).ok();
    simulate_ready(&c.addr, "front-1", "10.244.0.7");
    let ep = eventually("endpoints listed", Duration::from_secs(10), || {
        let t = c.ctl(&["get", "endpoints"]).ok();
        if t.contains("10.244.0.7:8080") {
            Ok(t)
        } else {
            Err(t)
        }
    });
    let lines: Vec<&str> = ep.lines().collect();
    assert_eq!(words(lines[0]), ["NAME", "ENDPOINTS", "AGE"]);
    assert_eq!(words(lines[1])[..2], ["front", "10.244.0.7:8080"]);
    assert_eq!(
        c.ctl(&["get", "ep", "front", "-o", "name"]).ok(),
        "endpoints/front\n"
    );

    let wide = c.ctl(&["get", "services", "-o", "wide"]).ok();
    let lines: Vec<&str> = wide.lines().collect();
    assert_eq!(
        words(lines[0]),
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "PORTS",
            "AGE",
            "SELECTOR",
            "ENDPOINTS"
        ]
    );
    assert_eq!(words(lines[1])[5..], ["app=front", "10.244.0.7:8080"]);

    let pods = c.ctl(&["get", "pods", "-o", "wide"]).ok();
    assert!(
        pods.lines().next().unwrap().contains(" IP ") && pods.contains("10.244.0.7"),
        "{pods}"
    );

    let d = c.ctl(&["describe", "svc", "front"]).ok();
    let np = format!("{node_port}/TCP");
    for needle in [
        "IP:",
        ip.as_str(),
        "NodePort:",
        np.as_str(),
        "TargetPort:",
        "Endpoints:",
        "10.244.0.7:8080",
    ] {
        assert!(d.contains(needle), "missing {needle:?} in:\n{d}");
    }

    // Changing the cluster IP is refused with the field named.
    let moved = c.write(
        "front-moved.yaml",
        &SVC.replace(
            "  type: NodePort\n",
            "  type: NodePort\n  clusterIP: 10.96.9.9\n",
        ),
    );
    let e = c.ctl(&["apply", "-f", moved.to_str().unwrap()]).err();
    assert!(e.contains("spec.clusterIP: field is immutable"), "{e}");
}
