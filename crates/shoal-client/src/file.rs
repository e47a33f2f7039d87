//! The client configuration file (`SHOAL_CONFIG`, default `~/.shoal/config`; the first
//! controller writes `DATA_DIR/admin.conf`): kubeconfig's shape, so that a Kubernetes
//! user reads it at sight — clusters (controller addresses and the CA), users (client
//! certificate and key), contexts (a cluster, a user and a default namespace) and the
//! current context.
//!
//! ```yaml
//! apiVersion: v1
//! kind: Config
//! current-context: admin@shoal
//! clusters:
//! - name: shoal
//!   cluster:
//!     servers: [10.0.0.1:7000, 10.0.0.2:7000]
//!     certificate-authority-data: <base64 of the CA PEM>
//! users:
//! - name: admin
//!   user:
//!     client-certificate-data: <base64 PEM>
//!     client-key-data: <base64 PEM>
//! contexts:
//! - name: admin@shoal
//!   context: {cluster: shoal, user: admin, namespace: default}
//! ```

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use shoal_pki::tls::{CertSlot, Expect, Trust, client_config};

use crate::ClientError;

/// The whole file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Always `v1`.
    #[serde(rename = "apiVersion", default = "v1")]
    pub api_version: String,
    /// Always `Config`.
    #[serde(default = "config_kind")]
    pub kind: String,
    /// The context used when none is given.
    #[serde(rename = "current-context", default)]
    pub current_context: String,
    /// Named clusters.
    #[serde(default)]
    pub clusters: Vec<NamedCluster>,
    /// Named users.
    #[serde(default)]
    pub users: Vec<NamedUser>,
    /// Named contexts.
    #[serde(default)]
    pub contexts: Vec<NamedContext>,
}

fn v1() -> String {
    "v1".into()
}
fn config_kind() -> String {
    "Config".into()
}

/// A cluster entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NamedCluster {
    /// Its name.
    pub name: String,
    /// Where and what to trust.
    pub cluster: ClusterEntry,
}

/// Where a cluster's controllers are and its CA.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterEntry {
    /// Controller addresses (`host:port`), tried in order.
    pub servers: Vec<String>,
    /// The CA certificate, PEM in base64.
    #[serde(rename = "certificate-authority-data")]
    pub certificate_authority_data: String,
}

/// A user entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NamedUser {
    /// Its name.
    pub name: String,
    /// Its credentials.
    pub user: UserEntry,
}

/// A client certificate and key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    /// Certificate PEM in base64.
    #[serde(rename = "client-certificate-data")]
    pub client_certificate_data: String,
    /// Key PEM in base64.
    #[serde(rename = "client-key-data")]
    pub client_key_data: String,
}

/// A context entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NamedContext {
    /// Its name.
    pub name: String,
    /// The cluster, user and namespace.
    pub context: ContextEntry,
}

/// A cluster, a user and a default namespace.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ContextEntry {
    /// A cluster's name.
    pub cluster: String,
    /// A user's name.
    pub user: String,
    /// Default namespace of commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// What a context resolves to.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The context's name.
    pub context: String,
    /// Controller addresses.
    pub servers: Vec<String>,
    /// CA certificate PEM.
    pub ca_pem: String,
    /// Client certificate PEM.
    pub cert_pem: String,
    /// Client key PEM.
    pub key_pem: String,
    /// Default namespace.
    pub namespace: Option<String>,
}

fn b64(what: &str, v: &str) -> Result<String, String> {
    let raw = STANDARD
        .decode(v.trim())
        .map_err(|e| format!("{what}: not base64 ({e})"))?;
    String::from_utf8(raw).map_err(|_| format!("{what}: not a PEM text"))
}

/// Base64 of a PEM text (for the `*-data` fields).
pub fn encode_data(pem: &str) -> String {
    STANDARD.encode(pem.as_bytes())
}

impl ConfigFile {
    /// A file with one cluster, one user and one context (the current one).
    pub fn single(
        cluster: &str,
        servers: Vec<String>,
        ca_pem: &str,
        user: &str,
        cert_pem: &str,
        key_pem: &str,
        namespace: Option<String>,
    ) -> ConfigFile {
        let context = format!("{user}@{cluster}");
        ConfigFile {
            api_version: v1(),
            kind: config_kind(),
            current_context: context.clone(),
            clusters: vec![NamedCluster {
                name: cluster.into(),
                cluster: ClusterEntry {
                    servers,
                    certificate_authority_data: encode_data(ca_pem),
                },
            }],
            users: vec![NamedUser {
                name: user.into(),
                user: UserEntry {
                    client_certificate_data: encode_data(cert_pem),
                    client_key_data: encode_data(key_pem),
                },
            }],
            contexts: vec![NamedContext {
                name: context,
                context: ContextEntry {
                    cluster: cluster.into(),
                    user: user.into(),
                    namespace,
                },
            }],
        }
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<ConfigFile, ClientError> {
        let err = |message: String| ClientError::Config {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            err(if e.kind() == std::io::ErrorKind::NotFound {
                "no such file: give a client configuration with --config or SHOAL_CONFIG (the first controller writes DATA_DIR/admin.conf; `shoalctl config create-user` makes others)".into()
            } else {
                e.to_string()
            })
        })?;
        Self::parse(&text).map_err(err)
    }

    /// Parses a file's text.
    pub fn parse(text: &str) -> Result<ConfigFile, String> {
        let f: ConfigFile = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
        if f.kind != "Config" {
            return Err(format!("kind {:?}: expected Config", f.kind));
        }
        Ok(f)
    }

