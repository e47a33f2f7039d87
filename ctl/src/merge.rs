//! `apply`'s client-side three-way merge, kubectl's: from the manifest as written now
//! (*modified*), the manifest of the last apply (*original*, kept in the object's
//! [`LAST_APPLIED`] annotation) and the *live* object, the object to write is the live
//! one with
//!
//! - every field the manifest sets taking the manifest's value;
//! - every field the last apply set and the manifest no longer sets removed (so it
//!   falls back to its default);
//! - everything else kept: labels added by `label`, replicas set by `scale` when the
//!   manifest has none, status, addresses the controller assigned, server metadata
//!   (its `resourceVersion` makes the write conditional on the object read).
//!
//! Mappings merge key by key; lists and scalars are replaced whole when the manifest
//! sets them (JSON merge patch semantics, RFC 7386, as kubectl uses for types without a
//! strategic-merge schema). A mapping the manifest drops altogether loses the keys the
//! last apply set in it, and goes when nothing else is left (kubectl drops it whole, also
//! labels others added). An explicit `null` in the manifest removes the field. Pure: no
//! I/O.

use serde_json::{Map, Value};
use shoal_api::Object;

use crate::error::CtlError;
use crate::manifest::ManifestObject;

/// The annotation that keeps the manifest of the last `apply` (as compact JSON), named
/// like kubectl's so that tools and habits that know it work unchanged.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Metadata only the server sets; left out when comparing what `apply` would change.
pub const SERVER_META: [&str; 5] = [
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
];

/// The manifest of the last apply, from the live object's annotation (None when the
/// object was never applied, or the annotation is not a JSON object).
pub fn last_applied(live: &Value) -> Option<Value> {
    let text = live
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED))
        .and_then(Value::as_str)?;
    serde_json::from_str::<Value>(text)
        .ok()
        .filter(Value::is_object)
}

/// The manifest as it is written to the cluster: itself plus the [`LAST_APPLIED`]
/// annotation holding itself (without any such annotation of its own).
pub fn with_last_applied(raw: &Value) -> Value {
    let mut kept = raw.clone();
    if let Some(annotations) = kept
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty()
            && let Some(meta) = kept.get_mut("metadata").and_then(Value::as_object_mut)
        {
            meta.remove("annotations");
        }
    }
    let text = kept.to_string();
    let mut out = kept;
    if let Some(meta) = out.as_object_mut().map(|o| {
        o.entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()))
    }) && let Some(meta) = meta.as_object_mut()
    {
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if !annotations.is_object() {
            *annotations = Value::Object(Map::new());
        }
        if let Some(a) = annotations.as_object_mut() {
            a.insert(LAST_APPLIED.to_string(), Value::String(text));
        }
    }
    out
}

