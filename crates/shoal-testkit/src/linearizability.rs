//! A linearizability checker for histories of operations on keys, each key a register
//! that may be absent (Shoal's Create, Update, Delete and Get of one object), in the
//! style of Porcupine and Knossos: the Wing & Gong search with Lowe's just-in-time
//! linearization and a cache of (operations linearized, state) already explored.
//!
//! A history is the list of operations clients ran, each with the time it was invoked
//! and, if the client saw an answer, the time of that answer and what it was. An
//! operation whose outcome is unknown (the connection broke, the deadline passed, the
//! member had no leader) may have taken effect at any point after its invocation, or
//! never: it is given an infinite return time and any output, which is exactly that.
//! Reads with an unknown outcome tell nothing and are dropped.
//!
//! Keys are independent registers, so each key's sub-history is checked alone
//! (P-compositionality): the whole history is linearizable iff every key's is.
//!
//! Why not a crate: the Rust ports of Porcupine are unmaintained experiments, and the
//! search is a page of code that the tests below pin down.

use std::collections::{BTreeMap, HashSet};

/// What an operation asked for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Input {
    /// Create the object with this value (fails if it exists).
    Create(String),
    /// Replace the value (fails if the object does not exist).
    Update(String),
    /// Delete the object (fails if it does not exist).
    Delete,
    /// Read the value.
    Get,
}

/// What the client saw.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    /// The write succeeded.
    Ok,
    /// Create refused: the object exists.
    Exists,
    /// Update or Delete refused, or Get found nothing: the object does not exist.
    Missing,
    /// Get found this value.
    Value(String),
    /// No answer (it may or may not have taken effect).
    Unknown,
}

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    /// Which client ran it (for reports only).
    pub client: usize,
    /// The object.
    pub key: String,
    /// What was asked.
    pub input: Input,
    /// What came back.
    pub output: Output,
    /// When it was invoked (any monotonic unit, e.g. microseconds since the start).
    pub call: u64,
    /// When the answer came (ignored when the output is [`Output::Unknown`]).
    pub ret: u64,
}

/// The register's next state and whether `output` is what it answers to `input` in
/// `state`; an unknown output matches whatever the register does.
fn step(state: &Option<String>, input: &Input, output: &Output) -> Option<Option<String>> {
    let (next, answer) = match (input, state) {
        (Input::Create(v), None) => (Some(v.clone()), Output::Ok),
        (Input::Create(_), Some(_)) => (state.clone(), Output::Exists),
        (Input::Update(v), Some(_)) => (Some(v.clone()), Output::Ok),
        (Input::Update(_), None) => (None, Output::Missing),
        (Input::Delete, Some(_)) => (None, Output::Ok),
        (Input::Delete, None) => (None, Output::Missing),
        (Input::Get, Some(v)) => (state.clone(), Output::Value(v.clone())),
        (Input::Get, None) => (None, Output::Missing),
    };
    (*output == Output::Unknown || *output == answer).then_some(next)
}

/// The verdict on one key whose history is not linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The key.
    pub key: String,
    /// Its operations, by invocation time (what to look at).
    pub ops: Vec<Op>,
}

