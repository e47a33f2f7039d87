//! What `shoalctl` prints for DaemonSets: the table columns and the `describe` lines,
//! like kubectl. Kept apart from `output` so that each part stays one concern.

use serde_json::Value;

use super::batch::{DescribeLine, template_columns};
use super::fields::{i_at, s_at, selector_text, string_map};

/// The headers of the DaemonSet table (base, `-o wide` extras).
pub const HEADERS: (&[&str], &[&str]) = (
    &[
        "NAME",
        "DESIRED",
        "CURRENT",
        "READY",
        "UP-TO-DATE",
        "AVAILABLE",
        "NODE SELECTOR",
        "AGE",
    ],
    &["CONTAINERS", "IMAGES", "SELECTOR"],
);

fn count(v: &Value, field: &str) -> String {
    i_at(v, &format!("/status/{field}"))
        .unwrap_or(0)
        .to_string()
}

/// The template's `nodeSelector` as `k=v,k2=v2` (`<none>` when empty).
fn node_selector(v: &Value) -> String {
    let m = string_map(v, "/spec/template/spec/nodeSelector");
    if m.is_empty() {
        return "<none>".into();
    }
    m.iter()
        .map(|(k, x)| format!("{k}={x}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The cells after NAME (base and `-o wide`) of a DaemonSet row.
pub fn row(v: &Value, age: String) -> (Vec<String>, Vec<String>) {
    (
        vec![
            count(v, "desiredNumberScheduled"),
            count(v, "currentNumberScheduled"),
            count(v, "numberReady"),
            count(v, "updatedNumberScheduled"),
            count(v, "numberAvailable"),
            node_selector(v),
            age,
        ],
        template_columns(
            v.pointer("/spec/template"),
            selector_text(v.pointer("/spec/selector")),
        ),
    )
}

/// The `describe` lines of a DaemonSet, after the common metadata lines (the pod
/// template's labels and containers follow, printed by `describe`).
pub fn describe(v: &Value) -> Vec<DescribeLine> {
    let mut out: Vec<DescribeLine> = Vec::new();
    let mut kv = |k: &str, val: String| out.push((0, format!("{k}:"), Some(val)));
    kv("Selector", selector_text(v.pointer("/spec/selector")));
    kv("Node-Selector", node_selector(v));
    for (label, field) in [
        (
            "Desired Number of Nodes Scheduled",
            "desiredNumberScheduled",
        ),
        (
            "Current Number of Nodes Scheduled",
            "currentNumberScheduled",
        ),
        (
            "Number of Nodes Scheduled with Up-to-date Pods",
            "updatedNumberScheduled",
        ),
        (
            "Number of Nodes Scheduled with Available Pods",
            "numberAvailable",
        ),
        ("Number of Nodes Misscheduled", "numberMisscheduled"),
    ] {
        kv(label, count(v, field));
    }
    let strategy = s_at(v, "/spec/updateStrategy/type").unwrap_or("RollingUpdate");
    kv("Update Strategy", strategy.to_string());
    if strategy == "RollingUpdate" {
        let max = match v.pointer("/spec/updateStrategy/rollingUpdate/maxUnavailable") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => "1".into(),
        };
        kv("Max Unavailable", max);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ds() -> Value {
        json!({"kind": "DaemonSet", "metadata": {"name": "agent"},
               "spec": {"selector": {"matchLabels": {"app": "agent"}},
                        "updateStrategy": {"rollingUpdate": {"maxUnavailable": "25%"}},
                        "template": {"metadata": {"labels": {"app": "agent"}},
                                     "spec": {"nodeSelector": {"role": "worker"},
                                              "containers": [{"name": "c", "image": "busybox:1"}]}}},
               "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3,
                          "numberReady": 2, "updatedNumberScheduled": 1, "numberAvailable": 2}})
    }

    #[test]
    fn rows_like_kubectl() {
        let (cells, wide) = row(&ds(), "5m".into());
        assert_eq!(cells, vec!["3", "3", "2", "1", "2", "role=worker", "5m"]);
        assert_eq!(wide, vec!["c", "busybox:1", "app=agent"]);
        assert_eq!(HEADERS.0.len(), cells.len() + 1);
        let (cells, _) = row(&json!({"spec": {}}), "1s".into());
        assert_eq!(cells, vec!["0", "0", "0", "0", "0", "<none>", "1s"]);
    }

    #[test]
    fn describe_lines() {
        let lines = describe(&ds());
        let get = |k: &str| {
            lines
                .iter()
                .find(|l| l.1 == format!("{k}:"))
                .and_then(|l| l.2.clone())
        };
        assert_eq!(get("Node-Selector").as_deref(), Some("role=worker"));
        assert_eq!(
            get("Desired Number of Nodes Scheduled").as_deref(),
            Some("3")
        );
        assert_eq!(get("Update Strategy").as_deref(), Some("RollingUpdate"));
        assert_eq!(get("Max Unavailable").as_deref(), Some("25%"));
    }
}