/// The three-way merge (see the module comment): `live` changed so that it has what
/// `modified` sets and lacks what `original` set and `modified` no longer does.
pub fn three_way(original: Option<&Value>, modified: &Value, live: &Value) -> Value {
    match (modified, live) {
        (Value::Object(m), Value::Object(l)) => {
            let mut out = l.clone();
            let o = original.and_then(Value::as_object);
            if let Some(o) = o {
                for (k, ov) in o {
                    if m.contains_key(k) {
                        continue;
                    }
                    // A mapping the manifest dropped loses what the last apply set in
                    // it; keys set by others stay (kubectl would drop it whole).
                    match (ov, l.get(k)) {
                        (Value::Object(_), Some(lv @ Value::Object(_))) => {
                            let rest = three_way(Some(ov), &Value::Object(Map::new()), lv);
                            if rest.as_object().is_some_and(Map::is_empty) {
                                out.remove(k);
                            } else {
                                out.insert(k.clone(), rest);
                            }
                        }
                        _ => {
                            out.remove(k);
                        }
                    }
                }
            }
            for (k, mv) in m {
                if mv.is_null() {
                    out.remove(k);
                    continue;
                }
                let merged = match l.get(k) {
                    Some(lv) => three_way(o.and_then(|o| o.get(k)), mv, lv),
                    None => without_nulls(mv),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        _ => without_nulls(modified),
    }
}

/// `v` without the mapping entries whose value is null (a null means "not set").
fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// The object `apply` writes for one manifest object, given the live object (None when
/// it does not exist): merged, then decoded, defaulted and validated like a manifest,
/// as the JSON the API carries. An error names the file, document and object.
pub fn desired(obj: &ManifestObject, live: Option<&Value>) -> Result<Value, CtlError> {
    let modified = with_last_applied(&obj.raw);
    let merged = match live {
        None => modified,
        Some(live) => three_way(last_applied(live).as_ref(), &modified, live),
    };
    let problem = |e: shoal_api::ValidationErrors| {
        let lines: Vec<String> = e
            .errors
            .iter()
            .map(|f| {
                format!(
                    "{}: document {} ({} {}): merged with the live object: {f}",
                    obj.source, obj.document, obj.kind.kind, obj.name
                )
            })
            .collect();
        CtlError::Manifest(lines.join("\n"))
    };
    let mut o = Object::from_json(&merged).map_err(problem)?;
    o.set_defaults();
    o.validate().map_err(problem)?;
    Ok(o.to_json())
}

/// What `apply` does to an object: `created`, `configured` or `unchanged`.
pub fn action(live: Option<&Value>, desired: &Value) -> &'static str {
    match live {
        None => "created",
        Some(l) if same_state(l, desired) => "unchanged",
        Some(_) => "configured",
    }
}

/// True when writing `desired` would not change `live`: equal but for server metadata
/// and status (which the system owns).
pub fn same_state(live: &Value, desired: &Value) -> bool {
    comparable(live) == comparable(desired)
}

/// `v` without server metadata and status.
pub fn comparable(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in SERVER_META {
            m.remove(k);
        }
    }
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(extra_spec: Value) -> Value {
        let mut spec = json!({
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
        });
        for (k, v) in extra_spec.as_object().unwrap() {
            spec[k] = v.clone();
        }
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
               "spec": spec})
    }

    /// What the server holds after an apply of `raw`: the merged object, plus server
    /// metadata and status.
    fn stored(v: Value) -> Value {
        let mut v = v;
        v["metadata"]["resourceVersion"] = json!("7");
        v["metadata"]["uid"] = json!("u-1");
        v["status"] = json!({"replicas": 1});
        v
    }

    fn obj(raw: Value) -> ManifestObject {
        ManifestObject {
            kind: crate::kinds::of_kind(shoal_api::Kind::Deployment),
            namespace: "default".into(),
            name: "web".into(),
            json: raw.clone(),
            raw,
            source: "web.yaml".into(),
            document: 1,
        }
    }

    #[test]
    fn first_apply_keeps_the_manifest_in_the_annotation() {
        let raw = deployment(json!({}));
        let out = with_last_applied(&raw);
        assert_eq!(last_applied(&out), Some(raw.clone()));
        // A manifest carrying the annotation itself (an exported object) does not nest it.
        let again = with_last_applied(&out);
        assert_eq!(last_applied(&again), Some(raw));
        assert_eq!(last_applied(&json!({"metadata": {}})), None);
        let broken = json!({"metadata": {"annotations": {LAST_APPLIED: "not json"}}});
        assert_eq!(last_applied(&broken), None);
    }

    #[test]
    fn labels_added_elsewhere_survive_a_re_apply() {
        let raw = deployment(json!({}));
        let mut live = stored(desired(&obj(raw.clone()), None).unwrap());
        live["metadata"]["labels"]["tier"] = json!("frontend");
        let out = desired(&obj(raw), Some(&live)).unwrap();
        assert_eq!(
            out["metadata"]["labels"],
            json!({"app": "web", "tier": "frontend"})
        );
        assert_eq!(action(Some(&live), &out), "unchanged");
    }

    #[test]
    fn replicas_set_by_scale_survive_when_the_manifest_has_none() {
        let raw = deployment(json!({}));
        let mut live = stored(desired(&obj(raw.clone()), None).unwrap());
        assert_eq!(live["spec"]["replicas"], 1);
        live["spec"]["replicas"] = json!(5);
        let out = desired(&obj(raw), Some(&live)).unwrap();
        assert_eq!(out["spec"]["replicas"], 5);
        // A manifest that sets replicas wins over scale.
        let out = desired(&obj(deployment(json!({"replicas": 2}))), Some(&live)).unwrap();
        assert_eq!(out["spec"]["replicas"], 2);
    }

    #[test]
    fn fields_removed_from_the_manifest_are_removed() {
        let mut v1 = deployment(json!({"revisionHistoryLimit": 3, "paused": true}));
        v1["metadata"]["labels"]["tier"] = json!("a");
        v1["metadata"]["annotations"] = json!({"note": "x"});
        let live = stored(desired(&obj(v1), None).unwrap());
        assert_eq!(live["spec"]["revisionHistoryLimit"], 3);
        let v2 = deployment(json!({"paused": true}));
        let out = desired(&obj(v2.clone()), Some(&live)).unwrap();
        // Back to the default, the label and annotation gone, the rest kept.
        assert_eq!(out["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(out["spec"]["paused"], true);
        assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
        let annotations = out["metadata"]["annotations"].as_object().unwrap();
        assert_eq!(annotations.keys().collect::<Vec<_>>(), [LAST_APPLIED]);
        assert_eq!(last_applied(&out), Some(v2));
        // Server metadata and status stay (the resourceVersion is the precondition).
        assert_eq!(out["metadata"]["resourceVersion"], "7");
        assert_eq!(out["status"]["replicas"], 1);
        assert_eq!(action(Some(&live), &out), "configured");
    }

    #[test]
    fn a_dropped_mapping_keeps_what_others_set_in_it() {
        let original = json!({"metadata": {"labels": {"b": "2"}}, "spec": {"s": {"x": 1}}});
        let modified = json!({"metadata": {}, "spec": {}});
        let live = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"s": {"x": 1}}});
        assert_eq!(
            three_way(Some(&original), &modified, &live),
            json!({"metadata": {"labels": {"a": "1"}}, "spec": {}})
        );
    }

    #[test]
    fn without_a_last_apply_nothing_is_removed() {
        let mut live = stored(desired(&obj(deployment(json!({"paused": true}))), None).unwrap());
        live["metadata"]["annotations"] = json!({});
        let out = three_way(None, &deployment(json!({})), &live);
        assert_eq!(out["spec"]["paused"], true);
    }

    #[test]
    fn lists_are_replaced_whole_and_nulls_remove() {
        let original = json!({"a": [1, 2], "m": {"x": 1, "y": 2}, "s": "v"});
        let modified = json!({"a": [3], "m": {"x": null, "z": {"n": null, "k": 1}}});
        let live = json!({"a": [1, 2, 9], "m": {"x": 1, "y": 2, "w": 0}, "s": "v", "t": 1});
        assert_eq!(
            three_way(Some(&original), &modified, &live),
            json!({"a": [3], "m": {"w": 0, "z": {"k": 1}}, "t": 1})
        );
    }

    #[test]
    fn an_invalid_merge_names_file_document_and_object() {
        let raw = deployment(json!({}));
        let mut live = stored(desired(&obj(raw.clone()), None).unwrap());
        live["spec"]["replicas"] = json!("many");
        let e = desired(&obj(raw), Some(&live)).unwrap_err().to_string();
        assert_eq!(
            e,
            "web.yaml: document 1 (Deployment web): merged with the live object: spec.replicas: expected a non-negative integer, got \"many\""
        );
    }

    #[test]
    fn comparison_ignores_server_metadata_and_status() {
        let a = json!({"metadata": {"name": "x", "uid": "1", "resourceVersion": "3"}, "status": {"p": 1}, "spec": {"a": 1}});
        let b = json!({"metadata": {"name": "x"}, "spec": {"a": 1}});
        assert!(same_state(&a, &b));
        assert_eq!(action(None, &b), "created");
        let c = json!({"metadata": {"name": "x"}, "spec": {"a": 2}});
        assert!(!same_state(&a, &c));
    }
}
