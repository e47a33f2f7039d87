//! The FUSE file system: a passthrough to the backing directory whose file data waits
//! in memory ([`Pending`]) until `fsync`.
//!
//! Inodes get numbers of their own (1 is the backing root), never reused while mounted,
//! so a backing inode number that the backing file system hands out again after a
//! delete never meets the pending data of the file it used to name. Paths follow
//! renames; an open file keeps its backing descriptor, so it works after an unlink too.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
};

use crate::pending::Pending;

/// Entries and attributes are never cached by the kernel: after a power cut, what it
/// shows must come from here.
const TTL: Duration = Duration::ZERO;

/// What a power cut dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dropped {
    /// Files that had unsynced writes or truncates.
    pub files: usize,
    /// Bytes of unsynced writes.
    pub bytes: u64,
}

#[derive(Debug)]
struct Inode {
    /// Backing path; `None` once the last name is gone (still usable by open handles).
    path: Option<PathBuf>,
    /// (device, inode) of the backing file, while it has a name.
    key: Option<(u64, u64)>,
    /// Unsynced data.
    pending: Option<Pending>,
    /// Open handles.
    open: u32,
}

#[derive(Debug)]
struct Handle {
    ino: u64,
    file: File,
    /// `O_SYNC`/`O_DSYNC`: every write is made durable before it is acknowledged.
    sync_writes: bool,
}

#[derive(Debug)]
struct State {
    inodes: HashMap<u64, Inode>,
    by_key: HashMap<(u64, u64), u64>,
    handles: HashMap<u64, Handle>,
    next_ino: u64,
    next_fh: u64,
}

/// The state shared by the file system and whoever cuts the power.
#[derive(Debug, Clone)]
pub struct Cache(Arc<Mutex<State>>);

impl Cache {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops every unsynced write and truncate of every file ("cuts the power").
    pub fn cut(&self) -> Dropped {
        let mut st = self.lock();
        let mut d = Dropped::default();
        for inode in st.inodes.values_mut() {
            if let Some(p) = inode.pending.take() {
                d.files += 1;
                d.bytes += p.bytes();
            }
        }
        d
    }

    /// Bytes of unsynced writes held now.
    pub fn pending_bytes(&self) -> u64 {
        self.lock()
            .inodes
            .values()
            .filter_map(|i| i.pending.as_ref())
            .map(Pending::bytes)
            .sum()
    }
}

/// The file system over one backing directory.
#[derive(Debug)]
pub struct LazyFs {
    cache: Cache,
}

