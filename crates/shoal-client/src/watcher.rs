//! The one list+watch loop: a pure state machine ([`Machine`]: the phase, the revision
//! and the failure count in; the next [`Action`] and the output out) and a thin async
//! driver ([`Watcher`]) that performs the actions on a [`Client`].
//!
//! Rules (the same for `shoalctl get -w`, the agent's mirrors and every other watcher):
//! - start with a list (or from a revision the caller already listed at), then open a
//!   watch after that revision;
//! - OUT_OF_RANGE (too old, or the watcher fell behind and the member dropped it) means
//!   list again: the consumer gets the whole state ([`WatchOutput::Listed`]);
//! - a failed list, a failed open and a break of an open stream are all *failures* that
//!   count toward one limit; each moves to the next member and pauses
//!   ([`crate::retry::backoff`]); a delivered change resets the count;
//! - after a break the watch resumes where it stopped, on the next member, with no
//!   change lost or repeated: the resume point is the last revision seen, and because
//!   the writes of one batch share a revision, it re-opens just before that revision
//!   and skips the objects of it already delivered.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use shoal_api::Resource;
use shoal_proto::{ListRequest, WatchRequest};
use tonic::Streaming;

use crate::retry::{Failure, backoff, classify};
use crate::{Client, ClientError};

/// What to list and watch, besides the kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListParams {
    /// Namespace; empty means every namespace (and cluster-scoped kinds).
    pub namespace: String,
    /// Label selector (`app=web,tier!=db`).
    pub label_selector: String,
    /// Field selector (`spec.nodeName=n1`).
    pub field_selector: String,
}

impl ListParams {
    /// The List request of `kind`.
    pub fn list_request(&self, kind: &str) -> ListRequest {
        ListRequest {
            kind: kind.to_string(),
            namespace: self.namespace.clone(),
            label_selector: self.label_selector.clone(),
            field_selector: self.field_selector.clone(),
            stale: false,
        }
    }

    /// The Watch request of `kind` after revision `after`.
    pub fn watch_request(&self, kind: &str, after: u64) -> WatchRequest {
        WatchRequest {
            kind: kind.to_string(),
            namespace: self.namespace.clone(),
            label_selector: self.label_selector.clone(),
            field_selector: self.field_selector.clone(),
            resource_version: after,
        }
    }
}

/// The type of one change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The object appeared (was created, or started matching the selector).
    Added,
    /// The object changed and still matches.
    Modified,
    /// The object went away (was deleted, or stopped matching the selector).
    Deleted,
}

impl EventKind {
    /// Parses the wire form (`ADDED`, `MODIFIED`, `DELETED`).
    pub fn parse(s: &str) -> Option<EventKind> {
        match s {
            "ADDED" => Some(EventKind::Added),
            "MODIFIED" => Some(EventKind::Modified),
            "DELETED" => Some(EventKind::Deleted),
            _ => None,
        }
    }

    /// The wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Added => "ADDED",
            EventKind::Modified => "MODIFIED",
            EventKind::Deleted => "DELETED",
        }
    }
}

/// What a watcher delivers.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchOutput<T> {
    /// The whole current state (first list, and every re-list): replaces what the
    /// consumer holds; objects it holds that are missing here are gone.
    Listed {
        /// Every matching object.
        items: Vec<T>,
        /// The revision they were read at.
        revision: u64,
    },
    /// One change.
    Event {
        /// Added, modified or deleted.
        kind: EventKind,
        /// The object after the change (for deleted: its last state).
        object: T,
        /// The revision of the change.
        revision: u64,
    },
}

/// What the driver must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// List, then feed [`Input::Listed`] (or [`Input::Failed`]).
    List,
    /// Open a watch after revision `after`, then feed [`Input::Opened`] (or a failure).
    Open {
        /// Stream changes after this revision.
        after: u64,
    },
    /// Read the next message of the open stream, then feed [`Input::Event`],
    /// [`Input::Ended`] or a failure.
    Read,
    /// Move to the next member, wait `delay`, then feed [`Input::Retried`].
    Retry {
        /// The pause.
        delay: Duration,
    },
    /// Stop: too many failures in a row.
    GiveUp {
        /// Consecutive failures.
        failures: usize,
    },
    /// Stop: a failure no member can cure (the driver returns it).
    Fatal,
}

