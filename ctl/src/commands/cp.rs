//! `shoalctl cp SRC DEST`: files and directories to and from a container, as kubectl does
//! it: `tar` runs in the container through `Proxy.Exec` (`tar cf - -C DIR NAME` to read,
//! `tar xf - -C DIR` to write) and the archive is made or unpacked here with the `tar`
//! crate. Unpacking here treats the archive as hostile: entries with absolute paths or `..`
//! are refused, every entry must lie under the one name asked for, symlinks and hard links
//! are skipped (with a note), and nothing is written through an existing symlink.
//!
//! Destinations follow `cp -r` (and `docker cp`): an existing directory receives the source
//! under its own name; otherwise the destination is the copy's new name. The archive is
//! held in memory (one copy of the data).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use super::exec::{Captured, capture};
use super::{Context, note, pod_name};
use crate::cli::CpArgs;
use crate::error::CtlError;

/// One side of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A path on this machine.
    Local(PathBuf),
    /// A path in a pod's container.
    Remote {
        /// `-n`'s namespace unless the argument named one (`NS/POD:PATH`).
        namespace: Option<String>,
        /// The pod.
        pod: String,
        /// The path in the container.
        path: String,
    },
}

/// Reads a `cp` argument: `[NAMESPACE/]POD:PATH` is a pod's path; anything without a
/// colon, or starting with `/`, `./` or `../`, is local (as kubectl: `./a:b` is a local file).
pub fn parse_location(arg: &str) -> Result<Location, CtlError> {
    let local = arg.starts_with('/') || arg.starts_with("./") || arg.starts_with("../");
    let Some((pod, path)) = arg.split_once(':').filter(|_| !local) else {
        return Ok(Location::Local(PathBuf::from(arg)));
    };
    if pod.is_empty() || path.is_empty() {
        return Err(CtlError::Usage(format!(
            "{arg:?}: expected [NAMESPACE/]POD:PATH or a local path"
        )));
    }
    let (namespace, pod) = match pod.split_once('/') {
        Some((ns, p)) if !ns.is_empty() && !p.is_empty() && !p.contains('/') => {
            (Some(ns.to_string()), p.to_string())
        }
        Some(_) => {
            return Err(CtlError::Usage(format!(
                "{arg:?}: expected [NAMESPACE/]POD:PATH or a local path"
            )));
        }
        None => (None, pod.to_string()),
    };
    Ok(Location::Remote {
        namespace,
        pod,
        path: path.to_string(),
    })
}

/// Splits a container path into the directory `tar -C` enters and the name it archives:
/// `/a/b` → (`/a`, `b`), `/a/b/` → (`/a`, `b`), `b` → (`.`, `b`), `/b` → (`/`, `b`).
pub fn split_remote(path: &str) -> Result<(String, String), CtlError> {
    let trimmed = path.trim_end_matches('/');
    let (dir, name) = match trimmed.rsplit_once('/') {
        Some(("", n)) => ("/", n),
        Some((d, n)) => (d, n),
        None => (".", trimmed),
    };
    if name.is_empty() || name == "." || name == ".." {
        return Err(CtlError::Usage(format!(
            "{path:?}: name a file or directory in the container (not / . or ..)"
        )));
    }
    Ok((dir.to_string(), name.to_string()))
}

/// Where an archive entry goes: `entry` must be `name` or lie under it (a `./` prefix is
/// allowed); that part is replaced by `target`. Absolute paths, `..` and anything outside
/// `name` are refused.
pub fn local_target(target: &Path, name: &str, entry: &Path) -> Result<PathBuf, String> {
    let mut parts = Vec::new();
    for c in entry.components() {
        match c {
            Component::Normal(p) => parts.push(p),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("entry {entry:?} rejected: absolute path"));
            }
            Component::ParentDir => {
                return Err(format!("entry {entry:?} rejected: it contains \"..\""));
            }
        }
    }
    match parts.split_first() {
        Some((first, rest)) if *first == name => {
            let mut p = target.to_path_buf();
            p.extend(rest);
            Ok(p)
        }
        _ => Err(format!("entry {entry:?} rejected: not under {name:?}")),
    }
}

