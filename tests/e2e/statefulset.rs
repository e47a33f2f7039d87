//! StatefulSet with local persistent volumes on a real cluster (1 controller + 2
//! agents): pods `web-0`, `web-1` start in order, each with its claim `www-web-N` bound
//! to a local-path volume on its node; data written by web-0 survives its deletion (the
//! new web-0 comes back on the same node with the file); `web-0.web.NS.svc.shoal.local`
//! and the headless service's name resolve from web-1; the claims stay when the set is
//! deleted; deleting a claim with reclaim policy Delete removes its volume and directory,
//! and one with Retain keeps both (`Released`).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{NetnsCluster, eventually, is_ready, name_of, node_of, phase};

const NS: &str = "sts-e2e";

const MANIFEST: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: sts-e2e}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: sts-e2e}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{port: 80, name: web}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web, namespace: sts-e2e}
spec:
  serviceName: web
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: busybox:latest
        command: ["sh", "-c", "exec sleep 3600"]
        volumeMounts: [{name: www, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: www}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 64Mi}}
"#;

fn ctl_in(c: &NetnsCluster, args: &[&str]) -> Result<String, String> {
    let mut all = vec!["-n", NS];
    all.extend_from_slice(args);
    let out = c.ctl(&all);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "shoalctl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn get(c: &NetnsCluster, args: &[&str]) -> Result<Value, String> {
    let mut all = vec!["-n", NS];
    all.extend_from_slice(args);
    c.json(&all)
}

/// The pod `name` once Running and Ready: (uid, node, IP).
fn ready_pod(c: &NetnsCluster, name: &str) -> (String, String, String) {
    eventually(
        &format!("{name} Running and Ready"),
        Duration::from_secs(120),
        || {
            let p = get(c, &["get", "pod", name])?;
            let ip = p
                .pointer("/status/podIP")
                .and_then(Value::as_str)
                .unwrap_or("");
            if phase(&p) == "Running" && is_ready(&p) && !ip.is_empty() {
                let uid = p["metadata"]["uid"].as_str().unwrap_or("").to_string();
                Ok((uid, node_of(&p).to_string(), ip.to_string()))
            } else {
                Err(format!("phase {} ready {}", phase(&p), is_ready(&p)))
            }
        },
    )
}

/// The claim's volume and that volume's node, once the claim is Bound.
fn bound_volume(c: &NetnsCluster, claim: &str) -> (String, String) {
    eventually(
        &format!("claim {claim} Bound"),
        Duration::from_secs(60),
        || {
            let pvc = get(c, &["get", "pvc", claim])?;
            let vol = pvc["spec"]["volumeName"].as_str().unwrap_or("").to_string();
            if pvc["status"]["phase"] != "Bound" || vol.is_empty() {
                return Err(format!("{}", pvc["status"]));
            }
            let pv = c.json(&["get", "pv", &vol])?;
            let node = pv
                .pointer(
                    "/spec/nodeAffinity/required/nodeSelectorTerms/0/matchExpressions/0/values/0",
                )
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            Ok((vol, node))
        },
    )
}

/// `DATA/volumes/<volume>` of `node` (`node1` is the netns cluster's `n1`).
fn volume_dir(c: &NetnsCluster, node: &str, volume: &str) -> PathBuf {
    let n = node.trim_start_matches("node");
    c.state_dir()
        .join(format!("n{n}"))
        .join("data/volumes")
        .join(volume)
}

fn sh(c: &NetnsCluster, pod: &str, script: &str) -> Result<String, String> {
    ctl_in(c, &["exec", pod, "--", "sh", "-c", script])
}

