//! The node's DNS server: authoritative answers for the cluster zone, the rest forwarded.
//!
//! [`DnsTable`] holds `name -> addresses` (shared, replaced as a whole by the agent); [`answer`]
//! turns one wire-format query into one wire-format response from the table (pure, never panics
//! on junk); [`serve_forwarding`] runs it over UDP and TCP (2-byte length prefix) on one
//! address. Names in the cluster zone (`shoal.local`) and names in the table are always answered
//! here, unknown ones with an authoritative NXDOMAIN, so they never wait on an upstream. Every
//! other name goes to the [`Forwarder`] (upstream resolvers, cache, timeouts; see
//! [`forward`]), each on its own task so that a slow upstream never delays cluster names; with
//! no forwarder ([`serve`]) such names get NXDOMAIN at once.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinSet;

pub mod cache;
pub mod forward;

pub use forward::Forwarder;

/// Errors of the DNS configuration.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// An upstream resolver address that does not parse.
    #[error("upstream dns server {value:?}: {reason}")]
    BadUpstream {
        /// What was given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// TTL of every answer (A records and the SOA's negative-caching minimum), in seconds.
pub const TTL: u32 = 5;
/// Largest UDP response without EDNS (RFC 1035).
const UDP_PLAIN: usize = 512;
/// Largest UDP response we send with EDNS (the DNS flag day 2020 value).
const UDP_EDNS: u16 = 1232;
/// `ndots` in pods' `/etc/resolv.conf`, as Kubernetes sets it: a name with fewer dots is tried
/// with the search domains first, so `web` and `web.other` find services.
pub const NDOTS: u8 = 5;
/// Concurrent TCP connections served; more are closed on accept.
const MAX_TCP: usize = 256;
/// A TCP client must send each whole query (length and message) within this time of the
/// previous answer (or of connecting), and take each answer within it; otherwise the
/// connection is closed. With [`MAX_TCP`], silent or slow clients cannot hold the server.
pub const TCP_IDLE: Duration = Duration::from_secs(3);

/// Shared name table: lower-case names without trailing dot -> IPv4 addresses.
#[derive(Debug, Clone, Default)]
pub struct DnsTable {
    inner: Arc<RwLock<Records>>,
}

#[derive(Debug, Default)]
struct Records {
    names: HashMap<String, Vec<Ipv4Addr>>,
    /// Proper suffixes of known names ("empty non-terminals", e.g. `default.svc.shoal.local`).
    parents: HashSet<String>,
}

impl DnsTable {
    /// An empty table.
    pub fn new() -> DnsTable {
        DnsTable::default()
    }

    /// Replaces all records (names are normalized: lower-cased, trailing dot removed).
    pub fn replace(&self, records: HashMap<String, Vec<Ipv4Addr>>) {
        let mut names = HashMap::with_capacity(records.len());
        let mut parents = HashSet::new();
        for (name, ips) in records {
            let name = normalize(&name);
            let mut rest = name.as_str();
            while let Some((_, parent)) = rest.split_once('.') {
                parents.insert(parent.to_string());
                rest = parent;
            }
            names.entry(name).or_insert_with(Vec::new).extend(ips);
        }
        let mut guard = self.inner.write().unwrap_or_else(|e| e.into_inner());
        *guard = Records { names, parents };
    }

    /// The addresses of `name` (case-insensitive, trailing dot optional), if it is known.
    pub fn lookup(&self, name: &str) -> Option<Vec<Ipv4Addr>> {
        let guard = self.inner.read().unwrap_or_else(|e| e.into_inner());
        guard.names.get(&normalize(name)).cloned()
    }

    /// Whether `name` is a proper suffix of some known name.
    fn is_parent(&self, name: &str) -> bool {
        let guard = self.inner.read().unwrap_or_else(|e| e.into_inner());
        guard.parents.contains(name)
    }
}

/// The pod search path for `namespace`: `["NS.svc.ZONE", "svc.ZONE", "ZONE"]`.
pub fn resolv_search(namespace: &str, zone: &str) -> Vec<String> {
    let zone = normalize(zone);
    vec![
        format!("{namespace}.svc.{zone}"),
        format!("svc.{zone}"),
        zone,
    ]
}

/// The `options` lines' words for pods' `/etc/resolv.conf`: `ndots:5`.
pub fn resolv_options() -> Vec<String> {
    vec![format!("ndots:{NDOTS}")]
}

/// Serves `table` on `addr` over UDP and TCP (same port) until an I/O error on bind; names
/// outside the zone get NXDOMAIN (no forwarding).
///
/// Runs forever otherwise; drop the future to stop it (open TCP connections stop with it).
pub async fn serve(addr: SocketAddr, zone: &str, table: DnsTable) -> io::Result<()> {
    serve_forwarding(addr, zone, table, None).await
}

/// Like [`serve`], forwarding names outside the zone (and not in the table) to `forwarder`.
pub async fn serve_forwarding(
    addr: SocketAddr,
    zone: &str,
    table: DnsTable,
    forwarder: Option<Arc<Forwarder>>,
) -> io::Result<()> {
    let udp = UdpSocket::bind(addr).await?;
    let tcp = TcpListener::bind(udp.local_addr()?).await?;
    serve_sockets_forwarding(udp, tcp, zone, table, forwarder).await
}

/// Like [`serve`] on already bound sockets (lets a caller bind port 0 and learn the port).
pub async fn serve_sockets(
    udp: UdpSocket,
    tcp: TcpListener,
    zone: &str,
    table: DnsTable,
) -> io::Result<()> {
    serve_sockets_forwarding(udp, tcp, zone, table, None).await
}

/// Like [`serve_forwarding`] on already bound sockets.
pub async fn serve_sockets_forwarding(
    udp: UdpSocket,
    tcp: TcpListener,
    zone: &str,
    table: DnsTable,
    forwarder: Option<Arc<Forwarder>>,
) -> io::Result<()> {
    let zone = normalize(zone);
    let udp = Arc::new(udp);
    let mut conns = JoinSet::new();
    let mut forwarded = JoinSet::new();
    let mut buf = vec![0u8; 65536];
    loop {
        tokio::select! {
            r = udp.recv_from(&mut buf) => match r {
                Ok((n, peer)) => {
                    let reply = match decide(&buf[..n], &zone, &table, true, forwarder.is_some()) {
                        Decision::Reply(r) => r,
                        Decision::Forward(req, limit) => {
                            let Some(fwd) = forwarder.clone() else { continue };
                            match fwd.permit() {
                                Some(permit) => {
                                    let (raw, udp) = (buf[..n].to_vec(), udp.clone());
                                    forwarded.spawn(async move {
                                        let resp = fwd.resolve(&req, &raw, Some(limit)).await;
                                        drop(permit);
                                        if let Err(e) = udp.send_to(&resp, peer).await {
                                            tracing::debug!(%peer, "dns: udp send: {e}");
                                        }
                                    });
                                    None
                                }
                                None => Some(forward::servfail(&req)),
                            }
                        }
                    };
                    if let Some(resp) = reply
                        && let Err(e) = udp.send_to(&resp, peer).await
                    {
                        tracing::debug!(%peer, "dns: udp send: {e}");
                    }
                }
                // ICMP errors from earlier sends surface here; they are not fatal.
                Err(e) => tracing::debug!("dns: udp recv: {e}"),
            },
            r = tcp.accept() => match r {
                Ok((stream, peer)) => {
                    if conns.len() < MAX_TCP {
                        conns.spawn(serve_tcp(stream, zone.clone(), table.clone(), forwarder.clone()));
                    } else {
                        tracing::warn!(%peer, "dns: too many tcp connections, closing");
                    }
                }
                Err(e) => {
                    // e.g. EMFILE: back off instead of spinning.
                    tracing::warn!("dns: tcp accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            Some(_) = forwarded.join_next(), if !forwarded.is_empty() => {}
        }
    }
}

async fn serve_tcp(
    mut stream: TcpStream,
    zone: String,
    table: DnsTable,
    forwarder: Option<Arc<Forwarder>>,
) {
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut msg)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let resp = match decide(&msg, &zone, &table, false, forwarder.is_some()) {
            Decision::Reply(r) => r,
            Decision::Forward(req, _) => match &forwarder {
                Some(f) => Some(f.resolve(&req, &msg, None).await),
                None => None,
            },
        };
        let Some(resp) = resp else {
            return;
        };
        let Ok(n) = u16::try_from(resp.len()) else {
            return;
        };
        let mut out = Vec::with_capacity(resp.len() + 2);
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(&resp);
        if !matches!(
            tokio::time::timeout(TCP_IDLE, stream.write_all(&out)).await,
            Ok(Ok(()))
        ) {
            return;
        }
    }
}

/// Answers one wire-format DNS query for `zone` from `table`; `None` means send nothing
/// (too short to carry a header, or not a query). `udp` limits the size (TC bit if cut).
///
/// - known name: `A` (and `ANY`) -> its addresses with TTL [`TTL`]; other types -> NOERROR, no answer;
/// - the zone apex and parents of known names inside the zone: NOERROR, no answer (SOA for `SOA`);
/// - anything else, inside the zone or not: authoritative NXDOMAIN;
/// - unparsable message: FORMERR; opcode other than QUERY or class other than IN: NOTIMP;
///   not exactly one question: FORMERR.
pub fn answer(query: &[u8], zone: &str, table: &DnsTable, udp: bool) -> Option<Vec<u8>> {
    match decide(query, &normalize(zone), table, udp, false) {
        Decision::Reply(r) => r,
        Decision::Forward(..) => None,
    }
}

/// What to do with one query.
#[derive(Debug)]
enum Decision {
    /// Send this (or nothing).
    Reply(Option<Vec<u8>>),
    /// Forward this well-formed query; the client's UDP size limit.
    Forward(Message, usize),
}

/// Like [`answer`], but with `forwarding` a well-formed query (QUERY, one question, class IN)
/// for a name outside `zone` and not in the table is handed back for forwarding.
/// Queries the node DNS decided on since the process started, by outcome: answered from
/// the cluster zone (or refused) here, and forwarded upstream. Process-wide (the agent
/// runs one node DNS) and read by its metrics.
pub static QUERIES: QueryCounts = QueryCounts {
    answered: std::sync::atomic::AtomicU64::new(0),
    forwarded: std::sync::atomic::AtomicU64::new(0),
};

/// See [`QUERIES`].
#[derive(Debug)]
pub struct QueryCounts {
    /// Answered here (from the cluster zone, or an error).
    pub answered: std::sync::atomic::AtomicU64,
    /// Forwarded to an upstream resolver.
    pub forwarded: std::sync::atomic::AtomicU64,
}

fn decide(query: &[u8], zone: &str, table: &DnsTable, udp: bool, forwarding: bool) -> Decision {
    let d = decide_inner(query, zone, table, udp, forwarding);
    let counter = match &d {
        Decision::Reply(None) => None,
        Decision::Reply(Some(_)) => Some(&QUERIES.answered),
        Decision::Forward(..) => Some(&QUERIES.forwarded),
    };
    if let Some(c) = counter {
        c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    d
}

fn decide_inner(
    query: &[u8],
    zone: &str,
    table: &DnsTable,
    udp: bool,
    forwarding: bool,
) -> Decision {
    use Decision::Reply;
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return Reply(None); // no complete header, or a response (never answer those: no loops)
    }
    let id = u16::from_be_bytes([query[0], query[1]]);
    let req = match Message::from_vec(query) {
        Ok(m) => m,
        Err(_) => {
            let op = OpCode::from_u8((query[2] >> 3) & 0x0f);
            let rcode = if op == OpCode::Query {
                ResponseCode::FormErr
            } else {
                ResponseCode::NotImp
            };
            return Reply(encode(&Message::error_msg(id, op, rcode)));
        }
    };
    if req.message_type() != MessageType::Query {
        return Reply(None);
    }
    let mut resp = Message::new();
    resp.set_id(id)
        .set_message_type(MessageType::Response)
        .set_op_code(req.op_code())
        .set_recursion_desired(req.recursion_desired())
        .set_recursion_available(forwarding);
    resp.add_queries(req.queries().iter().cloned());
    let (max_len, client_limit) = match req.extensions() {
        Some(edns) => {
            let mut e = Edns::new();
            e.set_max_payload(UDP_EDNS);
            resp.set_edns(e);
            (
                usize::from(edns.max_payload().clamp(UDP_PLAIN as u16, UDP_EDNS)),
                usize::from(edns.max_payload()).max(UDP_PLAIN),
            )
        }
        None => (UDP_PLAIN, UDP_PLAIN),
    };
    if req.op_code() != OpCode::Query {
        resp.set_response_code(ResponseCode::NotImp);
        return Reply(encode(&resp));
    }
    let [q] = req.queries() else {
        resp.set_response_code(ResponseCode::FormErr);
        return Reply(encode(&resp));
    };
    if q.query_class() != DNSClass::IN {
        resp.set_response_code(ResponseCode::NotImp);
        return Reply(encode(&resp));
    }
    if forwarding
        && !in_zone(&q.name().to_ascii(), zone)
        && table.lookup(&q.name().to_ascii()).is_none()
    {
        return Decision::Forward(req, client_limit);
    }
    resp.set_authoritative(true);
    fill(&mut resp, q, zone, table);
    let Some(out) = encode(&resp) else {
        return Reply(None);
    };
    if udp && out.len() > max_len {
        return Reply(encode(&resp.truncate()));
    }
    Reply(Some(out))
}

/// Whether `name` (any case, trailing dot optional) is `zone` or below it.
fn in_zone(name: &str, zone: &str) -> bool {
    let name = normalize(name);
    !zone.is_empty() && (name == zone || name.ends_with(&format!(".{zone}")))
}

fn fill(resp: &mut Message, q: &Query, zone: &str, table: &DnsTable) {
    let name = normalize(&q.name().to_ascii());
    let in_zone = in_zone(&name, zone);
    let soa = || soa_record(zone);
    if let Some(ips) = table.lookup(&name) {
        match q.query_type() {
            RecordType::A | RecordType::ANY => {
                for ip in ips {
                    resp.add_answer(Record::from_rdata(q.name().clone(), TTL, RData::A(A(ip))));
                }
            }
            _ => {
                if let Some(soa) = soa() {
                    resp.add_name_server(soa);
                }
            }
        }
        resp.set_response_code(ResponseCode::NoError);
    } else if in_zone && (name == zone || table.is_parent(&name)) {
        resp.set_response_code(ResponseCode::NoError);
        match (q.query_type(), soa()) {
            (RecordType::SOA | RecordType::ANY, Some(soa)) if name == zone => {
                resp.add_answer(soa);
            }
            (_, Some(soa)) => {
                resp.add_name_server(soa);
            }
            (_, None) => {}
        }
    } else {
        resp.set_response_code(ResponseCode::NXDomain);
        if in_zone && let Some(soa) = soa() {
            resp.add_name_server(soa);
        }
    }
}

fn soa_record(zone: &str) -> Option<Record> {
    let apex = Name::from_ascii(format!("{zone}.")).ok()?;
    let mname = Name::from_ascii(format!("ns.{zone}.")).ok()?;
    let rname = Name::from_ascii(format!("hostmaster.{zone}.")).ok()?;
    let soa = SOA::new(mname, rname, 1, 60, 10, 600, TTL);
    Some(Record::from_rdata(apex, TTL, RData::SOA(soa)))
}

fn encode(m: &Message) -> Option<Vec<u8>> {
    match m.to_vec() {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::debug!("dns: encoding response {}: {e}", m.id());
            Message::error_msg(m.id(), m.op_code(), ResponseCode::ServFail)
                .to_vec()
                .ok()
        }
    }
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZONE: &str = "shoal.local";

    fn table() -> DnsTable {
        let t = DnsTable::new();
        t.replace(HashMap::from([
            (
                "web.default.svc.shoal.local".to_string(),
                vec![Ipv4Addr::new(10, 96, 0, 10)],
            ),
            (
                "Multi.default.svc.shoal.local.".to_string(),
                vec![Ipv4Addr::new(10, 244, 1, 2), Ipv4Addr::new(10, 244, 1, 3)],
            ),
        ]));
        t
    }

    fn query(name: &str, ty: RecordType) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(0x1234).set_recursion_desired(true);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), ty));
        m.to_vec().unwrap()
    }

    fn ask(name: &str, ty: RecordType) -> Message {
        let resp = answer(&query(name, ty), ZONE, &table(), true).unwrap();
        let m = Message::from_vec(&resp).unwrap();
        assert_eq!(m.id(), 0x1234);
        assert_eq!(m.message_type(), MessageType::Response);
        m
    }

    fn a_records(m: &Message) -> Vec<Ipv4Addr> {
        m.answers()
            .iter()
            .filter_map(|r| match r.data() {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn table_lookup_is_case_insensitive() {
        let t = table();
        assert_eq!(
            t.lookup("WEB.default.svc.shoal.local."),
            Some(vec![Ipv4Addr::new(10, 96, 0, 10)])
        );
        assert_eq!(t.lookup("multi.default.svc.shoal.local").unwrap().len(), 2);
        assert_eq!(t.lookup("nope.default.svc.shoal.local"), None);
        t.replace(HashMap::new());
        assert_eq!(t.lookup("web.default.svc.shoal.local"), None);
    }

    #[test]
    fn answers_a_with_ttl_and_case_insensitively() {
        let m = ask("WeB.Default.svc.shoal.local.", RecordType::A);
        assert_eq!(m.response_code(), ResponseCode::NoError);
        assert!(m.authoritative());
        assert_eq!(a_records(&m), vec![Ipv4Addr::new(10, 96, 0, 10)]);
        assert_eq!(m.answers()[0].ttl(), TTL);
        assert_eq!(
            m.answers()[0].name().to_ascii(),
            "WeB.Default.svc.shoal.local."
        );
        let m = ask("multi.default.svc.shoal.local.", RecordType::A);
        assert_eq!(a_records(&m).len(), 2);
    }

    #[test]
    fn other_types_of_known_names_are_empty_noerror() {
        for ty in [RecordType::AAAA, RecordType::MX, RecordType::TXT] {
            let m = ask("web.default.svc.shoal.local.", ty);
            assert_eq!(m.response_code(), ResponseCode::NoError, "{ty}");
            assert!(m.answers().is_empty());
            assert_eq!(m.name_servers().len(), 1, "SOA in authority");
        }
        let m = ask("default.svc.shoal.local.", RecordType::A);
        assert_eq!(m.response_code(), ResponseCode::NoError);
        assert!(m.answers().is_empty());
        let m = ask("shoal.local.", RecordType::SOA);
        assert_eq!(m.response_code(), ResponseCode::NoError);
        assert_eq!(m.answers()[0].record_type(), RecordType::SOA);
    }

    #[test]
    fn unknown_names_are_authoritative_nxdomain() {
        for name in [
            "nope.default.svc.shoal.local.",
            "eb.default.svc.shoal.local.",
            "example.com.",
            "web.default.svc.shoal.local.example.com.",
            "local.",
        ] {
            let m = ask(name, RecordType::A);
            assert_eq!(m.response_code(), ResponseCode::NXDomain, "{name}");
            assert!(m.authoritative());
            assert!(m.answers().is_empty());
        }
        let m = ask("nope.shoal.local.", RecordType::A);
        assert_eq!(
            m.name_servers()[0].record_type(),
            RecordType::SOA,
            "negative answers in the zone carry the SOA"
        );
    }

    #[test]
    fn junk_gets_formerr_notimp_or_nothing() {
        let t = table();
        assert_eq!(answer(&[], ZONE, &t, true), None);
        assert_eq!(answer(&[1, 2, 3], ZONE, &t, true), None);
        // Header claims one question but carries none.
        let junk = [0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xff];
        let m = Message::from_vec(&answer(&junk, ZONE, &t, true).unwrap()).unwrap();
        assert_eq!(m.id(), 0xabcd);
        assert_eq!(m.response_code(), ResponseCode::FormErr);
        // A response is never answered.
        let mut resp = query("web.default.svc.shoal.local.", RecordType::A);
        resp[2] |= 0x80;
        assert_eq!(answer(&resp, ZONE, &t, true), None);
        // Opcode STATUS.
        let mut status = query("web.default.svc.shoal.local.", RecordType::A);
        status[2] = (status[2] & !0x78) | (2 << 3);
        let m = Message::from_vec(&answer(&status, ZONE, &t, true).unwrap()).unwrap();
        assert_eq!(m.response_code(), ResponseCode::NotImp);
        // Class CH.
        let mut m = Message::new();
        let mut q = Query::query(Name::from_ascii("version.bind.").unwrap(), RecordType::TXT);
        q.set_query_class(DNSClass::CH);
        m.set_id(7).add_query(q);
        let r = answer(&m.to_vec().unwrap(), ZONE, &t, true).unwrap();
        let r = Message::from_vec(&r).unwrap();
        assert_eq!(r.response_code(), ResponseCode::NotImp);
        // Two questions.
        let mut m = Message::new();
        m.set_id(8);
        m.add_query(Query::query(Name::from_ascii("a.").unwrap(), RecordType::A));
        m.add_query(Query::query(Name::from_ascii("b.").unwrap(), RecordType::A));
        let r = answer(&m.to_vec().unwrap(), ZONE, &t, true).unwrap();
        assert_eq!(
            Message::from_vec(&r).unwrap().response_code(),
            ResponseCode::FormErr
        );
    }

    #[test]
    fn garbage_never_panics() {
        let t = table();
        let seed = 0x5eed_u64;
        println!("seed {seed:#x}");
        let mut x = seed;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let valid = query("web.default.svc.shoal.local.", RecordType::A);
        for i in 0..20_000 {
            let buf: Vec<u8> = if i % 2 == 0 {
                let len = (next() % 600) as usize;
                (0..len).map(|_| next() as u8).collect()
            } else {
                let mut b = valid.clone();
                for _ in 0..(1 + next() % 4) {
                    let pos = (next() as usize) % b.len();
                    b[pos] = next() as u8;
                }
                b.truncate(12 + (next() as usize) % (b.len() - 11));
                b
            };
            if let Some(resp) = answer(&buf, ZONE, &t, i % 3 == 0) {
                let m = Message::from_vec(&resp).expect("our responses parse");
                assert_eq!(&resp[..2], &buf[..2], "id echoed");
                assert_eq!(m.message_type(), MessageType::Response);
            }
        }
    }

    #[test]
    fn udp_truncates_large_answers() {
        let t = DnsTable::new();
        let ips: Vec<Ipv4Addr> = (0..100).map(|i| Ipv4Addr::new(10, 244, 0, i)).collect();
        t.replace(HashMap::from([("big.shoal.local".to_string(), ips)]));
        let q = query("big.shoal.local.", RecordType::A);
        let udp = Message::from_vec(&answer(&q, ZONE, &t, true).unwrap()).unwrap();
        assert!(udp.truncated());
        assert!(udp.answers().is_empty());
        let tcp = Message::from_vec(&answer(&q, ZONE, &t, false).unwrap()).unwrap();
        assert!(!tcp.truncated());
        assert_eq!(tcp.answers().len(), 100);
    }

    /// A real DNS server on loopback playing the upstream: this module's own, authoritative
    /// for `world.test`; aborted on drop.
    struct Upstream {
        addr: SocketAddr,
        task: tokio::task::JoinHandle<io::Result<()>>,
    }

    impl Upstream {
        async fn start(records: HashMap<String, Vec<Ipv4Addr>>) -> Upstream {
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = udp.local_addr().unwrap();
            let tcp = TcpListener::bind(addr).await.unwrap();
            let t = DnsTable::new();
            t.replace(records);
            Upstream {
                addr,
                task: tokio::spawn(serve_sockets(udp, tcp, "world.test", t)),
            }
        }

        async fn stop(&mut self) {
            self.task.abort();
            let _ = (&mut self.task).await;
        }
    }

    impl Drop for Upstream {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn ask_udp(server: SocketAddr, name: &str) -> (Message, Duration) {
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let t = std::time::Instant::now();
        client
            .send_to(&query(name, RecordType::A), server)
            .await
            .unwrap();
        let mut buf = [0u8; 1500];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no answer for {name} in 5 s"))
            .unwrap();
        (Message::from_vec(&buf[..n]).unwrap(), t.elapsed())
    }

    async fn ask_tcp(server: SocketAddr, name: &str) -> Message {
        let mut s = TcpStream::connect(server).await.unwrap();
        let q = query(name, RecordType::A);
        s.write_all(&(q.len() as u16).to_be_bytes()).await.unwrap();
        s.write_all(&q).await.unwrap();
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await.unwrap();
        let mut resp = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut resp).await.unwrap();
        Message::from_vec(&resp).unwrap()
    }

    /// The node server with a forwarder to `upstreams`; returns its address.
    async fn node_server(fwd: Forwarder) -> (SocketAddr, tokio::task::JoinHandle<io::Result<()>>) {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        let tcp = TcpListener::bind(addr).await.unwrap();
        let task = tokio::spawn(serve_sockets_forwarding(
            udp,
            tcp,
            ZONE,
            table(),
            Some(Arc::new(fwd)),
        ));
        (addr, task)
    }

    #[tokio::test]
    async fn forwards_outside_names_caches_and_fails_fast_without_upstream() {
        let www = Ipv4Addr::new(203, 0, 113, 80);
        let mut up = Upstream::start(HashMap::from([
            ("www.world.test".to_string(), vec![www]),
            ("api.world.test".to_string(), vec![www]),
        ]))
        .await;
        let (node, task) = node_server(Forwarder::new(vec![up.addr])).await;

        // Forwarded, the upstream's answer (with its TTL) comes back, over UDP and TCP.
        let (m, took) = ask_udp(node, "www.world.test.").await;
        println!("forwarded answer in {took:?}");
        assert_eq!(m.response_code(), ResponseCode::NoError);
        assert_eq!(a_records(&m), vec![www]);
        assert_eq!(m.id(), 0x1234);
        let m = ask_tcp(node, "WWW.world.test.").await;
        assert_eq!(a_records(&m), vec![www], "tcp");
        // The upstream's NXDOMAIN passes through (and is not authoritative here).
        let (m, _) = ask_udp(node, "nope.world.test.").await;
        assert_eq!(m.response_code(), ResponseCode::NXDomain);
        // Cluster names are answered here; unknown ones get our authoritative NXDOMAIN.
        let (m, _) = ask_udp(node, "web.default.svc.shoal.local.").await;
        assert_eq!(a_records(&m), vec![Ipv4Addr::new(10, 96, 0, 10)]);
        let (m, _) = ask_udp(node, "nope.default.svc.shoal.local.").await;
        assert_eq!(m.response_code(), ResponseCode::NXDomain);
        assert!(m.authoritative());

        // The upstream stops: the cached name still resolves (TTL lowered or equal), an
        // uncached one fails fast with SERVFAIL, cluster names still resolve.
        up.stop().await;
        let (m, took) = ask_udp(node, "www.world.test.").await;
        assert_eq!(a_records(&m), vec![www], "cache hit");
        assert!(m.answers()[0].ttl() <= TTL);
        assert!(took < Duration::from_millis(500), "{took:?}");
        let (m, took) = ask_udp(node, "api.world.test.").await;
        println!("servfail with the upstream down in {took:?}");
        assert_eq!(m.response_code(), ResponseCode::ServFail);
        assert!(took < Duration::from_millis(1500), "{took:?}");
        let (m, _) = ask_udp(node, "web.default.svc.shoal.local.").await;
        assert_eq!(a_records(&m), vec![Ipv4Addr::new(10, 96, 0, 10)]);
        task.abort();
    }

    #[tokio::test]
    async fn silent_upstream_gives_servfail_within_the_total_timeout() {
        // Bound, never answers: every try times out.
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let timeouts = forward::Timeouts {
            attempt: Duration::from_millis(300),
            total: Duration::from_millis(800),
        };
        let fwd = Forwarder::with(vec![silent.local_addr().unwrap()], timeouts, 16);
        let (node, task) = node_server(fwd).await;
        // Cluster names do not wait for the silent upstream, even while a query to it is
        // pending (forwarded queries run on their own tasks).
        let pending = tokio::spawn(ask_udp(node, "slow.world.test."));
        let (m, took) = ask_udp(node, "web.default.svc.shoal.local.").await;
        assert_eq!(a_records(&m), vec![Ipv4Addr::new(10, 96, 0, 10)]);
        assert!(took < Duration::from_millis(200), "{took:?}");
        let (m, took) = pending.await.unwrap();
        println!("servfail from a silent upstream after {took:?}");
        assert_eq!(m.response_code(), ResponseCode::ServFail);
        assert!(
            took >= Duration::from_millis(550) && took < Duration::from_millis(1500),
            "{took:?}"
        );
        task.abort();
    }

    #[tokio::test]
    async fn truncated_upstream_answers_are_fetched_over_tcp() {
        let ips: Vec<Ipv4Addr> = (1..=100).map(|i| Ipv4Addr::new(203, 0, 113, i)).collect();
        let up = Upstream::start(HashMap::from([("big.world.test".to_string(), ips)])).await;
        let (node, task) = node_server(Forwarder::new(vec![up.addr])).await;
        // Over UDP the client gets a truncated answer (too big for 512 bytes) ...
        let (m, _) = ask_udp(node, "big.world.test.").await;
        assert!(m.truncated(), "{m:?}");
        // ... and over TCP all 100 addresses: the forwarder fell back to TCP upstream.
        let m = ask_tcp(node, "big.world.test.").await;
        assert!(!m.truncated());
        assert_eq!(a_records(&m).len(), 100);
        task.abort();
    }

    #[test]
    fn pod_resolv_options() {
        assert_eq!(resolv_options(), vec!["ndots:5"]);
    }

    #[test]
    fn search_path() {
        assert_eq!(
            resolv_search("default", "shoal.local."),
            vec!["default.svc.shoal.local", "svc.shoal.local", "shoal.local"]
        );
    }

    #[tokio::test]
    async fn serves_udp_and_tcp() {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        let tcp = TcpListener::bind(addr).await.unwrap();
        let server = tokio::spawn(serve_sockets(udp, tcp, ZONE, table()));

        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // Junk first: the server must survive it.
        client.send_to(&[0xff; 5], addr).await.unwrap();
        client
            .send_to(&query("web.default.svc.shoal.local.", RecordType::A), addr)
            .await
            .unwrap();
        let mut buf = [0u8; 1500];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let m = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(a_records(&m), vec![Ipv4Addr::new(10, 96, 0, 10)]);

        let mut s = TcpStream::connect(addr).await.unwrap();
        for (name, code) in [
            ("nope.shoal.local.", ResponseCode::NXDomain),
            ("web.default.svc.shoal.local.", ResponseCode::NoError),
        ] {
            let q = query(name, RecordType::A);
            s.write_all(&(q.len() as u16).to_be_bytes()).await.unwrap();
            s.write_all(&q).await.unwrap();
            let mut len = [0u8; 2];
            s.read_exact(&mut len).await.unwrap();
            let mut resp = vec![0u8; u16::from_be_bytes(len) as usize];
            s.read_exact(&mut resp).await.unwrap();
            assert_eq!(Message::from_vec(&resp).unwrap().response_code(), code);
        }
        server.abort();
    }

    /// Waits until the server closes `s` (EOF or reset); returns how long after `since`.
    async fn closed_after(
        s: &mut TcpStream,
        since: std::time::Instant,
        within: Duration,
    ) -> Duration {
        let mut b = [0u8; 16];
        match tokio::time::timeout(within, s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => since.elapsed(),
            Ok(Ok(n)) => panic!("server sent {n} bytes instead of closing"),
            Err(_) => panic!("connection still open after {within:?}"),
        }
    }

    #[tokio::test]
    async fn silent_and_slow_tcp_clients_are_dropped() {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        let tcp = TcpListener::bind(addr).await.unwrap();
        let server = tokio::spawn(serve_sockets(udp, tcp, ZONE, table()));
        let within = TCP_IDLE + Duration::from_secs(3);

        let connected = std::time::Instant::now();
        // Connects and sends nothing.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        // Sends half of the length prefix, then nothing.
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(&[0]).await.unwrap();
        // Positive control: a client that waits less than the idle time, then asks twice,
        // is answered each time on the same connection.
        let mut patient = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(TCP_IDLE / 3).await; // the client's own pause, not a wait for a condition
        for _ in 0..2 {
            let q = query("web.default.svc.shoal.local.", RecordType::A);
            patient
                .write_all(&(q.len() as u16).to_be_bytes())
                .await
                .unwrap();
            patient.write_all(&q).await.unwrap();
            let mut len = [0u8; 2];
            tokio::time::timeout(within, patient.read_exact(&mut len))
                .await
                .expect("answer in time")
                .expect("answer");
            let mut resp = vec![0u8; u16::from_be_bytes(len) as usize];
            patient.read_exact(&mut resp).await.unwrap();
            assert_eq!(
                a_records(&Message::from_vec(&resp).unwrap()),
                vec![Ipv4Addr::new(10, 96, 0, 10)]
            );
        }

        for (what, s) in [("silent", &mut silent), ("slow", &mut slow)] {
            let t = closed_after(s, connected, within).await;
            eprintln!("dns: {what} tcp client dropped {t:?} after connecting (limit {TCP_IDLE:?})");
            assert!(
                t >= TCP_IDLE - Duration::from_millis(100),
                "{what}: closed early, {t:?}"
            );
        }
        server.abort();
    }
}
