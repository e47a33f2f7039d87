//! Connection to the controllers: the address list, fail-over to the next address, and
//! one connected `Cluster` client kept for the whole command.

use std::future::Future;
use std::time::Duration;

use shoal_proto::cluster_client::ClusterClient;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use crate::error::CtlError;

/// Address used when neither `--server` nor `SHOAL_SERVER` is given.
pub const DEFAULT_SERVER: &str = "127.0.0.1:7000";

/// How often an open connection pings the controller.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);

/// One controller address, as typed (`host:port`) and as a URI (`http://host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddr {
    /// `host:port`, shown in messages.
    pub display: String,
    /// `http://host:port`, used to connect.
    pub uri: String,
}

/// Parses a comma-separated controller list (`host:port[,host:port…]`, optional `http://`).
pub fn parse_servers(list: &str) -> Result<Vec<ServerAddr>, CtlError> {
    let mut out: Vec<ServerAddr> = Vec::new();
    for raw in list
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
    {
        let bad = |reason: &str| CtlError::BadAddress {
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
        if !out.iter().any(|a| a.display == display) {
            out.push(ServerAddr {
                uri: format!("http://{display}"),
                display,
            });
        }
    }
    if out.is_empty() {
        return Err(CtlError::Usage(
            "no controller address given (use --server or SHOAL_SERVER)".into(),
        ));
    }
    Ok(out)
}

/// Timeouts of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// How long to wait for one address to accept the connection.
    pub connect: Duration,
    /// Deadline for each unary request (not for watch streams).
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

/// A connected `Cluster` client that moves to the next controller when one is unavailable.
#[derive(Debug)]
pub struct Connection {
    addrs: Vec<ServerAddr>,
    current: usize,
    channel: Channel,
    timeouts: Timeouts,
}

impl Connection {
    /// Connects to the first address that accepts, trying them in order.
    pub async fn connect(
        addrs: Vec<ServerAddr>,
        timeouts: Timeouts,
    ) -> Result<Connection, CtlError> {
        let order: Vec<usize> = (0..addrs.len()).collect();
        let (current, channel) = connect_first(&addrs, &order, timeouts, true).await?;
        Ok(Connection {
            addrs,
            current,
            channel,
            timeouts,
        })
    }

    /// The address currently connected to.
    pub fn address(&self) -> &str {
        &self.addrs[self.current].display
    }

    /// Connects to the next reachable address after the current one (wrapping around).
    async fn fail_over(&mut self) -> Result<(), CtlError> {
        let n = self.addrs.len();
        let order: Vec<usize> = (1..n).map(|i| (self.current + i) % n).collect();
        let (current, channel) = connect_first(&self.addrs, &order, self.timeouts, true).await?;
        self.current = current;
        self.channel = channel;
        Ok(())
    }

    /// A new channel to the current controller whose requests have no deadline, for
    /// client-streaming uploads that may outlast `--request-timeout` (HTTP/2 keep-alive
    /// still finds a controller that stopped answering).
    pub async fn channel_without_deadline(&self) -> Result<Channel, CtlError> {
        let (_, channel) =
            connect_first(&self.addrs, &[self.current], self.timeouts, false).await?;
        Ok(channel)
    }

    /// The channel to the current controller (for the `Proxy` and `Images` services).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Runs one request on the `Cluster` service; see [`Connection::call_on`].
    pub async fn call<T, F, Fut>(&mut self, mut request: F) -> Result<T, tonic::Status>
    where
        F: FnMut(ClusterClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_on(|ch| request(ClusterClient::new(ch))).await
    }

    /// Runs one request on the channel; when the controller answers UNAVAILABLE (or the
    /// connection broke), retries on the next addresses, each at most once.
    pub async fn call_on<T, F, Fut>(&mut self, mut request: F) -> Result<T, tonic::Status>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut retries = self.addrs.len().saturating_sub(1);
        loop {
            match request(self.channel.clone()).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(s) if s.code() == Code::Unavailable && retries > 0 => {
                    retries -= 1;
                    if self.fail_over().await.is_err() {
                        return Err(self.name_address(&s));
                    }
                }
                Err(s) if s.code() == Code::Unavailable => return Err(self.name_address(&s)),
                Err(s) => return Err(s),
            }
        }
    }

    /// The same status with the address it came from in front of its message.
    fn name_address(&self, s: &tonic::Status) -> tonic::Status {
        tonic::Status::new(s.code(), format!("{}: {}", self.address(), s.message()))
    }

    /// Moves to the next reachable controller (used by long-running watches).
    pub async fn reconnect(&mut self) -> Result<(), CtlError> {
        if self.addrs.len() == 1 {
            let order = [0];
            let (current, channel) =
                connect_first(&self.addrs, &order, self.timeouts, true).await?;
            self.current = current;
            self.channel = channel;
            Ok(())
        } else {
            self.fail_over().await
        }
    }
}

