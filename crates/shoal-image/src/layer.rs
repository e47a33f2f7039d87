//! Unpacking one layer tarball into a directory usable as an overlayfs lower
//! directory. Every tarball is treated as hostile:
//!
//! - entry paths are normalised and must stay inside the layer (no `..`, no
//!   absolute paths, at most [`Limits::max_path_len`] bytes);
//! - every file operation is relative to a directory fd of the layer root and
//!   never follows a link: parents are opened with `openat2(RESOLVE_BENEATH |
//!   RESOLVE_NO_SYMLINKS)` where the kernel has it, otherwise one component at
//!   a time with `O_NOFOLLOW | O_DIRECTORY`; a symlink on the way is an error
//!   naming the layer and the entry, never a way out;
//! - modes, owners and times are set on the open fd (`fchown`, `fchmod`,
//!   `futimens`), never through a path; directory modes are applied at the end
//!   by re-opening each directory beneath the root without following links;
//! - an entry replaces what an earlier entry of the same layer put at its path
//!   (the OCI layer rule): a directory entry over a directory keeps it, any
//!   other replacement removes the old entry first (a directory tree is
//!   removed through fds, not following links);
//! - device nodes and fifos are dropped with a warning (whiteouts are names,
//!   `.wh.NAME`, and become overlayfs 0/0 character devices);
//! - the image's [`Budget`] counts the decompressed stream as it is read, the
//!   entries and each file's declared size, so bombs stop at the limit.
//!
//! OCI whiteouts become overlayfs whiteouts (a 0/0 character device for
//! `.wh.NAME`, the `trusted.overlay.opaque=y` xattr for `.wh..wh..opq`).

use std::cell::Cell;
use std::ffi::CString;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU8, Ordering};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags};

use crate::ImageError;
use crate::limits::{Budget, FLAG_MAX_ENTRIES, FLAG_MAX_UNPACKED_BYTES, Limits};

/// Prefix of a whiteout entry name.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the opaque-directory marker entry.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// What a (sanitized) layer entry path means for the union filesystem.
#[derive(Debug, PartialEq, Eq)]
pub enum EntryMeaning {
    /// An ordinary file, directory or link at this path.
    Normal(PathBuf),
    /// Deletes the path of the same name from lower layers.
    Whiteout(PathBuf),
    /// Hides the lower layers' contents of this directory.
    Opaque(PathBuf),
}

/// Normalises a tar entry path to a relative path inside the layer.
///
/// `./` prefixes and `.` components are dropped. Absolute paths and `..`
/// components are rejected. Returns `None` for the layer root itself.
pub fn sanitize_entry_path(raw: &Path) -> Result<Option<PathBuf>, String> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => return Err("path contains '..'".to_string()),
            Component::RootDir | Component::Prefix(_) => {
                return Err("absolute path".to_string());
            }
        }
    }
    Ok(if out.as_os_str().is_empty() {
        None
    } else {
        Some(out)
    })
}

/// Tells whether a sanitized entry path is a whiteout, an opaque marker or
/// an ordinary entry.
pub fn classify(path: &Path) -> Result<EntryMeaning, String> {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Ok(EntryMeaning::Normal(path.to_path_buf()));
    };
    let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
    if name == OPAQUE_MARKER {
        return Ok(EntryMeaning::Opaque(parent));
    }
    if let Some(target) = name.strip_prefix(WHITEOUT_PREFIX) {
        if target.is_empty()
            || target == "."
            || target == ".."
            || target.starts_with(WHITEOUT_PREFIX)
        {
            return Err(format!("invalid whiteout name {name:?}"));
        }
        return Ok(EntryMeaning::Whiteout(parent.join(target)));
    }
    Ok(EntryMeaning::Normal(path.to_path_buf()))
}

