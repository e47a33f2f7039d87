//! Image blobs on this controller's disk (`DATA_DIR/blobs/sha256/<hex>`), content-addressed,
//! and the copies other controllers hold (docs/design/0007-image-blobs.md).
//!
//! Raft carries only where a blob is (`BlobMeta//<hex>` with its `holders`); the bytes
//! go straight from disk to disk: an import or a registry push writes a blob here, sends
//! a second copy to another controller (`PutBlob`), and only then records it. A controller
//! asked for a blob it lacks fetches it from a holder once and keeps it. A background
//! pass deletes local blobs that no `BlobMeta` names any more.
//!
//! Every blob is written to `tmp/`, hashed as it is written, `fdatasync`ed and renamed
//! into place (then the directory is synced), so a file under `sha256/` is always whole
//! and matches its name.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};
use shoal_image::digest::Digest;
use shoal_proto::images_client::ImagesClient;
use shoal_proto::{BlobRequest, BlobUpload};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};

use crate::images::ImagesError;

/// Bytes per read or message when copying a blob.
pub const COPY_CHUNK: usize = 256 * 1024;

/// Largest gRPC message between controllers carrying blob bytes.
const PEER_MESSAGE_BYTES: usize = 4 << 20;

fn io_err(path: &Path, source: io::Error) -> ImagesError {
    ImagesError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The blob directory of one controller.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    /// Opens (creating) `root` with `sha256/` and `tmp/`; leftovers of writes cut short by a
    /// crash are removed from `tmp/`.
    pub fn open(root: &Path) -> Result<BlobStore, ImagesError> {
        for d in [root.to_path_buf(), root.join("sha256"), root.join("tmp")] {
            shoal_files::private_dir(&d).map_err(|e| io_err(&d, e))?;
        }
        let tmp = root.join("tmp");
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(BlobStore {
            root: root.to_path_buf(),
        })
    }

    /// Where blob `d` lives (whether or not it is here).
    pub fn path(&self, d: &Digest) -> PathBuf {
        self.root.join("sha256").join(d.hex())
    }

    /// The size of the local copy of `d`, if there is one.
    pub fn size(&self, d: &Digest) -> Option<u64> {
        std::fs::metadata(self.path(d)).ok().map(|m| m.len())
    }

    /// A writer for a new blob (in `tmp/` until committed).
    pub async fn writer(&self) -> Result<BlobWriter, ImagesError> {
        let tmp = self.root.join("tmp");
        let file = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&tmp)
            .map_err(|e| io_err(&tmp, e))?;
        let (std_file, path) = file.keep().map_err(|e| io_err(&tmp, e.error))?;
        Ok(BlobWriter {
            file: Some(tokio::fs::File::from_std(std_file)),
            tmp: path,
            hasher: Sha256::new(),
            len: 0,
            root: self.root.clone(),
        })
    }

    /// Stores the file at `src` (already verified, e.g. by the staging image store) as blob
    /// `d`: a hard link when both are on one file system, else a checked copy; synced.
    pub async fn put_file(&self, d: &Digest, src: &Path) -> Result<u64, ImagesError> {
        if let Some(n) = self.size(d) {
            return Ok(n);
        }
        let dest = self.path(d);
        if std::fs::hard_link(src, &dest).is_ok() {
            let f = std::fs::File::open(&dest).map_err(|e| io_err(&dest, e))?;
            f.sync_all().map_err(|e| io_err(&dest, e))?;
            shoal_files::sync_dir(&self.root.join("sha256")).map_err(|e| io_err(&dest, e))?;
            return f.metadata().map(|m| m.len()).map_err(|e| io_err(&dest, e));
        }
        let mut w = self.writer().await?;
        let mut f = tokio::fs::File::open(src)
            .await
            .map_err(|e| io_err(src, e))?;
        let mut buf = vec![0u8; COPY_CHUNK];
        loop {
            let n = f.read(&mut buf).await.map_err(|e| io_err(src, e))?;
            if n == 0 {
                break;
            }
            w.write(&buf[..n]).await?;
        }
        w.commit(d).await
    }

    /// Deletes the local copy of `d` (no error when there is none).
    pub fn remove(&self, d: &Digest) -> Result<(), ImagesError> {
        let p = self.path(d);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&p, e)),
        }
    }

    /// Every local blob with its modification time.
    pub fn list(&self) -> Vec<(Digest, SystemTime)> {
        let dir = self.root.join("sha256");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let d = Digest::from_hex(&name).ok()?;
                let t = e.metadata().ok()?.modified().ok()?;
                Some((d, t))
            })
            .collect()
    }
}

/// A blob being written: hashed as bytes arrive, moved into place by [`BlobWriter::commit`]
/// only when it matches its digest; dropped uncommitted, it leaves nothing behind.
#[derive(Debug)]
pub struct BlobWriter {
    file: Option<tokio::fs::File>,
    tmp: PathBuf,
    hasher: Sha256,
    len: u64,
    root: PathBuf,
}

