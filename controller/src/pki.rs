//! The controller's identity and the cluster CA (see docs/security.md).
//!
//! At start, before the store opens, a controller gets its certificate in one of four
//! ways ([`prepare`]): it already has one in `DATA_DIR/pki` (a restart); it restores a
//! backup (the CA comes from the backup); it joins with `--join ADDR --join-token T
//! --ca-hash H` (the Join call, CA checked by hash, key made here); or it is the first
//! controller of a new cluster (a new CA, and `DATA_DIR/admin.conf` for the operator).
//!
//! The CA key reaches the other controllers through the store (key [`CA_KEY`], never
//! served by the API; a snapshot holds it), so any controller can sign node
//! certificates; each keeps a copy in `pki/ca.key` (0600) once it has it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use shoal_pki::files::PkiDir;
use shoal_pki::tls::{CertSlot, ClientAuth, Expect, Trust};
use shoal_pki::{Ca, Identity};
use shoal_store::{Consistency, Store, Write};
use tracing::{info, warn};

/// Store key of the cluster CA (certificate and key).
pub const CA_KEY: &str = "Pki//ca";
/// Store key prefix of join tokens (`JoinToken//ID`).
pub const TOKEN_PREFIX: &str = "JoinToken//";

/// How a controller gets its identity (from the command line).
#[derive(Debug, Clone)]
pub struct PkiOptions {
    /// This member's id.
    pub id: u64,
    /// Its data directory.
    pub data_dir: std::path::PathBuf,
    /// Its advertised `host:port`.
    pub advertise: String,
    /// Its listen address.
    pub listen: std::net::SocketAddr,
    /// Extra names and addresses for its certificate (`--tls-san`).
    pub tls_san: Vec<String>,
    /// `--join ADDR`.
    pub join: Option<String>,
    /// `--join-token`.
    pub join_token: Option<String>,
    /// `--ca-hash`.
    pub ca_hash: Option<String>,
    /// The CA of a backup being restored.
    pub restore_ca: Option<Ca>,
    /// Lifetime of the server and node certificates this controller issues.
    pub cert_lifetime: Duration,
    /// Where a joining controller writes the encryption key of its Join response.
    pub encryption_key_file: std::path::PathBuf,
}

/// The TLS state of a running controller.
#[derive(Debug, Clone)]
pub struct ControllerTls {
    /// The cluster CA certificate (PEM).
    pub ca_pem: String,
    /// This controller's certificate (server and client), rotated in place.
    pub slot: CertSlot,
    /// Names and addresses on its certificate.
    pub sans: Vec<String>,
    /// Lifetime of issued server and node certificates.
    pub cert_lifetime: Duration,
    /// The PKI directory.
    pub dir: PkiDir,
    /// Member id.
    pub id: u64,
}

fn host_of(addr: &str) -> String {
    match addr.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']').to_string(),
        None => addr.to_string(),
    }
}

/// The names on a controller certificate: its advertised and listen hosts, loopback,
/// and `--tls-san`.
pub fn controller_sans(o: &PkiOptions) -> Vec<String> {
    let mut sans = vec![host_of(&o.advertise)];
    if !o.listen.ip().is_unspecified() {
        sans.push(o.listen.ip().to_string());
    }
    sans.extend(["127.0.0.1".to_string(), "localhost".to_string()]);
    sans.extend(o.tls_san.iter().cloned());
    let mut seen = std::collections::BTreeSet::new();
    sans.retain(|s| seen.insert(s.clone()));
    sans
}

