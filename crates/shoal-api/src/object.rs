//! `Object`: any stored object, its key, and its JSON form (always with `apiVersion`
//! and `kind`).

use crate::configmap::{ConfigMap, Secret};
use crate::cronjob::CronJob;
use crate::daemonset::DaemonSet;
use crate::deployment::Deployment;
use crate::endpoints::Endpoints;
use crate::event::Event;
use crate::job::Job;
use crate::kind::{API_VERSION, Kind};
use crate::kubernetes;
use crate::meta::ObjectMeta;
use crate::namespace::Namespace;
use crate::networkpolicy::NetworkPolicy;
use crate::node::Node;
use crate::persistentvolume::PersistentVolume;
use crate::persistentvolumeclaim::PersistentVolumeClaim;
use crate::pod::Pod;
use crate::service::Service;
use crate::statefulset::StatefulSet;
use crate::validation::{FieldError, ValidationErrors};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The namespace objects get when none is given.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Any object of a supported kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    /// A pod.
    Pod(Pod),
    /// A deployment.
    Deployment(Deployment),
    /// A daemon set.
    DaemonSet(DaemonSet),
    /// A stateful set.
    StatefulSet(StatefulSet),
    /// A service.
    Service(Service),
    /// A node.
    Node(Node),
    /// An event.
    Event(Event),
    /// A namespace.
    Namespace(Namespace),
    /// The endpoints of a service.
    Endpoints(Endpoints),
    /// A job.
    Job(Job),
    /// A cron job.
    CronJob(CronJob),
    /// A config map.
    ConfigMap(ConfigMap),
    /// A secret.
    Secret(Secret),
    /// A persistent volume claim.
    PersistentVolumeClaim(PersistentVolumeClaim),
    /// A persistent volume.
    PersistentVolume(PersistentVolume),
    /// A network policy.
    NetworkPolicy(NetworkPolicy),
}

/// A typed object of one kind (`Pod`, `Deployment`, ...), convertible to and from [`Object`].
pub trait Resource:
    Clone + Serialize + DeserializeOwned + Into<Object> + TryFrom<Object, Error = Object>
{
    /// The kind.
    const KIND: Kind;
    /// The metadata.
    fn metadata(&self) -> &ObjectMeta;
    /// The metadata, mutable.
    fn metadata_mut(&mut self) -> &mut ObjectMeta;
}

macro_rules! each_kind {
    ($($kind:ident),*) => {
        $(
            impl From<$kind> for Object {
                fn from(v: $kind) -> Object {
                    Object::$kind(v)
                }
            }

            impl TryFrom<Object> for $kind {
                type Error = Object;

                /// Unwraps the object, or gives it back when it is of another kind.
                fn try_from(o: Object) -> Result<$kind, Object> {
                    match o {
                        Object::$kind(v) => Ok(v),
                        other => Err(other),
                    }
                }
            }

            impl Resource for $kind {
                const KIND: Kind = Kind::$kind;

                fn metadata(&self) -> &ObjectMeta {
                    &self.metadata
                }

                fn metadata_mut(&mut self) -> &mut ObjectMeta {
                    &mut self.metadata
                }
            }
        )*

        impl Object {
            /// The kind.
            pub fn kind(&self) -> Kind {
                match self {
                    $(Object::$kind(_) => Kind::$kind,)*
                }
            }

            /// The metadata.
            pub fn meta(&self) -> &ObjectMeta {
                match self {
                    $(Object::$kind(v) => &v.metadata,)*
                }
            }

            /// The metadata, mutable.
            pub fn meta_mut(&mut self) -> &mut ObjectMeta {
                match self {
                    $(Object::$kind(v) => &mut v.metadata,)*
                }
            }

            /// Checks the object with the rules of its kind.
            pub fn validate(&self) -> Result<(), ValidationErrors> {
                match self {
                    $(Object::$kind(v) => v.validate(),)*
                }
            }

            fn decode(kind: Kind, value: serde_json::Value) -> Result<Object, ValidationErrors> {
                Ok(match kind {
                    $(Kind::$kind => Object::$kind(decode_as(kind, value)?),)*
                })
            }

            fn inner_to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
                match self {
                    $(Object::$kind(v) => serde_json::to_value(v),)*
                }
            }
        }
    };
}

