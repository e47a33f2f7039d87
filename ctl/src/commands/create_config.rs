//! `shoalctl create namespace NAME`, `create secret generic|docker-registry NAME …` and
//! `create configmap NAME …`:
//! builds the object from literals and files ([`from_sources`], [`docker_registry`],
//! pure but for reading the named files), then creates it. Values are never printed
//! (only `secret/NAME created`).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};
use shoal_api::configmap::{encode_value, secret_type};

use super::{Context, print};
use crate::cli::{CreateObject, CreateSecret, DockerRegistryArgs, FromSourcesArgs};
use crate::error::{CtlError, Target};

/// Runs `create secret …` or `create configmap …`.
pub async fn run(ctx: &mut Context, what: CreateObject) -> Result<(), CtlError> {
    let ns = ctx.namespace().to_string();
    let (kind, name, object, dry_run) = match what {
        CreateObject::Namespace { name, dry_run } => (
            "namespace",
            name.clone(),
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
            dry_run,
        ),
        CreateObject::ConfigMap(a) => {
            let entries = from_sources(&a)?;
            (
                "configmap",
                a.name.clone(),
                configmap(&a.name, &ns, &entries),
                a.dry_run,
            )
        }
        CreateObject::Secret {
            kind: CreateSecret::Generic(a),
        } => {
            let entries = from_sources(&a)?;
            (
                "secret",
                a.name.clone(),
                secret(&a.name, &ns, secret_type::OPAQUE, &entries),
                a.dry_run,
            )
        }
        CreateObject::Secret {
            kind: CreateSecret::DockerRegistry(a),
        } => (
            "secret",
            a.name.clone(),
            docker_registry(&a, &ns),
            a.dry_run,
        ),
    };
    // Checked here as the server would, so that a mistake is reported before sending.
    let checked = shoal_api::Object::from_json(&object).and_then(|o| o.validate().map(|_| o));
    if let Err(e) = checked {
        return Err(CtlError::Usage(format!("{kind} {name}: {e}")));
    }
    if dry_run {
        return print(&format!(
            "{}\n",
            serde_json::to_string_pretty(&object).unwrap_or_default()
        ));
    }
    let ns = if kind == "namespace" { "" } else { ns.as_str() };
    ctx.create(&Target::new(kind, ns, &name), &object).await?;
    print(&format!("{kind}/{name} created\n"))
}

/// The keys and bytes of `--from-literal` and `--from-file`; a key given twice is an error.
pub fn from_sources(a: &FromSourcesArgs) -> Result<BTreeMap<String, Vec<u8>>, CtlError> {
    let mut out = BTreeMap::new();
    let mut add = |k: String, v: Vec<u8>, from: &str| -> Result<(), CtlError> {
        if let Err(e) = shoal_api::configmap::check_data_key(&k) {
            return Err(CtlError::Usage(format!("{from}: {e}")));
        }
        if out.insert(k.clone(), v).is_some() {
            return Err(CtlError::Usage(format!("{from}: key {k:?} given twice")));
        }
        Ok(())
    };
    for lit in &a.from_literal {
        let Some((k, v)) = lit.split_once('=') else {
            return Err(CtlError::Usage(format!(
                "--from-literal {:?}: expected KEY=VALUE",
                lit.split('=').next().unwrap_or("")
            )));
        };
        add(k.to_string(), v.as_bytes().to_vec(), "--from-literal")?;
    }
    for spec in &a.from_file {
        let (key, path) = match spec.split_once('=') {
            Some((k, p)) => (Some(k.to_string()), Path::new(p)),
            None => (None, Path::new(spec.as_str())),
        };
        let flag = format!("--from-file {}", path.display());
        let read = |p: &Path| {
            std::fs::read(p)
                .map_err(|e| CtlError::Usage(format!("--from-file: reading {}: {e}", p.display())))
        };
        if path.is_dir() {
            if key.is_some() {
                return Err(CtlError::Usage(format!(
                    "{flag}: KEY= is for a file, not a directory"
                )));
            }
            let rd =
                std::fs::read_dir(path).map_err(|e| CtlError::Usage(format!("{flag}: {e}")))?;
            let mut files: Vec<_> = rd
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .map(|e| e.path())
                .collect();
            files.sort();
            for f in files {
                let k = f
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                add(k, read(&f)?, &flag)?;
            }
        } else {
            let k = match key {
                Some(k) => k,
                None => path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            };
            add(k, read(path)?, &flag)?;
        }
    }
    Ok(out)
}

fn meta(name: &str, ns: &str) -> Value {
    json!({"name": name, "namespace": ns})
}

