//! Multi-document YAML manifests: parse, default and validate every document, or
//! report every problem of every document, each with file, document, object and field
//! path.

use crate::locate;
use crate::object::Object;
use crate::validation::ValidationErrors;
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;

/// Why a manifest was rejected. Every variant names the file and the 1-based document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The YAML itself is malformed.
    #[error("{file}: document {document}: line {line}, column {column}: invalid YAML: {message}")]
    Syntax {
        /// File name as given (`-` for stdin).
        file: String,
        /// 1-based document index.
        document: usize,
        /// 1-based line in the file.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// A document does not fit the schema or breaks a validation rule.
    #[error("{}", Invalid { file, document, object, errors })]
    Invalid {
        /// File name as given (`-` for stdin).
        file: String,
        /// 1-based document index.
        document: usize,
        /// `Kind name` as far as it could be read (`Deployment web`).
        object: Option<String>,
        /// The problems, each with its field path.
        errors: ValidationErrors,
    },
    /// The same object (kind, namespace, name) appears twice.
    #[error(
        "{file}: document {document} ({object}): the same object is already defined in document {first}"
    )]
    Duplicate {
        /// File name as given (`-` for stdin).
        file: String,
        /// 1-based index of the second occurrence.
        document: usize,
        /// `Kind name`.
        object: String,
        /// 1-based index of the first occurrence.
        first: usize,
    },
}

struct Invalid<'a> {
    file: &'a str,
    document: &'a usize,
    object: &'a Option<String>,
    errors: &'a ValidationErrors,
}

impl fmt::Display for Invalid<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = match self.object {
            Some(o) => format!("{}: document {} ({o})", self.file, self.document),
            None => format!("{}: document {}", self.file, self.document),
        };
        if self.errors.errors.is_empty() {
            return write!(f, "{prefix}: invalid");
        }
        for (i, e) in self.errors.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{prefix}: {e}")?;
            if let Some(line) = e.line {
                write!(f, " (line {line})")?;
            }
        }
        Ok(())
    }
}

impl ManifestError {
    /// The file name the error refers to.
    pub fn file(&self) -> &str {
        match self {
            ManifestError::Syntax { file, .. }
            | ManifestError::Invalid { file, .. }
            | ManifestError::Duplicate { file, .. } => file,
        }
    }

    /// The 1-based document index the error refers to.
    pub fn document(&self) -> usize {
        match self {
            ManifestError::Syntax { document, .. }
            | ManifestError::Invalid { document, .. }
            | ManifestError::Duplicate { document, .. } => *document,
        }
    }
}

/// "Kind name" from a raw document, as far as it can be read.
fn describe(value: &serde_json::Value) -> Option<String> {
    let kind = value.get("kind").and_then(|k| k.as_str())?;
    match value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
    {
        Some(name) if !name.is_empty() => Some(format!("{kind} {name}")),
        _ => Some(kind.to_string()),
    }
}

fn syntax_error(file: &str, document: usize, e: &serde_yaml_ng::Error) -> ManifestError {
    let mut message = e.to_string();
    let (line, column) = match e.location() {
        Some(l) => {
            // The location is reported separately: drop " at line L column C" from the text.
            let at = format!(" at line {} column {}", l.line(), l.column());
            message = message.replacen(&at, "", 1);
            (l.line(), l.column())
        }
        None => (0, 0),
    };
    ManifestError::Syntax {
        file: file.to_string(),
        document,
        line,
        column,
        message,
    }
}

/// Every error of a manifest, in document order (never empty when returned as an error).
/// Displayed one per line.
#[derive(Debug, Clone, PartialEq, Eq, Default, thiserror::Error)]
pub struct ManifestErrors {
    /// The errors.
    pub errors: Vec<ManifestError>,
}

impl fmt::Display for ManifestErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl ManifestErrors {
    /// The first error (the list is never empty when returned by the parser).
    pub fn first(&self) -> Option<&ManifestError> {
        self.errors.first()
    }

