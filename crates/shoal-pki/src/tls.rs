//! Mutual TLS for every gRPC connection (rustls with ring, as tonic uses).
//!
//! Servers: [`server_config`] + [`incoming`] turn a TCP listener into a stream of TLS
//! connections for tonic's `serve_with_incoming`; the certificate lives in a
//! [`CertSlot`] that rotation replaces without a restart (new handshakes get the new
//! certificate, open connections keep going). Clients: [`client_config`] +
//! [`Connector`] for `Endpoint::connect_with_connector*`; the client certificate also
//! lives in a slot, read at every handshake, so a reconnecting channel uses the renewed
//! one.
//!
//! Why not tonic's `ServerTlsConfig`/`ClientTlsConfig`: they take a fixed identity (no
//! rotation without restarting the server or rebuilding channels), cannot pin a CA by
//! hash for joining, and cannot check that the server is a controller or the expected
//! node rather than any holder of a cluster certificate.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::ReceiverStream;
use tracing::debug;

use crate::ca::{CertInfo, ca_hash_of_der};
use crate::{Identity, PkiError};

/// How long a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The crypto provider every config uses (ring, as tonic's `tls-ring`).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses every certificate of a PEM text.
pub fn certs_from_pem(what: &str, pem: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::cert(what, e))?;
    if certs.is_empty() {
        return Err(PkiError::cert(what, "no certificate in the PEM text"));
    }
    Ok(certs)
}

fn roots(ca_pem: &str) -> Result<RootCertStore, PkiError> {
    let mut r = RootCertStore::empty();
    for c in certs_from_pem("CA certificate", ca_pem)? {
        r.add(c).map_err(|e| PkiError::cert("CA certificate", e))?;
    }
    Ok(r)
}

#[derive(Debug)]
struct Current {
    key: Arc<CertifiedKey>,
    info: CertInfo,
    chain_pem: String,
    key_pem: String,
}

/// A certificate chain and key that rotation replaces in place.
#[derive(Debug, Clone)]
pub struct CertSlot(Arc<RwLock<Arc<Current>>>);

fn certified(chain_pem: &str, key_pem: &str) -> Result<Current, PkiError> {
    let chain = certs_from_pem("certificate", chain_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| PkiError::cert("private key", e))?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| PkiError::cert("private key", e))?;
    let info = CertInfo::from_der(&chain[0])?;
    let key = Arc::new(CertifiedKey::new(chain, signing));
    key.keys_match()
        .map_err(|e| PkiError::cert("certificate and key", e))?;
    Ok(Current {
        key,
        info,
        chain_pem: chain_pem.to_string(),
        key_pem: key_pem.to_string(),
    })
}

impl CertSlot {
    /// A slot holding `chain_pem` (leaf first) and its key.
    pub fn from_pem(chain_pem: &str, key_pem: &str) -> Result<CertSlot, PkiError> {
        Ok(CertSlot(Arc::new(RwLock::new(Arc::new(certified(
            chain_pem, key_pem,
        )?)))))
    }

    /// Replaces the certificate; new handshakes use it.
    pub fn replace(&self, chain_pem: &str, key_pem: &str) -> Result<(), PkiError> {
        let c = Arc::new(certified(chain_pem, key_pem)?);
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = c;
        Ok(())
    }

    fn current(&self) -> Arc<Current> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// What the current certificate says.
    pub fn info(&self) -> CertInfo {
        self.current().info.clone()
    }

    /// The current (chain PEM, key PEM).
    pub fn pem(&self) -> (String, String) {
        let c = self.current();
        (c.chain_pem.clone(), c.key_pem.clone())
    }
}

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current().key.clone())
    }
}

impl ResolvesClientCert for CertSlot {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current().key.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

/// Whether a server requires a client certificate in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Every connection presents a certificate of the cluster CA.
    Required,
    /// A certificate, if presented, must be of the cluster CA; connections without one
    /// are let through the handshake for the join service only (the authorization layer
    /// refuses every other call before any handler runs).
    Optional,
}

/// A server config: the certificate from `slot`, clients verified against `ca_pem`.
pub fn server_config(
    ca_pem: &str,
    slot: &CertSlot,
    auth: ClientAuth,
) -> Result<Arc<ServerConfig>, PkiError> {
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca_pem)?), provider());
    let builder = match auth {
        ClientAuth::Required => builder,
        ClientAuth::Optional => builder.allow_unauthenticated(),
    };
    let verifier = builder
        .build()
        .map_err(|e| PkiError::cert("client verifier", e))?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| PkiError::cert("TLS versions", e))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(slot.clone()));
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// TLS connections accepted on `listener`: handshakes run concurrently (a slow or
/// silent client delays nobody) and fail after [`HANDSHAKE_TIMEOUT`]; failed handshakes
/// (no or a foreign certificate, plaintext) are logged and dropped. The accept loop ends
/// when the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
) -> ReceiverStream<io::Result<tokio_rustls::server::TlsStream<TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(v) => v,
                    Err(e) => {
                        debug!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => {
                        let _ = tx.send(Ok(s)).await;
                    }
                    Ok(Err(e)) => tracing::info!(%peer, "TLS handshake refused: {e}"),
                    Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// How a client trusts servers.
#[derive(Debug, Clone)]
pub enum Trust {
    /// The cluster CA certificate (PEM).
    Ca(String),
    /// Only a CA whose public key has this `sha256:HEX` hash (joining: the server sends
    /// its CA with its certificate, the hash pins it; no trust on first use).
    CaHash(String),
}

/// Whose certificate the server must present (beyond being signed by the cluster CA
/// for the dialled name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// A controller.
    Controller,
    /// The agent of this node.
    Node(String),
}