/// What happened when the driver performed an action.
#[derive(Debug, Clone, PartialEq)]
pub enum Input<T> {
    /// The list succeeded.
    Listed {
        /// The objects.
        items: Vec<T>,
        /// The revision they were read at.
        revision: u64,
    },
    /// The watch stream is open.
    Opened,
    /// The stream delivered a change to the object with key `key` (`namespace/name`).
    Event {
        /// The change.
        kind: EventKind,
        /// The object's key.
        key: String,
        /// The object.
        object: T,
        /// The change's revision.
        revision: u64,
    },
    /// The stream ended without an error (the member is shutting down).
    Ended,
    /// The action failed in this way.
    Failed(Failure),
    /// The retry pause is over.
    Retried,
}

/// The phase of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    List,
    Open,
    Read,
    Stopped,
}

/// The pure list+watch state machine.
#[derive(Debug, Clone)]
pub struct Machine {
    phase: Phase,
    /// What to do after a retry pause (List or Open); `Some` while pausing.
    after_retry: Option<Phase>,
    /// The last revision known complete up to (list) or seen (events).
    revision: u64,
    /// Keys delivered at `revision` by events (a batch may still be incomplete).
    partial: BTreeSet<String>,
    /// Failures since the last delivered change.
    failures: usize,
    /// Give up after this many failures in a row (`None`: never).
    max_failures: Option<usize>,
    fatal: bool,
}

impl Machine {
    /// A machine that starts with a list.
    pub fn new(max_failures: Option<usize>) -> Machine {
        Machine {
            phase: Phase::List,
            after_retry: None,
            revision: 0,
            partial: BTreeSet::new(),
            failures: 0,
            max_failures,
            fatal: false,
        }
    }

    /// A machine that starts watching after `revision` (the caller listed already).
    pub fn from_revision(revision: u64, max_failures: Option<usize>) -> Machine {
        Machine {
            phase: Phase::Open,
            revision,
            ..Machine::new(max_failures)
        }
    }

    /// The last revision seen.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Failures since the last delivered change.
    pub fn failures(&self) -> usize {
        self.failures
    }

    /// What to do now.
    pub fn action(&self) -> Action {
        if self.after_retry.is_some() {
            return Action::Retry {
                delay: backoff(self.failures),
            };
        }
        match self.phase {
            Phase::List => Action::List,
            Phase::Open => Action::Open {
                // With part of a batch delivered, re-open before it and skip those keys.
                after: if self.partial.is_empty() {
                    self.revision
                } else {
                    self.revision.saturating_sub(1)
                },
            },
            Phase::Read => Action::Read,
            Phase::Stopped if self.fatal => Action::Fatal,
            Phase::Stopped => Action::GiveUp {
                failures: self.failures,
            },
        }
    }

    /// Feeds what happened; returns what to hand to the consumer, if anything.
    pub fn step<T>(&mut self, input: Input<T>) -> Option<WatchOutput<T>> {
        match input {
            Input::Listed { items, revision } => {
                self.revision = revision;
                self.partial.clear();
                self.phase = Phase::Open;
                Some(WatchOutput::Listed { items, revision })
            }
            Input::Opened => {
                self.phase = Phase::Read;
                None
            }
            Input::Event {
                kind,
                key,
                object,
                revision,
            } => {
                if revision < self.revision
                    || (revision == self.revision && self.partial.contains(&key))
                {
                    // Already delivered before a resume.
                    return None;
                }
                if revision > self.revision {
                    self.revision = revision;
                    self.partial.clear();
                }
                self.partial.insert(key);
                self.failures = 0;
                Some(WatchOutput::Event {
                    kind,
                    object,
                    revision,
                })
            }
            Input::Ended => {
                self.failed(Phase::Open);
                None
            }
            Input::Failed(f) => {
                match f {
                    Failure::Relist => {
                        self.failures += 1;
                        if self.over_limit() {
                            self.phase = Phase::Stopped;
                        } else {
                            self.phase = Phase::List;
                        }
                    }
                    Failure::Transport | Failure::Unavailable => {
                        // A failed list is listed again; a failed open or broken stream
                        // is opened again from the last revision.
                        let again = if self.phase == Phase::List {
                            Phase::List
                        } else {
                            Phase::Open
                        };
                        self.failed(again);
                    }
                    Failure::Deadline | Failure::Fatal => {
                        self.phase = Phase::Stopped;
                        self.fatal = true;
                    }
                }
                None
            }
            Input::Retried => {
                if let Some(p) = self.after_retry.take() {
                    self.phase = p;
                }
                None
            }
        }
    }

