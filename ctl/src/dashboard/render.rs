//! The dashboard's pages: pure functions from objects (and the answers of the cluster
//! status and stats calls) to HTML text. Every value that comes from the cluster goes
//! through [`esc`] (or [`Cell::Text`], which does), so a name or label holding markup is
//! shown as text; the only raw HTML is what these functions write themselves. The table
//! cells reuse `shoalctl get`'s columns (`crate::output`), so a page says what the CLI says.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use shoal_proto::{ClusterStatusResponse, NodeStats};

use crate::kinds::KindInfo;
use crate::output::{self, Related, TableOptions};

/// The pages of the navigation bar, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    /// `/`: controllers and a summary.
    Overview,
    /// `/nodes`.
    Nodes,
    /// `/placement`: pods per node.
    Placement,
    /// `/pods` (and a pod's logs).
    Pods,
    /// `/deployments`.
    Deployments,
    /// `/services`.
    Services,
    /// `/events`.
    Events,
}

impl Tab {
    const ALL: [Tab; 7] = [
        Tab::Overview,
        Tab::Nodes,
        Tab::Placement,
        Tab::Pods,
        Tab::Deployments,
        Tab::Services,
        Tab::Events,
    ];

    fn path(self) -> &'static str {
        match self {
            Tab::Overview => "/",
            Tab::Nodes => "/nodes",
            Tab::Placement => "/placement",
            Tab::Pods => "/pods",
            Tab::Deployments => "/deployments",
            Tab::Services => "/services",
            Tab::Events => "/events",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Tab::Overview => "Overview",
            Tab::Nodes => "Nodes",
            Tab::Placement => "Placement",
            Tab::Pods => "Pods",
            Tab::Deployments => "Deployments",
            Tab::Services => "Services",
            Tab::Events => "Events",
        }
    }
}

/// The namespace a namespaced page shows, and the ones it can switch to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The namespace shown; None: every namespace.
    pub namespace: Option<String>,
    /// The namespaces of the cluster (for the picker).
    pub namespaces: Vec<String>,
}

impl Scope {
    fn options(&self) -> TableOptions {
        TableOptions {
            all_namespaces: self.namespace.is_none(),
            ..Default::default()
        }
    }

