//! Tables and `describe` of ConfigMaps and Secrets (called from `output`). A Secret's
//! values are never shown: only its type and each key's size, as kubectl does.

use serde_json::Value;

/// The table columns of `kind`, when it is ConfigMap or Secret.
pub fn headers(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "ConfigMap" => Some(&["NAME", "DATA", "AGE"]),
        "Secret" => Some(&["NAME", "TYPE", "DATA", "AGE"]),
        _ => None,
    }
}

fn count(v: &Value, field: &str) -> usize {
    v.get(field)
        .and_then(Value::as_object)
        .map_or(0, |m| m.len())
}

fn secret_type(v: &Value) -> String {
    v.get("type")
        .and_then(Value::as_str)
        .unwrap_or("Opaque")
        .to_string()
}

/// The table row of `v` (name and age already formatted), when it is a ConfigMap or Secret.
pub fn row(kind: &str, v: &Value, name: String, age: String) -> Option<Vec<String>> {
    match kind {
        "ConfigMap" => Some(vec![
            name,
            (count(v, "data") + count(v, "binaryData")).to_string(),
            age,
        ]),
        "Secret" => Some(vec![
            name,
            secret_type(v),
            count(v, "data").to_string(),
            age,
        ]),
        _ => None,
    }
}

/// `describe` lines (heading or key, value) of a ConfigMap or Secret.
pub fn describe(kind: &str, v: &Value) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    match kind {
        "ConfigMap" => {
            if let Some(m) = v.get("data").and_then(Value::as_object) {
                for (k, x) in m {
                    out.push((k.clone(), x.as_str().unwrap_or_default().to_string()));
                }
            }
            if let Some(m) = v.get("binaryData").and_then(Value::as_object) {
                for (k, x) in m {
                    let n = shoal_api::configmap::decode_value(x.as_str().unwrap_or_default())
                        .map_or(0, |b| b.len());
                    out.push((k.clone(), format!("{n} bytes (binary)")));
                }
            }
        }
        "Secret" => {
            out.push(("Type".into(), secret_type(v)));
            if let Some(m) = v.get("data").and_then(Value::as_object) {
                for (k, x) in m {
                    let n = shoal_api::configmap::decode_value(x.as_str().unwrap_or_default())
                        .map_or(0, |b| b.len());
                    out.push((k.clone(), format!("{n} bytes")));
                }
            }
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
    fn secret_values_are_never_shown() {
        let s = json!({"kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": "aHVudGVyMg=="}});
        let r = row("Secret", &s, "reg".into(), "1m".into()).unwrap();
        assert_eq!(r, ["reg", "kubernetes.io/dockerconfigjson", "1", "1m"]);
        let d = describe("Secret", &s).unwrap();
        let text = format!("{d:?}");
        assert!(text.contains("7 bytes"), "{text}");
        assert!(
            !text.contains("aHVudGVyMg==") && !text.contains("hunter2"),
            "{text}"
        );
        let cm = json!({"data": {"a": "1"}, "binaryData": {"b": "AAE="}});
        assert_eq!(
            row("ConfigMap", &cm, "c".into(), "2d".into()).unwrap()[1],
            "2"
        );
        assert_eq!(headers("Pod"), None);
    }
}
