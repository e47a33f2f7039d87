//! Secrets encrypted at rest (docs/security.md "Encryption at rest").
//!
//! Every controller holds the cluster's encryption key in a file (`--encryption-key-file`,
//! default `DATA_DIR/pki/encryption.key`, 0600): the first controller makes it, a joining
//! controller receives it in its Join response (over TLS checked by the CA hash), and a
//! restore needs it copied by the operator. The key never enters the Raft log, a
//! snapshot or a backup.
//!
//! [`SecretCipher`] is the store's [`ValueCodec`]: before a Secret is proposed, its
//! `data` is replaced by `encrypted` (XChaCha20-Poly1305, a random 24-byte nonce, the
//! store key as associated data so a sealed value cannot be moved to another Secret);
//! reads, watches and write outcomes get the plain object back.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde_json::Value;
use shoal_store::{StoreError, ValueCodec};

/// Store key prefix of the objects that are sealed.
pub const SEALED_PREFIX: &str = "Secret/";
/// The field of a sealed object that holds the ciphertext.
pub const SEALED_FIELD: &str = "encrypted";
/// Fields of a Secret that are sealed.
const SEALED_FIELDS: [&str; 2] = ["data", "stringData"];
/// Prefix of a sealed value (algorithm and format version).
const SEAL_TAG: &str = "xchacha20poly1305:v1:";
/// Key file line prefix.
const FILE_TAG: &str = "shoal-encryption-key-v1:";

/// The cluster's encryption key and cipher.
pub struct SecretCipher {
    key: [u8; 32],
    aead: XChaCha20Poly1305,
    path: PathBuf,
}

impl std::fmt::Debug for SecretCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretCipher")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SecretCipher {
    /// A cipher with `key` (32 bytes), read from or meant for `path`.
    pub fn new(key: &[u8], path: &Path) -> anyhow::Result<SecretCipher> {
        let key: [u8; 32] = key.try_into().map_err(|_| {
            anyhow::anyhow!(
                "{}: expected a 32-byte key, got {} bytes",
                path.display(),
                key.len()
            )
        })?;
        Ok(SecretCipher {
            aead: XChaCha20Poly1305::new(&key.into()),
            key,
            path: path.to_path_buf(),
        })
    }

    /// Makes a new random key (not yet written).
    pub fn generate(path: &Path) -> anyhow::Result<SecretCipher> {
        SecretCipher::new(&rand::random::<[u8; 32]>(), path)
    }

    /// Reads the key file, `None` when it does not exist.
    pub fn load(path: &Path) -> anyhow::Result<Option<SecretCipher>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("while reading {}", path.display())),
        };
        let Some(b64) = text.trim().strip_prefix(FILE_TAG) else {
            bail!(
                "{}: expected a line {FILE_TAG}BASE64 (a Shoal encryption key file)",
                path.display()
            );
        };
        let key = B64
            .decode(b64)
            .with_context(|| format!("{}: the key is not base64", path.display()))?;
        SecretCipher::new(&key, path).map(Some)
    }

    /// Writes the key file (0600, its directory 0700); refuses to replace another key.
    pub fn save(&self) -> anyhow::Result<()> {
        if let Some(existing) = SecretCipher::load(&self.path)? {
            if existing.key == self.key {
                return Ok(());
            }
            bail!(
                "{} holds another encryption key: move it away only if no Secret was written with it",
                self.path.display()
            );
        }
        if let Some(dir) = self.path.parent() {
            shoal_files::private_dir(dir)
                .with_context(|| format!("while creating {}", dir.display()))?;
        }
        let text = format!("{FILE_TAG}{}\n", B64.encode(self.key));
        shoal_files::write_new_atomic(&self.path, text.as_bytes(), 0o600)
            .with_context(|| format!("while writing {}", self.path.display()))
    }

    /// The raw key, for a joining controller's Join response only.
    pub fn key_bytes(&self) -> Vec<u8> {
        self.key.to_vec()
    }

    /// The key file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn seal_bytes(&self, key: &str, plain: &[u8]) -> Result<String, StoreError> {
        let nonce: [u8; 24] = rand::random();
        let ct = self
            .aead
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: key.as_bytes(),
                },
            )
            .map_err(|_| StoreError::Invalid(format!("{key}: encryption failed")))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(format!("{SEAL_TAG}{}", B64.encode(out)))
    }

    fn open_bytes(&self, key: &str, sealed: &str) -> Result<Vec<u8>, StoreError> {
        let bad = |why: &str| {
            StoreError::Storage(format!(
                "{key}: cannot decrypt ({why}); is {} the key of this cluster?",
                self.path.display()
            ))
        };
        let b64 = sealed
            .strip_prefix(SEAL_TAG)
            .ok_or_else(|| bad("unknown format"))?;
        let raw = B64.decode(b64).map_err(|_| bad("not base64"))?;
        if raw.len() < 24 {
            return Err(bad("too short"));
        }
        let (nonce, ct) = raw.split_at(24);
        self.aead
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: key.as_bytes(),
                },
            )
            .map_err(|_| bad("wrong key, or the value was altered"))
    }
}