/// Checks that a symlink at `link` (relative to the layer root) pointing to
/// `target` stays inside the root. Absolute targets are interpreted from the
/// container's root, as the kernel does after `pivot_root`, and are accepted;
/// relative targets must not climb above the root.
pub fn check_symlink_target(link: &Path, target: &Path) -> Result<(), String> {
    if target.as_os_str().is_empty() {
        return Err("empty symlink target".to_string());
    }
    if target.is_absolute() {
        return Ok(());
    }
    let mut depth: i64 = link
        .parent()
        .map(|p| p.components().count() as i64)
        .unwrap_or(0);
    for c in target.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!(
                        "symlink target {} points outside the layer",
                        target.display()
                    ));
                }
            }
            Component::RootDir | Component::Prefix(_) => {}
        }
    }
    Ok(())
}

/// Counts the bytes read from the decompressed stream and fails once the
/// image's budget is spent, so a decompression bomb stops at the limit.
struct CappedReader<R> {
    inner: R,
    read: Rc<Cell<u64>>,
    cap: u64,
    over: Rc<Cell<bool>>,
}

impl<R: Read> Read for CappedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let total = self.read.get() + n as u64;
        self.read.set(total);
        if total > self.cap {
            self.over.set(true);
            return Err(io::Error::other("unpacked byte limit reached"));
        }
        Ok(n)
    }
}

/// Unpacks the (uncompressed) tar stream `reader` into the empty directory
/// `dest` with the default [`Limits`]. `label` names the layer in errors.
pub fn unpack_layer<R: Read>(reader: R, dest: &Path, label: &str) -> Result<(), ImageError> {
    unpack_layer_with(reader, dest, label, &mut Budget::new(Limits::default()))
}

/// Unpacks the (uncompressed) tar stream `reader` into the empty directory
/// `dest`, charging `budget` (shared by all layers of one image). The rest of
/// the stream after the tar's end is read too (through the budget), so that
/// a caller hashing the stream does not inflate a bomb hidden there.
pub fn unpack_layer_with<R: Read>(
    reader: R,
    dest: &Path,
    label: &str,
    budget: &mut Budget,
) -> Result<(), ImageError> {
    let read = Rc::new(Cell::new(0u64));
    let over = Rc::new(Cell::new(false));
    let cap = budget
        .limits
        .max_unpacked_bytes
        .saturating_sub(budget.bytes);
    let capped = CappedReader {
        inner: reader,
        read: read.clone(),
        cap,
        over: over.clone(),
    };
    let mut archive = tar::Archive::new(capped);
    let mut u = Unpacker::new(dest, label, budget.limits)?;
    let base_bytes = budget.bytes;
    let mut last_entry = String::from("(start of layer)");
    let too_big = |entry: &str| ImageError::LimitExceeded {
        layer: label.to_string(),
        entry: entry.to_string(),
        what: "unpacked bytes".into(),
        limit: budget.limits.max_unpacked_bytes,
        flag: FLAG_MAX_UNPACKED_BYTES,
    };
    let entries = archive.entries().map_err(|e| io_err(dest, e))?;
    for entry in entries {
        let mut entry = match entry {
            Ok(e) => e,
            Err(_) if over.get() => return Err(too_big(&last_entry)),
            Err(e) => {
                return Err(ImageError::Format {
                    archive: label.to_string(),
                    message: format!("corrupt tar stream after entry {last_entry:?}: {e}"),
                });
            }
        };
        let raw = entry.path().map_err(|e| io_err(dest, e))?.into_owned();
        last_entry = raw.display().to_string();
        budget.entries += 1;
        if budget.entries > budget.limits.max_entries {
            return Err(ImageError::LimitExceeded {
                layer: label.to_string(),
                entry: last_entry,
                what: "entries".into(),
                limit: budget.limits.max_entries,
                flag: FLAG_MAX_ENTRIES,
            });
        }
        let header = entry.header().clone();
        let declared = match header.as_gnu() {
            Some(g) if header.entry_type() == tar::EntryType::GNUSparse => {
                g.real_size().unwrap_or(u64::MAX)
            }
            _ => header.entry_size().unwrap_or(u64::MAX),
        };
        if base_bytes
            .saturating_add(read.get())
            .saturating_add(declared)
            > budget.limits.max_unpacked_bytes
        {
            return Err(too_big(&last_entry));
        }
        match u.entry(&mut entry, &raw, &header) {
            Ok(()) => {}
            Err(_) if over.get() => return Err(too_big(&last_entry)),
            Err(e) => return Err(e),
        }
    }
    let mut rest = archive.into_inner();
    if let Err(e) = io::copy(&mut rest, &mut io::sink()) {
        if over.get() {
            return Err(too_big(&last_entry));
        }
        return Err(ImageError::Format {
            archive: label.to_string(),
            message: format!("reading after the end of the tar: {e}"),
        });
    }
    u.finish()?;
    budget.bytes = base_bytes + read.get();
    Ok(())
}

