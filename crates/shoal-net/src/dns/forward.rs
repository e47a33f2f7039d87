//! Forwarding names outside the cluster zone to the node's upstream resolvers.
//!
//! [`Forwarder::resolve`] answers one query that [`super::answer`] would not answer itself:
//! from the [`Cache`] if it can, else by sending the client's own query (a fresh random id, a
//! fresh socket and so a random source port per query) to the upstreams in turn, over UDP, and
//! again over TCP when the UDP answer is truncated. A server that refuses (ICMP port
//! unreachable, REFUSED, SERVFAIL) is skipped at once; one that stays silent gets
//! [`Timeouts::attempt`]. Whatever happens, the client gets an answer within
//! [`Timeouts::total`]: SERVFAIL when no upstream gave a usable one. The forwarder runs in the
//! agent's (the node's) network namespace, so it reaches the node's own resolvers, loopback ones
//! included.
//!
//! Hand-written rather than hickory's resolver crate: that one re-encodes answers, brings its
//! own cache and retry policy and many dependencies; here the client's query and the upstream's
//! answer pass through byte for byte (EDNS, DNSSEC bits and all), with only the id changed.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::DnsError;
use super::cache::Cache;

/// Upstream answers kept in the cache.
pub const CACHE_ENTRIES: usize = 4096;
/// Longest time an upstream answer is cached, in seconds.
pub const CACHE_MAX_TTL: u32 = 300;
/// Queries being forwarded at once; more are answered SERVFAIL at once.
pub const MAX_IN_FLIGHT: usize = 512;

/// How long the forwarder waits for upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// One try of one upstream.
    pub attempt: Duration,
    /// Everything for one query, after which the client gets SERVFAIL.
    pub total: Duration,
}

impl Default for Timeouts {
    /// 1 s per try, 2 s in all: well within a stub resolver's own 5 s timeout, so pods get a
    /// SERVFAIL rather than retrying into the void.
    fn default() -> Timeouts {
        Timeouts {
            attempt: Duration::from_secs(1),
            total: Duration::from_secs(2),
        }
    }
}

/// Forwards queries to upstream resolvers, with a cache (see the module doc).
#[derive(Debug)]
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeouts: Timeouts,
    cache: std::sync::Mutex<Cache>,
    /// Index of the upstream that answered last; tried first.
    preferred: AtomicUsize,
    in_flight: Arc<Semaphore>,
}

/// Why one exchange with one upstream gave nothing usable.
#[derive(Debug)]
enum Failure {
    /// Refused at once (ICMP unreachable, connection refused): try the next one now.
    Refused,
    /// No answer in time.
    Silent,
    /// An answer with this (unusable) response code.
    #[allow(dead_code, reason = "read through Debug, in the debug log")]
    Rcode(ResponseCode),
}

impl Forwarder {
    /// A forwarder to `upstreams` (tried in this order, the last good one first) with the
    /// default timeouts and cache.
    pub fn new(upstreams: Vec<SocketAddr>) -> Forwarder {
        Forwarder::with(upstreams, Timeouts::default(), CACHE_ENTRIES)
    }

