//! The PKI directory of a controller or an agent (`DATA_DIR/pki`, 0700):
//!
//! | file      | what                                   | who            |
//! |-----------|----------------------------------------|----------------|
//! | `ca.crt`  | the cluster CA certificate             | everyone       |
//! | `ca.key`  | the CA key                             | controllers    |
//! | `tls.crt` | this process's certificate + the CA    | everyone       |
//! | `tls.key` | its key (made here, never sent)        | everyone       |
//!
//! Every file is 0600 and written atomically and durably (shoal-files).

use std::path::{Path, PathBuf};

use crate::PkiError;

/// The PKI directory.
#[derive(Debug, Clone)]
pub struct PkiDir {
    dir: PathBuf,
}

impl PkiDir {
    /// `data_dir/pki`.
    pub fn under(data_dir: &Path) -> PkiDir {
        PkiDir {
            dir: data_dir.join("pki"),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Path of one file.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Reads a file (`None` when missing).
    pub fn read(&self, name: &str) -> Result<Option<String>, PkiError> {
        let p = self.file(name);
        match std::fs::read_to_string(&p) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(PkiError::Io { path: p, source }),
        }
    }

    /// Writes a file (0600, atomic, durable), creating the directory (0700).
    pub fn write(&self, name: &str, data: &str) -> Result<(), PkiError> {
        shoal_files::private_dir(&self.dir).map_err(|source| PkiError::Io {
            path: self.dir.clone(),
            source,
        })?;
        let p = self.file(name);
        shoal_files::write_atomic(&p, data.as_bytes(), shoal_files::FILE_MODE)
            .map_err(|source| PkiError::Io { path: p, source })
    }

    /// True when this process already has its certificate.
    pub fn has_identity(&self) -> bool {
        self.file("tls.crt").exists()
            && self.file("tls.key").exists()
            && self.file("ca.crt").exists()
    }
}