/// A ConfigMap: UTF-8 values in `data`, the others in `binaryData`.
pub fn configmap(name: &str, ns: &str, entries: &BTreeMap<String, Vec<u8>>) -> Value {
    let mut data = serde_json::Map::new();
    let mut binary = serde_json::Map::new();
    for (k, v) in entries {
        match std::str::from_utf8(v) {
            Ok(s) => data.insert(k.clone(), s.into()),
            Err(_) => binary.insert(k.clone(), encode_value(v).into()),
        };
    }
    let mut o = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(name, ns)});
    if !data.is_empty() {
        o["data"] = data.into();
    }
    if !binary.is_empty() {
        o["binaryData"] = binary.into();
    }
    o
}

/// A Secret of `type_` with base64 `data`.
pub fn secret(name: &str, ns: &str, type_: &str, entries: &BTreeMap<String, Vec<u8>>) -> Value {
    let data: serde_json::Map<String, Value> = entries
        .iter()
        .map(|(k, v)| (k.clone(), encode_value(v).into()))
        .collect();
    json!({"apiVersion": "v1", "kind": "Secret", "type": type_, "metadata": meta(name, ns), "data": data})
}

/// A `kubernetes.io/dockerconfigjson` Secret, as `kubectl create secret docker-registry`.
pub fn docker_registry(a: &DockerRegistryArgs, ns: &str) -> Value {
    let auth = encode_value(format!("{}:{}", a.docker_username, a.docker_password).as_bytes());
    let mut entry = json!({
        "username": a.docker_username,
        "password": a.docker_password,
        "auth": auth,
    });
    if let Some(e) = &a.docker_email {
        entry["email"] = e.clone().into();
    }
    let config = json!({"auths": {a.docker_server.clone(): entry}});
    let entries = BTreeMap::from([(
        secret_type::DOCKER_CONFIG_JSON_KEY.to_string(),
        config.to_string().into_bytes(),
    )]);
    secret(&a.name, ns, secret_type::DOCKER_CONFIG_JSON, &entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(lits: &[&str], files: &[String]) -> FromSourcesArgs {
        FromSourcesArgs {
            name: "x".into(),
            from_literal: lits.iter().map(|s| s.to_string()).collect(),
            from_file: files.to_vec(),
            dry_run: false,
        }
    }

    #[test]
    fn literals_files_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.conf"), "a=1\n").unwrap();
        std::fs::create_dir(dir.path().join("more")).unwrap();
        std::fs::write(dir.path().join("more/blob"), [0xff, 0x00]).unwrap();
        let f = dir.path().join("app.conf").display().to_string();
        let got = from_sources(&args(
            &["user=admin", "empty="],
            &[
                f.clone(),
                format!("renamed={f}"),
                dir.path().join("more").display().to_string(),
            ],
        ))
        .unwrap();
        assert_eq!(got["user"], b"admin");
        assert_eq!(got["empty"], b"");
        assert_eq!(got["app.conf"], b"a=1\n");
        assert_eq!(got["renamed"], b"a=1\n");
        assert_eq!(got["blob"], vec![0xff, 0x00]);

        let cm = configmap("c", "ns", &got);
        assert_eq!(cm["data"]["user"], "admin");
        assert_eq!(cm["binaryData"]["blob"], "/wA=");
        shoal_api::Object::from_json(&cm)
            .unwrap()
            .validate()
            .unwrap();
        let s = secret("s", "ns", "Opaque", &got);
        assert_eq!(s["data"]["user"], "YWRtaW4=");
        shoal_api::Object::from_json(&s)
            .unwrap()
            .validate()
            .unwrap();

        let e = from_sources(&args(&["novalue"], &[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected KEY=VALUE"), "{e}");
        let e = from_sources(&args(&["a=1", "a=2"], &[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("given twice"), "{e}");
        let e = from_sources(&args(&["a/b=1"], &[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("a/b"), "{e}");
    }

    #[test]
    fn docker_registry_secret_is_a_docker_config() {
        let a = DockerRegistryArgs {
            name: "reg".into(),
            docker_server: "registry.example.com".into(),
            docker_username: "u".into(),
            docker_password: "p".into(),
            docker_email: None,
            dry_run: false,
        };
        let s = docker_registry(&a, "default");
        assert_eq!(s["type"], "kubernetes.io/dockerconfigjson");
        let o = shoal_api::Object::from_json(&s).unwrap();
        o.validate().unwrap();
        let shoal_api::Object::Secret(sec) = o else {
            panic!()
        };
        let cfg: Value = serde_json::from_slice(&sec.value(".dockerconfigjson").unwrap()).unwrap();
        assert_eq!(cfg["auths"]["registry.example.com"]["auth"], "dTpw");
    }
}
