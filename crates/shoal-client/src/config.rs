//! Where the controllers are and how to talk to them: the endpoint list, timeouts,
//! HTTP/2 keep-alive, the TLS identity, and the one function that builds a channel.

use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::ClientError;

/// Address used when no controller address is given (the controller's default `--listen`).
pub const DEFAULT_SERVER: &str = "127.0.0.1:7000";

/// One controller address, as typed (`host:port`) and as a URI (`http://host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddr {
    /// `host:port`, shown in messages.
    pub display: String,
    /// `http://host:port`, the URI tonic is given (the connector speaks TLS whatever the scheme).
    pub uri: String,
}

/// The controller members, in the order they are tried (duplicates removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints(Vec<ServerAddr>);

impl Endpoints {
    /// Parses a comma- or space-separated list (`host:port[,host:port…]`, optional `http://`).
    pub fn parse(list: &str) -> Result<Endpoints, ClientError> {
        let mut out: Vec<ServerAddr> = Vec::new();
        for raw in list
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
        {
            let a = parse_one(raw)?;
            if !out.iter().any(|x| x.display == a.display) {
                out.push(a);
            }
        }
        if out.is_empty() {
            return Err(ClientError::NoAddress);
        }
        Ok(Endpoints(out))
    }

    /// The members, in order.
    pub fn addrs(&self) -> &[ServerAddr] {
        &self.0
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true for a parsed list (kept for clippy's `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn parse_one(raw: &str) -> Result<ServerAddr, ClientError> {
    let bad = |reason: &str| ClientError::BadAddress {
        addr: raw.to_string(),
        reason: reason.to_string(),
    };
    let rest = if let Some(r) = raw.strip_prefix("http://") {
        r
    } else if let Some(r) = raw.strip_prefix("https://") {
        r
    } else if raw.contains("://") {
        return Err(bad("expected host:port, e.g. 127.0.0.1:7001"));
    } else {
        raw
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, p) = v6
            .split_once("]:")
            .ok_or_else(|| bad("expected [IPv6]:port"))?;
        (format!("[{h}]"), p)
    } else {
        let (h, p) = rest
            .rsplit_once(':')
            .ok_or_else(|| bad("missing port; expected host:port, e.g. 127.0.0.1:7001"))?;
        if h.contains(':') {
            return Err(bad("write IPv6 addresses as [addr]:port"));
        }
        (h.to_string(), p)
    };
    if host.is_empty() || host == "[]" {
        return Err(bad("missing host; expected host:port"));
    }
    if host.contains(['/', '@', '?', '#']) {
        return Err(bad("expected host:port, e.g. 127.0.0.1:7001"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(bad("the port must be a number from 1 to 65535")),
    }
    let display = format!("{host}:{port}");
    Ok(ServerAddr {
        uri: format!("http://{display}"),
        display,
    })
}

/// Timeouts of a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// How long to wait for one member to accept a connection (TCP and HTTP/2 handshake).
    pub connect: Duration,
    /// Deadline of each unary request (not of watch streams or uploads).
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(1),
            request: Duration::from_secs(30),
        }
    }
}

/// HTTP/2 keep-alive: how a connection to a member that stopped answering (frozen,
/// partitioned, powered off, or accepting TCP without ever speaking HTTP/2) is found to
/// be dead.
///
/// Why these values (PING every 1 s, dead after 5 s without an answer):
/// - a member whose *process* dies is noticed at once without any PING (its kernel
///   resets the connection), so keep-alive only matters for a *silent* member; then
///   detection takes at most `interval + timeout` = 6 s and the call fails as
///   UNAVAILABLE, which the retry rule sends to the next member;
/// - the old 1 s *timeout* raised false alarms on a loaded 2-core machine: the PING is
///   answered by the peer's connection task, and a busy runtime (or our own, busy
///   printing or decoding) can leave it unscheduled for more than a second, tearing a
///   healthy watch down. A false alarm now needs a 5 s stall of the peer's runtime,
///   beyond any scheduling delay of a loaded but working machine;
/// - a short *interval* costs little (a 17-byte frame each way per second per
///   connection) and keeps detection of a silent member short for users (`shoalctl`
///   with a hung first address still answers from the next one within ~6 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAlive {
    /// Time between PINGs on an open connection (also while idle).
    pub interval: Duration,
    /// How long a PING may go unanswered before the connection counts as dead.
    pub timeout: Duration,
}

