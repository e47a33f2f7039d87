//! Writing the layers a build makes (gzip tarballs, hashed twice while written: the blob
//! digest and the uncompressed `diff_id`) from files on disk:
//!
//! * a RUN step's overlayfs upper directory ([`LayerBuilder::add_upper`]): a 0/0
//!   character device is a deletion (`.wh.NAME`), a directory with
//!   `trusted.overlay.opaque=y` replaces the one below (`.wh..wh..opq`);
//! * COPY/ADD of context files ([`LayerBuilder::add_tree`]) and of a stage's files
//!   ([`RootView`], the merged view of its unpacked layers);
//! * ADD of a local tarball ([`LayerBuilder::add_tar`]), whose entries are checked as
//!   every layer is (no `..`, no absolute paths).
//!
//! Entry names never start with `/`; directories end with `/`.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use sha2::{Digest as _, Sha256};
use shoal_image::digest::{Digest, HashingWriter};

type Sink = HashingWriter<GzEncoder<HashingWriter<File>>>;

/// A layer written to disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// The gzip file.
    pub path: PathBuf,
    /// Digest of the gzip file (the blob).
    pub digest: Digest,
    /// Size of the gzip file.
    pub size: u64,
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
    /// Entries written.
    pub entries: usize,
}

/// Who owns what a COPY writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// As on disk (a RUN step's files, `COPY --from`).
    Keep,
    /// This uid and gid (COPY from the context: root unless `--chown`).
    Set(u64, u64),
}

/// A layer being written.
pub struct LayerBuilder {
    b: tar::Builder<Sink>,
    path: PathBuf,
    entries: usize,
    names: BTreeSet<String>,
}

impl std::fmt::Debug for LayerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerBuilder")
            .field("path", &self.path)
            .field("entries", &self.entries)
            .finish()
    }
}

/// Files an overlayfs mount point leaves in the upper directory when the image lacks them:
/// the runtime binds the pod's files there. They are not the step's output.
const MOUNT_POINTS: &[&str] = &["etc/hostname", "etc/hosts", "etc/resolv.conf"];

fn header_for(meta: &fs::Metadata, owner: Owner) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
    if let Owner::Set(u, g) = owner {
        h.set_uid(u);
        h.set_gid(g);
    }
    // Names only through the ids: a build host's user names mean nothing in the image.
    let _ = h.set_username("");
    let _ = h.set_groupname("");
    h
}

impl LayerBuilder {
    /// Starts a layer at `path`.
    pub fn create(path: &Path) -> io::Result<Self> {
        let file = File::create(path)?;
        let gz = GzEncoder::new(HashingWriter::new(file), flate2::Compression::fast());
        Ok(Self {
            b: tar::Builder::new(HashingWriter::new(gz)),
            path: path.to_path_buf(),
            entries: 0,
            names: BTreeSet::new(),
        })
    }

    /// Entries written so far.
    pub fn entries(&self) -> usize {
        self.entries
    }

    fn once(&mut self, name: &str) -> bool {
        self.names.insert(name.trim_end_matches('/').to_string())
    }