/// Checks a whole history, key by key (every key starts absent). `Err` holds the first
/// key (in key order) whose history has no linearization.
pub fn check(history: &[Op]) -> Result<(), Violation> {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in history {
        if op.input == Input::Get && op.output == Output::Unknown {
            continue;
        }
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    for (key, ops) in by_key {
        if !check_key(&ops) {
            let mut ops: Vec<Op> = ops.into_iter().cloned().collect();
            ops.sort_by_key(|o| o.call);
            return Err(Violation {
                key: key.to_string(),
                ops,
            });
        }
    }
    Ok(())
}

/// One entry of the event list: the call or the return of operation `op`.
#[derive(Clone, Copy, Debug)]
struct Event {
    op: usize,
    is_call: bool,
    /// The call entry's return entry (index in `events`), for lifting both.
    partner: usize,
}

/// Wing & Gong / Lowe on one key: events in time order in a doubly linked list; take the
/// first call whose operation the model accepts next (and whose resulting (set, state)
/// is new), lift its call and return out of the list; on meeting a return first,
/// backtrack.
fn check_key(ops: &[&Op]) -> bool {
    let n = ops.len();
    // (time, is return, op): calls before returns at the same time, so that operations
    // that touch count as concurrent.
    let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, o) in ops.iter().enumerate() {
        order.push((o.call, false, i));
        let ret = if o.output == Output::Unknown {
            u64::MAX
        } else {
            o.ret.max(o.call)
        };
        order.push((ret, true, i));
    }
    order.sort();
    let mut events: Vec<Event> = order
        .iter()
        .map(|&(_, ret, op)| Event {
            op,
            is_call: !ret,
            partner: usize::MAX,
        })
        .collect();
    let mut ret_at = vec![0usize; n];
    for (i, e) in events.iter().enumerate() {
        if !e.is_call {
            ret_at[e.op] = i;
        }
    }
    for e in events.iter_mut() {
        if e.is_call {
            e.partner = ret_at[e.op];
        }
    }
    // The list: next/prev over event indices 0..len, with a head sentinel at `len`
    // (usize::MAX ends it).
    let len = events.len();
    if len == 0 {
        return true;
    }
    let head = len;
    let mut next: Vec<usize> = (1..len).chain([usize::MAX, 0]).collect();
    let mut prev: Vec<usize> = std::iter::once(head).chain(0..len).collect();
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, i: usize| {
        let (p, nx) = (prev[i], next[i]);
        next[p] = nx;
        if nx != usize::MAX {
            prev[nx] = p;
        }
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, i: usize| {
        let (p, nx) = (prev[i], next[i]);
        next[p] = i;
        if nx != usize::MAX {
            prev[nx] = i;
        }
    };

    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut state: Option<String> = None;
    let mut cache: HashSet<(Vec<u64>, Option<String>)> = HashSet::new();
    // (call event lifted, state before it).
    let mut stack: Vec<(usize, Option<String>)> = Vec::new();
    let mut cur = next[head];
    loop {
        if cur == usize::MAX {
            // Every event lifted: a linearization exists.
            return true;
        }
        let e = events[cur];
        if e.is_call {
            let op = ops[e.op];
            if let Some(after) = step(&state, &op.input, &op.output) {
                let mut set = linearized.clone();
                set[e.op / 64] |= 1 << (e.op % 64);
                if cache.insert((set.clone(), after.clone())) {
                    stack.push((cur, std::mem::replace(&mut state, after)));
                    linearized = set;
                    unlink(&mut next, &mut prev, cur);
                    unlink(&mut next, &mut prev, e.partner);
                    cur = next[head];
                    continue;
                }
            }
            cur = next[cur];
        } else {
            // A return before its operation was linearized: undo the last choice.
            let Some((call, before)) = stack.pop() else {
                return false;
            };
            let e = events[call];
            state = before;
            linearized[e.op / 64] &= !(1 << (e.op % 64));
            relink(&mut next, &mut prev, e.partner);
            relink(&mut next, &mut prev, call);
            cur = next[call];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: usize, input: Input, output: Output, call: u64, ret: u64) -> Op {
        Op {
            client,
            key: "k".into(),
            input,
            output,
            call,
            ret,
        }
    }

    fn v(s: &str) -> String {
        s.to_string()
    }

    #[test]
    fn sequential_histories_follow_the_register() {
        let h = [
            op(0, Input::Get, Output::Missing, 0, 1),
            op(0, Input::Create(v("a")), Output::Ok, 2, 3),
            op(0, Input::Create(v("b")), Output::Exists, 4, 5),
            op(0, Input::Get, Output::Value(v("a")), 6, 7),
            op(0, Input::Update(v("c")), Output::Ok, 8, 9),
            op(0, Input::Delete, Output::Ok, 10, 11),
            op(0, Input::Update(v("d")), Output::Missing, 12, 13),
        ];
        assert!(check(&h).is_ok());
        // A read of a value never written is caught.
        let mut bad = h.to_vec();
        bad[3].output = Output::Value(v("b"));
        assert_eq!(check(&bad).unwrap_err().key, "k");
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_not_linearizable() {
        // c0 creates a, then updates to b (done at 5); c1 starts a read at 6, after the
        // update returned, and sees a: that is what a follower serving stale reads does.
        let h = [
            op(0, Input::Create(v("a")), Output::Ok, 0, 1),
            op(0, Input::Update(v("b")), Output::Ok, 2, 5),
            op(1, Input::Get, Output::Value(v("a")), 6, 7),
        ];
        assert!(check(&h).is_err());
        // Overlapping the update, the same read is fine (it may come first).
        let h = [
            op(0, Input::Create(v("a")), Output::Ok, 0, 1),
            op(0, Input::Update(v("b")), Output::Ok, 2, 5),
            op(1, Input::Get, Output::Value(v("a")), 4, 7),
        ];
        assert!(check(&h).is_ok());
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        // Two creates overlap: either may win, the other sees Exists; a read after both
        // sees the winner.
        let h = [
            op(0, Input::Create(v("a")), Output::Exists, 0, 10),
            op(1, Input::Create(v("b")), Output::Ok, 1, 9),
            op(2, Input::Get, Output::Value(v("b")), 11, 12),
        ];
        assert!(check(&h).is_ok());
        // Both succeeding is impossible.
        let h = [
            op(0, Input::Create(v("a")), Output::Ok, 0, 10),
            op(1, Input::Create(v("b")), Output::Ok, 1, 9),
        ];
        assert!(check(&h).is_err());
    }

    #[test]
    fn unknown_outcomes_may_apply_late_or_never() {
        // An update with no answer, then reads: one sees it took effect long after the
        // client gave up, which is allowed…
        let h = [
            op(0, Input::Create(v("a")), Output::Ok, 0, 1),
            op(1, Input::Update(v("b")), Output::Unknown, 2, 3),
            op(2, Input::Get, Output::Value(v("a")), 10, 11),
            op(2, Input::Get, Output::Value(v("b")), 20, 21),
        ];
        assert!(check(&h).is_ok());
        // …as is never seeing it.
        let h = [
            op(0, Input::Create(v("a")), Output::Ok, 0, 1),
            op(1, Input::Update(v("b")), Output::Unknown, 2, 3),
            op(2, Input::Get, Output::Value(v("a")), 20, 21),
        ];
        assert!(check(&h).is_ok());
        // But it cannot go back: b seen, then a again, is a lost write.
        let h = [
            op(0, Input::Create(v("a")), Output::Ok, 0, 1),
            op(1, Input::Update(v("b")), Output::Unknown, 2, 3),
            op(2, Input::Get, Output::Value(v("b")), 10, 11),
            op(2, Input::Get, Output::Value(v("a")), 20, 21),
        ];
        assert!(check(&h).is_err());
        // An acknowledged write lost after a failover is caught too.
        let h = [
            op(0, Input::Create(v("a")), Output::Ok, 0, 1),
            op(0, Input::Update(v("b")), Output::Ok, 2, 3),
            op(1, Input::Get, Output::Value(v("a")), 50, 51),
        ];
        assert!(check(&h).is_err());
        // Unknown reads are dropped.
        let h = [
            op(0, Input::Create(v("a")), Output::Ok, 0, 1),
            op(1, Input::Get, Output::Unknown, 2, 3),
        ];
        assert!(check(&h).is_ok());
    }

    #[test]
    fn keys_are_independent_and_the_search_copes_with_many_operations() {
        // 6 clients × 60 overlapping operations on two keys, generated from a
        // sequential run of the register (so linearizable), each op's interval widened
        // to overlap its neighbours'.
        let mut h = Vec::new();
        let mut states: BTreeMap<&str, Option<String>> = BTreeMap::new();
        let mut t = 0;
        for i in 0..360usize {
            let key = if i % 2 == 0 { "x" } else { "y" };
            let st = states.entry(key).or_default();
            let input = match i % 5 {
                0 => Input::Create(format!("v{i}")),
                1 | 3 => Input::Get,
                2 => Input::Update(format!("v{i}")),
                _ => Input::Delete,
            };
            let output = match (&input, &*st) {
                (Input::Create(_), None)
                | (Input::Update(_), Some(_))
                | (Input::Delete, Some(_)) => Output::Ok,
                (Input::Create(_), Some(_)) => Output::Exists,
                (Input::Get, Some(x)) => Output::Value(x.clone()),
                _ => Output::Missing,
            };
            *st = step(st, &input, &output).expect("the model accepts its own answer");
            h.push(Op {
                client: i % 6,
                key: key.into(),
                input,
                output,
                call: t,
                ret: t + 25,
            });
            t += 10;
        }
        assert!(check(&h).is_ok());
        // One read changed to a value that key never had at that time.
        let i = h
            .iter()
            .rposition(|o| o.input == Input::Get && o.key == "y")
            .unwrap();
        h[i].output = Output::Value("v-never".into());
        assert_eq!(check(&h).unwrap_err().key, "y");
    }
}
