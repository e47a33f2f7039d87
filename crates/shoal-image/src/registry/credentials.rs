//! Credentials for registries: Docker config files (the `.dockerconfigjson` of a
//! `kubernetes.io/dockerconfigjson` Secret, `{"auths": {HOST: {auth | username,
//! password}}}`) and the `configs` of `registries.yaml`. Pure: no I/O.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use serde::Deserialize;

use super::RegistryError;
use super::hosts::{Endpoint, RegistriesConfig};
use super::reference::{DOCKER_HUB, Reference};

/// A user name and password (or identity token as the password).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// Decodes a Docker `auth` field: `base64(username:password)`.
    pub fn from_auth_field(auth: &str) -> Option<Self> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()?;
        let s = String::from_utf8(raw).ok()?;
        let (u, p) = s.split_once(':')?;
        Some(Self {
            username: u.to_string(),
            password: p.to_string(),
        })
    }

    /// The value of an `Authorization: Basic …` header.
    pub fn basic_header(&self) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", self.username, self.password))
        )
    }
}

#[derive(Deserialize)]
struct RawDockerConfig {
    auths: BTreeMap<String, RawAuth>,
}

#[derive(Deserialize)]
struct RawAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// A Docker config file's `auths`, keyed by normalised registry host.
#[derive(Clone, Debug, Default)]
pub struct DockerConfig {
    auths: BTreeMap<String, Credentials>,
}

/// `https://index.docker.io/v1/` → `docker.io`; `https://host:5000/x` → `host:5000`.
fn normalize_key(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = k.split('/').next().unwrap_or(k);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_string()
        }
        h => h.to_string(),
    }
}

impl DockerConfig {
    /// Parses a Docker config (`.dockerconfigjson`); `source` names it in errors (the
    /// Secret).
    pub fn parse(data: &[u8], source: &str) -> Result<Self, RegistryError> {
        let bad = |message: String| RegistryError::Config {
            source_name: source.to_string(),
            message,
        };
        let raw: RawDockerConfig =
            serde_json::from_slice(data).map_err(|e| bad(format!("not a Docker config: {e}")))?;
        let mut auths = BTreeMap::new();
        for (key, a) in raw.auths {
            let creds = match (&a.auth, &a.username) {
                (Some(auth), _) if !auth.is_empty() => Credentials::from_auth_field(auth)
                    .ok_or_else(|| {
                        bad(format!(
                            "auths.{key:?}.auth: expected base64 of USER:PASSWORD"
                        ))
                    })?,
                (_, Some(u)) => Credentials {
                    username: u.clone(),
                    password: a.password.clone().unwrap_or_default(),
                },
                _ => {
                    return Err(bad(format!(
                        "auths.{key:?}: expected auth, or username and password"
                    )));
                }
            };
            auths.insert(normalize_key(&key), creds);
        }
        Ok(Self { auths })
    }

    /// The user's Docker config, as `docker login` writes it: `$DOCKER_CONFIG/config.json`,
    /// else `$HOME/.docker/config.json`; `None` when there is none. Entries without
    /// credentials (those of a credential helper, `"host": {}`) are left out.
    pub fn load_user() -> Result<Option<Self>, RegistryError> {
        let path = match (std::env::var_os("DOCKER_CONFIG"), std::env::var_os("HOME")) {
            (Some(d), _) => std::path::PathBuf::from(d).join("config.json"),
            (None, Some(h)) => std::path::PathBuf::from(h).join(".docker/config.json"),
            (None, None) => return Ok(None),
        };
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(RegistryError::Config {
                    source_name: path.display().to_string(),
                    message: e.to_string(),
                });
            }
        };
        Self::parse_user(&data, &path.display().to_string()).map(Some)
    }

    /// [`Self::parse`] for a user's config file: entries without credentials are skipped
    /// and a file without `auths` is empty.
    pub fn parse_user(data: &[u8], source: &str) -> Result<Self, RegistryError> {
        let mut v: serde_json::Value =
            serde_json::from_slice(data).map_err(|e| RegistryError::Config {
                source_name: source.to_string(),
                message: format!("not a Docker config: {e}"),
            })?;
        let auths = v
            .as_object_mut()
            .map(|o| o.entry("auths").or_insert_with(|| serde_json::json!({})));
        if let Some(serde_json::Value::Object(a)) = auths {
            a.retain(|_, e| {
                e.get("auth")
                    .and_then(|x| x.as_str())
                    .is_some_and(|x| !x.is_empty())
                    || e.get("username").is_some()
            });
        }
        let data = serde_json::to_vec(&v).unwrap_or_default();
        Self::parse(&data, source)
    }

    /// The credentials for a registry host (`docker.io`, `host:port`).
    pub fn get(&self, host: &str) -> Option<&Credentials> {
        self.auths.get(&normalize_key(host))
    }
}

