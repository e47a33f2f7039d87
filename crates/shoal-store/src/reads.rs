//! Linearizable reads share ReadIndex rounds (etcd's linearizable read loop): a reader
//! joins the *next* round — one that starts after it arrived, so that the round's read
//! index covers every write acknowledged before the read began — and every reader that
//! arrives while a round is in flight joins the same next round. At most one round runs
//! at a time; under load one round serves many readers, and a lone reader pays exactly
//! one round, as before.

use std::sync::Mutex;

use tokio::sync::watch;

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