    /// A forwarder with the given timeouts and cache size.
    pub fn with(upstreams: Vec<SocketAddr>, timeouts: Timeouts, cache_entries: usize) -> Forwarder {
        Forwarder {
            upstreams,
            timeouts,
            cache: std::sync::Mutex::new(Cache::new(cache_entries, CACHE_MAX_TTL)),
            preferred: AtomicUsize::new(0),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    /// The upstream resolvers.
    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// A slot for one more query in flight, or `None` when too many are.
    pub fn permit(&self) -> Option<OwnedSemaphorePermit> {
        self.in_flight.clone().try_acquire_owned().ok()
    }

    /// The wire-format answer to `req` (parsed from `raw`, exactly one question): from the cache
    /// or an upstream, else SERVFAIL. `udp_limit` is the client's UDP size limit (`None`: TCP);
    /// a larger answer goes back truncated (TC) so that the client retries over TCP.
    pub async fn resolve(&self, req: &Message, raw: &[u8], udp_limit: Option<usize>) -> Vec<u8> {
        let Some(q) = req.queries().first() else {
            return servfail(req);
        };
        let cached = lock(&self.cache).get(q, Instant::now());
        if let Some(mut m) = cached {
            m.set_id(req.id());
            *m.queries_mut() = req.queries().to_vec();
            *m.extensions_mut() = req.extensions().as_ref().map(|_| {
                let mut e = Edns::new();
                e.set_max_payload(super::UDP_EDNS);
                e
            });
            return match m.to_vec() {
                Ok(v) => fit(v, &m, udp_limit),
                Err(_) => servfail(req),
            };
        }
        let Some((mut bytes, msg)) = self.exchange(req, raw).await else {
            return servfail(req);
        };
        lock(&self.cache).insert(q, &msg, Instant::now());
        bytes[..2].copy_from_slice(&req.id().to_be_bytes());
        let mut msg = msg;
        msg.set_id(req.id());
        fit(bytes, &msg, udp_limit)
    }

    /// Asks the upstreams in turn until one gives a usable answer or time is up.
    async fn exchange(&self, req: &Message, raw: &[u8]) -> Option<(Vec<u8>, Message)> {
        let n = self.upstreams.len();
        if n == 0 || raw.len() < 12 {
            return None;
        }
        let deadline = Instant::now() + self.timeouts.total;
        let first = self.preferred.load(Ordering::Relaxed) % n;
        // Two rounds: a silent server gets a second chance while time is left (a resolver that
        // was busy recursing may have the answer by then); one that refused does not.
        for round in 0..2 {
            let mut any_silent = false;
            for i in (0..n).map(|k| (first + k) % n) {
                let server = self.upstreams[i];
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return None;
                }
                match exchange_one(server, req, raw, self.timeouts.attempt.min(left), deadline)
                    .await
                {
                    Ok(got) => {
                        self.preferred.store(i, Ordering::Relaxed);
                        return Some(got);
                    }
                    Err(f) => {
                        tracing::debug!(%server, round, "dns: upstream gave nothing: {f:?}");
                        any_silent |= matches!(f, Failure::Silent);
                    }
                }
            }
            if !any_silent {
                return None;
            }
        }
        None
    }
}

/// One query to one upstream: UDP, then TCP if the UDP answer is truncated.
async fn exchange_one(
    server: SocketAddr,
    req: &Message,
    raw: &[u8],
    attempt: Duration,
    deadline: Instant,
) -> Result<(Vec<u8>, Message), Failure> {
    let id: u16 = rand::random();
    let mut query = raw.to_vec();
    query[..2].copy_from_slice(&id.to_be_bytes());
    let udp = udp_exchange(server, &query, req.queries());
    let (bytes, msg) = match tokio::time::timeout(attempt, udp).await {
        Ok(Ok(got)) => got,
        // Refused (ICMP unreachable) or any other socket error: next server, no waiting.
        Ok(Err(e)) => {
            tracing::debug!(%server, "dns: upstream: {e}");
            return Err(Failure::Refused);
        }
        Err(_) => return Err(Failure::Silent),
    };
    let (bytes, msg) = if msg.truncated() {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, tcp_exchange(server, &query)).await {
            Ok(Ok(got)) => got,
            // No TCP: the truncated answer is still an answer (the client may retry over TCP).
            _ => (bytes, msg),
        }
    } else {
        (bytes, msg)
    };
    if !matches_query(&msg, id, req) {
        return Err(Failure::Rcode(ResponseCode::FormErr));
    }
    match msg.response_code() {
        ResponseCode::ServFail | ResponseCode::Refused | ResponseCode::NotImp => {
            Err(Failure::Rcode(msg.response_code()))
        }
        _ => Ok((bytes, msg)),
    }
}

/// Sends `query` from a fresh connected socket and waits for the answer with its id and
/// question (anything else arriving on the socket is ignored).
async fn udp_exchange(
    server: SocketAddr,
    query: &[u8],
    question: &[Query],
) -> io::Result<(Vec<u8>, Message)> {
    let local: IpAddr = match server {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let sock = UdpSocket::bind(SocketAddr::new(local, 0)).await?;
    sock.connect(server).await?;
    sock.send(query).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock.recv(&mut buf).await?;
        if n >= 2
            && buf[..2] == query[..2]
            && let Ok(m) = Message::from_vec(&buf[..n])
            && m.message_type() == MessageType::Response
            && m.queries() == question
        {
            return Ok((buf[..n].to_vec(), m));
        }
    }
}

/// The same over TCP (2-byte length prefix).
async fn tcp_exchange(server: SocketAddr, query: &[u8]) -> io::Result<(Vec<u8>, Message)> {
    let mut s = TcpStream::connect(server).await?;
    let len = u16::try_from(query.len()).map_err(io::Error::other)?;
    let mut out = Vec::with_capacity(query.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(query);
    s.write_all(&out).await?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).await?;
    let m = Message::from_vec(&buf).map_err(io::Error::other)?;
    Ok((buf, m))
}

fn matches_query(resp: &Message, id: u16, req: &Message) -> bool {
    resp.id() == id
        && resp.message_type() == MessageType::Response
        && resp.queries() == req.queries()
}

