//! The agent's `--registries FILE`, in k3s's `registries.yaml` format: `mirrors`
//! (per registry name, or `*`, a list of endpoints tried in order) and `configs` (per
//! endpoint host: `auth` and `tls`). Parsing and endpoint selection are pure; the file is
//! read by the caller.
//!
//! ```yaml
//! mirrors:
//!   docker.io:
//!     endpoint: ["https://mirror.internal:5000"]
//!   registry.local:5000:
//!     endpoint: ["http://registry.local:5000"]
//! configs:
//!   mirror.internal:5000:
//!     auth: {username: pull, password: secret}
//!     tls: {ca_file: /etc/shoal/mirror-ca.pem}
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::RegistryError;
use super::credentials::Credentials;
use super::reference::Reference;

/// The parsed `registries.yaml`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistriesConfig {
    /// Registry name (`docker.io`, `host:port`, `*`) → its mirrors.
    #[serde(default)]
    pub mirrors: BTreeMap<String, Mirror>,
    /// Endpoint host (`host:port`) → credentials and TLS settings.
    #[serde(default)]
    pub configs: BTreeMap<String, HostConfig>,
    /// Never ask a registry itself, only its mirrors (k3s's
    /// `--disable-default-registry-endpoint`; not part of the file).
    #[serde(skip)]
    pub disable_default_endpoint: bool,
}

/// The mirrors of one registry.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// Endpoint URLs (`https://host[:port]`, `http://host[:port]`), tried in order.
    #[serde(default)]
    pub endpoint: Vec<String>,
}

/// Settings of one endpoint host.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Credentials.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// TLS settings.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// `configs.<host>.auth`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// User name.
    #[serde(default)]
    pub username: Option<String>,
    /// Password.
    #[serde(default)]
    pub password: Option<String>,
    /// `base64(username:password)`, as in a Docker config file.
    #[serde(default)]
    pub auth: Option<String>,
}

/// `configs.<host>.tls`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of CA certificates trusted for this host (in addition to the system's).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Do not verify the server's certificate (testing only).
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// Plain HTTP or HTTPS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `http://`.
    Http,
    /// `https://`.
    Https,
}

/// One place to ask for an image.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// HTTP or HTTPS.
    pub scheme: Scheme,
    /// `host[:port]` (the key of `configs`).
    pub host: String,
}

impl Endpoint {
    /// Parses `http://host[:port]` or `https://host[:port]` (a trailing `/` or `/v2` is
    /// allowed; other paths are not supported).
    pub fn parse(url: &str) -> Option<Self> {
        let (scheme, rest) = if let Some(r) = url.strip_prefix("https://") {
            (Scheme::Https, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (Scheme::Http, r)
        } else {
            return None;
        };
        let rest = rest.trim_end_matches('/');
        let host = rest.strip_suffix("/v2").unwrap_or(rest);
        if host.is_empty() || host.contains('/') || host.contains('@') {
            return None;
        }
        Some(Self {
            scheme,
            host: host.to_string(),
        })
    }

    /// The host name without the port.
    pub fn hostname(&self) -> &str {
        split_host_port(&self.host).0
    }

    /// The port (explicit, or 80/443).
    pub fn port(&self) -> u16 {
        split_host_port(&self.host).1.unwrap_or(match self.scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        })
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        write!(f, "{s}://{}", self.host)
    }
}

/// `host:port` → (`host`, port); `[::1]:5000` → (`::1`, 5000).
pub fn split_host_port(h: &str) -> (&str, Option<u16>) {
    if let Some(rest) = h.strip_prefix('[')
        && let Some((ip, tail)) = rest.split_once(']')
    {
        return (ip, tail.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match h.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, port.parse().ok()),
        _ => (h, None),
    }
}

