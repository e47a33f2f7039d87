//! The agent's identity (docs/security.md): a node certificate obtained at the first
//! start with `--join-token` and `--ca-hash` (the CA is checked by hash, the key is
//! made here and never leaves the node), kept in `DATA_DIR/agent/pki`, renewed at two
//! thirds of its life through the `Renew` call, and used for both directions: as the
//! client certificate towards the controllers and as the server certificate of the
//! Agent API, which accepts only controllers.

use std::sync::Arc;

use anyhow::{Context, bail};
use shoal_client::Client;
use shoal_pki::files::PkiDir;
use shoal_pki::layer::Policy;
use shoal_pki::tls::{CertSlot, ClientAuth, Expect, Trust};
use shoal_pki::{CertInfo, Identity};
use tracing::{info, warn};

/// The node's TLS state.
#[derive(Debug, Clone)]
pub struct NodeTls {
    /// The cluster CA certificate.
    pub ca_pem: String,
    /// The node certificate, rotated in place.
    pub slot: CertSlot,
    /// Names on it (the advertised host).
    pub sans: Vec<String>,
    dir: PkiDir,
}

/// Loads the node's certificate, or joins with the token to get one.
pub async fn prepare(
    data_dir: &std::path::Path,
    name: &str,
    controllers: &str,
    advertise_host: &str,
    token: Option<&str>,
    ca_hash: Option<&str>,
) -> anyhow::Result<NodeTls> {
    let dir = PkiDir::under(&data_dir.join("agent"));
    let me = Identity::Node {
        name: name.to_string(),
    };
    let sans = vec![advertise_host.to_string()];
    if dir.has_identity() {
        let ca_pem = dir.read("ca.crt")?.unwrap_or_default();
        let slot = CertSlot::from_pem(
            &dir.read("tls.crt")?.unwrap_or_default(),
            &dir.read("tls.key")?.unwrap_or_default(),
        )
        .with_context(|| format!("while loading {}", dir.file("tls.crt").display()))?;
        if slot.info().identity.as_ref() != Some(&me) {
            bail!(
                "{} belongs to {:?}, not node {name} (wrong --name or --data-dir?)",
                dir.file("tls.crt").display(),
                slot.info().identity
            );
        }
        return Ok(NodeTls {
            ca_pem,
            slot,
            sans,
            dir,
        });
    }
    let (Some(token), Some(hash)) = (token, ca_hash) else {
        bail!(
            "this node has no certificate yet: start it once with --join-token ID.SECRET and --ca-hash sha256:HEX (from `shoalctl token create` on an admin's machine)"
        );
    };
    let endpoints = shoal_client::Endpoints::parse(controllers).context("--controller")?;
    let mut last = None;
    for a in endpoints.addrs() {
        match shoal_client::join::join(
            &a.display,
            token,
            hash,
            shoal_proto::JoinRequest {
                kind: "node".into(),
                name: name.to_string(),
                addresses: sans.clone(),
                ..Default::default()
            },
            &me,
        )
        .await
        {
            Ok(j) => {
                dir.write("ca.crt", &j.ca_pem)?;
                dir.write("tls.key", &j.key_pem)?;
                dir.write("tls.crt", &j.cert_pem)?;
                info!(controller = %a.display, "joined the cluster; node certificate in {}", dir.path().display());
                let slot = CertSlot::from_pem(&j.cert_pem, &j.key_pem)?;
                return Ok(NodeTls {
                    ca_pem: j.ca_pem,
                    slot,
                    sans,
                    dir,
                });
            }
            // A refusal is final; an unreachable controller is not.
            Err(e) if e.to_string().contains("refused:") => return Err(e.into()),
            Err(e) => last = Some(e),
        }
    }
    Err(last
        .map(anyhow::Error::from)
        .unwrap_or_else(|| anyhow::anyhow!("no controller to join through")))
}

impl NodeTls {
    /// Client settings towards the controllers.
    pub fn client(&self) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        Ok(shoal_pki::tls::client_config(
            &Trust::Ca(self.ca_pem.clone()),
            Some(&self.slot),
            Expect::Controller,
        )?)
    }

    /// Server settings of the Agent API (client certificates required).
    pub fn server(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        Ok(shoal_pki::tls::server_config(
            &self.ca_pem,
            &self.slot,
            ClientAuth::Required,
        )?)
    }

    /// Renews the certificate at two thirds of its life, forever.
    pub async fn rotate(self, ctl: Client) {
        loop {
            let at = self.slot.info().renew_at();
            tokio::time::sleep(shoal_pki::tls::until(at)).await;
            match self.renew_once(&ctl).await {
                Ok(until) => info!(?until, "renewed the node certificate"),
                Err(e) => {
                    warn!("renewing the node certificate failed (retry in 10 s): {e:#}");
                    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
                }
            }
        }
    }

    async fn renew_once(&self, ctl: &Client) -> anyhow::Result<std::time::SystemTime> {
        let me = self
            .slot
            .info()
            .identity
            .context("the current certificate has no identity")?;
        let (key, csr) = shoal_pki::ca::new_key_and_csr(&me, &self.sans)?;
        let req = shoal_proto::RenewRequest {
            addresses: self.sans.clone(),
            csr_pem: csr,
        };
        let resp = ctl
            .call_on(move |ch| {
                let req = req.clone();
                async move {
                    shoal_proto::access_client::AccessClient::new(ch)
                        .renew(req)
                        .await
                }
            })
            .await?;
        let info = CertInfo::from_pem(&resp.cert_pem)?;
        if info.identity.as_ref() != Some(&me) {
            bail!(
                "the controller renewed the certificate for {:?}",
                info.identity
            );
        }
        self.dir.write("tls.key", &key)?;
        self.dir.write("tls.crt", &resp.cert_pem)?;
        self.slot.replace(&resp.cert_pem, &key)?;
        Ok(info.not_after)
    }
}

/// The Agent API's policy: only controllers.
pub fn agent_policy() -> Policy {
    Arc::new(|path: &str, who: Option<&Identity>| match who {
        Some(Identity::Controller { .. }) => Ok(()),
        // Health checks come from anyone (over TLS), with or without a certificate.
        _ if path.starts_with("/grpc.health.v1.Health/") => Ok(()),
        Some(other) => Err(tonic::Status::permission_denied(format!(
            "{other} may not call {path} on an agent (controllers only)"
        ))),
        None => Err(tonic::Status::unauthenticated(
            "a controller certificate of this cluster is required",
        )),
    })
}