/// Gets this controller's identity (see the module docs) and writes the PKI files.
pub async fn prepare(o: &PkiOptions) -> anyhow::Result<ControllerTls> {
    let dir = PkiDir::under(&o.data_dir);
    let sans = controller_sans(o);
    let me = Identity::Controller { id: o.id };
    if dir.has_identity() {
        let ca_pem = dir.read("ca.crt")?.unwrap_or_default();
        let cert = dir.read("tls.crt")?.unwrap_or_default();
        let key = dir.read("tls.key")?.unwrap_or_default();
        let slot = CertSlot::from_pem(&cert, &key)
            .with_context(|| format!("while loading {}", dir.file("tls.crt").display()))?;
        if slot.info().identity != Some(me.clone()) {
            bail!(
                "{} is the certificate of {:?}, not of controller {} (wrong --id or data dir?)",
                dir.file("tls.crt").display(),
                slot.info().identity,
                o.id
            );
        }
        return Ok(ControllerTls {
            ca_pem,
            slot,
            sans,
            cert_lifetime: o.cert_lifetime,
            dir,
            id: o.id,
        });
    }
    let (ca_pem, cert, key) = if let Some(addr) = &o.join {
        let token = o.join_token.as_deref().context(
            "--join needs --join-token and --ca-hash (from `shoalctl token create --usage controller`)",
        )?;
        let hash = o
            .ca_hash
            .as_deref()
            .context("--join needs --ca-hash (printed by `shoalctl token create`)")?;
        let j = shoal_client::join::join(
            addr,
            token,
            hash,
            shoal_proto::JoinRequest {
                kind: "controller".into(),
                controller_id: o.id,
                addresses: sans.clone(),
                ..Default::default()
            },
            &me,
        )
        .await?;
        if j.encryption_key.is_empty() {
            bail!(
                "{addr} sent no encryption key for Secrets (an older controller?): copy {} from a controller of the cluster, then start this one again",
                o.encryption_key_file.display()
            );
        }
        crate::encryption::SecretCipher::new(&j.encryption_key, &o.encryption_key_file)?
            .save()
            .context("while saving the encryption key received on joining")?;
        (j.ca_pem, j.cert_pem, j.key_pem)
    } else {
        let (ca, new) = match &o.restore_ca {
            Some(ca) => (ca.clone(), false),
            None => (
                Ca::generate("shoal").context("while making the cluster CA")?,
                true,
            ),
        };
        dir.write("ca.key", ca.key_pem())?;
        let (cert, key) = ca.issue(&me, &sans, o.cert_lifetime)?;
        write_admin_conf(&o.data_dir, &ca, &o.advertise)?;
        if new {
            info!(ca_hash = %ca.hash(), "initialised a new cluster CA");
        }
        (
            ca.cert_pem().to_string(),
            format!("{cert}{}", ca.cert_pem()),
            key,
        )
    };
    dir.write("ca.crt", &ca_pem)?;
    dir.write("tls.key", &key)?;
    dir.write("tls.crt", &cert)?;
    let slot = CertSlot::from_pem(&cert, &key)?;
    Ok(ControllerTls {
        ca_pem,
        slot,
        sans,
        cert_lifetime: o.cert_lifetime,
        dir,
        id: o.id,
    })
}

/// Writes `DATA_DIR/admin.conf` (0600): an admin certificate valid one year.
fn write_admin_conf(data_dir: &Path, ca: &Ca, advertise: &str) -> anyhow::Result<()> {
    let admin = Identity::User {
        name: "admin".into(),
        role: shoal_pki::Role::Admin,
        namespace: None,
    };
    let (cert, key) = ca.issue(&admin, &[], Duration::from_secs(365 * 24 * 3600))?;
    let file = shoal_client::file::ConfigFile::single(
        "shoal",
        vec![advertise.to_string()],
        ca.cert_pem(),
        "admin",
        &cert,
        &key,
        None,
    );
    let path = data_dir.join("admin.conf");
    file.save(&path)
        .with_context(|| format!("while writing {}", path.display()))?;
    info!(path = %path.display(), "wrote the admin client configuration (export SHOAL_CONFIG={})", path.display());
    Ok(())
}