    /// Writes the file (0600, atomic).
    pub fn save(&self, path: &Path) -> Result<(), ClientError> {
        let text = serde_yaml_ng::to_string(self).map_err(|e| ClientError::Config {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            shoal_files::private_dir(dir).map_err(|e| ClientError::Config {
                path: dir.display().to_string(),
                message: e.to_string(),
            })?;
        }
        shoal_files::write_atomic(path, text.as_bytes(), shoal_files::FILE_MODE).map_err(|e| {
            ClientError::Config {
                path: path.display().to_string(),
                message: e.to_string(),
            }
        })
    }

    /// Adds (or replaces, by name) the clusters, users and contexts of `other`.
    pub fn merge(&mut self, other: ConfigFile) {
        for c in other.clusters {
            self.clusters.retain(|x| x.name != c.name);
            self.clusters.push(c);
        }
        for u in other.users {
            self.users.retain(|x| x.name != u.name);
            self.users.push(u);
        }
        for c in other.contexts {
            self.contexts.retain(|x| x.name != c.name);
            self.contexts.push(c);
        }
        if self.current_context.is_empty() {
            self.current_context = other.current_context;
        }
    }

    /// The context `name` (or the current one), with its cluster and user.
    pub fn resolve(&self, name: Option<&str>) -> Result<Resolved, String> {
        let name = match name {
            Some(n) => n,
            None if !self.current_context.is_empty() => &self.current_context,
            None => {
                return Err(
                    "no current-context: use --context or `shoalctl config use-context NAME`"
                        .into(),
                );
            }
        };
        let ctx = self
            .contexts
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| {
                format!(
                    "no context {name:?} (contexts: {})",
                    self.contexts
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        let cluster = self
            .clusters
            .iter()
            .find(|c| c.name == ctx.context.cluster)
            .ok_or_else(|| format!("context {name:?}: no cluster {:?}", ctx.context.cluster))?;
        let user = self
            .users
            .iter()
            .find(|u| u.name == ctx.context.user)
            .ok_or_else(|| format!("context {name:?}: no user {:?}", ctx.context.user))?;
        Ok(Resolved {
            context: name.to_string(),
            servers: cluster.cluster.servers.clone(),
            ca_pem: b64(
                &format!("cluster {:?} certificate-authority-data", cluster.name),
                &cluster.cluster.certificate_authority_data,
            )?,
            cert_pem: b64(
                &format!("user {:?} client-certificate-data", user.name),
                &user.user.client_certificate_data,
            )?,
            key_pem: b64(
                &format!("user {:?} client-key-data", user.name),
                &user.user.client_key_data,
            )?,
            namespace: ctx.context.namespace.clone(),
        })
    }
}

impl Resolved {
    /// The TLS settings of a client using this context: controllers verified against the
    /// CA, the user's certificate presented. An expired certificate is an error here,
    /// before any connection.
    pub fn tls(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        let slot = CertSlot::from_pem(&self.cert_pem, &self.key_pem)
            .map_err(|e| format!("context {:?}: {e}", self.context))?;
        let info = slot.info();
        if info.not_after < std::time::SystemTime::now() {
            let ago = std::time::SystemTime::now()
                .duration_since(info.not_after)
                .unwrap_or_default();
            return Err(format!(
                "context {:?}: the client certificate expired {}s ago; ask an admin for a new one (`shoalctl config create-user`)",
                self.context,
                ago.as_secs()
            ));
        }
        client_config(
            &Trust::Ca(self.ca_pem.clone()),
            Some(&slot),
            Expect::Controller,
        )
        .map_err(|e| format!("context {:?}: {e}", self.context))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_file_round_trips_and_resolves() {
        let f = ConfigFile::single("c", vec!["a:1".into()], "CA", "admin", "CERT", "KEY", None);
        let text = serde_yaml_ng::to_string(&f).unwrap();
        assert!(text.contains("current-context: admin@c"), "{text}");
        assert!(text.contains("certificate-authority-data"), "{text}");
        let back = ConfigFile::parse(&text).unwrap();
        assert_eq!(back, f);
        let r = back.resolve(None).unwrap();
        assert_eq!(
            (r.ca_pem.as_str(), r.cert_pem.as_str(), r.key_pem.as_str()),
            ("CA", "CERT", "KEY")
        );
        assert!(back.resolve(Some("nope")).unwrap_err().contains("admin@c"));
    }

    #[test]
    fn merged_files_keep_both_clusters() {
        let mut a = ConfigFile::single("a", vec!["a:1".into()], "CA", "u", "C", "K", None);
        let b = ConfigFile::single(
            "b",
            vec!["b:1".into()],
            "CB",
            "v",
            "C2",
            "K2",
            Some("team".into()),
        );
        a.merge(b);
        assert_eq!(a.current_context, "u@a");
        let r = a.resolve(Some("v@b")).unwrap();
        assert_eq!(r.servers, ["b:1"]);
        assert_eq!(r.namespace.as_deref(), Some("team"));
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        assert!(
            ConfigFile::parse("kind: Pod\n")
                .unwrap_err()
                .contains("Config")
        );
        assert!(
            ConfigFile::parse("kind: Config\nbogus: 1\n")
                .unwrap_err()
                .contains("bogus")
        );
        let mut f = ConfigFile::single("c", vec![], "CA", "u", "C", "K", None);
        f.users[0].user.client_key_data = "***".into();
        assert!(f.resolve(None).unwrap_err().contains("client-key-data"));
    }
}
