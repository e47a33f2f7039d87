//! The registry client's HTTP: one HTTP/1.1 connection per request over hyper's
//! connection API, TLS with tokio-rustls (ring, like tonic), settings per endpoint host.
//!
//! Why not `oci-client`: it builds on reqwest, whose TLS settings (extra roots, skip
//! verification) are per client while `registries.yaml` sets them per host, whose
//! default rustls provider is aws-lc-rs (we use ring everywhere), and whose errors do not
//! tell a refused connection from a TLS failure without digging through sources; and it
//! downloads blobs without resuming from a partial file. Hyper is already in the tree
//! through tonic, so this module is a few hundred lines and no new dependency tree.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, header};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::RegistryError;
use super::hosts::{Scheme, TlsConfig, split_host_port};

/// Connecting (name lookup, TCP and TLS handshakes).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// From the request to the response's headers.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Between two chunks of a body.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// An absolute `http(s)://host[:port]/path?query` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    /// HTTP or HTTPS.
    pub scheme: Scheme,
    /// `host[:port]` as written.
    pub host: String,
    /// `/path?query`.
    pub path: String,
}

impl Url {
    /// Parses an absolute URL.
    pub fn parse(s: &str) -> Option<Self> {
        let (scheme, rest) = if let Some(r) = s.strip_prefix("https://") {
            (Scheme::Https, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (Scheme::Http, r)
        } else {
            return None;
        };
        let (host, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if host.is_empty() || host.contains('@') {
            return None;
        }
        Some(Self {
            scheme,
            host: host.to_string(),
            path,
        })
    }

    /// Resolves a `Location` header against this URL.
    pub fn join(&self, location: &str) -> Option<Self> {
        if location.starts_with('/') && !location.starts_with("//") {
            Some(Self {
                path: location.to_string(),
                ..self.clone()
            })
        } else {
            Self::parse(location)
        }
    }

    /// `scheme://host`.
    pub fn origin(&self) -> String {
        let s = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!("{s}://{}", self.host)
    }

    fn host_port(&self) -> (&str, u16) {
        let (h, p) = split_host_port(&self.host);
        (
            h,
            p.unwrap_or(match self.scheme {
                Scheme::Http => 80,
                Scheme::Https => 443,
            }),
        )
    }
}

/// Builds the TLS settings for one host: the system's roots plus `ca_file`, a client
/// certificate, or no verification at all.
pub fn tls_config(tls: Option<&TlsConfig>) -> Result<Arc<ClientConfig>, RegistryError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| RegistryError::Config {
            source_name: "tls".into(),
            message: e.to_string(),
        })?;
    let bad = |path: &std::path::Path, message: String| RegistryError::Config {
        source_name: path.display().to_string(),
        message,
    };
    let builder = if tls.is_some_and(|t| t.insecure_skip_verify) {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
    } else {
        let mut roots = RootCertStore::empty();
        // Unreadable system certificates are skipped: a private CA may be all there is.
        for c in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(c);
        }
        if let Some(ca) = tls.and_then(|t| t.ca_file.as_deref()) {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
                .map_err(|e| bad(ca, format!("reading CA certificates: {e}")))?
                .collect::<Result<_, _>>()
                .map_err(|e| bad(ca, format!("reading CA certificates: {e}")))?;
            if certs.is_empty() {
                return Err(bad(ca, "no PEM certificate in the file".into()));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| bad(ca, format!("CA certificate: {e}")))?;
            }
        }
        builder.with_root_certificates(roots)
    };
    let config = match tls.and_then(|t| t.cert_file.as_deref().zip(t.key_file.as_deref())) {
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| bad(cert, e.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|e| bad(cert, e.to_string()))?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, e.to_string()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| bad(cert, e.to_string()))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// `insecure_skip_verify`: accepts any certificate (signatures still checked).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
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
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Sends one GET/HEAD on a new connection and returns the response (its body streams
/// while the connection task runs).
pub async fn send(
    tls: &Arc<ClientConfig>,
    url: &Url,
    method: Method,
    headers: &[(header::HeaderName, String)],
) -> Result<Response<Incoming>, RegistryError> {
    send_body(
        tls,
        url,
        method,
        headers,
        Empty::<Bytes>::new(),
        Some(RESPONSE_TIMEOUT),
    )
    .await
}

/// Sends one request with `body` on a new connection. `response_timeout` bounds the wait
/// for the response's headers (`None` for a streamed upload, whose answer comes after the
/// whole body: its source bounds the time between chunks).
pub async fn send_body<B>(
    tls: &Arc<ClientConfig>,
    url: &Url,
    method: Method,
    headers: &[(header::HeaderName, String)],
    body: B,
    response_timeout: Option<Duration>,
) -> Result<Response<Incoming>, RegistryError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let endpoint = url.origin();
    let (host, port) = url.host_port();
    let unreachable = |message: String| RegistryError::Unreachable {
        endpoint: endpoint.clone(),
        message,
    };
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port)))
        .await
        .map_err(|_| unreachable(format!("no connection within {CONNECT_TIMEOUT:?}")))?
        .map_err(|e| unreachable(connect_message(&e)))?;
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn Io> = match url.scheme {
        Scheme::Http => Box::new(tcp),
        Scheme::Https => {
            let name = ServerName::try_from(host.to_string()).map_err(|e| RegistryError::Tls {
                endpoint: endpoint.clone(),
                message: format!("bad server name {host:?}: {e}"),
            })?;
            let connector = tokio_rustls::TlsConnector::from(tls.clone());
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
                .await
                .map_err(|_| RegistryError::Tls {
                    endpoint: endpoint.clone(),
                    message: format!("no TLS handshake within {CONNECT_TIMEOUT:?}"),
                })?
                .map_err(|e| RegistryError::Tls {
                    endpoint: endpoint.clone(),
                    message: tls_message(&e),
                })?;
            Box::new(stream)
        }
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::builder()
        .method(method)
        .uri(&url.path)
        .header(header::HOST, &url.host)
        .header(
            header::USER_AGENT,
            concat!("shoal/", env!("CARGO_PKG_VERSION")),
        );
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let req = req.body(body).map_err(|e| RegistryError::Protocol {
        endpoint: endpoint.clone(),
        message: format!("request {}: {e}", url.path),
    })?;
    let answer = sender.send_request(req);
    let resp = match response_timeout {
        Some(t) => tokio::time::timeout(t, answer)
            .await
            .map_err(|_| unreachable(format!("no answer within {t:?}")))?,
        None => answer.await,
    };
    resp.map_err(|e| unreachable(format!("{}: {}", url.path, error_chain(&e))))
}