/// `bytes` (the encoding of `m`) if it fits the client's UDP limit, else a truncated answer.
fn fit(bytes: Vec<u8>, m: &Message, udp_limit: Option<usize>) -> Vec<u8> {
    match udp_limit {
        Some(limit) if bytes.len() > limit => m.truncate().to_vec().unwrap_or(bytes),
        _ => bytes,
    }
}

/// SERVFAIL for `req`, with its question.
pub(super) fn servfail(req: &Message) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(req.id())
        .set_message_type(MessageType::Response)
        .set_op_code(req.op_code())
        .set_recursion_desired(req.recursion_desired())
        .set_recursion_available(true)
        .set_response_code(ResponseCode::ServFail);
    m.add_queries(req.queries().iter().cloned());
    m.to_vec()
        .or_else(|_| Message::error_msg(req.id(), req.op_code(), ResponseCode::ServFail).to_vec())
        .unwrap_or_default()
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Parses an upstream resolver: `IP` (port 53) or `IP:PORT` (`[V6]:PORT` for IPv6).
pub fn parse_upstream(s: &str) -> Result<SocketAddr, DnsError> {
    let t = s.trim();
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    if let Ok(a) = t.parse::<SocketAddr>() {
        if a.port() == 0 {
            return Err(DnsError::BadUpstream {
                value: s.to_string(),
                reason: "port 0",
            });
        }
        return Ok(a);
    }
    Err(DnsError::BadUpstream {
        value: s.to_string(),
        reason: "expected IP or IP:PORT ([IPv6]:PORT)",
    })
}

/// The `nameserver` addresses of a `resolv.conf` text, port 53, in order. Lines that are
/// comments, other options, or addresses that do not parse (such as IPv6 with a `%zone`) are
/// skipped.
pub fn nameservers(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let l = l.split(['#', ';']).next()?;
            let mut words = l.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            let ip: IpAddr = words.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::{Name, RecordType};

    #[test]
    fn upstream_addresses_parse() {
        assert_eq!(
            parse_upstream("203.0.113.53").unwrap(),
            "203.0.113.53:53".parse().unwrap()
        );
        assert_eq!(
            parse_upstream(" 127.0.0.1:5353 ").unwrap(),
            "127.0.0.1:5353".parse().unwrap()
        );
        assert_eq!(
            parse_upstream("2001:db8::1").unwrap(),
            "[2001:db8::1]:53".parse().unwrap()
        );
        assert_eq!(
            parse_upstream("[2001:db8::1]:5300").unwrap(),
            "[2001:db8::1]:5300".parse().unwrap()
        );
        for bad in ["", "dns.example", "1.2.3.4:", "1.2.3.4:99999", "1.2.3.4:0"] {
            let e = parse_upstream(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn resolv_conf_nameservers() {
        let text = "\
# Generated by NetworkManager
search example.com
nameserver 192.0.2.1
nameserver 127.0.0.53 # systemd-resolved
  nameserver\t2001:db8::53
nameserver fe80::1%eth0
;nameserver 192.0.2.9
nameserver
options edns0 trust-ad
nameserverx 192.0.2.8
";
        let got: Vec<String> = nameservers(text).iter().map(|a| a.to_string()).collect();
        assert_eq!(
            got,
            ["192.0.2.1:53", "127.0.0.53:53", "[2001:db8::53]:53"],
            "in order; loopback kept (the forwarder runs in the node's namespace)"
        );
        assert!(nameservers("").is_empty());
    }

    fn query(name: &str, edns: bool) -> (Message, Vec<u8>) {
        let mut m = Message::new();
        m.set_id(0x7777).set_recursion_desired(true);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        if edns {
            let mut e = Edns::new();
            e.set_max_payload(1232);
            m.set_edns(e);
        }
        let raw = m.to_vec().unwrap();
        (m, raw)
    }

    #[test]
    fn servfail_carries_the_question() {
        let (m, _) = query("www.world.test.", false);
        let r = Message::from_vec(&servfail(&m)).unwrap();
        assert_eq!(r.id(), 0x7777);
        assert_eq!(r.response_code(), ResponseCode::ServFail);
        assert_eq!(r.queries(), m.queries());
    }

    #[tokio::test]
    async fn without_upstreams_or_with_refusing_ones_servfail_at_once() {
        // A port nothing listens on: every try is refused (ICMP port unreachable on loopback).
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let dead = closed.local_addr().unwrap();
        drop(closed);
        for f in [Forwarder::new(vec![]), Forwarder::new(vec![dead, dead])] {
            let (m, raw) = query("www.world.test.", true);
            let t = Instant::now();
            let r = Message::from_vec(&f.resolve(&m, &raw, Some(1232)).await).unwrap();
            assert_eq!(r.response_code(), ResponseCode::ServFail);
            assert!(
                t.elapsed() < Duration::from_millis(500),
                "{:?}",
                t.elapsed()
            );
        }
    }
}