    /// One file system entry at `host` as `name` (not recursing), with its metadata.
    pub fn add_path(&mut self, host: &Path, name: &str, owner: Owner) -> io::Result<()> {
        let meta = fs::symlink_metadata(host)?;
        let ft = meta.file_type();
        let name = name.trim_start_matches('/');
        if !self.once(name) {
            return Ok(());
        }
        let mut h = header_for(&meta, owner);
        if ft.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            self.b.append_data(
                &mut h,
                format!("{}/", name.trim_end_matches('/')),
                io::empty(),
            )?;
        } else if ft.is_symlink() {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            let target = fs::read_link(host)?;
            self.b.append_link(&mut h, name, target)?;
        } else if ft.is_file() {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(meta.len());
            self.b.append_data(&mut h, name, File::open(host)?)?;
        } else {
            // Devices, fifos and sockets are not image content.
            return Ok(());
        }
        self.entries += 1;
        Ok(())
    }

    /// A directory entry `name` with `meta`'s mode and owner (a parent of what a COPY
    /// writes, as the image has it), or root 0755 when the image has none.
    pub fn add_parent(&mut self, name: &str, meta: Option<&fs::Metadata>) -> io::Result<()> {
        let name = name.trim_start_matches('/').trim_end_matches('/');
        if name.is_empty() || !self.once(name) {
            return Ok(());
        }
        let mut h = match meta {
            Some(m) if m.is_dir() => header_for(m, Owner::Keep),
            _ => {
                let mut h = tar::Header::new_gnu();
                h.set_mode(0o755);
                h.set_mtime(0);
                h
            }
        };
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        self.b
            .append_data(&mut h, format!("{name}/"), io::empty())?;
        self.entries += 1;
        Ok(())
    }

    /// `host` as `name` and, for a directory, everything under it (sorted).
    pub fn add_tree(&mut self, host: &Path, name: &str, owner: Owner) -> io::Result<()> {
        self.add_path(host, name, owner)?;
        if fs::symlink_metadata(host)?.is_dir() {
            for child in sorted_children(host)? {
                let child_name = format!("{}/{}", name.trim_end_matches('/'), child);
                self.add_tree(&host.join(&child), &child_name, owner)?;
            }
        }
        Ok(())
    }

    /// The contents of directory `host` under `name` (not the directory itself).
    pub fn add_contents(&mut self, host: &Path, name: &str, owner: Owner) -> io::Result<()> {
        for child in sorted_children(host)? {
            let child_name = format!("{}/{}", name.trim_end_matches('/'), child);
            self.add_tree(&host.join(&child), &child_name, owner)?;
        }
        Ok(())
    }

    fn add_marker(&mut self, name: &str) -> io::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(0);
        h.set_mtime(0);
        self.b.append_data(&mut h, name, io::empty())?;
        self.entries += 1;
        Ok(())
    }

    /// An overlayfs upper directory as an OCI layer.
    pub fn add_upper(&mut self, upper: &Path) -> io::Result<()> {
        self.upper_dir(upper, "")
    }

    fn upper_dir(&mut self, dir: &Path, prefix: &str) -> io::Result<()> {
        for child in sorted_children(dir)? {
            let host = dir.join(&child);
            let name = format!("{prefix}{child}");
            let meta = fs::symlink_metadata(&host)?;
            let ft = meta.file_type();
            if ft.is_char_device() && meta.rdev() == 0 {
                self.add_marker(&format!("{prefix}.wh.{child}"))?;
                continue;
            }
            if ft.is_file() && meta.len() == 0 && MOUNT_POINTS.contains(&name.as_str()) {
                continue;
            }
            self.add_path(&host, &name, Owner::Keep)?;
            if ft.is_dir() {
                if is_opaque(&host) {
                    self.add_marker(&format!("{name}/.wh..wh..opq"))?;
                }
                self.upper_dir(&host, &format!("{name}/"))?;
            }
        }
        Ok(())
    }

    /// The entries of tarball `reader` (plain or gzip) under `prefix` (ADD of a local
    /// archive). Entry paths are checked as image layers' are.
    pub fn add_tar<R: Read>(&mut self, reader: R, prefix: &str, label: &str) -> io::Result<()> {
        let mut buf = io::BufReader::new(reader);
        let gz = {
            use io::BufRead;
            let head = buf.fill_buf()?;
            head.starts_with(&[0x1f, 0x8b])
        };
        let inner: Box<dyn Read> = if gz {
            Box::new(flate2::read::MultiGzDecoder::new(buf))
        } else {
            Box::new(buf)
        };
        let prefix = prefix.trim_start_matches('/').trim_end_matches('/');
        let join = |p: &Path| -> String {
            let s = p.to_string_lossy();
            if prefix.is_empty() {
                s.into_owned()
            } else {
                format!("{prefix}/{s}")
            }
        };
        let mut archive = tar::Archive::new(inner);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let raw = entry.path()?.into_owned();
            let rel = match shoal_image::layer::sanitize_entry_path(&raw) {
                Ok(Some(p)) => p,
                Ok(None) => continue,
                Err(why) => {
                    return Err(io::Error::other(format!(
                        "{label}: entry {:?} rejected: {why}",
                        raw.display()
                    )));
                }
            };
            let mut h = entry.header().clone();
            let name = join(&rel);
            self.once(&name);
            match h.entry_type() {
                tar::EntryType::Link => {
                    let target = entry
                        .link_name()?
                        .map(|t| t.into_owned())
                        .unwrap_or_default();
                    let target = shoal_image::layer::sanitize_entry_path(&target)
                        .ok()
                        .flatten()
                        .ok_or_else(|| {
                            io::Error::other(format!(
                                "{label}: hard link {:?} has a bad target",
                                raw.display()
                            ))
                        })?;
                    self.b.append_link(&mut h, &name, join(&target))?;
                }
                tar::EntryType::Symlink => {
                    let target = entry
                        .link_name()?
                        .map(|t| t.into_owned())
                        .unwrap_or_default();
                    self.b.append_link(&mut h, &name, target)?;
                }
                tar::EntryType::Directory => {
                    self.b
                        .append_data(&mut h, format!("{name}/"), io::empty())?;
                }
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    self.b.append_data(&mut h, &name, &mut entry)?;
                }
                _ => continue,
            }
            self.entries += 1;
        }
        Ok(())
    }

    /// Finishes the tarball and the gzip stream and syncs the file.
    pub fn finish(self) -> io::Result<Layer> {
        let sink = self.b.into_inner()?;
        let (gz, diff_id, _) = sink.finish();
        let (file, digest, size) = gz.finish()?.finish();
        file.sync_all()?;
        Ok(Layer {
            path: self.path,
            digest,
            size,
            diff_id,
            entries: self.entries,
        })
    }
}

