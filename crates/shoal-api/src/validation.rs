//! Field validation: Kubernetes' name and label rules, and the error list they produce.

use std::collections::BTreeMap;
use std::fmt;

/// One problem with one field of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Field path such as `spec.containers[0].name` (empty for the whole document).
    pub field: String,
    /// What is wrong, lower-case, naming the accepted form.
    pub message: String,
    /// 1-based line in the manifest, when the object came from one (set by
    /// [`crate::parse_manifests`]; not part of `Display`).
    pub line: Option<usize>,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// Every problem found in one object; an object is valid when this is empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors {
    /// The problems, in field order.
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.errors.is_empty() {
            return write!(f, "no validation errors");
        }
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                write!(f, "; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl ValidationErrors {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// A list holding one error.
    pub fn single(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut e = Self::new();
        e.push(field, message);
        e
    }

    /// Records a problem with `field`.
    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.into(),
            message: message.into(),
            line: None,
        });
    }

    /// True when no problem was recorded.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// `Ok(())` when empty, else `Err(self)`.
    pub fn into_result(self) -> Result<(), ValidationErrors> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }

    /// Records `Err` of a rule check (such as [`check_dns1123_label`]) against `field`.
    pub fn check(&mut self, field: impl Into<String>, result: Result<(), String>) {
        if let Err(m) = result {
            self.push(field, m);
        }
    }
}

/// Joins a parent path and a child field name: `join("spec", "replicas")` is `spec.replicas`.
pub(crate) fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_string()
    } else {
        format!("{parent}.{child}")
    }
}

/// Path of element `i` of list `parent`: `spec.containers[0]`.
pub(crate) fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

fn is_lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// Maximum length of a DNS-1123 label.
pub const DNS1123_LABEL_MAX_LEN: usize = 63;
/// Maximum length of a DNS-1123 subdomain.
pub const DNS1123_SUBDOMAIN_MAX_LEN: usize = 253;

fn label_shape(s: &str) -> bool {
    let b: Vec<char> = s.chars().collect();
    !b.is_empty()
        && is_lower_alnum(b[0])
        && is_lower_alnum(b[b.len() - 1])
        && b.iter().all(|&c| is_lower_alnum(c) || c == '-')
}

/// Checks a DNS-1123 label: at most 63 characters of `a-z`, `0-9` and `-`, starting
/// and ending with an alphanumeric character (container names, namespaces, port names).
pub fn check_dns1123_label(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > DNS1123_LABEL_MAX_LEN {
        return Err(format!(
            "{s:?} is longer than {DNS1123_LABEL_MAX_LEN} characters"
        ));
    }
    if !label_shape(s) {
        return Err(format!(
            "{s:?} is not a valid DNS-1123 label: use lower-case letters, digits and '-', starting and ending with a letter or digit (e.g. \"my-name\")"
        ));
    }
    Ok(())
}

/// Checks a DNS-1123 subdomain: at most 253 characters, dot-separated DNS-1123 labels
/// (object names such as pods, deployments and nodes).
pub fn check_dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > DNS1123_SUBDOMAIN_MAX_LEN {
        return Err(format!(
            "{s:?} is longer than {DNS1123_SUBDOMAIN_MAX_LEN} characters"
        ));
    }
    if !s.split('.').all(label_shape) {
        return Err(format!(
            "{s:?} is not a valid DNS-1123 subdomain: use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit (e.g. \"web-1\" or \"example.com\")"
        ));
    }
    Ok(())
}

/// Checks a DNS-1035 label: a DNS-1123 label that starts with a letter (service names).
pub fn check_dns1035_label(s: &str) -> Result<(), String> {
    check_dns1123_label(s)?;
    if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(format!(
            "{s:?} is not a valid DNS-1035 label: it must start with a lower-case letter (e.g. \"my-service\")"
        ));
    }
    Ok(())
}

