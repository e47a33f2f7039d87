//! `-o json`, `-o yaml` and `-o name`: one object as is, several as a `List`.

use serde_json::Value;

use super::fields::{name_of, s_at};
use super::{Format, Table};
use crate::error::CtlError;

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
pub fn render_objects(
    items: Vec<Value>,
    single: bool,
    format: &Format,
) -> Result<String, CtlError> {
    let single_item = single && items.len() == 1;
    match format {
        Format::JsonPath(t) if single_item => Ok(t.render(&items[0])),
        Format::JsonPath(t) => {
            let list = list_object(items);
            Ok(t.render(&serde_json::json!({
                "kind": list.kind, "apiVersion": list.api_version, "items": list.items,
            })))
        }
        Format::CustomColumns(cols) => Ok(custom_columns(cols, &items).render(false)),
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

/// The `-o custom-columns` table of `items`.
pub fn custom_columns(cols: &[crate::output::jsonpath::Column], items: &[Value]) -> Table {
    Table {
        headers: cols.iter().map(|c| c.header.clone()).collect(),
        rows: items
            .iter()
            .map(|i| cols.iter().map(|c| c.cell(i)).collect())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[allow(unused_imports)]
    use crate::output::testutil::*;

    #[test]
    fn json_yaml_and_name_output() {
        let a = json!({"kind": "Pod", "metadata": {"name": "a"}});
        let b = json!({"kind": "Pod", "metadata": {"name": "b"}});
        let text = render_objects(vec![a.clone(), b.clone()], false, &Format::Json).unwrap();
        assert!(
            text.starts_with(
                "{\n  \"kind\": \"List\",\n  \"apiVersion\": \"shoal/v1\",\n  \"items\""
            ),
            "{text}"
        );
        let list: Value = serde_json::from_str(
            &render_objects(vec![a.clone(), b.clone()], false, &Format::Json).unwrap(),
        )
        .unwrap();
        assert_eq!(
            list,
            json!({"kind": "List", "apiVersion": "shoal/v1", "items": [a, b]})
        );
        let one: Value =
            serde_json::from_str(&render_objects(vec![a.clone()], true, &Format::Json).unwrap())
                .unwrap();
        assert_eq!(one, a);
        let empty: Value =
            serde_json::from_str(&render_objects(vec![], false, &Format::Json).unwrap()).unwrap();
        assert_eq!(empty["items"], json!([]));
        let yaml = render_objects(vec![a.clone()], true, &Format::Yaml).unwrap();
        let back: Value = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(back, a);
        assert_eq!(
            render_objects(vec![a, b], false, &Format::Name).unwrap(),
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
}
