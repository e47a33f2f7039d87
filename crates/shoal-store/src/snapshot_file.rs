//! The state machine's durable copy: the current Raft snapshot in one file,
//! `DATA_DIR/state.snap`, replaced atomically (written aside, `fsync`ed, renamed, the
//! directory `fsync`ed). On start the state machine is rebuilt from it and openraft re-applies
//! the log after it (design note 0014).
//!
//! Layout: `SHOALSNP` (8 bytes), format version (u32 LE), length of the meta (u32 LE),
//! crc32 of meta and data (u32 LE), the snapshot's [`SnapshotMeta`] as JSON, then the
//! snapshot data exactly as Raft sends it to a follower.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use openraft::{BasicNode, SnapshotMeta};

use crate::StoreError;
use crate::wal::sync_dir;

/// The file's name inside a member's data dir.
pub(crate) const SNAPSHOT_FILE: &str = "state.snap";
const MAGIC: &[u8; 8] = b"SHOALSNP";
/// Bumped when the layout or the data's encoding changes; older versions stay readable.
const VERSION: u32 = 1;
const HEADER: usize = 8 + 4 + 4 + 4;

pub(crate) type Meta = SnapshotMeta<u64, BasicNode>;

fn err(path: &Path, what: impl std::fmt::Display) -> StoreError {
    StoreError::Storage(format!("snapshot file {}: {what}", path.display()))
}

/// The snapshot file of data dir `dir`.
pub(crate) fn path(dir: &Path) -> PathBuf {
    dir.join(SNAPSHOT_FILE)
}

/// Makes `meta` + `data` the snapshot of `dir`, durably: when this returns, a power cut
/// leaves this snapshot (or, if it fails, the previous one) in place.
pub(crate) fn write(dir: &Path, meta: &Meta, data: &[u8]) -> Result<(), StoreError> {
    let dest = path(dir);
    let meta_json = serde_json::to_vec(meta).map_err(|e| err(&dest, e))?;
    let meta_len = u32::try_from(meta_json.len()).map_err(|_| err(&dest, "meta too large"))?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&meta_json);
    crc.update(data);
    let mut head = Vec::with_capacity(HEADER + meta_json.len());
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&VERSION.to_le_bytes());
    head.extend_from_slice(&meta_len.to_le_bytes());
    head.extend_from_slice(&crc.finalize().to_le_bytes());
    head.extend_from_slice(&meta_json);
    let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(&head)?;
        f.write_all(data)?;
        f.sync_all()
    };
    write().map_err(|e| err(&tmp, e))?;
    std::fs::rename(&tmp, &dest)
        .map_err(|e| err(&dest, format_args!("renaming into place: {e}")))?;
    sync_dir(dir)
}

/// Reads the snapshot of `dir`: `None` when there is none yet; an error naming the file
/// when it is not a whole snapshot of a known version.
pub(crate) fn read(dir: &Path) -> Result<Option<(Meta, Vec<u8>)>, StoreError> {
    let p = path(dir);
    let mut buf = Vec::new();
    match File::open(&p) {
        Ok(mut f) => f.read_to_end(&mut buf).map_err(|e| err(&p, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(&p, e)),
    };
    if buf.len() < HEADER || &buf[..8] != MAGIC {
        return Err(err(&p, "not a Shoal snapshot (bad magic)"));
    }
    let word = |at: usize| u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"));
    let version = word(8);
    if version != VERSION {
        return Err(err(
            &p,
            format_args!("format version {version}, this build reads {VERSION}"),
        ));
    }
    let meta_len = word(12) as usize;
    let crc = word(16);
    let body = &buf[HEADER..];
    if meta_len > body.len() {
        return Err(err(&p, "truncated"));
    }
    if crc32fast::hash(body) != crc {
        return Err(err(&p, "checksum mismatch (the file is damaged)"));
    }
    let meta: Meta = serde_json::from_slice(&body[..meta_len]).map_err(|e| err(&p, e))?;
    let data = body[meta_len..].to_vec();
    Ok(Some((meta, data)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, LogId, StoredMembership};

    fn meta(index: u64) -> Meta {
        SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(2, 1), index)),
            last_membership: StoredMembership::default(),
            snapshot_id: format!("s-{index}"),
        }
    }

    #[test]
    fn a_written_snapshot_reads_back_and_replaces_the_previous() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(read(dir.path()).expect("read").is_none());
        write(dir.path(), &meta(5), b"{\"a\":1}").expect("write");
        write(dir.path(), &meta(9), b"{\"b\":2}").expect("write");
        let (m, d) = read(dir.path()).expect("read").expect("present");
        assert_eq!(m, meta(9));
        assert_eq!(d, b"{\"b\":2}");
        assert!(!dir.path().join("state.snap.tmp").exists());
    }

    #[test]
    fn a_damaged_or_foreign_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), &meta(5), b"{\"a\":1}").expect("write");
        let p = path(dir.path());
        let mut b = std::fs::read(&p).expect("read");
        let last = b.len() - 2;
        b[last] ^= 0x20;
        std::fs::write(&p, &b).expect("write");
        let e = read(dir.path()).expect_err("damaged").to_string();
        assert!(e.contains("checksum") && e.contains("state.snap"), "{e}");
        b[8] = 7;
        std::fs::write(&p, &b).expect("write");
        let e = read(dir.path()).expect_err("version").to_string();
        assert!(e.contains("version 7"), "{e}");
        std::fs::write(&p, b"hello").expect("write");
        let e = read(dir.path()).expect_err("foreign").to_string();
        assert!(e.contains("bad magic"), "{e}");
    }
}