    fn over_limit(&self) -> bool {
        self.max_failures.is_some_and(|m| self.failures > m)
    }

    /// Counts a failure; retries `again` after a pause on the next member, or stops.
    fn failed(&mut self, again: Phase) {
        self.failures += 1;
        if self.over_limit() {
            self.phase = Phase::Stopped;
        } else {
            self.phase = again;
            self.after_retry = Some(again);
        }
    }
}

/// The async driver: performs the [`Machine`]'s actions on a [`Client`] and yields the
/// outputs one at a time ([`Watcher::next`]).
#[derive(Debug)]
pub struct Watcher<T> {
    client: Client,
    kind: String,
    params: ListParams,
    machine: Machine,
    stream: Option<Streaming<shoal_proto::WatchEvent>>,
    decode: fn(&str) -> Result<T, ClientError>,
    /// The last failure (returned when the machine stops).
    last: Option<ClientError>,
    /// The member the last failure came from (to move past it).
    failed_at: Option<String>,
    total_failures: usize,
}

/// How many failures in a row `shoalctl`'s watches accept before giving up.
pub const DEFAULT_MAX_FAILURES: usize = 10;

impl Watcher<Value> {
    /// Watches objects of `kind` as JSON values.
    pub fn json(client: Client, kind: &str, params: ListParams, machine: Machine) -> Self {
        Watcher::with_decoder(client, kind, params, machine, decode_value)
    }
}

impl<T: Resource> Watcher<T> {
    /// Watches objects of kind `T`.
    pub fn typed(client: Client, params: ListParams, machine: Machine) -> Self {
        Watcher::with_decoder(
            client,
            &T::KIND.to_string(),
            params,
            machine,
            crate::decode::<T>,
        )
    }
}

fn decode_value(json: &str) -> Result<Value, ClientError> {
    serde_json::from_str(json).map_err(|e| ClientError::Decode {
        what: "watched object".into(),
        message: e.to_string(),
    })
}

