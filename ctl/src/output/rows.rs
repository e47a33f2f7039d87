//! Each kind's table: headers and rows with kubectl's columns (`-o wide`, `-A`,
//! `--show-labels`), and the summaries they are made of (pod READY and STATUS, service
//! PORTS, node STATUS and ROLES, endpoints).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::fields::{
    arr, first_str, i_at, join_labels, name_of, namespace_of, or_none, s_at, selector_text,
    string_map,
};
use super::table::Table;
use super::time::{age_of, parse_time};
use crate::kinds::KindInfo;

/// Which optional columns a table shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableOptions {
    /// `-o wide`.
    pub wide: bool,
    /// `-A`: a leading NAMESPACE column.
    pub all_namespaces: bool,
    /// `--show-labels`: a trailing LABELS column.
    pub show_labels: bool,
    /// `--output-watch-events`: a leading EVENT column (filled by the caller).
    pub watch_events: bool,
    /// Several kinds in one `get`: names are shown as `kind/name`.
    pub kind_prefix: bool,
}

/// The headers of a kind's table.
pub fn headers(kind: &KindInfo, opts: TableOptions) -> Vec<String> {
    let (base, wide): (&[&str], &[&str]) = match kind.kind {
        "Pod" => (
            &["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
            &["IP", "NODE"],
        ),
        "Deployment" => (
            &["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
            &["CONTAINERS", "IMAGES", "SELECTOR"],
        ),
        "DaemonSet" => super::daemonset::HEADERS,
        k if super::storage::headers(k).is_some() => super::storage::headers(k).unwrap_or_default(),
        "Service" => (
            &["NAME", "TYPE", "CLUSTER-IP", "PORTS", "AGE"],
            &["SELECTOR", "ENDPOINTS"],
        ),
        "Node" => (
            &["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
            &["INTERNAL-IP", "POD-CIDR", "LABELS"],
        ),
        "Event" => (&["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"], &[]),
        "Namespace" => (&["NAME", "STATUS", "AGE"], &[]),
        "Endpoints" => (&["NAME", "ENDPOINTS", "AGE"], &[]),
        k if super::config::headers(k).is_some() => {
            (super::config::headers(k).unwrap_or_default(), &[])
        }
        k => super::batch::headers(k).unwrap_or((&["NAME", "AGE"], &[])),
    };
    let mut h: Vec<String> = Vec::new();
    if opts.watch_events {
        h.push("EVENT".into());
    }
    if opts.all_namespaces && kind.namespaced {
        h.push("NAMESPACE".into());
    }
    h.extend(base.iter().map(|s| s.to_string()));
    if opts.wide {
        h.extend(wide.iter().map(|s| s.to_string()));
    }
    let has_labels = opts.wide && kind.kind == "Node";
    if opts.show_labels && !has_labels {
        h.push("LABELS".into());
    }
    h
}

/// Objects of other kinds some rows show: the Endpoints of Services (`-o wide`).
#[derive(Debug, Clone, Default)]
pub struct Related {
    /// Endpoints objects by (namespace, name).
    pub endpoints: BTreeMap<(String, String), Value>,
}

impl Related {
    /// Indexes Endpoints objects by namespace and name.
    pub fn with_endpoints(items: Vec<Value>) -> Self {
        let endpoints = items
            .into_iter()
            .map(|e| ((namespace_of(&e).to_string(), name_of(&e).to_string()), e))
            .collect();
        Self { endpoints }
    }

    fn endpoints_of(&self, v: &Value) -> Option<&Value> {
        self.endpoints
            .get(&(namespace_of(v).to_string(), name_of(v).to_string()))
    }
}

/// One object's row (without the EVENT cell, which the watch adds).
pub fn row(kind: &KindInfo, v: &Value, opts: TableOptions, now: DateTime<Utc>) -> Vec<String> {
    row_with(kind, v, opts, now, &Related::default())
}

/// One object's row, with cells that come from `related` objects.
pub fn row_with(
    kind: &KindInfo,
    v: &Value,
    opts: TableOptions,
    now: DateTime<Utc>,
    related: &Related,
) -> Vec<String> {
    let age = age_of(v.pointer("/metadata/creationTimestamp"), now);
    let name = if opts.kind_prefix {
        kind.slash_name(name_of(v))
    } else {
        name_of(v).to_string()
    };
    let (base, wide): (Vec<String>, Vec<String>) = match kind.kind {
        "Pod" => {
            let p = pod_summary(v);
            (
                vec![
                    name,
                    format!("{}/{}", p.ready, p.total),
                    p.status,
                    p.restarts.to_string(),
                    age,
                ],
                vec![
                    or_none(s_at(v, "/status/podIP")),
                    or_none(first_str(v, &["/spec/nodeName", "/status/nodeName"])),
                ],
            )
        }
        "Deployment" => {
            let desired = i_at(v, "/spec/replicas").unwrap_or(1);
            let ready = i_at(v, "/status/readyReplicas").unwrap_or(0);
            let updated = i_at(v, "/status/updatedReplicas").unwrap_or(0);
            let available = i_at(v, "/status/availableReplicas").unwrap_or(ready);
            let containers = arr(v, "/spec/template/spec/containers");
            let list = |f: &str| {
                or_none(Some(
                    containers
                        .iter()
                        .filter_map(|c| c.get(f)?.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                ))
            };
            (
                vec![
                    name,
                    format!("{ready}/{desired}"),
                    updated.to_string(),
                    available.to_string(),
                    age,
                ],
                vec![
                    list("name"),
                    list("image"),
                    selector_text(v.pointer("/spec/selector")),
                ],
            )
        }
        "Service" => (
            vec![
                name,
                s_at(v, "/spec/type").unwrap_or("ClusterIP").to_string(),
                or_none(s_at(v, "/spec/clusterIP")),
                service_ports(v),
                age,
            ],
            vec![
                selector_text(v.pointer("/spec/selector")),
                related
                    .endpoints_of(v)
                    .map_or_else(|| "<none>".to_string(), |e| endpoints_text(e, 3)),
            ],
        ),
        "Node" => (
            vec![
                name,
                node_status(v),
                node_roles(v),
                age,
                or_none(first_str(
                    v,
                    &[
                        "/status/nodeInfo/agentVersion",
                        "/status/nodeInfo/kubeletVersion",
                        "/status/agentVersion",
                        "/status/version",
                    ],
                )),
            ],
            vec![
                node_internal_ip(v),
                or_none(first_str(v, &["/spec/podCIDR", "/status/podCIDR"])),
                or_none(Some(join_labels(&string_map(v, "/metadata/labels")))),
            ],
        ),
        "Event" => (
            vec![
                age_of(event_time(v), now),
                s_at(v, "/type").unwrap_or("Normal").to_string(),
                s_at(v, "/reason").unwrap_or("").to_string(),
                involved_object(v),
                crate::error::one_line(s_at(v, "/message").unwrap_or("")),
            ],
            vec![],
        ),
        "Namespace" => (
            vec![
                name,
                s_at(v, "/status/phase").unwrap_or("Active").to_string(),
                age,
            ],
            vec![],
        ),
        "Endpoints" => (vec![name, endpoints_text(v, 3), age], vec![]),
        k @ ("ConfigMap" | "Secret") => (
            super::config::row(k, v, name, age).unwrap_or_default(),
            vec![],
        ),
        "DaemonSet" => {
            let (cells, wide) = super::daemonset::row(v, age);
            (std::iter::once(name).chain(cells).collect(), wide)
        }
        k @ ("StatefulSet" | "PersistentVolumeClaim" | "PersistentVolume") => {
            let (cells, wide) = super::storage::row(k, v, age).unwrap_or_default();
            (std::iter::once(name).chain(cells).collect(), wide)
        }
        k @ ("Job" | "CronJob") => {
            let (cells, wide) = super::batch::row(k, v, age, now);
            (std::iter::once(name).chain(cells).collect(), wide)
        }
        _ => (vec![name, age], vec![]),
    };
    let mut r = Vec::new();
    if opts.all_namespaces && kind.namespaced {
        r.push(namespace_of(v).to_string());
    }
    r.extend(base);
    if opts.wide {
        r.extend(wide);
    }
    let has_labels = opts.wide && kind.kind == "Node";
    if opts.show_labels && !has_labels {
        r.push(or_none(Some(join_labels(&string_map(
            v,
            "/metadata/labels",
        )))));
    }
    r
}

/// A kind's table for a list of objects (events sorted by when they last happened).
pub fn table(kind: &KindInfo, items: &[Value], opts: TableOptions, now: DateTime<Utc>) -> Table {
    table_with(kind, items, opts, now, &Related::default())
}

/// A kind's table, with cells that come from `related` objects.
pub fn table_with(
    kind: &KindInfo,
    items: &[Value],
    opts: TableOptions,
    now: DateTime<Utc>,
    related: &Related,
) -> Table {
    let mut sorted: Vec<&Value> = items.iter().collect();
    if kind.kind == "Event" {
        sorted.sort_by_key(|e| parse_time(event_time(e)));
    }
    Table {
        headers: headers(kind, opts),
        rows: sorted
            .into_iter()
            .map(|v| row_with(kind, v, opts, now, related))
            .collect(),
    }
}

/// What kubectl shows for a pod: ready containers, total, status word, restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSummary {
    /// Containers that are ready.
    pub ready: usize,
    /// Containers in the spec.
    pub total: usize,
    /// The STATUS column.
    pub status: String,
    /// Sum of restart counts.
    pub restarts: i64,
}

/// Computes the pod's READY, STATUS and RESTARTS like kubectl.
pub fn pod_summary(v: &Value) -> PodSummary {
    let statuses = arr(v, "/status/containerStatuses");
    let total = arr(v, "/spec/containers").len().max(statuses.len());
    let mut status = first_str(v, &["/status/reason", "/status/phase"])
        .unwrap_or("Pending")
        .to_string();
    let mut ready = 0;
    let (init, mut restarts) = super::batch::init_status(v);
    let mut running = false;
    let app_statuses = if init.is_some() { &[][..] } else { statuses };
    if let Some(s) = init {
        status = s;
    }
    for c in app_statuses.iter().rev() {
        restarts += i_at(c, "/restartCount").unwrap_or(0);
        if let Some(r) = s_at(c, "/state/waiting/reason") {
            status = r.to_string();
        } else if c.pointer("/state/terminated").is_some() {
            status = match s_at(c, "/state/terminated/reason") {
                Some(r) => r.to_string(),
                None => match i_at(c, "/state/terminated/signal").filter(|s| *s != 0) {
                    Some(sig) => format!("Signal:{sig}"),
                    None => format!(
                        "ExitCode:{}",
                        i_at(c, "/state/terminated/exitCode").unwrap_or(0)
                    ),
                },
            };
        } else if c.pointer("/state/running").is_some() {
            running = true;
            if c.get("ready").and_then(Value::as_bool) == Some(true) {
                ready += 1;
            }
        }
    }
    if status == "Completed" && running {
        status = "Running".into();
    }
    if v.pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
    {
        status = "Terminating".into();
    }
    PodSummary {
        ready,
        total,
        status,
        restarts,
    }
}

fn service_ports(v: &Value) -> String {
    let ports: Vec<String> = arr(v, "/spec/ports")
        .iter()
        .map(|p| {
            let proto = s_at(p, "/protocol").unwrap_or("TCP");
            let port = i_at(p, "/port")
                .map(|n| n.to_string())
                .unwrap_or_else(|| "?".into());
            match i_at(p, "/nodePort") {
                Some(np) if np > 0 => format!("{port}:{np}/{proto}"),
                _ => format!("{port}/{proto}"),
            }
        })
        .collect();
    or_none(Some(ports.join(",")))
}

fn node_status(v: &Value) -> String {
    let ready = arr(v, "/status/conditions")
        .iter()
        .find(|c| s_at(c, "/type") == Some("Ready"));
    let mut s = match ready.and_then(|c| s_at(c, "/status")) {
        Some("True") => "Ready".to_string(),
        Some("False") => "NotReady".to_string(),
        _ => "Unknown".to_string(),
    };
    if v.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        s.push_str(",SchedulingDisabled");
    }
    s
}

pub(super) fn node_roles(v: &Value) -> String {
    let roles: Vec<String> = string_map(v, "/metadata/labels")
        .into_iter()
        .filter_map(|(k, val)| {
            if let Some(r) = k
                .strip_prefix("node-role.kubernetes.io/")
                .or_else(|| k.strip_prefix("node-role.shoal.io/"))
            {
                Some(r.to_string())
            } else if k == "kubernetes.io/role" || k == "shoal.io/role" {
                Some(val)
            } else {
                None
            }
        })
        .filter(|r| !r.is_empty())
        .collect();
    or_none(Some(roles.join(",")))
}

fn node_internal_ip(v: &Value) -> String {
    let from_addresses = arr(v, "/status/addresses")
        .iter()
        .find(|a| s_at(a, "/type") == Some("InternalIP"))
        .and_then(|a| s_at(a, "/address"));
    or_none(from_addresses.or_else(|| {
        first_str(
            v,
            &["/status/internalIP", "/spec/internalIP", "/status/address"],
        )
    }))
}

/// `ip:port,…` of an Endpoints object's ready addresses; after `limit`, `+ N more...`.
pub fn endpoints_text(v: &Value, limit: usize) -> String {
    let mut all = Vec::new();
    for subset in arr(v, "/subsets") {
        let ports: Vec<i64> = arr(subset, "/ports")
            .iter()
            .filter_map(|p| i_at(p, "/port"))
            .collect();
        for a in arr(subset, "/addresses") {
            let ip = s_at(a, "/ip").unwrap_or("?");
            if ports.is_empty() {
                all.push(ip.to_string());
            }
            for port in &ports {
                all.push(format!("{ip}:{port}"));
            }
        }
    }
    if all.len() > limit {
        let more = all.len() - limit;
        all.truncate(limit);
        format!("{} + {more} more...", all.join(","))
    } else {
        or_none(Some(all.join(",")))
    }
}

pub(super) fn event_time(v: &Value) -> Option<&Value> {
    [
        "/lastTimestamp",
        "/eventTime",
        "/firstTimestamp",
        "/metadata/creationTimestamp",
    ]
    .iter()
    .filter_map(|p| v.pointer(p))
    .find(|t| t.as_str().is_some_and(|s| !s.is_empty()))
}

pub(super) fn involved_object(v: &Value) -> String {
    let kind = s_at(v, "/involvedObject/kind").unwrap_or("").to_lowercase();
    let name = s_at(v, "/involvedObject/name").unwrap_or("");
    if kind.is_empty() {
        name.to_string()
    } else {
        format!("{kind}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[allow(unused_imports)]
    use crate::output::testutil::*;

    fn pod(name: &str, status: Value) -> Value {
        json!({
            "apiVersion": "shoal/v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "creationTimestamp": ago(300), "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "a", "image": "busybox"}, {"name": "b", "image": "busybox"}], "nodeName": "n1"},
            "status": status,
        })
    }

    #[test]
    fn pod_rows_ready_status_restarts() {
        let kind = resolve("pods").unwrap();
        let running = pod(
            "web-1",
            json!({"phase": "Running", "podIP": "10.1.0.5", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 1, "state": {"running": {}}},
                {"name": "b", "ready": true, "restartCount": 2, "state": {"running": {}}},
            ]}),
        );
        let crashing = pod(
            "web-2",
            json!({"phase": "Running", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 7, "state": {"waiting": {"reason": "CrashLoopBackOff"}}},
            ]}),
        );
        let pending = json!({"kind": "Pod", "metadata": {"name": "web-3"}, "spec": {"containers": [{"name": "a"}]}});
        let oom = pod(
            "web-4",
            json!({"phase": "Failed", "containerStatuses": [
                {"name": "a", "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}},
                {"name": "b", "state": {"terminated": {"exitCode": 3}}},
            ]}),
        );
        let items = [running, crashing, pending, oom];
        let t = table(&kind, &items, TableOptions::default(), now());
        assert_eq!(
            t.render(false),
            "NAME    READY   STATUS             RESTARTS   AGE\n\
             web-1   2/2     Running            3          5m\n\
             web-2   1/2     CrashLoopBackOff   7          5m\n\
             web-3   0/1     Pending            0          <unknown>\n\
             web-4   0/2     OOMKilled          0          5m\n"
        );
        let wide = table(
            &kind,
            &items[..1],
            TableOptions {
                wide: true,
                all_namespaces: true,
                ..Default::default()
            },
            now(),
        );
        assert_eq!(
            wide.headers,
            [
                "NAMESPACE",
                "NAME",
                "READY",
                "STATUS",
                "RESTARTS",
                "AGE",
                "IP",
                "NODE"
            ]
        );
        assert_eq!(
            wide.rows[0],
            [
                "default", "web-1", "2/2", "Running", "3", "5m", "10.1.0.5", "n1"
            ]
        );
        let labels = table(
            &kind,
            &items[2..3],
            TableOptions {
                wide: true,
                show_labels: true,
                ..Default::default()
            },
            now(),
        );
        assert_eq!(labels.rows[0][5..], ["<none>", "<none>", "<none>"]);
    }

    #[test]
    fn deployment_service_node_event_namespace_rows() {
        let dep = json!({"kind": "Deployment", "metadata": {"name": "web", "creationTimestamp": ago(3 * 86400)},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]},
                "template": {"spec": {"containers": [{"name": "app", "image": "busybox:1"}, {"name": "side", "image": "busybox:2"}]}}},
            "status": {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        let t = table(
            &resolve("deploy").unwrap(),
            &[dep],
            TableOptions {
                wide: true,
                ..Default::default()
            },
            now(),
        );
        assert_eq!(
            t.headers,
            [
                "NAME",
                "READY",
                "UP-TO-DATE",
                "AVAILABLE",
                "AGE",
                "CONTAINERS",
                "IMAGES",
                "SELECTOR"
            ]
        );
        assert_eq!(
            t.rows[0],
            [
                "web",
                "2/3",
                "3",
                "2",
                "3d",
                "app,side",
                "busybox:1,busybox:2",
                "app=web,tier in (a,b)"
            ]
        );

        let svc = json!({"kind": "Service", "metadata": {"name": "web", "namespace": "default",
                "creationTimestamp": ago(10)},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "selector": {"app": "web"},
                "ports": [{"port": 80, "nodePort": 30080}, {"port": 53, "protocol": "UDP"}]}});
        let other = json!({"kind": "Service", "metadata": {"name": "db", "namespace": "default",
                "creationTimestamp": ago(10)},
            "spec": {"clusterIP": "10.96.0.11", "selector": {"app": "db"}, "ports": [{"port": 5432}]}});
        let related = Related::with_endpoints(vec![
            json!({"kind": "Endpoints", "metadata": {"name": "web", "namespace": "default"},
                "subsets": [{"addresses": [{"ip": "10.244.0.5"}, {"ip": "10.244.1.7"}],
                             "notReadyAddresses": [{"ip": "10.244.2.2"}],
                             "ports": [{"port": 8080}]}]}),
            // Same name in another namespace: not this service's.
            json!({"kind": "Endpoints", "metadata": {"name": "db", "namespace": "prod"},
                "subsets": [{"addresses": [{"ip": "10.244.0.9"}], "ports": [{"port": 5432}]}]}),
        ]);
        let t = table_with(
            &resolve("svc").unwrap(),
            &[svc, other.clone()],
            TableOptions {
                wide: true,
                ..Default::default()
            },
            now(),
            &related,
        );
        assert_eq!(
            t.headers,
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
        assert_eq!(
            t.rows[0],
            [
                "web",
                "NodePort",
                "10.96.0.10",
                "80:30080/TCP,53/UDP",
                "10s",
                "app=web",
                "10.244.0.5:8080,10.244.1.7:8080"
            ]
        );
        assert_eq!(t.rows[1][6], "<none>");
        let t = table(
            &resolve("services").unwrap(),
            &[other],
            TableOptions::default(),
            now(),
        );
        assert_eq!(t.headers, ["NAME", "TYPE", "CLUSTER-IP", "PORTS", "AGE"]);
        assert_eq!(
            t.rows[0],
            ["db", "ClusterIP", "10.96.0.11", "5432/TCP", "10s"]
        );

        let node = json!({"kind": "Node", "metadata": {"name": "n1", "creationTimestamp": ago(7200),
                "labels": {"node-role.kubernetes.io/worker": "", "zone": "a"}},
            "spec": {"podCIDR": "10.244.1.0/24", "unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "192.168.1.2"}],
                "nodeInfo": {"agentVersion": "v0.1.0"}}});
        let t = table(
            &resolve("nodes").unwrap(),
            &[node],
            TableOptions {
                wide: true,
                show_labels: true,
                ..Default::default()
            },
            now(),
        );
        assert_eq!(
            t.headers,
            [
                "NAME",
                "STATUS",
                "ROLES",
                "AGE",
                "VERSION",
                "INTERNAL-IP",
                "POD-CIDR",
                "LABELS"
            ]
        );
        assert_eq!(
            t.rows[0],
            [
                "n1",
                "Ready,SchedulingDisabled",
                "worker",
                "120m",
                "v0.1.0",
                "192.168.1.2",
                "10.244.1.0/24",
                "node-role.kubernetes.io/worker=,zone=a"
            ]
        );

        let ev = |name: &str, secs: i64| {
            json!({"kind": "Event", "metadata": {"name": name},
            "involvedObject": {"kind": "Pod", "name": "web-1"}, "reason": "Started", "type": "Normal",
            "message": "started\ncontainer app", "lastTimestamp": ago(secs)})
        };
        let t = table(
            &resolve("events").unwrap(),
            &[ev("new", 5), ev("old", 60)],
            TableOptions::default(),
            now(),
        );
        assert_eq!(
            t.headers,
            ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
        );
        assert_eq!(
            t.rows[0],
            [
                "60s",
                "Normal",
                "Started",
                "pod/web-1",
                "started container app"
            ],
            "oldest first"
        );

        let ns =
            json!({"kind": "Namespace", "metadata": {"name": "prod", "creationTimestamp": ago(1)}});
        let t = table(
            &resolve("ns").unwrap(),
            &[ns],
            TableOptions {
                all_namespaces: true,
                ..Default::default()
            },
            now(),
        );
        assert_eq!(
            t.headers,
            ["NAME", "STATUS", "AGE"],
            "cluster-scoped kinds get no NAMESPACE column"
        );
        assert_eq!(t.rows[0], ["prod", "Active", "1s"]);

        let ep = json!({"kind": "Endpoints", "metadata": {"name": "web"}, "subsets": [
            {"addresses": [{"ip": "10.1.0.5"}, {"ip": "10.1.0.6"}, {"ip": "10.1.1.2"}, {"ip": "10.1.1.3"}], "ports": [{"port": 8080}]}]});
        assert_eq!(
            endpoints_text(&ep, 3),
            "10.1.0.5:8080,10.1.0.6:8080,10.1.1.2:8080 + 1 more..."
        );
    }
}