/// Tries `order` (indexes into `addrs`) in turn; the first that connects wins.
async fn connect_first(
    addrs: &[ServerAddr],
    order: &[usize],
    timeouts: Timeouts,
    deadline: bool,
) -> Result<(usize, Channel), CtlError> {
    let mut failures: Vec<(String, String)> = Vec::new();
    for &i in order {
        let a = &addrs[i];
        let mut endpoint = Endpoint::from_shared(a.uri.clone())
            .map_err(|e| CtlError::BadAddress {
                addr: a.display.clone(),
                reason: e.to_string(),
            })?
            .connect_timeout(timeouts.connect);
        if deadline {
            endpoint = endpoint.timeout(timeouts.request);
        }
        let endpoint = endpoint
            // A member that accepts connections but does not answer (stopped, hung) is
            // found by HTTP/2 pings and its requests fail as UNAVAILABLE.
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(timeouts.connect)
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        // The connect timeout bounds the TCP connect; this one also bounds the HTTP/2 handshake.
        match tokio::time::timeout(
            timeouts.connect + Duration::from_millis(500),
            endpoint.connect(),
        )
        .await
        {
            Ok(Ok(channel)) => return Ok((i, channel)),
            Ok(Err(e)) => failures.push((a.display.clone(), connect_reason(&e))),
            Err(_) => failures.push((a.display.clone(), "connection timed out".into())),
        }
    }
    Err(unreachable(&failures))
}

/// Builds the "cannot reach any controller" error; one reason if all failed alike.
pub fn unreachable(failures: &[(String, String)]) -> CtlError {
    let tried = failures
        .iter()
        .map(|(a, _)| a.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let first = failures
        .first()
        .map(|(_, r)| r.as_str())
        .unwrap_or("no address to try");
    let reason = if failures.iter().all(|(_, r)| r == first) {
        first.to_string()
    } else {
        failures
            .iter()
            .map(|(a, r)| format!("{a}: {r}"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    CtlError::Unreachable { tried, reason }
}

/// A short reason for a failed connection attempt, from the deepest useful cause.
pub fn connect_reason(e: &(dyn std::error::Error + 'static)) -> String {
    use std::io::ErrorKind;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut deepest = e.to_string();
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            let r = match io.kind() {
                ErrorKind::ConnectionRefused => "connection refused",
                ErrorKind::TimedOut => "connection timed out",
                ErrorKind::ConnectionReset => "connection reset",
                ErrorKind::ConnectionAborted => "connection aborted",
                ErrorKind::HostUnreachable => "host unreachable",
                ErrorKind::NetworkUnreachable => "network unreachable",
                ErrorKind::AddrNotAvailable => "address not available",
                _ => "",
            };
            if !r.is_empty() {
                return r.to_string();
            }
        }
        let s = err.to_string();
        if !s.is_empty() {
            deepest = s;
        }
        cur = err.source();
    }
    let lower = deepest.to_lowercase();
    if lower.contains("timed out") || lower.contains("timeout") {
        "connection timed out".into()
    } else if lower.contains("failed to lookup") || lower.contains("dns error") {
        format!("cannot resolve host ({})", crate::error::one_line(&deepest))
    } else {
        crate::error::one_line(&lower)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn displays(list: &str) -> Vec<String> {
        parse_servers(list)
            .unwrap()
            .into_iter()
            .map(|a| a.display)
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
        let a = &parse_servers("10.0.0.1:7001").unwrap()[0];
        assert_eq!(a.uri, "http://10.0.0.1:7001");
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
            let e = parse_servers(list).unwrap_err().to_string();
            assert!(e.contains(needle), "{list}: {e}");
        }
        assert!(
            parse_servers(" , ")
                .unwrap_err()
                .to_string()
                .contains("no controller address")
        );
    }

    #[test]
    fn unreachable_message_collapses_equal_reasons() {
        let f = vec![
            (
                "127.0.0.1:7001".to_string(),
                "connection refused".to_string(),
            ),
            (
                "127.0.0.1:7002".to_string(),
                "connection refused".to_string(),
            ),
        ];
        assert_eq!(
            unreachable(&f).to_string(),
            "cannot reach any controller (tried 127.0.0.1:7001, 127.0.0.1:7002): connection refused"
        );
        let f = vec![
            ("a:1".to_string(), "connection refused".to_string()),
            ("b:2".to_string(), "connection timed out".to_string()),
        ];
        assert_eq!(
            unreachable(&f).to_string(),
            "cannot reach any controller (tried a:1, b:2): a:1: connection refused; b:2: connection timed out"
        );
    }

    #[test]
    fn io_causes_become_short_reasons() {
        let e = std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        );
        assert_eq!(connect_reason(&e), "connection refused");
    }

    #[tokio::test]
    async fn closed_ports_are_reported_as_refused() {
        // Bind then drop a listener so that the port is (almost certainly) closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addrs = parse_servers(&format!("127.0.0.1:{port}")).unwrap();
        let e = Connection::connect(addrs, Timeouts::default())
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!("cannot reach any controller (tried 127.0.0.1:{port}): connection refused")
        );
    }
}