/// `namespace/name` of a JSON object.
fn key_of_json(json: &Value) -> String {
    let m = json.get("metadata");
    let f = |k: &str| {
        m.and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    format!("{}/{}", f("namespace"), f("name"))
}

impl<T> Watcher<T> {
    fn with_decoder(
        client: Client,
        kind: &str,
        params: ListParams,
        machine: Machine,
        decode: fn(&str) -> Result<T, ClientError>,
    ) -> Self {
        Watcher {
            client,
            kind: kind.to_string(),
            params,
            machine,
            stream: None,
            decode,
            last: None,
            failed_at: None,
            total_failures: 0,
        }
    }

    /// The state machine (revision, failures).
    pub fn machine(&self) -> &Machine {
        &self.machine
    }

    /// Failures seen so far (lists, opens and breaks), for tests and logs.
    pub fn total_failures(&self) -> usize {
        self.total_failures
    }

    /// The member in use.
    pub fn address(&self) -> String {
        self.client.address()
    }

    fn fail(&mut self, e: ClientError) {
        let f = match &e {
            ClientError::Status { status, .. } => classify(status),
            // No member accepted a connection: try again after a pause.
            ClientError::Unreachable { .. } => Failure::Transport,
            _ => Failure::Fatal,
        };
        if let ClientError::Status { addr, .. } = &e {
            self.failed_at = Some(addr.clone());
        }
        if f != Failure::Relist {
            tracing::debug!(kind = %self.kind, error = %e, "watch failed");
        }
        self.total_failures += 1;
        self.stream = None;
        self.last = Some(e);
        self.machine.step::<T>(Input::Failed(f));
    }

    /// The next output; an error when the watch stopped (too many failures in a row, or
    /// a failure no member can cure) or when one event did not decode (the watch goes on
    /// with the next call).
    pub async fn next(&mut self) -> Result<WatchOutput<T>, ClientError> {
        loop {
            match self.machine.action() {
                Action::List => {
                    let req = self.params.list_request(&self.kind);
                    let r = self
                        .client
                        .attempt(|ch| async move { Client::cluster(ch).list(req).await })
                        .await;
                    match r {
                        Ok(resp) => {
                            let items = resp
                                .items_json
                                .iter()
                                .map(|j| (self.decode)(j))
                                .collect::<Result<Vec<_>, _>>()?;
                            let out = self.machine.step(Input::Listed {
                                items,
                                revision: resp.resource_version,
                            });
                            if let Some(o) = out {
                                return Ok(o);
                            }
                        }
                        Err(e) => self.fail(e),
                    }
                }
                Action::Open { after } => {
                    let req = self.params.watch_request(&self.kind, after);
                    let r = self
                        .client
                        .attempt(|ch| async move { Client::cluster(ch).watch(req).await })
                        .await;
                    match r {
                        Ok(s) => {
                            self.stream = Some(s);
                            self.machine.step::<T>(Input::Opened);
                        }
                        Err(e) => self.fail(e),
                    }
                }
                Action::Read => {
                    let Some(stream) = self.stream.as_mut() else {
                        // Cannot happen (Read follows Opened); re-open to be safe.
                        self.machine.step::<T>(Input::Ended);
                        continue;
                    };
                    match stream.message().await {
                        Ok(Some(ev)) => {
                            let json = decode_value(&ev.object_json)?;
                            let key = key_of_json(&json);
                            let object = (self.decode)(&ev.object_json)?;
                            let kind = EventKind::parse(&ev.r#type).ok_or_else(|| {
                                ClientError::Decode {
                                    what: format!("watch event of {key}"),
                                    message: format!("unknown event type {:?}", ev.r#type),
                                }
                            })?;
                            if let Some(o) = self.machine.step(Input::Event {
                                kind,
                                key,
                                object,
                                revision: ev.resource_version,
                            }) {
                                return Ok(o);
                            }
                        }
                        Ok(None) => {
                            self.stream = None;
                            self.total_failures += 1;
                            self.failed_at = Some(self.client.address());
                            self.machine.step::<T>(Input::Ended);
                        }
                        Err(status) => {
                            let addr = self.client.address();
                            self.fail(ClientError::Status { addr, status });
                        }
                    }
                }
                Action::Retry { delay } => {
                    match self.failed_at.take() {
                        Some(a) => self.client.fail_over_from(&a),
                        None => self.client.fail_over(),
                    }
                    tokio::time::sleep(delay).await;
                    self.machine.step::<T>(Input::Retried);
                }
                Action::GiveUp { failures } => {
                    return Err(ClientError::WatchGaveUp {
                        addr: self.client.address(),
                        breaks: failures,
                        last: self
                            .last
                            .as_ref()
                            .map(|e| e.to_string())
                            .unwrap_or_else(|| "the stream ended".into()),
                    });
                }
                Action::Fatal => {
                    return Err(self.last.take().unwrap_or(ClientError::WatchGaveUp {
                        addr: self.client.address(),
                        breaks: self.machine.failures(),
                        last: "stopped".into(),
                    }));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(key: &str, rev: u64) -> Input<String> {
        Input::Event {
            kind: EventKind::Added,
            key: key.into(),
            object: key.into(),
            revision: rev,
        }
    }

    fn delivered(o: Option<WatchOutput<String>>) -> Option<(String, u64)> {
        match o {
            Some(WatchOutput::Event {
                object, revision, ..
            }) => Some((object, revision)),
            _ => None,
        }
    }

    #[test]
    fn list_then_open_after_the_list_revision_then_read() {
        let mut m = Machine::new(Some(3));
        assert_eq!(m.action(), Action::List);
        let out = m.step(Input::Listed {
            items: vec!["a".to_string()],
            revision: 7,
        });
        assert_eq!(
            out,
            Some(WatchOutput::Listed {
                items: vec!["a".to_string()],
                revision: 7
            })
        );
        assert_eq!(m.action(), Action::Open { after: 7 });
        assert_eq!(m.step::<String>(Input::Opened), None);
        assert_eq!(m.action(), Action::Read);
        assert_eq!(delivered(m.step(ev("b", 8))), Some(("b".into(), 8)));
    }

    #[test]
    fn failed_open_retries_on_the_next_member_and_counts_like_a_break() {
        // The flake: the member died between the list and the open; the open failed with
        // a transport error whose code was UNKNOWN or CANCELLED.
        let mut m = Machine::from_revision(7, Some(2));
        assert_eq!(m.action(), Action::Open { after: 7 });
        m.step::<String>(Input::Failed(Failure::Transport));
        assert_eq!(m.action(), Action::Retry { delay: backoff(1) });
        m.step::<String>(Input::Retried);
        assert_eq!(m.action(), Action::Open { after: 7 });
        m.step::<String>(Input::Opened);
        // A break of the open stream counts toward the same limit.
        m.step::<String>(Input::Failed(Failure::Transport));
        assert_eq!(m.failures(), 2);
        m.step::<String>(Input::Retried);
        m.step::<String>(Input::Failed(Failure::Unavailable));
        assert_eq!(m.action(), Action::GiveUp { failures: 3 });
    }

    #[test]
    fn a_delivered_change_resets_the_count() {
        let mut m = Machine::from_revision(1, Some(2));
        m.step::<String>(Input::Failed(Failure::Transport));
        m.step::<String>(Input::Retried);
        m.step::<String>(Input::Opened);
        m.step::<String>(Input::Ended);
        assert_eq!(m.failures(), 2);
        m.step::<String>(Input::Retried);
        m.step::<String>(Input::Opened);
        assert!(delivered(m.step(ev("x", 2))).is_some());
        assert_eq!(m.failures(), 0);
    }

    #[test]
    fn without_a_limit_it_never_gives_up() {
        let mut m = Machine::new(None);
        for _ in 0..1000 {
            m.step::<String>(Input::Failed(Failure::Transport));
            assert!(matches!(m.action(), Action::Retry { .. }));
            m.step::<String>(Input::Retried);
            assert_eq!(m.action(), Action::List);
        }
    }

    #[test]
    fn too_old_or_lagging_lists_again_without_pausing() {
        let mut m = Machine::from_revision(3, Some(5));
        m.step::<String>(Input::Opened);
        m.step::<String>(Input::Failed(Failure::Relist));
        assert_eq!(m.action(), Action::List);
        m.step(Input::Listed {
            items: Vec::<String>::new(),
            revision: 40,
        });
        assert_eq!(m.action(), Action::Open { after: 40 });
    }

    #[test]
    fn resume_in_the_middle_of_a_batch_skips_what_was_delivered() {
        let mut m = Machine::from_revision(5, None);
        m.step::<String>(Input::Opened);
        assert!(delivered(m.step(ev("a", 6))).is_some());
        // Batch 7 has a and b; only a arrived before the break.
        assert!(delivered(m.step(ev("a", 7))).is_some());
        m.step::<String>(Input::Failed(Failure::Transport));
        m.step::<String>(Input::Retried);
        assert_eq!(m.action(), Action::Open { after: 6 });
        m.step::<String>(Input::Opened);
        // The next member replays all of revision 7.
        assert_eq!(delivered(m.step(ev("a", 7))), None);
        assert_eq!(delivered(m.step(ev("b", 7))), Some(("b".into(), 7)));
        assert_eq!(delivered(m.step(ev("c", 8))), Some(("c".into(), 8)));
        // Anything older than what was seen is never repeated.
        assert_eq!(delivered(m.step(ev("z", 6))), None);
        assert_eq!(m.revision(), 8);
    }

    #[test]
    fn failed_list_is_listed_again() {
        let mut m = Machine::new(Some(3));
        m.step::<String>(Input::Failed(Failure::Unavailable));
        m.step::<String>(Input::Retried);
        assert_eq!(m.action(), Action::List);
    }

    #[test]
    fn fatal_answers_and_deadlines_stop_at_once() {
        for f in [Failure::Fatal, Failure::Deadline] {
            let mut m = Machine::from_revision(1, None);
            m.step::<String>(Input::Failed(f));
            assert_eq!(m.action(), Action::Fatal);
        }
    }

    #[test]
    fn event_kinds_round_trip() {
        for k in [EventKind::Added, EventKind::Modified, EventKind::Deleted] {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(EventKind::parse("BOOKMARK"), None);
    }
}
