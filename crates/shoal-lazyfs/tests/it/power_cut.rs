//! What survives a power cut: fsynced data does, the rest does not; metadata does.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use shoal_testkit::LazyMount;

/// A mount over a fresh backing directory; the guard goes before the directory.
struct Disk {
    fs: LazyMount,
    backing: PathBuf,
    _dir: tempfile::TempDir,
}

impl Disk {
    fn new() -> Disk {
        let dir = tempfile::Builder::new()
            .prefix("shoal-lazyfs-test-")
            .tempdir()
            .expect("tempdir");
        let backing = dir.path().join("backing");
        let fs = LazyMount::start_with(
            Path::new(env!("CARGO_BIN_EXE_shoal-lazyfs")),
            &backing,
            &dir.path().join("mnt"),
            &dir.path().join("lazyfs.log"),
        );
        Disk {
            fs,
            backing,
            _dir: dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.fs.mount().join(name)
    }

    fn cut(&mut self) -> String {
        let line = self.fs.cut();
        eprintln!("{line}");
        line
    }
}

fn read(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn size(p: &Path) -> u64 {
    fs::metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .len()
}

#[test]
#[ignore = "requires root: mounts a FUSE file system with mount(2)"]
fn unsynced_writes_are_lost_and_the_file_stays() {
    let mut d = Disk::new();
    let p = d.path("a");
    let mut f = File::create(&p).expect("create");
    f.write_all(b"not synced").expect("write");
    drop(f);
    // The writer sees its own writes; the backing file has nothing yet.
    assert_eq!(read(&p), b"not synced");
    assert_eq!(size(&p), 10);
    assert_eq!(read(&d.backing.join("a")), b"");

    let line = d.cut();
    assert!(
        line.contains("dropped 10 unsynced bytes of 1 files"),
        "{line}"
    );
    assert!(p.exists(), "a created file is metadata: it stays");
    assert_eq!(size(&p), 0);
    assert_eq!(read(&p), b"");
}

#[test]
#[ignore = "requires root: mounts a FUSE file system with mount(2)"]
fn fsynced_writes_survive_and_reach_the_backing_file() {
    let mut d = Disk::new();
    let p = d.path("a");
    let mut f = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(&p)
        .expect("create");
    f.write_all(b"synced").expect("write");
    f.sync_data().expect("fdatasync");
    f.write_all(b"+later").expect("write");
    assert_eq!(read(&p), b"synced+later");
    assert_eq!(read(&d.backing.join("a")), b"synced");

    d.cut();
    assert_eq!(read(&p), b"synced");
    // The open descriptor reads the state after the cut too (no page cache).
    let mut back = String::new();
    f.seek(SeekFrom::Start(0)).expect("seek");
    f.read_to_string(&mut back)
        .expect("read through the open file");
    assert_eq!(back, "synced");
    f.write_all_at(b"!", 6).expect("write after the cut");
    f.sync_all().expect("fsync");
    d.cut();
    assert_eq!(read(&p), b"synced!");
    assert_eq!(read(&d.backing.join("a")), b"synced!");
}

#[test]
#[ignore = "requires root: mounts a FUSE file system with mount(2)"]
fn overlapping_writes_holes_and_fsync_per_file() {
    let mut d = Disk::new();
    let (pa, pb) = (d.path("a"), d.path("b"));
    let a = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&pa)
        .expect("open a");
    let b = File::create(&pb).expect("create b");
    a.write_all_at(b"AAAA", 0).expect("write");
    a.write_all_at(b"BB", 1).expect("overlapping write");
    a.write_all_at(b"CC", 6).expect("write past a hole");
    b.write_all_at(b"other file", 0).expect("write b");
    assert_eq!(read(&pa), b"ABBA\0\0CC");
    a.sync_all().expect("fsync a");
    // Later writes over synced data: the reader sees the merge.
    a.write_all_at(b"ZZ", 0).expect("write");
    a.write_all_at(b"Y", 9).expect("grow");
    assert_eq!(read(&pa), b"ZZBA\0\0CC\0Y");

    let line = d.cut();
    assert!(
        line.contains("of 2 files"),
        "a's later writes and b: {line}"
    );
    assert_eq!(read(&pa), b"ABBA\0\0CC", "a as fsynced");
    assert_eq!(read(&pb), b"", "b was never fsynced (a's fsync is not b's)");
}

#[test]
#[ignore = "requires root: mounts a FUSE file system with mount(2)"]
fn a_renamed_fsynced_temporary_file_survives_and_an_unsynced_one_is_empty() {
    let mut d = Disk::new();
    fs::create_dir(d.path("dir")).expect("mkdir");
    // The durable pattern (shoal-files write_atomic): write, fsync, rename, fsync dir.
    let tmp = d.path("dir/state.tmp");
    let mut f = File::create(&tmp).expect("create");
    f.write_all(b"durable").expect("write");
    f.sync_all().expect("fsync");
    drop(f);
    fs::rename(&tmp, d.path("dir/state")).expect("rename");
    File::open(d.path("dir"))
        .and_then(|dir| dir.sync_all())
        .expect("fsync dir");
    // The broken pattern: no fsync before the rename.
    let tmp2 = d.path("dir/other.tmp");
    fs::write(&tmp2, b"lost").expect("write");
    fs::rename(&tmp2, d.path("dir/other")).expect("rename");
    assert_eq!(read(&d.path("dir/other")), b"lost");

    d.cut();
    assert_eq!(read(&d.path("dir/state")), b"durable");
    assert!(!tmp.exists() && !tmp2.exists(), "renames are metadata");
    assert_eq!(read(&d.path("dir/other")), b"", "renamed, never synced");
    let names: Vec<String> = fs::read_dir(d.path("dir"))
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
#[ignore = "requires root: mounts a FUSE file system with mount(2)"]
fn a_pending_truncate_is_lost_and_a_synced_one_stays() {
    let mut d = Disk::new();
    let p = d.path("t");
    let f = File::create(&p).expect("create");
    f.write_all_at(b"0123456789", 0).expect("write");
    f.sync_all().expect("fsync");
    f.set_len(4).expect("truncate");
    assert_eq!(read(&p), b"0123");
    d.cut();
    assert_eq!(read(&p), b"0123456789", "the truncate was not synced");

    // O_TRUNC is a truncate as well.
    drop(File::create(&p).expect("open with O_TRUNC"));
    assert_eq!(size(&p), 0);
    d.cut();
    assert_eq!(read(&p), b"0123456789");

    f.set_len(2).expect("truncate");
    f.write_all_at(b"x", 5).expect("write past the new end");
    assert_eq!(read(&p), b"01\0\0\0x");
    f.sync_all().expect("fsync");
    d.cut();
    assert_eq!(read(&p), b"01\0\0\0x");
    assert_eq!(read(&d.backing.join("t")), b"01\0\0\0x");
}

#[test]
#[ignore = "requires root: mounts a FUSE file system with mount(2)"]
fn unmounting_drops_unsynced_data_and_leaves_no_mount() {
    let mut d = Disk::new();
    let p = d.path("a");
    let f = File::create(&p).expect("create");
    f.write_all_at(b"kept", 0).expect("write");
    f.sync_data().expect("fdatasync");
    f.write_all_at(b"gone", 4).expect("write");
    drop(f);
    let mount = d.fs.mount().to_path_buf();
    d.fs.unmount().expect("clean unmount on SIGTERM");
    assert!(!shoal_testkit::is_mounted(&mount));
    assert_eq!(read(&d.backing.join("a")), b"kept");
}
