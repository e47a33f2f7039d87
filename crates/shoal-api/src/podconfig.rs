//! What a pod takes from ConfigMaps, Secrets and its own fields: environment variables
//! (`env[].valueFrom`, `envFrom`) and volumes (`configMap`, `secret`, `downwardAPI`,
//! `projected`). The types and their validation; the agent resolves them.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::configmap::check_data_key;
use crate::quantity::Quantity;
use crate::validation::{self as v, ValidationErrors, index, join};

/// The pod fields `fieldRef` may name.
pub const FIELD_PATHS: [&str; 6] = [
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "status.podIP",
    "status.hostIP",
];

/// The container resources `resourceFieldRef` may name.
pub const RESOURCE_FIELDS: [&str; 4] = [
    "limits.cpu",
    "limits.memory",
    "requests.cpu",
    "requests.memory",
];

/// Where a variable's value comes from; exactly one field is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVarSource {
    /// A key of a ConfigMap in the pod's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeySelector>,
    /// A key of a Secret in the pod's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeySelector>,
    /// A field of the pod (see [`FIELD_PATHS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_ref: Option<ObjectFieldSelector>,
    /// A resource of a container (see [`RESOURCE_FIELDS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_field_ref: Option<ResourceFieldSelector>,
}

/// One key of a named ConfigMap or Secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeySelector {
    /// The object's name.
    pub name: String,
    /// The key.
    pub key: String,
    /// When true, a missing object or key leaves the variable unset instead of holding the
    /// container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// A field of the pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectFieldSelector {
    /// `metadata.name`, `metadata.namespace`, `status.podIP`, `spec.nodeName`, ...
    pub field_path: String,
    /// Accepted and ignored (`v1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
}

/// A resource limit or request of a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceFieldSelector {
    /// The container (default: the one the variable belongs to; required in volumes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    /// `limits.cpu`, `limits.memory`, `requests.cpu` or `requests.memory`.
    pub resource: String,
    /// The unit the value is given in (default 1: cores, bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub divisor: Option<Quantity>,
}

/// Every key of a ConfigMap or Secret as variables.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvFromSource {
    /// Put before every key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// A ConfigMap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<NameRef>,
    /// A Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<NameRef>,
}

/// A named ConfigMap or Secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NameRef {
    /// The object's name.
    pub name: String,
    /// When true, a missing object is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// A key written to a file of a volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyToPath {
    /// The key.
    pub key: String,
    /// Relative path of the file (no `..`).
    pub path: String,
    /// File mode (0..=0o777), default the volume's `defaultMode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<i32>,
}

/// `configMap:` volume: every key (or `items`) as a file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigMapVolume {
    /// The ConfigMap.
    pub name: String,
    /// Only these keys, at these paths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<KeyToPath>,
    /// Mode of the files (default 0644).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_mode: Option<i32>,
    /// When true, a missing ConfigMap gives an empty directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// `secret:` volume: every key (or `items`) as a file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretVolume {
    /// The Secret.
    pub secret_name: String,
    /// Only these keys, at these paths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<KeyToPath>,
    /// Mode of the files (default 0644).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_mode: Option<i32>,
    /// When true, a missing Secret gives an empty directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// One file of a `downwardAPI` volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DownwardApiFile {
    /// Relative path of the file.
    pub path: String,
    /// A pod field (also `metadata.labels`, `metadata.annotations`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_ref: Option<ObjectFieldSelector>,
    /// A container resource (`containerName` required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_field_ref: Option<ResourceFieldSelector>,
    /// File mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<i32>,
}

/// `downwardAPI:` volume: pod fields as files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DownwardApiVolume {
    /// The files.
    #[serde(default)]
    pub items: Vec<DownwardApiFile>,
    /// Mode of the files (default 0644).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_mode: Option<i32>,
}

/// A ConfigMap in a projected volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigMapProjection {
    /// The ConfigMap.
    pub name: String,
    /// Only these keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<KeyToPath>,
    /// When true, a missing ConfigMap contributes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// A Secret in a projected volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretProjection {
    /// The Secret.
    pub name: String,
    /// Only these keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<KeyToPath>,
    /// When true, a missing Secret contributes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// Pod fields in a projected volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DownwardApiProjection {
    /// The files.
    #[serde(default)]
    pub items: Vec<DownwardApiFile>,
}

/// One source of a projected volume; exactly one field is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeProjection {
    /// A ConfigMap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapProjection>,
    /// A Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretProjection>,
    /// Pod fields.
    #[serde(
        default,
        rename = "downwardAPI",
        skip_serializing_if = "Option::is_none"
    )]
    pub downward_api: Option<DownwardApiProjection>,
}