impl ValueCodec for SecretCipher {
    fn seal(&self, key: &str, mut object: Value) -> Result<Value, StoreError> {
        if !key.starts_with(SEALED_PREFIX) {
            return Ok(object);
        }
        let Some(map) = object.as_object_mut() else {
            return Ok(object);
        };
        if map.contains_key(SEALED_FIELD) {
            return Err(StoreError::Invalid(format!(
                "{key}: field {SEALED_FIELD:?} is reserved"
            )));
        }
        let mut plain = serde_json::Map::new();
        for f in SEALED_FIELDS {
            if let Some(v) = map.remove(f) {
                plain.insert(f.to_string(), v);
            }
        }
        let bytes =
            serde_json::to_vec(&plain).map_err(|e| StoreError::Invalid(format!("{key}: {e}")))?;
        map.insert(SEALED_FIELD.into(), self.seal_bytes(key, &bytes)?.into());
        Ok(object)
    }

    fn seals(&self, key: &str) -> bool {
        key.starts_with(SEALED_PREFIX)
    }

    fn open(&self, key: &str, mut stored: Value) -> Result<Value, StoreError> {
        if !key.starts_with(SEALED_PREFIX) {
            return Ok(stored);
        }
        let Some(map) = stored.as_object_mut() else {
            return Ok(stored);
        };
        let Some(sealed) = map.remove(SEALED_FIELD) else {
            return Ok(stored);
        };
        let sealed = sealed.as_str().unwrap_or_default().to_string();
        let plain = self.open_bytes(key, &sealed)?;
        let fields: serde_json::Map<String, Value> = serde_json::from_slice(&plain)
            .map_err(|e| StoreError::Storage(format!("{key}: decrypted value: {e}")))?;
        map.extend(fields);
        Ok(stored)
    }
}

/// Where the key comes from when the controller starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// The first controller of a new cluster: make the key if there is none.
    New,
    /// A restore: the operator copies the key of the backed-up cluster (a new key is made
    /// only when the backup holds no encrypted Secret).
    Restore {
        /// The backup holds encrypted Secrets.
        has_sealed: bool,
    },
    /// A joining or restarting controller: the key must be there (a join wrote it).
    Existing,
}

/// Loads the key file at `path`, or makes it when `source` allows.
pub fn load_or_create(path: &Path, source: KeySource) -> anyhow::Result<SecretCipher> {
    if let Some(c) = SecretCipher::load(path)? {
        return Ok(c);
    }
    match source {
        KeySource::New | KeySource::Restore { has_sealed: false } => {
            let c = SecretCipher::generate(path)?;
            c.save()?;
            tracing::info!(path = %path.display(), "made the cluster's encryption key for Secrets");
            Ok(c)
        }
        KeySource::Restore { has_sealed: true } => bail!(
            "{}: missing; the backup holds encrypted Secrets: copy the encryption key file of the cluster it came from there (see docs/security.md)",
            path.display()
        ),
        KeySource::Existing => bail!(
            "{}: missing; this controller's data directory belongs to a cluster: copy the encryption key file of another controller there (see docs/security.md)",
            path.display()
        ),
    }
}

/// True when a backup's objects hold an encrypted Secret.
pub fn backup_has_sealed(objects: &[(String, Value)]) -> bool {
    objects
        .iter()
        .any(|(k, v)| k.starts_with(SEALED_PREFIX) && v.get(SEALED_FIELD).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sealed_secrets_hide_their_data_and_open_again() {
        let dir = tempfile::tempdir().unwrap();
        let c = SecretCipher::generate(&dir.path().join("k")).unwrap();
        let s = json!({"kind": "Secret", "metadata": {"name": "db"}, "type": "Opaque", "data": {"pw": "aHVudGVyMg=="}});
        let sealed = c.seal("Secret/default/db", s.clone()).unwrap();
        let text = sealed.to_string();
        assert!(!text.contains("aHVudGVyMg=="), "{text}");
        assert!(sealed.get("data").is_none());
        assert_eq!(sealed["metadata"], s["metadata"]);
        assert_eq!(c.open("Secret/default/db", sealed.clone()).unwrap(), s);
        // Bound to its key: moving the value to another Secret fails.
        let e = c.open("Secret/default/other", sealed.clone()).unwrap_err();
        assert!(e.to_string().contains("cannot decrypt"), "{e}");
        // Another key cannot open it.
        let other = SecretCipher::generate(&dir.path().join("k2")).unwrap();
        assert!(other.open("Secret/default/db", sealed).is_err());
        // Other kinds pass through.
        let cm = json!({"data": {"a": "b"}});
        assert_eq!(c.seal("ConfigMap/default/x", cm.clone()).unwrap(), cm);
        // Values written before encryption are read as they are.
        assert_eq!(c.open("Secret/default/db", s.clone()).unwrap(), s);
    }

    #[test]
    fn key_file_is_private_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pki/encryption.key");
        assert!(load_or_create(&path, KeySource::Existing).is_err());
        let e = load_or_create(&path, KeySource::Restore { has_sealed: true }).unwrap_err();
        assert!(e.to_string().contains("copy the encryption key"), "{e}");
        let c = load_or_create(&path, KeySource::New).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = load_or_create(&path, KeySource::Existing).unwrap();
        assert_eq!(again.key_bytes(), c.key_bytes());
        let other = SecretCipher::generate(&path).unwrap();
        assert!(other.save().is_err());
        assert!(!format!("{c:?}").contains(&B64.encode(c.key_bytes())));
    }
}
