//! A small, bounded cache of upstream answers that honours their TTLs.
//!
//! Pure: the caller passes the time, so expiry is tested without sleeping. Positive answers live
//! for the smallest TTL of their answer records, negative ones (NXDOMAIN, or NOERROR without
//! data) for the SOA's negative TTL (RFC 2308: the smaller of the SOA record's TTL and its
//! `minimum`); both capped at [`Cache::new`]'s `max_ttl`. Errors (SERVFAIL, REFUSED, …),
//! truncated answers and answers with TTL 0 are never kept. A full cache first drops expired
//! entries, then the one closest to expiry. Keys are the question (name case-insensitive, type,
//! class); a hit is returned with every TTL lowered by the entry's age.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{RData, Record};

/// Cached upstream answers (see the module doc).
#[derive(Debug)]
pub struct Cache {
    entries: HashMap<Key, Entry>,
    capacity: usize,
    max_ttl: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    /// Lower-case, fully qualified.
    name: String,
    qtype: u16,
    qclass: u16,
}

impl Key {
    fn of(q: &Query) -> Key {
        Key {
            name: q.name().to_lowercase().to_ascii(),
            qtype: u16::from(q.query_type()),
            qclass: u16::from(q.query_class()),
        }
    }
}

#[derive(Debug)]
struct Entry {
    msg: Message,
    stored: Instant,
    ttl: u32,
}

impl Entry {
    fn expires(&self) -> Instant {
        self.stored + Duration::from_secs(u64::from(self.ttl))
    }
}

impl Cache {
    /// An empty cache of at most `capacity` answers, each kept at most `max_ttl` seconds.
    pub fn new(capacity: usize, max_ttl: u32) -> Cache {
        Cache {
            entries: HashMap::new(),
            capacity: capacity.max(1),
            max_ttl,
        }
    }

    /// Number of entries (expired ones included until they are looked up or evicted).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keeps `resp`, the upstream's answer to `q`, if it may be cached; returns the TTL used.
    pub fn insert(&mut self, q: &Query, resp: &Message, now: Instant) -> Option<u32> {
        let ttl = cache_ttl(resp)?.min(self.max_ttl);
        if ttl == 0 {
            return None;
        }
        let key = Key::of(q);
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.entries.retain(|_, e| e.expires() > now);
            if self.entries.len() >= self.capacity
                && let Some(k) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.expires())
                    .map(|(k, _)| k.clone())
            {
                self.entries.remove(&k);
            }
        }
        self.entries.insert(
            key,
            Entry {
                msg: resp.clone(),
                stored: now,
                ttl,
            },
        );
        Some(ttl)
    }

    /// The cached answer to `q` with TTLs lowered by its age, if there is one that has not
    /// expired at `now` (an expired one is dropped).
    pub fn get(&mut self, q: &Query, now: Instant) -> Option<Message> {
        let key = Key::of(q);
        let e = self.entries.get(&key)?;
        let age = now.saturating_duration_since(e.stored).as_secs();
        let age = u32::try_from(age).unwrap_or(u32::MAX);
        if age >= e.ttl {
            self.entries.remove(&key);
            return None;
        }
        let mut msg = e.msg.clone();
        let lower = |r: &mut Record| {
            let t = r.ttl().saturating_sub(age);
            r.set_ttl(t);
        };
        msg.answers_mut().iter_mut().for_each(lower);
        msg.name_servers_mut().iter_mut().for_each(lower);
        msg.additionals_mut().iter_mut().for_each(lower);
        Some(msg)
    }
}