fn errno(e: &io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

fn nix_errno(e: nix::Error) -> Errno {
    Errno::from_i32(e as i32)
}

fn kind(m: &Metadata) -> FileType {
    FileType::from_std(m.file_type()).unwrap_or(FileType::RegularFile)
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

fn attr(ino: u64, m: &Metadata, pending: Option<&Pending>) -> FileAttr {
    let size = pending.map_or(m.size(), |p| p.size);
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512).max(m.blocks()),
        atime: time(m.atime(), m.atime_nsec()),
        mtime: time(m.mtime(), m.mtime_nsec()),
        ctime: time(m.ctime(), m.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind: kind(m),
        perm: (m.mode() & 0o7777) as u16,
        nlink: m.nlink() as u32,
        uid: m.uid(),
        gid: m.gid(),
        rdev: m.rdev() as u32,
        blksize: m.blksize() as u32,
        flags: 0,
    }
}

/// Reads up to `len` bytes at `offset` (fewer only at the end of the file).
fn read_at(file: &File, offset: u64, len: u64) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// Writes `p` into `file` (see [`Pending`] for the order).
fn apply(file: &File, p: &Pending) -> io::Result<()> {
    let len = file.metadata()?.len();
    if p.base_limit < len {
        file.set_len(p.base_limit)?;
    }
    for (off, data) in p.extents() {
        file.write_all_at(data, off)?;
    }
    if file.metadata()?.len() != p.size {
        file.set_len(p.size)?;
    }
    Ok(())
}

fn timespec(t: Option<TimeOrNow>) -> nix::sys::time::TimeSpec {
    use nix::sys::time::TimeSpec;
    match t {
        None => TimeSpec::UTIME_OMIT,
        Some(TimeOrNow::Now) => TimeSpec::UTIME_NOW,
        Some(TimeOrNow::SpecificTime(t)) => {
            let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
            TimeSpec::new(d.as_secs() as i64, i64::from(d.subsec_nanos()))
        }
    }
}

impl State {
    fn path(&self, ino: u64) -> Result<PathBuf, Errno> {
        self.inodes
            .get(&ino)
            .and_then(|i| i.path.clone())
            .ok_or(Errno::ENOENT)
    }

    /// The inode for the backing file at `path` (registered on first sight).
    fn register(&mut self, path: PathBuf, m: &Metadata) -> u64 {
        let key = (m.dev(), m.ino());
        if let Some(ino) = self.by_key.get(&key) {
            if let Some(i) = self.inodes.get_mut(ino) {
                i.path = Some(path);
            }
            return *ino;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.by_key.insert(key, ino);
        self.inodes.insert(
            ino,
            Inode {
                path: Some(path),
                key: Some(key),
                pending: None,
                open: 0,
            },
        );
        ino
    }

    /// `path` (about to be unlinked, removed or replaced) loses a name: its inode keeps
    /// only its open handles when that was the last one.
    fn forget_name(&mut self, path: &Path) {
        let Ok(m) = fs::symlink_metadata(path) else {
            return;
        };
        let key = (m.dev(), m.ino());
        let Some(ino) = self.by_key.get(&key).copied() else {
            return;
        };
        let last = m.is_dir() || m.nlink() <= 1;
        if let Some(i) = self.inodes.get_mut(&ino) {
            if last {
                i.path = None;
                i.key = None;
                if i.open == 0 {
                    i.pending = None;
                }
            } else if i.path.as_deref() == Some(path) {
                // Another name remains, which this table does not know: forget this one.
                i.path = None;
            }
        }
        if last {
            self.by_key.remove(&key);
        }
    }

    /// Paths at or under `from` now live under `to`.
    fn moved(&mut self, from: &Path, to: &Path) {
        for i in self.inodes.values_mut() {
            if let Some(p) = &i.path
                && let Ok(rest) = p.strip_prefix(from)
            {
                i.path = Some(if rest.as_os_str().is_empty() {
                    to.to_path_buf()
                } else {
                    to.join(rest)
                });
            }
        }
    }

    /// The pending data of `ino`, started over the backing size in `file`.
    fn pending_mut(&mut self, ino: u64, file: &File) -> Result<&mut Pending, Errno> {
        let inode = self.inodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        if inode.pending.is_none() {
            let len = file.metadata().map_err(|e| errno(&e))?.len();
            inode.pending = Some(Pending::new(len));
        }
        Ok(inode.pending.get_or_insert_with(|| Pending::new(0)))
    }

    fn attr_of(&self, ino: u64, fh: Option<FileHandle>) -> Result<FileAttr, Errno> {
        let m = match fh.and_then(|fh| self.handles.get(&fh.0)) {
            Some(h) => h.file.metadata(),
            None => fs::symlink_metadata(self.path(ino)?),
        }
        .map_err(|e| errno(&e))?;
        let pending = self.inodes.get(&ino).and_then(|i| i.pending.as_ref());
        Ok(attr(ino, &m, pending))
    }

    /// Applies and syncs `ino`'s pending data through handle `fh`.
    fn sync(&mut self, ino: u64, fh: u64, datasync: bool) -> Result<(), Errno> {
        let h = self.handles.get(&fh).ok_or(Errno::EBADF)?;
        let pending = self.inodes.get(&ino).and_then(|i| i.pending.clone());
        // A handle opened read-only (fsync on it is allowed) writes through a second
        // descriptor of the same open file.
        let writable;
        let file = if pending.is_some() && !writable_fd(&h.file) {
            writable = OpenOptions::new()
                .write(true)
                .open(format!("/proc/self/fd/{}", h.file.as_raw_fd()))
                .map_err(|e| errno(&e))?;
            &writable
        } else {
            &h.file
        };
        if let Some(p) = &pending {
            apply(file, p).map_err(|e| errno(&e))?;
        }
        if datasync {
            file.sync_data()
        } else {
            file.sync_all()
        }
        .map_err(|e| errno(&e))?;
        if let Some(i) = self.inodes.get_mut(&ino) {
            i.pending = None;
        }
        Ok(())
    }

    fn open_handle(&mut self, ino: u64, file: File, flags: i32) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(
            fh,
            Handle {
                ino,
                file,
                sync_writes: flags & (libc::O_SYNC | libc::O_DSYNC) != 0,
            },
        );
        if let Some(i) = self.inodes.get_mut(&ino) {
            i.open += 1;
        }
        fh
    }
}

fn writable_fd(f: &File) -> bool {
    nix::fcntl::fcntl(f, nix::fcntl::FcntlArg::F_GETFL)
        .map(|fl| fl & libc::O_ACCMODE != libc::O_RDONLY)
        .unwrap_or(false)
}

/// Opens the backing file for reading and writing when it can (so fsync can apply
/// pending data through the same descriptor), without the flags this layer handles
/// itself: append (the kernel gives every write its offset), truncate (a pending
/// truncate), create, direct and sync I/O.
fn open_backing(path: &Path, flags: i32, create: Option<u32>) -> io::Result<File> {
    let keep = flags
        & !(libc::O_ACCMODE
            | libc::O_APPEND
            | libc::O_TRUNC
            | libc::O_CREAT
            | libc::O_EXCL
            | libc::O_DIRECT
            | libc::O_SYNC
            | libc::O_DSYNC
            | libc::O_NOCTTY);
    let mut o = OpenOptions::new();
    o.read(true).write(true).custom_flags(keep);
    if let Some(mode) = create {
        o.mode(mode);
        if flags & libc::O_EXCL != 0 {
            o.create_new(true);
        } else {
            o.create(true);
        }
    }
    match o.open(path) {
        Err(e) if create.is_none() && e.raw_os_error() == Some(libc::EACCES) => {
            let mut o = OpenOptions::new();
            match flags & libc::O_ACCMODE {
                libc::O_RDONLY => o.read(true),
                libc::O_WRONLY => o.write(true),
                _ => o.read(true).write(true),
            };
            o.custom_flags(keep).open(path)
        }
        r => r,
    }
}

/// Gives a new entry to the caller's user and group (this process runs as root).
fn own(path: &Path, req: &Request) {
    let (uid, gid) = (req.uid(), req.gid());
    if uid != nix::unistd::geteuid().as_raw() || gid != nix::unistd::getegid().as_raw() {
        let _ = std::os::unix::fs::lchown(path, Some(uid), Some(gid));
    }
}

impl LazyFs {
    /// A file system over the backing directory `backing` (already checked to exist).
    pub fn new(backing: &Path) -> io::Result<LazyFs> {
        let m = fs::metadata(backing)?;
        let mut st = State {
            inodes: HashMap::new(),
            by_key: HashMap::new(),
            handles: HashMap::new(),
            next_ino: 2,
            next_fh: 1,
        };
        st.by_key.insert((m.dev(), m.ino()), 1);
        st.inodes.insert(
            1,
            Inode {
                path: Some(backing.to_path_buf()),
                key: Some((m.dev(), m.ino())),
                pending: None,
                open: 0,
            },
        );
        Ok(LazyFs {
            cache: Cache(Arc::new(Mutex::new(st))),
        })
    }

    /// The handle that cuts the power (and reports what is pending).
    pub fn cache(&self) -> Cache {
        self.cache.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.cache.lock()
    }

    /// Looks `name` up under `parent` and registers it.
    fn entry(&self, parent: INodeNo, name: &OsStr) -> Result<FileAttr, Errno> {
        let mut st = self.lock();
        let path = st.path(parent.0)?.join(name);
        let m = fs::symlink_metadata(&path).map_err(|e| errno(&e))?;
        let ino = st.register(path, &m);
        let pending = st.inodes.get(&ino).and_then(|i| i.pending.as_ref());
        Ok(attr(ino, &m, pending))
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.lock().path(parent.0)?.join(name))
    }

    /// Makes entry `name` in `parent` with `make` (given its backing path), owned by the
    /// caller, and replies with its attributes.
    fn make_entry(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        reply: ReplyEntry,
        make: impl FnOnce(&Path) -> Result<(), Errno>,
    ) {
        let r = self.child(parent, name).and_then(|p| {
            make(&p)?;
            own(&p, req);
            Ok(())
        });
        match r {
            Ok(()) => self.reply_entry(reply, parent, name),
            Err(e) => reply.error(e),
        }
    }

    fn reply_entry(&self, reply: ReplyEntry, parent: INodeNo, name: &OsStr) {
        match self.entry(parent, name) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn do_setattr(
        &self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        fh: Option<FileHandle>,
    ) -> Result<FileAttr, Errno> {
        let mut st = self.lock();
        let path = st.path(ino).ok();
        let handle_file = |st: &State| -> Option<File> {
            fh.and_then(|fh| st.handles.get(&fh.0))
                .and_then(|h| h.file.try_clone().ok())
        };
        if let Some(mode) = mode {
            match (&path, handle_file(&st)) {
                (_, Some(f)) => f.set_permissions(fs::Permissions::from_mode(mode)),
                (Some(p), None) => fs::set_permissions(p, fs::Permissions::from_mode(mode)),
                (None, None) => return Err(Errno::ENOENT),
            }
            .map_err(|e| errno(&e))?;
        }
        if uid.is_some() || gid.is_some() {
            let p = path.as_ref().ok_or(Errno::ENOENT)?;
            std::os::unix::fs::lchown(p, uid, gid).map_err(|e| errno(&e))?;
        }
        if let Some(size) = size {
            let file = match handle_file(&st) {
                Some(f) => f,
                None => File::open(path.as_ref().ok_or(Errno::ENOENT)?).map_err(|e| errno(&e))?,
            };
            st.pending_mut(ino, &file)?.truncate(size);
        }
        if atime.is_some() || mtime.is_some() {
            let p = path.as_ref().ok_or(Errno::ENOENT)?;
            nix::sys::stat::utimensat(
                nix::fcntl::AT_FDCWD,
                p,
                &timespec(atime),
                &timespec(mtime),
                nix::sys::stat::UtimensatFlags::NoFollowSymlink,
            )
            .map_err(nix_errno)?;
        }
        st.attr_of(ino, fh)
    }
}

impl Filesystem for LazyFs {
    fn init(&mut self, _req: &Request, _config: &mut KernelConfig) -> io::Result<()> {
        // No writeback cache and no other cache is asked for (fuser asks for none by
        // default); opens answer with FOPEN_DIRECT_IO.
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.reply_entry(reply, parent, name);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.lock().attr_of(ino.0, fh) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.do_setattr(ino.0, mode, uid, gid, size, atime, mtime, fh) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let r = self
            .lock()
            .path(ino.0)
            .and_then(|p| fs::read_link(p).map_err(|e| errno(&e)));
        match r {
            Ok(t) => reply.data(t.as_os_str().as_encoded_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        self.make_entry(req, parent, name, reply, |p| {
            let kind = nix::sys::stat::SFlag::from_bits_truncate(mode & libc::S_IFMT);
            let perm = nix::sys::stat::Mode::from_bits_truncate(mode & 0o7777);
            nix::sys::stat::mknod(p, kind, perm, u64::from(rdev)).map_err(nix_errno)
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        self.make_entry(req, parent, name, reply, |p| {
            fs::DirBuilder::new()
                .mode(mode & 0o7777)
                .create(p)
                .map_err(|e| errno(&e))
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = self.lock();
        let r = st.path(parent.0).and_then(|dir| {
            let p = dir.join(name);
            st.forget_name(&p);
            fs::remove_file(&p).map_err(|e| errno(&e))
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = self.lock();
        let r = st.path(parent.0).and_then(|dir| {
            let p = dir.join(name);
            fs::remove_dir(&p).map_err(|e| errno(&e))?;
            // Gone now: nothing of it can be looked up by path any more.
            let st = &mut *st;
            for i in st.inodes.values_mut() {
                if i.path.as_deref() == Some(p.as_path()) {
                    i.path = None;
                    if let Some(k) = i.key.take() {
                        st.by_key.remove(&k);
                    }
                }
            }
            Ok(())
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        self.make_entry(req, parent, link_name, reply, |p| {
            std::os::unix::fs::symlink(target, p).map_err(|e| errno(&e))
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut st = self.lock();
        let r = (|| {
            let from = st.path(parent.0)?.join(name);
            let to = st.path(newparent.0)?.join(newname);
            let exchange = flags.contains(RenameFlags::RENAME_EXCHANGE);
            if !exchange && from != to {
                st.forget_name(&to);
            }
            nix::fcntl::renameat2(
                nix::fcntl::AT_FDCWD,
                &from,
                nix::fcntl::AT_FDCWD,
                &to,
                nix::fcntl::RenameFlags::from_bits_truncate(flags.bits()),
            )
            .map_err(nix_errno)?;
            if exchange {
                let tmp = to.with_file_name(".shoal-lazyfs-exchange");
                st.moved(&to, &tmp);
                st.moved(&from, &to);
                st.moved(&tmp, &from);
            } else {
                st.moved(&from, &to);
            }
            Ok(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let r = (|| {
            let st = self.lock();
            let from = st.path(ino.0)?;
            let to = st.path(newparent.0)?.join(newname);
            fs::hard_link(from, to).map_err(|e| errno(&e))
        })();
        match r {
            Ok(()) => self.reply_entry(reply, newparent, newname),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut st = self.lock();
        let r = st
            .path(ino.0)
            .and_then(|p| open_backing(&p, flags.0, None).map_err(|e| errno(&e)));
        match r {
            Ok(file) => {
                let fh = st.open_handle(ino.0, file, flags.0);
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO);
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let st = self.lock();
        let Some(h) = st.handles.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let pending = st.inodes.get(&ino.0).and_then(|i| i.pending.as_ref());
        let r = match pending {
            Some(p) => p.read(offset, u64::from(size), |o, l| read_at(&h.file, o, l)),
            None => read_at(&h.file, offset, u64::from(size)),
        };
        match r {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: fuser::WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut st = self.lock();
        let r = (|| {
            let h = st.handles.get(&fh.0).ok_or(Errno::EBADF)?;
            let (file, sync) = (h.file.try_clone().map_err(|e| errno(&e))?, h.sync_writes);
            st.pending_mut(ino.0, &file)?.write(offset, data);
            if sync {
                st.sync(ino.0, fh.0, true)?;
            }
            Ok(())
        })();
        match r {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) is not a sync: the data stays volatile.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut st = self.lock();
        if let Some(h) = st.handles.remove(&fh.0)
            && let Some(i) = st.inodes.get_mut(&h.ino)
        {
            i.open = i.open.saturating_sub(1);
            if i.open == 0 && i.path.is_none() {
                // Unlinked and closed: nobody can read or sync it any more.
                i.pending = None;
            }
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.lock().sync(ino.0, fh.0, datasync) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.lock().path(ino.0) {
            Ok(p) if p.is_dir() => reply.opened(FileHandle(0), FopenFlags::empty()),
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let path = match self.lock().path(ino.0) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let rd = match fs::read_dir(&path) {
            Ok(rd) => rd,
            Err(e) => return reply.error(errno(&e)),
        };
        let mut entries: Vec<(u64, FileType, std::ffi::OsString)> = vec![
            (ino.0, FileType::Directory, ".".into()),
            (ino.0, FileType::Directory, "..".into()),
        ];
        for e in rd.flatten() {
            let kind = e
                .file_type()
                .ok()
                .and_then(FileType::from_std)
                .unwrap_or(FileType::RegularFile);
            let backing_ino = e.metadata().map(|m| m.ino()).unwrap_or(u64::MAX);
            entries.push((backing_ino, kind, e.file_name()));
        }
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), (i + 1) as u64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Directory entries went to the backing directory when they changed.
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let root = match self.lock().path(1) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        match nix::sys::statvfs::statvfs(&root) {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                s.block_size() as u32,
                s.name_max() as u32,
                s.fragment_size() as u32,
            ),
            Err(e) => reply.error(nix_errno(e)),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // Mounted with default_permissions: the kernel checks modes itself.
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut st = self.lock();
        let r = (|| {
            let path = st.path(parent.0)?.join(name);
            let file = open_backing(&path, flags, Some(mode & 0o7777)).map_err(|e| errno(&e))?;
            own(&path, req);
            let m = file.metadata().map_err(|e| errno(&e))?;
            let ino = st.register(path, &m);
            let a = attr(
                ino,
                &m,
                st.inodes.get(&ino).and_then(|i| i.pending.as_ref()),
            );
            let fh = st.open_handle(ino, file, flags);
            Ok((a, fh))
        })();
        match r {
            Ok((a, fh)) => reply.created(
                &TTL,
                &a,
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(e),
        }
    }
}
