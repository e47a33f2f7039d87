//! Fan-out of applied changes to watchers, with a bounded history for resuming.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::mpsc;

use crate::StoreError;
use crate::types::WatchEvent;

/// Extra room in a watcher's channel beyond the history size before it counts as lagging.
const WATCH_SLACK: usize = 1024;

#[derive(Debug)]
struct Subscriber {
    prefix: String,
    tx: mpsc::Sender<Result<WatchEvent, StoreError>>,
    lagged: Arc<AtomicBool>,
    last_sent: u64,
    /// Events up to this revision are not sent: the watcher asked for what came after it,
    /// and this member may not have applied that far yet when the watch started.
    after: u64,
}

/// The history and the subscribers. Guarded by one mutex so that a subscriber's replay and its
/// registration happen atomically with respect to publishing (no lost or duplicated event).
#[derive(Debug)]
pub(crate) struct WatchHub {
    history: VecDeque<WatchEvent>,
    /// Every event with a revision greater than `floor` is in `history`.
    floor: u64,
    cap: usize,
    subs: Vec<Subscriber>,
}

impl WatchHub {
    /// A hub whose history starts complete after revision `floor`.
    pub(crate) fn new(cap: usize, floor: u64) -> Self {
        Self {
            history: VecDeque::new(),
            floor,
            cap: cap.max(1),
            subs: Vec::new(),
        }
    }

    /// The oldest revision a watcher may resume after.
    #[cfg(test)]
    pub(crate) fn floor(&self) -> u64 {
        self.floor
    }

    /// Watchers whose stream is still open (for the watchers metric).
    pub(crate) fn watchers(&self) -> usize {
        self.subs.iter().filter(|s| !s.tx.is_closed()).count()
    }

