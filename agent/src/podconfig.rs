//! What a container takes from ConfigMaps, Secrets and its pod: the environment
//! (`envFrom`, `env[].valueFrom`, `$(VAR)` expansion), `command`/`args` expansion, and the
//! files of `configMap`, `secret`, `downwardAPI` and `projected` volumes. Pure functions of
//! the pod and the fetched objects ([`Sources`]); [`write_volume`] writes a volume's files
//! into a directory with the kubelet's atomic `..data` symlink swap, so that a running
//! container sees either the old or the new set of files, never a mix.
//!
//! A missing object or key (not `optional`) is a [`ConfigError`]: the container waits
//! with reason `CreateContainerConfigError` and the message names what is missing; the
//! message never holds a value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use shoal_api::podconfig::{
    DownwardApiFile, KeyToPath, ObjectFieldSelector, ResourceFieldSelector,
};
use shoal_api::{ConfigMap, Container, Pod, Secret, Volume};

/// The reason a container waits with when its configuration cannot be resolved.
pub const CONFIG_ERROR: &str = "CreateContainerConfigError";

/// A missing ConfigMap, Secret or key (the message names it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The ConfigMaps and Secrets of a pod's namespace as fetched (`None`: not found).
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// ConfigMaps by name.
    pub config_maps: BTreeMap<String, Option<ConfigMap>>,
    /// Secrets by name.
    pub secrets: BTreeMap<String, Option<Secret>>,
}

/// Facts of the pod and node that `fieldRef` and `resourceFieldRef` read.
#[derive(Debug, Clone, Default)]
pub struct PodFacts {
    /// The pod's IP, once attached.
    pub pod_ip: Option<String>,
    /// The node's IP.
    pub host_ip: String,
    /// The node's CPUs in millicores (a limit that is not set reads as this).
    pub node_cpu_millis: i64,
    /// The node's memory in bytes (a limit that is not set reads as this).
    pub node_memory_bytes: i64,
}

