//! Group commit: write requests that arrive while earlier ones are being committed share one
//! Raft entry, so the leader flushes and replicates once for many requests.
//!
//! Every request keeps its own all-or-nothing result and its own request id (exactly-once
//! across resends, see [`crate::DEDUP_WINDOW`]): the entry carries the requests side by side
//! ([`Command::grouped`]) and the state machine applies them one after the other, each on its
//! own. There is no timer: a request that finds a free slot is proposed at once (one client
//! waits for nothing extra); only while [`IN_FLIGHT`] entries are being committed do new
//! requests queue, and the next entry takes all of them. Requests proposed on the leader and
//! requests forwarded to it by followers go through the same queue.
//!
//! Two requests that write the same key never share an entry: the writes of one entry share
//! its log index as their revision, and two versions of one object must not carry the same
//! `resourceVersion` (a client holding the first could compare-and-swap against the second).
//! A [`Write::Check`](crate::Write::Check) writes nothing, so checks of one key (the namespace
//! precondition of many creates in it) share an entry; a check applied after a write of its
//! key in the same entry sees that write, as it would in a later entry.

use std::collections::BTreeSet;
use std::sync::Arc;

use openraft::BasicNode;
use openraft::error::{ClientWriteError, Fatal, ForwardToLeader, RaftError};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::StoreError;
use crate::network::MAX_COMMAND_BYTES;
use crate::types::{ApplyResult, Command, StoreRaft, Write};

/// Entries being committed at once; requests arriving meanwhile queue for the next one.
pub const IN_FLIGHT: usize = 2;

/// Most requests in one entry.
pub const MAX_GROUP: usize = 1024;

/// Requests per Raft entry proposed by this member's leader (1 … 1024): the controller serves
/// it as `shoal_raft_entry_requests`. One per process.
pub fn entry_requests_histogram() -> &'static prometheus_client::metrics::histogram::Histogram {
    static H: std::sync::OnceLock<prometheus_client::metrics::histogram::Histogram> =
        std::sync::OnceLock::new();
    H.get_or_init(|| {
        prometheus_client::metrics::histogram::Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(1.0, 2.0, 11),
        )
    })
}

/// The outcome of one proposed request, as the leader reports it (also to a follower that
/// forwarded the request). `ForwardToLeader { leader_id: None }` means surely not proposed;
/// `Fatal` means proposed and then lost (unknown outcome).
pub(crate) type Proposal = Result<ApplyResult, RaftError<u64, ClientWriteError<u64, BasicNode>>>;

/// One queued request.
struct Pending {
    cmd: Command,
    bytes: usize,
    reply: oneshot::Sender<Proposal>,
}

/// The handle to this member's group-commit queue. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Grouper {
    tx: mpsc::UnboundedSender<Pending>,
}

impl std::fmt::Debug for Grouper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grouper").finish_non_exhaustive()
    }
}

impl Grouper {
    /// Starts the queue's task on the current runtime; it ends when every handle is gone.
    pub(crate) fn start(raft: StoreRaft) -> Grouper {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, rx));
        Grouper { tx }
    }

    /// Proposes one request (`bytes`: its encoded size) and waits for its own result.
    pub(crate) async fn propose(&self, cmd: Command, bytes: usize) -> Proposal {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Pending { cmd, bytes, reply }).is_err() {
            return Err(not_proposed());
        }
        rx.await.unwrap_or(Err(RaftError::Fatal(Fatal::Stopped)))
    }
}

/// Surely not proposed (the Raft core is gone or refused it): retry-able elsewhere.
fn not_proposed() -> RaftError<u64, ClientWriteError<u64, BasicNode>> {
    RaftError::APIError(ClientWriteError::ForwardToLeader(ForwardToLeader {
        leader_id: None,
        leader_node: None,
    }))
}

async fn run(raft: StoreRaft, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut carry: Option<Pending> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        // Everything queued by now joins this entry, up to the first request that does not fit.
        let mut group = Group::new(first);
        while let Ok(p) = rx.try_recv() {
            if !group.admits(&p.cmd, p.bytes) {
                carry = Some(p);
                break;
            }
            group.push(p);
        }
        let (cmd, replies) = group.into_command();
        entry_requests_histogram().observe(replies.len() as f64);
        // Handing the entry to the core here, in queue order, keeps entries in arrival order.
        match raft.client_write_ff(cmd).await {
            Err(_) => {
                for r in replies {
                    let _ = r.send(Err(not_proposed()));
                }
            }
            Ok(done) => {
                tokio::spawn(async move {
                    let res = done.await;
                    drop(slot);
                    match res {
                        Ok(Ok(resp)) => deliver(resp.data, replies),
                        Ok(Err(e)) => {
                            for r in replies {
                                let _ = r.send(Err(RaftError::APIError(e.clone())));
                            }
                        }
                        Err(_) => {
                            for r in replies {
                                let _ = r.send(Err(RaftError::Fatal(Fatal::Stopped)));
                            }
                        }
                    }
                });
            }
        }
    }
}

/// Hands each request its own result (the state machine returns one per request, in order).
fn deliver(results: Vec<ApplyResult>, replies: Vec<oneshot::Sender<Proposal>>) {
    let n = replies.len();
    if results.len() != n {
        let e = StoreError::Storage(format!(
            "group commit: {} results for {n} requests",
            results.len()
        ));
        for r in replies {
            let _ = r.send(Ok(Err(e.clone())));
        }
        return;
    }
    for (res, r) in results.into_iter().zip(replies) {
        let _ = r.send(Ok(res));
    }
}