impl Default for KeepAlive {
    fn default() -> Self {
        KeepAlive {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Everything a [`crate::Client`] needs.
///
/// Every connection is mutual TLS: `tls` verifies that the server is a controller of the
/// cluster (its CA) and presents this client's certificate. There is no plaintext mode.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The members, tried in order.
    pub endpoints: Endpoints,
    /// Connect and request timeouts.
    pub timeouts: Timeouts,
    /// HTTP/2 keep-alive.
    pub keepalive: KeepAlive,
    /// The TLS settings (trust and client certificate), from a config file
    /// ([`crate::file`]) or a process's PKI directory.
    pub tls: Arc<rustls::ClientConfig>,
}

impl ClientConfig {
    /// A configuration with default timeouts and keep-alive.
    pub fn new(endpoints: Endpoints, tls: Arc<rustls::ClientConfig>) -> ClientConfig {
        ClientConfig {
            endpoints,
            timeouts: Timeouts::default(),
            keepalive: KeepAlive::default(),
            tls,
        }
    }

    /// Reads a client configuration file and picks `context` (or the current one);
    /// `servers`, when given, replaces the context's controller list. Returns the
    /// configuration and the context's default namespace.
    pub fn from_file(
        path: &std::path::Path,
        context: Option<&str>,
        servers: Option<&str>,
    ) -> Result<(ClientConfig, Option<String>), ClientError> {
        let err = |message: String| ClientError::Config {
            path: path.display().to_string(),
            message,
        };
        let file = crate::file::ConfigFile::load(path)?;
        let r = file.resolve(context).map_err(err)?;
        let list = match servers {
            Some(s) => s.to_string(),
            None => r.servers.join(","),
        };
        let endpoints = Endpoints::parse(&list)?;
        let tls = r.tls().map_err(err)?;
        Ok((ClientConfig::new(endpoints, tls), r.namespace))
    }

    /// Sets the timeouts.
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> ClientConfig {
        self.timeouts = timeouts;
        self
    }

    /// The channel builder for one member; `deadline` puts the request timeout on every
    /// request of the channel (not wanted for streams and uploads).
    pub fn endpoint(&self, addr: &ServerAddr, deadline: bool) -> Result<Endpoint, ClientError> {
        let mut e = Endpoint::from_shared(addr.uri.clone())
            .map_err(|e| ClientError::BadAddress {
                addr: addr.display.clone(),
                reason: e.to_string(),
            })?
            .connect_timeout(self.timeouts.connect)
            .http2_keep_alive_interval(self.keepalive.interval)
            .keep_alive_timeout(self.keepalive.timeout)
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        if deadline {
            e = e.timeout(self.timeouts.request);
        }
        Ok(e)
    }

    /// The TLS connector of every channel (TCP connect + handshake within the connect
    /// timeout plus 500 ms).
    pub fn connector(&self) -> shoal_pki::tls::Connector {
        shoal_pki::tls::Connector::new(
            self.tls.clone(),
            self.timeouts.connect + Duration::from_millis(500),
        )
    }

    /// Connects a channel to one member (the one place a channel to a controller is made).
    pub async fn connect(&self, addr: &ServerAddr, deadline: bool) -> Result<Channel, ClientError> {
        let e = self.endpoint(addr, deadline)?;
        e.connect_with_connector(self.connector())
            .await
            .map_err(|e| ClientError::Unreachable {
                tried: addr.display.clone(),
                reason: crate::connect_reason(&e),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn displays(list: &str) -> Vec<String> {
        Endpoints::parse(list)
            .unwrap()
            .addrs()
            .iter()
            .map(|a| a.display.clone())
            .collect()
    }

    #[test]
    fn address_lists_parse() {
        assert_eq!(
            displays("127.0.0.1:7001,127.0.0.1:7002, 127.0.0.1:7003"),
            ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]
        );
        assert_eq!(displays("http://localhost:7001/"), ["localhost:7001"]);
        assert_eq!(displays("https://localhost:7001"), ["localhost:7001"]);
        assert_eq!(displays("[::1]:7001"), ["[::1]:7001"]);
        assert_eq!(displays("a:1,,a:1,b:2,"), ["a:1", "b:2"]);
        let e = Endpoints::parse("10.0.0.1:7001").unwrap();
        assert_eq!(e.addrs()[0].uri, "http://10.0.0.1:7001");
    }

    #[test]
    fn bad_addresses_are_rejected_with_the_entry() {
        for (list, needle) in [
            ("127.0.0.1", "missing port"),
            ("127.0.0.1:http", "port must be a number"),
            ("127.0.0.1:0", "port must be a number"),
            ("127.0.0.1:70000", "port must be a number"),
            (":7001", "missing host"),
            ("::1:7001", "[addr]:port"),
            ("grpc://a:1", "expected host:port"),
            ("a:1,b", "\"b\""),
        ] {
            let e = Endpoints::parse(list).unwrap_err().to_string();
            assert!(e.contains(needle), "{list}: {e}");
        }
        assert!(matches!(
            Endpoints::parse(" , "),
            Err(ClientError::NoAddress)
        ));
    }

    #[test]
    fn keepalive_tolerates_multi_second_stalls() {
        let k = KeepAlive::default();
        assert!(k.timeout >= Duration::from_secs(5), "{k:?}");
        assert!(k.interval + k.timeout <= Duration::from_secs(6), "{k:?}");
    }
}
