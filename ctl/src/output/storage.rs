//! What `shoalctl` prints for StatefulSets, PersistentVolumeClaims and
//! PersistentVolumes: the table columns and the `describe` lines, like kubectl. Kept
//! apart from `output` so that each part stays one concern.

use serde_json::Value;

use super::batch::{DescribeLine, template_columns};
use super::fields::{arr, i_at, or_none, s_at, selector_text};

/// The headers (base, `-o wide` extras) of `kind`'s table, if it is one of these.
pub fn headers(kind: &str) -> Option<(&'static [&'static str], &'static [&'static str])> {
    Some(match kind {
        "StatefulSet" => (
            &["NAME", "READY", "AGE"],
            &["CONTAINERS", "IMAGES", "SELECTOR"],
        ),
        "PersistentVolumeClaim" => (
            &[
                "NAME",
                "STATUS",
                "VOLUME",
                "CAPACITY",
                "ACCESS MODES",
                "STORAGECLASS",
                "AGE",
            ],
            &["VOLUMEMODE"],
        ),
        "PersistentVolume" => (
            &[
                "NAME",
                "CAPACITY",
                "ACCESS MODES",
                "RECLAIM POLICY",
                "STATUS",
                "CLAIM",
                "STORAGECLASS",
                "REASON",
                "AGE",
            ],
            &["VOLUMEMODE", "NODE"],
        ),
        _ => return None,
    })
}

