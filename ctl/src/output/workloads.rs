//! Tables of the workload verbs: `top` (kubectl's CPU and memory units), `image ls`
//! and `rollout history`.

use std::collections::BTreeMap;

use serde_json::Value;

use super::fields::{arr, i_at, s_at};
use super::table::Table;

/// CPU in kubectl's `top` form: millicores with an `m` (`12m`, `1500m`).
pub fn cpu_text(millis: u64) -> String {
    format!("{millis}m")
}

/// Memory in kubectl's `top` form: whole mebibytes (`34Mi`, `0Mi` below one).
pub fn memory_text(bytes: u64) -> String {
    format!("{}Mi", bytes / (1024 * 1024))
}

/// `used` as a whole percentage of `capacity` (`<unknown>` without a capacity).
pub fn percent_text(used: u64, capacity: u64) -> String {
    if capacity == 0 {
        "<unknown>".into()
    } else {
        format!("{}%", (used as u128 * 100 / capacity as u128))
    }
}

/// Sizes like `4.2MB`, `830kB`, `12B` (decimal units, as image tools print them).
pub fn size_text(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if bytes < 1000 {
        return format!("{bytes}B");
    }
    let mut v = bytes as f64 / 1000.0;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if v < 10.0 {
        format!("{v:.1}{}", UNITS[unit])
    } else {
        format!("{v:.0}{}", UNITS[unit])
    }
}

/// `top pods`: NAME CPU(cores) MEMORY(bytes), one row per pod (its containers summed),
/// sorted by namespace and name; `namespace` None means every namespace (a NAMESPACE
/// column); `name` keeps one pod.
pub fn top_pods_table(
    nodes: &[shoal_proto::NodeStats],
    namespace: Option<&str>,
    name: Option<&str>,
) -> Table {
    let mut pods: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for c in nodes.iter().flat_map(|n| &n.containers) {
        if namespace.is_some_and(|ns| ns != c.namespace) || name.is_some_and(|p| p != c.pod) {
            continue;
        }
        let e = pods
            .entry((c.namespace.clone(), c.pod.clone()))
            .or_insert((0, 0));
        e.0 += c.cpu_millis;
        e.1 += c.memory_bytes;
    }
    let mut headers = vec!["NAME", "CPU(cores)", "MEMORY(bytes)"];
    if namespace.is_none() {
        headers.insert(0, "NAMESPACE");
    }
    let rows = pods
        .into_iter()
        .map(|((ns, pod), (cpu, mem))| {
            let mut r = vec![pod, cpu_text(cpu), memory_text(mem)];
            if namespace.is_none() {
                r.insert(0, ns);
            }
            r
        })
        .collect();
    Table {
        headers: headers.into_iter().map(String::from).collect(),
        rows,
    }
}

/// `top nodes`: NAME CPU(cores) CPU% MEMORY(bytes) MEMORY%, sorted by name; nodes whose
/// stats are missing show `<unknown>`.
pub fn top_nodes_table(nodes: &[shoal_proto::NodeStats], name: Option<&str>) -> Table {
    let mut nodes: Vec<&shoal_proto::NodeStats> = nodes
        .iter()
        .filter(|n| name.is_none_or(|want| want == n.node))
        .collect();
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    let rows = nodes
        .into_iter()
        .map(|n| {
            if !n.error.is_empty() {
                let u = "<unknown>".to_string();
                return vec![n.node.clone(), u.clone(), u.clone(), u.clone(), u];
            }
            vec![
                n.node.clone(),
                cpu_text(n.cpu_millis),
                percent_text(n.cpu_millis, n.cpu_capacity_millis),
                memory_text(n.memory_bytes),
                percent_text(n.memory_bytes, n.memory_capacity_bytes),
            ]
        })
        .collect();
    Table {
        headers: ["NAME", "CPU(cores)", "CPU%", "MEMORY(bytes)", "MEMORY%"]
            .into_iter()
            .map(String::from)
            .collect(),
        rows,
    }
}

/// Splits `name:tag` at the tag's colon (a registry port is not a tag); no tag gives `<none>`.
pub fn split_reference(reference: &str) -> (String, String) {
    let last_slash = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[last_slash..].rfind(':') {
        Some(i) => (
            reference[..last_slash + i].to_string(),
            reference[last_slash + i + 1..].to_string(),
        ),
        None => (reference.to_string(), "<none>".to_string()),
    }
}

/// `image ls`: NAME TAG DIGEST SIZE, a row per name (`<none>` for images without a name).
pub fn images_table(images: &[shoal_proto::ImageInfo]) -> Table {
    let mut rows = Vec::new();
    for img in images {
        let size = size_text(img.size);
        if img.names.is_empty() {
            rows.push(vec![
                "<none>".into(),
                "<none>".into(),
                img.digest.clone(),
                size.clone(),
            ]);
        }
        for n in &img.names {
            let (name, tag) = split_reference(n);
            rows.push(vec![name, tag, img.digest.clone(), size.clone()]);
        }
    }
    rows.sort();
    Table {
        headers: ["NAME", "TAG", "DIGEST", "SIZE"]
            .into_iter()
            .map(String::from)
            .collect(),
        rows,
    }
}

