//! `shoalctl explain KIND[.FIELD…] [--recursive]`: the documentation of a kind or field,
//! from the JSON Schema `schemars` derives from shoal-api's types (their doc comments are
//! the descriptions), laid out like kubectl explain. Walking the schema is pure
//! ([`explain_text`]); the schema is built in this process, no controller is asked.

use schemars::schema_for;
use serde_json::Value;
use shoal_api::Kind;

use super::print;
use crate::error::CtlError;
use crate::kinds;

/// The JSON Schema of a kind's object type.
pub fn schema_of(kind: Kind) -> Value {
    let s = match kind {
        Kind::Pod => schema_for!(shoal_api::Pod),
        Kind::Deployment => schema_for!(shoal_api::Deployment),
        Kind::DaemonSet => schema_for!(shoal_api::DaemonSet),
        Kind::StatefulSet => schema_for!(shoal_api::StatefulSet),
        Kind::PersistentVolumeClaim => schema_for!(shoal_api::PersistentVolumeClaim),
        Kind::PersistentVolume => schema_for!(shoal_api::PersistentVolume),
        Kind::NetworkPolicy => schema_for!(shoal_api::NetworkPolicy),
        Kind::Service => schema_for!(shoal_api::Service),
        Kind::Node => schema_for!(shoal_api::Node),
        Kind::Event => schema_for!(shoal_api::Event),
        Kind::Namespace => schema_for!(shoal_api::Namespace),
        Kind::Endpoints => schema_for!(shoal_api::Endpoints),
        Kind::Job => schema_for!(shoal_api::Job),
        Kind::CronJob => schema_for!(shoal_api::CronJob),
        Kind::ConfigMap => schema_for!(shoal_api::ConfigMap),
        Kind::Secret => schema_for!(shoal_api::Secret),
    };
    s.as_value().clone()
}

/// Follows `$ref`s and `Option`'s `anyOf [T, null]` to the schema that describes values.
fn resolve<'a>(root: &'a Value, mut s: &'a Value) -> &'a Value {
    for _ in 0..16 {
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            let name = r.trim_start_matches("#/$defs/");
            match root.pointer(&format!("/$defs/{name}")) {
                Some(d) => {
                    s = d;
                    continue;
                }
                None => return s,
            }
        }
        if let Some(alts) = s
            .get("anyOf")
            .or_else(|| s.get("oneOf"))
            .and_then(Value::as_array)
            && let Some(first) = alts
                .iter()
                .find(|a| a.get("type").and_then(Value::as_str) != Some("null"))
        {
            s = first;
            continue;
        }
        return s;
    }
    s
}

/// kubectl's type notation: `<string>`, `<[]Container>`, `<map[string]string>`, `<Object>`.
fn type_name(s: &Value) -> String {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        return r.trim_start_matches("#/$defs/").to_string();
    }
    if let Some(alts) = s
        .get("anyOf")
        .or_else(|| s.get("oneOf"))
        .and_then(Value::as_array)
        && let Some(first) = alts
            .iter()
            .find(|a| a.get("type").and_then(Value::as_str) != Some("null"))
    {
        return type_name(first);
    }
    let ty = match s.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect::<Vec<_>>()
            .join("|"),
        _ => "Object".into(),
    };
    match ty.as_str() {
        "array" => format!(
            "[]{}",
            s.get("items")
                .map(type_name)
                .unwrap_or_else(|| "Object".into())
        ),
        "object" => match s.get("additionalProperties") {
            Some(a) if a.is_object() => format!("map[string]{}", type_name(a)),
            _ if s.get("properties").is_some() => "Object".into(),
            _ => "map[string]Object".into(),
        },
        _ => ty,
    }
}

/// The object schema whose fields a path step looks into (arrays and maps to their items).
fn fields_of<'a>(root: &'a Value, s: &'a Value) -> &'a Value {
    let s = resolve(root, s);
    if let Some(items) = s.get("items") {
        return fields_of(root, items);
    }
    if let Some(a) = s.get("additionalProperties").filter(|a| a.is_object())
        && s.get("properties").is_none()
    {
        return fields_of(root, a);
    }
    s
}

fn description(s: &Value, root: &Value) -> String {
    s.get("description")
        .or_else(|| resolve(root, s).get("description"))
        .and_then(Value::as_str)
        .unwrap_or("<empty>")
        .to_string()
}

fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines()
        .map(|l| format!("{pad}{l}\n"))
        .collect::<String>()
}