/// `projected:` volume: several sources in one directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProjectedVolume {
    /// The sources.
    #[serde(default)]
    pub sources: Vec<VolumeProjection>,
    /// Mode of the files (default 0644).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_mode: Option<i32>,
}

/// Checks a relative file path of a volume: not absolute, no `..` component, not empty.
pub fn check_volume_path(p: &str) -> Result<(), String> {
    if p.is_empty() || p.starts_with('/') || p.split('/').any(|c| c == ".." || c.is_empty()) {
        return Err(format!(
            "expected a relative path without '..' or empty components, got {p:?}"
        ));
    }
    if p.split('/').next().is_some_and(|c| c.starts_with("..")) {
        return Err(format!("may not start with '..' (reserved), got {p:?}"));
    }
    Ok(())
}

fn check_mode(m: Option<i32>, path: &str, errs: &mut ValidationErrors) {
    if let Some(m) = m
        && !(0..=0o777).contains(&m)
    {
        errs.push(
            path,
            format!("expected a file mode from 0 to 0777 (511), got {m}"),
        );
    }
}

fn check_items(items: &[KeyToPath], path: &str, errs: &mut ValidationErrors) {
    for (i, it) in items.iter().enumerate() {
        let p = index(&join(path, "items"), i);
        errs.check(join(&p, "key"), check_data_key(&it.key));
        errs.check(join(&p, "path"), check_volume_path(&it.path));
        check_mode(it.mode, &join(&p, "mode"), errs);
    }
}

fn check_field(f: &ObjectFieldSelector, extra: &[&str], path: &str, errs: &mut ValidationErrors) {
    if !FIELD_PATHS.contains(&f.field_path.as_str()) && !extra.contains(&f.field_path.as_str()) {
        let mut ok: Vec<&str> = FIELD_PATHS.to_vec();
        ok.extend_from_slice(extra);
        errs.push(
            join(path, "fieldPath"),
            format!("expected one of {}, got {:?}", ok.join(", "), f.field_path),
        );
    }
}

fn check_resource(r: &ResourceFieldSelector, path: &str, errs: &mut ValidationErrors) {
    if !RESOURCE_FIELDS.contains(&r.resource.as_str()) {
        errs.push(
            join(path, "resource"),
            format!(
                "expected one of {}, got {:?}",
                RESOURCE_FIELDS.join(", "),
                r.resource
            ),
        );
    }
    if let Some(d) = &r.divisor
        && d.is_zero()
    {
        errs.push(join(path, "divisor"), "must be more than zero");
    }
}

fn check_downward(items: &[DownwardApiFile], path: &str, errs: &mut ValidationErrors) {
    for (i, f) in items.iter().enumerate() {
        let p = index(&join(path, "items"), i);
        errs.check(join(&p, "path"), check_volume_path(&f.path));
        check_mode(f.mode, &join(&p, "mode"), errs);
        match (&f.field_ref, &f.resource_field_ref) {
            (Some(fr), None) => check_field(
                fr,
                &["metadata.labels", "metadata.annotations"],
                &join(&p, "fieldRef"),
                errs,
            ),
            (None, Some(r)) => {
                check_resource(r, &join(&p, "resourceFieldRef"), errs);
                if r.container_name.is_none() {
                    errs.push(
                        join(&p, "resourceFieldRef.containerName"),
                        "required in a volume",
                    );
                }
            }
            _ => errs.push(
                &p,
                "exactly one of fieldRef or resourceFieldRef must be set",
            ),
        }
    }
}

/// Checks one container's `env[j].valueFrom` at `path`.
pub fn validate_env_source(s: &EnvVarSource, path: &str, errs: &mut ValidationErrors) {
    let set = [
        s.config_map_key_ref.is_some(),
        s.secret_key_ref.is_some(),
        s.field_ref.is_some(),
        s.resource_field_ref.is_some(),
    ];
    if set.iter().filter(|b| **b).count() != 1 {
        errs.push(
            path,
            "exactly one of configMapKeyRef, secretKeyRef, fieldRef or resourceFieldRef must be set",
        );
    }
    for (field, r) in [
        ("configMapKeyRef", &s.config_map_key_ref),
        ("secretKeyRef", &s.secret_key_ref),
    ] {
        if let Some(r) = r {
            let p = join(path, field);
            errs.check(join(&p, "name"), v::check_dns1123_subdomain(&r.name));
            errs.check(join(&p, "key"), check_data_key(&r.key));
        }
    }
    if let Some(f) = &s.field_ref {
        check_field(f, &[], &join(path, "fieldRef"), errs);
    }
    if let Some(r) = &s.resource_field_ref {
        check_resource(r, &join(path, "resourceFieldRef"), errs);
    }
}