fn sorted_children(dir: &Path) -> io::Result<Vec<String>> {
    let mut names: Vec<String> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<io::Result<_>>()?;
    names.sort();
    Ok(names)
}

fn is_opaque(dir: &Path) -> bool {
    let mut buf = [0u8; 4];
    matches!(
        rustix::fs::lgetxattr(dir, "trusted.overlay.opaque", &mut buf),
        Ok(1) if buf[0] == b'y'
    )
}

/// Whether `data` starts like a tarball we extract on ADD (gzip, or a ustar/GNU tar).
pub fn looks_like_tar(head: &[u8]) -> bool {
    head.starts_with(&[0x1f, 0x8b]) || (head.len() >= 263 && &head[257..262] == b"ustar")
}

/// A hash of files for the cache key of a COPY: names, modes, owners requested, sizes,
/// link targets and bytes of `paths` and everything under them, in order.
pub fn content_hash(paths: &[(PathBuf, String)]) -> io::Result<String> {
    let mut h = Sha256::new();
    fn walk(h: &mut Sha256, host: &Path, name: &str) -> io::Result<()> {
        let meta = fs::symlink_metadata(host)?;
        h.update(name.as_bytes());
        h.update([0]);
        h.update(meta.mode().to_le_bytes());
        if meta.is_dir() {
            for c in sorted_children(host)? {
                walk(h, &host.join(&c), &format!("{name}/{c}"))?;
            }
        } else if meta.file_type().is_symlink() {
            h.update(fs::read_link(host)?.as_os_str().as_encoded_bytes());
        } else if meta.is_file() {
            h.update(meta.len().to_le_bytes());
            io::copy(&mut File::open(host)?, h)?;
        }
        Ok(())
    }
    for (host, name) in paths {
        walk(&mut h, host, name)?;
    }
    Ok(hex::encode(h.finalize()))
}

/// The merged view of unpacked layers (bottom first), as overlayfs would show it.
#[derive(Debug, Clone)]
pub struct RootView {
    layers: Vec<PathBuf>,
}

fn is_whiteout(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
}

impl RootView {
    /// A view of `layers`, bottom first.
    pub fn new(layers: Vec<PathBuf>) -> Self {
        Self { layers }
    }

    /// The host path that shows at `rel` (no leading `/`), if any. Links are not followed.
    pub fn resolve(&self, rel: &str) -> Option<PathBuf> {
        let parts: Vec<&str> = rel
            .split('/')
            .filter(|s| !s.is_empty() && *s != ".")
            .collect();
        for layer in self.layers.iter().rev() {
            let mut cur = layer.clone();
            let mut opaque_above = false;
            for (i, part) in parts.iter().enumerate() {
                cur.push(part);
                if is_whiteout(&cur) {
                    return None;
                }
                if i + 1 < parts.len() && cur.is_dir() && is_opaque(&cur) {
                    opaque_above = true;
                }
            }
            if fs::symlink_metadata(&cur).is_ok() {
                return Some(cur);
            }
            if opaque_above {
                return None;
            }
        }
        None
    }

    /// The names in directory `rel` across the layers.
    pub fn list(&self, rel: &str) -> Vec<String> {
        let mut seen = BTreeSet::new();
        let mut hidden = BTreeSet::new();
        for layer in self.layers.iter().rev() {
            let dir = layer.join(rel.trim_start_matches('/'));
            if is_whiteout(&dir) {
                break;
            }
            let Ok(children) = sorted_children(&dir) else {
                continue;
            };
            for c in children {
                if hidden.contains(&c) || seen.contains(&c) {
                    continue;
                }
                if is_whiteout(&dir.join(&c)) {
                    hidden.insert(c);
                } else {
                    seen.insert(c);
                }
            }
            if is_opaque(&dir) {
                break;
            }
        }
        seen.into_iter().collect()
    }

