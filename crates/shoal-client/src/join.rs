//! Joining a cluster with a token (agents and controllers): the server's CA is trusted
//! only if its public key has the given hash (no trust on first use), a key is made
//! here and only a certificate request leaves the machine.

use std::time::Duration;

use shoal_pki::tls::{Connector, Expect, Trust, client_config};
use shoal_pki::{CertInfo, Identity, Token};
use shoal_proto::JoinRequest;
use shoal_proto::access_client::AccessClient;

use crate::{ClientError, connect_reason};

/// What a join brings back (all PEM).
#[derive(Debug, Clone)]
pub struct Joined {
    /// The new key (never sent).
    pub key_pem: String,
    /// The certificate, followed by the CA.
    pub cert_pem: String,
    /// The cluster CA.
    pub ca_pem: String,
    /// For a controller: the key that encrypts Secrets at rest (empty for a node).
    pub encryption_key: Vec<u8>,
}

/// Joins through `addr` (`host:port`) as `me`; `req` carries the kind, name or id and
/// the addresses for the certificate.
pub async fn join(
    addr: &str,
    token: &str,
    ca_hash: &str,
    mut req: JoinRequest,
    me: &Identity,
) -> Result<Joined, ClientError> {
    let err = |message: String| ClientError::Join {
        addr: addr.to_string(),
        message,
    };
    let token = Token::parse(token).map_err(|e| err(format!("--join-token: {e}")))?;
    let hash = shoal_pki::ca::parse_ca_hash(ca_hash).map_err(|e| err(format!("--ca-hash: {e}")))?;
    let (key_pem, csr) =
        shoal_pki::ca::new_key_and_csr(me, &req.addresses).map_err(|e| err(e.to_string()))?;
    req.token = token.to_string();
    req.csr_pem = csr;
    let tls = client_config(&Trust::CaHash(hash), None, Expect::Controller)
        .map_err(|e| err(e.to_string()))?;
    let ep = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| err(e.to_string()))?
        .timeout(Duration::from_secs(30));
    let ch = ep
        .connect_with_connector(Connector::new(tls, Duration::from_secs(5)))
        .await
        .map_err(|e| err(format!("cannot connect: {}", connect_reason(&e))))?;
    let resp = AccessClient::new(ch)
        .join(req)
        .await
        .map_err(|s| err(format!("refused: {}", s.message())))?
        .into_inner();
    let got = CertInfo::from_pem(&resp.cert_pem).map_err(|e| err(e.to_string()))?;
    if got.identity.as_ref() != Some(me) {
        return Err(err(format!(
            "the controller issued a certificate for {:?}, not {me}",
            got.identity
        )));
    }
    Ok(Joined {
        key_pem,
        cert_pem: resp.cert_pem,
        ca_pem: resp.ca_pem,
        encryption_key: resp.encryption_key,
    })
}