/// Fails if any existing component of `path` below `root` (or `path` itself) is a symlink,
/// so that an unpacked file never lands outside the destination.
fn refuse_symlinks(root: &Path, path: &Path) -> Result<(), String> {
    let rel = path.strip_prefix(root).unwrap_or(Path::new(""));
    let mut p = root.to_path_buf();
    for c in rel.components() {
        p.push(c);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "{} is a symlink; not writing through it",
                    p.display()
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Unpacks an archive of `name` (a file or a directory) to `target`; returns the files
/// written.
pub fn unpack(archive: &[u8], name: &str, target: &Path) -> Result<usize, String> {
    let mut ar = tar::Archive::new(archive);
    let mut files = 0;
    let mut seen = false;
    for entry in ar
        .entries()
        .map_err(|e| format!("reading the archive: {e}"))?
    {
        let mut entry = entry.map_err(|e| format!("reading the archive: {e}"))?;
        let path = entry
            .path()
            .map_err(|e| format!("reading the archive: {e}"))?
            .into_owned();
        let dest = local_target(target, name, &path)?;
        seen = true;
        refuse_symlinks(target, &dest)?;
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            match std::fs::create_dir(&dest) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dest.is_dir() => {}
                Err(e) => return Err(format!("create {}: {e}", dest.display())),
            }
            // Keep the directory writable for us while filling it.
            let _ = std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode | 0o700));
        } else if kind.is_file() || kind == tar::EntryType::Continuous {
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("create {}: {e}", parent.display()))?;
            }
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(mode)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&dest)
                .map_err(|e| format!("write {}: {e}", dest.display()))?;
            std::io::copy(&mut entry, &mut f)
                .and_then(|_| f.flush())
                .map_err(|e| format!("write {}: {e}", dest.display()))?;
            let _ = f.set_permissions(std::fs::Permissions::from_mode(mode));
            files += 1;
        } else if kind.is_symlink() || kind.is_hard_link() {
            note(&format!(
                "skipping {} {} (cp copies files and directories only)",
                if kind.is_symlink() {
                    "symlink"
                } else {
                    "hard link"
                },
                path.display()
            ));
        } else {
            note(&format!(
                "skipping {} (not a file or directory)",
                path.display()
            ));
        }
    }
    if !seen {
        return Err("the container sent an empty archive".into());
    }
    Ok(files)
}

/// Makes the archive of a local file or directory under the name `name`.
pub fn pack(source: &Path, name: &str) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(source).map_err(|e| format!("{}: {e}", source.display()))?;
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    let r = if meta.is_dir() {
        b.append_dir_all(name, source)
    } else {
        let mut f =
            std::fs::File::open(source).map_err(|e| format!("{}: {e}", source.display()))?;
        b.append_file(name, &mut f)
    };
    r.map_err(|e| format!("{}: {e}", source.display()))?;
    b.into_inner()
        .map_err(|e| format!("{}: {e}", source.display()))
}

/// The last component of a local path (`.` and `..` resolved through the file system).
fn local_name(p: &Path) -> Result<String, CtlError> {
    let abs =
        std::fs::canonicalize(p).map_err(|e| CtlError::Copy(format!("{}: {e}", p.display())))?;
    abs.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| CtlError::Copy(format!("{}: cannot copy the root directory", p.display())))
}

/// The error for a failed `tar` in the container: a missing `tar` (exit 126/127) is named
/// as such; otherwise tar's own message (which names the path).
pub fn tar_error(what: &str, container: Option<&str>, pod: &str, run: &Captured) -> CtlError {
    let stderr = String::from_utf8_lossy(&run.stderr).trim().to_string();
    let of = match container {
        Some(c) => format!("container {c:?} of pod/{pod}"),
        None => format!("the container of pod/{pod}"),
    };
    if run.exit_code == 126 || run.exit_code == 127 {
        return CtlError::Copy(format!(
            "cp {what}: cp needs `tar` in the container, and {of} cannot run it (exit code {}: {stderr})",
            run.exit_code
        ));
    }
    CtlError::Copy(format!(
        "cp {what}: tar in {of} failed with exit code {}: {stderr}",
        run.exit_code
    ))
}