impl BlobWriter {
    /// Appends bytes.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), ImagesError> {
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| ImagesError::Task("blob writer used after commit".into()))?;
        f.write_all(data).await.map_err(|e| io_err(&self.tmp, e))?;
        self.hasher.update(data);
        self.len += data.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digest of what was written so far.
    pub fn digest(&self) -> Digest {
        let hex = hex::encode(self.hasher.clone().finalize());
        Digest::from_hex(&hex).unwrap_or_else(|_| Digest::of_bytes(b""))
    }

    /// Checks the content against `expected`, syncs it and moves it into place. A mismatch
    /// deletes the bytes and names both digests.
    pub async fn commit(mut self, expected: &Digest) -> Result<u64, ImagesError> {
        let actual = self.digest();
        if &actual != expected {
            return Err(ImagesError::DigestMismatch {
                expected: expected.to_string(),
                actual: actual.to_string(),
                size: self.len,
            });
        }
        let mut f = self
            .file
            .take()
            .ok_or_else(|| ImagesError::Task("blob writer committed twice".into()))?;
        f.flush().await.map_err(|e| io_err(&self.tmp, e))?;
        f.sync_data().await.map_err(|e| io_err(&self.tmp, e))?;
        drop(f);
        let dest = self.root.join("sha256").join(expected.hex());
        tokio::fs::rename(&self.tmp, &dest)
            .await
            .map_err(|e| io_err(&dest, e))?;
        let dir = self.root.join("sha256");
        shoal_files::sync_dir(&dir).map_err(|e| io_err(&dir, e))?;
        self.tmp = PathBuf::new();
        Ok(self.len)
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// gRPC clients of the other controllers' Images services, over mutual TLS with this
/// controller's certificate.
#[derive(Debug, Clone)]
pub struct Peers {
    tls: Arc<rustls::ClientConfig>,
    clients: Arc<Mutex<HashMap<String, ImagesClient<Channel>>>>,
}

impl Peers {
    /// Clients that connect with `tls` (the controller's peer client settings).
    pub fn new(tls: Arc<rustls::ClientConfig>) -> Peers {
        Peers {
            tls,
            clients: Default::default(),
        }
    }

    fn client(&self, addr: &str) -> Result<ImagesClient<Channel>, ImagesError> {
        if let Ok(map) = self.clients.lock()
            && let Some(c) = map.get(addr)
        {
            return Ok(c.clone());
        }
        let ep = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| ImagesError::Invalid(format!("controller address {addr}: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true);
        let connector = shoal_pki::tls::Connector::new(self.tls.clone(), Duration::from_secs(3));
        let c = ImagesClient::new(ep.connect_with_connector_lazy(connector))
            .max_decoding_message_size(PEER_MESSAGE_BYTES)
            .max_encoding_message_size(PEER_MESSAGE_BYTES);
        if let Ok(mut map) = self.clients.lock() {
            map.insert(addr.to_string(), c.clone());
        }
        Ok(c)
    }

    /// Sends the local blob at `path` to the controller at `addr`, which verifies and syncs it.
    pub async fn push(
        &self,
        addr: &str,
        d: &Digest,
        path: &Path,
        size: u64,
    ) -> Result<(), ImagesError> {
        let mut client = self.client(addr)?;
        let (tx, rx) = tokio::sync::mpsc::channel::<BlobUpload>(4);
        let (digest, path_buf) = (d.to_string(), path.to_path_buf());
        let reader = tokio::spawn(async move {
            let mut f = tokio::fs::File::open(&path_buf)
                .await
                .map_err(|e| io_err(&path_buf, e))?;
            let mut first = true;
            loop {
                let mut buf = vec![0u8; COPY_CHUNK];
                let n = f.read(&mut buf).await.map_err(|e| io_err(&path_buf, e))?;
                if n == 0 && !first {
                    break;
                }
                buf.truncate(n);
                let msg = BlobUpload {
                    digest: if first { digest.clone() } else { String::new() },
                    size: if first { size } else { 0 },
                    data: buf,
                };
                first = false;
                if tx.send(msg).await.is_err() || n == 0 {
                    break;
                }
            }
            Ok::<(), ImagesError>(())
        });
        let res = client
            .put_blob(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await;
        let read = reader.await.map_err(|e| ImagesError::Task(e.to_string()))?;
        read?;
        let r = res.map_err(|s| ImagesError::Peer {
            addr: addr.to_string(),
            message: s.message().to_string(),
        })?;
        if r.get_ref().size != size {
            return Err(ImagesError::Peer {
                addr: addr.to_string(),
                message: format!(
                    "stored {} bytes of blob {d}, expected {size}",
                    r.get_ref().size
                ),
            });
        }
        Ok(())
    }

    /// Fetches blob `d` from the controller at `addr` (its own copy only) into `store`.
    pub async fn fetch(
        &self,
        addr: &str,
        d: &Digest,
        store: &BlobStore,
    ) -> Result<u64, ImagesError> {
        let mut client = self.client(addr)?;
        let peer = |s: tonic::Status| ImagesError::Peer {
            addr: addr.to_string(),
            message: s.message().to_string(),
        };
        let mut stream = client
            .blob(BlobRequest {
                digest: d.to_string(),
                offset: 0,
                local_only: true,
            })
            .await
            .map_err(peer)?
            .into_inner();
        let mut w = store.writer().await?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(peer)?;
            w.write(&chunk.data).await?;
        }
        w.commit(d).await
    }
}

/// The members other than `me`, starting after `me` in id order (so that the second copies of
/// different controllers' imports spread over the cluster).
pub fn peer_order(members: &[(u64, String)], me: u64) -> Vec<(u64, String)> {
    let mut others: Vec<(u64, String)> = members
        .iter()
        .filter(|(id, _)| *id != me)
        .cloned()
        .collect();
    others.sort_by_key(|(id, _)| *id);
    let split = others.iter().position(|(id, _)| *id > me).unwrap_or(0);
    others.rotate_left(split);
    others
}

/// How many controllers must hold each blob: two, or one in a one-member cluster.
pub fn copies_wanted(members: usize) -> usize {
    members.clamp(1, 2)
}

/// Local blobs a garbage-collection pass may delete: older than `grace` (so that a blob
/// written before its `BlobMeta` is committed is never taken) and not `wanted`.
pub fn gc_candidates(
    local: &[(Digest, SystemTime)],
    now: SystemTime,
    grace: Duration,
    wanted: &dyn Fn(&Digest) -> bool,
) -> Vec<Digest> {
    local
        .iter()
        .filter(|(d, t)| now.duration_since(*t).unwrap_or_default() >= grace && !wanted(d))
        .map(|(d, _)| d.clone())
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn m(ids: &[u64]) -> Vec<(u64, String)> {
        ids.iter().map(|i| (*i, format!("c{i}:7000"))).collect()
    }

    #[test]
    fn peers_start_after_me_and_wrap() {
        let ids = |v: Vec<(u64, String)>| v.into_iter().map(|(i, _)| i).collect::<Vec<_>>();
        assert_eq!(ids(peer_order(&m(&[1, 2, 3]), 1)), vec![2, 3]);
        assert_eq!(ids(peer_order(&m(&[3, 1, 2]), 2)), vec![3, 1]);
        assert_eq!(ids(peer_order(&m(&[1, 2, 3]), 3)), vec![1, 2]);
        assert!(peer_order(&m(&[1]), 1).is_empty());
        assert_eq!(copies_wanted(1), 1);
        assert_eq!(copies_wanted(3), 2);
    }

    #[test]
    fn gc_spares_young_and_wanted_blobs() {
        let now = SystemTime::now();
        let a = Digest::of_bytes(b"a");
        let b = Digest::of_bytes(b"b");
        let c = Digest::of_bytes(b"c");
        let local = vec![
            (a.clone(), now - Duration::from_secs(3600)),
            (b.clone(), now - Duration::from_secs(3600)),
            (c.clone(), now - Duration::from_secs(5)),
        ];
        let keep = b.clone();
        let out = gc_candidates(&local, now, Duration::from_secs(600), &|d| *d == keep);
        assert_eq!(out, vec![a]);
    }

    #[tokio::test]
    async fn a_blob_is_kept_only_when_it_matches_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let d = Digest::of_bytes(b"hello world");
        let mut w = store.writer().await.unwrap();
        w.write(b"hello ").await.unwrap();
        w.write(b"world").await.unwrap();
        assert_eq!(w.commit(&d).await.unwrap(), 11);
        assert_eq!(std::fs::read(store.path(&d)).unwrap(), b"hello world");
        assert_eq!(store.list().len(), 1);

        let mut w = store.writer().await.unwrap();
        w.write(b"hello there").await.unwrap();
        let other = Digest::of_bytes(b"something else");
        let e = w.commit(&other).await.unwrap_err().to_string();
        assert!(
            e.contains(&other.to_string()) && e.contains("digest"),
            "{e}"
        );
        assert!(store.size(&other).is_none());
        let left: Vec<_> = std::fs::read_dir(dir.path().join("tmp")).unwrap().collect();
        assert!(left.is_empty(), "a refused blob leaves nothing in tmp/");

        // Dropped uncommitted: nothing left either.
        let mut w = store.writer().await.unwrap();
        w.write(b"partial").await.unwrap();
        drop(w);
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );

        // put_file links or copies a verified file.
        let src = dir.path().join("src");
        std::fs::write(&src, b"linked").unwrap();
        let ld = Digest::of_bytes(b"linked");
        assert_eq!(store.put_file(&ld, &src).await.unwrap(), 6);
        assert_eq!(std::fs::read(store.path(&ld)).unwrap(), b"linked");
        store.remove(&ld).unwrap();
        store.remove(&ld).unwrap();
        assert!(store.size(&ld).is_none());
    }
}