    /// Records and fans out events (all events of one apply call, in order).
    pub(crate) fn publish(&mut self, events: Vec<WatchEvent>) {
        if events.is_empty() {
            return;
        }
        for ev in &events {
            self.subs.retain_mut(|s| {
                if !ev.key.starts_with(&s.prefix) || ev.revision <= s.after {
                    return !s.tx.is_closed();
                }
                match s.tx.try_send(Ok(ev.clone())) {
                    Ok(()) => {
                        s.last_sent = ev.revision;
                        true
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        s.lagged.store(true, Ordering::SeqCst);
                        false
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                }
            });
        }
        self.history.extend(events);
        while self.history.len() > self.cap {
            let Some(old) = self.history.pop_front() else {
                break;
            };
            self.floor = old.revision;
            // Events of one batch share a revision: drop the whole revision.
            while self
                .history
                .front()
                .is_some_and(|e| e.revision <= self.floor)
            {
                self.history.pop_front();
            }
        }
    }

    /// Forgets the history (the state was replaced by a snapshot at `floor`); every current
    /// watcher receives `TooOld` and is closed.
    pub(crate) fn reset(&mut self, floor: u64) {
        self.history.clear();
        self.floor = floor;
        for s in self.subs.drain(..) {
            let err = StoreError::TooOld {
                requested: s.last_sent,
                oldest: floor,
            };
            if s.tx.try_send(Err(err)).is_err() {
                s.lagged.store(true, Ordering::SeqCst);
            }
        }
    }

    /// Registers a watcher of `prefix`; with `after = Some(r)` it first receives every kept
    /// event with revision > r.
    pub(crate) fn subscribe(
        &mut self,
        prefix: &str,
        after: Option<u64>,
        current: u64,
    ) -> Result<WatchStream, StoreError> {
        let (tx, rx) = mpsc::channel(self.cap + WATCH_SLACK);
        let lagged = Arc::new(AtomicBool::new(false));
        let mut last_sent = current;
        if let Some(r) = after {
            if r < self.floor {
                return Err(StoreError::TooOld {
                    requested: r,
                    oldest: self.floor,
                });
            }
            last_sent = r;
            for ev in self
                .history
                .iter()
                .filter(|e| e.revision > r && e.key.starts_with(prefix))
            {
                // Capacity exceeds the history length, so this cannot fail.
                if tx.try_send(Ok(ev.clone())).is_err() {
                    lagged.store(true, Ordering::SeqCst);
                    break;
                }
                last_sent = ev.revision;
            }
        }
        self.subs.push(Subscriber {
            prefix: prefix.to_owned(),
            tx,
            lagged: lagged.clone(),
            last_sent,
            after: after.unwrap_or(0),
        });
        Ok(WatchStream {
            rx,
            lagged,
            prefix: prefix.to_owned(),
            done: false,
            codec: None,
        })
    }
}

/// A stream of watch events. Ends with `Err(TooOld)` when the state was replaced by a snapshot
/// and with `Err(Lagged)` when the consumer fell too far behind; both mean "re-list".
#[derive(Debug)]
pub struct WatchStream {
    rx: mpsc::Receiver<Result<WatchEvent, StoreError>>,
    lagged: Arc<AtomicBool>,
    prefix: String,
    done: bool,
    /// Opens sealed objects (set by [`crate::Store::watch`]).
    pub(crate) codec: Option<Arc<dyn crate::ValueCodec>>,
}

impl WatchStream {
    fn open(&self, mut ev: WatchEvent) -> Result<WatchEvent, StoreError> {
        if let Some(c) = &self.codec {
            ev.object = c.open(&ev.key, std::mem::take(&mut ev.object))?;
            if let Some(p) = ev.prev_object.take() {
                ev.prev_object = Some(c.open(&ev.key, p)?);
            }
        }
        Ok(ev)
    }
}

impl Stream for WatchStream {
    type Item = Result<WatchEvent, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                self.done = true;
                if self.lagged.load(Ordering::SeqCst) {
                    Poll::Ready(Some(Err(StoreError::Lagged {
                        prefix: self.prefix.clone(),
                    })))
                } else {
                    Poll::Ready(None)
                }
            }
            Poll::Ready(Some(Ok(ev))) => {
                let r = self.open(ev);
                if r.is_err() {
                    self.done = true;
                }
                Poll::Ready(Some(r))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EventType;
    use futures::StreamExt;

    fn ev(rev: u64, key: &str) -> WatchEvent {
        WatchEvent {
            revision: rev,
            event_type: EventType::Added,
            key: key.into(),
            object: serde_json::json!({}),
            prev_object: None,
        }
    }

    #[tokio::test]
    async fn resume_replays_only_newer_matching_events() {
        let mut hub = WatchHub::new(10, 0);
        hub.publish(vec![ev(1, "Pod/a/x"), ev(2, "Node//n"), ev(3, "Pod/a/y")]);
        let mut s = hub.subscribe("Pod/", Some(1), 3).expect("subscribe");
        hub.publish(vec![ev(4, "Pod/b/z")]);
        let revs: Vec<u64> = vec![
            s.next().await.expect("ev").expect("ok").revision,
            s.next().await.expect("ev").expect("ok").revision,
        ];
        assert_eq!(revs, vec![3, 4]);
    }

    #[tokio::test]
    async fn resume_ahead_of_this_member_skips_what_it_applies_late() {
        // A watcher moved from another member has seen revision 5; this one has applied 3.
        let mut hub = WatchHub::new(10, 0);
        hub.publish(vec![ev(3, "Pod/a/x")]);
        let mut s = hub.subscribe("Pod/", Some(5), 3).expect("subscribe");
        hub.publish(vec![ev(4, "Pod/a/y")]);
        hub.publish(vec![ev(5, "Pod/a/z"), ev(5, "Pod/a/w")]);
        hub.publish(vec![ev(6, "Pod/b/v"), ev(6, "Pod/b/u")]);
        let keys: Vec<String> = vec![
            s.next().await.expect("ev").expect("ok").key,
            s.next().await.expect("ev").expect("ok").key,
        ];
        assert_eq!(keys, ["Pod/b/v", "Pod/b/u"]);
    }

    #[tokio::test]
    async fn trimming_keeps_whole_revisions_and_reports_too_old() {
        let mut hub = WatchHub::new(2, 0);
        hub.publish(vec![ev(1, "a"), ev(2, "b"), ev(2, "c"), ev(3, "d")]);
        // history cap 2: revision 1 and the whole of revision 2 were dropped.
        assert_eq!(hub.floor(), 2);
        assert!(matches!(
            hub.subscribe("", Some(1), 3),
            Err(StoreError::TooOld {
                requested: 1,
                oldest: 2
            })
        ));
        let mut s = hub.subscribe("", Some(2), 3).expect("subscribe");
        assert_eq!(s.next().await.expect("ev").expect("ok").revision, 3);
    }

    #[tokio::test]
    async fn reset_closes_watchers_with_too_old() {
        let mut hub = WatchHub::new(10, 0);
        let mut s = hub.subscribe("", None, 0).expect("subscribe");
        hub.reset(50);
        assert!(matches!(
            s.next().await,
            Some(Err(StoreError::TooOld { oldest: 50, .. }))
        ));
        assert!(s.next().await.is_none());
    }

    #[tokio::test]
    async fn slow_watcher_is_dropped_as_lagged() {
        let mut hub = WatchHub::new(1, 0);
        let mut s = hub.subscribe("", None, 0).expect("subscribe");
        for i in 1..=(WATCH_SLACK as u64 + 5) {
            hub.publish(vec![ev(i, "k")]);
        }
        let mut n = 0;
        let last = loop {
            match s.next().await {
                Some(Ok(_)) => n += 1,
                other => break other,
            }
        };
        assert_eq!(n, WATCH_SLACK + 1);
        assert!(matches!(last, Some(Err(StoreError::Lagged { .. }))));
    }
}