/// Whether `openat2` works here: 0 unknown, 1 yes, 2 no (ENOSYS, or refused
/// by a seccomp filter).
static OPENAT2: AtomicU8 = AtomicU8::new(0);

/// Opens the directory `rel` (relative, normalised) beneath `root`, never
/// following a symlink, optionally creating missing directories (0755, root
/// owned until their own entry comes). `Errno::ELOOP`/`ENOTDIR` mean a
/// component is a symlink or not a directory.
fn open_dir_beneath(root: &OwnedFd, rel: &Path, create: bool) -> Result<OwnedFd, Errno> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    if rel.as_os_str().is_empty() {
        return nix::fcntl::openat(root, ".", flags, Mode::empty());
    }
    if OPENAT2.load(Ordering::Relaxed) != 2 {
        let how = OpenHow::new()
            .flags(flags)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
        match nix::fcntl::openat2(root, rel, how) {
            Ok(fd) => {
                OPENAT2.store(1, Ordering::Relaxed);
                return Ok(fd);
            }
            Err(Errno::ENOSYS) | Err(Errno::EPERM) if OPENAT2.load(Ordering::Relaxed) == 0 => {
                OPENAT2.store(2, Ordering::Relaxed);
            }
            // Create below, one component at a time; EAGAIN (a concurrent
            // rename under the root) falls back to the walk as well.
            Err(Errno::ENOENT) if create => {}
            Err(Errno::EAGAIN) => {}
            Err(e) => return Err(e),
        }
    }
    walk_beneath(root, rel, create)
}

/// The `O_NOFOLLOW` walk for kernels without `openat2` (before 5.6): one
/// component at a time, each opened relative to the fd of its parent.
fn walk_beneath(root: &OwnedFd, rel: &Path, create: bool) -> Result<OwnedFd, Errno> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut cur = nix::fcntl::openat(root, ".", flags, Mode::empty())?;
    for c in rel.components() {
        let Component::Normal(name) = c else {
            return Err(Errno::EINVAL);
        };
        cur = match nix::fcntl::openat(&cur, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if create => {
                nix::sys::stat::mkdirat(&cur, name, Mode::from_bits_truncate(0o755))?;
                nix::fcntl::openat(&cur, name, flags, Mode::empty())?
            }
            Err(e) => return Err(e),
        };
    }
    Ok(cur)
}

/// Removes `name` in `dir` whatever it is; a directory is emptied through
/// fds first (never following links).
fn remove_at(dir: &OwnedFd, name: &std::ffi::OsStr) -> Result<(), Errno> {
    match nix::unistd::unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(Errno::EISDIR) => {
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let sub = nix::fcntl::openat(dir, name, flags, Mode::empty())?;
            let names: Vec<std::ffi::OsString> = {
                let d = nix::dir::Dir::from_fd(sub.try_clone().map_err(|_| Errno::EBADF)?)?;
                let mut names = Vec::new();
                for e in d {
                    let e = e?;
                    let n = e.file_name().to_bytes();
                    if n != b"." && n != b".." {
                        names.push(std::ffi::OsStr::from_bytes(n).to_os_string());
                    }
                }
                names
            };
            for n in names {
                remove_at(&sub, &n)?;
            }
            nix::unistd::unlinkat(dir, name, UnlinkatFlags::RemoveDir)
        }
        Err(e) => Err(e),
    }
}

