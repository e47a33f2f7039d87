//! Shoal's files on disk: the modes of data directories and state files, and the one
//! way state is written (atomic and durable).
//!
//! It owns:
//! - [`write_atomic`]: write a temporary file in the same directory (created with the
//!   final mode, never readable by others in between), `fsync` it, `rename` it over the
//!   target, `fsync` the directory — after a power loss the file holds either the old
//!   or the new contents, never a mix or nothing;
//! - [`private_dir`]: create a data directory (and missing parents) with mode 0700 and
//!   tighten an existing one (directories made before this rule were 0755);
//! - [`set_umask`]: a container's process starts with Docker's 0022 whatever the
//!   daemon's umask is (a systemd `UMask=` must not change modes inside containers).
//!   The daemons keep their umask: image layers must keep the modes their tar headers
//!   give, so privacy comes from 0700 data directories and 0600 state files instead;
//! - [`exposed`]: the check behind "no file under the data directories is readable by
//!   other users": every entry that another user can reach (each ancestor searchable
//!   by others) and read, write or search.
//!
//! Rules: std and nix only; it must never depend on another Shoal crate, so that every
//! crate (runtime, net, store, agent, controller) can use it. It prints nothing.

#![warn(missing_docs)]

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Mode of a data directory: only its owner (root) enters it.
pub const DIR_MODE: u32 = 0o700;
/// Mode of a state file (JSON records, keys, configuration written by Shoal).
pub const FILE_MODE: u32 = 0o600;
/// Mode of a file that a container's processes read through a bind mount
/// (`/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`): readable by any user *inside*
/// the container, but it lives in a 0700 directory, so no user of the host reaches it.
pub const CONTAINER_READABLE_MODE: u32 = 0o644;
/// The umask a container's process starts with (Docker's and runc's default).
pub const CONTAINER_UMASK: u32 = 0o022;

/// Writes `data` to `path` atomically and durably with `mode`.
///
/// The temporary file is `.NAME.tmp.PID.N` in the same directory (so the rename
/// never crosses a file system), created exclusively with `mode` (never wider in
/// between), written, `fsync`ed, renamed over `path`, then the directory is `fsync`ed
/// so that the rename itself survives a power loss. On error the temporary file is
/// removed and `path` is unchanged.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = temp_name(dir, path)?;
    let result = (|| {
        write_temp(&tmp, data, mode)?;
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| io::Error::new(e.kind(), format!("write {}: {e}", path.display())))
}

/// Creates `path` with `data` and `mode`, atomically and durably, only if it does not
/// exist: the data is written and `fsync`ed to a temporary file which is then
/// hard-linked to `path` (which fails with [`io::ErrorKind::AlreadyExists`] if another
/// process made it first), and the directory is `fsync`ed. Never leaves a half-written
/// `path` (a key file that a crash left empty would stop the node from starting).
pub fn write_new_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = temp_name(dir, path)?;
    let result = (|| {
        write_temp(&tmp, data, mode)?;
        fs::hard_link(&tmp, path)?;
        sync_dir(dir)
    })();
    let _ = fs::remove_file(&tmp);
    result.map_err(|e| io::Error::new(e.kind(), format!("create {}: {e}", path.display())))
}

fn temp_name(dir: &Path, path: &Path) -> io::Result<PathBuf> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other(format!("{}: not a file path", path.display())))?;
    Ok(dir.join(format!(
        ".{}.tmp.{}.{}",
        name.to_string_lossy(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )))
}

fn write_temp(tmp: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(tmp)?;
    // The umask may have narrowed `mode`; an explicit chmod makes it exact.
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    f.write_all(data)?;
    f.sync_all()
}

/// `fsync`s a directory, so that entries created, renamed or removed in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and its missing parents with mode [`DIR_MODE`], and tightens `dir`
/// itself to [`DIR_MODE`] if it exists with a wider mode (its existing parents are
/// left alone: they may be shared, such as `/var/lib`).
pub fn private_dir(dir: &Path) -> io::Result<()> {
    dir_with_mode(dir, DIR_MODE)
}

/// [`private_dir`] with another mode (e.g. 0710 or 0755 for a directory a container
/// must search or read).
pub fn dir_with_mode(dir: &Path, mode: u32) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("create {}: {e}", dir.display())))?;
    let meta = fs::metadata(dir)?;
    if meta.mode() & 0o7777 != mode {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode))
            .map_err(|e| io::Error::new(e.kind(), format!("chmod {}: {e}", dir.display())))?;
    }
    Ok(())
}

/// Sets the process umask; returns the previous one.
pub fn set_umask(mask: u32) -> u32 {
    use nix::sys::stat::{Mode, umask};
    umask(Mode::from_bits_truncate(mask as _)).bits() as u32
}

/// One entry that another user of the host can reach and access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposed {
    /// The entry.
    pub path: PathBuf,
    /// Its permission bits (`st_mode & 0o7777`).
    pub mode: u32,
}

impl std::fmt::Display for Exposed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (mode {:04o})", self.path.display(), self.mode)
    }
}

