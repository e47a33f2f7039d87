//! Unpacking one layer tarball into a directory usable as an overlayfs lower
//! directory: entry paths are checked so nothing escapes the directory, and
//! OCI whiteouts become overlayfs whiteouts (a 0/0 character device for
//! `.wh.NAME`, the `trusted.overlay.opaque=y` xattr for `.wh..wh..opq`).

use std::ffi::CString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use super::ImageError;

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

/// Unpacks the (uncompressed) tar stream `reader` into the empty directory
/// `dest`. `label` names the layer in errors.
pub fn unpack_layer<R: Read>(reader: R, dest: &Path, label: &str) -> Result<(), ImageError> {
    let is_root = nix::unistd::geteuid().is_root();
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(|e| io_err(dest, e))?;
    let mut dirs: Vec<(PathBuf, u32)> = Vec::new();
    for entry in entries {
        let mut entry = entry.map_err(|e| ImageError::Format {
            archive: label.to_string(),
            message: format!("corrupt tar stream: {e}"),
        })?;
        let raw = entry.path().map_err(|e| io_err(dest, e))?.into_owned();
        let reject = |reason: String| ImageError::UnsafeEntry {
            layer: label.to_string(),
            entry: raw.display().to_string(),
            reason,
        };
        let Some(rel) = sanitize_entry_path(&raw).map_err(reject)? else {
            continue;
        };
        let header = entry.header().clone();
        let etype = header.entry_type();
        if matches!(
            etype,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
        ) {
            continue;
        }
        let meaning = classify(&rel).map_err(reject)?;
        match meaning {
            EntryMeaning::Opaque(dir) => {
                let full = ensure_dir_chain(dest, &dir).map_err(reject)?;
                if is_root {
                    set_xattr(&full, "trusted.overlay.opaque", b"y")
                        .map_err(|e| io_err(&full, e))?;
                }
                continue;
            }
            EntryMeaning::Whiteout(target) => {
                let parent = target.parent().map(Path::to_path_buf).unwrap_or_default();
                ensure_dir_chain(dest, &parent).map_err(reject)?;
                let full = dest.join(&target);
                remove_existing(&full).map_err(|e| io_err(&full, e))?;
                mknod(&full, libc::S_IFCHR, 0).map_err(|e| io_err(&full, e))?;
                continue;
            }
            EntryMeaning::Normal(_) => {}
        }
        let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        ensure_dir_chain(dest, &parent).map_err(reject)?;
        let full = dest.join(&rel);
        let mode = header.mode().map_err(|e| io_err(&full, e))? & 0o7777;
        let uid = header.uid().unwrap_or(0) as u32;
        let gid = header.gid().unwrap_or(0) as u32;
        match etype {
            tar::EntryType::Directory => {
                match fs::symlink_metadata(&full) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        remove_existing(&full).map_err(|e| io_err(&full, e))?;
                        fs::create_dir(&full).map_err(|e| io_err(&full, e))?;
                    }
                    Err(_) => fs::create_dir(&full).map_err(|e| io_err(&full, e))?,
                }
                dirs.push((full.clone(), mode));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                remove_existing(&full).map_err(|e| io_err(&full, e))?;
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&full)
                    .map_err(|e| io_err(&full, e))?;
                io::copy(&mut entry, &mut f).map_err(|e| io_err(&full, e))?;
                fs::set_permissions(&full, fs::Permissions::from_mode(mode))
                    .map_err(|e| io_err(&full, e))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| io_err(&full, e))?
                    .ok_or_else(|| reject("symlink without target".to_string()))?
                    .into_owned();
                check_symlink_target(&rel, &target).map_err(reject)?;
                remove_existing(&full).map_err(|e| io_err(&full, e))?;
                std::os::unix::fs::symlink(&target, &full).map_err(|e| io_err(&full, e))?;
            }
            tar::EntryType::Link => {
                let target_raw = entry
                    .link_name()
                    .map_err(|e| io_err(&full, e))?
                    .ok_or_else(|| reject("hard link without target".to_string()))?
                    .into_owned();
                let target = sanitize_entry_path(&target_raw)
                    .map_err(|r| reject(format!("hard link target: {r}")))?
                    .ok_or_else(|| reject("hard link to the layer root".to_string()))?;
                let tparent = target.parent().map(Path::to_path_buf).unwrap_or_default();
                check_no_symlink_parents(dest, &tparent).map_err(reject)?;
                let tfull = dest.join(&target);
                let tmeta = fs::symlink_metadata(&tfull).map_err(|_| {
                    reject(format!(
                        "hard link target {} does not exist in the layer",
                        target.display()
                    ))
                })?;
                if tmeta.is_dir() {
                    return Err(reject("hard link to a directory".to_string()));
                }
                remove_existing(&full).map_err(|e| io_err(&full, e))?;
                fs::hard_link(&tfull, &full).map_err(|e| io_err(&full, e))?;
                continue; // metadata is shared with the target
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let kind = match etype {
                    tar::EntryType::Char => libc::S_IFCHR,
                    tar::EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                remove_existing(&full).map_err(|e| io_err(&full, e))?;
                mknod(&full, kind | mode, libc::makedev(major, minor))
                    .map_err(|e| io_err(&full, e))?;
            }
            other => {
                return Err(reject(format!("unsupported entry type {other:?}")));
            }
        }
        if is_root {
            std::os::unix::fs::lchown(&full, Some(uid), Some(gid)).map_err(|e| io_err(&full, e))?;
            if etype == tar::EntryType::Regular && mode & 0o6000 != 0 {
                // chown clears set-id bits: put them back.
                fs::set_permissions(&full, fs::Permissions::from_mode(mode))
                    .map_err(|e| io_err(&full, e))?;
            }
        }
    }
    // Directory modes last, so read-only directories do not block their children.
    for (dir, mode) in dirs.into_iter().rev() {
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).map_err(|e| io_err(&dir, e))?;
    }
    Ok(())
}

fn io_err(path: &Path, source: io::Error) -> ImageError {
    ImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Makes sure every component of `rel` under `root` is a real directory
/// (creating missing ones), never following a symlink.
fn ensure_dir_chain(root: &Path, rel: &Path) -> Result<PathBuf, String> {
    let mut cur = root.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "parent {} is a symlink: writing through it could escape the layer",
                    cur.display()
                ));
            }
            Ok(_) => return Err(format!("parent {} is not a directory", cur.display())),
            Err(_) => fs::create_dir(&cur).map_err(|e| format!("{}: {e}", cur.display()))?,
        }
    }
    Ok(cur)
}

fn check_no_symlink_parents(root: &Path, rel: &Path) -> Result<(), String> {
    let mut cur = root.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            _ => {
                return Err(format!(
                    "hard link target parent {} is not a directory of the layer",
                    cur.display()
                ));
            }
        }
    }
    Ok(())
}

fn remove_existing(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn cstr(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::other("path contains a NUL byte"))
}

fn mknod(path: &Path, mode: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
    let c = cstr(path)?;
    // SAFETY: `c` is a valid NUL-terminated path; mknod does not retain it.
    let rc = unsafe { libc::mknod(c.as_ptr(), mode, dev) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let c = cstr(path)?;
    let n = CString::new(name).map_err(|_| io::Error::other("xattr name contains NUL"))?;
    // SAFETY: pointers are valid for the given lengths for the duration of the call.
    let rc = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
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
