//! The image configuration a build writes: the base image's config JSON, changed by
//! ENV, WORKDIR, USER, CMD, ENTRYPOINT, EXPOSE, VOLUME and LABEL (and by `commit
//! --change`), with a layer's `diff_id` appended for every step that changed files.
//! Fields we do not know are kept as the base had them. Pure.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use shoal_image::config::{Descriptor, Manifest, OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST};
use shoal_image::digest::Digest;

/// A change to the run configuration, variables already expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// ENV pairs.
    Env(Vec<(String, String)>),
    /// WORKDIR (relative: joined to the current one).
    Workdir(String),
    /// USER.
    User(String),
    /// CMD as argv.
    Cmd(Vec<String>),
    /// ENTRYPOINT as argv (clears a CMD inherited from the base, as Docker does).
    Entrypoint(Vec<String>),
    /// EXPOSE ports (`80` means `80/tcp`).
    Expose(Vec<String>),
    /// VOLUME paths.
    Volume(Vec<String>),
    /// LABEL pairs.
    Label(Vec<(String, String)>),
}

/// The config of `FROM scratch`.
pub fn scratch() -> Value {
    json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
        },
        "rootfs": {"type": "layers", "diff_ids": []}
    })
}

fn section<'a>(config: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !config.is_object() {
        *config = json!({});
    }
    let obj = config.as_object_mut().expect("an object");
    let entry = obj.entry(key.to_string()).or_insert_with(|| json!({}));
    if !entry.is_object() {
        *entry = json!({});
    }
    entry.as_object_mut().expect("an object")
}

/// `config.Env` as a map (later entries win).
pub fn env(config: &Value) -> BTreeMap<String, String> {
    config
        .pointer("/config/Env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|e| match e.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (e.to_string(), String::new()),
        })
        .collect()
}

/// `config.WorkingDir` (`/` when unset).
pub fn workdir(config: &Value) -> String {
    match config.pointer("/config/WorkingDir").and_then(Value::as_str) {
        Some(w) if !w.is_empty() => w.to_string(),
        _ => "/".to_string(),
    }
}