/// Walks `root` (not following symbolic links) and returns every entry that a user other
/// than the owner and the group can reach and access: the entry has a bit in `0o007`
/// and `root` and each directory on the way has the others' search bit. An entry below
/// a 0700 directory is not reachable, whatever its own mode (so files that containers
/// make under their `upper/` directory keep their modes but are not exposed).
/// Symbolic links themselves are skipped (their mode means nothing). Entries that
/// vanish during the walk are skipped.
pub fn exposed(root: &Path) -> io::Result<Vec<Exposed>> {
    let mut out = Vec::new();
    let meta = fs::symlink_metadata(root)?;
    visit(root, &meta, true, &mut out)?;
    Ok(out)
}

fn visit(
    path: &Path,
    meta: &fs::Metadata,
    reachable: bool,
    out: &mut Vec<Exposed>,
) -> io::Result<()> {
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mode = meta.mode() & 0o7777;
    if reachable && mode & 0o007 != 0 {
        out.push(Exposed {
            path: path.to_path_buf(),
            mode,
        });
    }
    if !meta.is_dir() {
        return Ok(());
    }
    let below = reachable && mode & 0o001 != 0;
    let entries = match fs::read_dir(path) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    };
    for entry in entries {
        let entry = entry?;
        let p = entry.path();
        let m = match fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", p.display()))),
        };
        visit(&p, &m, below, out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn atomic_write_replaces_with_mode_and_leaves_no_temporary() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("state.json");
        write_atomic(&p, b"one", FILE_MODE).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert_eq!(mode(&p), 0o600);
        // An existing world-readable file is replaced by a private one.
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic(&p, b"two", FILE_MODE).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(mode(&p), 0o600);
        write_atomic(&p, b"three", CONTAINER_READABLE_MODE).unwrap();
        assert_eq!(mode(&p), 0o644);
        let names: Vec<_> = fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }

    #[test]
    fn atomic_write_failure_names_the_path_and_keeps_the_old_contents() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("missing-dir/state.json");
        let e = write_atomic(&p, b"x", FILE_MODE).unwrap_err();
        assert!(e.to_string().contains("missing-dir/state.json"), "{e}");
        // A directory in the way: the rename fails, the temporary is removed.
        let d = t.path().join("dir");
        fs::create_dir(&d).unwrap();
        fs::write(d.join("keep"), b"k").unwrap();
        assert!(write_atomic(&d, b"x", FILE_MODE).is_err());
        let names: Vec<_> = fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["dir".to_string()], "temporary left behind");
    }

    #[test]
    fn write_new_atomic_creates_once() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("wireguard.key");
        write_new_atomic(&p, b"first", FILE_MODE).unwrap();
        assert_eq!(mode(&p), 0o600);
        let e = write_new_atomic(&p, b"second", FILE_MODE).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
        assert!(e.to_string().contains("wireguard.key"), "{e}");
        assert_eq!(fs::read(&p).unwrap(), b"first");
        assert_eq!(
            fs::read_dir(t.path()).unwrap().count(),
            1,
            "temporary left behind"
        );
    }

    #[test]
    fn private_dir_creates_and_tightens() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b");
        private_dir(&d).unwrap();
        assert_eq!(mode(&d), 0o700);
        assert_eq!(mode(&t.path().join("a")), 0o700);
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&d).unwrap();
        assert_eq!(mode(&d), 0o700);
        dir_with_mode(&d, 0o710).unwrap();
        assert_eq!(mode(&d), 0o710);
    }

    #[test]
    fn exposed_finds_reachable_entries_only() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("data");
        private_dir(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o711)).unwrap();
        // Below a 0700 directory: not reachable, whatever its mode.
        let hidden = root.join("containers/c1/upper");
        fs::create_dir_all(&hidden).unwrap();
        fs::set_permissions(root.join("containers"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(hidden.join("setuid"), b"x").unwrap();
        fs::set_permissions(hidden.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
        write_atomic(&root.join("state.json"), b"{}", FILE_MODE).unwrap();
        assert_eq!(
            exposed(&root).unwrap(),
            vec![Exposed {
                path: root.clone(),
                mode: 0o711
            }]
        );
        // Positive control: a world-readable file in a searchable directory is found.
        fs::write(root.join("leak"), b"secret").unwrap();
        fs::set_permissions(root.join("leak"), fs::Permissions::from_mode(0o604)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
        let found = exposed(&root).unwrap();
        assert!(
            found.contains(&Exposed {
                path: root.join("leak"),
                mode: 0o604
            }),
            "{found:?}"
        );
        assert_eq!(found.len(), 2, "{found:?}");
        // Tightened root: nothing below is reachable any more.
        private_dir(&root).unwrap();
        assert_eq!(exposed(&root).unwrap(), vec![]);
    }

    #[test]
    fn umask_is_set_and_restored() {
        let before = set_umask(0o022);
        assert_eq!(set_umask(0o077), 0o022);
        assert_eq!(set_umask(before), 0o077);
    }
}