each_kind!(
    Pod,
    Deployment,
    DaemonSet,
    StatefulSet,
    Service,
    Node,
    Event,
    Namespace,
    Endpoints,
    Job,
    CronJob,
    ConfigMap,
    Secret,
    PersistentVolumeClaim,
    PersistentVolume,
    NetworkPolicy
);

/// The store key `Kind/namespace/name`; the namespace is empty for cluster-scoped
/// kinds (`Node//node1`).
pub fn key_for(kind: Kind, namespace: &str, name: &str) -> String {
    let ns = if kind.namespaced() { namespace } else { "" };
    format!("{kind}/{ns}/{name}")
}

/// Reads `apiVersion` and `kind` of a JSON object and checks they are supported.
pub(crate) fn type_of(value: &serde_json::Value) -> Result<Kind, ValidationErrors> {
    let Some(map) = value.as_object() else {
        return Err(ValidationErrors::single(
            "",
            format!(
                "expected a mapping with apiVersion, kind, metadata and spec, got {}",
                describe_json(value)
            ),
        ));
    };
    let kind = match map.get("kind") {
        None => {
            return Err(ValidationErrors::single(
                "kind",
                "required field is missing",
            ));
        }
        Some(serde_json::Value::String(s)) => Kind::from_manifest_name(s).ok_or_else(|| {
            let kinds = Kind::ALL.map(Kind::as_str);
            let message = if kubernetes::is_kubernetes_kind(s) {
                format!(
                    "{s:?} is not supported by Shoal (a Kubernetes kind; Shoal has {})",
                    kinds.join(", ")
                )
            } else if let Some(near) = kubernetes::suggest(s, kinds) {
                format!("unsupported kind {s:?}, did you mean {near:?}?")
            } else {
                format!(
                    "unsupported kind {s:?}: expected one of {}",
                    kinds.join(", ")
                )
            };
            ValidationErrors::single("kind", message)
        })?,
        Some(other) => {
            return Err(ValidationErrors::single(
                "kind",
                format!("expected a string, got {}", describe_json(other)),
            ));
        }
    };
    match map.get("apiVersion") {
        None => Err(ValidationErrors::single(
            "apiVersion",
            format!(
                "required field is missing: use {API_VERSION} or {}",
                kind.kubernetes_api_version()
            ),
        )),
        Some(serde_json::Value::String(v)) if kind.accepts_api_version(v) => Ok(kind),
        Some(v) => Err(ValidationErrors::single(
            "apiVersion",
            format!(
                "unsupported apiVersion {} for {kind}: expected {API_VERSION} or {}",
                describe_json(v),
                kind.kubernetes_api_version()
            ),
        )),
    }
}

fn describe_json(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "null".into(),
        serde_json::Value::Array(_) => "a list".into(),
        serde_json::Value::Object(_) => "a mapping".into(),
        other => other.to_string(),
    }
}

/// Most problems reported for one document: past this, decoding stops.
const MAX_DECODE_ERRORS: usize = 50;

