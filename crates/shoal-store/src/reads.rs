//! Linearizable reads share ReadIndex rounds (etcd's linearizable read loop): a reader
//! joins the *next* round — one that starts after it arrived, so that the round's read
//! index covers every write acknowledged before the read began — and every reader that
//! arrives while a round is in flight joins the same next round. At most one round runs
//! at a time; under load one round serves many readers, and a lone reader pays exactly
//! one round, as before.
//!
//! A leader also holds a **read lease** (issue "Control plane at scale", part 3): a round
//! it ran itself that started at `S` proves that a quorum heard from it after `S`, and
//! openraft 0.9 members refuse to vote for anyone else until `election_timeout_max` after
//! they last heard from their leader (and stand only after `election_timeout_max +
//! election_timeout` without a word). So until `S + election_timeout_min / 2` no other
//! leader can exist and this leader has applied every acknowledged write (it answers a
//! write only after applying it; the round applied everything of earlier terms): reads in
//! that window are served locally without a round, and so is a follower's ReadIndex
//! request (the leader's applied index). The margin — half the shortest timeout against
//! the longest wait — covers clock rate drift and scheduling delays up to several hundred
//! milliseconds; what it does not cover is a member whose clock stops while others run (a
//! suspended VM resumed inside its old lease): such a member loses its lease at the first
//! term change it sees, but may serve stale reads until then.

use std::sync::Mutex;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::StoreError;

/// The outcome of one round, published to every reader that joined it.
pub(crate) type Outcome = Option<Result<(), StoreError>>;

/// Readers rounds, how many rounds ran and how many reads they served. One per member.
#[derive(Debug, Default)]
pub(crate) struct ReadRounds {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The round readers join now: not started yet.
    next: Option<watch::Sender<Outcome>>,
    /// Whether a driver is running rounds.
    running: bool,
}

/// Rounds run and reads served, for `shoal_store_read_rounds_total` and
/// `shoal_store_linearizable_reads_total`.
pub fn read_counters() -> &'static (
    prometheus_client::metrics::counter::Counter,
    prometheus_client::metrics::counter::Counter,
) {
    static C: std::sync::OnceLock<(
        prometheus_client::metrics::counter::Counter,
        prometheus_client::metrics::counter::Counter,
    )> = std::sync::OnceLock::new();
    C.get_or_init(Default::default)
}

impl ReadRounds {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Joins the next round: its outcome, and whether the caller must start the driver
    /// (no round is running).
    pub(crate) fn join(&self) -> (watch::Receiver<Outcome>, bool) {
        read_counters().1.inc();
        let mut st = self.lock();
        let rx = st
            .next
            .get_or_insert_with(|| watch::channel(None).0)
            .subscribe();
        let start = !st.running;
        st.running = true;
        (rx, start)
    }

    /// For the driver: the round to run now (taken, so that later readers start a new
    /// one), or `None` when nobody waits (the driver stops).
    pub(crate) fn take_next(&self) -> Option<watch::Sender<Outcome>> {
        let mut st = self.lock();
        let next = st.next.take();
        if next.is_none() {
            st.running = false;
        } else {
            read_counters().0.inc();
        }
        next
    }
}

/// Reads served within a leader's lease (no round), for `shoal_store_lease_reads_total`.
pub fn lease_read_counter() -> &'static prometheus_client::metrics::counter::Counter {
    static C: std::sync::OnceLock<prometheus_client::metrics::counter::Counter> =
        std::sync::OnceLock::new();
    C.get_or_init(Default::default)
}

/// A leader's read lease (see the module docs): the term it was earned in and when it ends.
#[derive(Debug, Default)]
pub(crate) struct Lease {
    until: Mutex<Option<(u64, Instant)>>,
}

impl Lease {
    /// Records a round of term `term` that started at `started` and succeeded: the lease
    /// runs `length` from `started`.
    pub(crate) fn extend(&self, term: u64, started: Instant, length: std::time::Duration) {
        let end = started + length;
        let mut until = self.until.lock().unwrap_or_else(|p| p.into_inner());
        *until = match *until {
            Some((t, e)) if t == term => Some((t, e.max(end))),
            Some((t, _)) if t > term => *until,
            _ => Some((term, end)),
        };
    }

    /// Whether this member, leading in `term`, still holds a lease at `now`.
    pub(crate) fn holds(&self, term: u64, now: Instant) -> bool {
        let until = self.until.lock().unwrap_or_else(|p| p.into_inner());
        matches!(*until, Some((t, end)) if t == term && now < end)
    }
}

/// Waits for the outcome of the round `rx` joined (a driver that went away is a
/// shutdown).
pub(crate) async fn outcome(mut rx: watch::Receiver<Outcome>) -> Result<(), StoreError> {
    match rx.wait_for(Option::is_some).await {
        Ok(v) => v.clone().unwrap_or(Err(StoreError::Shutdown)),
        Err(_) => Err(StoreError::Shutdown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_holds_in_its_term_until_it_ends() {
        let l = Lease::default();
        let t0 = Instant::now();
        let ms = std::time::Duration::from_millis;
        assert!(!l.holds(3, t0));
        l.extend(3, t0, ms(100));
        assert!(l.holds(3, t0 + ms(99)));
        assert!(!l.holds(3, t0 + ms(100)));
        assert!(!l.holds(4, t0), "another term: no lease");
        // A later round extends it; an older round does not shorten it.
        l.extend(3, t0 + ms(50), ms(100));
        l.extend(3, t0, ms(100));
        assert!(l.holds(3, t0 + ms(149)));
        // A round of an older term never replaces a newer term's lease.
        l.extend(5, t0, ms(10));
        l.extend(4, t0, ms(1000));
        assert!(l.holds(5, t0 + ms(5)) && !l.holds(4, t0 + ms(5)));
    }

    #[tokio::test]
    async fn readers_that_arrive_during_a_round_share_the_next_one() {
        let r = ReadRounds::default();
        // The first reader starts the driver; the round is not taken yet, so a second
        // reader joins the same round and starts nothing.
        let (a, start_a) = r.join();
        let (b, start_b) = r.join();
        assert!(start_a && !start_b);
        let round1 = r.take_next().expect("a round");
        // While round 1 runs, two more readers arrive: they wait for round 2, not 1.
        let (c, start_c) = r.join();
        let (d, _) = r.join();
        assert!(!start_c);
        round1.send_replace(Some(Ok(())));
        assert_eq!(outcome(a).await, Ok(()));
        assert_eq!(outcome(b).await, Ok(()));
        assert!(c.borrow().is_none() && d.borrow().is_none());
        let round2 = r.take_next().expect("round 2");
        round2.send_replace(Some(Err(StoreError::NoLeader)));
        assert_eq!(outcome(c).await, Err(StoreError::NoLeader));
        assert_eq!(outcome(d).await, Err(StoreError::NoLeader));
        // Nobody left: the driver stops, and the next reader starts a new one.
        assert!(r.take_next().is_none());
        let (e, start_e) = r.join();
        assert!(start_e);
        drop(r.take_next());
        assert_eq!(outcome(e).await, Err(StoreError::Shutdown));
    }
}