/// Every source of credentials for one pull: the pod's `imagePullSecrets` (in order),
/// then the node's `registries.yaml`.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    /// Parsed pull secrets, in the pod's order.
    pub secrets: Vec<DockerConfig>,
}

impl Keyring {
    /// The credentials for `endpoint` while pulling `r`: a pull secret for the endpoint's
    /// host or the image's registry, else `registries.yaml`'s `configs`.
    pub fn credentials(
        &self,
        endpoint: &Endpoint,
        r: &Reference,
        config: &RegistriesConfig,
    ) -> Result<Option<Credentials>, RegistryError> {
        for s in &self.secrets {
            if let Some(c) = s.get(&endpoint.host).or_else(|| s.get(&r.registry)) {
                return Ok(Some(c.clone()));
            }
        }
        config.credentials(endpoint, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_docker_configs() {
        let json = br#"{"auths":{
            "https://index.docker.io/v1/":{"auth":"dTE6cDE="},
            "127.0.0.1:5000":{"username":"u2","password":"p:2"}}}"#;
        let c = DockerConfig::parse(json, "secret s").unwrap();
        assert_eq!(c.get("docker.io").unwrap().username, "u1");
        assert_eq!(c.get("docker.io").unwrap().password, "p1");
        assert_eq!(c.get("127.0.0.1:5000").unwrap().password, "p:2");
        assert!(c.get("quay.io").is_none());
        assert!(!format!("{:?}", c).contains("p1"));
        let e = DockerConfig::parse(br#"{"auths":{"h":{"auth":"!!"}}}"#, "secret s")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("secret s: auths.\"h\".auth"), "{e}");
        assert!(DockerConfig::parse(b"{}", "x").is_err());
        assert_eq!(
            Credentials::from_auth_field("dTE6cDE=")
                .unwrap()
                .basic_header(),
            "Basic dTE6cDE="
        );
    }

    #[test]
    fn user_configs_skip_credential_helper_entries() {
        let json = br#"{"auths":{"h:1":{},"h:2":{"auth":"eDp5"}},"credsStore":"pass"}"#;
        let c = DockerConfig::parse_user(json, "config.json").unwrap();
        assert!(c.get("h:1").is_none());
        assert_eq!(c.get("h:2").unwrap().username, "x");
        assert!(DockerConfig::parse_user(b"{}", "config.json").is_ok());
        let e = DockerConfig::parse_user(b"[", "/home/u/.docker/config.json")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/home/u/.docker/config.json: not a Docker config"),
            "{e}"
        );
    }

    #[test]
    fn pull_secrets_win_over_registries_yaml() {
        let cfg = RegistriesConfig::parse(
            "configs:\n  'h:1':\n    auth: {username: node, password: n}\n",
            "r",
        )
        .unwrap();
        let r = Reference::parse("h:1/app:v1").unwrap();
        let ep = &cfg.endpoints(&r)[0];
        let empty = Keyring::default();
        assert_eq!(
            empty.credentials(ep, &r, &cfg).unwrap().unwrap().username,
            "node"
        );
        let k = Keyring {
            secrets: vec![
                DockerConfig::parse(br#"{"auths":{"other":{"auth":"eDp5"}}}"#, "a").unwrap(),
                DockerConfig::parse(br#"{"auths":{"h:1":{"auth":"eDp5"}}}"#, "b").unwrap(),
            ],
        };
        assert_eq!(k.credentials(ep, &r, &cfg).unwrap().unwrap().username, "x");
    }
}