    /// `rel` and, for a directory, everything under it, written as `name`.
    pub fn copy_tree(
        &self,
        rel: &str,
        name: &str,
        out: &mut LayerBuilder,
        owner: Owner,
    ) -> io::Result<()> {
        let host = self.resolve(rel).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("/{rel}: no such file or directory"),
            )
        })?;
        out.add_path(&host, name, owner)?;
        if fs::symlink_metadata(&host)?.is_dir() {
            for c in self.list(rel) {
                self.copy_tree(
                    &format!("{}/{c}", rel.trim_end_matches('/')),
                    &format!("{}/{c}", name.trim_end_matches('/')),
                    out,
                    owner,
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn entries(layer: &Layer) -> Vec<(String, tar::EntryType, u32)> {
        let f = File::open(&layer.path).unwrap();
        let mut a = tar::Archive::new(flate2::read::GzDecoder::new(f));
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().entry_type(),
                    e.header().mode().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn context_files_with_parents_and_owner_and_digests() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = tmp.path().join("ctx");
        fs::create_dir_all(ctx.join("dir/sub")).unwrap();
        fs::write(ctx.join("dir/a.txt"), "a").unwrap();
        fs::write(ctx.join("dir/sub/b.txt"), "b").unwrap();
        std::os::unix::fs::symlink("a.txt", ctx.join("dir/link")).unwrap();
        let path = tmp.path().join("l.tgz");
        let mut b = LayerBuilder::create(&path).unwrap();
        b.add_parent("app", None).unwrap();
        b.add_contents(&ctx.join("dir"), "app", Owner::Set(5, 6))
            .unwrap();
        let l = b.finish().unwrap();
        let names: Vec<String> = entries(&l).into_iter().map(|e| e.0).collect();
        assert_eq!(
            names,
            vec!["app/", "app/a.txt", "app/link", "app/sub/", "app/sub/b.txt"]
        );
        assert_eq!(l.digest, Digest::of_bytes(&fs::read(&path).unwrap()));
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(File::open(&path).unwrap())
            .read_to_end(&mut raw)
            .unwrap();
        assert_eq!(l.diff_id, Digest::of_bytes(&raw));
        let mut a = tar::Archive::new(&raw[..]);
        for e in a.entries().unwrap() {
            let e = e.unwrap();
            if e.path().unwrap().ends_with("a.txt") {
                assert_eq!(
                    (e.header().uid().unwrap(), e.header().gid().unwrap()),
                    (5, 6)
                );
            }
        }
        let h1 = content_hash(&[(ctx.join("dir"), "dir".into())]).unwrap();
        fs::write(ctx.join("dir/sub/b.txt"), "B").unwrap();
        assert_ne!(
            h1,
            content_hash(&[(ctx.join("dir"), "dir".into())]).unwrap()
        );
    }

    #[test]
    fn a_tarball_is_extracted_under_the_prefix_and_bad_entries_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let mut t = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o600);
        t.append_data(&mut h, "x/y.txt", &b"hi"[..]).unwrap();
        let raw = t.into_inner().unwrap();
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&raw).unwrap();
        let tgz = gz.finish().unwrap();
        assert!(looks_like_tar(&tgz) && looks_like_tar(&raw) && !looks_like_tar(b"hello"));
        let mut b = LayerBuilder::create(&tmp.path().join("l.tgz")).unwrap();
        b.add_tar(&tgz[..], "/app/files/", "files.tar.gz").unwrap();
        let l = b.finish().unwrap();
        assert_eq!(
            entries(&l),
            vec![("app/files/x/y.txt".into(), tar::EntryType::Regular, 0o600)]
        );
        // `..` in an entry is refused.
        let mut evil = vec![0u8; 512];
        evil[..9].copy_from_slice(b"../escape");
        let mut h = tar::Header::new_old();
        h.as_mut_bytes().copy_from_slice(&evil);
        h.set_size(0);
        h.set_mode(0o644);
        h.set_cksum();
        let mut data = h.as_bytes().to_vec();
        data.extend_from_slice(&[0u8; 1024]);
        let mut b = LayerBuilder::create(&tmp.path().join("m.tgz")).unwrap();
        let e = b.add_tar(&data[..], "app", "evil.tar").unwrap_err();
        assert!(e.to_string().contains("evil.tar"), "{e}");
    }

    #[test]
    fn root_view_merges_layers_with_whiteouts() {
        let tmp = tempfile::tempdir().unwrap();
        let (l1, l2) = (tmp.path().join("l1"), tmp.path().join("l2"));
        fs::create_dir_all(l1.join("d")).unwrap();
        fs::create_dir_all(l2.join("d")).unwrap();
        fs::write(l1.join("d/old"), "1").unwrap();
        fs::write(l1.join("d/gone"), "1").unwrap();
        fs::write(l2.join("d/new"), "2").unwrap();
        fs::write(l2.join("d/old"), "2").unwrap();
        // A whiteout needs mknod (root); without it, the view still merges.
        let whiteout = nix::sys::stat::mknod(
            &l2.join("d/gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .is_ok();
        let v = RootView::new(vec![l1.clone(), l2.clone()]);
        assert_eq!(v.resolve("d/old"), Some(l2.join("d/old")));
        let mut want = vec!["new".to_string(), "old".to_string()];
        if !whiteout {
            want.insert(0, "gone".into());
        }
        assert_eq!(v.list("d"), want);
        assert_eq!(v.resolve("d/gone").is_none(), whiteout);
        assert!(v.resolve("nope").is_none());
    }
}
