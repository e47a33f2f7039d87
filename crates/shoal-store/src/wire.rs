//! The binary encoding of the Raft path: log entries in the write-ahead log, AppendEntries,
//! InstallSnapshot and Vote requests, and forwarded writes.
//!
//! A binary payload is one marker byte ([`BINARY`]) and then postcard. Objects inside
//! entries are carried as their JSON text ([`crate::types::Object`]), so encoding and
//! decoding an entry copies bytes and builds no JSON tree. Payloads without the marker are
//! JSON, the encoding of every payload before it: entries of an older log still read back,
//! and replies and membership changes (which carry `serde_json::Value`s and error types
//! that only self-describing formats decode) stay JSON.
//!
//! postcard: a maintained serde format made for this (compact, varint integers, no
//! schema); it cannot decode `Value` or `skip_serializing_if` fields, which the types that
//! travel this way avoid.

use openraft::LogId;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// First byte of a binary payload. Never the first byte of a JSON text (not ASCII, and not
/// a UTF-8 lead byte).
pub(crate) const BINARY: u8 = 0xB1;

/// Appends the binary encoding of `v` (marker included) to `buf`.
pub(crate) fn encode_into<T: Serialize>(v: &T, buf: &mut Vec<u8>) -> Result<(), String> {
    buf.push(BINARY);
    let out = std::mem::take(buf);
    *buf = postcard::to_extend(v, out).map_err(|e| e.to_string())?;
    Ok(())
}

/// The binary encoding of `v`.
pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    encode_into(v, &mut buf)?;
    Ok(buf)
}

/// Decodes a binary or a JSON payload.
pub(crate) fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, String> {
    match b.split_first() {
        Some((&BINARY, rest)) => postcard::from_bytes(rest).map_err(|e| e.to_string()),
        _ => serde_json::from_slice(b).map_err(|e| e.to_string()),
    }
}

/// The log id of an encoded log entry, without decoding the rest (its first field).
pub(crate) fn entry_log_id(b: &[u8]) -> Result<LogId<u64>, String> {
    /// The part of a JSON entry needed (serde skips the rest).
    #[derive(serde::Deserialize)]
    struct Head {
        log_id: LogId<u64>,
    }
    match b.split_first() {
        Some((&BINARY, rest)) => postcard::take_from_bytes::<LogId<u64>>(rest)
            .map(|(id, _)| id)
            .map_err(|e| e.to_string()),
        _ => serde_json::from_slice::<Head>(b)
            .map(|h| h.log_id)
            .map_err(|e| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Command, Object, TypeConfig, Write};
    use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
    use openraft::{
        BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, SnapshotMeta, Vote,
    };
    use serde_json::json;

    fn id(term: u64, index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn command() -> Command {
        let obj = json!({"kind": "Pod", "metadata": {"name": "a", "labels": {"é": "\"x\""}}});
        Command {
            writes: vec![
                Write::Create {
                    key: "Pod/ns/a".into(),
                    object: Object::encode(&obj).unwrap(),
                },
                Write::Bind {
                    key: "Pod/ns/b".into(),
                    node_name: "n1".into(),
                    expected_revision: Some(7),
                    condition: Object::encode(&json!({"type": "PodScheduled"})).unwrap(),
                },
                Write::Delete {
                    key: "Pod/ns/c".into(),
                    expected_revision: None,
                },
            ],
            request_id: Some("r1".into()),
            grouped: vec![Command {
                writes: vec![Write::Check {
                    key: "Namespace//ns".into(),
                    expected_revision: Some(3),
                }],
                request_id: None,
                grouped: Vec::new(),
            }],
        }
    }

    fn entries() -> Vec<Entry<TypeConfig>> {
        let members = Membership::new(
            vec![[1u64, 2, 3].into_iter().collect()],
            std::collections::BTreeMap::from([(4u64, BasicNode::new("127.0.0.1:4"))]),
        );
        vec![
            Entry {
                log_id: id(2, 5),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: id(2, 6),
                payload: EntryPayload::Normal(command()),
            },
            Entry {
                log_id: id(3, 7),
                payload: EntryPayload::Membership(members),
            },
        ]
    }

    #[test]
    fn raft_requests_round_trip_in_binary() {
        let append = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 1),
            prev_log_id: Some(id(2, 4)),
            entries: entries(),
            leader_commit: Some(id(2, 6)),
        };
        let b = encode(&append).unwrap();
        assert_eq!(b[0], BINARY);
        for e in entries() {
            assert_eq!(entry_log_id(&encode(&e).unwrap()).unwrap(), e.log_id);
            assert_eq!(
                entry_log_id(&serde_json::to_vec(&e).unwrap()).unwrap(),
                e.log_id
            );
        }
        let back: AppendEntriesRequest<TypeConfig> = decode(&b).unwrap();
        assert_eq!(back.vote, append.vote);
        assert_eq!(back.prev_log_id, append.prev_log_id);
        assert_eq!(back.leader_commit, append.leader_commit);
        assert_eq!(back.entries, append.entries);

        let vote = VoteRequest::new(Vote::new(4, 2), Some(id(3, 7)));
        assert_eq!(
            decode::<VoteRequest<u64>>(&encode(&vote).unwrap()).unwrap(),
            vote
        );

        let snap = InstallSnapshotRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 1),
            meta: SnapshotMeta {
                last_log_id: Some(id(3, 7)),
                last_membership: Default::default(),
                snapshot_id: "s-1".into(),
            },
            offset: 0,
            data: vec![0, 1, 255, b'{'],
            done: true,
        };
        let b = encode(&snap).unwrap();
        // Snapshot bytes travel as bytes, not as a JSON array of numbers.
        assert!(b.len() < 64, "{} bytes", b.len());
        assert_eq!(
            decode::<InstallSnapshotRequest<TypeConfig>>(&b).unwrap(),
            snap
        );
    }

    #[test]
    fn json_payloads_of_older_members_and_logs_still_decode() {
        for e in entries() {
            let json = serde_json::to_vec(&e).unwrap();
            let back: Entry<TypeConfig> = decode(&json).unwrap();
            assert_eq!(back, e);
        }
        // An entry written before group commit: no `grouped`, the object inline.
        let old = br#"{"log_id":{"leader_id":{"term":1,"node_id":1},"index":3},"payload":{"Normal":{"writes":[{"Put":{"key":"ConfigMap/ns/a","object":{"data":{"k":"v"}}}}],"request_id":"x"}}}"#;
        let e: Entry<TypeConfig> = decode(old).unwrap();
        let EntryPayload::Normal(cmd) = e.payload else {
            panic!("not a normal entry")
        };
        assert!(cmd.grouped.is_empty());
        let Write::Put { object, .. } = &cmd.writes[0] else {
            panic!("not a put")
        };
        assert_eq!(
            object.decode("ConfigMap/ns/a").unwrap(),
            json!({"data": {"k": "v"}})
        );
    }

    #[test]
    fn a_damaged_binary_payload_is_an_error_not_a_wrong_value() {
        let b = encode(&command()).unwrap();
        assert!(decode::<Command>(&b[..b.len() - 3]).is_err());
        // An object whose text is not JSON is refused on decode.
        let mut bad = b.clone();
        let at = bad
            .windows(4)
            .position(|w| w == b"kind")
            .expect("object text in the payload");
        bad[at - 2] = b'[';
        let err = decode::<Command>(&bad).unwrap_err();
        assert!(!err.is_empty());
    }
}
