//! Expands `-f` arguments into manifest texts: a file, a directory (its `*.yaml`, `*.yml`
//! and `*.json` files, sorted by name, not recursive) or `-` (standard input).

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::CtlError;

/// One manifest text and the name its errors are reported under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// File path as given (or `<stdin>`).
    pub name: String,
    /// The whole text.
    pub text: String,
}

/// Whether a path looks like a manifest file.
fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("yaml" | "yml" | "json")
    )
}

/// Reads every `-f` argument in order; `stdin` is read at most once, for `-`.
pub fn expand(args: &[PathBuf], stdin: &mut dyn Read) -> Result<Vec<Source>, CtlError> {
    if args.is_empty() {
        return Err(CtlError::Usage(
            "no manifest given: use -f FILE, -f DIRECTORY or -f -".into(),
        ));
    }
    let mut out = Vec::new();
    let mut stdin_used = false;
    for arg in args {
        if arg.as_os_str() == "-" {
            if stdin_used {
                return Err(CtlError::Usage(
                    "-f - (standard input) given more than once".into(),
                ));
            }
            stdin_used = true;
            let mut text = String::new();
            stdin
                .read_to_string(&mut text)
                .map_err(|source| CtlError::Io {
                    path: "<stdin>".into(),
                    source,
                })?;
            out.push(Source {
                name: "<stdin>".into(),
                text,
            });
            continue;
        }
        let shown = arg.display().to_string();
        let io = |source| CtlError::Io {
            path: shown.clone(),
            source,
        };
        let meta = std::fs::metadata(arg).map_err(io)?;
        if meta.is_dir() {
            let mut files = Vec::new();
            for entry in std::fs::read_dir(arg).map_err(io)? {
                let path = entry.map_err(io)?.path();
                if path.is_file() && is_manifest(&path) {
                    files.push(path);
                }
            }
            files.sort();
            if files.is_empty() {
                return Err(CtlError::Usage(format!(
                    "{shown}: no manifest files (*.yaml, *.yml, *.json) in this directory"
                )));
            }
            for f in files {
                out.push(read_file(&f)?);
            }
        } else {
            out.push(read_file(arg)?);
        }
    }
    Ok(out)
}

fn read_file(path: &Path) -> Result<Source, CtlError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| CtlError::Io {
        path: name.clone(),
        source,
    })?;
    Ok(Source { name, text })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(sources: &[Source]) -> Vec<String> {
        sources
            .iter()
            .map(|s| {
                Path::new(&s.name)
                    .file_name()
                    .map_or(s.name.clone(), |f| f.to_string_lossy().into_owned())
            })
            .collect()
    }

    #[test]
    fn directory_expands_to_sorted_manifest_files() {
        let dir = tempfile::tempdir().unwrap();
        for (f, body) in [
            ("b.yml", "b"),
            ("a.yaml", "a"),
            ("c.json", "c"),
            ("notes.txt", "x"),
            ("Z.YAML", "z"),
        ] {
            std::fs::write(dir.path().join(f), body).unwrap();
        }
        std::fs::create_dir(dir.path().join("sub.yaml")).unwrap();
        let got = expand(&[dir.path().to_path_buf()], &mut std::io::empty()).unwrap();
        assert_eq!(names(&got), ["Z.YAML", "a.yaml", "b.yml", "c.json"]);
        assert_eq!(got[1].text, "a");
    }

    #[test]
    fn files_stdin_and_order_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("one.yaml");
        std::fs::write(&f, "kind: Pod").unwrap();
        let mut stdin = "kind: Service".as_bytes();
        let got = expand(&[PathBuf::from("-"), f.clone()], &mut stdin).unwrap();
        assert_eq!(
            got[0],
            Source {
                name: "<stdin>".into(),
                text: "kind: Service".into()
            }
        );
        assert_eq!(got[1].text, "kind: Pod");
        assert_eq!(got[1].name, f.display().to_string());
    }

    #[test]
    fn errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.yaml");
        let e = expand(std::slice::from_ref(&missing), &mut std::io::empty())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(&missing.display().to_string()), "{e}");
        let e = expand(&[dir.path().to_path_buf()], &mut std::io::empty())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no manifest files"), "{e}");
        let e = expand(
            &[PathBuf::from("-"), PathBuf::from("-")],
            &mut std::io::empty(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("more than once"), "{e}");
        assert!(expand(&[], &mut std::io::empty()).is_err());
    }
}
