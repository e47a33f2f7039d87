//! The one retry rule: which failures another member (or a later attempt) may cure.
//!
//! A status either came from a member (it has no error source: tonic decoded it from the
//! response) or was made by our side of the connection (it carries the transport error
//! — h2, hyper, I/O — as its source). Every failure of our side of the connection is a
//! transport failure, whatever code tonic gave it: a connection that died after the
//! request left shows up as UNKNOWN, CANCELLED or INTERNAL depending on the moment, not
//! only as UNAVAILABLE. That mismatch is how `get -w` used to give up when a member died
//! between the list and the open of its watch. Our own deadline is not a transport
//! failure: retrying it would multiply the request timeout.

use std::error::Error as _;
use std::time::Duration;

use tonic::Code;

/// What a failed call means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection failed (refused, reset, closed, keep-alive expired): try the next
    /// member.
    Transport,
    /// A member answered UNAVAILABLE (no leader, shutting down): try the next member.
    Unavailable,
    /// A watch is too old or fell behind (OUT_OF_RANGE): list again, then watch from
    /// the list's revision.
    Relist,
    /// Our own deadline expired (or the server's DEADLINE_EXCEEDED): not retried.
    Deadline,
    /// The member answered with an error that another member would repeat.
    Fatal,
}

impl Failure {
    /// True when the same request may go to the next member.
    pub fn is_retryable(self) -> bool {
        matches!(self, Failure::Transport | Failure::Unavailable)
    }
}

/// Classifies a failed call (the rule every caller of this crate shares).
pub fn classify(s: &tonic::Status) -> Failure {
    if s.code() == Code::DeadlineExceeded || is_own_deadline(s) {
        return Failure::Deadline;
    }
    match s.code() {
        Code::OutOfRange => Failure::Relist,
        Code::Unavailable => Failure::Unavailable,
        _ if s.source().is_some() => Failure::Transport,
        _ => Failure::Fatal,
    }
}

/// True when tonic's client-side timeout produced the status.
fn is_own_deadline(s: &tonic::Status) -> bool {
    let mut cur = s.source();
    while let Some(e) = cur {
        if e.downcast_ref::<tonic::TimeoutExpired>().is_some() {
            return true;
        }
        cur = e.source();
    }
    s.code() == Code::Cancelled && s.message().contains("Timeout expired")
}

/// The pause before retry number `attempt` (1-based) of a watch: 100 ms doubling up to
/// 2 s. Unary calls do not pause: they go straight to the next member.
pub fn backoff(attempt: usize) -> Duration {
    let exp = attempt.saturating_sub(1).min(5) as u32;
    Duration::from_millis(100u64 << exp).min(Duration::from_secs(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_side(code: Code, msg: &str) -> tonic::Status {
        // What tonic builds from a broken connection: the transport error as source.
        let mut s = tonic::Status::new(code, msg);
        let io = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "broken pipe");
        s.set_source(std::sync::Arc::new(io));
        s
    }

    #[test]
    fn transport_failures_are_retryable_whatever_their_code() {
        for code in [
            Code::Unknown,
            Code::Cancelled,
            Code::Internal,
            Code::Unavailable,
        ] {
            let s = client_side(code, "h2 protocol error: stream closed");
            assert!(classify(&s).is_retryable(), "{code:?}: {:?}", classify(&s));
        }
    }

    #[test]
    fn answers_of_a_member_are_kept_apart() {
        assert_eq!(
            classify(&tonic::Status::unavailable("no leader")),
            Failure::Unavailable
        );
        assert_eq!(
            classify(&tonic::Status::out_of_range("too old")),
            Failure::Relist
        );
        for s in [
            tonic::Status::unknown("server said unknown"),
            tonic::Status::internal("storage failure"),
            tonic::Status::cancelled("cancelled by the server"),
            tonic::Status::not_found("pod \"x\" not found"),
            tonic::Status::invalid_argument("bad"),
        ] {
            assert_eq!(classify(&s), Failure::Fatal, "{s:?}");
        }
    }

    #[test]
    fn deadlines_are_not_retried() {
        let s = tonic::Status::from_error(Box::new(tonic::TimeoutExpired(())));
        assert_eq!(classify(&s), Failure::Deadline, "{s:?}");
        assert_eq!(
            classify(&tonic::Status::deadline_exceeded("slow")),
            Failure::Deadline
        );
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(5), Duration::from_millis(1600));
        assert_eq!(backoff(6), Duration::from_secs(2));
        assert_eq!(backoff(60), Duration::from_secs(2));
    }
}