/// Runs `cp`.
pub async fn run(ctx: &mut Context, args: CpArgs) -> Result<(), CtlError> {
    let src = parse_location(&args.source)?;
    let dst = parse_location(&args.dest)?;
    let container = args.container.as_deref();
    match (src, dst) {
        (
            Location::Remote {
                namespace,
                pod,
                path,
            },
            Location::Local(local),
        ) => {
            let pod = pod_name(&pod)?;
            let ns = namespace.unwrap_or_else(|| ctx.namespace().to_string());
            let (dir, name) = split_remote(&path)?;
            let what = format!("pod/{pod}:{path}");
            let run = capture(
                ctx,
                &ns,
                &pod,
                container,
                vec![
                    "tar".into(),
                    "cf".into(),
                    "-".into(),
                    "-C".into(),
                    dir,
                    name.clone(),
                ],
                None,
            )
            .await?;
            if run.exit_code != 0 {
                return Err(tar_error(&what, container, &pod, &run));
            }
            let target = if local.is_dir() {
                local.join(&name)
            } else {
                local
            };
            unpack(&run.stdout, &name, &target)
                .map_err(|e| CtlError::Copy(format!("cp {what} to {}: {e}", target.display())))?;
            Ok(())
        }
        (
            Location::Local(local),
            Location::Remote {
                namespace,
                pod,
                path,
            },
        ) => {
            let pod = pod_name(&pod)?;
            let ns = namespace.unwrap_or_else(|| ctx.namespace().to_string());
            let what = format!("{} to pod/{pod}:{path}", local.display());
            let local_name = local_name(&local)?;
            // An existing directory receives the source under its own name (kubectl asks
            // the container the same way).
            let is_dir = capture(
                ctx,
                &ns,
                &pod,
                container,
                vec!["test".into(), "-d".into(), path.clone()],
                None,
            )
            .await?;
            let (dir, name) = if is_dir.exit_code == 0 {
                (path.clone(), local_name)
            } else {
                split_remote(&path)?
            };
            let archive =
                pack(&local, &name).map_err(|e| CtlError::Copy(format!("cp {what}: {e}")))?;
            let run = capture(
                ctx,
                &ns,
                &pod,
                container,
                vec!["tar".into(), "xf".into(), "-".into(), "-C".into(), dir],
                Some(archive),
            )
            .await?;
            if run.exit_code != 0 {
                return Err(tar_error(&what, container, &pod, &run));
            }
            Ok(())
        }
        (Location::Local(_), Location::Local(_)) => Err(CtlError::Usage(
            "one of SRC and DEST must be in a pod: [NAMESPACE/]POD:PATH".into(),
        )),
        (Location::Remote { .. }, Location::Remote { .. }) => Err(CtlError::Usage(
            "copying between two pods is not supported: one side must be local".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_name_a_pod_path_or_a_local_one() {
        assert_eq!(
            parse_location("web:/etc/hosts").unwrap(),
            Location::Remote {
                namespace: None,
                pod: "web".into(),
                path: "/etc/hosts".into()
            }
        );
        assert_eq!(
            parse_location("team/web:data").unwrap(),
            Location::Remote {
                namespace: Some("team".into()),
                pod: "web".into(),
                path: "data".into()
            }
        );
        for local in ["out.txt", "/tmp/a:b", "./a:b", "../x:y"] {
            assert_eq!(
                parse_location(local).unwrap(),
                Location::Local(local.into()),
                "{local}"
            );
        }
        for bad in ["web:", ":/x", "a/b/c:/x"] {
            let e = parse_location(bad).unwrap_err().to_string();
            assert!(e.contains("[NAMESPACE/]POD:PATH"), "{bad}: {e}");
        }
    }

    #[test]
    fn remote_paths_split_into_directory_and_name() {
        let s = |p: &str| split_remote(p).unwrap();
        assert_eq!(s("/a/b"), ("/a".into(), "b".into()));
        assert_eq!(s("/a/b/"), ("/a".into(), "b".into()));
        assert_eq!(s("/b"), ("/".into(), "b".into()));
        assert_eq!(s("b"), (".".into(), "b".into()));
        assert_eq!(s("x/y"), ("x".into(), "y".into()));
        for bad in ["/", "", "/a/..", "."] {
            assert!(split_remote(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn entries_must_stay_under_the_name_asked_for() {
        let t = Path::new("/dst/copy");
        let ok = |e: &str| local_target(t, "d", Path::new(e)).unwrap();
        assert_eq!(ok("d"), PathBuf::from("/dst/copy"));
        assert_eq!(ok("d/"), PathBuf::from("/dst/copy"));
        assert_eq!(ok("./d/x/y"), PathBuf::from("/dst/copy/x/y"));
        for (bad, why) in [
            ("/etc/passwd", "absolute"),
            ("d/../../etc/passwd", "\"..\""),
            ("../d", "\"..\""),
            ("e/x", "not under"),
            ("dd/x", "not under"),
            ("", "not under"),
        ] {
            let e = local_target(t, "d", Path::new(bad)).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    /// A tar archive with raw entry names (the tar crate's builder refuses `..`).
    fn raw_archive(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            {
                let raw = h.as_old_mut();
                raw.name[..name.len()].copy_from_slice(name.as_bytes());
            }
            if !link.is_empty() {
                h.set_link_name(link).unwrap();
            }
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn unpacking_refuses_escapes_and_skips_links() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("copy");
        let evil = raw_archive(&[
            ("d/", tar::EntryType::Directory, b"", ""),
            ("d/../../escaped", tar::EntryType::Regular, b"x", ""),
        ]);
        let e = unpack(&evil, "d", &target).unwrap_err();
        assert!(e.contains("\"..\""), "{e}");
        assert!(!dir.path().join("escaped").exists());
        let abs = raw_archive(&[("/tmp/abs-escape", tar::EntryType::Regular, b"x", "")]);
        assert!(unpack(&abs, "d", &target).unwrap_err().contains("absolute"));

        // A symlink in the archive is skipped, so a later file cannot go through it.
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let links = raw_archive(&[
            ("d/", tar::EntryType::Directory, b"", ""),
            (
                "d/l",
                tar::EntryType::Symlink,
                b"",
                outside.to_str().unwrap(),
            ),
            ("d/l/f", tar::EntryType::Regular, b"y", ""),
            ("d/ok", tar::EntryType::Regular, b"fine", ""),
        ]);
        assert_eq!(unpack(&links, "d", &target).unwrap(), 2);
        assert!(
            std::fs::symlink_metadata(target.join("l"))
                .unwrap()
                .is_dir()
        );
        assert_eq!(std::fs::read(target.join("ok")).unwrap(), b"fine");
        assert!(!outside.join("f").exists());

        // An existing symlink in the destination is never written through.
        let target2 = dir.path().join("copy2");
        std::fs::create_dir(&target2).unwrap();
        std::os::unix::fs::symlink(&outside, target2.join("sub")).unwrap();
        let through = raw_archive(&[("d/sub/f", tar::EntryType::Regular, b"z", "")]);
        let e = unpack(&through, "d", &target2).unwrap_err();
        assert!(e.contains("symlink"), "{e}");
        assert!(!outside.join("f").exists());
    }

    #[test]
    fn pack_and_unpack_round_trip_a_directory_and_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("a.txt"), b"alpha").unwrap();
        std::fs::write(src.join("sub/b.bin"), [0u8, 1, 2, 255]).unwrap();
        let ar = pack(&src, "renamed").unwrap();
        let dst = dir.path().join("dst");
        assert_eq!(unpack(&ar, "renamed", &dst).unwrap(), 2);
        assert_eq!(std::fs::read(dst.join("a.txt")).unwrap(), b"alpha");
        assert_eq!(
            std::fs::read(dst.join("sub/b.bin")).unwrap(),
            [0u8, 1, 2, 255]
        );

        let ar = pack(&src.join("a.txt"), "f").unwrap();
        let one = dir.path().join("one");
        assert_eq!(unpack(&ar, "f", &one).unwrap(), 1);
        assert_eq!(std::fs::read(&one).unwrap(), b"alpha");
        assert!(
            pack(&dir.path().join("nope"), "x")
                .unwrap_err()
                .contains("nope")
        );
    }

    #[test]
    fn tar_failures_name_the_path_or_the_missing_tar() {
        let run = |code: i32, err: &str| Captured {
            stdout: vec![],
            stderr: err.as_bytes().to_vec(),
            exit_code: code,
        };
        let e = tar_error(
            "pod/web:/nope",
            None,
            "web",
            &run(
                1,
                "tar: can't change directory to '/nope': No such file or directory\n",
            ),
        )
        .to_string();
        assert!(
            e.contains("pod/web:/nope") && e.contains("No such file"),
            "{e}"
        );
        let e = tar_error(
            "pod/web:/x",
            Some("main"),
            "web",
            &run(127, "exec: tar: not found"),
        )
        .to_string();
        assert!(e.contains("needs `tar`") && e.contains("\"main\""), "{e}");
    }
}