/// An error with its causes (hyper's "error sending request" hides the body's error).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn connect_message(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        _ => e.to_string(),
    }
}

fn tls_message(e: &std::io::Error) -> String {
    // tokio-rustls wraps the rustls error; its text is the useful part.
    match e.get_ref() {
        Some(inner) => inner.to_string(),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_joins_urls() {
        let u = Url::parse("https://auth.docker.io/token?service=x").unwrap();
        assert_eq!(u.host, "auth.docker.io");
        assert_eq!(u.path, "/token?service=x");
        assert_eq!(u.host_port(), ("auth.docker.io", 443));
        let u = Url::parse("http://127.0.0.1:5000").unwrap();
        assert_eq!((u.path.as_str(), u.host_port()), ("/", ("127.0.0.1", 5000)));
        let j = u.join("/v2/x/blobs/y").unwrap();
        assert_eq!(j.origin(), "http://127.0.0.1:5000");
        assert_eq!(j.path, "/v2/x/blobs/y");
        assert_eq!(
            u.join("https://cdn.example/blob?sig=1").unwrap().origin(),
            "https://cdn.example"
        );
        assert!(Url::parse("ftp://x").is_none());
        assert!(Url::parse("http://user@x/").is_none());
        assert_eq!(Url::parse("http://h?q").unwrap().path, "/?q");
    }
}
