//! `shoalctl edit TYPE/NAME`: the object as YAML in an editor (`$VISUAL`, else
//! `$EDITOR`, else `vi`; run through `sh -c`, so `EDITOR="code --wait"` works), then
//! written back with Update if it changed. The YAML carries the object's
//! resourceVersion, so the write fails if someone else changed the object meanwhile.
//! When the write fails, or the edited text is not a valid object, the edited file is
//! kept and its path is part of the error.

use std::path::{Path, PathBuf};

use serde_json::Value;
use shoal_api::{Kind, Object};

use super::{Context, note, one_target, print};
use crate::cli::EditArgs;
use crate::error::CtlError;
use crate::merge;

/// The comment put above the YAML (and removed before it is read back).
const HEADER: &str = "\
# Please edit the object below. Lines beginning with a '#' at the top are ignored,
# and an empty file aborts the edit. The object is written back only if it changed,
# and only if nobody else changed it in the meantime (its resourceVersion).
#
";

/// Runs `edit`.
pub async fn run(ctx: &mut Context, args: EditArgs) -> Result<(), CtlError> {
    let all: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
    let (kind, name) = one_target(&args.target, &all)?;
    let ns = ctx.namespace_for(&kind);
    let obj = ctx.get(&kind, &ns, &name).await?;
    let original = yaml_of(&obj);
    let file = EditFile::create(kind.singular, &format!("{HEADER}{original}"))?;
    run_editor(file.path())?;
    let text = std::fs::read_to_string(file.path()).map_err(|source| CtlError::Io {
        path: file.path().display().to_string(),
        source,
    })?;
    let edited = match edited_object(&obj, &text) {
        Ok(Some(v)) => v,
        Ok(None) => {
            note("Edit cancelled, no changes made.");
            return Ok(());
        }
        Err(e) => return Err(file.keep(e)),
    };
    // On a conflict, the edit is carried over to the current object when nobody else
    // changed what it changes (a controller updating status does not stop an edit);
    // otherwise it fails with the fields both changed.
    let mut to_write = edited.clone();
    let mut attempt = 0;
    loop {
        attempt += 1;
        match ctx.update(&kind, &to_write).await {
            Ok(_) => return print(&format!("{} edited\n", kind.slash_name(&name))),
            Err(CtlError::Conflict(m)) if attempt < super::MODIFY_ATTEMPTS => {
                let current = ctx.get(&kind, &ns, &name).await?;
                match rebase(&obj, &edited, &current) {
                    Ok(v) => to_write = v,
                    Err(paths) => {
                        return Err(file.keep(CtlError::Conflict(format!(
                            "{m}: {} {name:?} was changed meanwhile where the edit changes it ({})",
                            kind.singular,
                            paths.join(", ")
                        ))));
                    }
                }
            }
            Err(e) => return Err(file.keep(e)),
        }
    }
}

/// The edit (`original` → `edited`) carried over to `current`: the three-way merge of
/// [`merge::three_way`] on the objects without server metadata and status, so the
/// result has `current`'s resourceVersion and status. Fails with the paths (JSON
/// pointers) that both the edit and someone else changed.
pub fn rebase(original: &Value, edited: &Value, current: &Value) -> Result<Value, Vec<String>> {
    let (o, e, c) = (
        merge::comparable(original),
        merge::comparable(edited),
        merge::comparable(current),
    );
    let mine: Vec<String> = json_patch::diff(&o, &e)
        .iter()
        .map(|op| op.path().to_string())
        .collect();
    let theirs: Vec<String> = json_patch::diff(&o, &c)
        .iter()
        .map(|op| op.path().to_string())
        .collect();
    let overlaps = |a: &str, b: &str| {
        a == b || a.starts_with(&format!("{b}/")) || b.starts_with(&format!("{a}/"))
    };
    let mut both: Vec<String> = mine
        .iter()
        .filter(|m| theirs.iter().any(|t| overlaps(m, t)))
        .cloned()
        .collect();
    both.dedup();
    if !both.is_empty() {
        return Err(both);
    }
    Ok(merge::three_way(Some(&o), &e, current))
}

/// The command the edit runs in: `$VISUAL`, else `$EDITOR`, else `vi`.
fn editor() -> String {
    ["VISUAL", "EDITOR"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "vi".into())
}

/// Runs the editor on `path` with this terminal; a failing editor aborts the edit.
fn run_editor(path: &Path) -> Result<(), CtlError> {
    let editor = editor();
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(path)
        .status()
        .map_err(|source| CtlError::Io {
            path: format!("editor {editor:?}"),
            source,
        })?;
    if !status.success() {
        return Err(CtlError::NotPossible(format!(
            "editor {editor:?} failed ({status}); nothing was changed"
        )));
    }
    Ok(())
}

/// The object as `edit` shows it: YAML in its fields' declared order.
fn yaml_of(v: &Value) -> String {
    match Object::from_json(v) {
        Ok(o) => o.to_yaml_string(),
        Err(_) => serde_yaml_ng::to_string(v).unwrap_or_else(|e| format!("# {e}\n")),
    }
}

/// The text without the comment lines at its top.
pub fn strip_header(text: &str) -> &str {
    let mut rest = text;
    while rest.starts_with('#') {
        rest = rest.split_once('\n').map_or("", |(_, r)| r);
    }
    rest
}

