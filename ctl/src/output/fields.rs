//! Reading the objects' JSON: strings, numbers and lists at JSON pointers, names,
//! label maps and selectors in command-line form. Missing fields read as empty.

use std::collections::BTreeMap;

use serde_json::Value;

pub(super) fn s_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

pub(super) fn first_str<'a>(v: &'a Value, ptrs: &[&str]) -> Option<&'a str> {
    ptrs.iter().find_map(|p| s_at(v, p))
}

pub(super) fn i_at(v: &Value, ptr: &str) -> Option<i64> {
    match v.pointer(ptr)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

pub(super) fn arr<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

pub(super) fn or_none(s: Option<impl Into<String>>) -> String {
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
