//! The node's WireGuard key pair: made like `wg genkey`, kept in a 0600 key
//! file, public keys parsed from base64 (as `wg` prints them) or hex.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use boringtun::x25519::{PublicKey, StaticSecret};
use rand::RngCore as _;

use super::WgError;

/// A node's WireGuard key pair (Curve25519). `Debug` shows only the public key.
#[derive(Clone)]
pub struct KeyPair {
    secret: StaticSecret,
    public: PublicKey,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public_base64())
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A fresh random key pair (clamped like `wg genkey`).
    pub fn generate() -> KeyPair {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        // Clamp as `wg genkey` does, so the stored file equals what wg would write.
        bytes[0] &= 248;
        bytes[31] &= 127;
        bytes[31] |= 64;
        KeyPair::from_secret(bytes)
    }

    fn from_secret(bytes: [u8; 32]) -> KeyPair {
        let secret = StaticSecret::from(bytes);
        let public = PublicKey::from(&secret);
        KeyPair { secret, public }
    }

    /// Loads the private key from `path` (base64, as `wg genkey` writes), or
    /// creates a new one there (mode 0600, parent directories created).
    /// A key file readable by others is tightened to 0600.
    pub fn load_or_create(path: &Path) -> Result<KeyPair, WgError> {
        let key_err = |source| WgError::KeyFile {
            path: path.to_path_buf(),
            source,
        };
        match fs::read_to_string(path) {
            Ok(text) => return KeyPair::load_existing(path, &text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(key_err(e)),
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(key_err)?;
        }
        let pair = KeyPair::generate();
        let line = format!("{}\n", BASE64.encode(pair.secret.to_bytes()));
        // 0600, written in full before it appears (a crash never leaves an empty key).
        match shoal_files::write_new_atomic(path, line.as_bytes(), shoal_files::FILE_MODE) {
            Ok(()) => Ok(pair),
            // Someone created it between our read and our create: use theirs.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let text = fs::read_to_string(path).map_err(key_err)?;
                KeyPair::load_existing(path, &text)
            }
            Err(e) => Err(key_err(e)),
        }
    }

    fn load_existing(path: &Path, text: &str) -> Result<KeyPair, WgError> {
        let bytes = decode_key(text.trim()).ok_or_else(|| WgError::KeyFormat {
            path: path.to_path_buf(),
        })?;
        let meta = fs::metadata(path).map_err(|source| WgError::KeyFile {
            path: path.to_path_buf(),
            source,
        })?;
        if meta.permissions().mode() & 0o077 != 0 {
            fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(|source| {
                WgError::KeyFile {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
        }
        Ok(KeyPair::from_secret(bytes))
    }

    /// The public key as raw bytes.
    pub fn public_key(&self) -> [u8; 32] {
        self.public.to_bytes()
    }

    /// The public key in base64, exactly as `wg pubkey` / `wg show` print it.
    pub fn public_base64(&self) -> String {
        BASE64.encode(self.public.as_bytes())
    }

    /// The private key as raw bytes (for the engines that take it so).
    pub(super) fn secret_bytes(&self) -> [u8; 32] {
        self.secret.to_bytes()
    }

    /// The private key in hex, as the UAPI protocol carries it.
    pub(super) fn private_hex(&self) -> String {
        hex::encode(self.secret.to_bytes())
    }

    #[cfg(test)]
    fn private_base64(&self) -> String {
        BASE64.encode(self.secret.to_bytes())
    }
}

/// A 32-byte key given as hex (64 characters) or base64 (44).
pub(super) fn decode_key(s: &str) -> Option<[u8; 32]> {
    let bytes = match s.len() {
        64 => hex::decode(s).ok()?,
        44 => BASE64.decode(s).ok()?,
        _ => return None,
    };
    bytes.try_into().ok()
}

/// Parses a WireGuard public key given as base64 (as `wg` prints) or hex.
pub fn parse_public_key(s: &str) -> Result<[u8; 32], WgError> {
    decode_key(s.trim()).ok_or_else(|| WgError::PublicKey { key: s.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    #[test]
    fn key_file_is_created_0600_and_reloaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/wg.key");
        let a = KeyPair::load_or_create(&path).expect("create");
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = KeyPair::load_or_create(&path).expect("load");
        assert_eq!(a.public_key(), b.public_key());
        assert_eq!(a.public_base64().len(), 44);
        let text = fs::read_to_string(&path).expect("read");
        assert_eq!(text.trim().len(), 44);
        assert!(
            !format!("{a:?}").contains(text.trim()),
            "Debug leaks the private key"
        );
    }

    #[test]
    fn loose_key_file_is_tightened_and_garbage_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wg.key");
        let k = KeyPair::generate();
        fs::write(&path, format!("{}\n", k.private_base64())).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let loaded = KeyPair::load_or_create(&path).expect("load");
        assert_eq!(loaded.public_key(), k.public_key());
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        fs::write(&path, "not a key\n").expect("write");
        let err = KeyPair::load_or_create(&path).expect_err("garbage");
        assert!(err.to_string().contains("wg.key"), "{err}");
    }

    #[test]
    fn public_key_matches_wg_pubkey() {
        let k = KeyPair::generate();
        let mut child = Command::new("wg")
            .arg("pubkey")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("wg (wireguard-tools) installed");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{}\n", k.private_base64()).as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("wg pubkey");
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            k.public_base64()
        );
    }

    #[test]
    fn public_keys_parse_from_base64_and_hex() {
        let k = KeyPair::generate();
        let raw = k.public_key();
        assert_eq!(parse_public_key(&k.public_base64()).expect("b64"), raw);
        assert_eq!(parse_public_key(&hex::encode(raw)).expect("hex"), raw);
        assert_eq!(
            parse_public_key(&format!(" {}\n", k.public_base64())).expect("trim"),
            raw
        );
        for bad in ["", "abc", &"z".repeat(64), &"!".repeat(44)] {
            let err = parse_public_key(bad).expect_err("bad key");
            assert!(matches!(err, WgError::PublicKey { .. }));
        }
    }
}