/// Reads the edited text back: None when it is empty or describes the same object (no
/// change to write), else the object to write, decoded, defaulted and validated. It
/// must stay the same object (kind, name, namespace).
pub fn edited_object(original: &Value, text: &str) -> Result<Option<Value>, CtlError> {
    let body = strip_header(text);
    if body.trim().is_empty() {
        return Ok(None);
    }
    let value: Value = serde_yaml_ng::from_str(body)
        .map_err(|e| CtlError::Manifest(format!("the edited object is not valid YAML: {e}")))?;
    for (ptr, what) in [
        ("/kind", "kind"),
        ("/metadata/name", "metadata.name"),
        ("/metadata/namespace", "metadata.namespace"),
    ] {
        if value.pointer(ptr) != original.pointer(ptr) {
            return Err(CtlError::Manifest(format!(
                "the edit changes {what}, which identifies the object (create a new one instead)"
            )));
        }
    }
    let invalid = |e: shoal_api::ValidationErrors| {
        CtlError::Manifest(
            e.errors
                .iter()
                .map(|f| format!("the edited object is invalid: {f}"))
                .collect::<Vec<_>>()
                .join("\n"),
        )
    };
    let mut o = Object::from_json(&value).map_err(invalid)?;
    o.set_defaults();
    o.validate().map_err(invalid)?;
    let edited = o.to_json();
    // Compared as the same decoding would show the original (defaults filled in).
    let original = match Object::from_json(original) {
        Ok(mut o) => {
            o.set_defaults();
            o.to_json()
        }
        Err(_) => original.clone(),
    };
    let unchanged = merge::comparable(&edited) == merge::comparable(&original)
        && edited.get("status") == original.get("status");
    Ok((!unchanged).then_some(edited))
}

/// The temporary file the editor works on; removed on drop unless [`EditFile::keep`]
/// hands it to the user.
#[derive(Debug)]
struct EditFile {
    path: PathBuf,
    kept: bool,
}

impl EditFile {
    /// Creates a new file (never an existing one) with `text`.
    fn create(what: &str, text: &str) -> Result<EditFile, CtlError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = std::env::temp_dir();
        for n in 0..100 {
            let path = dir.join(format!(
                "shoalctl-edit-{what}-{}-{n}.yaml",
                std::process::id()
            ));
            // Only the user may read it: objects may hold secrets.
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(mut f) => {
                    let file = EditFile { path, kept: false };
                    f.write_all(text.as_bytes())
                        .map_err(|source| CtlError::Io {
                            path: file.path.display().to_string(),
                            source,
                        })?;
                    return Ok(file);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(source) => {
                    return Err(CtlError::Io {
                        path: path.display().to_string(),
                        source,
                    });
                }
            }
        }
        Err(CtlError::NotPossible(format!(
            "cannot create a temporary file in {}",
            dir.display()
        )))
    }

    fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the file and adds its path to `e`.
    fn keep(mut self, e: CtlError) -> CtlError {
        self.kept = true;
        let kept = format!("your edit is kept in {}", self.path.display());
        match e {
            CtlError::Manifest(m) => CtlError::Manifest(format!("{m}\n{kept}")),
            CtlError::Conflict(m) => CtlError::Conflict(format!("{m}; {kept}")),
            other => CtlError::NotPossible(format!("{other}; {kept}")),
        }
    }
}

impl Drop for EditFile {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({"apiVersion": "shoal/v1", "kind": "Pod",
               "metadata": {"name": "p", "namespace": "default", "resourceVersion": "4", "labels": {"app": "x"}},
               "spec": {"containers": [{"name": "c", "image": "busybox"}]},
               "status": {"phase": "Running"}})
    }

    #[test]
    fn the_header_is_ignored_and_no_change_writes_nothing() {
        let text = format!("{HEADER}{}", yaml_of(&pod()));
        assert_eq!(strip_header(&text), yaml_of(&pod()));
        assert_eq!(edited_object(&pod(), &text).unwrap(), None);
        assert_eq!(edited_object(&pod(), HEADER).unwrap(), None);
        assert_eq!(edited_object(&pod(), "").unwrap(), None);
    }

    #[test]
    fn a_change_is_the_object_to_write_with_its_resource_version() {
        let text = yaml_of(&pod()).replace("app: x", "app: y");
        let out = edited_object(&pod(), &text).unwrap().unwrap();
        assert_eq!(out["metadata"]["labels"]["app"], "y");
        assert_eq!(out["metadata"]["resourceVersion"], "4");
    }

    #[test]
    fn an_edit_is_carried_over_unless_someone_changed_the_same_field() {
        let original = pod();
        let edited = edited_object(&original, &yaml_of(&original).replace("app: x", "app: y"))
            .unwrap()
            .unwrap();
        // Someone else changed status and another label: the edit goes on top.
        let mut current = pod();
        current["metadata"]["resourceVersion"] = json!("9");
        current["metadata"]["labels"]["other"] = json!("z");
        current["status"]["phase"] = json!("Succeeded");
        let out = rebase(&original, &edited, &current).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"app": "y", "other": "z"}));
        assert_eq!(out["metadata"]["resourceVersion"], "9");
        assert_eq!(out["status"]["phase"], "Succeeded");
        // Someone else changed the same label: a conflict naming it.
        current["metadata"]["labels"]["app"] = json!("w");
        assert_eq!(
            rebase(&original, &edited, &current).unwrap_err(),
            ["/metadata/labels/app"]
        );
    }

    #[test]
    fn invalid_edits_say_why() {
        let e = edited_object(&pod(), &yaml_of(&pod()).replace("name: p", "name: q"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("the edit changes metadata.name"), "{e}");
        let e = edited_object(
            &pod(),
            &yaml_of(&pod()).replace("image: busybox", "imag: busybox"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("the edited object is invalid: spec.containers[0].imag: unknown field `imag`, did you mean `image`?"),
            "{e}"
        );
        let e = edited_object(&pod(), "kind: [").unwrap_err().to_string();
        assert!(e.starts_with("the edited object is not valid YAML"), "{e}");
    }
}
