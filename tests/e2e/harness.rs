//! The e2e suite's harness: the one test kit's netns cluster (`shoal_testkit::NetnsCluster`:
//! a name unique to the process, torn down on drop from before its `up`, also on panic)
//! and its `eventually`, plus JSON accessors for pods. The names here are the suite's API
//! (`NetnsCluster::up`, `ctl`, `ctl_ok`, `apply`, `json`, `pods`, `exec`, `exec_ok`,
//! `script`, `main_pid`, `down`, `eventually`, `bin_dir`); keep them when the kit changes.

use std::time::Duration;

use serde_json::Value;

pub use shoal_testkit::{NetnsCluster, bin_dir, eventually};

/// `status.phase` of a pod.
pub fn phase(p: &Value) -> &str {
    p.pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `spec.nodeName` of a pod.
pub fn node_of(p: &Value) -> &str {
    p.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.name` of an object.
pub fn name_of(p: &Value) -> &str {
    p.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// True when the pod's Ready condition is True.
pub fn is_ready(p: &Value) -> bool {
    p.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// First container status of a pod.
pub fn container0(p: &Value) -> Value {
    p.pointer("/status/containerStatuses/0")
        .cloned()
        .unwrap_or(Value::Null)
}

/// The pod's IP once it is Ready (waits up to 90 s).
pub fn ready_ip(c: &NetnsCluster, name: &str) -> String {
    eventually(
        &format!("{name} ready with an IP"),
        Duration::from_secs(90),
        || {
            let p = c.json(&["get", "pod", name])?;
            p.pointer("/status/podIP")
                .and_then(Value::as_str)
                .filter(|_| is_ready(&p))
                .map(String::from)
                .ok_or_else(|| "not yet".to_string())
        },
    )
}