/// How long `resp` may be cached, in seconds, before any cap; `None`: not at all.
pub fn cache_ttl(resp: &Message) -> Option<u32> {
    if resp.truncated() {
        return None;
    }
    let negative = || {
        resp.name_servers().iter().find_map(|r| match r.data() {
            RData::SOA(soa) => Some(r.ttl().min(soa.minimum())),
            _ => None,
        })
    };
    match resp.response_code() {
        ResponseCode::NoError if !resp.answers().is_empty() => {
            resp.answers().iter().map(Record::ttl).min()
        }
        ResponseCode::NoError | ResponseCode::NXDomain => negative(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::MessageType;
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::{Name, RecordType};
    use std::net::Ipv4Addr;

    fn q(name: &str) -> Query {
        Query::query(Name::from_ascii(name).unwrap(), RecordType::A)
    }

    fn a(name: &str, ttl: u32, ip: [u8; 4]) -> Record {
        Record::from_rdata(
            Name::from_ascii(name).unwrap(),
            ttl,
            RData::A(A(Ipv4Addr::from(ip))),
        )
    }

    fn soa(ttl: u32, minimum: u32) -> Record {
        let n = |s: &str| Name::from_ascii(s).unwrap();
        Record::from_rdata(
            n("world.test."),
            ttl,
            RData::SOA(SOA::new(
                n("ns.world.test."),
                n("h.world.test."),
                1,
                60,
                10,
                600,
                minimum,
            )),
        )
    }

    fn resp(name: &str, rcode: ResponseCode, answers: Vec<Record>, auth: Vec<Record>) -> Message {
        let mut m = Message::new();
        m.set_id(1)
            .set_message_type(MessageType::Response)
            .set_response_code(rcode);
        m.add_query(q(name));
        m.insert_answers(answers);
        m.insert_name_servers(auth);
        m
    }

    #[test]
    fn ttl_of_positive_negative_and_uncacheable_answers() {
        let ok = resp(
            "www.world.test.",
            ResponseCode::NoError,
            vec![
                a("www.world.test.", 300, [1, 1, 1, 1]),
                a("www.world.test.", 30, [1, 1, 1, 2]),
            ],
            vec![],
        );
        assert_eq!(cache_ttl(&ok), Some(30), "smallest answer TTL");
        let nx = resp(
            "x.test.",
            ResponseCode::NXDomain,
            vec![],
            vec![soa(900, 60)],
        );
        assert_eq!(cache_ttl(&nx), Some(60), "SOA minimum below its TTL");
        let nodata = resp("x.test.", ResponseCode::NoError, vec![], vec![soa(20, 60)]);
        assert_eq!(cache_ttl(&nodata), Some(20), "SOA TTL below its minimum");
        let bare_nx = resp("x.test.", ResponseCode::NXDomain, vec![], vec![]);
        assert_eq!(cache_ttl(&bare_nx), None, "negative answer without SOA");
        for code in [ResponseCode::ServFail, ResponseCode::Refused] {
            let m = resp("x.test.", code, vec![], vec![soa(20, 60)]);
            assert_eq!(cache_ttl(&m), None, "{code}");
        }
        let mut tc = ok.clone();
        tc.set_truncated(true);
        assert_eq!(cache_ttl(&tc), None, "truncated");
    }

    #[test]
    fn hits_age_and_expire() {
        let mut c = Cache::new(10, 3600);
        let t0 = Instant::now();
        let m = resp(
            "www.world.test.",
            ResponseCode::NoError,
            vec![a("www.world.test.", 30, [1, 1, 1, 1])],
            vec![],
        );
        assert_eq!(c.insert(&q("www.world.test."), &m, t0), Some(30));
        // Case-insensitive key; TTL lowered by whole seconds of age.
        let hit = c
            .get(&q("WWW.World.Test."), t0 + Duration::from_millis(10_500))
            .unwrap();
        assert_eq!(hit.answers()[0].ttl(), 20);
        assert_eq!(hit.answers().len(), 1);
        assert!(c.get(&q("other.world.test."), t0).is_none());
        // Another type of the same name is another entry.
        let aaaa = Query::query(
            Name::from_ascii("www.world.test.").unwrap(),
            RecordType::AAAA,
        );
        assert!(c.get(&aaaa, t0).is_none());
        // Expired at its TTL, and dropped.
        assert!(
            c.get(&q("www.world.test."), t0 + Duration::from_secs(30))
                .is_none()
        );
        assert!(c.is_empty());
    }

    #[test]
    fn caps_ttl_and_skips_zero() {
        let mut c = Cache::new(10, 5);
        let t0 = Instant::now();
        let long = resp(
            "a.test.",
            ResponseCode::NoError,
            vec![a("a.test.", 86_400, [1, 1, 1, 1])],
            vec![],
        );
        assert_eq!(c.insert(&q("a.test."), &long, t0), Some(5));
        assert!(c.get(&q("a.test."), t0 + Duration::from_secs(4)).is_some());
        assert!(c.get(&q("a.test."), t0 + Duration::from_secs(5)).is_none());
        let zero = resp(
            "z.test.",
            ResponseCode::NoError,
            vec![a("z.test.", 0, [1, 1, 1, 1])],
            vec![],
        );
        assert_eq!(c.insert(&q("z.test."), &zero, t0), None);
        assert!(c.get(&q("z.test."), t0).is_none());
    }

    #[test]
    fn bounded_evicting_expired_then_soonest() {
        let mut c = Cache::new(3, 3600);
        let t0 = Instant::now();
        let put = |c: &mut Cache, name: &str, ttl: u32, at: Instant| {
            let m = resp(
                name,
                ResponseCode::NoError,
                vec![a(name, ttl, [1, 1, 1, 1])],
                vec![],
            );
            c.insert(&q(name), &m, at)
        };
        put(&mut c, "a.test.", 100, t0);
        put(&mut c, "b.test.", 10, t0);
        put(&mut c, "c.test.", 50, t0);
        assert_eq!(c.len(), 3);
        // Full: d evicts b, the one closest to expiry.
        put(&mut c, "d.test.", 100, t0);
        assert_eq!(c.len(), 3);
        assert!(c.get(&q("b.test."), t0).is_none());
        for n in ["a.test.", "c.test.", "d.test."] {
            assert!(c.get(&q(n), t0).is_some(), "{n}");
        }
        // Later, c (50 s) has expired: e replaces it, a and d stay.
        let later = t0 + Duration::from_secs(60);
        put(&mut c, "e.test.", 100, later);
        assert_eq!(c.len(), 3);
        for n in ["a.test.", "d.test.", "e.test."] {
            assert!(c.get(&q(n), later).is_some(), "{n}");
        }
        // Replacing an existing key never evicts another.
        put(&mut c, "a.test.", 200, later);
        assert_eq!(c.len(), 3);
    }
}