fn mtime_of(header: &tar::Header) -> TimeSpec {
    TimeSpec::new(header.mtime().unwrap_or(0) as i64, 0)
}

/// One layer being unpacked: the root fd and the directories whose modes
/// are applied at the end.
struct Unpacker<'a> {
    root: OwnedFd,
    dest: &'a Path,
    label: &'a str,
    limits: Limits,
    is_root: bool,
    /// (path, mode, mtime) of directory entries, in archive order.
    dirs: Vec<(PathBuf, u32, TimeSpec)>,
    dropped: usize,
}

impl<'a> Unpacker<'a> {
    fn new(dest: &'a Path, label: &'a str, limits: Limits) -> Result<Self, ImageError> {
        let root = nix::fcntl::open(
            dest,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err(dest, e.into()))?;
        Ok(Self {
            root,
            dest,
            label,
            limits,
            is_root: nix::unistd::geteuid().is_root(),
            dirs: Vec::new(),
            dropped: 0,
        })
    }

    fn reject(&self, raw: &Path, reason: impl Into<String>) -> ImageError {
        ImageError::UnsafeEntry {
            layer: self.label.to_string(),
            entry: raw.display().to_string(),
            reason: reason.into(),
        }
    }

    fn fail(&self, raw: &Path, what: &str, e: Errno) -> ImageError {
        self.reject(raw, format!("{what}: {}", io::Error::from(e)))
    }

