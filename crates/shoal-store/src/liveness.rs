//! Liveness outside the Raft log (issue "Control plane at scale", part 4): when each name
//! (a node) was last heard from. Like Kubernetes' node Leases or Nomad's heartbeat TTLs,
//! but kept in memory only: a member records what it hears, a follower forwards what it
//! heard to the leader in batches ([`BATCH_WINDOW`]) and pulls what the leader heard
//! ([`PULL_EVERY`]), so every member knows about as much as the leader. Nothing is
//! written to the log; a lost batch is made up by the name's next heartbeat. A new
//! leader may know less than the old one: whoever judges silence (the node reconciler)
//! counts it from no earlier than the start of its leadership.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use shoal_proto::Heard;
use tokio::sync::mpsc;

/// How long a follower gathers names before forwarding them in one batch.
pub const BATCH_WINDOW: Duration = Duration::from_millis(50);
/// How often a follower pulls what the leader heard.
pub const PULL_EVERY: Duration = Duration::from_secs(1);
/// Entries not heard from for this long are forgotten (deleted nodes).
const FORGET_AFTER_MS: i64 = 24 * 3600 * 1000;

/// What one member heard, and the queue of names to forward to the leader.
#[derive(Debug)]
pub(crate) struct Liveness {
    heard: Mutex<HashMap<String, i64>>,
    forward: mpsc::UnboundedSender<String>,
}

impl Liveness {
    /// A new, empty record and the receiving end of its forwarding queue (for the
    /// store's forwarder task).
    pub(crate) fn new() -> (Liveness, mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Liveness {
                heard: Mutex::new(HashMap::new()),
                forward: tx,
            },
            rx,
        )
    }

    fn heard(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        // A panic while holding it leaves a map of plain values: keep using it.
        self.heard.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `names` as heard from at `at_ms`, keeping the latest time per name.
    pub(crate) fn record(&self, names: impl IntoIterator<Item = String>, at_ms: i64) {
        let mut heard = self.heard();
        for n in names {
            let t = heard.entry(n).or_insert(at_ms);
            *t = (*t).max(at_ms);
        }
    }

    /// Records a name heard now and, unless `leading`, queues it for the leader.
    pub(crate) fn heard_now(&self, name: &str, leading: bool) {
        self.record([name.to_owned()], Utc::now().timestamp_millis());
        if !leading {
            // Only fails once the forwarder stopped (the store is shutting down).
            let _ = self.forward.send(name.to_owned());
        }
    }

    /// When `name` was last heard from, as far as this member knows.
    pub(crate) fn last_heard(&self, name: &str) -> Option<DateTime<Utc>> {
        self.heard()
            .get(name)
            .and_then(|ms| DateTime::from_timestamp_millis(*ms))
    }

    /// Everything this member knows (the answer to a pull), forgetting old entries.
    pub(crate) fn all(&self) -> Vec<Heard> {
        let cutoff = Utc::now().timestamp_millis() - FORGET_AFTER_MS;
        let mut heard = self.heard();
        heard.retain(|_, t| *t >= cutoff);
        heard
            .iter()
            .map(|(name, t)| Heard {
                name: name.clone(),
                unix_millis: *t,
            })
            .collect()
    }

    /// Merges the leader's answer to a pull.
    pub(crate) fn merge(&self, from_leader: Vec<Heard>) {
        let mut heard = self.heard();
        for h in from_leader {
            let t = heard.entry(h.name).or_insert(h.unix_millis);
            *t = (*t).max(h.unix_millis);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_time_per_name_wins_and_old_names_are_forgotten() {
        let (l, _rx) = Liveness::new();
        l.record(["a".to_string()], 2_000);
        l.record(["a".to_string()], 1_000);
        l.merge(vec![Heard {
            name: "b".into(),
            unix_millis: 5_000,
        }]);
        l.merge(vec![Heard {
            name: "a".into(),
            unix_millis: 3_000,
        }]);
        assert_eq!(l.last_heard("a").map(|t| t.timestamp_millis()), Some(3_000));
        assert_eq!(l.last_heard("c"), None);
        // Both are older than a day: a pull answer forgets them.
        assert!(l.all().is_empty());
        assert_eq!(l.last_heard("b"), None);
        l.heard_now("n1", true);
        assert_eq!(l.all().len(), 1);
    }
}