fn ns(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

impl Sources {
    fn config_map(&self, name: &str) -> Option<&ConfigMap> {
        self.config_maps.get(name).and_then(Option::as_ref)
    }
    fn secret(&self, name: &str) -> Option<&Secret> {
        self.secrets.get(name).and_then(Option::as_ref)
    }
}

/// The value of a pod field.
pub fn field_value(
    pod: &Pod,
    f: &ObjectFieldSelector,
    facts: &PodFacts,
) -> Result<String, ConfigError> {
    let map_text = |m: &BTreeMap<String, String>| {
        m.iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    Ok(match f.field_path.as_str() {
        "metadata.name" => pod.metadata.name.clone(),
        "metadata.namespace" => ns(pod).to_string(),
        "metadata.uid" => pod.metadata.uid.clone().unwrap_or_default(),
        "metadata.labels" => map_text(&pod.metadata.labels),
        "metadata.annotations" => map_text(&pod.metadata.annotations),
        "spec.nodeName" => pod.spec.node_name.clone().unwrap_or_default(),
        "status.podIP" => facts.pod_ip.clone().unwrap_or_default(),
        "status.hostIP" => facts.host_ip.clone(),
        other => {
            return Err(ConfigError(format!("fieldRef {other:?} is not supported")));
        }
    })
}

/// The value of a container resource, in units of `divisor` rounded up (as the kubelet):
/// cores for CPU (default divisor 1), bytes for memory.
pub fn resource_value(
    pod: &Pod,
    default_container: &str,
    r: &ResourceFieldSelector,
    facts: &PodFacts,
) -> Result<String, ConfigError> {
    let cname = r.container_name.as_deref().unwrap_or(default_container);
    let c = pod
        .spec
        .containers
        .iter()
        .find(|c| c.name == cname)
        .ok_or_else(|| ConfigError(format!("resourceFieldRef: no container {cname:?}")))?;
    let (list, res) = match r.resource.split_once('.') {
        Some(("limits", res)) => (&c.resources.limits, res),
        Some(("requests", res)) => (&c.resources.requests, res),
        _ => {
            return Err(ConfigError(format!(
                "resourceFieldRef {:?} is not supported",
                r.resource
            )));
        }
    };
    let is_limit = r.resource.starts_with("limits.");
    let ceil_div = |a: i64, b: i64| if b <= 0 { a } else { (a + b - 1) / b };
    Ok(match res {
        "cpu" => {
            let m = list
                .get("cpu")
                .map(|q| q.as_millis())
                .or_else(|| is_limit.then_some(facts.node_cpu_millis))
                .unwrap_or(0);
            let d = r.divisor.as_ref().map_or(1000, |d| d.as_millis());
            ceil_div(m, d).to_string()
        }
        "memory" => {
            let b = list
                .get("memory")
                .map(|q| q.as_bytes())
                .or_else(|| is_limit.then_some(facts.node_memory_bytes))
                .unwrap_or(0);
            let d = r.divisor.as_ref().map_or(1, |d| d.as_bytes());
            ceil_div(b, d).to_string()
        }
        other => {
            return Err(ConfigError(format!(
                "resourceFieldRef resource {other:?} is not supported"
            )));
        }
    })
}

fn utf8(bytes: Vec<u8>, what: &str) -> Result<String, ConfigError> {
    String::from_utf8(bytes).map_err(|_| ConfigError(format!("{what} is not UTF-8 text")))
}

/// The environment of container `c`: `envFrom` in order, then `env` (each value may refer
/// to variables before it with `$(VAR)`).
pub fn container_env(
    pod: &Pod,
    c: &Container,
    src: &Sources,
    facts: &PodFacts,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut base: Vec<(String, String)> = Vec::new();
    let put = |base: &mut Vec<(String, String)>, k: String, v: String| match base
        .iter_mut()
        .find(|(n, _)| *n == k)
    {
        Some(slot) => slot.1 = v,
        None => base.push((k, v)),
    };
    for f in &c.env_from {
        let prefix = f.prefix.clone().unwrap_or_default();
        let entries = if let Some(r) = &f.config_map_ref {
            match src.config_map(&r.name) {
                Some(cm) => cm.entries(),
                None if r.optional == Some(true) => continue,
                None => return Err(ConfigError(format!("configmap {:?} not found", r.name))),
            }
        } else if let Some(r) = &f.secret_ref {
            match src.secret(&r.name) {
                Some(s) => s.entries(),
                None if r.optional == Some(true) => continue,
                None => return Err(ConfigError(format!("secret {:?} not found", r.name))),
            }
        } else {
            continue;
        };
        for (k, v) in entries {
            let name = format!("{prefix}{k}");
            // As the kubelet: keys that are not valid variable names are skipped.
            if shoal_api::validation::check_env_name(&name).is_err() {
                continue;
            }
            if let Ok(v) = String::from_utf8(v) {
                put(&mut base, name, v);
            }
        }
    }
    let mut env: Vec<(String, String)> = Vec::new();
    let mut literal = BTreeMap::new();
    for e in &c.env {
        let Some(from) = &e.value_from else {
            env.push((e.name.clone(), e.value.clone()));
            continue;
        };
        let value = if let Some(r) = &from.config_map_key_ref {
            match src.config_map(&r.name).map(|cm| cm.value(&r.key)) {
                Some(Some(v)) => Some(utf8(
                    v,
                    &format!("key {:?} of configmap {:?}", r.key, r.name),
                )?),
                _ if r.optional == Some(true) => None,
                None => return Err(ConfigError(format!("configmap {:?} not found", r.name))),
                Some(None) => {
                    return Err(ConfigError(format!(
                        "couldn't find key {:?} in configmap {:?}",
                        r.key, r.name
                    )));
                }
            }
        } else if let Some(r) = &from.secret_key_ref {
            match src.secret(&r.name).map(|s| s.value(&r.key)) {
                Some(Some(v)) => Some(utf8(v, &format!("key {:?} of secret {:?}", r.key, r.name))?),
                _ if r.optional == Some(true) => None,
                None => return Err(ConfigError(format!("secret {:?} not found", r.name))),
                Some(None) => {
                    return Err(ConfigError(format!(
                        "couldn't find key {:?} in secret {:?}",
                        r.key, r.name
                    )));
                }
            }
        } else if let Some(f) = &from.field_ref {
            Some(field_value(pod, f, facts)?)
        } else if let Some(r) = &from.resource_field_ref {
            Some(resource_value(pod, &c.name, r, facts)?)
        } else {
            None
        };
        if let Some(v) = value {
            // Values from objects and fields are taken as they are, not expanded.
            literal.insert(env.len(), ());
            env.push((e.name.clone(), v));
        }
    }
    let mut out = base;
    for (i, (name, raw)) in env.into_iter().enumerate() {
        let value = if literal.contains_key(&i) {
            raw
        } else {
            shoal_api::expand::expand(&raw, |n| {
                out.iter()
                    .rev()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| v.clone())
            })
        };
        match out.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => out.push((name, value)),
        }
    }
    Ok(out)
}

