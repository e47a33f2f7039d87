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

/// Most redirects [`fetch_to_file`] follows.
pub const MAX_REDIRECTS: usize = 10;

/// Downloads a plain `http(s)://` URL (a Dockerfile's `ADD URL`) into `dest` (created or
/// truncated) and returns its length: redirects followed (up to [`MAX_REDIRECTS`]), the
/// system's roots for HTTPS, the same timeouts as registry requests, and an error once the
/// body passes `max_bytes`. A 404 is [`RegistryError::NotFound`]; any other status that is
/// not a success is a [`RegistryError::Protocol`] naming it.
pub async fn fetch_to_file(
    url: &str,
    dest: &std::path::Path,
    max_bytes: u64,
) -> Result<u64, RegistryError> {
    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;
    let protocol = |endpoint: &str, message: String| RegistryError::Protocol {
        endpoint: endpoint.to_string(),
        message,
    };
    let mut u = Url::parse(url)
        .ok_or_else(|| protocol(url, "not an absolute http:// or https:// URL".into()))?;
    let tls = tls_config(None)?;
    for _ in 0..=MAX_REDIRECTS {
        let resp = send(&tls, &u, Method::GET, &[]).await?;
        let status = resp.status();
        if status.is_redirection() {
            let to = resp
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| u.join(l))
                .ok_or_else(|| {
                    protocol(&u.origin(), format!("{status} without a usable Location"))
                })?;
            u = to;
            continue;
        }
        if status == http::StatusCode::NOT_FOUND {
            return Err(RegistryError::NotFound {
                endpoint: u.origin(),
                what: u.path.clone(),
            });
        }
        if !status.is_success() {
            return Err(protocol(
                &u.origin(),
                format!("GET {}: HTTP {status}", u.path),
            ));
        }
        let mut file = tokio::fs::File::create(dest)
            .await
            .map_err(|e| crate::io_err(dest, e))?;
        let mut body = resp.into_body();
        let mut n = 0u64;
        loop {
            let frame = match tokio::time::timeout(IDLE_TIMEOUT, body.frame()).await {
                Err(_) => {
                    return Err(protocol(
                        &u.origin(),
                        format!("no data for {IDLE_TIMEOUT:?}"),
                    ));
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(protocol(&u.origin(), error_chain(&e))),
                Ok(Some(Ok(f))) => f,
            };
            if let Ok(d) = frame.into_data() {
                n += d.len() as u64;
                if n > max_bytes {
                    return Err(protocol(
                        &u.origin(),
                        format!("GET {}: larger than {max_bytes} bytes", u.path),
                    ));
                }
                file.write_all(&d)
                    .await
                    .map_err(|e| crate::io_err(dest, e))?;
            }
        }
        file.flush().await.map_err(|e| crate::io_err(dest, e))?;
        return Ok(n);
    }
    Err(protocol(
        url,
        format!("more than {MAX_REDIRECTS} redirects"),
    ))
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

    /// A loopback HTTP/1.1 server answering each request by its path: `/moved` redirects
    /// to `/file`, `/file` is the body, `/loop` redirects to itself, anything else is 404.
    async fn serve(body: &'static [u8]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let line = String::from_utf8_lossy(&req);
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                    let head = match path.as_str() {
                        "/moved" => {
                            "HTTP/1.1 302 Found\r\nLocation: /file\r\nContent-Length: 0\r\n\r\n"
                                .to_string()
                        }
                        "/loop" => {
                            "HTTP/1.1 302 Found\r\nLocation: /loop\r\nContent-Length: 0\r\n\r\n"
                                .to_string()
                        }
                        "/file" => {
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len())
                        }
                        _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string(),
                    };
                    let _ = s.write_all(head.as_bytes()).await;
                    if path == "/file" {
                        let _ = s.write_all(body).await;
                    }
                });
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn fetch_follows_redirects_and_names_what_failed() {
        let base = serve(b"hello from a URL\n").await;
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        let n = fetch_to_file(&format!("{base}/moved"), &dest, 1 << 20)
            .await
            .unwrap();
        assert_eq!(n, 17);
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello from a URL\n");
        let e = fetch_to_file(&format!("{base}/nope"), &dest, 1 << 20)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, RegistryError::NotFound { what, .. } if what == "/nope"),
            "{e}"
        );
        let e = fetch_to_file(&format!("{base}/file"), &dest, 4)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("larger than 4 bytes"), "{e}");
        let e = fetch_to_file(&format!("{base}/loop"), &dest, 1 << 20)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than 10 redirects"), "{e}");
        let e = fetch_to_file("ftp://x/y", &dest, 1)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an absolute http"), "{e}");
        // Nothing listens on port 9 of loopback.
        let e = fetch_to_file("http://127.0.0.1:9/x", &dest, 1)
            .await
            .unwrap_err();
        assert!(matches!(e, RegistryError::Unreachable { .. }), "{e}");
    }

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