/// The keys `cmd` writes (a check writes nothing).
fn written(cmd: &Command) -> impl Iterator<Item = &str> {
    cmd.writes
        .iter()
        .filter(|w| !matches!(w, Write::Check { .. }))
        .map(Write::key)
}

/// The requests of one entry being gathered (pure: what may join).
struct Group {
    cmds: Vec<Command>,
    replies: Vec<oneshot::Sender<Proposal>>,
    keys: BTreeSet<String>,
    bytes: usize,
}

impl Group {
    fn new(first: Pending) -> Group {
        let mut g = Group {
            cmds: Vec::new(),
            replies: Vec::new(),
            keys: BTreeSet::new(),
            bytes: 0,
        };
        g.push(first);
        g
    }

    /// True when `cmd` may join: room left, and no key written by it and by a request
    /// already in.
    fn admits(&self, cmd: &Command, bytes: usize) -> bool {
        self.cmds.len() < MAX_GROUP
            && self.bytes + bytes <= MAX_COMMAND_BYTES
            && written(cmd).all(|k| !self.keys.contains(k))
    }

    fn push(&mut self, p: Pending) {
        self.keys.extend(written(&p.cmd).map(str::to_owned));
        self.bytes += p.bytes;
        self.cmds.push(p.cmd);
        self.replies.push(p.reply);
    }

    /// The entry: the first request, with the others in its `grouped`.
    fn into_command(self) -> (Command, Vec<oneshot::Sender<Proposal>>) {
        let mut cmds = self.cmds.into_iter();
        let mut head = cmds.next().expect("a group has a first request");
        head.grouped = cmds.collect();
        (head, self.replies)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn put(key: &str) -> Command {
        Command {
            writes: vec![Write::Put {
                key: key.into(),
                object: crate::types::Object::encode(&json!({})).unwrap(),
            }],
            request_id: Some(format!("id-{key}")),
            grouped: Vec::new(),
        }
    }

    fn pending(cmd: Command, bytes: usize) -> Pending {
        Pending {
            cmd,
            bytes,
            reply: oneshot::channel().0,
        }
    }

    #[test]
    fn requests_on_other_keys_share_an_entry_in_arrival_order() {
        let mut g = Group::new(pending(put("Pod/ns/a"), 10));
        assert!(g.admits(&put("Pod/ns/b"), 10));
        g.push(pending(put("Pod/ns/b"), 10));
        g.push(pending(put("Pod/ns/c"), 10));
        let (cmd, replies) = g.into_command();
        assert_eq!(replies.len(), 3);
        assert_eq!(cmd.request_id.as_deref(), Some("id-Pod/ns/a"));
        let ids: Vec<_> = cmd
            .grouped
            .iter()
            .map(|c| c.request_id.clone().unwrap())
            .collect();
        assert_eq!(ids, ["id-Pod/ns/b", "id-Pod/ns/c"]);
    }

    #[test]
    fn a_request_on_a_key_already_in_the_entry_waits_for_the_next() {
        let g = Group::new(pending(put("Pod/ns/a"), 10));
        assert!(!g.admits(&put("Pod/ns/a"), 10));
        let mut two = put("Pod/ns/b");
        two.writes.push(Write::Delete {
            key: "Pod/ns/a".into(),
            expected_revision: None,
        });
        assert!(!g.admits(&two, 10), "one shared key is enough");
    }

    #[test]
    fn checks_of_one_key_share_an_entry_but_writes_of_it_do_not() {
        let create_in_ns = |name: &str| {
            let mut c = put(&format!("Pod/ns/{name}"));
            c.writes.insert(
                0,
                Write::Check {
                    key: "Namespace//ns".into(),
                    expected_revision: Some(3),
                },
            );
            c
        };
        let mut g = Group::new(pending(create_in_ns("a"), 10));
        assert!(g.admits(&create_in_ns("b"), 10), "two checks of one key");
        g.push(pending(create_in_ns("b"), 10));
        assert!(!g.admits(&create_in_ns("a"), 10), "the same pod twice");
        assert!(
            g.admits(&put("Namespace//ns"), 10),
            "a write after checks of its key (applied in order, the checks see the old one)"
        );
        g.push(pending(put("Namespace//ns"), 10));
        assert!(!g.admits(&put("Namespace//ns"), 10));
    }

    #[test]
    fn an_entry_stays_within_the_size_and_count_limits() {
        let g = Group::new(pending(put("Pod/ns/a"), MAX_COMMAND_BYTES - 5));
        assert!(!g.admits(&put("Pod/ns/b"), 6));
        assert!(g.admits(&put("Pod/ns/b"), 5));
        let mut g = Group::new(pending(put("k/0"), 1));
        for i in 1..MAX_GROUP {
            g.push(pending(put(&format!("k/{i}")), 1));
        }
        assert!(!g.admits(&put("k/last"), 1));
    }

    #[test]
    fn results_are_handed_out_in_order_and_a_miscount_fails_every_request() {
        let (t1, mut r1) = oneshot::channel();
        let (t2, mut r2) = oneshot::channel();
        deliver(
            vec![
                Ok(Vec::new()),
                Err(StoreError::NotFound { key: "x".into() }),
            ],
            vec![t1, t2],
        );
        assert!(matches!(r1.try_recv(), Ok(Ok(Ok(_)))));
        assert!(matches!(
            r2.try_recv(),
            Ok(Ok(Err(StoreError::NotFound { .. })))
        ));
        let (t1, mut r1) = oneshot::channel();
        deliver(Vec::new(), vec![t1]);
        assert!(matches!(r1.try_recv(), Ok(Ok(Err(StoreError::Storage(_))))));
    }
}
