//! Loads `-f` manifests into validated objects (as JSON) before anything is sent, so a
//! bad manifest changes nothing; applies `--namespace` like kubectl. Every problem of
//! every file is reported, not only the first.

use std::io::Read;
use std::path::PathBuf;

use serde_json::Value;

use crate::error::CtlError;
use crate::kinds::{self, KindInfo};
use crate::sources;

/// One object from a manifest, ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestObject {
    /// Its kind.
    pub kind: KindInfo,
    /// Namespace ("" for cluster-scoped kinds).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The object as JSON (as the API carries it), with defaults.
    pub json: Value,
    /// The document as written (no defaults; the namespace filled in for namespaced
    /// kinds): what `apply` merges and keeps as the last-applied configuration.
    pub raw: Value,
    /// The file it came from (`<stdin>` for `-`).
    pub source: String,
    /// Its 1-based document number in that file.
    pub document: usize,
}

/// Reads, parses and validates every manifest of the `-f` arguments. Every problem of
/// every file is reported (one per line), and then nothing is returned.
pub fn load(
    files: &[PathBuf],
    stdin: &mut dyn Read,
    namespace: Option<&str>,
) -> Result<Vec<ManifestObject>, CtlError> {
    let mut out = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    for src in sources::expand(files, stdin)? {
        match parse(&src.name, &src.text, namespace) {
            Ok(objs) => out.extend(objs),
            Err(CtlError::Manifest(m)) => problems.extend(m.lines().map(str::to_string)),
            Err(e) => return Err(e),
        }
    }
    if !problems.is_empty() {
        return Err(CtlError::Manifest(problems.join("\n")));
    }
    if out.is_empty() {
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        return Err(CtlError::Manifest(format!(
            "{}: no objects found",
            names.join(", ")
        )));
    }
    Ok(out)
}

/// Parses one manifest text; `namespace` (`-n`) fills in namespaces the documents leave
/// out and must agree with those they write. Errors: every problem, one per line.
pub fn parse(
    source: &str,
    text: &str,
    namespace: Option<&str>,
) -> Result<Vec<ManifestObject>, CtlError> {
    let documents =
        shoal_api::parse_documents(source, text).map_err(|e| CtlError::Manifest(e.to_string()))?;
    let mut problems = Vec::new();
    let mut out = Vec::with_capacity(documents.len());
    for d in documents {
        let o = &d.object;
        let kind = kinds::of_kind(o.kind());
        let mut json = o.to_json();
        let mut raw = d.raw;
        let written_ns = raw
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        let ns = match (kind.namespaced, written_ns, namespace) {
            (false, _, _) => String::new(),
            (true, Some(w), Some(n)) if w != n => {
                problems.push(format!(
                    "{source}: document {} ({} {}): metadata.namespace: {w:?} does not match --namespace {n:?}",
                    d.document,
                    kind.kind,
                    o.name()
                ));
                continue;
            }
            (true, Some(w), _) => w,
            (true, None, Some(n)) => n.to_string(),
            (true, None, None) => o.namespace().to_string(),
        };
        if kind.namespaced {
            for v in [&mut json, &mut raw] {
                if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.insert("namespace".into(), Value::String(ns.clone()));
                }
            }
        }
        out.push(ManifestObject {
            kind,
            namespace: ns,
            name: o.name().to_string(),
            json,
            raw,
            source: source.to_string(),
            document: d.document,
        });
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(CtlError::Manifest(problems.join("\n")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = "\
apiVersion: shoal/v1
kind: Pod
metadata: {name: a}
spec:
  containers: [{name: c, image: busybox}]
---
---
apiVersion: shoal/v1
kind: Pod
metadata: {name: b, namespace: prod}
spec:
  containers: [{name: c, image: busybox}]
---
apiVersion: shoal/v1
kind: Node
metadata: {name: n1}
";

    #[test]
    fn namespaces_default_and_follow_the_flag() {
        let objs = parse("two.yaml", TWO, None).unwrap();
        let got: Vec<(&str, &str)> = objs
            .iter()
            .map(|o| (o.name.as_str(), o.namespace.as_str()))
            .collect();
        assert_eq!(got, [("a", "default"), ("b", "prod"), ("n1", "")]);
        let objs = parse("two.yaml", TWO, Some("prod")).unwrap();
        assert_eq!(objs[0].namespace, "prod");
        assert_eq!(
            objs[0]
                .json
                .pointer("/metadata/namespace")
                .and_then(Value::as_str),
            Some("prod")
        );
        assert_eq!(objs[2].namespace, "");
        let e = parse("two.yaml", TWO, Some("dev")).unwrap_err().to_string();
        assert_eq!(
            e,
            r#"two.yaml: document 3 (Pod b): metadata.namespace: "prod" does not match --namespace "dev""#
        );
    }

    #[test]
    fn invalid_manifests_name_file_document_and_field() {
        let bad = "apiVersion: shoal/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: three\n";
        let e = parse("web.yaml", bad, None).unwrap_err().to_string();
        assert!(
            e.starts_with("web.yaml: document 1 (Deployment web): spec.replicas"),
            "{e}"
        );
        let e = parse("x.yaml", "kind: Widget\nmetadata: {name: a}\n", None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("x.yaml: document 1"), "{e}");
    }

    #[test]
    fn load_reports_every_problem_of_every_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        let b = dir.path().join("b.yaml");
        std::fs::write(&a, TWO).unwrap();
        std::fs::write(
            &b,
            "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: c, image: i, terminationMessagePolicy: File}]}\n",
        )
        .unwrap();
        let e = load(&[a.clone(), b.clone()], &mut std::io::empty(), Some("dev"))
            .unwrap_err()
            .to_string();
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines.len(), 2, "{e}");
        assert!(
            lines[0].starts_with(&format!(
                "{}: document 3 (Pod b): metadata.namespace",
                a.display()
            )),
            "{e}"
        );
        assert_eq!(
            lines[1],
            format!(
                "{}: document 1 (Pod x): spec.containers[0].terminationMessagePolicy: not supported by Shoal (a Kubernetes field) (line 4)",
                b.display()
            )
        );
        // The documents as written are kept, with the namespace filled in.
        let objs = load(&[a], &mut std::io::empty(), None).unwrap();
        assert_eq!(
            objs[0].raw,
            serde_json::json!({"apiVersion": "shoal/v1", "kind": "Pod",
                               "metadata": {"name": "a", "namespace": "default"},
                               "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
        );
        assert_eq!((objs[1].document, objs[2].document), (3, 4));
    }

    #[test]
    fn load_reports_empty_manifests() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("empty.yaml");
        std::fs::write(&f, "# nothing\n---\n").unwrap();
        let e = load(&[f], &mut std::io::empty(), None)
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("no objects found"), "{e}");
    }
}