#[test]
#[ignore = "requires root: network namespaces, containers, cgroups"]
fn statefulset_keeps_names_volumes_and_dns() {
    let c = NetnsCluster::up("e2ests", 1, 2, &[]);
    c.ctl_ok(&["image", "import", c.image_tar.to_str().expect("path")]);
    let out = c.apply(MANIFEST);
    assert!(out.status.success(), "apply: {out:?}");

    // In order: web-1 is made only after web-0 is Ready.
    let (uid0, node0, _) = ready_pod(&c, "web-0");
    let (_, _, ip1) = ready_pod(&c, "web-1");
    let p0 = get(&c, &["get", "pod", "web-0"]).expect("web-0");
    let p1 = get(&c, &["get", "pod", "web-1"]).expect("web-1");
    let ready_at = p0["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["lastTransitionTime"].as_str())
        .expect("web-0 Ready time")
        .to_string();
    let made_at = p1["metadata"]["creationTimestamp"]
        .as_str()
        .expect("web-1 creation time");
    assert!(
        made_at >= ready_at.as_str(),
        "web-1 made at {made_at}, before web-0 was Ready at {ready_at}"
    );
    assert_eq!(p1["spec"]["hostname"], "web-1");
    assert_eq!(p1["spec"]["subdomain"], "web");

    // One claim per pod, bound to a volume on the pod's node.
    let (vol0, on0) = bound_volume(&c, "www-web-0");
    let (vol1, on1) = bound_volume(&c, "www-web-1");
    assert_eq!(on0, node0);
    assert_eq!(on1, node_of(&p1));
    let pvcs = ctl_in(&c, &["get", "pvc"]).expect("get pvc");
    assert!(
        pvcs.contains("STATUS") && pvcs.contains("www-web-0") && pvcs.contains("Bound"),
        "{pvcs}"
    );
    let pvs = c.ctl_ok(&["get", "pv"]);
    assert!(
        pvs.contains("RECLAIM POLICY") && pvs.contains(&format!("{NS}/www-web-1")),
        "{pvs}"
    );

    // web-0 writes into its volume; the file is in the node's volume directory.
    sh(&c, "web-0", "echo kept > /data/f").expect("write");
    let dir0 = volume_dir(&c, &node0, &vol0);
    let host_copy = std::fs::read_to_string(dir0.join("f")).expect("the file on the node");
    assert_eq!(host_copy.trim(), "kept");

    // Deleted, web-0 comes back (a new pod) on the same node, with the file.
    ctl_in(&c, &["delete", "pod", "web-0"]).expect("delete web-0");
    let again = eventually("a new web-0", Duration::from_secs(120), || {
        let (uid, node, ip) = ready_pod(&c, "web-0");
        if uid == uid0 {
            Err("still the old pod".to_string())
        } else {
            Ok((node, ip))
        }
    });
    assert_eq!(again.0, node0, "web-0 must come back on its volume's node");
    let read = eventually("the file in the new web-0", Duration::from_secs(30), || {
        sh(&c, "web-0", "cat /data/f")
    });
    assert_eq!(read.trim(), "kept");
    let ip0 = again.1;

    // DNS: web-0's own name, and the headless service's name (every ready pod).
    let fqdn = format!("web-0.web.{NS}.svc.shoal.local");
    let answer = eventually(
        "web-0's DNS name from web-1",
        Duration::from_secs(60),
        || {
            let a = sh(&c, "web-1", &format!("nslookup {fqdn}"))?;
            if a.contains(&ip0) { Ok(a) } else { Err(a) }
        },
    );
    assert!(answer.contains(&ip0), "{answer}");
    let all = eventually(
        "the headless service's name",
        Duration::from_secs(60),
        || {
            let a = sh(&c, "web-1", &format!("nslookup web.{NS}.svc.shoal.local"))?;
            if a.contains(&ip0) && a.contains(&ip1) {
                Ok(a)
            } else {
                Err(a)
            }
        },
    );
    assert!(all.contains(&ip1), "{all}");

    // rollout restart replaces every pod, highest ordinal first, and rollout status
    // follows it to the end; the data stays with web-0.
    let (before, _, _) = ready_pod(&c, "web-0");
    let out = ctl_in(&c, &["rollout", "restart", "sts", "web"]).expect("restart");
    assert!(out.contains("statefulset/web restarted"), "{out}");
    let out = ctl_in(
        &c,
        &["rollout", "status", "sts", "web", "--timeout", "180s"],
    )
    .expect("rollout status");
    assert!(
        out.contains("statefulset rolling update complete 2 pods at revision"),
        "{out}"
    );
    let (uid, node, _) = ready_pod(&c, "web-0");
    assert!(uid != before && node == node0, "web-0 {uid} on {node}");
    assert_eq!(sh(&c, "web-0", "cat /data/f").expect("file").trim(), "kept");

    // The set goes with its pods; the claims stay.
    ctl_in(&c, &["delete", "statefulset", "web"]).expect("delete sts");
    eventually("the set's pods to go", Duration::from_secs(60), || {
        let pods = ctl_in(&c, &["get", "pods", "-o", "name"])?;
        if pods.trim().is_empty() {
            Ok(())
        } else {
            Err(pods)
        }
    });
    let claims = ctl_in(&c, &["get", "pvc", "-o", "name"]).expect("claims");
    assert_eq!(
        claims,
        "persistentvolumeclaim/www-web-0\npersistentvolumeclaim/www-web-1\n"
    );

    // Reclaim Delete (the provisioner's default): the volume and its directory go.
    let dir1 = volume_dir(&c, &on1, &vol1);
    assert!(dir1.is_dir(), "{} missing", dir1.display());
    ctl_in(&c, &["delete", "pvc", "www-web-1"]).expect("delete claim 1");
    eventually(
        "volume 1 and its directory to go",
        Duration::from_secs(60),
        || {
            let pvs = c.ctl_ok(&["get", "pv", "-o", "name"]);
            if pvs.contains(&vol1) || dir1.exists() {
                Err(format!("{pvs} dir exists: {}", dir1.exists()))
            } else {
                Ok(())
            }
        },
    );

    // Reclaim Retain: the volume stays Released, with its data.
    c.ctl_ok(&[
        "patch",
        "pv",
        &vol0,
        "-p",
        r#"{"spec": {"persistentVolumeReclaimPolicy": "Retain"}}"#,
    ]);
    ctl_in(&c, &["delete", "pvc", "www-web-0"]).expect("delete claim 0");
    eventually("volume 0 Released", Duration::from_secs(60), || {
        let pv = c.json(&["get", "pv", &vol0])?;
        if pv["status"]["phase"] == "Released" {
            Ok(())
        } else {
            Err(format!("{}", pv["status"]))
        }
    });
    // Not a wait for a condition: the agent looks for volumes to reclaim every 3 s;
    // after two of its passes the Retain volume must still hold its data.
    std::thread::sleep(Duration::from_secs(7));
    assert!(
        dir0.join("f").is_file(),
        "a Retain volume keeps its data: {}",
        dir0.display()
    );
    let pv = c.json(&["get", "pv", &vol0]).expect("the retained volume");
    assert_eq!(name_of(&pv), vol0);
}