    fn query(&self) -> String {
        format!(
            "namespace={}",
            url_part(self.namespace.as_deref().unwrap_or(""))
        )
    }
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes one part of a URL path or query (everything but RFC 3986's unreserved).
pub fn url_part(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The path of a pod's logs page.
pub fn logs_path(namespace: &str, pod: &str) -> String {
    format!("/pods/{}/{}/logs", url_part(namespace), url_part(pod))
}

/// One table cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    /// Text (escaped when written).
    Text(String),
    /// A link: the target and its text (both escaped when written).
    Link(String, String),
    /// HTML these functions made from escaped parts (never from a value as is).
    Html(String),
}

impl Cell {
    fn html(&self) -> String {
        match self {
            Cell::Text(t) => esc(t),
            Cell::Link(href, t) => format!("<a href=\"{}\">{}</a>", esc(href), esc(t)),
            Cell::Html(h) => h.clone(),
        }
    }
}

fn text_cells(row: Vec<String>) -> Vec<Cell> {
    row.into_iter().map(Cell::Text).collect()
}

/// A table; `id` and `live` (a JSON endpoint the script refreshes it from) when given.
fn table(headers: &[String], rows: &[Vec<Cell>], attrs: &str) -> String {
    let mut out = format!("<table{attrs}><thead><tr>");
    for h in headers {
        out.push_str(&format!("<th>{}</th>", esc(h)));
    }
    out.push_str("</tr></thead><tbody>");
    for r in rows {
        out.push_str("<tr>");
        for c in r {
            out.push_str(&format!("<td>{}</td>", c.html()));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    if rows.is_empty() {
        out.push_str("<p class=\"empty\">No resources found.</p>");
    }
    out
}

/// The frame of every page: head (embedded CSS and script), navigation, namespace picker.
pub fn layout(tab: Tab, title: &str, scope: Option<&Scope>, body: &str) -> String {
    let mut nav = String::new();
    for t in Tab::ALL {
        let href = match scope {
            Some(s) if t != Tab::Overview && t != Tab::Nodes => {
                format!("{}?{}", t.path(), s.query())
            }
            _ => t.path().to_string(),
        };
        let class = if t == tab { " class=\"active\"" } else { "" };
        nav.push_str(&format!(
            "<a href=\"{}\"{class}>{}</a>",
            esc(&href),
            t.title()
        ));
    }
    let picker = scope.map(|s| picker(tab, s)).unwrap_or_default();
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{} · Shoal</title><link rel=\"stylesheet\" href=\"/assets/dashboard.css\">\
<script src=\"/assets/dashboard.js\" defer></script></head>\
<body><header><span class=\"brand\">Shoal</span><nav>{nav}</nav>{picker}</header>\
<main><h1>{}</h1>\n{body}\n</main></body></html>\n",
        esc(title),
        esc(title)
    )
}

fn picker(tab: Tab, s: &Scope) -> String {
    let mut out = format!(
        "<form class=\"namespace\" method=\"get\" action=\"{}\"><label>Namespace \
<select name=\"namespace\" id=\"namespace\"><option value=\"\"{}>All namespaces</option>",
        tab.path(),
        if s.namespace.is_none() {
            " selected"
        } else {
            ""
        }
    );
    for ns in &s.namespaces {
        let sel = if s.namespace.as_deref() == Some(ns) {
            " selected"
        } else {
            ""
        };
        out.push_str(&format!("<option value=\"{0}\"{sel}>{0}</option>", esc(ns)));
    }
    out.push_str("</select></label> <button type=\"submit\">Show</button></form>");
    out
}

/// A page that could not get its data: the error, as text.
pub fn error_page(tab: Tab, scope: Option<&Scope>, message: &str) -> String {
    layout(
        tab,
        tab.title(),
        scope,
        &format!("<p class=\"error\">{}</p>", esc(message)),
    )
}

fn phase_of(pod: &Value) -> &str {
    pod.pointer("/status/phase")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .unwrap_or("Pending")
}

fn phase_class(phase: &str) -> String {
    let p: String = phase
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    format!("phase-{p}")
}

fn node_of(pod: &Value) -> &str {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn kind(name: &str) -> KindInfo {
    crate::kinds::resolve(name).unwrap_or(KindInfo {
        kind: "Pod",
        singular: "pod",
        plural: "pods",
        namespaced: true,
    })
}

/// `/`: the controllers' health and members, and how many nodes and pods there are.
pub fn overview(
    status: Result<&ClusterStatusResponse, &str>,
    nodes: &[Value],
    pods: &[Value],
) -> String {
    let mut body = String::new();
    match status {
        Ok(s) => {
            let healthy = s.members.iter().filter(|m| m.healthy).count();
            let ok = s.leader_id != 0 && healthy == s.members.len();
            let leader = if s.leader_id == 0 {
                "none".to_string()
            } else {
                s.leader_id.to_string()
            };
            body.push_str(&format!(
                "<section><h2>Cluster health</h2><p class=\"health {}\" id=\"health\">{}: \
{healthy} of {} controllers healthy, leader {}, term {}, commit index {}, answered by {}</p>",
                if ok { "ok" } else { "bad" },
                if ok { "Healthy" } else { "Degraded" },
                s.members.len(),
                esc(&leader),
                s.term,
                s.commit_index,
                s.answered_by
            ));
            let mut members = s.members.clone();
            members.sort_by_key(|m| m.id);
            let headers: Vec<String> = [
                "ID", "ADDRESS", "ROLE", "VOTER", "HEALTH", "TERM", "LAST LOG", "APPLIED",
                "MATCHED", "ERROR",
            ]
            .map(String::from)
            .to_vec();
            let rows: Vec<Vec<Cell>> = members
                .iter()
                .map(|m| {
                    let role = if m.leader {
                        "leader"
                    } else if m.voter {
                        "follower"
                    } else {
                        "learner"
                    };
                    text_cells(vec![
                        m.id.to_string(),
                        m.address.clone(),
                        role.into(),
                        if m.voter { "yes" } else { "no" }.into(),
                        if m.healthy { "healthy" } else { "unhealthy" }.into(),
                        m.term.to_string(),
                        m.last_log_index.to_string(),
                        m.last_applied.to_string(),
                        m.matched_index.to_string(),
                        crate::error::one_line(&m.error),
                    ])
                })
                .collect();
            body.push_str("<h3>Controller members</h3>");
            body.push_str(&table(&headers, &rows, " id=\"members\""));
            body.push_str("</section>");
        }
        Err(e) => body.push_str(&format!(
            "<section><h2>Cluster health</h2><p class=\"error\">cluster status: {}</p></section>",
            esc(e)
        )),
    }
    let ready = nodes
        .iter()
        .filter(|n| {
            n.pointer("/status/conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .count();
    let mut phases: BTreeMap<&str, usize> = BTreeMap::new();
    for p in pods {
        *phases.entry(phase_of(p)).or_default() += 1;
    }
    body.push_str(&format!(
        "<section><h2>Workloads</h2><ul class=\"summary\"><li><a href=\"/nodes\">Nodes</a>: \
{ready} of {} ready</li><li><a href=\"/pods?namespace=\">Pods</a>: {}",
        nodes.len(),
        pods.len()
    ));
    if !phases.is_empty() {
        let parts: Vec<String> = phases
            .iter()
            .map(|(p, n)| format!("<span class=\"{}\">{n} {}</span>", phase_class(p), esc(p)))
            .collect();
        body.push_str(&format!(" ({})", parts.join(", ")));
    }
    body.push_str("</li></ul></section>");
    layout(Tab::Overview, "Overview", None, &body)
}

/// `/nodes`: status, capacity, pods bound, and usage from `Proxy.Stats` (or why it is missing).
pub fn nodes(
    nodes: &[Value],
    pods: &[Value],
    stats: Result<&[NodeStats], &str>,
    now: DateTime<Utc>,
) -> String {
    let node_kind = kind("Node");
    let headers: Vec<String> = [
        "NAME",
        "STATUS",
        "CPU",
        "MEMORY",
        "PODS",
        "CPU USED",
        "MEMORY USED",
        "AGE",
    ]
    .map(String::from)
    .to_vec();
    let mut sorted: Vec<&Value> = nodes.iter().collect();
    sorted.sort_by_key(|n| output::name_of(n).to_string());
    let mut notes = Vec::new();
    let rows: Vec<Vec<Cell>> = sorted
        .into_iter()
        .map(|n| {
            let name = output::name_of(n);
            let row = output::row(&node_kind, n, TableOptions::default(), now);
            let cap = |k: &str| {
                n.pointer(&format!("/status/capacity/{k}"))
                    .map(|v| match v {
                        Value::String(s) => s.clone(),
                        v => v.to_string(),
                    })
                    .unwrap_or_else(|| "?".into())
            };
            let bound = pods.iter().filter(|p| node_of(p) == name).count();
            let (cpu, mem) = match stats {
                Ok(all) => match all.iter().find(|s| s.node == name) {
                    Some(s) if s.error.is_empty() => (
                        format!(
                            "{} ({})",
                            output::cpu_text(s.cpu_millis),
                            output::percent_text(s.cpu_millis, s.cpu_capacity_millis)
                        ),
                        format!(
                            "{} ({})",
                            output::memory_text(s.memory_bytes),
                            output::percent_text(s.memory_bytes, s.memory_capacity_bytes)
                        ),
                    ),
                    Some(s) => {
                        notes.push(format!("{name}: {}", crate::error::one_line(&s.error)));
                        ("unknown".into(), "unknown".into())
                    }
                    None => ("unknown".into(), "unknown".into()),
                },
                Err(_) => ("unknown".into(), "unknown".into()),
            };
            let status = row.get(1).cloned().unwrap_or_default();
            let age = row.get(3).cloned().unwrap_or_default();
            vec![
                Cell::Text(name.to_string()),
                Cell::Html(format!(
                    "<span class=\"{}\">{}</span>",
                    if status.starts_with("Ready") {
                        "ok"
                    } else {
                        "bad"
                    },
                    esc(&status)
                )),
                Cell::Text(cap("cpu")),
                Cell::Text(cap("memory")),
                Cell::Text(format!("{bound} / {}", cap("pods"))),
                Cell::Text(cpu),
                Cell::Text(mem),
                Cell::Text(age),
            ]
        })
        .collect();
    let mut body = table(&headers, &rows, " id=\"nodes\"");
    if let Err(e) = stats {
        notes.push(format!("usage: {e}"));
    }
    if !notes.is_empty() {
        body.push_str("<div class=\"notes\"><p>No usage figures from:</p><ul>");
        for n in notes {
            body.push_str(&format!("<li>{}</li>", esc(&n)));
        }
        body.push_str("</ul></div>");
    }
    layout(Tab::Nodes, "Nodes", None, &body)
}

/// `/placement`: a column per node (and one for pods not yet bound), a box per pod
/// coloured by its phase.
pub fn placement(scope: &Scope, nodes: &[Value], pods: &[Value]) -> String {
    let mut columns: BTreeMap<String, Vec<&Value>> = nodes
        .iter()
        .map(|n| (output::name_of(n).to_string(), Vec::new()))
        .collect();
    let mut unbound = Vec::new();
    for p in pods {
        match node_of(p) {
            "" => unbound.push(p),
            n => columns.entry(n.to_string()).or_default().push(p),
        }
    }
    let column = |title: &str, class: &str, pods: &[&Value]| {
        let mut out = format!(
            "<div class=\"node {class}\"><h3>{}</h3><p class=\"count\">{} pod{}</p>",
            esc(title),
            pods.len(),
            if pods.len() == 1 { "" } else { "s" }
        );
        let mut sorted = pods.to_vec();
        sorted.sort_by_key(|p| (output::namespace_of(p), output::name_of(p)));
        for p in sorted {
            let (ns, name, phase) = (output::namespace_of(p), output::name_of(p), phase_of(p));
            out.push_str(&format!(
                "<a class=\"pod {}\" href=\"{}\" title=\"{}/{} ({})\">{}<small>{}</small></a>",
                phase_class(phase),
                esc(&logs_path(ns, name)),
                esc(ns),
                esc(name),
                esc(phase),
                esc(name),
                esc(phase)
            ));
        }
        out.push_str("</div>");
        out
    };
    let mut body = String::from("<div class=\"grid\" id=\"placement\">");
    for (node, pods) in &columns {
        body.push_str(&column(node, "", pods));
    }
    if !unbound.is_empty() {
        body.push_str(&column("not scheduled", "unbound", &unbound));
    }
    body.push_str("</div>");
    if columns.is_empty() && unbound.is_empty() {
        body.push_str("<p class=\"empty\">No nodes and no pods.</p>");
    }
    body.push_str(
        "<p class=\"legend\">Phases: <span class=\"pod phase-running\">Running</span>\
<span class=\"pod phase-pending\">Pending</span><span class=\"pod phase-succeeded\">Succeeded</span>\
<span class=\"pod phase-failed\">Failed</span><span class=\"pod phase-unknown\">Unknown</span></p>",
    );
    layout(Tab::Placement, "Placement", Some(scope), &body)
}

/// The pods table: headers, cells, and each row's logs link and phase (for the HTML
/// page and its JSON endpoint alike).
pub fn pod_rows(scope: &Scope, pods: &[Value], now: DateTime<Utc>) -> (Vec<String>, Vec<Value>) {
    let pod = kind("Pod");
    let opts = TableOptions {
        wide: true,
        ..scope.options()
    };
    let mut sorted: Vec<&Value> = pods.iter().collect();
    sorted.sort_by_key(|p| (output::namespace_of(p), output::name_of(p)));
    let rows = sorted
        .into_iter()
        .map(|p| {
            json!({
                "cells": output::row(&pod, p, opts, now),
                "name": output::name_of(p),
                "logs": logs_path(output::namespace_of(p), output::name_of(p)),
                "phase": phase_of(p),
            })
        })
        .collect();
    (output::headers(&pod, opts), rows)
}

/// `/api/pods`: the pods table as JSON (`headers`, `rows` of `cells`, `logs`, `phase`),
/// what the pods page's script refreshes from.
pub fn pods_json(scope: &Scope, pods: &[Value], now: DateTime<Utc>) -> Value {
    let (headers, rows) = pod_rows(scope, pods, now);
    json!({"namespace": scope.namespace, "headers": headers, "rows": rows})
}

/// `/pods`: the pods with their status, refreshed every 2 s from `/api/pods`.
pub fn pods(scope: &Scope, pods: &[Value], now: DateTime<Utc>) -> String {
    let (headers, rows) = pod_rows(scope, pods, now);
    let name_col = usize::from(scope.namespace.is_none());
    let rows: Vec<Vec<Cell>> = rows
        .iter()
        .map(|r| {
            let cells = r["cells"].as_array().cloned().unwrap_or_default();
            cells
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let t = c.as_str().unwrap_or("").to_string();
                    if i == name_col {
                        Cell::Link(r["logs"].as_str().unwrap_or("").to_string(), t)
                    } else {
                        Cell::Text(t)
                    }
                })
                .collect()
        })
        .collect();
    let api = format!("/api/pods?{}", scope.query());
    let mut body = format!(
        "<p class=\"live\">Live: refreshed every 2 s <span id=\"refreshed\"></span></p>{}",
        table(
            &headers,
            &rows,
            &format!(
                " id=\"pods\" data-live=\"{}\" data-name-column=\"{name_col}\"",
                esc(&api)
            )
        )
    );
    body.push_str("<p class=\"hint\">A pod's name opens its logs.</p>");
    layout(Tab::Pods, "Pods", Some(scope), &body)
}

/// `/deployments`: ready, updated and available replicas of the desired, with a bar.
pub fn deployments(scope: &Scope, items: &[Value], now: DateTime<Utc>) -> String {
    let dep = kind("Deployment");
    let opts = TableOptions {
        wide: true,
        ..scope.options()
    };
    let mut headers = output::headers(&dep, opts);
    let at = headers.iter().position(|h| h == "AGE").unwrap_or(0);
    headers.insert(at, "PROGRESS".into());
    let mut sorted: Vec<&Value> = items.iter().collect();
    sorted.sort_by_key(|d| (output::namespace_of(d), output::name_of(d)));
    let rows: Vec<Vec<Cell>> = sorted
        .into_iter()
        .map(|d| {
            let num =
                |p: &str, default: i64| d.pointer(p).and_then(Value::as_i64).unwrap_or(default);
            let desired = num("/spec/replicas", 1);
            let ready = num("/status/readyReplicas", 0);
            let updated = num("/status/updatedReplicas", 0);
            let done = desired == ready && desired == updated;
            let progress = format!(
                "<progress value=\"{ready}\" max=\"{}\"></progress> \
<span class=\"{}\">{ready}/{desired} ready, {updated}/{desired} updated</span>",
                desired.max(1),
                if done { "ok" } else { "pending" }
            );
            let mut cells = text_cells(output::row(&dep, d, opts, now));
            cells.insert(at, Cell::Html(progress));
            cells
        })
        .collect();
    let body = table(&headers, &rows, " id=\"deployments\"");
    layout(Tab::Deployments, "Deployments", Some(scope), &body)
}

/// `/services`: type, addresses, ports, selector and the ready endpoints.
pub fn services(
    scope: &Scope,
    services: &[Value],
    endpoints: Vec<Value>,
    now: DateTime<Utc>,
) -> String {
    let svc = kind("Service");
    let opts = TableOptions {
        wide: true,
        ..scope.options()
    };
    let t = output::table_with(
        &svc,
        services,
        opts,
        now,
        &Related::with_endpoints(endpoints),
    );
    let rows: Vec<Vec<Cell>> = t.rows.into_iter().map(text_cells).collect();
    let body = table(&t.headers, &rows, " id=\"services\"");
    layout(Tab::Services, "Services", Some(scope), &body)
}

/// `/events`: oldest first, like `shoalctl events`.
pub fn events(scope: &Scope, events: &[Value], now: DateTime<Utc>) -> String {
    let t = output::table(&kind("Event"), events, scope.options(), now);
    let rows: Vec<Vec<Cell>> = t
        .rows
        .into_iter()
        .map(|r| {
            r.into_iter()
                .map(|c| {
                    if c == "Warning" {
                        Cell::Html("<span class=\"bad\">Warning</span>".into())
                    } else {
                        Cell::Text(c)
                    }
                })
                .collect()
        })
        .collect();
    let body = table(&t.headers, &rows, " id=\"events\"");
    layout(Tab::Events, "Events", Some(scope), &body)
}

/// `/pods/NS/NAME/logs`: the last `tail` lines of the pod's log, or why they cannot be read.
pub fn logs(namespace: &str, pod: &str, tail: i64, log: Result<&str, &str>) -> String {
    let title = format!("Logs of {namespace}/{pod}");
    let mut body = format!(
        "<p><a href=\"/pods?namespace={}\">← pods of {}</a> · last {tail} lines</p>",
        esc(&url_part(namespace)),
        esc(namespace)
    );
    match log {
        Ok("") => body.push_str("<p class=\"empty\">The log is empty.</p>"),
        Ok(text) => body.push_str(&format!(
            "<pre class=\"logs\" id=\"logs\">{}</pre>",
            esc(text)
        )),
        Err(e) => body.push_str(&format!(
            "<p class=\"error\" id=\"logs-error\">Cannot read the logs: {}</p>",
            esc(e)
        )),
    }
    layout(Tab::Pods, &title, None, &body)
}

/// The page of a refused request (no token, foreign Host or Origin): plain text, no data.
pub fn forbidden(reason: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Forbidden</title>\
</head><body><h1>403 Forbidden</h1><p>{}</p></body></html>\n",
        esc(reason)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::MemberStatus;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-05T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    const EVIL: &str = "<script>alert(1)</script>";

    fn pod(ns: &str, name: &str, node: &str, phase: &str) -> Value {
        json!({"kind": "Pod", "metadata": {"name": name, "namespace": ns,
            "labels": {"app": EVIL}, "creationTimestamp": "2026-12-05T11:00:00Z"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
            "status": {"phase": phase, "podIP": "10.1.0.5"}})
    }

    fn node(name: &str) -> Value {
        json!({"kind": "Node", "metadata": {"name": name, "creationTimestamp": "2026-12-05T10:00:00Z"},
            "status": {"capacity": {"cpu": "8", "memory": "16Gi", "pods": 110},
                "conditions": [{"type": "Ready", "status": "True"}]}})
    }

    fn scope(ns: Option<&str>) -> Scope {
        Scope {
            namespace: ns.map(String::from),
            namespaces: vec!["default".into(), EVIL.into()],
        }
    }

    /// No markup from a value: the script tag appears only escaped.
    fn assert_escaped(html: &str) {
        assert!(!html.contains("<script>alert"), "{html}");
    }

    #[test]
    fn escaping_and_urls() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(url_part("a b/<c>"), "a%20b%2F%3Cc%3E");
        assert_eq!(logs_path("default", "web-1"), "/pods/default/web-1/logs");
        assert_eq!(
            Cell::Link("/x?a=\"b\"".into(), EVIL.into()).html(),
            "<a href=\"/x?a=&quot;b&quot;\">&lt;script&gt;alert(1)&lt;/script&gt;</a>"
        );
    }

    #[test]
    fn every_page_shows_markup_in_values_as_text() {
        let pods = vec![pod("default", EVIL, EVIL, "Running")];
        let nodes = vec![node(EVIL)];
        let s = scope(None);
        let status = ClusterStatusResponse {
            leader_id: 1,
            term: 2,
            commit_index: 3,
            members: vec![MemberStatus {
                id: 1,
                address: EVIL.into(),
                leader: true,
                healthy: true,
                voter: true,
                error: EVIL.into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let dep = json!({"kind": "Deployment", "metadata": {"name": EVIL, "namespace": "default"},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": EVIL, "image": EVIL}]}}}});
        let svc = json!({"kind": "Service", "metadata": {"name": EVIL, "namespace": "default"},
            "spec": {"type": "ClusterIP", "selector": {"app": EVIL}, "ports": [{"port": 80}]}});
        let ev = json!({"kind": "Event", "metadata": {"name": "e", "namespace": "default"},
            "type": "Warning", "reason": EVIL, "message": EVIL,
            "involvedObject": {"kind": "Pod", "name": EVIL}});
        let stats = [NodeStats {
            node: EVIL.into(),
            error: EVIL.into(),
            ..Default::default()
        }];
        let pages = [
            overview(Ok(&status), &nodes, &pods),
            overview(Err(EVIL), &nodes, &pods),
            self::nodes(&nodes, &pods, Ok(&stats), now()),
            self::nodes(&nodes, &pods, Err(EVIL), now()),
            placement(&s, &nodes, &pods),
            self::pods(&s, &pods, now()),
            deployments(&s, &[dep], now()),
            services(&s, &[svc], vec![], now()),
            events(&s, &[ev], now()),
            logs(EVIL, EVIL, 10, Ok(EVIL)),
            logs(EVIL, EVIL, 10, Err(EVIL)),
            error_page(Tab::Pods, Some(&s), EVIL),
            forbidden(EVIL),
        ];
        for p in &pages {
            assert_escaped(p);
            assert!(p.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{p}");
        }
        // The JSON endpoint carries values as JSON strings (the script sets textContent).
        let j = pods_json(&s, &pods, now());
        assert_eq!(j["rows"][0]["name"], EVIL);
    }

    #[test]
    fn overview_shows_health_and_members() {
        let m = |id: u64, leader: bool, healthy: bool| MemberStatus {
            id,
            address: format!("127.0.0.1:700{id}"),
            leader,
            healthy,
            voter: true,
            term: 4,
            error: if healthy {
                String::new()
            } else {
                "connection refused".into()
            },
            ..Default::default()
        };
        let mut s = ClusterStatusResponse {
            leader_id: 1,
            term: 4,
            commit_index: 42,
            members: vec![m(2, false, true), m(1, true, true)],
            ..Default::default()
        };
        let pods = [
            pod("default", "a", "n1", "Running"),
            pod("default", "b", "", "Pending"),
        ];
        let html = overview(Ok(&s), &[node("n1")], &pods);
        assert!(
            html.contains("Healthy: 2 of 2 controllers healthy, leader 1, term 4"),
            "{html}"
        );
        let first = html.find("127.0.0.1:7001").unwrap();
        assert!(first < html.find("127.0.0.1:7002").unwrap(), "sorted by id");
        assert!(html.contains("<td>leader</td>") && html.contains("<td>follower</td>"));
        assert!(html.contains("1 of 1 ready"), "{html}");
        assert!(
            html.contains("1 Pending") && html.contains("1 Running"),
            "{html}"
        );
        s.members[0] = m(2, false, false);
        let html = overview(Ok(&s), &[], &[]);
        assert!(html.contains("Degraded: 1 of 2"), "{html}");
        assert!(html.contains("connection refused"));
        let html = overview(Err("cannot reach any controller"), &[], &[]);
        assert!(html.contains("cluster status: cannot reach any controller"));
    }

    #[test]
    fn nodes_show_capacity_pods_and_usage() {
        let pods = [
            pod("default", "a", "n1", "Running"),
            pod("x", "b", "n1", "Running"),
        ];
        let stats = [
            NodeStats {
                node: "n1".into(),
                cpu_millis: 250,
                cpu_capacity_millis: 1000,
                memory_bytes: 64 << 20,
                memory_capacity_bytes: 256 << 20,
                ..Default::default()
            },
            NodeStats {
                node: "n2".into(),
                error: "node \"n2\" has no agent endpoint".into(),
                ..Default::default()
            },
        ];
        let html = nodes(&[node("n2"), node("n1")], &pods, Ok(&stats), now());
        assert!(html.find("<td>n1</td>").unwrap() < html.find("<td>n2</td>").unwrap());
        assert!(html.contains("<td>2 / 110</td>") && html.contains("<td>0 / 110</td>"));
        assert!(html.contains("<td>250m (25%)</td>") && html.contains("<td>64Mi (25%)</td>"));
        assert!(html.contains("<td>16Gi</td>") && html.contains(">Ready<"));
        assert!(
            html.contains("n2: node &quot;n2&quot; has no agent endpoint"),
            "{html}"
        );
    }

    #[test]
    fn placement_has_a_column_per_node_and_a_box_per_pod() {
        let pods = [
            pod("default", "a", "n1", "Running"),
            pod("default", "b", "n2", "Failed"),
            pod("default", "c", "", "Pending"),
        ];
        let html = placement(
            &scope(Some("default")),
            &[node("n1"), node("n2"), node("n3")],
            &pods,
        );
        for n in ["n1", "n2", "n3", "not scheduled"] {
            assert!(html.contains(&format!("<h3>{n}</h3>")), "{n}: {html}");
        }
        assert!(
            html.contains("class=\"pod phase-running\" href=\"/pods/default/a/logs\""),
            "{html}"
        );
        assert!(html.contains("class=\"pod phase-failed\""));
        let n1 = html.find("<h3>n1</h3>").unwrap();
        let n2 = html.find("<h3>n2</h3>").unwrap();
        let a = html.find("title=\"default/a (Running)\"").unwrap();
        assert!(n1 < a && a < n2, "pod a is in n1's column");
        assert!(html.contains("0 pods") && html.contains("1 pod<"));
    }

    #[test]
    fn pods_page_links_logs_and_refreshes_from_json() {
        let pods = [pod("team", "web-1", "n1", "Running")];
        let html = self::pods(&scope(Some("team")), &pods, now());
        assert!(
            html.contains("data-live=\"/api/pods?namespace=team\""),
            "{html}"
        );
        assert!(
            html.contains("<a href=\"/pods/team/web-1/logs\">web-1</a>"),
            "{html}"
        );
        assert!(html.contains("<td>Running</td>") && html.contains("<td>n1</td>"));
        assert!(
            html.contains("<option value=\"team\" selected>") || html.contains("All namespaces")
        );
        let j = pods_json(&scope(None), &pods, now());
        assert_eq!(j["headers"][0], "NAMESPACE");
        assert_eq!(j["rows"][0]["cells"][0], "team");
        assert_eq!(j["rows"][0]["cells"][1], "web-1");
        assert_eq!(j["rows"][0]["logs"], "/pods/team/web-1/logs");
        assert_eq!(j["rows"][0]["phase"], "Running");
    }

    #[test]
    fn deployments_show_rollout_progress() {
        let d = json!({"kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "app", "image": "busybox:1"}]}}},
            "status": {"readyReplicas": 1, "updatedReplicas": 2, "availableReplicas": 1}});
        let html = deployments(&scope(Some("default")), &[d], now());
        assert!(html.contains("<progress value=\"1\" max=\"3\">"), "{html}");
        assert!(html.contains("1/3 ready, 2/3 updated"), "{html}");
        assert!(html.contains("<td>busybox:1</td>") && html.contains("<th>PROGRESS</th>"));
    }

    #[test]
    fn services_events_and_logs() {
        let svc = json!({"kind": "Service", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "selector": {"app": "web"},
                "ports": [{"port": 80, "protocol": "TCP"}]}});
        let ep = json!({"kind": "Endpoints", "metadata": {"name": "web", "namespace": "default"},
            "subsets": [{"addresses": [{"ip": "10.1.0.5"}], "ports": [{"port": 8080}]}]});
        let html = services(&scope(Some("default")), &[svc], vec![ep], now());
        assert!(
            html.contains("<td>10.96.0.10</td>") && html.contains("<td>10.1.0.5:8080</td>"),
            "{html}"
        );
        let ev = json!({"kind": "Event", "metadata": {"name": "e", "namespace": "default"},
            "type": "Normal", "reason": "Scheduled", "message": "bound to n1",
            "involvedObject": {"kind": "Pod", "name": "web-1"}, "lastTimestamp": "2026-12-05T11:59:00Z"});
        let html = events(&scope(Some("default")), &[ev], now());
        assert!(
            html.contains("<td>Scheduled</td>") && html.contains("<td>pod/web-1</td>"),
            "{html}"
        );
        let html = logs("default", "web-1", 50, Ok("one\ntwo\n"));
        assert!(html.contains("<pre class=\"logs\" id=\"logs\">one\ntwo\n</pre>"));
        assert!(html.contains("last 50 lines"));
        let html = logs(
            "default",
            "web-1",
            50,
            Err("node \"n1\" has no agent endpoint"),
        );
        assert!(html.contains("Cannot read the logs: node &quot;n1&quot; has no agent endpoint"));
    }
}