fn field_lines(root: &Value, obj: &Value, depth: usize, recursive: bool, out: &mut String) {
    let Some(props) = obj.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required: Vec<&str> = obj
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let pad = "   ".repeat(depth + 1);
    for (name, s) in props {
        let req = if required.contains(&name.as_str()) {
            " -required-"
        } else {
            ""
        };
        out.push_str(&format!("{pad}{name}\t<{}>{req}\n", type_name(s)));
        if recursive {
            let inner = fields_of(root, s);
            if inner.get("properties").is_some() && depth < 12 {
                field_lines(root, inner, depth + 1, true, out);
            }
        } else {
            out.push_str(&indent(&description(s, root), depth * 3 + 5));
            out.push('\n');
        }
    }
}

/// The explanation of `path` (field names after the kind) in `kind`'s schema.
pub fn explain_text(
    kind: Kind,
    schema: &Value,
    path: &[&str],
    recursive: bool,
) -> Result<String, CtlError> {
    let mut s = schema;
    let mut walked = vec![kind.as_str().to_string()];
    for step in path {
        let obj = fields_of(schema, s);
        let next = obj.get("properties").and_then(|p| p.get(*step));
        let Some(next) = next else {
            let known: Vec<&String> = obj
                .get("properties")
                .and_then(Value::as_object)
                .map(|p| p.keys().collect())
                .unwrap_or_default();
            return Err(CtlError::Usage(format!(
                "field {step:?} does not exist in {}{}",
                walked.join("."),
                if known.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (its fields: {})",
                        known
                            .iter()
                            .map(|k| k.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            )));
        };
        walked.push(step.to_string());
        s = next;
    }
    let mut out = format!(
        "KIND:     {}\nVERSION:  {}\n\n",
        kind.as_str(),
        kind.kubernetes_api_version()
    );
    if let Some(last) = path.last() {
        out.push_str(&format!("FIELD:    {last} <{}>\n\n", type_name(s)));
    }
    out.push_str("DESCRIPTION:\n");
    out.push_str(&indent(&description(s, schema), 5));
    let obj = fields_of(schema, s);
    if obj.get("properties").is_some() {
        out.push_str("\nFIELDS:\n");
        field_lines(schema, obj, 0, recursive, &mut out);
    }
    Ok(out)
}

/// Runs `explain`.
pub fn run(target: &str, recursive: bool) -> Result<(), CtlError> {
    let mut parts = target.split('.');
    let kind_text = parts.next().unwrap_or("");
    let info = kinds::resolve(kind_text)?;
    let kind = Kind::from_manifest_name(info.kind)
        .ok_or_else(|| CtlError::Usage(format!("unknown kind {kind_text:?}")))?;
    let path: Vec<&str> = parts.collect();
    if path.iter().any(|p| p.is_empty()) {
        return Err(CtlError::Usage(format!(
            "{target:?}: expected KIND or KIND.FIELD.FIELD…, e.g. pod.spec.containers"
        )));
    }
    print(&explain_text(kind, &schema_of(kind), &path, recursive)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_fields_are_explained_from_the_doc_comments() {
        let pod = schema_of(Kind::Pod);
        let top = explain_text(Kind::Pod, &pod, &[], false).unwrap();
        assert!(top.starts_with("KIND:     Pod\nVERSION:  v1\n"), "{top}");
        assert!(top.contains("   spec\t<PodSpec>"), "{top}");
        assert!(top.contains("What should run."), "{top}");

        let c = explain_text(Kind::Pod, &pod, &["spec", "containers"], false).unwrap();
        assert!(c.contains("FIELD:    containers <[]Container>"), "{c}");
        assert!(c.contains("   image\t<"), "{c}");
        let img = explain_text(Kind::Pod, &pod, &["spec", "containers", "image"], false).unwrap();
        assert!(img.contains("FIELD:    image <"), "{img}");

        let d = schema_of(Kind::Deployment);
        let r = explain_text(Kind::Deployment, &d, &["spec"], true).unwrap();
        assert!(r.contains("VERSION:  apps/v1"), "{r}");
        // Recursive: nested fields indented under their parent.
        assert!(r.contains("   template\t<"), "{r}");
        assert!(r.contains("         containers\t<[]Container>"), "{r}");

        let e = explain_text(Kind::Pod, &pod, &["spec", "contaners"], false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"contaners\" does not exist in Pod.spec") && e.contains("containers"),
            "{e}"
        );
        for k in Kind::ALL {
            assert!(explain_text(k, &schema_of(k), &[], true).is_ok(), "{k}");
        }
    }
}
