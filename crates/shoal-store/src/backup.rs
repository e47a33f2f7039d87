//! The backup file format: a consistent copy of every object of the store at one revision,
//! independent of sled and openraft internals, so that a file written now still restores
//! after the store's storage layout changes.
//!
//! ```text
//! shoal-snapshot\n                                       magic line
//! {"format":1,"revision":R,"objects":N,"bodyBytes":B,"sha256":"<hex of body>"}\n
//! {"key":"Pod/default/web","object":{…}}\n               N body lines (B bytes in all)
//! ```
//!
//! Objects are in the API's JSON form with their `metadata.resourceVersion`. A reader
//! refuses an unknown magic, a newer format, a body of another length (truncated) and a
//! checksum mismatch (corrupt) before it looks at any object.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::StoreError;

/// The first line of every backup file.
pub const BACKUP_MAGIC: &str = "shoal-snapshot";

/// The newest body format this build writes and reads.
pub const BACKUP_FORMAT: u32 = 1;

/// Every object of the store at one revision.
#[derive(Debug, Clone, PartialEq)]
pub struct Backup {
    /// The revision (applied log index) the copy reflects; every object's resourceVersion is
    /// at most this.
    pub revision: u64,
    /// `(key, object)` in key order.
    pub objects: Vec<(String, Value)>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Header {
    format: u32,
    revision: u64,
    objects: u64,
    body_bytes: u64,
    sha256: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    key: String,
    object: Value,
}

fn bad(what: impl std::fmt::Display) -> StoreError {
    StoreError::Invalid(format!("snapshot file: {what}"))
}

impl Backup {
    /// Writes the file form (magic, header, body).
    pub fn encode(&self) -> Result<Vec<u8>, StoreError> {
        let mut body = Vec::new();
        for (key, object) in &self.objects {
            serde_json::to_writer(
                &mut body,
                &Line {
                    key: key.clone(),
                    object: object.clone(),
                },
            )
            .map_err(|e| bad(format!("encoding {key}: {e}")))?;
            body.push(b'\n');
        }
        let header = Header {
            format: BACKUP_FORMAT,
            revision: self.revision,
            objects: self.objects.len() as u64,
            body_bytes: body.len() as u64,
            sha256: hex::encode(Sha256::digest(&body)),
        };
        let mut out = Vec::with_capacity(body.len() + 256);
        out.extend_from_slice(BACKUP_MAGIC.as_bytes());
        out.push(b'\n');
        serde_json::to_writer(&mut out, &header).map_err(|e| bad(format!("header: {e}")))?;
        out.push(b'\n');
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Reads and checks the file form; any damage is an error that says what is wrong.
    pub fn decode(data: &[u8]) -> Result<Backup, StoreError> {
        let (magic, rest) = split_line(data).ok_or_else(|| {
            bad(format!(
                "not a shoal snapshot (no {BACKUP_MAGIC:?} line; the file is empty or truncated)"
            ))
        })?;
        if magic != BACKUP_MAGIC.as_bytes() {
            return Err(bad(format!(
                "not a shoal snapshot (the first line is not {BACKUP_MAGIC:?})"
            )));
        }
        let (header, body) = split_line(rest).ok_or_else(|| bad("truncated in its header line"))?;
        let probe: Value = serde_json::from_slice(header)
            .map_err(|e| bad(format!("header line is not valid JSON: {e}")))?;
        let format = probe.get("format").and_then(Value::as_u64).unwrap_or(0);
        if format != u64::from(BACKUP_FORMAT) {
            return Err(bad(format!(
                "format {format} is not supported (this build reads format {BACKUP_FORMAT})"
            )));
        }
        let header: Header =
            serde_json::from_value(probe).map_err(|e| bad(format!("header: {e}")))?;
        if body.len() as u64 != header.body_bytes {
            return Err(bad(format!(
                "truncated or extended: the body has {} bytes, the header says {}",
                body.len(),
                header.body_bytes
            )));
        }
        let sum = hex::encode(Sha256::digest(body));
        if sum != header.sha256 {
            return Err(bad(format!(
                "corrupt: the body's sha256 is {sum}, the header says {}",
                header.sha256
            )));
        }
        let mut objects = Vec::with_capacity(header.objects as usize);
        for (i, line) in body
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .enumerate()
        {
            let l: Line =
                serde_json::from_slice(line).map_err(|e| bad(format!("object {}: {e}", i + 1)))?;
            let rv = crate::state_machine::revision_of(&l.object);
            if rv > header.revision {
                return Err(bad(format!(
                    "object {}: resourceVersion {rv} is newer than the snapshot's revision {}",
                    l.key, header.revision
                )));
            }
            objects.push((l.key, l.object));
        }
        if objects.len() as u64 != header.objects {
            return Err(bad(format!(
                "has {} objects, the header says {}",
                objects.len(),
                header.objects
            )));
        }
        Ok(Backup {
            revision: header.revision,
            objects,
        })
    }
}

fn split_line(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = data.iter().position(|b| *b == b'\n')?;
    Some((&data[..i], &data[i + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Backup {
        Backup {
            revision: 42,
            objects: vec![
                (
                    "Pod/default/a".into(),
                    json!({"kind":"Pod","metadata":{"name":"a","resourceVersion":"7"}}),
                ),
                (
                    "Service/default/b".into(),
                    json!({"kind":"Service","metadata":{"name":"b","resourceVersion":"42"}}),
                ),
            ],
        }
    }

    #[test]
    fn round_trips() {
        let b = sample();
        assert_eq!(Backup::decode(&b.encode().unwrap()).unwrap(), b);
        let empty = Backup {
            revision: 0,
            objects: vec![],
        };
        assert_eq!(Backup::decode(&empty.encode().unwrap()).unwrap(), empty);
    }

    fn err(data: &[u8]) -> String {
        Backup::decode(data).unwrap_err().to_string()
    }

    #[test]
    fn damage_is_refused_with_a_reason() {
        let good = sample().encode().unwrap();
        assert!(
            err(&good[..good.len() - 5]).contains("truncated"),
            "{}",
            err(&good[..good.len() - 5])
        );
        assert!(err(&good[..10]).contains("not a shoal snapshot"));
        assert!(err(b"").contains("empty or truncated"));
        assert!(err(&good[..20]).contains("header"));
        let mut flipped = good.clone();
        let n = flipped.len() - 10;
        flipped[n] ^= 0x20;
        assert!(err(&flipped).contains("corrupt"), "{}", err(&flipped));
        let newer =
            String::from_utf8(good.clone())
                .unwrap()
                .replacen("\"format\":1", "\"format\":9", 1);
        assert!(err(newer.as_bytes()).contains("format 9 is not supported"));
        assert!(err(b"PK\x03\x04zipfile\n").contains("not a shoal snapshot"));
    }

    #[test]
    fn objects_newer_than_the_revision_are_refused() {
        let mut b = sample();
        b.revision = 10;
        assert!(err(&b.encode().unwrap()).contains("newer than the snapshot's revision"));
    }
}
