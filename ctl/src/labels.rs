//! `shoalctl label` and `annotate` arguments (`key=value`, `key-`) and applying them to a
//! label or annotation map.

use serde_json::{Map, Value};

use crate::error::CtlError;

/// Which map of `metadata` a `label` or `annotate` changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaMap {
    /// `metadata.labels` (values are label values: 63 characters of `[A-Za-z0-9_.-]`).
    Labels,
    /// `metadata.annotations` (any text).
    Annotations,
}

impl MetaMap {
    /// The field of `metadata`.
    pub fn field(self) -> &'static str {
        match self {
            MetaMap::Labels => "labels",
            MetaMap::Annotations => "annotations",
        }
    }

    /// "label" or "annotation".
    pub fn noun(self) -> &'static str {
        match self {
            MetaMap::Labels => "label",
            MetaMap::Annotations => "annotation",
        }
    }

    /// "labeled" or "annotated".
    pub fn done(self) -> &'static str {
        match self {
            MetaMap::Labels => "labeled",
            MetaMap::Annotations => "annotated",
        }
    }
}

/// One requested label change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelChange {
    /// `key=value`: add or change.
    Set(String, String),
    /// `key-`: remove.
    Remove(String),
}

impl LabelChange {
    fn key(&self) -> &str {
        match self {
            LabelChange::Set(k, _) | LabelChange::Remove(k) => k,
        }
    }
}

/// Splits `label` arguments into resource words and label changes (validated).
pub fn parse_label_args(args: &[String]) -> Result<(Vec<String>, Vec<LabelChange>), CtlError> {
    parse_meta_args(args, MetaMap::Labels)
}

/// [`parse_label_args`] for labels or annotations (annotation values are not checked).
pub fn parse_meta_args(
    args: &[String],
    which: MetaMap,
) -> Result<(Vec<String>, Vec<LabelChange>), CtlError> {
    let noun = which.noun();
    let mut resources = Vec::new();
    let mut changes: Vec<LabelChange> = Vec::new();
    for a in args {
        let change = if let Some((k, v)) = a.split_once('=') {
            shoal_api::validation::check_label_key(k).map_err(CtlError::Usage)?;
            if which == MetaMap::Labels {
                shoal_api::validation::check_label_value(v).map_err(CtlError::Usage)?;
            }
            LabelChange::Set(k.to_string(), v.to_string())
        } else if let Some(k) = a.strip_suffix('-') {
            shoal_api::validation::check_label_key(k).map_err(CtlError::Usage)?;
            LabelChange::Remove(k.to_string())
        } else {
            if !changes.is_empty() {
                return Err(CtlError::Usage(format!(
                    "{a:?}: expected KEY=VALUE or KEY- (resource names come before the {noun}s)"
                )));
            }
            resources.push(a.clone());
            continue;
        };
        if changes.iter().any(|c| c.key() == change.key()) {
            return Err(CtlError::Usage(format!(
                "{noun} {:?} is given more than once",
                change.key()
            )));
        }
        changes.push(change);
    }
    if changes.is_empty() {
        return Err(CtlError::Usage(format!(
            "at least one {noun} update is required (KEY=VALUE or KEY-)"
        )));
    }
    Ok((resources, changes))
}

/// What applying label changes did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelOutcome {
    /// Whether the label map changed.
    pub changed: bool,
    /// Removals of labels that were not there.
    pub warnings: Vec<String>,
}

/// Applies `changes` to a `metadata.labels` map; refuses to change an existing value
/// unless `overwrite` (like kubectl). Nothing is modified when it fails.
pub fn apply_label_changes(
    labels: &mut Map<String, Value>,
    changes: &[LabelChange],
    overwrite: bool,
) -> Result<LabelOutcome, CtlError> {
    for c in changes {
        if let LabelChange::Set(k, v) = c
            && let Some(old) = labels.get(k).and_then(Value::as_str)
            && old != v
            && !overwrite
        {
            return Err(CtlError::Usage(format!(
                "'{k}' already has a value ({old}), and --overwrite is false"
            )));
        }
    }
    let mut out = LabelOutcome::default();
    for c in changes {
        match c {
            LabelChange::Set(k, v) => {
                if labels.get(k).and_then(Value::as_str) != Some(v.as_str()) {
                    labels.insert(k.clone(), Value::String(v.clone()));
                    out.changed = true;
                }
            }
            LabelChange::Remove(k) => {
                if labels.remove(k).is_some() {
                    out.changed = true;
                } else {
                    out.warnings.push(format!("{k:?} not found"));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn arguments_split_into_resources_and_changes() {
        let (res, ch) = parse_label_args(&strings(&[
            "pod",
            "web-1",
            "tier=frontend",
            "old-",
            "example.com/x=",
        ]))
        .unwrap();
        assert_eq!(res, ["pod", "web-1"]);
        assert_eq!(
            ch,
            [
                LabelChange::Set("tier".into(), "frontend".into()),
                LabelChange::Remove("old".into()),
                LabelChange::Set("example.com/x".into(), "".into()),
            ]
        );
    }

    #[test]
    fn bad_label_arguments_are_rejected() {
        for (args, needle) in [
            (vec!["pod", "a"], "at least one label"),
            (vec!["pod", "a", "x=1", "x-"], "more than once"),
            (vec!["pod", "a", "Bad Key=1"], "label key"),
            (vec!["pod", "a", "k=not valid"], "label value"),
            (vec!["pod", "a", "-"], "label key"),
            (vec!["pod", "a", "x=1", "b"], "resource names come before"),
        ] {
            let e = parse_label_args(&strings(&args)).unwrap_err().to_string();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
    }

    #[test]
    fn overwrite_rule_like_kubectl() {
        let mut labels = json!({"app": "web", "tier": "backend"})
            .as_object()
            .unwrap()
            .clone();
        let change = [
            LabelChange::Set("tier".into(), "frontend".into()),
            LabelChange::Set("new".into(), "1".into()),
        ];
        let e = apply_label_changes(&mut labels, &change, false)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "'tier' already has a value (backend), and --overwrite is false"
        );
        assert_eq!(labels.len(), 2, "nothing changed on refusal");
        let out = apply_label_changes(&mut labels, &change, true).unwrap();
        assert!(out.changed);
        assert_eq!(
            Value::Object(labels.clone()),
            json!({"app": "web", "tier": "frontend", "new": "1"})
        );
        // Setting the same value is allowed without --overwrite and changes nothing.
        let out = apply_label_changes(
            &mut labels,
            &[LabelChange::Set("app".into(), "web".into())],
            false,
        )
        .unwrap();
        assert!(!out.changed);
        let out = apply_label_changes(
            &mut labels,
            &[
                LabelChange::Remove("app".into()),
                LabelChange::Remove("gone".into()),
            ],
            false,
        )
        .unwrap();
        assert!(out.changed);
        assert_eq!(out.warnings, [r#""gone" not found"#]);
        assert!(!labels.contains_key("app"));
    }
}