/// Checks an IANA service name (named container ports): at most 15 characters of
/// `a-z`, `0-9` and `-`, at least one letter, no `--`, not starting or ending with `-`.
pub fn check_port_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 15 {
        return Err(format!("port name {s:?} is longer than 15 characters"));
    }
    if !s.chars().all(|c| is_lower_alnum(c) || c == '-') {
        return Err(format!(
            "port name {s:?} may contain only lower-case letters, digits and '-'"
        ));
    }
    if s.starts_with('-') || s.ends_with('-') || s.contains("--") {
        return Err(format!(
            "port name {s:?} must not start or end with '-' or contain \"--\""
        ));
    }
    if !s.chars().any(|c| c.is_ascii_lowercase()) {
        return Err(format!("port name {s:?} must contain at least one letter"));
    }
    Ok(())
}

fn qualified_name_shape(s: &str) -> bool {
    let b: Vec<char> = s.chars().collect();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// Checks a label or annotation key: an optional DNS-1123 subdomain prefix and `/`,
/// then a name of at most 63 characters of `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`.
pub fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            return Err(format!("label key {key:?} has an empty prefix before '/'"));
        }
        if let Err(m) = check_dns1123_subdomain(p) {
            return Err(format!("label key {key:?} has an invalid prefix: {m}"));
        }
    }
    if name.is_empty() {
        return Err(format!("label key {key:?} has an empty name"));
    }
    if name.len() > 63 {
        return Err(format!(
            "label key {key:?}: name part is longer than 63 characters"
        ));
    }
    if !qualified_name_shape(name) {
        return Err(format!(
            "label key {key:?} is invalid: the name part must be alphanumeric, '-', '_' or '.', starting and ending with an alphanumeric character, with an optional DNS subdomain prefix and '/' (e.g. \"app\" or \"example.com/tier\")"
        ));
    }
    Ok(())
}

