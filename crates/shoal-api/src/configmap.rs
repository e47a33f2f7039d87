//! ConfigMap and Secret: named key/value data that pods read as environment variables
//! or files. A Secret's `stringData` is merged into `data` when it is written
//! ([`Secret::normalize`]); both kinds are limited to [`MAX_DATA_BYTES`] per object.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::kind::Kind;
use crate::meta::ObjectMeta;
use crate::validation::{self as v, ValidationErrors};

/// The most data (keys and decoded values) one ConfigMap or Secret may hold: 1 MiB, as in
/// Kubernetes (the object travels whole through every watch and into every pod's node).
pub const MAX_DATA_BYTES: usize = 1024 * 1024;

/// Key/value configuration for pods.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigMap {
    /// Name (DNS-1123 subdomain), namespace, labels.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// UTF-8 values by key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// Binary values by key, base64-encoded.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub binary_data: BTreeMap<String, String>,
    /// When true, `data` and `binaryData` can no longer change (delete and re-create).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
}

/// The type of a Secret: `Opaque` or one with a required shape.
pub mod secret_type {
    /// Arbitrary keys.
    pub const OPAQUE: &str = "Opaque";
    /// Registry credentials: key `.dockerconfigjson` holds a Docker `config.json`.
    pub const DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";
    /// Key of [`DOCKER_CONFIG_JSON`] secrets.
    pub const DOCKER_CONFIG_JSON_KEY: &str = ".dockerconfigjson";
    /// `username` and/or `password`.
    pub const BASIC_AUTH: &str = "kubernetes.io/basic-auth";
    /// `tls.crt` and `tls.key`.
    pub const TLS: &str = "kubernetes.io/tls";
}

/// Sensitive key/value data for pods, encrypted at rest by the controllers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Secret {
    /// Name (DNS-1123 subdomain), namespace, labels.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// `Opaque` (default), `kubernetes.io/dockerconfigjson`, `kubernetes.io/basic-auth`,
    /// `kubernetes.io/tls`, or any other name.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Values by key, base64-encoded.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// Plain-text values, merged into `data` on write (write-only: never stored).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub string_data: BTreeMap<String, String>,
    /// When true, `data` can no longer change (delete and re-create).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
}

/// Checks a data key: `[-._a-zA-Z0-9]+`, at most 253 characters, not `.` or `..`.
pub fn check_data_key(k: &str) -> Result<(), String> {
    if k.is_empty() || k.len() > 253 {
        return Err(format!(
            "key {k:?}: expected 1 to 253 characters of letters, digits, '-', '_' and '.'"
        ));
    }
    if k == "." || k == ".." {
        return Err(format!("key {k:?}: may not be '.' or '..'"));
    }
    if !k
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "key {k:?}: expected letters, digits, '-', '_' and '.' only"
        ));
    }
    Ok(())
}

/// Decodes a base64 value (standard alphabet, padded) of a `data`/`binaryData` entry.
pub fn decode_value(s: &str) -> Result<Vec<u8>, String> {
    B64.decode(s.trim())
        .map_err(|e| format!("expected base64 (standard alphabet, padded): {e}"))
}

/// Encodes bytes as a `data`/`binaryData` value.
pub fn encode_value(b: &[u8]) -> String {
    B64.encode(b)
}

fn check_total(kind: Kind, total: usize, errs: &mut ValidationErrors) {
    if total > MAX_DATA_BYTES {
        errs.push(
            "data",
            format!(
                "{kind} holds {total} bytes of keys and values, more than the limit of {MAX_DATA_BYTES} bytes (1 MiB): split it, or mount large files another way"
            ),
        );
    }
}

impl ConfigMap {
    /// Checks name, keys, base64 of `binaryData` and the 1 MiB limit.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::new();
        self.metadata
            .validate(Kind::ConfigMap, v::check_dns1123_subdomain, &mut errs);
        let mut total = 0;
        for (k, val) in &self.data {
            if let Err(e) = check_data_key(k) {
                errs.push(format!("data.{k}"), e);
            }
            total += k.len() + val.len();
        }
        for (k, val) in &self.binary_data {
            if let Err(e) = check_data_key(k) {
                errs.push(format!("binaryData.{k}"), e);
            }
            if self.data.contains_key(k) {
                errs.push(
                    format!("binaryData.{k}"),
                    "key also in data: a key may be in data or binaryData, not both",
                );
            }
            match decode_value(val) {
                Ok(b) => total += k.len() + b.len(),
                Err(e) => errs.push(format!("binaryData.{k}"), e),
            }
        }
        check_total(Kind::ConfigMap, total, &mut errs);
        errs.into_result()
    }

    /// The bytes of `key` (from `data` or `binaryData`).
    pub fn value(&self, key: &str) -> Option<Vec<u8>> {
        if let Some(s) = self.data.get(key) {
            return Some(s.as_bytes().to_vec());
        }
        self.binary_data.get(key).and_then(|s| decode_value(s).ok())
    }

    /// Every key with its bytes.
    pub fn entries(&self) -> BTreeMap<String, Vec<u8>> {
        let mut m: BTreeMap<String, Vec<u8>> = self
            .data
            .iter()
            .map(|(k, s)| (k.clone(), s.as_bytes().to_vec()))
            .collect();
        for (k, s) in &self.binary_data {
            if let Ok(b) = decode_value(s) {
                m.entry(k.clone()).or_insert(b);
            }
        }
        m
    }
}