/// `command` and `args` of `c` with `$(VAR)` expanded from `env`.
pub fn expand_command(c: &Container, env: &[(String, String)]) -> (Vec<String>, Vec<String>) {
    let lookup = |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let ex = |v: &Vec<String>| {
        v.iter()
            .map(|s| shoal_api::expand::expand(s, lookup))
            .collect()
    };
    (ex(&c.command), ex(&c.args))
}

/// One file of a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeFile {
    /// Relative path (checked by validation: no `..`, not absolute).
    pub path: String,
    /// Content.
    pub data: Vec<u8>,
    /// Mode.
    pub mode: u32,
}

const DEFAULT_MODE: i32 = 0o644;

fn mode(item: Option<i32>, default: Option<i32>) -> u32 {
    (item.or(default).unwrap_or(DEFAULT_MODE) & 0o777) as u32
}

fn key_files(
    entries: BTreeMap<String, Vec<u8>>,
    items: &[KeyToPath],
    default_mode: Option<i32>,
    what: &str,
    optional: bool,
    out: &mut Vec<VolumeFile>,
) -> Result<(), ConfigError> {
    if items.is_empty() {
        for (k, data) in entries {
            out.push(VolumeFile {
                path: k,
                data,
                mode: mode(None, default_mode),
            });
        }
        return Ok(());
    }
    for it in items {
        match entries.get(&it.key) {
            Some(data) => out.push(VolumeFile {
                path: it.path.clone(),
                data: data.clone(),
                mode: mode(it.mode, default_mode),
            }),
            None if optional => {}
            None => {
                return Err(ConfigError(format!(
                    "couldn't find key {:?} in {what}",
                    it.key
                )));
            }
        }
    }
    Ok(())
}

fn downward_files(
    pod: &Pod,
    items: &[DownwardApiFile],
    default_mode: Option<i32>,
    facts: &PodFacts,
    out: &mut Vec<VolumeFile>,
) -> Result<(), ConfigError> {
    for f in items {
        let v = match (&f.field_ref, &f.resource_field_ref) {
            (Some(fr), _) => field_value(pod, fr, facts)?,
            (None, Some(r)) => resource_value(pod, "", r, facts)?,
            (None, None) => continue,
        };
        out.push(VolumeFile {
            path: f.path.clone(),
            data: v.into_bytes(),
            mode: mode(f.mode, default_mode),
        });
    }
    Ok(())
}

/// True for the volumes this module writes.
pub fn is_config_volume(v: &Volume) -> bool {
    v.config_map.is_some()
        || v.secret.is_some()
        || v.downward_api.is_some()
        || v.projected.is_some()
}

