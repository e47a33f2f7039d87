//! Fan-out of applied changes to watchers, with a bounded history for resuming.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::mpsc;

use crate::StoreError;
use crate::types::{EventType, WatchEvent};

/// Extra room in a watcher's channel beyond the history size before it counts as lagging.
const WATCH_SLACK: usize = 1024;

/// One change as the history keeps it and every watcher shares it (behind an `Arc`): the
/// objects as their JSON bytes, a fraction of a parsed tree's memory, parsed only by the
/// stream that delivers the event.
#[derive(Debug)]
pub(crate) struct SharedEvent {
    revision: u64,
    event_type: EventType,
    key: String,
    object: Box<[u8]>,
    prev_object: Option<Box<[u8]>>,
}

impl SharedEvent {
    /// One change, its objects already encoded as JSON.
    pub(crate) fn new(
        revision: u64,
        event_type: EventType,
        key: String,
        object: Vec<u8>,
        prev_object: Option<Vec<u8>>,
    ) -> Self {
        Self {
            revision,
            event_type,
            key,
            object: object.into_boxed_slice(),
            prev_object: prev_object.map(Vec::into_boxed_slice),
        }
    }

    /// What the history counts against its byte cap.
    fn size(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.key.len()
            + self.object.len()
            + self.prev_object.as_ref().map_or(0, |p| p.len())
    }

    fn parse(&self, b: &[u8]) -> Result<serde_json::Value, StoreError> {
        serde_json::from_slice(b)
            .map_err(|e| StoreError::Storage(format!("watch event of {}: {e}", self.key)))
    }

    fn decode(&self) -> Result<WatchEvent, StoreError> {
        Ok(WatchEvent {
            revision: self.revision,
            event_type: self.event_type,
            key: self.key.clone(),
            object: self.parse(&self.object)?,
            prev_object: match &self.prev_object {
                Some(p) => Some(self.parse(p)?),
                None => None,
            },
        })
    }
}

type Shared = Arc<SharedEvent>;

/// A pre-filter of a watch on one field's value: the watcher is handed only the changes
/// whose object, after or before the change, holds `value` at the JSON pointer `pointer`
/// (e.g. `/spec/nodeName`), or, with `differs`, holds something else there (a missing
/// field or one that is not a string counts as the empty string, e.g. `/status/podIP`
/// differing from "": the pods with an address). With a thousand agents each watching the pods of its node, a
/// member then hands each change to the one or two watchers it concerns (as the Kubernetes
/// watch cache's triggers do), instead of to every watcher to filter. It reads objects as
/// stored: use it only on fields a [`crate::ValueCodec`] does not seal. The caller's own
/// filter still applies to what passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// JSON pointer of the field (`/spec/nodeName`).
    pub pointer: String,
    /// The value a change must hold there, after or before it.
    pub value: String,
    /// The change must hold another value than `value` there instead.
    pub differs: bool,
}

impl Trigger {
    /// True when a change from `before` (None for a creation) to `now` is handed to the
    /// watcher (what the member computes once per event and pointer).
    pub fn hits(&self, now: &serde_json::Value, before: Option<&serde_json::Value>) -> bool {
        TriggerValues::of(&self.pointer, Some(now), before).hit(&self.value, self.differs)
    }
}

/// The values an event holds at one trigger's pointer, after and before the change: read
/// once per event and group, then compared for every value the group's watchers wait for.
/// A missing field (or one that is not a string) reads as ""; `before` is None without a
/// previous version.
#[derive(Debug, Default)]
struct TriggerValues {
    now: String,
    before: Option<String>,
}