/// Decodes `value` as `T`, reporting every field that does not fit, not only the first:
/// after each error the offending key is taken out and decoding runs again, until it
/// succeeds, an error cannot be taken out (a missing field), or the key just taken out
/// was required (its absence would only repeat the error).
fn decode_as<T: DeserializeOwned>(
    kind: Kind,
    mut value: serde_json::Value,
) -> Result<T, ValidationErrors> {
    let mut errs = ValidationErrors::new();
    let mut removed: Vec<String> = Vec::new();
    loop {
        let e = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(t) if errs.is_empty() => return Ok(t),
            Ok(_) => return Err(errs),
            Err(e) => e,
        };
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let message = e.inner().to_string();
        let error = humanize_for(Some(kind), &path, &message);
        if removed.contains(&error.field) || errs.errors.iter().any(|x| x.field == error.field) {
            return Err(errs);
        }
        // Where the offending key is: the path, plus the field for an unknown one.
        let mut at: Vec<PathKey> = Vec::new();
        for seg in e.path() {
            match seg {
                serde_path_to_error::Segment::Seq { index } => at.push(PathKey::Index(*index)),
                serde_path_to_error::Segment::Map { key } => at.push(PathKey::Key(key.clone())),
                _ => {
                    at.clear();
                    break;
                }
            }
        }
        let unknown = message
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next());
        if let Some(name) = unknown
            && at.last() != Some(&PathKey::Key(name.to_string()))
        {
            at.push(PathKey::Key(name.to_string()));
        }
        let missing = message.starts_with("missing field `");
        errs.errors.push(error.clone());
        if missing || at.is_empty() || errs.errors.len() >= MAX_DECODE_ERRORS {
            return Err(errs);
        }
        if !remove_at(&mut value, &at) {
            return Err(errs);
        }
        removed.push(error.field);
    }
}

/// One step of a path into a JSON value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PathKey {
    Key(String),
    Index(usize),
}

/// Removes the key (or list element: it becomes null) at `at`; false when there is none.
fn remove_at(value: &mut serde_json::Value, at: &[PathKey]) -> bool {
    let Some((last, parents)) = at.split_last() else {
        return false;
    };
    let mut cur = value;
    for p in parents {
        let next = match (p, cur) {
            (PathKey::Key(k), serde_json::Value::Object(m)) => m.get_mut(k),
            (PathKey::Index(i), serde_json::Value::Array(a)) => a.get_mut(*i),
            _ => None,
        };
        match next {
            Some(n) => cur = n,
            None => return false,
        }
    }
    match (last, cur) {
        (PathKey::Key(k), serde_json::Value::Object(m)) => m.remove(k).is_some(),
        // A list element stays: removing it would shift the indices of the later ones.
        _ => false,
    }
}

fn strip_ticks(s: &str) -> String {
    s.replace('`', "")
}

fn expected_phrase(e: &str) -> String {
    match e {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a non-negative integer".into(),
        "i32" => "a 32-bit integer".into(),
        "i8" | "i16" | "i64" | "isize" => "an integer".into(),
        "f32" | "f64" => "a number".into(),
        "a sequence" => "a list".into(),
        "a map" => "a mapping".into(),
        "a formatted date and time string or a unix timestamp"
        | "a formatted date and time string" => {
            "an RFC 3339 timestamp such as \"2025-01-31T12:00:00Z\"".into()
        }
        e if e.starts_with("struct ") => "a mapping".into(),
        e if e.starts_with("enum ") => "a string".into(),
        e if e.starts_with("one of ") || e.starts_with('`') => {
            let list = strip_ticks(e);
            if list.starts_with("one of ") {
                list
            } else {
                format!("one of {list}").replace(" or ", ", ")
            }
        }
        e => e.to_string(),
    }
}

fn got_phrase(u: &str) -> String {
    if let Some(s) = u.strip_prefix("string ") {
        return s.to_string();
    }
    for prefix in ["integer ", "floating point ", "boolean ", "character "] {
        if let Some(s) = u.strip_prefix(prefix) {
            return strip_ticks(s);
        }
    }
    match u {
        "map" => "a mapping".into(),
        "sequence" => "a list".into(),
        "unit value" | "null" | "Option value" => "null".into(),
        u => strip_ticks(u),
    }
}

/// Turns serde's wording into ours: `expected a non-negative integer, got "three"`,
/// `spec.x: unknown field`, `spec.y: required field is missing`.
#[cfg(test)]
pub(crate) fn humanize(path: &str, message: &str) -> FieldError {
    humanize_for(None, path, message)
}