/// The files of a `configMap`, `secret`, `downwardAPI` or `projected` volume.
pub fn volume_files(
    pod: &Pod,
    v: &Volume,
    src: &Sources,
    facts: &PodFacts,
) -> Result<Vec<VolumeFile>, ConfigError> {
    let mut out = Vec::new();
    if let Some(c) = &v.config_map {
        let optional = c.optional == Some(true);
        match src.config_map(&c.name) {
            Some(cm) => key_files(
                cm.entries(),
                &c.items,
                c.default_mode,
                &format!("configmap {:?}", c.name),
                optional,
                &mut out,
            )?,
            None if optional => {}
            None => return Err(ConfigError(format!("configmap {:?} not found", c.name))),
        }
    }
    if let Some(s) = &v.secret {
        let optional = s.optional == Some(true);
        match src.secret(&s.secret_name) {
            Some(sec) => key_files(
                sec.entries(),
                &s.items,
                s.default_mode,
                &format!("secret {:?}", s.secret_name),
                optional,
                &mut out,
            )?,
            None if optional => {}
            None => return Err(ConfigError(format!("secret {:?} not found", s.secret_name))),
        }
    }
    if let Some(d) = &v.downward_api {
        downward_files(pod, &d.items, d.default_mode, facts, &mut out)?;
    }
    if let Some(p) = &v.projected {
        for s in &p.sources {
            if let Some(c) = &s.config_map {
                let optional = c.optional == Some(true);
                match src.config_map(&c.name) {
                    Some(cm) => key_files(
                        cm.entries(),
                        &c.items,
                        p.default_mode,
                        &format!("configmap {:?}", c.name),
                        optional,
                        &mut out,
                    )?,
                    None if optional => {}
                    None => {
                        return Err(ConfigError(format!("configmap {:?} not found", c.name)));
                    }
                }
            }
            if let Some(c) = &s.secret {
                let optional = c.optional == Some(true);
                match src.secret(&c.name) {
                    Some(sec) => key_files(
                        sec.entries(),
                        &c.items,
                        p.default_mode,
                        &format!("secret {:?}", c.name),
                        optional,
                        &mut out,
                    )?,
                    None if optional => {}
                    None => return Err(ConfigError(format!("secret {:?} not found", c.name))),
                }
            }
            if let Some(d) = &s.downward_api {
                downward_files(pod, &d.items, p.default_mode, facts, &mut out)?;
            }
        }
    }
    Ok(out)
}

/// What [`crate::spec::container_spec`] takes from this module for one container.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    /// The environment (`None`: the literal `env` values, unexpanded).
    pub env: Option<Vec<(String, String)>>,
    /// The host directory written for each ConfigMap/Secret/downward-API/projected volume.
    pub volume_dirs: BTreeMap<String, PathBuf>,
}

/// Name of the symlink to the current generation of a volume's files.
const DATA_LINK: &str = "..data";

fn current_files(dir: &Path) -> Option<Vec<VolumeFile>> {
    let target = std::fs::read_link(dir.join(DATA_LINK)).ok()?;
    let gen_dir = dir.join(target);
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in std::fs::read_dir(gen_dir.join(&rel)).ok()?.flatten() {
            let r = rel.join(e.file_name());
            if e.file_type().ok()?.is_dir() {
                stack.push(r);
            } else {
                use std::os::unix::fs::PermissionsExt;
                let md = e.metadata().ok()?;
                out.push(VolumeFile {
                    path: r.to_string_lossy().into_owned(),
                    data: std::fs::read(e.path()).ok()?,
                    mode: md.permissions().mode() & 0o777,
                });
            }
        }
    }
    Some(out)
}

