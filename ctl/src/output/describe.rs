//! `describe` pages: metadata, a summary of each kind's spec and status, and events,
//! aligned like kubectl's.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::fields::{
    arr, first_str, i_at, name_of, namespace_of, or_none, s_at, selector_text, string_map,
};
use super::rows::{endpoints_text, event_time, involved_object, node_roles, pod_summary};
use super::table::Table;
use super::time::{age_of, long_time, parse_time};
use crate::kinds::KindInfo;

/// Lines of a `describe` page, aligned like kubectl's (consecutive `Key:  value` lines
/// share one value column).
#[derive(Debug, Default)]
struct Page {
    lines: Vec<(usize, String, Option<String>)>,
}

impl Page {
    fn kv(&mut self, indent: usize, key: &str, value: impl Into<String>) {
        self.lines
            .push((indent, format!("{key}:"), Some(value.into())));
    }
    fn heading(&mut self, indent: usize, key: &str) {
        self.lines.push((indent, format!("{key}:"), None));
    }
    fn raw(&mut self, indent: usize, text: &str) {
        for l in text.lines() {
            self.lines.push((indent, l.to_string(), None));
        }
    }
    fn map(&mut self, indent: usize, key: &str, m: &BTreeMap<String, String>) {
        let v = if m.is_empty() {
            "<none>".to_string()
        } else {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        self.kv(indent, key, v);
    }
    fn render(&self) -> String {
        let mut out = String::new();
        let mut i = 0;
        while i < self.lines.len() {
            if self.lines[i].2.is_none() {
                let (ind, text, _) = &self.lines[i];
                let _ = writeln!(out, "{}{}", " ".repeat(*ind), text);
                i += 1;
                continue;
            }
            let start = i;
            while i < self.lines.len() && self.lines[i].2.is_some() {
                i += 1;
            }
            let block = &self.lines[start..i];
            let col = block
                .iter()
                .map(|(ind, k, _)| ind + k.chars().count())
                .max()
                .unwrap_or(0)
                + 2;
            for (ind, k, v) in block {
                let v = v.as_deref().unwrap_or("");
                let mut vlines = v.lines();
                let first = vlines.next().unwrap_or("");
                let lead = format!("{}{}", " ".repeat(*ind), k);
                let pad = col.saturating_sub(lead.chars().count());
                let _ = writeln!(out, "{}{}{}", lead, " ".repeat(pad), first).map(|_| ());
                for more in vlines {
                    let _ = writeln!(out, "{}{}", " ".repeat(col), more);
                }
            }
        }
        out.lines()
            .map(|l| l.trim_end().to_string() + "\n")
            .collect()
    }
}

/// Renders `describe` for one object and the events that involve it.
/// `endpoints` is the Endpoints object of a described Service, when there is one.
pub fn describe(
    kind: &KindInfo,
    v: &Value,
    events: &[Value],
    endpoints: Option<&Value>,
    now: DateTime<Utc>,
) -> String {
    let mut p = Page::default();
    p.kv(0, "Name", name_of(v));
    if kind.namespaced {
        p.kv(0, "Namespace", namespace_of(v));
    }
    p.map(0, "Labels", &string_map(v, "/metadata/labels"));
    p.map(0, "Annotations", &string_map(v, "/metadata/annotations"));
    p.kv(
        0,
        "CreationTimestamp",
        long_time(v.pointer("/metadata/creationTimestamp")),
    );
    let owners: Vec<String> = arr(v, "/metadata/ownerReferences")
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                s_at(o, "/kind").unwrap_or("?"),
                s_at(o, "/name").unwrap_or("?")
            )
        })
        .collect();
    if !owners.is_empty() {
        p.kv(0, "Controlled By", owners.join(", "));
    }
    match kind.kind {
        "Pod" => describe_pod(&mut p, v),
        "Deployment" => describe_deployment(&mut p, v),
        "Service" => describe_service(&mut p, v, endpoints),
        "Node" => describe_node(&mut p, v),
        "Event" => describe_event(&mut p, v),
        k @ ("ConfigMap" | "Secret") => {
            for (key, val) in super::config::describe(k, v).unwrap_or_default() {
                p.kv(0, &key, val);
            }
        }
        k @ ("PersistentVolumeClaim" | "PersistentVolume") => {
            p.lines
                .extend(super::storage::describe(k, v).unwrap_or_default());
        }
        k @ ("DaemonSet" | "StatefulSet") => {
            p.lines.extend(match k {
                "DaemonSet" => super::daemonset::describe(v),
                _ => super::storage::describe(k, v).unwrap_or_default(),
            });
            p.heading(0, "Pod Template");
            p.map(
                2,
                "Labels",
                &string_map(v, "/spec/template/metadata/labels"),
            );
            p.heading(2, "Containers");
            describe_containers(&mut p, 4, arr(v, "/spec/template/spec/containers"), &[]);
        }
        k @ ("Job" | "CronJob") => {
            p.lines.extend(super::batch::describe(k, v, now));
            let t = super::batch::pod_template(k, v).unwrap_or(&Value::Null);
            p.map(2, "Labels", &string_map(t, "/metadata/labels"));
            p.heading(2, "Containers");
            describe_containers(&mut p, 4, arr(t, "/spec/containers"), &[]);
        }
        _ => describe_generic(&mut p, v),
    }
    if events.is_empty() {
        p.kv(0, "Events", "<none>");
    } else {
        p.heading(0, "Events");
        let mut t = Table {
            headers: ["Type", "Reason", "Age", "From", "Message"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            rows: vec![
                ["----", "------", "----", "----", "-------"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            ],
        };
        let mut sorted: Vec<&Value> = events.iter().collect();
        sorted.sort_by_key(|e| parse_time(event_time(e)));
        for e in sorted {
            let mut age = age_of(event_time(e), now);
            if let Some(n) = i_at(e, "/count").filter(|n| *n > 1) {
                let first = e.pointer("/firstTimestamp").map(|f| age_of(Some(f), now));
                age = match first {
                    Some(f) if f != "<unknown>" => format!("{age} (x{n} over {f})"),
                    _ => format!("{age} (x{n})"),
                };
            }
            t.rows.push(vec![
                s_at(e, "/type").unwrap_or("Normal").to_string(),
                s_at(e, "/reason").unwrap_or("").to_string(),
                age,
                or_none(first_str(
                    e,
                    &["/source/component", "/reportingComponent", "/source"],
                )),
                crate::error::one_line(s_at(e, "/message").unwrap_or("")),
            ]);
        }
        let w = t.widths(true);
        let lines: String = std::iter::once(&t.headers)
            .chain(t.rows.iter())
            .map(|r| render_line_gap(r, &w, 2))
            .collect();
        p.raw(2, &lines);
    }
    p.render()
}

fn render_line_gap(cells: &[String], widths: &[usize], gap: usize) -> String {
    let mut line = String::new();
    for (i, c) in cells.iter().enumerate() {
        line.push_str(c);
        if i + 1 < cells.len() {
            let pad = widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(c.chars().count())
                + gap;
            line.extend(std::iter::repeat_n(' ', pad));
        }
    }
    line.trim_end().to_string() + "\n"
}

fn yaml_block(v: &Value) -> String {
    serde_yaml_ng::to_string(v).unwrap_or_else(|_| v.to_string())
}

fn describe_generic(p: &mut Page, v: &Value) {
    for (key, field) in [("Spec", "spec"), ("Status", "status")] {
        match v.get(field) {
            Some(x) if !x.is_null() && x.as_object().is_none_or(|o| !o.is_empty()) => {
                p.heading(0, key);
                p.raw(2, &yaml_block(x));
            }
            _ => {}
        }
    }
}

fn quantities(v: Option<&Value>) -> Option<String> {
    let m = v?.as_object()?;
    if m.is_empty() {
        return None;
    }
    Some(
        m.iter()
            .map(|(k, q)| {
                format!(
                    "{k}: {}",
                    q.as_str().map_or_else(|| q.to_string(), str::to_string)
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

fn container_state(s: &Value) -> (String, Vec<(String, String)>) {
    if let Some(r) = s.pointer("/running") {
        let mut d = Vec::new();
        if r.get("startedAt").is_some() {
            d.push(("Started".into(), long_time(r.get("startedAt"))));
        }
        ("Running".into(), d)
    } else if let Some(w) = s.pointer("/waiting") {
        let mut d = Vec::new();
        if let Some(r) = s_at(w, "/reason") {
            d.push(("Reason".into(), r.to_string()));
        }
        if let Some(m) = s_at(w, "/message") {
            d.push(("Message".into(), crate::error::one_line(m)));
        }
        ("Waiting".into(), d)
    } else if let Some(t) = s.pointer("/terminated") {
        let mut d = Vec::new();
        if let Some(r) = s_at(t, "/reason") {
            d.push(("Reason".into(), r.to_string()));
        }
        d.push((
            "Exit Code".into(),
            i_at(t, "/exitCode").unwrap_or(0).to_string(),
        ));
        if t.get("startedAt").is_some() {
            d.push(("Started".into(), long_time(t.get("startedAt"))));
        }
        if t.get("finishedAt").is_some() {
            d.push(("Finished".into(), long_time(t.get("finishedAt"))));
        }
        ("Terminated".into(), d)
    } else {
        ("Waiting".into(), vec![])
    }
}

fn describe_containers(p: &mut Page, indent: usize, containers: &[Value], statuses: &[Value]) {
    for c in containers {
        let name = s_at(c, "/name").unwrap_or("?");
        p.heading(indent, name);
        let i = indent + 2;
        p.kv(i, "Image", s_at(c, "/image").unwrap_or(""));
        let ports: Vec<String> = arr(c, "/ports")
            .iter()
            .map(|pt| {
                let mut s = format!(
                    "{}/{}",
                    i_at(pt, "/containerPort")
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| "?".into()),
                    s_at(pt, "/protocol").unwrap_or("TCP")
                );
                if let Some(h) = i_at(pt, "/hostPort").filter(|h| *h > 0) {
                    s = format!("{s} (host {h})");
                }
                s
            })
            .collect();
        p.kv(i, "Port(s)", or_none(Some(ports.join(", "))));
        let words = |f: &str| {
            arr(c, f)
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("\n")
        };
        let cmd = words("/command");
        if !cmd.is_empty() {
            p.kv(i, "Command", cmd);
        }
        let args = words("/args");
        if !args.is_empty() {
            p.kv(i, "Args", args);
        }
        if let Some(st) = statuses.iter().find(|s| s_at(s, "/name") == Some(name)) {
            let (state, details) = container_state(st.get("state").unwrap_or(&Value::Null));
            p.kv(i, "State", state);
            for (k, v) in details {
                p.kv(i + 2, &k, v);
            }
            if let Some(last) = st
                .get("lastState")
                .filter(|l| l.as_object().is_some_and(|o| !o.is_empty()))
            {
                let (state, details) = container_state(last);
                p.kv(i, "Last State", state);
                for (k, v) in details {
                    p.kv(i + 2, &k, v);
                }
            }
            let ready = st.get("ready").and_then(Value::as_bool).unwrap_or(false);
            p.kv(i, "Ready", if ready { "True" } else { "False" });
            p.kv(
                i,
                "Restart Count",
                i_at(st, "/restartCount").unwrap_or(0).to_string(),
            );
        }
        if let Some(q) = quantities(c.pointer("/resources/limits")) {
            p.kv(i, "Limits", q);
        }
        if let Some(q) = quantities(c.pointer("/resources/requests")) {
            p.kv(i, "Requests", q);
        }
        let env: Vec<String> = arr(c, "/env")
            .iter()
            .map(|e| {
                format!(
                    "{}={}",
                    s_at(e, "/name").unwrap_or("?"),
                    s_at(e, "/value").unwrap_or("")
                )
            })
            .collect();
        p.kv(i, "Environment", or_none(Some(env.join("\n"))));
        let mounts: Vec<String> = arr(c, "/volumeMounts")
            .iter()
            .map(|m| {
                let ro = if m.get("readOnly").and_then(Value::as_bool) == Some(true) {
                    "ro"
                } else {
                    "rw"
                };
                format!(
                    "{} from {} ({ro})",
                    s_at(m, "/mountPath").unwrap_or("?"),
                    s_at(m, "/name").unwrap_or("?")
                )
            })
            .collect();
        p.kv(i, "Mounts", or_none(Some(mounts.join("\n"))));
    }
}

fn describe_conditions(p: &mut Page, v: &Value) {
    let conds = arr(v, "/status/conditions");
    if conds.is_empty() {
        return;
    }
    p.heading(0, "Conditions");
    let mut t = Table {
        headers: vec![
            "Type".into(),
            "Status".into(),
            "Reason".into(),
            "Message".into(),
        ],
        rows: vec![],
    };
    for c in conds {
        t.rows.push(vec![
            s_at(c, "/type").unwrap_or("").to_string(),
            s_at(c, "/status").unwrap_or("").to_string(),
            s_at(c, "/reason").unwrap_or("").to_string(),
            crate::error::one_line(s_at(c, "/message").unwrap_or("")),
        ]);
    }
    let w = t.widths(true);
    let text: String = std::iter::once(&t.headers)
        .chain(t.rows.iter())
        .map(|r| render_line_gap(r, &w, 2))
        .collect();
    p.raw(2, &text);
}

fn describe_pod(p: &mut Page, v: &Value) {
    let node = first_str(v, &["/spec/nodeName", "/status/nodeName"]);
    let host_ip = s_at(v, "/status/hostIP");
    p.kv(
        0,
        "Node",
        match (node, host_ip) {
            (Some(n), Some(ip)) => format!("{n}/{ip}"),
            (n, _) => or_none(n),
        },
    );
    if v.pointer("/status/startTime").is_some() {
        p.kv(0, "Start Time", long_time(v.pointer("/status/startTime")));
    }
    p.kv(0, "Status", pod_summary(v).status);
    if let Some(r) = s_at(v, "/status/message") {
        p.kv(0, "Message", crate::error::one_line(r));
    }
    p.kv(0, "IP", or_none(s_at(v, "/status/podIP")));
    p.kv(
        0,
        "Restart Policy",
        s_at(v, "/spec/restartPolicy").unwrap_or("Always"),
    );
    if !arr(v, "/spec/initContainers").is_empty() {
        p.heading(0, "Init Containers");
        describe_containers(
            p,
            2,
            arr(v, "/spec/initContainers"),
            arr(v, "/status/initContainerStatuses"),
        );
    }
    p.heading(0, "Containers");
    describe_containers(
        p,
        2,
        arr(v, "/spec/containers"),
        arr(v, "/status/containerStatuses"),
    );
    describe_conditions(p, v);
    let vols = arr(v, "/spec/volumes");
    if vols.is_empty() {
        p.kv(0, "Volumes", "<none>");
    } else {
        p.heading(0, "Volumes");
        for vol in vols {
            p.heading(2, s_at(vol, "/name").unwrap_or("?"));
            if let Some(h) = vol.get("hostPath") {
                p.kv(4, "Type", "HostPath");
                p.kv(4, "Path", s_at(h, "/path").unwrap_or(""));
            } else if let Some(e) = vol.get("emptyDir") {
                p.kv(4, "Type", "EmptyDir");
                p.kv(4, "SizeLimit", or_none(s_at(e, "/sizeLimit")));
            }
        }
    }
    p.map(0, "Node-Selectors", &string_map(v, "/spec/nodeSelector"));
}

fn describe_deployment(p: &mut Page, v: &Value) {
    p.kv(0, "Selector", selector_text(v.pointer("/spec/selector")));
    let desired = i_at(v, "/spec/replicas").unwrap_or(1);
    let updated = i_at(v, "/status/updatedReplicas").unwrap_or(0);
    let total = i_at(v, "/status/replicas").unwrap_or(0);
    let ready = i_at(v, "/status/readyReplicas").unwrap_or(0);
    let available = i_at(v, "/status/availableReplicas").unwrap_or(ready);
    let unavailable = i_at(v, "/status/unavailableReplicas").unwrap_or((total - available).max(0));
    p.kv(
        0,
        "Replicas",
        format!("{desired} desired | {updated} updated | {total} total | {available} available | {unavailable} unavailable"),
    );
    let strategy = s_at(v, "/spec/strategy/type").unwrap_or("RollingUpdate");
    p.kv(0, "StrategyType", strategy);
    if strategy == "RollingUpdate" {
        let show = |ptr: &str| match v.pointer(ptr) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => "25%".into(),
        };
        p.kv(
            0,
            "RollingUpdateStrategy",
            format!(
                "{} max unavailable, {} max surge",
                show("/spec/strategy/rollingUpdate/maxUnavailable"),
                show("/spec/strategy/rollingUpdate/maxSurge")
            ),
        );
    }
    p.heading(0, "Pod Template");
    p.map(
        2,
        "Labels",
        &string_map(v, "/spec/template/metadata/labels"),
    );
    p.heading(2, "Containers");
    describe_containers(p, 4, arr(v, "/spec/template/spec/containers"), &[]);
    describe_conditions(p, v);
}

fn describe_service(p: &mut Page, v: &Value, endpoints: Option<&Value>) {
    p.kv(0, "Selector", selector_text(v.pointer("/spec/selector")));
    p.kv(0, "Type", s_at(v, "/spec/type").unwrap_or("ClusterIP"));
    p.kv(0, "IP", or_none(s_at(v, "/spec/clusterIP")));
    let ports = arr(v, "/spec/ports");
    if ports.is_empty() {
        p.kv(0, "Port", "<none>");
    }
    for pt in ports {
        let proto = s_at(pt, "/protocol").unwrap_or("TCP");
        let name = s_at(pt, "/name").unwrap_or("<unset>");
        p.kv(
            0,
            "Port",
            format!("{name}  {}/{proto}", i_at(pt, "/port").unwrap_or(0)),
        );
        let target = match pt.get("targetPort") {
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(s)) => s.clone(),
            _ => i_at(pt, "/port").unwrap_or(0).to_string(),
        };
        p.kv(0, "TargetPort", format!("{target}/{proto}"));
        if let Some(np) = i_at(pt, "/nodePort").filter(|n| *n > 0) {
            p.kv(0, "NodePort", format!("{name}  {np}/{proto}"));
        }
    }
    p.kv(
        0,
        "Endpoints",
        endpoints.map_or_else(|| "<none>".to_string(), |e| endpoints_text(e, usize::MAX)),
    );
}

fn describe_node(p: &mut Page, v: &Value) {
    p.kv(0, "Roles", node_roles(v));
    p.kv(
        0,
        "Unschedulable",
        v.pointer("/spec/unschedulable")
            .and_then(Value::as_bool)
            .unwrap_or(false)
            .to_string(),
    );
    let taints: Vec<String> = arr(v, "/spec/taints")
        .iter()
        .map(|t| {
            let key = s_at(t, "/key").unwrap_or("?");
            let effect = s_at(t, "/effect").unwrap_or("");
            match s_at(t, "/value") {
                Some(val) => format!("{key}={val}:{effect}"),
                None => format!("{key}:{effect}"),
            }
        })
        .collect();
    p.kv(0, "Taints", or_none(Some(taints.join("\n"))));
    p.kv(
        0,
        "PodCIDR",
        or_none(first_str(v, &["/spec/podCIDR", "/status/podCIDR"])),
    );
    describe_conditions(p, v);
    let addrs: Vec<String> = arr(v, "/status/addresses")
        .iter()
        .map(|a| {
            format!(
                "{}: {}",
                s_at(a, "/type").unwrap_or("?"),
                s_at(a, "/address").unwrap_or("?")
            )
        })
        .collect();
    if !addrs.is_empty() {
        p.kv(0, "Addresses", addrs.join("\n"));
    }
    for (key, ptr) in [
        ("Capacity", "/status/capacity"),
        ("Allocatable", "/status/allocatable"),
    ] {
        if let Some(q) = quantities(v.pointer(ptr)) {
            p.kv(0, key, q);
        }
    }
    let rest: Vec<(String, Value)> = v
        .get("status")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(k, _)| {
                    ![
                        "conditions",
                        "addresses",
                        "capacity",
                        "allocatable",
                        "podCIDR",
                    ]
                    .contains(&k.as_str())
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    if !rest.is_empty() {
        p.heading(0, "System Info");
        p.raw(2, &yaml_block(&Value::Object(rest.into_iter().collect())));
    }
}

fn describe_event(p: &mut Page, v: &Value) {
    p.kv(0, "Type", s_at(v, "/type").unwrap_or("Normal"));
    p.kv(0, "Reason", s_at(v, "/reason").unwrap_or(""));
    p.kv(0, "Object", involved_object(v));
    p.kv(
        0,
        "Message",
        crate::error::one_line(s_at(v, "/message").unwrap_or("")),
    );
    p.kv(0, "Count", i_at(v, "/count").unwrap_or(1).to_string());
    p.kv(0, "Last Seen", long_time(event_time(v)));
}

#[cfg(test)]
mod tests {
    use super::*;
    #[allow(unused_imports)]
    use crate::output::testutil::*;

    #[test]
    fn describe_shows_meta_spec_status_and_events() {
        let dep = json!({"kind": "Deployment", "metadata": {"name": "web", "namespace": "default",
                "labels": {"app": "web", "tier": "fe"}, "creationTimestamp": "2026-11-28T19:30:00Z"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "app", "image": "busybox", "ports": [{"containerPort": 8080}]}]}}},
            "status": {"replicas": 3, "readyReplicas": 3, "updatedReplicas": 3, "availableReplicas": 3}});
        let ev = json!({"kind": "Event", "involvedObject": {"kind": "Deployment", "name": "web"},
            "type": "Normal", "reason": "ScalingReplicaSet", "message": "Scaled up to 3",
            "source": {"component": "deployment-controller"}, "lastTimestamp": ago(30)});
        let text = describe(&resolve("deploy").unwrap(), &dep, &[ev], None, now());
        // Like kubectl, consecutive "Key:  value" lines share one value column.
        let want = "\
Name:                   web
Namespace:              default
Labels:                 app=web
                        tier=fe
Annotations:            <none>
CreationTimestamp:      Sat, 28 Nov 2026 19:30:00 +0000
Selector:               app=web
Replicas:               3 desired | 3 updated | 3 total | 3 available | 0 unavailable
StrategyType:           RollingUpdate
RollingUpdateStrategy:  25% max unavailable, 25% max surge
Pod Template:
";
        assert!(text.starts_with(want), "{text}");
        assert!(
            text.contains("Pod Template:\n  Labels:  app=web\n  Containers:\n    app:\n"),
            "{text}"
        );
        assert!(text.contains("      Port(s):      8080/TCP\n"), "{text}");
        assert!(text.contains("Events:\n  Type    Reason             Age   From                   Message\n  ----    ------"), "{text}");
        assert!(
            text.contains(
                "  Normal  ScalingReplicaSet  30s   deployment-controller  Scaled up to 3\n"
            ),
            "{text}"
        );
        let text = describe(&resolve("deploy").unwrap(), &dep, &[], None, now());
        let last = text.lines().last().unwrap_or("");
        assert!(
            last.starts_with("Events:") && last.ends_with("  <none>"),
            "{text}"
        );
    }
}