/// [`humanize`] for an object of `kind`: unknown fields and values that Kubernetes has
/// in such objects are "not supported by Shoal"; other unknown fields get the closest
/// supported one as a "did you mean".
pub(crate) fn humanize_for(kind: Option<Kind>, path: &str, message: &str) -> FieldError {
    let child = |name: &str| {
        let last = path.rsplit('.').next().unwrap_or("");
        if path.is_empty() {
            name.to_string()
        } else if last == name {
            path.to_string()
        } else {
            format!("{path}.{name}")
        }
    };
    let between_ticks = |s: &str| s.split('`').nth(1).unwrap_or("").to_string();
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let name = between_ticks(message);
        let supported: Vec<String> = rest
            .split_once(", expected ")
            .map(|(_, list)| {
                strip_ticks(list.trim_start_matches("one of "))
                    .replace(" or ", ", ")
                    .split(", ")
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let field = child(&name);
        let message = if kind.is_some_and(|k| kubernetes::is_kubernetes_field(k, &field)) {
            "not supported by Shoal (a Kubernetes field)".to_string()
        } else if let Some(near) = kubernetes::suggest(&name, supported.iter().map(String::as_str))
        {
            format!("unknown field `{name}`, did you mean `{near}`?")
        } else if supported.is_empty() {
            format!("unknown field `{name}`")
        } else {
            format!(
                "unknown field `{name}` (supported fields: {})",
                supported.join(", ")
            )
        };
        return FieldError {
            line: None,
            field,
            message,
        };
    }
    if message.starts_with("missing field `") {
        return FieldError {
            line: None,
            field: child(&between_ticks(message)),
            message: "required field is missing".into(),
        };
    }
    if message.starts_with("unknown variant `") {
        let value = between_ticks(message);
        if kind.is_some_and(|k| kubernetes::is_kubernetes_value(k, path, &value)) {
            return FieldError {
                line: None,
                field: path.to_string(),
                message: format!("{value:?} is not supported by Shoal (a Kubernetes value)"),
            };
        }
        let expected = message
            .split_once(", expected ")
            .map(|(_, e)| expected_phrase(e))
            .unwrap_or_else(|| "a supported value".into());
        return FieldError {
            line: None,
            field: path.to_string(),
            message: format!("expected {expected}, got {value:?}"),
        };
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some((got, expected)) = rest.rsplit_once(", expected ")
        {
            return FieldError {
                line: None,
                field: path.to_string(),
                message: format!(
                    "expected {}, got {}",
                    expected_phrase(expected),
                    got_phrase(got)
                ),
            };
        }
    }
    if let Some(rest) = message.strip_prefix("invalid length ")
        && let Some((n, expected)) = rest.split_once(", expected ")
    {
        return FieldError {
            line: None,
            field: path.to_string(),
            message: format!("expected {}, got {n} elements", expected_phrase(expected)),
        };
    }
    if message.starts_with("input ")
        || message.starts_with("premature end of input")
        || message.starts_with("trailing input")
    {
        return FieldError {
            line: None,
            field: path.to_string(),
            message: format!(
                "expected an RFC 3339 timestamp such as \"2025-01-31T12:00:00Z\" ({message})"
            ),
        };
    }
    FieldError {
        line: None,
        field: path.to_string(),
        message: message.to_string(),
    }
}

#[derive(Serialize)]
struct Typed<'a, T> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: Kind,
    #[serde(flatten)]
    object: &'a T,
}

impl Object {
    /// The object's name.
    pub fn name(&self) -> &str {
        &self.meta().name
    }

    /// The namespace: `""` for cluster-scoped kinds, `default` when unset.
    pub fn namespace(&self) -> &str {
        if self.kind().namespaced() {
            self.meta()
                .namespace
                .as_deref()
                .unwrap_or(DEFAULT_NAMESPACE)
        } else {
            ""
        }
    }

    /// The store key `Kind/namespace/name` (see [`key_for`]).
    pub fn key(&self) -> String {
        key_for(self.kind(), self.namespace(), self.name())
    }

    /// "Kind name" for messages (`Deployment web`).
    pub fn describe(&self) -> String {
        format!("{} {}", self.kind(), self.name())
    }