/// Writes `files` into `dir` as the kubelet's atomic writer does: the files go into a new
/// `..<timestamp>` directory, `..data` is swapped to it with one rename, each top-level
/// name is a symlink through `..data`, and the previous generation is removed. Returns
/// false (and writes nothing) when `dir` already holds exactly these files.
pub fn write_volume(dir: &Path, files: &[VolumeFile]) -> std::io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let mut want = files.to_vec();
    want.sort_by(|a, b| a.path.cmp(&b.path));
    if let Some(mut have) = current_files(dir) {
        have.sort_by(|a, b| a.path.cmp(&b.path));
        if have == want {
            return Ok(false);
        }
    }
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let old = std::fs::read_link(dir.join(DATA_LINK)).ok();
    let stamp = chrono::Utc::now()
        .format("..%Y_%m_%d_%H_%M_%S.%f")
        .to_string();
    let gen_dir = dir.join(&stamp);
    std::fs::create_dir(&gen_dir)?;
    std::fs::set_permissions(&gen_dir, std::fs::Permissions::from_mode(0o755))?;
    for f in &want {
        let p = gen_dir.join(&f.path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, &f.data)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(f.mode))?;
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp)?;
    std::fs::rename(&tmp, dir.join(DATA_LINK))?;
    // User-visible names: `key -> ..data/key` (top-level entries only).
    let mut top: Vec<String> = want
        .iter()
        .map(|f| f.path.split('/').next().unwrap_or("").to_string())
        .collect();
    top.dedup();
    for name in &top {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new(DATA_LINK).join(name), &link)?;
        }
    }
    // Names that are gone.
    for e in std::fs::read_dir(dir)?.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if !n.starts_with("..") && !top.contains(&n) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    if let Some(old) = old
        && old != Path::new(&stamp)
    {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "prod", "uid": "u1"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn sources() -> Sources {
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "app"}, "data": {"MODE": "fast", "app.conf": "x=1", "bad key": "z"}
        }))
        .unwrap();
        let s: Secret = serde_json::from_value(json!({
            "metadata": {"name": "db"}, "data": {"PASSWORD": "aHVudGVyMg=="}
        }))
        .unwrap();
        Sources {
            config_maps: [("app".to_string(), Some(cm)), ("gone".to_string(), None)].into(),
            secrets: [("db".to_string(), Some(s))].into(),
        }
    }

    fn facts() -> PodFacts {
        PodFacts {
            pod_ip: Some("10.0.1.5".into()),
            host_ip: "192.168.1.2".into(),
            node_cpu_millis: 4000,
            node_memory_bytes: 8 << 30,
        }
    }

    #[test]
    fn env_from_objects_fields_resources_and_expansion() {
        let p = pod(json!({"nodeName": "n1", "containers": [{
            "name": "c", "image": "i",
            "command": ["sh", "-c", "echo $(MODE) $$(MODE) $(NOPE)"],
            "resources": {"limits": {"memory": "64Mi"}, "requests": {"cpu": "250m"}},
            "envFrom": [{"configMapRef": {"name": "app"}}, {"secretRef": {"name": "db"}, "prefix": "DB_"}],
            "env": [
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}}},
                {"name": "CPU_LIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
                {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "PASSWORD"}}},
                {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "x", "optional": true}}},
                {"name": "URL", "value": "http://$(POD).$(NS):$(PORT)/$(MODE)"},
                {"name": "RAW", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "MODE"}}},
            ]
        }]}));
        let c = &p.spec.containers[0];
        let env = container_env(&p, c, &sources(), &facts()).unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("MODE"), Some("fast"));
        assert_eq!(get("app.conf"), Some("x=1"));
        assert_eq!(get("bad key"), None);
        assert_eq!(get("DB_PASSWORD"), Some("hunter2"));
        assert_eq!(get("POD"), Some("web"));
        assert_eq!(get("NS"), Some("prod"));
        assert_eq!(get("IP"), Some("10.0.1.5"));
        assert_eq!(get("NODE"), Some("n1"));
        assert_eq!(get("MEM"), Some("64"));
        assert_eq!(get("CPU"), Some("250"));
        assert_eq!(get("CPU_LIMIT"), Some("4"));
        assert_eq!(get("PW"), Some("hunter2"));
        assert_eq!(get("OPT"), None);
        assert_eq!(get("URL"), Some("http://web.prod:$(PORT)/fast"));
        let (cmd, _) = expand_command(c, &env);
        assert_eq!(cmd[2], "echo fast $(MODE) $(NOPE)");
    }

    #[test]
    fn missing_objects_and_keys_name_what_is_missing() {
        let one = |env: serde_json::Value| {
            let p = pod(json!({"containers": [{"name": "c", "image": "i", "env": [env]}]}));
            container_env(&p, &p.spec.containers[0], &sources(), &facts())
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            one(
                json!({"name": "A", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k"}}})
            ),
            "configmap \"gone\" not found"
        );
        assert_eq!(
            one(json!({"name": "A", "valueFrom": {"secretKeyRef": {"name": "db", "key": "user"}}})),
            "couldn't find key \"user\" in secret \"db\""
        );
        let p = pod(json!({"containers": [{"name": "c", "image": "i",
            "envFrom": [{"secretRef": {"name": "missing"}}]}]}));
        let e = container_env(&p, &p.spec.containers[0], &sources(), &facts()).unwrap_err();
        assert_eq!(e.to_string(), "secret \"missing\" not found");
    }

    #[test]
    fn volume_files_items_and_modes() {
        let p = pod(
            json!({"containers": [{"name": "c", "image": "i", "resources": {"limits": {"cpu": "2"}}}],
            "volumes": [
                {"name": "a", "configMap": {"name": "app", "items": [{"key": "app.conf", "path": "etc/app.conf", "mode": 384}]}},
                {"name": "b", "secret": {"secretName": "db", "defaultMode": 256}},
                {"name": "c", "downwardAPI": {"items": [
                    {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                    {"path": "cpu", "resourceFieldRef": {"containerName": "c", "resource": "limits.cpu"}}]}},
                {"name": "d", "projected": {"sources": [
                    {"configMap": {"name": "app", "items": [{"key": "MODE", "path": "mode"}]}},
                    {"secret": {"name": "db"}}]}},
                {"name": "e", "configMap": {"name": "gone"}},
                {"name": "f", "configMap": {"name": "app", "items": [{"key": "nope", "path": "x"}]}},
            ]}),
        );
        let s = sources();
        let f = volume_files(&p, &p.spec.volumes[0], &s, &facts()).unwrap();
        assert_eq!(
            f,
            vec![VolumeFile {
                path: "etc/app.conf".into(),
                data: b"x=1".to_vec(),
                mode: 0o600
            }]
        );
        let f = volume_files(&p, &p.spec.volumes[1], &s, &facts()).unwrap();
        assert_eq!(
            f,
            vec![VolumeFile {
                path: "PASSWORD".into(),
                data: b"hunter2".to_vec(),
                mode: 0o400
            }]
        );
        let f = volume_files(&p, &p.spec.volumes[2], &s, &facts()).unwrap();
        assert_eq!(f[0].data, b"web");
        assert_eq!(f[1].data, b"2");
        let f = volume_files(&p, &p.spec.volumes[3], &s, &facts()).unwrap();
        assert_eq!(
            f.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
            ["mode", "PASSWORD"]
        );
        let e = volume_files(&p, &p.spec.volumes[4], &s, &facts()).unwrap_err();
        assert_eq!(e.to_string(), "configmap \"gone\" not found");
        let e = volume_files(&p, &p.spec.volumes[5], &s, &facts()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "couldn't find key \"nope\" in configmap \"app\""
        );
    }

    #[test]
    fn atomic_writer_swaps_generations() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("vol");
        let v1 = vec![
            VolumeFile {
                path: "a".into(),
                data: b"1".to_vec(),
                mode: 0o644,
            },
            VolumeFile {
                path: "sub/b".into(),
                data: b"2".to_vec(),
                mode: 0o600,
            },
        ];
        assert!(write_volume(&dir, &v1).unwrap());
        assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"1");
        assert_eq!(std::fs::read(dir.join("sub/b")).unwrap(), b"2");
        assert!(
            std::fs::symlink_metadata(dir.join("a"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        let m = std::fs::metadata(dir.join("sub/b"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(m, 0o600);
        let gen1 = std::fs::read_link(dir.join("..data")).unwrap();
        assert!(
            !write_volume(&dir, &v1).unwrap(),
            "unchanged: nothing written"
        );
        let v2 = vec![VolumeFile {
            path: "a".into(),
            data: b"changed".to_vec(),
            mode: 0o644,
        }];
        assert!(write_volume(&dir, &v2).unwrap());
        assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"changed");
        assert!(!dir.join("sub").exists(), "a removed key disappears");
        assert!(!dir.join(&gen1).exists(), "the old generation is removed");
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
    }
}