    /// How many problems: every field error of an invalid document counts.
    pub fn count(&self) -> usize {
        self.errors
            .iter()
            .map(|e| match e {
                ManifestError::Invalid { errors, .. } => errors.errors.len().max(1),
                _ => 1,
            })
            .sum()
    }
}

/// One document of a manifest: the object it decodes to (defaulted and valid) and the
/// document as written (YAML merge keys resolved, as JSON), which `apply` keeps as the
/// last-applied configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// 1-based index of the document in its file.
    pub document: usize,
    /// The decoded, defaulted and validated object.
    pub object: Object,
    /// The document as written (no defaults), as JSON.
    pub raw: serde_json::Value,
}

/// Parses a multi-document YAML (or JSON) manifest. `source` names the file in
/// messages (`-` for stdin). Empty documents are skipped; every other document must be
/// a supported kind with a supported `apiVersion`, without unknown fields, and valid.
/// Namespaced objects without a namespace get `default`. Returns every object, in
/// order, or every error of every document: nothing half-parses.
pub fn parse_manifests(source: &str, text: &str) -> Result<Vec<Object>, ManifestErrors> {
    Ok(parse_documents(source, text)?
        .into_iter()
        .map(|d| d.object)
        .collect())
}

/// [`parse_manifests`], keeping each document's number and text as written.
pub fn parse_documents(source: &str, text: &str) -> Result<Vec<Document>, ManifestErrors> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    // Syntax first, for the whole file, so that a YAML error anywhere is reported as such
    // (after one, the parser cannot find the documents that follow).
    let mut documents = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let yaml = serde_yaml_ng::Value::deserialize(doc).map_err(|e| ManifestErrors {
            errors: vec![syntax_error(source, i + 1, &e)],
        })?;
        documents.push(yaml);
    }
    for (i, yaml) in documents.into_iter().enumerate() {
        let document = i + 1;
        if yaml.is_null() {
            continue;
        }
        match parse_document(source, text, document, yaml) {
            Ok((object, raw)) => {
                if let Some(first) = seen.insert(object.key(), document) {
                    errors.push(ManifestError::Duplicate {
                        file: source.to_string(),
                        document,
                        object: object.describe(),
                        first,
                    });
                    continue;
                }
                out.push(Document {
                    document,
                    object,
                    raw,
                });
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ManifestErrors { errors })
    }
}