    /// Fills in defaults a manifest may omit: `metadata.namespace` (`default`) for
    /// namespaced kinds, a Service's `targetPort`; merges a Secret's `stringData` into `data`.
    pub fn set_defaults(&mut self) {
        if self.kind().namespaced() && self.meta().namespace.is_none() {
            self.meta_mut().namespace = Some(DEFAULT_NAMESPACE.to_string());
        }
        if let Object::Service(s) = self {
            s.set_defaults();
        }
        if let Object::Secret(s) = self {
            s.normalize();
        }
    }

    /// The JSON form, with `apiVersion: shoal/v1` and `kind`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut value = match self.inner_to_value() {
            Ok(serde_json::Value::Object(m)) => m,
            // Serializing these types cannot fail: every map key is a string.
            _ => serde_json::Map::new(),
        };
        value.insert("apiVersion".into(), API_VERSION.into());
        value.insert("kind".into(), self.kind().as_str().into());
        serde_json::Value::Object(value)
    }

    /// The JSON form as compact text.
    pub fn to_json_string(&self) -> String {
        self.to_json().to_string()
    }

    /// Decodes the JSON form (as stored by the server: with status and server-set
    /// metadata). `apiVersion` may be `shoal/v1` or the Kubernetes one. Unknown fields
    /// are errors. Does not validate or apply defaults.
    pub fn from_json(value: &serde_json::Value) -> Result<Object, ValidationErrors> {
        let kind = type_of(value)?;
        let mut value = value.clone();
        if let Some(m) = value.as_object_mut() {
            m.remove("apiVersion");
            m.remove("kind");
        }
        Object::decode(kind, value)
    }

    /// Decodes JSON text (see [`Object::from_json`]).
    pub fn from_json_str(text: &str) -> Result<Object, ValidationErrors> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| ValidationErrors::single("", format!("invalid JSON: {e}")))?;
        Object::from_json(&value)
    }

    /// The YAML form (fields in declaration order, `apiVersion` and `kind` first).
    pub fn to_yaml_string(&self) -> String {
        let result = match self {
            Object::Pod(v) => typed_yaml(Kind::Pod, v),
            Object::Deployment(v) => typed_yaml(Kind::Deployment, v),
            Object::DaemonSet(v) => typed_yaml(Kind::DaemonSet, v),
            Object::StatefulSet(v) => typed_yaml(Kind::StatefulSet, v),
            Object::PersistentVolumeClaim(v) => typed_yaml(Kind::PersistentVolumeClaim, v),
            Object::PersistentVolume(v) => typed_yaml(Kind::PersistentVolume, v),
            Object::Service(v) => typed_yaml(Kind::Service, v),
            Object::Node(v) => typed_yaml(Kind::Node, v),
            Object::Event(v) => typed_yaml(Kind::Event, v),
            Object::Namespace(v) => typed_yaml(Kind::Namespace, v),
            Object::Endpoints(v) => typed_yaml(Kind::Endpoints, v),
            Object::Job(v) => typed_yaml(Kind::Job, v),
            Object::CronJob(v) => typed_yaml(Kind::CronJob, v),
            Object::ConfigMap(v) => typed_yaml(Kind::ConfigMap, v),
            Object::Secret(v) => typed_yaml(Kind::Secret, v),
            Object::NetworkPolicy(v) => typed_yaml(Kind::NetworkPolicy, v),
        };
        // Serializing these types cannot fail: every map key is a string.
        result.unwrap_or_else(|e| format!("# cannot render {} as YAML: {e}\n", self.key()))
    }
}

fn typed_yaml<T: Serialize>(kind: Kind, object: &T) -> Result<String, serde_yaml_ng::Error> {
    serde_yaml_ng::to_string(&Typed {
        api_version: API_VERSION,
        kind,
        object,
    })
}