    /// The parent directory of `rel`, created as needed; a symlink or a
    /// non-directory on the way is refused.
    fn parent(&self, raw: &Path, rel: &Path) -> Result<OwnedFd, ImageError> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        open_dir_beneath(&self.root, parent, true).map_err(|e| match e {
            Errno::ELOOP | Errno::EXDEV | Errno::ENOTDIR => self.reject(
                raw,
                format!(
                    "a parent of the entry ({}) is a symlink or not a directory: \
                     writing through it could escape the layer",
                    parent.display()
                ),
            ),
            e => self.fail(raw, "opening the parent directory", e),
        })
    }

    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        raw: &Path,
        header: &tar::Header,
    ) -> Result<(), ImageError> {
        if raw.as_os_str().len() > self.limits.max_path_len {
            return Err(self.reject(
                raw,
                format!(
                    "path is {} bytes, over the limit of {}",
                    raw.as_os_str().len(),
                    self.limits.max_path_len
                ),
            ));
        }
        let Some(rel) = sanitize_entry_path(raw).map_err(|r| self.reject(raw, r))? else {
            return Ok(());
        };
        let etype = header.entry_type();
        if matches!(
            etype,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
        ) {
            return Ok(());
        }
        let name = rel.file_name().unwrap_or_default().to_os_string();
        match classify(&rel).map_err(|r| self.reject(raw, r))? {
            EntryMeaning::Opaque(dir) => {
                let fd = open_dir_beneath(&self.root, &dir, true)
                    .map_err(|e| self.fail(raw, "opening the opaque directory", e))?;
                if self.is_root {
                    fset_xattr(&fd, "trusted.overlay.opaque", b"y")
                        .map_err(|e| self.reject(raw, format!("setting the opaque xattr: {e}")))?;
                }
                return Ok(());
            }
            EntryMeaning::Whiteout(target) => {
                let parent = self.parent(raw, &target)?;
                let tname = target.file_name().unwrap_or_default();
                remove_at(&parent, tname).map_err(|e| self.fail(raw, "removing", e))?;
                nix::sys::stat::mknodat(&parent, tname, SFlag::S_IFCHR, Mode::empty(), 0)
                    .map_err(|e| self.fail(raw, "making the whiteout", e))?;
                return Ok(());
            }
            EntryMeaning::Normal(_) => {}
        }
        let parent = self.parent(raw, &rel)?;
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let uid = header.uid().unwrap_or(0) as u32;
        let gid = header.gid().unwrap_or(0) as u32;
        let mtime = mtime_of(header);
        let owner = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
        match etype {
            tar::EntryType::Directory => {
                match nix::sys::stat::fstatat(
                    &parent,
                    name.as_os_str(),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                ) {
                    Ok(st)
                        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
                            == SFlag::S_IFDIR => {}
                    Ok(_) => {
                        remove_at(&parent, &name).map_err(|e| self.fail(raw, "replacing", e))?;
                        nix::sys::stat::mkdirat(
                            &parent,
                            name.as_os_str(),
                            Mode::from_bits_truncate(0o700),
                        )
                        .map_err(|e| self.fail(raw, "mkdir", e))?;
                    }
                    Err(_) => nix::sys::stat::mkdirat(
                        &parent,
                        name.as_os_str(),
                        Mode::from_bits_truncate(0o700),
                    )
                    .map_err(|e| self.fail(raw, "mkdir", e))?,
                }
                if self.is_root {
                    let fd = open_dir_beneath(&parent, Path::new(&name), false)
                        .map_err(|e| self.fail(raw, "opening the directory", e))?;
                    nix::unistd::fchown(&fd, owner.0, owner.1)
                        .map_err(|e| self.fail(raw, "fchown", e))?;
                }
                self.dirs.push((rel.clone(), mode, mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                remove_at(&parent, &name).map_err(|e| self.fail(raw, "replacing", e))?;
                let fd = nix::fcntl::openat(
                    &parent,
                    name.as_os_str(),
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|e| self.fail(raw, "creating", e))?;
                let mut f = std::fs::File::from(fd);
                io::copy(entry, &mut f).map_err(|e| self.reject(raw, format!("writing: {e}")))?;
                if self.is_root {
                    nix::unistd::fchown(f.as_fd(), owner.0, owner.1)
                        .map_err(|e| self.fail(raw, "fchown", e))?;
                }
                // After fchown, which clears set-id bits.
                nix::sys::stat::fchmod(f.as_fd(), Mode::from_bits_truncate(mode))
                    .map_err(|e| self.fail(raw, "fchmod", e))?;
                nix::sys::stat::futimens(f.as_fd(), &mtime, &mtime)
                    .map_err(|e| self.fail(raw, "futimens", e))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| self.reject(raw, format!("symlink target: {e}")))?
                    .ok_or_else(|| self.reject(raw, "symlink without target"))?
                    .into_owned();
                check_symlink_target(&rel, &target).map_err(|r| self.reject(raw, r))?;
                remove_at(&parent, &name).map_err(|e| self.fail(raw, "replacing", e))?;
                nix::unistd::symlinkat(&target, &parent, name.as_os_str())
                    .map_err(|e| self.fail(raw, "symlink", e))?;
                // A symlink has no fd to change; the *at calls with
                // AT_SYMLINK_NOFOLLOW change the link itself, relative to the
                // parent's fd.
                if self.is_root {
                    nix::unistd::fchownat(
                        &parent,
                        name.as_os_str(),
                        owner.0,
                        owner.1,
                        AtFlags::AT_SYMLINK_NOFOLLOW,
                    )
                    .map_err(|e| self.fail(raw, "lchown", e))?;
                }
                nix::sys::stat::utimensat(
                    &parent,
                    name.as_os_str(),
                    &mtime,
                    &mtime,
                    nix::sys::stat::UtimensatFlags::NoFollowSymlink,
                )
                .map_err(|e| self.fail(raw, "utimensat", e))?;
            }
            tar::EntryType::Link => {
                let target_raw = entry
                    .link_name()
                    .map_err(|e| self.reject(raw, format!("hard link target: {e}")))?
                    .ok_or_else(|| self.reject(raw, "hard link without target"))?
                    .into_owned();
                let target = sanitize_entry_path(&target_raw)
                    .map_err(|r| self.reject(raw, format!("hard link target: {r}")))?
                    .ok_or_else(|| self.reject(raw, "hard link to the layer root"))?;
                let tparent_rel = target.parent().unwrap_or(Path::new(""));
                let tparent = open_dir_beneath(&self.root, tparent_rel, false).map_err(|_| {
                    self.reject(
                        raw,
                        format!(
                            "hard link target parent {} is not a directory of the layer",
                            tparent_rel.display()
                        ),
                    )
                })?;
                let tname = target.file_name().unwrap_or_default();
                let st = nix::sys::stat::fstatat(&tparent, tname, AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map_err(|_| {
                        self.reject(
                            raw,
                            format!(
                                "hard link target {} does not exist in the layer",
                                target.display()
                            ),
                        )
                    })?;
                let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
                if kind != SFlag::S_IFREG && kind != SFlag::S_IFLNK {
                    return Err(
                        self.reject(raw, "hard link to something other than a file or symlink")
                    );
                }
                if target == rel {
                    return Ok(());
                }
                remove_at(&parent, &name).map_err(|e| self.fail(raw, "replacing", e))?;
                // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink.
                nix::unistd::linkat(&tparent, tname, &parent, name.as_os_str(), AtFlags::empty())
                    .map_err(|e| self.fail(raw, "link", e))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                self.dropped += 1;
                tracing::warn!(
                    layer = self.label,
                    entry = %raw.display(),
                    kind = ?etype,
                    "device node or fifo in an image layer dropped"
                );
            }
            other => {
                return Err(self.reject(raw, format!("unsupported entry type {other:?}")));
            }
        }
        Ok(())
    }

    /// Applies directory modes and times (the last entry of a directory
    /// wins), children before parents, through
    /// fds opened beneath the root without following links (a directory that
    /// a later entry replaced is skipped).
    fn finish(self) -> Result<(), ImageError> {
        let mut done = std::collections::HashSet::new();
        for (rel, mode, mtime) in self.dirs.iter().rev() {
            if !done.insert(rel) {
                continue; // a later entry for the same directory wins
            }
            let fd = match open_dir_beneath(&self.root, rel, false) {
                Ok(fd) => fd,
                Err(Errno::ENOENT | Errno::ELOOP | Errno::ENOTDIR | Errno::EXDEV) => continue,
                Err(e) => return Err(io_err(&self.dest.join(rel), e.into())),
            };
            nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(*mode))
                .map_err(|e| io_err(&self.dest.join(rel), e.into()))?;
            nix::sys::stat::futimens(&fd, mtime, mtime)
                .map_err(|e| io_err(&self.dest.join(rel), e.into()))?;
        }
        Ok(())
    }
}

