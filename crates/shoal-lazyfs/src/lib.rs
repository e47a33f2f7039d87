//! A disk with a volatile write cache, for power-loss tests: `shoal-lazyfs BACKING MOUNT`
//! mounts a FUSE passthrough of the directory BACKING at MOUNT (in the foreground) that
//! keeps file *data* in memory until it is fsynced, like LazyFS does.
//!
//! Semantics (what a "power cut" loses):
//! - `write` and a truncate (`setattr` of the size, `open` with `O_TRUNC`) are held in
//!   memory per inode; reads and `stat` see them (the writer sees its own writes).
//!   `close` does not sync.
//! - `fsync`/`fdatasync` of a file applies its pending writes and truncates to the backing
//!   file and syncs that. A file opened with `O_SYNC`/`O_DSYNC` syncs on every write.
//! - Metadata goes to BACKING at once and survives a cut: create, mkdir, mknod, unlink,
//!   rmdir, rename, link, symlink, chmod, chown, utimes (LazyFS's default: only unsynced
//!   data is lost). So `fsync(dir)` has nothing to do, and a renamed file keeps only the
//!   data it had fsynced.
//! - SIGUSR1 cuts the power: every pending write and truncate of every file is dropped
//!   (one line on stderr says how many bytes of how many files), and the file system keeps
//!   serving from BACKING. SIGTERM or SIGINT unmounts and exits **without** flushing what
//!   is pending: stopping is a power cut too.
//! - The kernel caches nothing across a cut: opens answer `FOPEN_DIRECT_IO` (no page
//!   cache), entries and attributes have a TTL of zero, no writeback cache is asked for.
//!
//! As root it mounts with mount(2) (fuser's own path; no `fusermount` binary needed),
//! `allow_other` and `default_permissions`, so every process, root or not, uses it with
//! the backing files' modes.
//!
//! It owns the file system ([`LazyFs`]), its pure model of one file's unsynced data
//! ([`Pending`]) and the serving loop with its signals ([`serve`]). Rules: it depends on
//! no other Shoal crate (tests start it as a binary); nothing of it runs in Shoal itself.

#![warn(missing_docs)]

mod fs;
mod pending;

use std::path::{Path, PathBuf};

pub use fs::{Cache, Dropped, LazyFs};
pub use pending::Pending;

use nix::sys::signal::{SigSet, Signal};

/// Why the file system could not be served.
#[derive(Debug, thiserror::Error)]
pub enum LazyFsError {
    /// The backing directory is missing or no directory.
    #[error("backing directory {path}: {reason}")]
    Backing {
        /// The path given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The mount point is missing or no directory.
    #[error("mount point {path}: {reason}")]
    MountPoint {
        /// The path given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// mount(2) or the FUSE session failed.
    #[error("{what} {path}: {source}")]
    Fuse {
        /// `mounting`, `serving`.
        what: &'static str,
        /// The mount point.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Signals could not be set up.
    #[error("blocking SIGUSR1, SIGTERM and SIGINT: {0}")]
    Signals(nix::Error),
}

/// `path` as an existing directory (canonical), or why not.
fn directory(path: &Path) -> Result<PathBuf, String> {
    let p = path.canonicalize().map_err(|e| e.to_string())?;
    if p.is_dir() {
        Ok(p)
    } else {
        Err("not a directory".to_string())
    }
}

/// Mounts the file system over `backing` at `mount` and serves it until SIGTERM or
/// SIGINT (or an unmount); SIGUSR1 cuts the power. Call it before this process starts
/// threads of its own: it blocks the three signals and waits for them on a thread.
pub fn serve(backing: &Path, mount: &Path) -> Result<(), LazyFsError> {
    let backing = directory(backing).map_err(|reason| LazyFsError::Backing {
        path: backing.to_path_buf(),
        reason,
    })?;
    let mount_dir = directory(mount).map_err(|reason| LazyFsError::MountPoint {
        path: mount.to_path_buf(),
        reason,
    })?;
    // Modes of new files and directories come from the caller (the kernel has applied
    // its umask), not from this process's umask.
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let mut signals = SigSet::empty();
    for s in [Signal::SIGUSR1, Signal::SIGTERM, Signal::SIGINT] {
        signals.add(s);
    }
    signals.thread_block().map_err(LazyFsError::Signals)?;

    let fs = LazyFs::new(&backing).map_err(|e| LazyFsError::Backing {
        path: backing.clone(),
        reason: e.to_string(),
    })?;
    let cache = fs.cache();
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName(format!("shoal-lazyfs:{}", backing.display())),
        fuser::MountOption::Subtype("shoal-lazyfs".to_string()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::RW,
    ];
    config.acl = fuser::SessionACL::All;
    let mut session =
        fuser::Session::new(fs, &mount_dir, &config).map_err(|source| LazyFsError::Fuse {
            what: "mounting",
            path: mount_dir.clone(),
            source,
        })?;
    eprintln!(
        "shoal-lazyfs: serving {} at {} (SIGUSR1: power cut; SIGTERM: unmount, unsynced data dropped)",
        backing.display(),
        mount_dir.display()
    );
    let mut unmounter = session.unmount_callable();
    let shown = mount_dir.clone();
    std::thread::spawn(move || {
        loop {
            match signals.wait() {
                Ok(Signal::SIGUSR1) => {
                    let d = cache.cut();
                    eprintln!(
                        "shoal-lazyfs: power cut: dropped {} unsynced bytes of {} files",
                        d.bytes, d.files
                    );
                }
                Ok(s) => {
                    let d = cache.cut();
                    eprintln!(
                        "shoal-lazyfs: {s}: unmounting {}; dropped {} unsynced bytes of {} files (not flushed: a power cut)",
                        shown.display(),
                        d.bytes,
                        d.files
                    );
                    if let Err(e) = unmounter.unmount() {
                        eprintln!("shoal-lazyfs: unmounting {}: {e}", shown.display());
                    }
                    return;
                }
                Err(e) => {
                    eprintln!("shoal-lazyfs: waiting for signals: {e}");
                    return;
                }
            }
        }
    });
    session.run().map_err(|source| LazyFsError::Fuse {
        what: "serving",
        path: mount_dir,
        source,
    })
}