impl Serialize for Object {
    /// Serializes the JSON form (with `apiVersion` and `kind`).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Object {
    /// Deserializes the JSON form (see [`Object::from_json`]).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Object, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        Object::from_json(&value).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys() {
        assert_eq!(key_for(Kind::Node, "", "node1"), "Node//node1");
        assert_eq!(key_for(Kind::Node, "default", "node1"), "Node//node1");
        assert_eq!(key_for(Kind::Pod, "default", "web-1"), "Pod/default/web-1");
        let o = Object::from_json(
            &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}),
        )
        .unwrap();
        assert_eq!(o.key(), "Node//n1");
        assert_eq!(o.namespace(), "");
    }

    #[test]
    fn humanized_messages() {
        let e = humanize(
            "spec.replicas",
            "invalid type: string \"three\", expected a non-negative integer",
        );
        assert_eq!(
            e.to_string(),
            "spec.replicas: expected a non-negative integer, got \"three\""
        );
        let e = humanize("spec.x", "invalid value: integer `-1`, expected u32");
        assert_eq!(
            e.to_string(),
            "spec.x: expected a non-negative integer, got -1"
        );
        let e = humanize("spec", "invalid type: unit value, expected struct PodSpec");
        assert_eq!(e.to_string(), "spec: expected a mapping, got null");
        let e = humanize(
            "spec.restartPolicy",
            "unknown variant `Sometimes`, expected one of `Always`, `OnFailure`, `Never`",
        );
        assert_eq!(
            e.to_string(),
            "spec.restartPolicy: expected one of Always, OnFailure, Never, got \"Sometimes\""
        );
        let e = humanize(
            "spec.strategy.type",
            "unknown variant `Blue`, expected `RollingUpdate` or `Recreate`",
        );
        assert_eq!(
            e.to_string(),
            "spec.strategy.type: expected one of RollingUpdate, Recreate, got \"Blue\""
        );
        let e = humanize("spec.containers[0]", "missing field `image`");
        assert_eq!(
            e.to_string(),
            "spec.containers[0].image: required field is missing"
        );
        let e = humanize("", "missing field `spec`");
        assert_eq!(e.to_string(), "spec: required field is missing");
    }

    #[test]
    fn type_errors() {
        let e =
            Object::from_json(&json!({"apiVersion": "v1", "metadata": {"name": "x"}})).unwrap_err();
        assert_eq!(e.to_string(), "kind: required field is missing");
        let e =
            Object::from_json(&json!({"apiVersion": "apps/v1", "kind": "ReplicaSet"})).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("kind: \"ReplicaSet\" is not supported by Shoal (a Kubernetes kind"),
            "{e}"
        );
        let e = Object::from_json(&json!({"apiVersion": "apps/v1", "kind": "Pod"})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "apiVersion: unsupported apiVersion \"apps/v1\" for Pod: expected shoal/v1 or v1"
        );
        let e = Object::from_json(&json!({"kind": "Deployment"})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "apiVersion: required field is missing: use shoal/v1 or apps/v1"
        );
        let e = Object::from_json(&json!([1])).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("expected a mapping with apiVersion"),
            "{e}"
        );
    }

    #[test]
    fn resource_trait_conversions() {
        let o = Object::from_json(
            &json!({"apiVersion": "shoal/v1", "kind": "Namespace", "metadata": {"name": "prod"}}),
        )
        .unwrap();
        let ns: Namespace = o.clone().try_into().unwrap();
        assert_eq!(ns.metadata().name, "prod");
        assert_eq!(<Namespace as Resource>::KIND, Kind::Namespace);
        let back: Result<Pod, Object> = o.clone().try_into();
        assert_eq!(back.unwrap_err(), o);
        assert_eq!(Object::from(ns), o);
    }

    fn round_trip(value: serde_json::Value) -> Object {
        let o = Object::from_json(&value).unwrap_or_else(|e| panic!("{e}"));
        o.validate().unwrap_or_else(|e| panic!("{}: {e}", o.key()));
        assert_eq!(
            o.to_json(),
            value,
            "to_json(from_json(v)) != v for {}",
            o.key()
        );
        assert_eq!(Object::from_json(&o.to_json()).unwrap(), o);
        assert_eq!(Object::from_json_str(&o.to_json_string()).unwrap(), o);
        let yaml = o.to_yaml_string();
        assert!(yaml.starts_with("apiVersion: shoal/v1\nkind: "), "{yaml}");
        let parsed =
            crate::parse_manifests("rt.yaml", &yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert_eq!(parsed, vec![o.clone()]);
        let via_serde: Object = serde_json::from_str(&serde_json::to_string(&o).unwrap()).unwrap();
        assert_eq!(via_serde, o);
        o
    }

    fn meta(ns: Option<&str>) -> serde_json::Value {
        let mut m = json!({
            "name": "x1",
            "labels": {"app": "web"},
            "annotations": {"example.com/note": "hi"},
            "uid": "5f0c2b1e-0000-4000-8000-000000000001",
            "resourceVersion": "42",
            "generation": 3,
            "creationTimestamp": "2025-01-31T12:00:00Z",
            "deletionTimestamp": "2025-01-31T12:05:00Z",
            "ownerReferences": [{"apiVersion": "shoal/v1", "kind": "Deployment", "name": "web",
                                 "uid": "u-1", "controller": true, "blockOwnerDeletion": true}]
        });
        if let Some(ns) = ns {
            m["namespace"] = json!(ns);
        }
        m
    }

    #[test]
    fn round_trip_pod() {
        let o = round_trip(json!({
            "apiVersion": "shoal/v1", "kind": "Pod", "metadata": meta(Some("default")),
            "spec": {
                "containers": [{
                    "name": "app", "image": "busybox:latest", "imagePullPolicy": "IfNotPresent",
                    "command": ["sh", "-c"], "args": ["sleep 1"],
                    "env": [{"name": "A", "value": "1"}], "workingDir": "/tmp",
                    "ports": [{"name": "http", "containerPort": 8080, "hostPort": 18080, "protocol": "TCP"},
                              {"containerPort": 53, "protocol": "UDP"}],
                    "resources": {"requests": {"cpu": "100m", "memory": "32Mi", "pids": "100"},
                                  "limits": {"cpu": "1", "memory": "64Mi"}},
                    "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": true},
                                     {"name": "scratch", "mountPath": "/scratch"}],
                    "livenessProbe": {"exec": {"command": ["true"]}, "initialDelaySeconds": 1,
                                      "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 4, "successThreshold": 1},
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "initialDelaySeconds": 0,
                                       "periodSeconds": 10, "timeoutSeconds": 1, "failureThreshold": 3, "successThreshold": 2},
                    "securityContext": {"runAsUser": 1000, "runAsGroup": 1000}
                }, {
                    "name": "side", "image": "busybox",
                    "livenessProbe": {"tcpSocket": {"port": 8080}, "initialDelaySeconds": 0,
                                      "periodSeconds": 10, "timeoutSeconds": 1, "failureThreshold": 3, "successThreshold": 1}
                }],
                "volumes": [{"name": "data", "hostPath": {"path": "/srv", "readOnly": true}},
                            {"name": "scratch", "emptyDir": {}}],
                "nodeSelector": {"disk": "ssd"},
                "nodeName": "node1",
                "restartPolicy": "OnFailure",
                "terminationGracePeriodSeconds": 10,
                "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"},
                                {"operator": "Exists"}],
                "hostname": "web"
            },
            "status": {
                "phase": "Running", "nodeName": "node1", "podIP": "10.244.1.5", "hostIP": "10.0.0.1",
                "conditions": [{"type": "Ready", "status": "True", "reason": "Ok", "message": "fine",
                                "lastTransitionTime": "2025-01-31T12:00:01Z"}],
                "containerStatuses": [{
                    "name": "app", "ready": true, "restartCount": 2, "image": "busybox:latest", "containerID": "c-1",
                    "state": {"running": {"startedAt": "2025-01-31T12:00:02Z"}},
                    "lastState": {"terminated": {"exitCode": 137, "signal": 9, "reason": "OOMKilled", "message": "out of memory",
                                                 "startedAt": "2025-01-31T12:00:00Z", "finishedAt": "2025-01-31T12:00:01Z"}}
                }, {
                    "name": "side", "ready": false, "restartCount": 0, "image": "busybox",
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}}
                }],
                "message": "m", "reason": "r", "startTime": "2025-01-31T12:00:00Z"
            }
        }));
        let Object::Pod(p) = o else {
            panic!("not a pod")
        };
        assert_eq!(p.spec.resource_requests().cpu_millis, 100);
        assert_eq!(p.spec.host_ports(), vec![(18080, crate::Protocol::Tcp)]);
        assert!(p.is_ready());
    }

    #[test]
    fn round_trip_deployment() {
        round_trip(json!({
            "apiVersion": "shoal/v1", "kind": "Deployment", "metadata": meta(Some("prod")),
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"},
                             "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]},
                                                  {"key": "canary", "operator": "DoesNotExist"}]},
                "template": {"metadata": {"labels": {"app": "web"}, "annotations": {"a": "b"}},
                             "spec": {"containers": [{"name": "app", "image": "busybox"}],
                                      "restartPolicy": "Always", "terminationGracePeriodSeconds": 30}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "25%"}},
                "revisionHistoryLimit": 5,
                "paused": true
            },
            "status": {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2,
                       "observedGeneration": 3,
                       "conditions": [{"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"}]}
        }));
    }

    #[test]
    fn round_trip_service() {
        round_trip(json!({
            "apiVersion": "shoal/v1", "kind": "Service", "metadata": meta(Some("default")),
            "spec": {"type": "NodePort", "selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP", "nodePort": 30080},
                               {"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"}],
                     "clusterIP": "10.96.0.10"}
        }));
    }

    #[test]
    fn round_trip_node() {
        let mut m = meta(None);
        m.as_object_mut().unwrap().remove("ownerReferences");
        round_trip(json!({
            "apiVersion": "shoal/v1", "kind": "Node", "metadata": m,
            "spec": {"podCIDR": "10.244.1.0/24", "unschedulable": true,
                     "taints": [{"key": "dedicated", "value": "db", "effect": "NoExecute"}]},
            "status": {
                "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110", "pids": "4096"},
                "allocatable": {"cpu": "1900m", "memory": "3900Mi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": "2025-01-31T12:00:00Z",
                                "lastTransitionTime": "2025-01-31T11:00:00Z"}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "Hostname", "address": "node1"}],
                "nodeInfo": {"kernelVersion": "6.1.0", "osImage": "Debian 12", "operatingSystem": "linux",
                             "architecture": "amd64", "agentVersion": "0.1.0", "containerRuntimeVersion": "shoal 0.1.0"},
                "wireguard": {"publicKey": "aGVsbG8=", "endpoint": "10.0.0.1:51820"},
                "heartbeatTime": "2025-01-31T12:00:00Z"
            }
        }));
    }

    #[test]
    fn round_trip_event_namespace_endpoints() {
        round_trip(json!({
            "apiVersion": "shoal/v1", "kind": "Event", "metadata": meta(Some("default")),
            "involvedObject": {"kind": "Pod", "namespace": "default", "name": "web-1", "uid": "u-2"},
            "reason": "OOMKilled", "message": "container app was killed", "type": "Warning", "count": 2,
            "firstTimestamp": "2025-01-31T12:00:00Z", "lastTimestamp": "2025-01-31T12:01:00Z",
            "source": {"component": "agent", "host": "node1"}
        }));
        let mut m = meta(None);
        m.as_object_mut().unwrap().remove("ownerReferences");
        round_trip(json!({
            "apiVersion": "shoal/v1", "kind": "Namespace", "metadata": m, "status": {"phase": "Terminating"}
        }));
        let o = round_trip(json!({
            "apiVersion": "shoal/v1", "kind": "Endpoints", "metadata": meta(Some("default")),
            "subsets": [{"addresses": [{"ip": "10.244.1.5", "nodeName": "node1",
                                        "targetRef": {"kind": "Pod", "namespace": "default", "name": "web-1"}}],
                         "notReadyAddresses": [{"ip": "10.244.2.7"}],
                         "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}]
        }));
        let Object::Endpoints(e) = o else {
            panic!("not endpoints")
        };
        assert_eq!(e.ready_addresses().count(), 1);
    }
}