/// Decodes, defaults and validates one non-empty document.
fn parse_document(
    source: &str,
    text: &str,
    document: usize,
    mut yaml: serde_yaml_ng::Value,
) -> Result<(Object, serde_json::Value), ManifestError> {
    let invalid = |object: Option<String>, mut errors: ValidationErrors| {
        for e in &mut errors.errors {
            e.line = locate::line_of(text, document, &e.field);
        }
        ManifestError::Invalid {
            file: source.to_string(),
            document,
            object,
            errors,
        }
    };
    yaml.apply_merge().map_err(|e| {
        invalid(
            None,
            ValidationErrors::single("", format!("invalid merge key: {e}")),
        )
    })?;
    let json: serde_json::Value = serde_json::to_value(&yaml).map_err(|e| {
        invalid(
            None,
            ValidationErrors::single("", format!("cannot be represented as JSON: {e}")),
        )
    })?;
    let described = describe(&json);
    let mut object = Object::from_json(&json).map_err(|e| invalid(described.clone(), e))?;
    object.set_defaults();
    object
        .validate()
        .map_err(|e| invalid(Some(object.describe()), e))?;
    Ok((object, json))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Kind;

    const WEB: &str = include_str!("../../../examples/web.yaml");

    #[test]
    fn example_manifest_parses() {
        let objs = parse_manifests("web.yaml", WEB).unwrap();
        let keys: Vec<String> = objs.iter().map(Object::key).collect();
        assert_eq!(
            keys,
            [
                "Deployment/default/web",
                "Service/default/web",
                "Pod/default/client"
            ]
        );
        let Object::Deployment(d) = &objs[0] else {
            panic!("not a deployment")
        };
        assert_eq!(d.spec.replicas, 3);
        let c = &d.spec.template.spec.containers[0];
        assert_eq!(c.resources.requests["cpu"].as_millis(), 100);
        assert_eq!(c.resources.requests["memory"].as_bytes(), 32 << 20);
    }

    #[test]
    fn replicas_error_format() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c, image: busybox}]}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: three\n";
        let e = parse_manifests("web.yaml", text).unwrap_err();
        assert_eq!(
            e.to_string(),
            "web.yaml: document 2 (Deployment web): spec.replicas: expected a non-negative integer, got \"three\" (line 11)\n\
             web.yaml: document 2 (Deployment web): spec.selector: required field is missing (line 10)"
        );
        assert_eq!(e.first().unwrap().document(), 2);
    }

    #[test]
    fn unknown_field_names_the_path() {
        let text = "apiVersion: shoal/v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    imagePullPolicyy: Always\n";
        let e = parse_manifests("pod.yaml", text).unwrap_err().to_string();
        assert!(
            e.starts_with(
                "pod.yaml: document 1 (Pod p): spec.containers[0].imagePullPolicyy: unknown field"
            ),
            "{e}"
        );
        let text = "apiVersion: shoal/v1\nkind: Pod\nmetadata: {name: p, generateName: x}\nspec: {containers: [{name: c, image: i}]}\n";
        let e = parse_manifests("pod.yaml", text).unwrap_err().to_string();
        assert!(
            e.starts_with("pod.yaml: document 1 (Pod p): metadata.generateName: not supported by Shoal (a Kubernetes field)"),
            "{e}"
        );
        let text = "apiVersion: shoal/v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: i}]}\nextra: 1\n";
        let e = parse_manifests("pod.yaml", text).unwrap_err().to_string();
        assert!(
            e.starts_with("pod.yaml: document 1 (Pod p): extra: unknown field"),
            "{e}"
        );
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let text = "apiVersion: v1\nkind: Pod\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: [unclosed\n";
        let e = parse_manifests("bad.yaml", text).unwrap_err();
        let e = e.first().unwrap().clone();
        match &e {
            ManifestError::Syntax { document, line, .. } => {
                assert_eq!(*document, 2);
                assert!(*line >= 7, "line {line}");
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
        assert!(
            e.to_string().starts_with("bad.yaml: document 2: line "),
            "{e}"
        );
        let text = "kind: Pod\n  bad: indent\n";
        let e = parse_manifests("bad.yaml", text).unwrap_err();
        let e = e.first().unwrap().clone();
        assert!(matches!(e, ManifestError::Syntax { line: 2, .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("bad.yaml: document 1: line 2, column "),
            "{e}"
        );
    }

    #[test]
    fn invalid_name_is_reported() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: Web_1}\nspec: {containers: [{name: c, image: busybox}]}\n";
        let e = parse_manifests("-", text).unwrap_err().to_string();
        assert!(e.starts_with("-: document 1 (Pod Web_1): metadata.name: \"Web_1\" is not a valid DNS-1123 subdomain"), "{e}");
    }

    #[test]
    fn error_in_second_document_names_it_and_nothing_is_returned() {
        let text = "---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n---\n# just a comment\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: busybox, resources: {requests: {cpu: lots}}}]}\n";
        let e = parse_manifests("m.yaml", text).unwrap_err();
        assert_eq!(e.first().unwrap().document(), 3);
        let s = e.to_string();
        assert!(s.starts_with("m.yaml: document 3 (Pod p): spec.containers[0].resources.requests.cpu: invalid quantity \"lots\""), "{s}");
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: Web}\nspec: {ports: [{port: 80}]}\n";
        let e = parse_manifests("m.yaml", text).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("m.yaml: document 2 (Service Web): metadata.name:"),
            "{e}"
        );
    }

    #[test]
    fn all_validation_errors_are_listed() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {app: -x}}\nspec: {containers: [{name: C, image: busybox}]}\n";
        let s = parse_manifests("m.yaml", text).unwrap_err().to_string();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 2, "{s}");
        assert!(
            lines
                .iter()
                .all(|l| l.starts_with("m.yaml: document 1 (Pod p): ")),
            "{s}"
        );
    }

    #[test]
    fn kubernetes_api_versions_are_accepted() {
        let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: c, image: busybox}]}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: prod}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: node1}\n";
        let objs = parse_manifests("k8s.yaml", text).unwrap();
        assert_eq!(
            objs.iter().map(Object::kind).collect::<Vec<_>>(),
            [Kind::Deployment, Kind::Namespace, Kind::Node]
        );
        assert_eq!(objs[0].namespace(), "default");
        assert_eq!(objs[0].meta().namespace.as_deref(), Some("default"));
        assert_eq!(objs[1].meta().namespace, None);
        let text = "apiVersion: v1\nkind: Deployment\nmetadata: {name: web}\n";
        let e = parse_manifests("k8s.yaml", text).unwrap_err().to_string();
        assert_eq!(
            e,
            "k8s.yaml: document 1 (Deployment web): apiVersion: unsupported apiVersion \"v1\" for Deployment: expected shoal/v1 or apps/v1 (line 1)"
        );
    }

    #[test]
    fn empty_input_and_documents_are_skipped() {
        assert!(parse_manifests("e.yaml", "").unwrap().is_empty());
        assert!(
            parse_manifests("e.yaml", "---\n---\n# c\n")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn duplicates_and_non_mappings_are_rejected() {
        let doc = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n";
        let e = parse_manifests("d.yaml", &format!("{doc}---\n{doc}")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "d.yaml: document 2 (Namespace a): the same object is already defined in document 1"
        );
        let e = parse_manifests("d.yaml", "- a\n- b\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("d.yaml: document 1: expected a mapping"),
            "{e}"
        );
        let e = parse_manifests("d.yaml", "apiVersion: v1\napiVersion: v1\n").unwrap_err();
        assert!(
            matches!(e.first(), Some(ManifestError::Syntax { .. })),
            "{e:?}"
        );
    }

    #[test]
    fn every_document_and_every_field_is_reported() {
        let text = "\
apiVersion: v1
kind: Pod
metadata: {name: a}
spec:
  contaners: [{name: c, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: fine}
spec: {containers: [{name: c, image: busybox}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: three
  paused: maybe
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: c
        image: busybox
        terminationMessagePath: /dev/termination-log
        imagePullPolicyy: Always
";
        let e = parse_manifests("w.yaml", text).unwrap_err();
        assert_eq!(e.errors.len(), 2, "{e}");
        assert_eq!(e.count(), 6, "{e}");
        let shown = e.to_string();
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(
            lines,
            [
                "w.yaml: document 1 (Pod a): spec.contaners: unknown field `contaners`, did you mean `containers`? (line 5)",
                "w.yaml: document 1 (Pod a): spec.containers: required field is missing (line 4)",
                "w.yaml: document 3 (Deployment web): spec.paused: expected a boolean, got \"maybe\" (line 17)",
                "w.yaml: document 3 (Deployment web): spec.replicas: expected a non-negative integer, got \"three\" (line 16)",
                "w.yaml: document 3 (Deployment web): spec.template.spec.containers[0].imagePullPolicyy: unknown field `imagePullPolicyy`, did you mean `imagePullPolicy`? (line 26)",
                "w.yaml: document 3 (Deployment web): spec.template.spec.containers[0].terminationMessagePath: not supported by Shoal (a Kubernetes field) (line 25)",
            ]
        );
    }

    #[test]
    fn kubernetes_kinds_values_and_typos_are_told_apart() {
        let e = parse_manifests(
            "k.yaml",
            "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: db}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("k.yaml: document 1 (ReplicaSet db): kind: \"ReplicaSet\" is not supported by Shoal (a Kubernetes kind; Shoal has Pod, Deployment"),
            "{e}"
        );
        let e = parse_manifests(
            "k.yaml",
            "apiVersion: v1\nkind: Deploymnet\nmetadata: {name: db}\n",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "k.yaml: document 1 (Deploymnet db): kind: unsupported kind \"Deploymnet\", did you mean \"Deployment\"? (line 2)"
        );
        let e = parse_manifests(
            "s.yaml",
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  type: LoadBalancer\n  sessionAffinity: ClientIP\n  ports: [{port: 80}]\n",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "s.yaml: document 1 (Service s): spec.sessionAffinity: not supported by Shoal (a Kubernetes field) (line 6)\n\
             s.yaml: document 1 (Service s): spec.type: \"LoadBalancer\" is not supported by Shoal (a Kubernetes value) (line 5)"
        );
        let e = parse_manifests("x.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: i}]}\nextra: 1\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "x.yaml: document 1 (Pod p): extra: unknown field `extra` (supported fields: metadata, spec, status) (line 5)"
        );
    }

    #[test]
    fn json_manifests_and_merge_keys() {
        let text = r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}"#;
        assert_eq!(parse_manifests("n.json", text).unwrap().len(), 1);
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - &base {name: a, image: busybox}\n  - <<: *base\n    name: b\n";
        let objs = parse_manifests("m.yaml", text).unwrap();
        let Object::Pod(p) = &objs[0] else {
            panic!("not a pod")
        };
        assert_eq!(p.spec.containers[1].image, "busybox");
        assert_eq!(p.spec.containers[1].name, "b");
    }

    #[test]
    fn examples_in_the_manifest_reference_parse() {
        let doc = include_str!("../../../docs/manifests.md");
        let mut parsed = 0;
        for block in doc.split("```yaml\n").skip(1) {
            let block = block.split("```").next().unwrap_or("");
            if block.starts_with("apiVersion:") {
                parse_manifests("docs/manifests.md", block)
                    .unwrap_or_else(|e| panic!("{e}\n{block}"));
                parsed += 1;
            }
        }
        assert_eq!(
            parsed, 14,
            "expected the Pod, init containers, Deployment, DaemonSet, StatefulSet, PersistentVolumeClaim, PersistentVolume, Job, CronJob, Service, Endpoints, ConfigMap, Secret and NetworkPolicy examples"
        );
    }

    /// Mutated copies of the example (fixed seed): never a panic, and every error names
    /// the file and a document that exists.
    #[test]
    fn mutated_manifests_never_panic() {
        let base: Vec<char> = WEB.chars().collect();
        let docs = WEB.matches("\n---").count() + 1;
        let junk: Vec<char> = " :-[]{}#&*!|>'\"%@`,?\n\tx0".chars().collect();
        let mut seed: u64 = 0x5eed_0003;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        for _ in 0..600 {
            let mut text = base.clone();
            for _ in 0..1 + next() % 3 {
                let at = next() % text.len();
                match next() % 3 {
                    0 => {
                        text.remove(at);
                    }
                    1 => text.insert(at, junk[next() % junk.len()]),
                    _ => text[at] = junk[next() % junk.len()],
                }
            }
            let text: String = text.into_iter().collect();
            if let Err(errors) = parse_manifests("web.yaml", &text) {
                assert!(!errors.errors.is_empty());
                for e in &errors.errors {
                    assert_eq!(e.file(), "web.yaml");
                    assert!(
                        (1..=docs + 3).contains(&e.document()),
                        "seed 0x5eed_0003: {e}"
                    );
                    assert!(e.to_string().starts_with("web.yaml: document "), "{e}");
                }
            }
        }
    }
}