impl ControllerTls {
    /// The server settings (client certificates optional for the join call only).
    pub fn server_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        Ok(shoal_pki::tls::server_config(
            &self.ca_pem,
            &self.slot,
            ClientAuth::Optional,
        )?)
    }

    /// Client settings for connections to other controllers.
    pub fn peer_client(&self) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        Ok(shoal_pki::tls::client_config(
            &Trust::Ca(self.ca_pem.clone()),
            Some(&self.slot),
            Expect::Controller,
        )?)
    }

    /// Client settings for connections to the agent of node `name`.
    pub fn agent_client(&self, name: &str) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        Ok(shoal_pki::tls::client_config(
            &Trust::Ca(self.ca_pem.clone()),
            Some(&self.slot),
            Expect::Node(name.to_string()),
        )?)
    }

    /// The CA with its key: from `pki/ca.key`, or from the store (then saved there).
    pub async fn signing_ca(&self, store: &Store) -> Result<Ca, String> {
        if let (Ok(Some(c)), Ok(Some(k))) = (self.dir.read("ca.crt"), self.dir.read("ca.key"))
            && let Ok(ca) = Ca::from_pem(&c, &k)
        {
            return Ok(ca);
        }
        let v = store
            .get(CA_KEY, Consistency::Local)
            .await
            .map_err(|e| format!("reading the CA from the store: {e}"))?
            .ok_or(
                "this controller has not received the cluster CA yet (it is still catching up)",
            )?;
        let ca = ca_from_value(&v)?;
        if let Err(e) = self.dir.write("ca.key", ca.key_pem()) {
            warn!("could not keep a copy of the CA key: {e}");
        }
        Ok(ca)
    }
}

/// The CA stored under [`CA_KEY`].
pub fn ca_from_value(v: &Value) -> Result<Ca, String> {
    let cert = v
        .pointer("/spec/certificate")
        .and_then(Value::as_str)
        .unwrap_or("");
    let key = v.pointer("/spec/key").and_then(Value::as_str).unwrap_or("");
    Ca::from_pem(cert, key).map_err(|e| format!("the stored CA: {e}"))
}

/// The CA of a backup being restored (`None` for a backup made before access control).
pub fn ca_of_backup(b: &shoal_store::Backup) -> Option<Ca> {
    b.objects
        .iter()
        .find(|(k, _)| k == CA_KEY)
        .and_then(|(_, v)| ca_from_value(v).ok())
}

/// Puts the CA into the store if it is not there yet (the first controller, once it
/// leads). Retries until it is written or found.
pub async fn publish_ca(store: Store, tls: ControllerTls) {
    loop {
        match store.get(CA_KEY, Consistency::Linearizable).await {
            Ok(Some(_)) => return,
            Ok(None) => {
                let (Ok(Some(c)), Ok(Some(k))) = (tls.dir.read("ca.crt"), tls.dir.read("ca.key"))
                else {
                    // A joined controller: the CA arrives through the log.
                    return;
                };
                let object = json!({
                    "kind": "ClusterCA",
                    "metadata": {"name": "ca"},
                    "spec": {"certificate": c, "key": k},
                });
                match store
                    .write(vec![Write::Create {
                        key: CA_KEY.into(),
                        object,
                    }])
                    .await
                {
                    Ok(_) => {
                        info!("the cluster CA is in the store");
                        return;
                    }
                    Err(shoal_store::StoreError::AlreadyExists { .. }) => return,
                    Err(e) => tracing::debug!("publishing the CA: {e}"),
                }
            }
            Err(e) => tracing::debug!("checking for the CA: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Renews this controller's certificate at two thirds of its life (signed locally with
/// the CA), forever. Open connections keep their session; new handshakes get the new one.
pub async fn rotate(store: Store, tls: ControllerTls) {
    loop {
        let at = tls.slot.info().renew_at();
        tokio::time::sleep(shoal_pki::tls::until(at)).await;
        let me = Identity::Controller { id: tls.id };
        let res = async {
            let ca = tls.signing_ca(&store).await?;
            let (cert, key) = ca
                .issue(&me, &tls.sans, tls.cert_lifetime)
                .map_err(|e| e.to_string())?;
            let chain = format!("{cert}{}", ca.cert_pem());
            tls.dir.write("tls.key", &key).map_err(|e| e.to_string())?;
            tls.dir
                .write("tls.crt", &chain)
                .map_err(|e| e.to_string())?;
            tls.slot.replace(&chain, &key).map_err(|e| e.to_string())
        }
        .await;
        match res {
            Ok(()) => {
                info!(until = ?tls.slot.info().not_after, "renewed this controller's certificate")
            }
            Err(e) => {
                warn!("renewing this controller's certificate failed (retry in 10 s): {e}");
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        }
    }
}