fn io_err(path: &Path, source: io::Error) -> ImageError {
    ImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn fset_xattr(fd: &OwnedFd, name: &str, value: &[u8]) -> io::Result<()> {
    let n = CString::new(name).map_err(|_| io::Error::other("xattr name contains NUL"))?;
    // SAFETY: the fd is open for the duration of the call; the name is
    // NUL-terminated and the value pointer is valid for its length.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn sanitizes_paths() {
        assert_eq!(
            sanitize_entry_path(Path::new("./bin/sh")).unwrap(),
            Some(PathBuf::from("bin/sh"))
        );
        assert_eq!(sanitize_entry_path(Path::new("./")).unwrap(), None);
        assert!(sanitize_entry_path(Path::new("../etc/passwd")).is_err());
        assert!(sanitize_entry_path(Path::new("a/../../b")).is_err());
        assert!(sanitize_entry_path(Path::new("/etc/passwd")).is_err());
    }

    #[test]
    fn classifies_whiteouts() {
        assert_eq!(
            classify(Path::new("etc/.wh.passwd")).unwrap(),
            EntryMeaning::Whiteout("etc/passwd".into())
        );
        assert_eq!(
            classify(Path::new("var/.wh..wh..opq")).unwrap(),
            EntryMeaning::Opaque("var".into())
        );
        assert_eq!(
            classify(Path::new(".wh.top")).unwrap(),
            EntryMeaning::Whiteout("top".into())
        );
        assert_eq!(
            classify(Path::new("bin/sh")).unwrap(),
            EntryMeaning::Normal("bin/sh".into())
        );
        assert!(classify(Path::new("x/.wh...")).is_err());
    }

    #[test]
    fn symlink_targets() {
        assert!(check_symlink_target(Path::new("bin/sh"), Path::new("busybox")).is_ok());
        assert!(check_symlink_target(Path::new("bin/sh"), Path::new("/bin/busybox")).is_ok());
        assert!(check_symlink_target(Path::new("usr/lib/x"), Path::new("../../lib/y")).is_ok());
        assert!(check_symlink_target(Path::new("bin/evil"), Path::new("../../etc")).is_err());
        assert!(check_symlink_target(Path::new("evil"), Path::new("..")).is_err());
    }

    fn tar_with(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // set_path refuses '..'; write the raw name to build hostile archives.
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    fn link(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, path: &str, target: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o777);
        h.set_entry_type(kind);
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        let ln = &mut h.as_old_mut().linkname;
        ln[..target.len()].copy_from_slice(target.as_bytes());
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
    }

    #[test]
    fn both_walks_refuse_symlinked_parents() {
        let t = tempfile::tempdir().unwrap();
        let host = t.path().join("host");
        fs::create_dir(&host).unwrap();
        let root_path = t.path().join("root");
        fs::create_dir_all(root_path.join("a/b")).unwrap();
        std::os::unix::fs::symlink(&host, root_path.join("a/evil")).unwrap();
        std::os::unix::fs::symlink("b", root_path.join("a/rel")).unwrap();
        let root = nix::fcntl::open(
            &root_path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        for walk in [open_dir_beneath, walk_beneath] {
            assert!(walk(&root, Path::new("a/b"), false).is_ok());
            for p in ["a/evil", "a/evil/x", "a/rel", "a/rel/c"] {
                let e = walk(&root, Path::new(p), true).unwrap_err();
                assert!(
                    matches!(e, Errno::ELOOP | Errno::ENOTDIR | Errno::EXDEV),
                    "{p}: {e}"
                );
            }
            assert!(walk(&root, Path::new("a/new/deeper"), true).is_ok());
        }
        assert!(
            fs::read_dir(&host).unwrap().next().is_none(),
            "nothing made in the host dir"
        );
    }

    #[test]
    fn unpacks_plain_layer() {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("l");
        fs::create_dir(&dest).unwrap();
        let data = tar_with(|b| {
            file(b, "./bin/busybox", b"bb");
            link(b, tar::EntryType::Symlink, "bin/sh", "busybox");
            link(b, tar::EntryType::Link, "bin/ls", "bin/busybox");
        });
        unpack_layer(&data[..], &dest, "test").unwrap();
        assert_eq!(fs::read(dest.join("bin/sh")).unwrap(), b"bb");
        assert_eq!(fs::read(dest.join("bin/ls")).unwrap(), b"bb");
    }

    #[test]
    fn rejects_traversal_and_symlink_escape() {
        let t = tempfile::tempdir().unwrap();
        for (i, data) in [
            tar_with(|b| file(b, "../escape", b"x")),
            tar_with(|b| file(b, "/abs", b"x")),
            tar_with(|b| link(b, tar::EntryType::Symlink, "evil", "../../../../tmp")),
            tar_with(|b| {
                link(b, tar::EntryType::Symlink, "evil", "/tmp");
                file(b, "evil/owned", b"x");
            }),
            tar_with(|b| link(b, tar::EntryType::Link, "h", "../../etc/passwd")),
        ]
        .into_iter()
        .enumerate()
        {
            let dest = t.path().join(format!("l{i}"));
            fs::create_dir(&dest).unwrap();
            let err = unpack_layer(&data[..], &dest, "bad").unwrap_err();
            assert!(
                matches!(err, ImageError::UnsafeEntry { .. }),
                "case {i}: {err}"
            );
        }
        assert!(!Path::new("/tmp/owned").exists());
    }
}