impl Secret {
    /// The type, `Opaque` when unset.
    pub fn secret_type(&self) -> &str {
        self.type_.as_deref().unwrap_or(secret_type::OPAQUE)
    }

    /// Merges `stringData` into `data` (base64-encoding it; `stringData` wins) and
    /// empties `stringData`, as a write does.
    pub fn normalize(&mut self) {
        for (k, s) in std::mem::take(&mut self.string_data) {
            self.data.insert(k, encode_value(s.as_bytes()));
        }
    }

    /// Checks name, keys, base64, the shape of typed secrets and the 1 MiB limit.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::new();
        self.metadata
            .validate(Kind::Secret, v::check_dns1123_subdomain, &mut errs);
        let mut total = 0;
        let mut decoded = BTreeMap::new();
        for (k, val) in &self.data {
            if let Err(e) = check_data_key(k) {
                errs.push(format!("data.{k}"), e);
            }
            match decode_value(val) {
                Ok(b) => {
                    total += k.len() + b.len();
                    decoded.insert(k.as_str(), b);
                }
                // The value is not repeated in the message: it may be the secret itself.
                Err(e) => errs.push(format!("data.{k}"), e),
            }
        }
        for (k, val) in &self.string_data {
            if let Err(e) = check_data_key(k) {
                errs.push(format!("stringData.{k}"), e);
            }
            if !self.data.contains_key(k) {
                total += k.len();
            }
            total += val.len();
            decoded.insert(k.as_str(), val.as_bytes().to_vec());
        }
        check_total(Kind::Secret, total, &mut errs);
        let need = |errs: &mut ValidationErrors, key: &str| {
            if !decoded.contains_key(key) {
                errs.push(
                    format!("data.{key}"),
                    format!("required by type {}", self.secret_type()),
                );
            }
        };
        match self.secret_type() {
            "" => errs.push("type", "expected a type such as Opaque, got \"\""),
            secret_type::DOCKER_CONFIG_JSON => {
                need(&mut errs, secret_type::DOCKER_CONFIG_JSON_KEY);
                if let Some(b) = decoded.get(secret_type::DOCKER_CONFIG_JSON_KEY)
                    && serde_json::from_slice::<serde_json::Value>(b)
                        .map(|j| !j.get("auths").is_some_and(|a| a.is_object()))
                        .unwrap_or(true)
                {
                    errs.push(
                        "data..dockerconfigjson",
                        "expected a Docker config.json: a JSON object with an \"auths\" mapping",
                    );
                }
            }
            secret_type::TLS => {
                need(&mut errs, "tls.crt");
                need(&mut errs, "tls.key");
            }
            secret_type::BASIC_AUTH
                if !decoded.contains_key("username") && !decoded.contains_key("password") =>
            {
                errs.push(
                    "data",
                    "type kubernetes.io/basic-auth needs username or password",
                );
            }
            _ => {}
        }
        errs.into_result()
    }

    /// The decoded bytes of `key`.
    pub fn value(&self, key: &str) -> Option<Vec<u8>> {
        if let Some(s) = self.string_data.get(key) {
            return Some(s.as_bytes().to_vec());
        }
        self.data.get(key).and_then(|s| decode_value(s).ok())
    }

    /// Every key with its decoded bytes.
    pub fn entries(&self) -> BTreeMap<String, Vec<u8>> {
        let mut m: BTreeMap<String, Vec<u8>> = self
            .data
            .iter()
            .filter_map(|(k, s)| decode_value(s).ok().map(|b| (k.clone(), b)))
            .collect();
        for (k, s) in &self.string_data {
            m.insert(k.clone(), s.as_bytes().to_vec());
        }
        m
    }
}