/// Checks one `envFrom` entry at `path`.
pub fn validate_env_from(s: &EnvFromSource, path: &str, errs: &mut ValidationErrors) {
    match (&s.config_map_ref, &s.secret_ref) {
        (Some(r), None) => errs.check(
            join(path, "configMapRef.name"),
            v::check_dns1123_subdomain(&r.name),
        ),
        (None, Some(r)) => errs.check(
            join(path, "secretRef.name"),
            v::check_dns1123_subdomain(&r.name),
        ),
        _ => errs.push(path, "exactly one of configMapRef or secretRef must be set"),
    }
    if let Some(p) = &s.prefix
        && !p.is_empty()
    {
        errs.check(join(path, "prefix"), v::check_env_name(p));
    }
}

/// Checks the ConfigMap/Secret/downward-API/projected source of a volume at `path`.
pub fn validate_config_volumes(
    cm: Option<&ConfigMapVolume>,
    secret: Option<&SecretVolume>,
    downward: Option<&DownwardApiVolume>,
    projected: Option<&ProjectedVolume>,
    path: &str,
    errs: &mut ValidationErrors,
) {
    if let Some(c) = cm {
        let p = join(path, "configMap");
        errs.check(join(&p, "name"), v::check_dns1123_subdomain(&c.name));
        check_items(&c.items, &p, errs);
        check_mode(c.default_mode, &join(&p, "defaultMode"), errs);
    }
    if let Some(s) = secret {
        let p = join(path, "secret");
        errs.check(
            join(&p, "secretName"),
            v::check_dns1123_subdomain(&s.secret_name),
        );
        check_items(&s.items, &p, errs);
        check_mode(s.default_mode, &join(&p, "defaultMode"), errs);
    }
    if let Some(d) = downward {
        let p = join(path, "downwardAPI");
        check_downward(&d.items, &p, errs);
        check_mode(d.default_mode, &join(&p, "defaultMode"), errs);
    }
    if let Some(pr) = projected {
        let p = join(path, "projected");
        check_mode(pr.default_mode, &join(&p, "defaultMode"), errs);
        for (i, s) in pr.sources.iter().enumerate() {
            let sp = index(&join(&p, "sources"), i);
            let n = [
                s.config_map.is_some(),
                s.secret.is_some(),
                s.downward_api.is_some(),
            ]
            .iter()
            .filter(|b| **b)
            .count();
            if n != 1 {
                errs.push(
                    &sp,
                    "exactly one of configMap, secret or downwardAPI must be set",
                );
            }
            if let Some(c) = &s.config_map {
                let cp = join(&sp, "configMap");
                errs.check(join(&cp, "name"), v::check_dns1123_subdomain(&c.name));
                check_items(&c.items, &cp, errs);
            }
            if let Some(c) = &s.secret {
                let cp = join(&sp, "secret");
                errs.check(join(&cp, "name"), v::check_dns1123_subdomain(&c.name));
                check_items(&c.items, &cp, errs);
            }
            if let Some(d) = &s.downward_api {
                check_downward(&d.items, &join(&sp, "downwardAPI"), errs);
            }
        }
    }
}

/// The ConfigMaps and Secrets a pod spec names (env, envFrom, volumes), by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigRefs {
    /// ConfigMap names.
    pub config_maps: BTreeSet<String>,
    /// Secret names.
    pub secrets: BTreeSet<String>,
    /// `imagePullSecrets` names (read by the node to pull, not given to containers).
    pub pull_secrets: BTreeSet<String>,
}

impl ConfigRefs {
    /// The ConfigMaps and Secrets `spec` names.
    pub fn of(spec: &crate::pod::PodSpec) -> ConfigRefs {
        let mut r = ConfigRefs {
            pull_secrets: spec
                .image_pull_secrets
                .iter()
                .map(|s| s.name.clone())
                .collect(),
            ..Default::default()
        };
        for c in &spec.containers {
            for e in &c.env {
                if let Some(s) = &e.value_from {
                    if let Some(k) = &s.config_map_key_ref {
                        r.config_maps.insert(k.name.clone());
                    }
                    if let Some(k) = &s.secret_key_ref {
                        r.secrets.insert(k.name.clone());
                    }
                }
            }
            for f in &c.env_from {
                if let Some(k) = &f.config_map_ref {
                    r.config_maps.insert(k.name.clone());
                }
                if let Some(k) = &f.secret_ref {
                    r.secrets.insert(k.name.clone());
                }
            }
        }
        for vol in &spec.volumes {
            if let Some(c) = &vol.config_map {
                r.config_maps.insert(c.name.clone());
            }
            if let Some(s) = &vol.secret {
                r.secrets.insert(s.secret_name.clone());
            }
            if let Some(p) = &vol.projected {
                for s in &p.sources {
                    if let Some(c) = &s.config_map {
                        r.config_maps.insert(c.name.clone());
                    }
                    if let Some(c) = &s.secret {
                        r.secrets.insert(c.name.clone());
                    }
                }
            }
        }
        r
    }
}