/// kubectl's short access modes: `RWO`.
fn access_modes(v: &Value, ptr: &str) -> String {
    arr(v, ptr)
        .iter()
        .filter_map(Value::as_str)
        .map(|m| match m {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn volume_mode(v: &Value) -> String {
    s_at(v, "/spec/volumeMode")
        .unwrap_or("Filesystem")
        .to_string()
}

/// The node of a volume, from its node affinity.
fn volume_node(v: &Value) -> Option<&str> {
    s_at(
        v,
        "/spec/nodeAffinity/required/nodeSelectorTerms/0/matchExpressions/0/values/0",
    )
}

/// A volume's claim as `namespace/name` (empty when unbound).
fn claim_of(v: &Value) -> String {
    match (
        s_at(v, "/spec/claimRef/namespace"),
        s_at(v, "/spec/claimRef/name"),
    ) {
        (Some(ns), Some(n)) => format!("{ns}/{n}"),
        _ => String::new(),
    }
}

fn class(v: &Value) -> String {
    s_at(v, "/spec/storageClassName")
        .unwrap_or(shoal_api::LOCAL_PATH_CLASS)
        .to_string()
}

/// The cells after NAME (base and `-o wide`) of a row of `kind`, if it is one of these.
pub fn row(kind: &str, v: &Value, age: String) -> Option<(Vec<String>, Vec<String>)> {
    Some(match kind {
        "StatefulSet" => (
            vec![
                format!(
                    "{}/{}",
                    i_at(v, "/status/readyReplicas").unwrap_or(0),
                    i_at(v, "/spec/replicas").unwrap_or(1)
                ),
                age,
            ],
            template_columns(
                v.pointer("/spec/template"),
                selector_text(v.pointer("/spec/selector")),
            ),
        ),
        "PersistentVolumeClaim" => {
            let bound = s_at(v, "/status/phase") == Some("Bound");
            (
                vec![
                    s_at(v, "/status/phase").unwrap_or("Pending").to_string(),
                    s_at(v, "/spec/volumeName").unwrap_or("").to_string(),
                    if bound {
                        s_at(v, "/status/capacity/storage")
                            .unwrap_or("")
                            .to_string()
                    } else {
                        String::new()
                    },
                    if bound {
                        access_modes(v, "/status/accessModes")
                    } else {
                        String::new()
                    },
                    class(v),
                    age,
                ],
                vec![volume_mode(v)],
            )
        }
        "PersistentVolume" => (
            vec![
                s_at(v, "/spec/capacity/storage").unwrap_or("").to_string(),
                access_modes(v, "/spec/accessModes"),
                s_at(v, "/spec/persistentVolumeReclaimPolicy")
                    .unwrap_or("Retain")
                    .to_string(),
                s_at(v, "/status/phase").unwrap_or("Available").to_string(),
                claim_of(v),
                class(v),
                s_at(v, "/status/reason").unwrap_or("").to_string(),
                age,
            ],
            vec![volume_mode(v), or_none(volume_node(v))],
        ),
        _ => return None,
    })
}

/// The `describe` lines of `kind` (after the common metadata lines), if it is one of these.
pub fn describe(kind: &str, v: &Value) -> Option<Vec<DescribeLine>> {
    let mut out: Vec<DescribeLine> = Vec::new();
    let mut kv = |k: &str, val: String| out.push((0, format!("{k}:"), Some(val)));
    match kind {
        "StatefulSet" => {
            kv("Selector", selector_text(v.pointer("/spec/selector")));
            kv(
                "Replicas",
                format!(
                    "{} desired | {} total",
                    i_at(v, "/spec/replicas").unwrap_or(1),
                    i_at(v, "/status/replicas").unwrap_or(0)
                ),
            );
            kv(
                "Update Strategy",
                s_at(v, "/spec/updateStrategy/type")
                    .unwrap_or("RollingUpdate")
                    .to_string(),
            );
            kv(
                "Pod Management Policy",
                s_at(v, "/spec/podManagementPolicy")
                    .unwrap_or("OrderedReady")
                    .to_string(),
            );
            kv("Service Name", or_none(s_at(v, "/spec/serviceName")));
            kv(
                "Pods Status",
                format!(
                    "{} Ready / {} Updated",
                    i_at(v, "/status/readyReplicas").unwrap_or(0),
                    i_at(v, "/status/updatedReplicas").unwrap_or(0)
                ),
            );
            let claims: Vec<String> = arr(v, "/spec/volumeClaimTemplates")
                .iter()
                .map(|t| {
                    format!(
                        "{} ({} {})",
                        s_at(t, "/metadata/name").unwrap_or(""),
                        s_at(t, "/spec/resources/requests/storage").unwrap_or(""),
                        access_modes(t, "/spec/accessModes")
                    )
                })
                .collect();
            kv("Volume Claims", or_none(Some(claims.join(", "))));
        }
        "PersistentVolumeClaim" => {
            kv("StorageClass", class(v));
            kv(
                "Status",
                s_at(v, "/status/phase").unwrap_or("Pending").to_string(),
            );
            kv(
                "Volume",
                s_at(v, "/spec/volumeName").unwrap_or("").to_string(),
            );
            kv(
                "Capacity",
                s_at(v, "/status/capacity/storage")
                    .unwrap_or("")
                    .to_string(),
            );
            kv("Access Modes", access_modes(v, "/spec/accessModes"));
            kv("VolumeMode", volume_mode(v));
        }
        "PersistentVolume" => {
            kv("StorageClass", class(v));
            kv(
                "Status",
                s_at(v, "/status/phase").unwrap_or("Available").to_string(),
            );
            kv("Claim", claim_of(v));
            kv(
                "Reclaim Policy",
                s_at(v, "/spec/persistentVolumeReclaimPolicy")
                    .unwrap_or("Retain")
                    .to_string(),
            );
            kv("Access Modes", access_modes(v, "/spec/accessModes"));
            kv(
                "Capacity",
                s_at(v, "/spec/capacity/storage").unwrap_or("").to_string(),
            );
            kv("Node", or_none(volume_node(v)));
            kv(
                "Source",
                format!(
                    "local-path directory DATA/volumes/{} on the node",
                    s_at(v, "/metadata/name").unwrap_or("")
                ),
            );
        }
        _ => return None,
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claim_and_volume_rows_like_kubectl() {
        let pvc = json!({"metadata": {"name": "www-web-0"},
            "spec": {"accessModes": ["ReadWriteOnce"], "volumeName": "pvc-1"},
            "status": {"phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}}});
        let (cells, wide) = row("PersistentVolumeClaim", &pvc, "5s".into()).unwrap();
        assert_eq!(cells, ["Bound", "pvc-1", "1Gi", "RWO", "local-path", "5s"]);
        assert_eq!(wide, ["Filesystem"]);
        let pv = json!({"metadata": {"name": "pvc-1"},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                     "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "local-path",
                     "claimRef": {"namespace": "ns", "name": "www-web-0"},
                     "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                         {"key": "kubernetes.io/hostname", "operator": "In", "values": ["node2"]}]}]}}},
            "status": {"phase": "Bound"}});
        let (cells, wide) = row("PersistentVolume", &pv, "5s".into()).unwrap();
        assert_eq!(
            cells,
            [
                "1Gi",
                "RWO",
                "Delete",
                "Bound",
                "ns/www-web-0",
                "local-path",
                "",
                "5s"
            ]
        );
        assert_eq!(wide, ["Filesystem", "node2"]);
        let sts = json!({"spec": {"replicas": 2}, "status": {"readyReplicas": 1}});
        assert_eq!(
            row("StatefulSet", &sts, "1m".into()).unwrap().0,
            ["1/2", "1m"]
        );
        assert_eq!(headers("PersistentVolume").unwrap().0.len(), 9);
        assert!(row("Pod", &sts, "1m".into()).is_none());
    }
}