/// Checks a label value: empty, or at most 63 characters of
/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`.
pub fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    if value.len() > 63 {
        return Err(format!(
            "label value {value:?} is longer than 63 characters"
        ));
    }
    if !qualified_name_shape(value) {
        return Err(format!(
            "label value {value:?} is invalid: use alphanumeric characters, '-', '_' or '.', starting and ending with an alphanumeric character"
        ));
    }
    Ok(())
}

/// Validates every key and value of a label map at `field` (e.g. `metadata.labels`).
pub fn validate_labels(
    labels: &BTreeMap<String, String>,
    field: &str,
    errs: &mut ValidationErrors,
) {
    for (k, v) in labels {
        let path = format!("{field}[{k}]");
        errs.check(&path, check_label_key(k));
        errs.check(&path, check_label_value(v));
    }
}

/// Maximum total size of an object's annotations (keys plus values), as in Kubernetes.
pub const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;

/// Validates annotation keys and the total size at `field` (e.g. `metadata.annotations`).
pub fn validate_annotations(
    annotations: &BTreeMap<String, String>,
    field: &str,
    errs: &mut ValidationErrors,
) {
    let mut total = 0;
    for (k, v) in annotations {
        total += k.len() + v.len();
        errs.check(format!("{field}[{k}]"), check_label_key(k));
    }
    if total > ANNOTATIONS_MAX_BYTES {
        errs.push(
            field,
            format!(
                "annotations total {total} bytes, more than the limit of {ANNOTATIONS_MAX_BYTES}"
            ),
        );
    }
}

/// Checks an environment variable name: `[-._a-zA-Z][-._a-zA-Z0-9]*`.
pub fn check_env_name(s: &str) -> Result<(), String> {
    let ok = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '-' || c == '.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a valid environment variable name: use letters, digits, '_', '-' and '.', not starting with a digit"
        ))
    }
}

/// Checks a TCP/UDP port number in 1..=65535.
pub fn check_port(port: i32) -> Result<(), String> {
    if (1..=65535).contains(&port) {
        Ok(())
    } else {
        Err(format!("must be between 1 and 65535, got {port}"))
    }
}

/// Checks an IPv4 address in dotted form.
pub fn check_ipv4(s: &str) -> Result<(), String> {
    s.parse::<std::net::Ipv4Addr>()
        .map(|_| ())
        .map_err(|_| format!("{s:?} is not an IPv4 address (e.g. \"10.96.0.10\")"))
}

/// Checks an IPv4 CIDR block such as `10.244.1.0/24`.
pub fn check_ipv4_cidr(s: &str) -> Result<(), String> {
    let bad = || format!("{s:?} is not an IPv4 CIDR (e.g. \"10.244.1.0/24\")");
    let (ip, len) = s.split_once('/').ok_or_else(bad)?;
    ip.parse::<std::net::Ipv4Addr>().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    if len > 32 {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns1123_labels() {
        for ok in ["a", "web", "web-1", "0abc", &"a".repeat(63)] {
            assert!(check_dns1123_label(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Web", "-a", "a-", "a_b", "a.b", &"a".repeat(64)] {
            assert!(check_dns1123_label(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dns1123_subdomains() {
        for ok in ["a", "web.example.com", "node-1", "1.2.3"] {
            assert!(check_dns1123_subdomain(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a..b", ".a", "a.", "A", "web_1", &"a".repeat(254)] {
            assert!(check_dns1123_subdomain(bad).is_err(), "{bad}");
        }
        assert!(
            check_dns1123_subdomain(
                &[
                    "a".repeat(63),
                    "b".repeat(63),
                    "c".repeat(63),
                    "d".repeat(61)
                ]
                .join(".")
            )
            .is_ok()
        );
    }

    #[test]
    fn dns1035_and_port_names() {
        assert!(check_dns1035_label("web").is_ok());
        assert!(check_dns1035_label("1web").is_err());
        assert!(check_port_name("http").is_ok());
        assert!(check_port_name("http-alt2").is_ok());
        assert!(check_port_name("8080").is_err());
        assert!(check_port_name("a--b").is_err());
        assert!(check_port_name("abcdefghijklmnop").is_err());
        assert!(check_port_name("Http").is_err());
    }

    #[test]
    fn label_keys_and_values() {
        for ok in [
            "app",
            "App_1",
            "a.b-c",
            "example.com/tier",
            "shoal.io/x.y",
            &"k".repeat(63),
        ] {
            assert!(check_label_key(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/app",
            "example.com/",
            "Example.com/app",
            "-app",
            "app-",
            "a b",
            "a/b/c",
            &"k".repeat(64),
        ] {
            assert!(check_label_key(bad).is_err(), "{bad}");
        }
        for ok in ["", "web", "v1.2_3-x", &"v".repeat(63)] {
            assert!(check_label_value(ok).is_ok(), "{ok}");
        }
        for bad in ["-x", "x-", "a/b", "a b", &"v".repeat(64)] {
            assert!(check_label_value(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn label_map_errors_name_the_key() {
        let mut errs = ValidationErrors::new();
        let labels = BTreeMap::from([("app".to_string(), "web!".to_string())]);
        validate_labels(&labels, "metadata.labels", &mut errs);
        assert_eq!(errs.errors.len(), 1);
        assert_eq!(errs.errors[0].field, "metadata.labels[app]");
        assert!(
            errs.to_string().contains("label value \"web!\" is invalid"),
            "{errs}"
        );
    }

    #[test]
    fn env_ports_and_ips() {
        assert!(check_env_name("PATH").is_ok());
        assert!(check_env_name("_x.y-z").is_ok());
        assert!(check_env_name("1X").is_err());
        assert!(check_env_name("").is_err());
        assert!(check_port(80).is_ok());
        assert!(check_port(0).is_err());
        assert!(check_port(65536).is_err());
        assert!(check_ipv4("10.0.0.1").is_ok());
        assert!(check_ipv4("10.0.0").is_err());
        assert!(check_ipv4_cidr("10.244.1.0/24").is_ok());
        assert!(check_ipv4_cidr("10.244.1.0/33").is_err());
        assert!(check_ipv4_cidr("10.244.1.0").is_err());
    }
}