impl RegistriesConfig {
    /// Parses and checks a `registries.yaml`; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Self, RegistryError> {
        let bad = |message: String| RegistryError::Config {
            source_name: source.to_string(),
            message,
        };
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let cfg: Self = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let loc = inner
                .location()
                .map(|l| format!(" (line {})", l.line()))
                .unwrap_or_default();
            bad(if path == "." {
                format!("{inner}{loc}")
            } else {
                format!("{path}: {inner}{loc}")
            })
        })?;
        for (name, m) in &cfg.mirrors {
            for (i, e) in m.endpoint.iter().enumerate() {
                if Endpoint::parse(e).is_none() {
                    return Err(bad(format!(
                        "mirrors.{name:?}.endpoint[{i}]: {e:?}: expected http://HOST[:PORT] or https://HOST[:PORT]"
                    )));
                }
            }
        }
        for (host, c) in &cfg.configs {
            if let Some(a) = &c.auth
                && a.auth.is_none()
                && a.username.is_none()
            {
                return Err(bad(format!(
                    "configs.{host:?}.auth: expected username and password, or auth"
                )));
            }
            if let Some(t) = &c.tls
                && t.cert_file.is_some() != t.key_file.is_some()
            {
                return Err(bad(format!(
                    "configs.{host:?}.tls: cert_file and key_file go together"
                )));
            }
        }
        Ok(cfg)
    }

    /// Where to ask for `r`, in order: the registry's mirrors (or those of `*`), then
    /// the registry itself over HTTPS unless a mirror endpoint already is that host or
    /// [`Self::disable_default_endpoint`] is set.
    pub fn endpoints(&self, r: &Reference) -> Vec<Endpoint> {
        let mirror = self
            .mirrors
            .get(&r.registry)
            .or_else(|| {
                r.is_docker_hub()
                    .then(|| self.mirrors.get(super::reference::DOCKER_HUB_ENDPOINT))
                    .flatten()
            })
            .or_else(|| self.mirrors.get("*"));
        let mut out: Vec<Endpoint> = mirror
            .map(|m| {
                m.endpoint
                    .iter()
                    .filter_map(|e| Endpoint::parse(e))
                    .collect()
            })
            .unwrap_or_default();
        let default_host = r.default_endpoint_host();
        if !self.disable_default_endpoint
            && !out
                .iter()
                .any(|e| e.host == default_host || e.host == r.registry)
        {
            out.push(Endpoint {
                scheme: Scheme::Https,
                host: default_host.to_string(),
            });
        }
        out
    }

    /// The settings for an endpoint host (falling back to the registry's name).
    pub fn host_config(&self, endpoint: &Endpoint, r: &Reference) -> Option<&HostConfig> {
        self.configs
            .get(&endpoint.host)
            .or_else(|| self.configs.get(endpoint.hostname()))
            .or_else(|| self.configs.get(&r.registry))
    }

    /// The credentials `configs` gives for an endpoint.
    pub fn credentials(
        &self,
        endpoint: &Endpoint,
        r: &Reference,
    ) -> Result<Option<Credentials>, RegistryError> {
        let Some(a) = self.host_config(endpoint, r).and_then(|c| c.auth.as_ref()) else {
            return Ok(None);
        };
        if let Some(auth) = &a.auth {
            return Credentials::from_auth_field(auth).map(Some).ok_or_else(|| {
                RegistryError::Config {
                    source_name: "registries.yaml".into(),
                    message: format!(
                        "configs.{:?}.auth.auth: expected base64 of USER:PASSWORD",
                        endpoint.host
                    ),
                }
            });
        }
        Ok(a.username.as_ref().map(|u| Credentials {
            username: u.clone(),
            password: a.password.clone().unwrap_or_default(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
mirrors:
  docker.io:
    endpoint:
      - "https://mirror.internal:5000"
      - "http://10.0.0.9:5000/v2"
  "127.0.0.1:5000":
    endpoint: ["http://127.0.0.1:5000"]
configs:
  "mirror.internal:5000":
    auth:
      username: pull
      password: s3cret
    tls:
      ca_file: /etc/ca.pem
  "127.0.0.1:5000":
    auth:
      auth: dTpw
    tls:
      insecure_skip_verify: true
"#;

    #[test]
    fn picks_mirrors_then_the_registry() {
        let c = RegistriesConfig::parse(YAML, "r.yaml").unwrap();
        let r = Reference::parse("nginx:1").unwrap();
        let eps: Vec<String> = c.endpoints(&r).iter().map(|e| e.to_string()).collect();
        assert_eq!(
            eps,
            [
                "https://mirror.internal:5000",
                "http://10.0.0.9:5000",
                "https://registry-1.docker.io"
            ]
        );
        let creds = c.credentials(&c.endpoints(&r)[0], &r).unwrap().unwrap();
        assert_eq!(
            (creds.username.as_str(), creds.password.as_str()),
            ("pull", "s3cret")
        );
        // A mirror that is the registry itself replaces the HTTPS default.
        let r = Reference::parse("127.0.0.1:5000/busybox:v1").unwrap();
        let eps = c.endpoints(&r);
        assert_eq!(eps.len(), 1);
        assert_eq!(eps[0].scheme, Scheme::Http);
        assert_eq!(eps[0].port(), 5000);
        let creds = c.credentials(&eps[0], &r).unwrap().unwrap();
        assert_eq!(
            (creds.username.as_str(), creds.password.as_str()),
            ("u", "p")
        );
        assert!(
            c.host_config(&eps[0], &r)
                .unwrap()
                .tls
                .as_ref()
                .unwrap()
                .insecure_skip_verify
        );
        // No mirror: the registry over HTTPS.
        let r = Reference::parse("quay.io/a/b").unwrap();
        assert_eq!(c.endpoints(&r)[0].to_string(), "https://quay.io");
        assert_eq!(c.endpoints(&r)[0].port(), 443);
        let mut off = c.clone();
        off.disable_default_endpoint = true;
        assert!(off.endpoints(&r).is_empty());
        assert_eq!(off.endpoints(&Reference::parse("nginx").unwrap()).len(), 2);
        // `*` applies to every registry without its own entry.
        let c =
            RegistriesConfig::parse("mirrors:\n  '*':\n    endpoint: [http://m:1]\n", "r").unwrap();
        assert_eq!(c.endpoints(&r)[0].to_string(), "http://m:1");
        assert_eq!(c.endpoints(&r).len(), 2);
    }

    #[test]
    fn rejects_bad_files_with_the_field() {
        for (text, want) in [
            (
                "mirrors:\n  x:\n    endpoint: [ftp://x]\n",
                "mirrors.\"x\".endpoint[0]",
            ),
            ("mirror: {}\n", "unknown field `mirror`"),
            ("configs:\n  h:\n    tls: {ca_fle: x}\n", "configs.h.tls"),
            (
                "configs:\n  h:\n    auth: {password: x}\n",
                "expected username",
            ),
        ] {
            let e = RegistriesConfig::parse(text, "reg.yaml")
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("reg.yaml: "), "{e}");
            assert!(e.contains(want), "{e} lacks {want}");
        }
        assert!(RegistriesConfig::parse("", "r").unwrap().mirrors.is_empty());
        assert_eq!(split_host_port("[::1]:5000"), ("::1", Some(5000)));
        assert_eq!(split_host_port("h"), ("h", None));
    }
}