impl TriggerValues {
    fn of(
        pointer: &str,
        now: Option<&serde_json::Value>,
        before: Option<&serde_json::Value>,
    ) -> Self {
        let at = |v: &serde_json::Value| {
            v.pointer(pointer)
                .and_then(serde_json::Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        Self {
            now: now.map(at).unwrap_or_default(),
            before: before.map(at),
        }
    }

    /// True when the change holds a value satisfying a trigger on `value` (equal to it,
    /// or with `differs` another one), after or before.
    fn hit(&self, value: &str, differs: bool) -> bool {
        let holds = |v: &str| (v == value) != differs;
        holds(&self.now) || self.before.as_deref().is_some_and(holds)
    }
}

#[derive(Debug)]
struct Subscriber {
    tx: mpsc::Sender<Result<Shared, StoreError>>,
    lagged: Arc<AtomicBool>,
    last_sent: u64,
    /// Events up to this revision are not sent: the watcher asked for what came after it,
    /// and this member may not have applied that far yet when the watch started.
    after: u64,
}

impl Subscriber {
    /// Hands `ev` over; false when the subscriber is gone (closed, or lagging: it is
    /// dropped and its stream reports `Lagged`).
    fn send(&mut self, ev: &Shared) -> bool {
        if ev.revision <= self.after {
            return !self.tx.is_closed();
        }
        match self.tx.try_send(Ok(ev.clone())) {
            Ok(()) => {
                self.last_sent = ev.revision;
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.lagged.store(true, Ordering::SeqCst);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// The subscribers of one prefix and one kind of trigger (a pointer, equal or differing;
/// or none), by the trigger's value ("" without a trigger). An event's key is compared with
/// the prefix, and the trigger's field read, once for all of them; with equality triggers
/// (an agent's `spec.nodeName=NODE`) the event goes straight to the subscribers of the
/// one or two values it holds, so a thousand agents cost a lookup, not a thousand checks.
#[derive(Debug)]
struct Group {
    prefix: String,
    /// The triggers' pointer and `differs` (None: no trigger).
    pointer: Option<(String, bool)>,
    by_value: HashMap<String, Vec<Subscriber>>,
}

impl Group {
    fn subscribers(&self) -> impl Iterator<Item = &Subscriber> {
        self.by_value.values().flatten()
    }

    /// Hands `ev` to the subscribers it concerns; `values` reads the trigger's field once.
    fn publish(&mut self, ev: &Shared, values: impl FnOnce(&str) -> TriggerValues) {
        let Some((pointer, differs)) = &self.pointer else {
            for subs in self.by_value.values_mut() {
                subs.retain_mut(|s| s.send(ev));
            }
            return;
        };
        let v = values(pointer);
        if *differs {
            for (value, subs) in self.by_value.iter_mut() {
                if v.hit(value, true) {
                    subs.retain_mut(|s| s.send(ev));
                }
            }
        } else {
            let mut hit = vec![v.now.as_str()];
            if let Some(b) = v.before.as_deref().filter(|b| *b != v.now) {
                hit.push(b);
            }
            for value in hit {
                if let Some(subs) = self.by_value.get_mut(value) {
                    subs.retain_mut(|s| s.send(ev));
                }
            }
        }
    }

    /// Drops closed subscribers and empty values; false when nothing is left.
    fn prune(&mut self) -> bool {
        self.by_value.retain(|_, subs| {
            subs.retain(|s| !s.tx.is_closed());
            !subs.is_empty()
        });
        !self.by_value.is_empty()
    }
}

/// The history and the subscribers. Guarded by one mutex so that a subscriber's replay and its
/// registration happen atomically with respect to publishing (no lost or duplicated event).
/// The history is bounded both in events and in bytes (whichever is reached first), so a
/// burst of large objects cannot make a member hold gigabytes.
#[derive(Debug)]
pub(crate) struct WatchHub {
    history: VecDeque<Shared>,
    /// Sum of [`SharedEvent::size`] over `history`.
    history_bytes: usize,
    /// Every event with a revision greater than `floor` is in `history`.
    floor: u64,
    cap: usize,
    cap_bytes: usize,
    groups: Vec<Group>,
    /// Subscriptions since the last prune of closed subscribers.
    since_prune: usize,
}

impl WatchHub {
    /// A hub whose history starts complete after revision `floor`, keeping at most `cap`
    /// events and `cap_bytes` bytes of them.
    pub(crate) fn new(cap: usize, cap_bytes: usize, floor: u64) -> Self {
        Self {
            history: VecDeque::new(),
            history_bytes: 0,
            floor,
            cap: cap.max(1),
            cap_bytes,
            groups: Vec::new(),
            since_prune: 0,
        }
    }

    /// Bytes the history holds now (for the metric and tests).
    pub(crate) fn history_bytes(&self) -> usize {
        self.history_bytes
    }

    /// The oldest revision a watcher may resume after.
    #[cfg(test)]
    pub(crate) fn floor(&self) -> u64 {
        self.floor
    }

    /// Watchers whose stream is still open (for the watchers metric).
    pub(crate) fn watchers(&self) -> usize {
        self.groups
            .iter()
            .flat_map(Group::subscribers)
            .filter(|s| !s.tx.is_closed())
            .count()
    }

    /// Records and fans out events (all events of one apply call, in order).
    pub(crate) fn publish(&mut self, events: Vec<SharedEvent>) {
        if events.is_empty() {
            return;
        }
        let events: Vec<Shared> = events.into_iter().map(Arc::new).collect();
        for ev in &events {
            // Parsed at most once per event, and each trigger's field read once per event,
            // for the groups with a trigger.
            let mut parsed: Option<(Option<serde_json::Value>, Option<serde_json::Value>)> = None;
            for g in &mut self.groups {
                if !ev.key.starts_with(&g.prefix) {
                    continue;
                }
                g.publish(ev, |pointer| {
                    let parsed = parsed.get_or_insert_with(|| {
                        let parse = |b: &[u8]| serde_json::from_slice(b).ok();
                        (parse(&ev.object), ev.prev_object.as_deref().and_then(parse))
                    });
                    TriggerValues::of(pointer, parsed.0.as_ref(), parsed.1.as_ref())
                });
            }
        }
        self.history_bytes += events.iter().map(|e| e.size()).sum::<usize>();
        self.history.extend(events);
        while self.history.len() > self.cap || self.history_bytes > self.cap_bytes {
            let Some(old) = self.history.pop_front() else {
                break;
            };
            self.history_bytes -= old.size();
            self.floor = old.revision;
            // Events of one batch share a revision: drop the whole revision.
            while self
                .history
                .front()
                .is_some_and(|e| e.revision <= self.floor)
            {
                if let Some(e) = self.history.pop_front() {
                    self.history_bytes -= e.size();
                }
            }
        }
    }

    /// Forgets the history (the state was replaced by a snapshot at `floor`); every current
    /// watcher receives `TooOld` and is closed.
    pub(crate) fn reset(&mut self, floor: u64) {
        self.history.clear();
        self.history_bytes = 0;
        self.floor = floor;
        for s in self
            .groups
            .drain(..)
            .flat_map(|g| g.by_value.into_values().flatten())
        {
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
    #[cfg(test)]
    pub(crate) fn subscribe(
        &mut self,
        prefix: &str,
        after: Option<u64>,
        current: u64,
    ) -> Result<WatchStream, StoreError> {
        self.subscribe_where(prefix, None, after, current)
    }

    /// [`WatchHub::subscribe`] with a [`Trigger`]. The replay of the history after `after`
    /// is not narrowed by it (a watcher's own filter drops what does not concern it).
    pub(crate) fn subscribe_where(
        &mut self,
        prefix: &str,
        trigger: Option<Trigger>,
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
        let pointer = trigger.as_ref().map(|t| (t.pointer.clone(), t.differs));
        let value = trigger.map(|t| t.value).unwrap_or_default();
        let sub = Subscriber {
            tx,
            lagged: lagged.clone(),
            last_sent,
            after: after.unwrap_or(0),
        };
        match self
            .groups
            .iter_mut()
            .find(|g| g.prefix == prefix && g.pointer == pointer)
        {
            Some(g) => g.by_value.entry(value).or_default().push(sub),
            None => self.groups.push(Group {
                prefix: prefix.to_owned(),
                pointer,
                by_value: HashMap::from([(value, vec![sub])]),
            }),
        }
        // Closed subscribers are dropped when an event reaches them; those of values no
        // event reaches any more (a node gone) every 64 subscriptions.
        self.since_prune += 1;
        if self.since_prune >= 64 {
            self.since_prune = 0;
            self.groups.retain_mut(Group::prune);
        }
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
    rx: mpsc::Receiver<Result<Shared, StoreError>>,
    lagged: Arc<AtomicBool>,
    prefix: String,
    done: bool,
    /// Opens sealed objects (set by [`crate::Store::watch`]).
    pub(crate) codec: Option<Arc<dyn crate::ValueCodec>>,
}

impl WatchStream {
    /// The same stream, its events not decoded: each [`PendingEvent`] shares the bytes the
    /// history holds, so a consumer that queues events while it is busy (the reconcilers)
    /// holds a pointer per event, not a parsed tree.
    pub fn pending(self) -> PendingStream {
        PendingStream(self)
    }

    /// The next shared event; ends the stream after an error, and reports a drop for
    /// lagging as `Lagged`.
    fn poll_shared(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Shared, StoreError>>> {
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
            Poll::Ready(Some(Ok(ev))) => Poll::Ready(Some(Ok(ev))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Stream for WatchStream {
    type Item = Result<WatchEvent, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.poll_shared(cx) {
            Poll::Ready(Some(Ok(ev))) => {
                let r = open(&ev, self.codec.as_ref());
                if r.is_err() {
                    self.done = true;
                }
                Poll::Ready(Some(r))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// One change of a [`PendingStream`], decoded only by [`PendingEvent::open`].
#[derive(Debug, Clone)]
pub struct PendingEvent {
    ev: Shared,
    codec: Option<Arc<dyn crate::ValueCodec>>,
}

impl PendingEvent {
    /// The revision of the change.
    pub fn revision(&self) -> u64 {
        self.ev.revision
    }

    /// The object's key.
    pub fn key(&self) -> &str {
        &self.ev.key
    }

    /// Added, Modified or Deleted.
    pub fn event_type(&self) -> EventType {
        self.ev.event_type
    }

    /// The decoded change (sealed objects opened), as [`WatchStream`] yields it.
    pub fn open(&self) -> Result<WatchEvent, StoreError> {
        open(&self.ev, self.codec.as_ref())
    }

    /// The stored JSON of the object after the change and of the one before it (Modified
    /// only), when this member's codec stores objects at this key as they are; `None` when
    /// they are sealed (then [`PendingEvent::open`]). Lets a watch serve and filter an event
    /// without building its trees.
    pub fn raw(&self) -> Option<(&[u8], Option<&[u8]>)> {
        if self.codec.as_ref().is_some_and(|c| c.seals(&self.ev.key)) {
            return None;
        }
        Some((&self.ev.object, self.ev.prev_object.as_deref()))
    }

    /// Only the object after the change (for Deleted: the last state), decoded and opened.
    pub fn object(&self) -> Result<serde_json::Value, StoreError> {
        let v = self.ev.parse(&self.ev.object)?;
        match &self.codec {
            Some(c) => c.open(&self.ev.key, v),
            None => Ok(v),
        }
    }
}

/// A [`WatchStream`] whose events are decoded by the consumer, when it applies them.
#[derive(Debug)]
pub struct PendingStream(WatchStream);

impl Stream for PendingStream {
    type Item = Result<PendingEvent, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let codec = self.0.codec.clone();
        self.0
            .poll_shared(cx)
            .map(|o| o.map(|r| r.map(|ev| PendingEvent { ev, codec })))
    }
}

fn open(
    ev: &SharedEvent,
    codec: Option<&Arc<dyn crate::ValueCodec>>,
) -> Result<WatchEvent, StoreError> {
    let mut ev = ev.decode()?;
    if let Some(c) = codec {
        ev.object = c.open(&ev.key, std::mem::take(&mut ev.object))?;
        if let Some(p) = ev.prev_object.take() {
            ev.prev_object = Some(c.open(&ev.key, p)?);
        }
    }
    Ok(ev)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn ev(rev: u64, key: &str) -> SharedEvent {
        SharedEvent::new(rev, EventType::Added, key.into(), b"{}".to_vec(), None)
    }

    #[tokio::test]
    async fn a_trigger_hands_a_watcher_only_the_changes_of_its_value() {
        let mut hub = WatchHub::new(10, usize::MAX, 0);
        let on = |node: &str| format!(r#"{{"spec":{{"nodeName":"{node}"}}}}"#).into_bytes();
        let trigger = |node: &str| Trigger {
            pointer: "/spec/nodeName".into(),
            value: node.into(),
            differs: false,
        };
        let mut n1 = hub
            .subscribe_where("Pod/", Some(trigger("n1")), None, 0)
            .expect("subscribe");
        let mut all = hub.subscribe("Pod/", None, 0).expect("subscribe").pending();
        let ev = |rev, t, key: &str, now: Vec<u8>, before: Option<Vec<u8>>| {
            SharedEvent::new(rev, t, key.into(), now, before)
        };
        hub.publish(vec![
            ev(1, EventType::Added, "Pod/a/unbound", b"{}".to_vec(), None),
            ev(
                2,
                EventType::Modified,
                "Pod/a/x",
                on("n1"),
                Some(b"{}".to_vec()),
            ),
            ev(
                3,
                EventType::Modified,
                "Pod/a/y",
                on("n2"),
                Some(b"{}".to_vec()),
            ),
            // Moved off n1: n1's watcher must see it (to drop the pod).
            ev(4, EventType::Modified, "Pod/a/x", on("n2"), Some(on("n1"))),
            ev(5, EventType::Deleted, "Pod/a/z", on("n1"), None),
            ev(6, EventType::Added, "Pod/a/bad", b"not json".to_vec(), None),
        ]);
        drop(hub);
        let mut got = Vec::new();
        while let Some(e) = n1.next().await {
            got.push(e.expect("ok").revision);
        }
        assert_eq!(got, vec![2, 4, 5]);
        let mut every = 0;
        while let Some(e) = all.next().await {
            e.expect("ok");
            every += 1;
        }
        assert_eq!(every, 6);
    }

    #[tokio::test]
    async fn a_differs_trigger_hands_the_changes_that_hold_another_value_before_or_after() {
        let mut hub = WatchHub::new(10, usize::MAX, 0);
        let ip = |ip: &str| format!(r#"{{"status":{{"podIP":"{ip}"}}}}"#).into_bytes();
        let with_ip = Trigger {
            pointer: "/status/podIP".into(),
            value: String::new(),
            differs: true,
        };
        let mut w = hub
            .subscribe_where("Pod/", Some(with_ip), None, 0)
            .expect("subscribe");
        let ev = |rev, t, now: Vec<u8>, before: Option<Vec<u8>>| {
            SharedEvent::new(rev, t, "Pod/a/x".into(), now, before)
        };
        hub.publish(vec![
            // Created and bound without an address: not handed.
            ev(1, EventType::Added, b"{}".to_vec(), None),
            ev(2, EventType::Modified, b"{}".to_vec(), Some(b"{}".to_vec())),
            // Gets one, changes with it, loses it, is deleted without it.
            ev(3, EventType::Modified, ip("10.0.0.1"), Some(b"{}".to_vec())),
            ev(4, EventType::Modified, ip("10.0.0.1"), Some(ip("10.0.0.1"))),
            ev(5, EventType::Modified, ip(""), Some(ip("10.0.0.1"))),
            ev(6, EventType::Deleted, ip(""), None),
            ev(7, EventType::Deleted, ip("10.0.0.2"), None),
        ]);
        drop(hub);
        let mut got = Vec::new();
        while let Some(e) = w.next().await {
            got.push(e.expect("ok").revision);
        }
        assert_eq!(got, vec![3, 4, 5, 7]);
    }

    #[tokio::test]
    async fn watchers_share_groups_and_closed_ones_are_pruned() {
        let mut hub = WatchHub::new(10, usize::MAX, 0);
        let node = |n: usize| Trigger {
            pointer: "/spec/nodeName".into(),
            value: format!("n{n}"),
            differs: false,
        };
        let streams: Vec<WatchStream> = (0..63)
            .map(|n| hub.subscribe_where("Pod/", Some(node(n)), None, 0).unwrap())
            .collect();
        let plain = hub.subscribe("Pod/", None, 0).unwrap();
        // One group for the 63 node triggers, one for the plain watcher.
        assert_eq!(hub.groups.len(), 2);
        assert_eq!(hub.watchers(), 64);
        drop(streams);
        assert_eq!(hub.watchers(), 1);
        // The 64th subscription since the last prune drops the closed ones.
        let _more: Vec<WatchStream> = (0..64)
            .map(|_| hub.subscribe("Node/", None, 0).unwrap())
            .collect();
        let slots: usize = hub.groups.iter().map(|g| g.subscribers().count()).sum();
        assert_eq!(slots, 65);
        assert_eq!(hub.groups.len(), 2, "the empty trigger group is gone");
        drop(plain);
    }

    #[tokio::test]
    async fn pending_events_decode_like_the_stream_and_share_the_history() {
        let mut hub = WatchHub::new(10, usize::MAX, 0);
        let mut plain = hub.subscribe("Pod/", None, 0).expect("subscribe");
        let mut pending = hub.subscribe("Pod/", None, 0).expect("subscribe").pending();
        hub.publish(vec![
            SharedEvent::new(
                4,
                EventType::Modified,
                "Pod/a/x".into(),
                br#"{"v":2}"#.to_vec(),
                Some(br#"{"v":1}"#.to_vec()),
            ),
            SharedEvent::new(
                4,
                EventType::Deleted,
                "Pod/a/y".into(),
                b"{}".to_vec(),
                None,
            ),
        ]);
        for _ in 0..2 {
            let want = plain.next().await.expect("ev").expect("ok");
            let got = pending.next().await.expect("ev").expect("ok");
            assert_eq!(
                (got.revision(), got.key()),
                (want.revision, want.key.as_str())
            );
            assert_eq!(got.event_type(), want.event_type);
            assert_eq!(got.object().expect("object"), want.object);
            assert_eq!(got.open().expect("open"), want);
            // The queued event is the history's own copy, not a new one.
            assert!(hub.history.iter().any(|h| Arc::ptr_eq(h, &got.ev)));
        }
        // When the hub goes, the stream ends.
        drop(hub);
        assert!(pending.next().await.is_none());
    }

    #[tokio::test]
    async fn resume_replays_only_newer_matching_events() {
        let mut hub = WatchHub::new(10, usize::MAX, 0);
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
        let mut hub = WatchHub::new(10, usize::MAX, 0);
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
        let mut hub = WatchHub::new(2, usize::MAX, 0);
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
        let mut hub = WatchHub::new(10, usize::MAX, 0);
        let mut s = hub.subscribe("", None, 0).expect("subscribe");
        hub.reset(50);
        assert!(matches!(
            s.next().await,
            Some(Err(StoreError::TooOld { oldest: 50, .. }))
        ));
        assert!(s.next().await.is_none());
    }

    #[tokio::test]
    async fn the_byte_cap_trims_whole_revisions_too() {
        let big = |rev: u64, key: &str| {
            let obj =
                serde_json::to_vec(&serde_json::json!({"data": "x".repeat(1000)})).expect("encode");
            SharedEvent::new(rev, EventType::Modified, key.into(), obj.clone(), Some(obj))
        };
        let one = big(1, "a").size();
        // Room for three events by bytes, a hundred by count.
        let mut hub = WatchHub::new(100, 3 * one + one / 2, 0);
        hub.publish(vec![big(1, "a"), big(1, "b")]);
        hub.publish(vec![big(2, "c")]);
        assert_eq!(hub.floor(), 0);
        hub.publish(vec![big(3, "d")]);
        // Four events exceed the cap: the whole of revision 1 goes.
        assert_eq!(hub.floor(), 1);
        assert_eq!(hub.history_bytes(), 2 * one);
        let mut s = hub.subscribe("", Some(1), 3).expect("subscribe");
        let e = s.next().await.expect("ev").expect("ok");
        assert_eq!((e.revision, e.key.as_str()), (2, "c"));
        assert_eq!(
            e.prev_object,
            Some(serde_json::json!({"data": "x".repeat(1000)}))
        );
        assert!(matches!(
            hub.subscribe("", Some(0), 3),
            Err(StoreError::TooOld { oldest: 1, .. })
        ));
    }

    #[tokio::test]
    async fn slow_watcher_is_dropped_as_lagged() {
        let mut hub = WatchHub::new(1, usize::MAX, 0);
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