/// `config.User` (empty: root).
pub fn user(config: &Value) -> String {
    config
        .pointer("/config/User")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// Joins `path` to `base` unless it is absolute, and cleans `.` and `..`.
pub fn join_path(base: &str, path: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{base}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for p in joined.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

fn strings(v: &[String]) -> Value {
    Value::Array(v.iter().map(|s| Value::String(s.clone())).collect())
}

/// Applies `change` to the image config `config`.
pub fn apply(config: &mut Value, change: &Change) {
    let had_cmd_from_base = config.pointer("/config/Cmd").is_some();
    let c = section(config, "config");
    match change {
        Change::Env(pairs) => {
            let mut list: Vec<String> = c
                .get("Env")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect();
            for (k, v) in pairs {
                let entry = format!("{k}={v}");
                match list
                    .iter_mut()
                    .find(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) == k)
                {
                    Some(e) => *e = entry,
                    None => list.push(entry),
                }
            }
            c.insert("Env".into(), strings(&list));
        }
        Change::Workdir(w) => {
            let current = c
                .get("WorkingDir")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .unwrap_or("/")
                .to_string();
            c.insert("WorkingDir".into(), Value::String(join_path(&current, w)));
        }
        Change::User(u) => {
            c.insert("User".into(), Value::String(u.clone()));
        }
        Change::Cmd(argv) => {
            c.insert("Cmd".into(), strings(argv));
        }
        Change::Entrypoint(argv) => {
            c.insert("Entrypoint".into(), strings(argv));
            if had_cmd_from_base {
                c.remove("Cmd");
            }
        }
        Change::Expose(ports) => {
            let e = c.entry("ExposedPorts").or_insert_with(|| json!({}));
            if !e.is_object() {
                *e = json!({});
            }
            for p in ports {
                let p = if p.contains('/') {
                    p.to_ascii_lowercase()
                } else {
                    format!("{p}/tcp")
                };
                e.as_object_mut().expect("an object").insert(p, json!({}));
            }
        }
        Change::Volume(paths) => {
            let e = c.entry("Volumes").or_insert_with(|| json!({}));
            if !e.is_object() {
                *e = json!({});
            }
            for p in paths {
                e.as_object_mut()
                    .expect("an object")
                    .insert(p.clone(), json!({}));
            }
        }
        Change::Label(pairs) => {
            let e = c.entry("Labels").or_insert_with(|| json!({}));
            if !e.is_object() {
                *e = json!({});
            }
            for (k, v) in pairs {
                e.as_object_mut()
                    .expect("an object")
                    .insert(k.clone(), Value::String(v.clone()));
            }
        }
    }
}

/// Appends a layer's uncompressed digest to `rootfs.diff_ids`.
pub fn push_diff_id(config: &mut Value, diff_id: &Digest) {
    let rootfs = section(config, "rootfs");
    rootfs.insert("type".into(), Value::String("layers".into()));
    let ids = rootfs.entry("diff_ids").or_insert_with(|| json!([]));
    if !ids.is_array() {
        *ids = json!([]);
    }
    ids.as_array_mut()
        .expect("an array")
        .push(Value::String(diff_id.to_string()));
}

/// An OCI manifest for `config` (its bytes) and `layers` (gzip blobs: digest, size).
pub fn manifest(config: &[u8], layers: &[(Digest, u64)]) -> Vec<u8> {
    let desc = |media: &str, digest: Digest, size: u64| Descriptor {
        media_type: media.to_string(),
        digest,
        size,
        platform: None,
        annotations: Default::default(),
    };
    let m = Manifest {
        schema_version: 2,
        media_type: OCI_MANIFEST.to_string(),
        config: desc(OCI_CONFIG, Digest::of_bytes(config), config.len() as u64),
        layers: layers
            .iter()
            .map(|(d, s)| desc(OCI_LAYER_GZIP, d.clone(), *s))
            .collect(),
    };
    serde_json::to_vec(&m).unwrap_or_default()
}

/// Parses a `commit --change` line (`CMD …`, `ENTRYPOINT …`, `ENV …`, `WORKDIR …`,
/// `USER …`, `EXPOSE …`, `VOLUME …`, `LABEL …`) into a change.
pub fn parse_change(line: &str) -> Result<Change, crate::BuildError> {
    let df = crate::dockerfile::parse(&format!("FROM scratch\n{line}\n"))
        .map_err(|e| crate::BuildError::Change(format!("{line:?}: {}", e.message())))?;
    let ins = &df.stages[0].instructions[0];
    change_of(&ins.kind, &BTreeMap::new(), "/", ins.line)?.ok_or_else(|| {
        crate::BuildError::Change(format!(
            "{line:?}: only CMD, ENTRYPOINT, ENV, WORKDIR, USER, EXPOSE, VOLUME and LABEL may be changed"
        ))
    })
}

/// The config change of a Dockerfile instruction (`None` for RUN, COPY, ADD, ARG), its
/// variables expanded from `vars`.
pub fn change_of(
    kind: &crate::dockerfile::Kind,
    vars: &BTreeMap<String, String>,
    _workdir: &str,
    line: usize,
) -> Result<Option<Change>, crate::BuildError> {
    use crate::dockerfile::{Kind, expand};
    let x = |s: &str| expand(s, vars, line);
    let pairs = |p: &[(String, String)]| -> Result<Vec<(String, String)>, crate::BuildError> {
        p.iter().map(|(k, v)| Ok((x(k)?, x(v)?))).collect()
    };
    Ok(Some(match kind {
        Kind::Env(p) => Change::Env(pairs(p)?),
        Kind::Label(p) => Change::Label(pairs(p)?),
        Kind::Workdir(w) => Change::Workdir(x(w)?),
        Kind::User(u) => Change::User(x(u)?),
        Kind::Cmd(c) => Change::Cmd(c.argv()),
        Kind::Entrypoint(c) => Change::Entrypoint(c.argv()),
        Kind::Expose(p) => Change::Expose(p.iter().map(|s| x(s)).collect::<Result<_, _>>()?),
        Kind::Volume(p) => Change::Volume(p.iter().map(|s| x(s)).collect::<Result<_, _>>()?),
        Kind::Run(_) | Kind::Copy(_) | Kind::Add(_) | Kind::Arg(..) => return Ok(None),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_follow_docker() {
        let mut c = json!({"config": {"Env": ["PATH=/bin", "A=1"], "Cmd": ["sh"]}, "rootfs": {"diff_ids": []}, "extra": 1});
        apply(
            &mut c,
            &Change::Env(vec![("A".into(), "2".into()), ("B".into(), "x y".into())]),
        );
        assert_eq!(c["config"]["Env"], json!(["PATH=/bin", "A=2", "B=x y"]));
        assert_eq!(env(&c)["B"], "x y");
        apply(&mut c, &Change::Workdir("/app".into()));
        apply(&mut c, &Change::Workdir("sub/../lib".into()));
        assert_eq!(workdir(&c), "/app/lib");
        apply(&mut c, &Change::Entrypoint(vec!["/bin/tool".into()]));
        assert!(
            c["config"].get("Cmd").is_none(),
            "ENTRYPOINT clears the base's CMD"
        );
        apply(&mut c, &Change::Cmd(vec!["--help".into()]));
        assert_eq!(c["config"]["Cmd"], json!(["--help"]));
        apply(&mut c, &Change::Expose(vec!["80".into(), "53/UDP".into()]));
        assert_eq!(
            c["config"]["ExposedPorts"],
            json!({"80/tcp": {}, "53/udp": {}})
        );
        apply(&mut c, &Change::Volume(vec!["/data".into()]));
        apply(&mut c, &Change::Label(vec![("k".into(), "v".into())]));
        assert_eq!(c["config"]["Labels"]["k"], "v");
        assert_eq!(c["extra"], 1, "unknown fields are kept");
        push_diff_id(&mut c, &Digest::of_bytes(b"x"));
        assert_eq!(
            c["rootfs"]["diff_ids"][0],
            Digest::of_bytes(b"x").to_string()
        );
        let parsed = shoal_image::ImageConfig::parse(&serde_json::to_vec(&c).unwrap()).unwrap();
        assert_eq!(parsed.entrypoint, vec!["/bin/tool".to_string()]);
        assert_eq!(parsed.working_dir, "/app/lib");
    }

    #[test]
    fn commit_changes_parse_like_dockerfile_lines() {
        assert_eq!(
            parse_change("CMD [\"cat\", \"/x\"]").unwrap(),
            Change::Cmd(vec!["cat".into(), "/x".into()])
        );
        assert_eq!(
            parse_change("ENV A=b").unwrap(),
            Change::Env(vec![("A".into(), "b".into())])
        );
        let e = parse_change("RUN x").unwrap_err();
        assert!(e.to_string().contains("only CMD"), "{e}");
        assert!(parse_change("NOPE x").is_err());
    }

    #[test]
    fn paths_join_and_clean() {
        assert_eq!(join_path("/", "app"), "/app");
        assert_eq!(join_path("/a/b", "../c/./d/"), "/a/c/d");
        assert_eq!(join_path("/a", "/x/.."), "/");
        assert_eq!(join_path("/", "../../etc"), "/etc");
    }
}