#[derive(Debug)]
struct PeerVerifier {
    trust: Trust,
    /// Built once for [`Trust::Ca`].
    ca: Option<Arc<WebPkiServerVerifier>>,
    expect: Expect,
    provider: Arc<CryptoProvider>,
}

fn tls_err(m: String) -> rustls::Error {
    rustls::Error::General(m)
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let pinned;
        let verifier = match (&self.trust, &self.ca) {
            (_, Some(v)) => v,
            (Trust::CaHash(want), None) => {
                let ca = intermediates
                    .iter()
                    .find(|c| ca_hash_of_der(c).ok().as_deref() == Some(want.as_str()))
                    .ok_or_else(|| {
                        let got: Vec<String> = intermediates
                            .iter()
                            .filter_map(|c| ca_hash_of_der(c).ok())
                            .collect();
                        tls_err(format!(
                            "the server's CA does not match the CA hash {want} (it sent {}); wrong --ca-hash, or not this cluster",
                            if got.is_empty() { "no CA".to_string() } else { got.join(", ") }
                        ))
                    })?;
                let mut r = RootCertStore::empty();
                r.add(ca.clone().into_owned())
                    .map_err(|e| tls_err(format!("the server's CA: {e}")))?;
                pinned =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(r), self.provider.clone())
                        .build()
                        .map_err(|e| tls_err(e.to_string()))?;
                &pinned
            }
            (Trust::Ca(_), None) => return Err(tls_err("no CA configured".into())),
        };
        let ok = verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        let who = Identity::from_cert_der(end_entity)
            .map_err(|e| tls_err(format!("server certificate: {e}")))?;
        let fine = match (&self.expect, &who) {
            (Expect::Controller, Identity::Controller { .. }) => true,
            (Expect::Node(n), Identity::Node { name }) => n == name,
            _ => false,
        };
        if !fine {
            return Err(tls_err(format!(
                "the server is {who}, expected {}",
                match &self.expect {
                    Expect::Controller => "a controller".to_string(),
                    Expect::Node(n) => format!("node {n}"),
                }
            )));
        }
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client config: servers verified by `trust` and `expect`; `identity` (if any) is
/// presented as the client certificate.
pub fn client_config(
    trust: &Trust,
    identity: Option<&CertSlot>,
    expect: Expect,
) -> Result<Arc<ClientConfig>, PkiError> {
    let provider = provider();
    let ca = match trust {
        Trust::Ca(pem) => Some(
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots(pem)?), provider.clone())
                .build()
                .map_err(|e| PkiError::cert("server verifier", e))?,
        ),
        Trust::CaHash(h) => {
            crate::ca::parse_ca_hash(h)?;
            None
        }
    };
    let verifier = Arc::new(PeerVerifier {
        trust: trust.clone(),
        ca,
        expect,
        provider: provider.clone(),
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| PkiError::cert("TLS versions", e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut cfg = match identity {
        Some(slot) => builder.with_client_cert_resolver(Arc::new(slot.clone())),
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// Connects TCP + TLS to the URI's `host:port` for tonic's
/// `Endpoint::connect_with_connector*`.
#[derive(Debug, Clone)]
pub struct Connector {
    config: Arc<ClientConfig>,
    timeout: Duration,
}

impl Connector {
    /// A connector using `config`; TCP connect plus handshake must finish within `timeout`.
    pub fn new(config: Arc<ClientConfig>, timeout: Duration) -> Connector {
        Connector { config, timeout }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Io = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

/// A TLS error with the words a user needs (the rustls alert names alone are terse).
fn explain(e: io::Error) -> io::Error {
    let m = e.to_string();
    let hint = if m.contains("CertificateRequired") {
        " (the server requires a client certificate: use a config from `shoalctl config create-user` or admin.conf)"
    } else if m.contains("UnknownCA") || m.contains("BadCertificate") {
        " (the server does not accept this certificate: it is not signed by this cluster's CA)"
    } else if m.contains("CertificateExpired") {
        " (the server says the certificate has expired)"
    } else if m.contains("NoApplicationProtocol")
        || m.contains("InvalidContentType")
        || m.contains("corrupt message")
    {
        " (is this a Shoal port speaking TLS?)"
    } else {
        ""
    };
    io::Error::new(e.kind(), format!("TLS: {m}{hint}"))
}

impl tower::Service<http::Uri> for Connector {
    type Response = Io;
    type Error = BoxError;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Io, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let config = self.config.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| format!("{uri}: no host"))?
                .to_string();
            let port = uri.port_u16().ok_or_else(|| format!("{uri}: no port"))?;
            let bare = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let name = ServerName::try_from(bare.clone())
                .map_err(|e| format!("{host}: not a host name or address: {e}"))?;
            let fut = async {
                let tcp = TcpStream::connect((bare.as_str(), port)).await?;
                let _ = tcp.set_nodelay(true);
                tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(explain)
            };
            match tokio::time::timeout(timeout, fut).await {
                Ok(Ok(s)) => Ok(hyper_util::rt::TokioIo::new(s)),
                Ok(Err(e)) => Err(Box::new(e) as BoxError),
                Err(_) => {
                    Err(format!("connecting to {host}:{port} timed out after {timeout:?}").into())
                }
            }
        })
    }
}

/// Time left before `t` (zero when past).
pub fn until(t: SystemTime) -> Duration {
    t.duration_since(SystemTime::now()).unwrap_or_default()
}
