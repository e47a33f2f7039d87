//! Everything `shoalctl` prints: tables (kubectl's columns), ages, `-o json|yaml|name`,
//! `describe` pages and the cluster status. Works on the objects' JSON, so that fields
//! the command line does not know about never break it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::error::CtlError;
use crate::kinds::KindInfo;

/// The `-o` formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// The default table.
    #[default]
    Table,
    /// The table with extra columns.
    Wide,
    /// Pretty JSON (a `List` for several objects).
    Json,
    /// YAML (a `List` for several objects).
    Yaml,
    /// `kind/name` per object.
    Name,
}

impl FromStr for Format {
    type Err = CtlError;
    fn from_str(s: &str) -> Result<Self, CtlError> {
        match s {
            "wide" => Ok(Format::Wide),
            "json" => Ok(Format::Json),
            "yaml" | "yml" => Ok(Format::Yaml),
            "name" => Ok(Format::Name),
            "" | "table" => Ok(Format::Table),
            other => Err(CtlError::Usage(format!(
                "unknown output format {other:?} (allowed: wide, yaml, json, name)"
            ))),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Ages and timestamps

/// Formats a duration like kubectl does (`5s`, `119s`, `3m20s`, `3h`, `4d`, `2y30d`).
pub fn human_age(d: chrono::Duration) -> String {
    let secs = d.num_seconds();
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 60 * 2 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// Parses an RFC 3339 timestamp field.
pub fn parse_time(v: Option<&Value>) -> Option<DateTime<Utc>> {
    let s = v?.as_str()?;
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The age of a timestamp field at `now`, `<unknown>` when missing or unparsable.
pub fn age_of(v: Option<&Value>, now: DateTime<Utc>) -> String {
    match parse_time(v) {
        Some(t) => human_age(now - t),
        None => "<unknown>".into(),
    }
}

/// A timestamp as `describe` shows it: `Sat, 28 Nov 2026 19:30:00 +0000`.
fn long_time(v: Option<&Value>) -> String {
    match parse_time(v) {
        Some(t) => t.format("%a, %d %b %Y %H:%M:%S %z").to_string(),
        None => "<unknown>".into(),
    }
}

// ---------------------------------------------------------------------------------------
// JSON helpers

fn s_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn first_str<'a>(v: &'a Value, ptrs: &[&str]) -> Option<&'a str> {
    ptrs.iter().find_map(|p| s_at(v, p))
}

fn i_at(v: &Value, ptr: &str) -> Option<i64> {
    match v.pointer(ptr)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn arr<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn or_none(s: Option<impl Into<String>>) -> String {
    s.map(Into::into)
        .filter(|s: &String| !s.is_empty())
        .unwrap_or_else(|| "<none>".into())
}

/// `metadata.resourceVersion` of an object (empty when missing).
pub fn resource_version_of(v: &Value) -> &str {
    s_at(v, "/metadata/resourceVersion").unwrap_or("")
}

/// An object's `metadata.name`.
pub fn name_of(v: &Value) -> &str {
    s_at(v, "/metadata/name").unwrap_or("")
}

/// An object's `metadata.namespace` (empty for cluster-scoped objects).
pub fn namespace_of(v: &Value) -> &str {
    s_at(v, "/metadata/namespace").unwrap_or("")
}

/// A string map (`metadata.labels`, `spec.selector`, …) at a JSON pointer.
pub fn string_map(v: &Value, ptr: &str) -> BTreeMap<String, String> {
    v.pointer(ptr)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_string),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `k=v,k2=v2` (sorted by key).
pub fn join_labels(m: &BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A selector (`{matchLabels, matchExpressions}` or a plain map) in command-line form.
pub fn selector_text(sel: Option<&Value>) -> String {
    let Some(sel) = sel.and_then(Value::as_object) else {
        return "<none>".into();
    };
    let mut parts = Vec::new();
    if sel.contains_key("matchLabels") || sel.contains_key("matchExpressions") {
        let sel = Value::Object(sel.clone());
        parts.push(join_labels(&string_map(&sel, "/matchLabels")));
        for e in arr(&sel, "/matchExpressions") {
            let key = s_at(e, "/key").unwrap_or("?");
            let values = arr(e, "/values")
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",");
            parts.push(match s_at(e, "/operator").unwrap_or("") {
                "In" => format!("{key} in ({values})"),
                "NotIn" => format!("{key} notin ({values})"),
                "Exists" => key.to_string(),
                "DoesNotExist" => format!("!{key}"),
                op => format!("{key} {op} ({values})"),
            });
        }
    } else {
        parts.push(join_labels(&string_map(&Value::Object(sel.clone()), "")));
    }
    or_none(Some(
        parts
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join(","),
    ))
}

// ---------------------------------------------------------------------------------------
// Tables

/// A table of strings rendered like kubectl's (columns separated by three spaces).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    /// Column headers.
    pub headers: Vec<String>,
    /// Rows, each as long as `headers`.
    pub rows: Vec<Vec<String>>,
}

/// Spaces between two columns.
const GAP: usize = 3;

impl Table {
    /// Column widths that fit the headers (unless omitted) and every row.
    pub fn widths(&self, headers: bool) -> Vec<usize> {
        let mut w: Vec<usize> = if headers {
            self.headers.iter().map(|h| h.chars().count()).collect()
        } else {
            vec![0; self.headers.len()]
        };
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                if i < w.len() {
                    w[i] = w[i].max(c.chars().count());
                }
            }
        }
        w
    }

    /// Renders headers (unless `no_headers`) and rows, one line each.
    pub fn render(&self, no_headers: bool) -> String {
        let w = self.widths(!no_headers);
        let mut out = String::new();
        if !no_headers {
            out.push_str(&render_line(&self.headers, &w));
        }
        for r in &self.rows {
            out.push_str(&render_line(r, &w));
        }
        out
    }
}

/// One line of cells padded to `widths` (the last cell is not padded); ends in `\n`.
pub fn render_line(cells: &[String], widths: &[usize]) -> String {
    let mut line = String::new();
    for (i, c) in cells.iter().enumerate() {
        line.push_str(c);
        if i + 1 < cells.len() {
            let w = widths.get(i).copied().unwrap_or(0);
            let pad = w.saturating_sub(c.chars().count()) + GAP;
            line.extend(std::iter::repeat_n(' ', pad));
        }
    }
    let mut line = line.trim_end().to_string();
    line.push('\n');
    line
}

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
        k if crate::output_config::headers(k).is_some() => {
            (crate::output_config::headers(k).unwrap_or_default(), &[])
        }
        _ => (&["NAME", "AGE"], &[]),
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
            crate::output_config::row(k, v, name, age).unwrap_or_default(),
            vec![],
        ),
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
    let mut restarts = 0;
    let mut running = false;
    for c in statuses.iter().rev() {
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

fn node_roles(v: &Value) -> String {
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

fn event_time(v: &Value) -> Option<&Value> {
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

fn involved_object(v: &Value) -> String {
    let kind = s_at(v, "/involvedObject/kind").unwrap_or("").to_lowercase();
    let name = s_at(v, "/involvedObject/name").unwrap_or("");
    if kind.is_empty() {
        name.to_string()
    } else {
        format!("{kind}/{name}")
    }
}

// ---------------------------------------------------------------------------------------
// -o json | yaml | name

/// A `List` of objects, as `-o json|yaml` prints several (fields in kubectl's order).
#[derive(Debug, serde::Serialize)]
pub struct List {
    /// Always `List`.
    pub kind: &'static str,
    /// Always `shoal/v1`.
    #[serde(rename = "apiVersion")]
    pub api_version: &'static str,
    /// The objects.
    pub items: Vec<Value>,
}

/// Wraps objects in a `List`.
pub fn list_object(items: Vec<Value>) -> List {
    List {
        kind: "List",
        api_version: shoal_api::API_VERSION,
        items,
    }
}

/// Pretty JSON with a trailing newline.
pub fn to_json(v: &impl serde::Serialize) -> String {
    let mut s =
        serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    s.push('\n');
    s
}

/// YAML (always ends in a newline).
pub fn to_yaml(v: &impl serde::Serialize) -> Result<String, CtlError> {
    let mut s = serde_yaml_ng::to_string(v)
        .map_err(|e| CtlError::BadResponse(format!("cannot render YAML: {e}")))?;
    if !s.ends_with('\n') {
        s.push('\n');
    }
    Ok(s)
}

/// `kind/name` of an object (`-o name`).
pub fn object_name(v: &Value) -> String {
    let kind = s_at(v, "/kind").unwrap_or("object").to_lowercase();
    format!("{kind}/{}", name_of(v))
}

/// Renders a whole `get` result (not the table formats) as text.
pub fn render_objects(items: Vec<Value>, single: bool, format: Format) -> Result<String, CtlError> {
    let single_item = single && items.len() == 1;
    match format {
        Format::Name => Ok(items.iter().map(|v| object_name(v) + "\n").collect()),
        Format::Json if single_item => Ok(to_json(&items[0])),
        Format::Yaml if single_item => to_yaml(&items[0]),
        Format::Json => Ok(to_json(&list_object(items))),
        Format::Yaml => to_yaml(&list_object(items)),
        Format::Table | Format::Wide => Err(CtlError::Usage(
            "tables are rendered by output::table".into(),
        )),
    }
}

// ---------------------------------------------------------------------------------------
// describe

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
            for (key, val) in crate::output_config::describe(k, v).unwrap_or_default() {
                p.kv(0, &key, val);
            }
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

// ---------------------------------------------------------------------------------------
// cluster status

/// Renders the controller cluster's status as a summary line and a member table.
pub fn cluster_status(s: &shoal_proto::ClusterStatusResponse) -> String {
    let leader = if s.leader_id == 0 {
        "<none>".to_string()
    } else {
        s.leader_id.to_string()
    };
    let mut out = format!(
        "Leader: {leader}   Term: {}   Commit index: {}   Answered by: {}\n\n",
        s.term, s.commit_index, s.answered_by
    );
    let mut t = Table {
        headers: [
            "ID", "ADDRESS", "ROLE", "VOTER", "HEALTH", "TERM", "LAST LOG", "APPLIED", "MATCHED",
            "ERROR",
        ]
        .iter()
        .map(|h| h.to_string())
        .collect(),
        rows: vec![],
    };
    let mut members = s.members.clone();
    members.sort_by_key(|m| m.id);
    for m in &members {
        let role = if m.leader {
            "leader"
        } else if m.voter {
            "follower"
        } else {
            "learner"
        };
        t.rows.push(vec![
            m.id.to_string(),
            m.address.clone(),
            role.into(),
            if m.voter { "yes" } else { "no" }.into(),
            if m.healthy { "healthy" } else { "unhealthy" }.into(),
            m.term.to_string(),
            m.last_log_index.to_string(),
            m.last_applied.to_string(),
            m.matched_index.to_string(),
            or_none(Some(crate::error::one_line(&m.error))),
        ]);
    }
    out.push_str(&t.render(false));
    out
}

/// The controller cluster's status as a JSON value (for `-o json|yaml`).
pub fn cluster_status_json(s: &shoal_proto::ClusterStatusResponse) -> Value {
    let mut members = s.members.clone();
    members.sort_by_key(|m| m.id);
    json!({
        "leaderId": s.leader_id,
        "term": s.term,
        "commitIndex": s.commit_index,
        "answeredBy": s.answered_by,
        "members": members.iter().map(|m| json!({
            "id": m.id,
            "address": m.address,
            "leader": m.leader,
            "voter": m.voter,
            "healthy": m.healthy,
            "term": m.term,
            "lastLogIndex": m.last_log_index,
            "lastApplied": m.last_applied,
            "matchedIndex": m.matched_index,
            "error": m.error,
        })).collect::<Vec<_>>(),
    })
}

// ---------------------------------------------------------------------------------------
// Workloads: top, images, rollout history

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
    use crate::kinds::resolve;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-28T20:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn ago(secs: i64) -> String {
        (now() - chrono::Duration::seconds(secs)).to_rfc3339()
    }

    #[test]
    fn ages_like_kubectl() {
        let d = chrono::Duration::seconds;
        for (secs, want) in [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (200, "3m20s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 25 * 60, "3h25m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (4 * 86400, "4d"),
            (4 * 86400 + 5 * 3600, "4d5h"),
            (30 * 86400, "30d"),
            (3 * 365 * 86400 + 10 * 86400, "3y10d"),
            (9 * 365 * 86400, "9y"),
        ] {
            assert_eq!(human_age(d(secs)), want, "{secs}s");
        }
        assert_eq!(age_of(None, now()), "<unknown>");
        assert_eq!(age_of(Some(&json!("garbage")), now()), "<unknown>");
        assert_eq!(age_of(Some(&json!(ago(90))), now()), "90s");
    }

    #[test]
    fn table_pads_columns_with_three_spaces() {
        let t = Table {
            headers: vec!["NAME".into(), "READY".into(), "STATUS".into()],
            rows: vec![
                vec!["web-1".into(), "1/1".into(), "Running".into()],
                vec![
                    "a-much-longer-name".into(),
                    "0/1".into(),
                    "CrashLoopBackOff".into(),
                ],
            ],
        };
        assert_eq!(
            t.render(false),
            "NAME                 READY   STATUS\n\
             web-1                1/1     Running\n\
             a-much-longer-name   0/1     CrashLoopBackOff\n"
        );
        assert_eq!(
            t.render(true).lines().next(),
            Some("web-1                1/1   Running")
        );
    }

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

    #[test]
    fn json_yaml_and_name_output() {
        let a = json!({"kind": "Pod", "metadata": {"name": "a"}});
        let b = json!({"kind": "Pod", "metadata": {"name": "b"}});
        let text = render_objects(vec![a.clone(), b.clone()], false, Format::Json).unwrap();
        assert!(
            text.starts_with(
                "{\n  \"kind\": \"List\",\n  \"apiVersion\": \"shoal/v1\",\n  \"items\""
            ),
            "{text}"
        );
        let list: Value = serde_json::from_str(
            &render_objects(vec![a.clone(), b.clone()], false, Format::Json).unwrap(),
        )
        .unwrap();
        assert_eq!(
            list,
            json!({"kind": "List", "apiVersion": "shoal/v1", "items": [a, b]})
        );
        let one: Value =
            serde_json::from_str(&render_objects(vec![a.clone()], true, Format::Json).unwrap())
                .unwrap();
        assert_eq!(one, a);
        let empty: Value =
            serde_json::from_str(&render_objects(vec![], false, Format::Json).unwrap()).unwrap();
        assert_eq!(empty["items"], json!([]));
        let yaml = render_objects(vec![a.clone()], true, Format::Yaml).unwrap();
        let back: Value = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(back, a);
        assert_eq!(
            render_objects(vec![a, b], false, Format::Name).unwrap(),
            "pod/a\npod/b\n"
        );
        assert!(
            "xml"
                .parse::<Format>()
                .unwrap_err()
                .to_string()
                .contains("allowed: wide, yaml, json, name")
        );
    }

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

    #[test]
    fn cluster_status_table() {
        use shoal_proto::{ClusterStatusResponse, MemberStatus};
        let m = |id: u64, leader: bool, healthy: bool, error: &str| MemberStatus {
            id,
            address: format!("127.0.0.1:700{id}"),
            leader,
            healthy,
            term: 4,
            last_log_index: 42,
            last_applied: 42,
            matched_index: if healthy { 42 } else { 0 },
            error: error.into(),
            voter: true,
        };
        let s = ClusterStatusResponse {
            leader_id: 1,
            term: 4,
            commit_index: 42,
            members: vec![
                m(2, false, false, "connection refused"),
                m(1, true, true, ""),
            ],
            answered_by: 1,
        };
        assert_eq!(
            cluster_status(&s),
            "Leader: 1   Term: 4   Commit index: 42   Answered by: 1\n\n\
             ID   ADDRESS          ROLE       VOTER   HEALTH      TERM   LAST LOG   APPLIED   MATCHED   ERROR\n\
             1    127.0.0.1:7001   leader     yes     healthy     4      42         42        42        <none>\n\
             2    127.0.0.1:7002   follower   yes     unhealthy   4      42         42        0         connection refused\n"
        );
        assert_eq!(
            cluster_status_json(&s)["members"][1]["error"],
            "connection refused"
        );
    }

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