/// What may not change in an immutable ConfigMap or Secret (JSON forms, as stored):
/// `Some(reason)` when `new` changes the data of an `old` that is immutable.
pub fn immutable_violation(old: &serde_json::Value, new: &serde_json::Value) -> Option<String> {
    if old.get("immutable").and_then(|v| v.as_bool()) != Some(true) {
        return None;
    }
    for field in ["data", "binaryData", "type"] {
        if old.get(field) != new.get(field) {
            return Some(format!(
                "{field} of an immutable object cannot change (delete and re-create it)"
            ));
        }
    }
    if new.get("immutable").and_then(|v| v.as_bool()) != Some(true) {
        return Some("immutable cannot be unset once true (delete and re-create it)".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Object;
    use serde_json::json;

    #[test]
    fn configmap_round_trip_and_keys() {
        let o = Object::from_json(&json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "app", "namespace": "default"},
            "data": {"app.conf": "x=1"},
            "binaryData": {"blob": "AAEC"},
            "immutable": true,
        }))
        .unwrap();
        let Object::ConfigMap(cm) = &o else { panic!() };
        assert_eq!(cm.value("blob").unwrap(), vec![0, 1, 2]);
        assert_eq!(cm.value("app.conf").unwrap(), b"x=1");
        o.validate().unwrap();
        let back = Object::from_json(&o.to_json()).unwrap();
        assert_eq!(back, o);
        let bad = ConfigMap {
            metadata: ObjectMeta {
                name: "a".into(),
                ..Default::default()
            },
            data: [("a/b".into(), "x".into())].into(),
            binary_data: [("z".into(), "!!!".into())].into(),
            ..Default::default()
        };
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("data.a/b: key \"a/b\""), "{e}");
        assert!(e.contains("binaryData.z: expected base64"), "{e}");
    }

    #[test]
    fn one_mebibyte_limit_names_the_limit() {
        let mut cm = ConfigMap {
            metadata: ObjectMeta {
                name: "big".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        cm.data.insert("a".into(), "x".repeat(MAX_DATA_BYTES - 1));
        cm.validate().unwrap();
        cm.data.insert("b".into(), "y".repeat(10));
        let e = cm.validate().unwrap_err().to_string();
        assert!(
            e.contains("more than the limit of 1048576 bytes (1 MiB)"),
            "{e}"
        );
        let mut s = Secret {
            metadata: cm.metadata.clone(),
            ..Default::default()
        };
        s.string_data.insert("k".into(), "z".repeat(MAX_DATA_BYTES));
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("Secret holds"), "{e}");
    }

    #[test]
    fn secret_string_data_merges_and_types_are_checked() {
        let mut s = Secret {
            metadata: ObjectMeta {
                name: "db".into(),
                ..Default::default()
            },
            data: [("user".into(), encode_value(b"old"))].into(),
            string_data: [
                ("user".into(), "admin".into()),
                ("pw".into(), "hunter2".into()),
            ]
            .into(),
            ..Default::default()
        };
        s.validate().unwrap();
        s.normalize();
        assert!(s.string_data.is_empty());
        assert_eq!(s.value("user").unwrap(), b"admin");
        assert_eq!(s.data["pw"], "aHVudGVyMg==");
        assert_eq!(s.secret_type(), "Opaque");

        s.type_ = Some(secret_type::DOCKER_CONFIG_JSON.into());
        let e = s.validate().unwrap_err().to_string();
        assert!(
            e.contains("data..dockerconfigjson: required by type"),
            "{e}"
        );
        s.data.insert(
            ".dockerconfigjson".into(),
            encode_value(br#"{"auths":{"r.example":{"auth":"dTpw"}}}"#),
        );
        s.validate().unwrap();
        s.data
            .insert(".dockerconfigjson".into(), encode_value(b"not json"));
        assert!(s.validate().is_err());

        s.data.insert("bad".into(), "%%%secret%%%".into());
        let e = s.validate().unwrap_err().to_string();
        assert!(
            !e.contains("secret%%%"),
            "the value must not be echoed: {e}"
        );
    }

    #[test]
    fn immutable_objects_keep_their_data() {
        let old = json!({"data": {"a": "1"}, "immutable": true});
        assert!(
            immutable_violation(&old, &json!({"data": {"a": "1"}, "immutable": true})).is_none()
        );
        assert!(
            immutable_violation(&old, &json!({"data": {"a": "2"}, "immutable": true})).is_some()
        );
        assert!(immutable_violation(&old, &json!({"data": {"a": "1"}})).is_some());
        let mutable = json!({"data": {"a": "1"}});
        assert!(immutable_violation(&mutable, &json!({"data": {"a": "2"}})).is_none());
    }

    #[test]
    fn aliases() {
        assert_eq!("cm".parse::<Kind>().unwrap(), Kind::ConfigMap);
        assert_eq!("configmaps".parse::<Kind>().unwrap(), Kind::ConfigMap);
        assert_eq!("secret".parse::<Kind>().unwrap(), Kind::Secret);
        assert_eq!("Secrets".parse::<Kind>().unwrap(), Kind::Secret);
    }
}
