//! Where the controllers are and how to talk to them: the endpoint list, timeouts,
//! HTTP/2 keep-alive, and the one function that builds a channel (where the TLS
//! identity will be configured).

use std::time::Duration;

use tonic::transport::Endpoint;

use crate::ClientError;

/// Address used when no controller address is given (the controller's default `--listen`).
pub const DEFAULT_SERVER: &str = "127.0.0.1:7000";

/// One controller address, as typed (`host:port`) and as a URI (`http://host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddr {
    /// `host:port`, shown in messages.
    pub display: String,
    /// `http://host:port`, used to connect.
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
    } else if raw.starts_with("https://") {
        return Err(bad("TLS (https://) is not supported yet; use host:port"));
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
/// **TLS identity seam**: when mutual TLS lands (cluster CA, client certificate from
/// `~/.shoal/config`), a `tls` field (CA bundle + certificate + key) is added here and
/// applied in [`ClientConfig::endpoint`] — the only function that builds a channel to a
/// controller — and [`Endpoints::parse`] starts accepting `https://` entries. No caller
/// builds a `tonic` endpoint itself, so nothing else changes.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The members, tried in order.
    pub endpoints: Endpoints,
    /// Connect and request timeouts.
    pub timeouts: Timeouts,
    /// HTTP/2 keep-alive.
    pub keepalive: KeepAlive,
}

impl ClientConfig {
    /// A configuration with default timeouts and keep-alive.
    pub fn new(endpoints: Endpoints) -> ClientConfig {
        ClientConfig {
            endpoints,
            timeouts: Timeouts::default(),
            keepalive: KeepAlive::default(),
        }
    }

    /// Parses `list` (see [`Endpoints::parse`]) with default timeouts and keep-alive.
    pub fn parse(list: &str) -> Result<ClientConfig, ClientError> {
        Ok(ClientConfig::new(Endpoints::parse(list)?))
    }

    /// Sets the timeouts.
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> ClientConfig {
        self.timeouts = timeouts;
        self
    }

    /// The channel builder for one member; `deadline` puts the request timeout on every
    /// request of the channel (not wanted for streams and uploads). The one place where
    /// a channel's transport is configured (and where TLS will be).
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
            ("https://a:1", "TLS"),
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