/// The images of a pod template, `container=image` joined by commas.
pub fn template_images(template: &Value) -> String {
    arr(template, "/spec/containers")
        .iter()
        .map(|c| {
            format!(
                "{}={}",
                s_at(c, "/name").unwrap_or(""),
                s_at(c, "/image").unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `rollout history`: REVISION TEMPLATE-HASH IMAGES, oldest first; the current revision is
/// marked `(current)`.
pub fn rollout_history_table(deployment: &Value) -> Table {
    let current = i_at(deployment, "/status/revision").unwrap_or(0);
    let rows = arr(deployment, "/status/history")
        .iter()
        .map(|h| {
            let rev = i_at(h, "/revision").unwrap_or(0);
            let mut r = rev.to_string();
            if rev == current {
                r.push_str(" (current)");
            }
            vec![
                r,
                s_at(h, "/templateHash").unwrap_or("").to_string(),
                template_images(h.get("template").unwrap_or(&Value::Null)),
            ]
        })
        .collect();
    Table {
        headers: ["REVISION", "TEMPLATE-HASH", "IMAGES"]
            .into_iter()
            .map(String::from)
            .collect(),
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[allow(unused_imports)]
    use crate::output::testutil::*;

    fn cstats(ns: &str, pod: &str, c: &str, cpu: u64, mem: u64) -> shoal_proto::ContainerStats {
        shoal_proto::ContainerStats {
            namespace: ns.into(),
            pod: pod.into(),
            container: c.into(),
            cpu_usage_nanos: 0,
            memory_bytes: mem,
            cpu_millis: cpu,
        }
    }

    fn nstats() -> Vec<shoal_proto::NodeStats> {
        vec![
            shoal_proto::NodeStats {
                node: "n2".into(),
                cpu_millis: 250,
                memory_bytes: 512 * 1024 * 1024,
                cpu_capacity_millis: 2000,
                memory_capacity_bytes: 4 * 1024 * 1024 * 1024,
                containers: vec![
                    cstats("default", "web-1", "app", 12, 34 * 1024 * 1024 + 5),
                    cstats("default", "web-1", "sidecar", 3, 1024 * 1024),
                    cstats("kube", "dns", "dns", 1, 200_000),
                ],
                error: String::new(),
            },
            shoal_proto::NodeStats {
                node: "n1".into(),
                error: "agent unreachable".into(),
                ..Default::default()
            },
        ]
    }

    #[test]
    fn top_tables_use_kubectl_quantities() {
        assert_eq!(cpu_text(12), "12m");
        assert_eq!(memory_text(34 * 1024 * 1024 + 99), "34Mi");
        assert_eq!(memory_text(1000), "0Mi");
        assert_eq!(percent_text(250, 2000), "12%");
        assert_eq!(percent_text(1, 0), "<unknown>");
        assert_eq!(
            top_pods_table(&nstats(), Some("default"), None).render(false),
            "NAME    CPU(cores)   MEMORY(bytes)\n\
             web-1   15m          35Mi\n"
        );
        assert_eq!(
            top_pods_table(&nstats(), None, None).render(false),
            "NAMESPACE   NAME    CPU(cores)   MEMORY(bytes)\n\
             default     web-1   15m          35Mi\n\
             kube        dns     1m           0Mi\n"
        );
        assert!(
            top_pods_table(&nstats(), Some("default"), Some("x"))
                .rows
                .is_empty()
        );
        assert_eq!(
            top_nodes_table(&nstats(), None).render(false),
            "NAME   CPU(cores)   CPU%        MEMORY(bytes)   MEMORY%\n\
             n1     <unknown>    <unknown>   <unknown>       <unknown>\n\
             n2     250m         12%         512Mi           12%\n"
        );
    }

    #[test]
    fn image_tables_split_references() {
        assert_eq!(
            split_reference("busybox:latest"),
            ("busybox".into(), "latest".into())
        );
        assert_eq!(
            split_reference("reg:5000/a/b:v1"),
            ("reg:5000/a/b".into(), "v1".into())
        );
        assert_eq!(
            split_reference("reg:5000/a"),
            ("reg:5000/a".into(), "<none>".into())
        );
        assert_eq!(size_text(999), "999B");
        assert_eq!(size_text(1_234_567), "1.2MB");
        assert_eq!(size_text(45_000_000), "45MB");
        let imgs = vec![
            shoal_proto::ImageInfo {
                names: vec!["busybox:latest".into(), "busybox:2".into()],
                digest: "sha256:aa".into(),
                size: 1_200_000,
                ..Default::default()
            },
            shoal_proto::ImageInfo {
                digest: "sha256:bb".into(),
                size: 10,
                ..Default::default()
            },
        ];
        assert_eq!(
            images_table(&imgs).render(false),
            "NAME      TAG      DIGEST      SIZE\n\
             <none>    <none>   sha256:bb   10B\n\
             busybox   2        sha256:aa   1.2MB\n\
             busybox   latest   sha256:aa   1.2MB\n"
        );
    }

    #[test]
    fn rollout_history_marks_the_current_revision() {
        let d = json!({"status": {"revision": 3, "history": [
            {"revision": 1, "templateHash": "aaaa", "template": {"spec": {"containers": [{"name": "app", "image": "busybox:1"}]}}},
            {"revision": 3, "templateHash": "bbbb", "template": {"spec": {"containers": [{"name": "app", "image": "busybox:2"}, {"name": "log", "image": "x"}]}}}
        ]}});
        assert_eq!(
            rollout_history_table(&d).render(false),
            "REVISION      TEMPLATE-HASH   IMAGES\n\
             1             aaaa            app=busybox:1\n\
             3 (current)   bbbb            app=busybox:2,log=x\n"
        );
    }
}
