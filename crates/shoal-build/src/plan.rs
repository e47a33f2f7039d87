//! The build plan: which stages to build and in which order, what each stage's base is,
//! which stage or image every `COPY --from` names, and the cache key of a step. Pure.

use std::collections::BTreeMap;

use sha2::{Digest as _, Sha256};

use crate::BuildError;
use crate::dockerfile::{Dockerfile, Kind, expand};

/// Where a stage starts from, or where `COPY --from` copies from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `FROM scratch`: nothing.
    Scratch,
    /// An image reference (resolved like a pod's image: the cluster, then its registry).
    Image(String),
    /// An earlier stage, by index.
    Stage(usize),
}

/// The stages to build, dependencies first, and the base of each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildPlan {
    /// Stage indexes in build order; the last is the target.
    pub order: Vec<usize>,
    /// The base of every stage (by index; stages not in `order` too).
    pub bases: Vec<Source>,
    /// `COPY --from` of every stage: (instruction index in the stage, source).
    pub copies_from: Vec<Vec<(usize, Source)>>,
    /// The values of the global ARGs (defaults, overridden by `--build-arg`).
    pub global_args: BTreeMap<String, String>,
    /// `--build-arg`s no ARG of the built stages declares (Docker warns about them).
    pub unused_args: Vec<String>,
}

impl BuildPlan {
    /// The target stage's index.
    pub fn target(&self) -> usize {
        self.order.last().copied().unwrap_or(0)
    }
}

fn err(line: usize, message: impl Into<String>) -> BuildError {
    BuildError::Dockerfile {
        line,
        message: message.into(),
    }
}

/// A stage named by `name` (a stage name or its index) among the stages before
/// `before`; `Ok(None)` when it names no stage at all (then it is an image).
fn stage_ref(
    df: &Dockerfile,
    name: &str,
    before: usize,
    line: usize,
    what: &str,
) -> Result<Option<usize>, BuildError> {
    let lower = name.to_ascii_lowercase();
    let found = df
        .stages
        .iter()
        .find(|s| s.name.as_deref() == Some(lower.as_str()))
        .map(|s| s.index)
        .or_else(|| name.parse::<usize>().ok().filter(|i| *i < df.stages.len()));
    match found {
        Some(i) if i == before => Err(err(
            line,
            format!(
                "{what} {name:?} is the stage itself: a stage cannot depend on itself (cyclic --from)"
            ),
        )),
        Some(i) if i > before => Err(err(
            line,
            format!(
                "{what} {name:?} is a later stage (line {}): stages may only use earlier ones (cyclic --from)",
                df.stages[i].line
            ),
        )),
        Some(i) => Ok(Some(i)),
        None if name.parse::<usize>().is_ok() => Err(err(
            line,
            format!(
                "{what} {name:?}: there is no stage {name} (the file has {})",
                df.stages.len()
            ),
        )),
        None => Ok(None),
    }
}

/// Plans the build of `target` (a stage name; `None`: the last stage) with `build_args`.
pub fn plan(
    df: &Dockerfile,
    target: Option<&str>,
    build_args: &BTreeMap<String, String>,
) -> Result<BuildPlan, BuildError> {
    let mut global_args = BTreeMap::new();
    for (line, name, default) in &df.global_args {
        let value = match build_args.get(name) {
            Some(v) => v.clone(),
            None => expand(default.as_deref().unwrap_or(""), &global_args, *line)?,
        };
        global_args.insert(name.clone(), value);
    }
    let mut bases = Vec::new();
    let mut copies_from = Vec::new();
    for s in &df.stages {
        let from = expand(&s.from, &global_args, s.line)?;
        if from.is_empty() {
            return Err(err(
                s.line,
                format!("FROM {}: the image name is empty", s.from),
            ));
        }
        let base = if from.eq_ignore_ascii_case("scratch") {
            Source::Scratch
        } else {
            match stage_ref(df, &from, s.index, s.line, "FROM")? {
                Some(i) => Source::Stage(i),
                None => Source::Image(from),
            }
        };
        bases.push(base);
        let mut copies = Vec::new();
        for (i, ins) in s.instructions.iter().enumerate() {
            if let Kind::Copy(c) = &ins.kind
                && let Some(from) = &c.from
            {
                let src = match stage_ref(df, from, s.index, ins.line, "COPY --from")? {
                    Some(i) => Source::Stage(i),
                    None => Source::Image(from.clone()),
                };
                copies.push((i, src));
            }
        }
        copies_from.push(copies);
    }
    let target = match target {
        None => df.stages.len() - 1,
        Some(t) => {
            let lower = t.to_ascii_lowercase();
            df.stages
                .iter()
                .find(|s| s.name.as_deref() == Some(lower.as_str()))
                .map(|s| s.index)
                .ok_or_else(|| {
                    let names: Vec<&str> =
                        df.stages.iter().filter_map(|s| s.name.as_deref()).collect();
                    BuildError::Target(format!(
                        "target stage {t:?} not found (the Dockerfile names: {})",
                        if names.is_empty() {
                            "none".to_string()
                        } else {
                            names.join(", ")
                        }
                    ))
                })?
        }
    };
    // Dependencies first. Every edge points to an earlier stage, so this terminates.
    let mut order = Vec::new();
    let mut todo = vec![target];
    let mut needed = vec![false; df.stages.len()];
    while let Some(i) = todo.pop() {
        if needed[i] {
            continue;
        }
        needed[i] = true;
        if let Source::Stage(b) = bases[i] {
            todo.push(b);
        }
        for (_, s) in &copies_from[i] {
            if let Source::Stage(b) = s {
                todo.push(*b);
            }
        }
    }
    order.extend((0..df.stages.len()).filter(|i| needed[*i]));
    let mut declared: Vec<&str> = df.global_args.iter().map(|(_, n, _)| n.as_str()).collect();
    for i in &order {
        for ins in &df.stages[*i].instructions {
            if let Kind::Arg(n, _) = &ins.kind {
                declared.push(n);
            }
        }
    }
    let unused_args = build_args
        .keys()
        .filter(|k| !declared.contains(&k.as_str()))
        .cloned()
        .collect();
    Ok(BuildPlan {
        order,
        bases,
        copies_from,
        global_args,
        unused_args,
    })
}

/// The cache key of a step: the state it starts from (the parent image's manifest
/// digest), the instruction as it runs (variables expanded), and what else decides its
/// result (the content hash of copied files, the build arguments in effect).
pub fn cache_key(
    parent: &str,
    instruction: &str,
    content: &str,
    args: &BTreeMap<String, String>,
) -> String {
    let mut h = Sha256::new();
    for part in [parent, instruction, content] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    for (k, v) in args {
        h.update((k.len() as u64).to_le_bytes());
        h.update(k.as_bytes());
        h.update((v.len() as u64).to_le_bytes());
        h.update(v.as_bytes());
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerfile::parse;

    fn args(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn multi_stage_order_bases_and_target() {
        let df = parse("ARG V=1\nFROM busybox:$V AS build\nRUN x\nFROM scratch AS other\nFROM build\nCOPY --from=0 /a /b\nCOPY --from=alpine:3 /c /d\n").unwrap();
        let p = plan(&df, None, &BTreeMap::new()).unwrap();
        assert_eq!(p.order, vec![0, 2]);
        assert_eq!(
            p.bases,
            vec![
                Source::Image("busybox:1".into()),
                Source::Scratch,
                Source::Stage(0)
            ]
        );
        assert_eq!(
            p.copies_from[2],
            vec![(0, Source::Stage(0)), (1, Source::Image("alpine:3".into()))]
        );
        let p = plan(&df, Some("OTHER"), &args(&[("V", "2"), ("X", "y")])).unwrap();
        assert_eq!(p.order, vec![1]);
        assert_eq!(p.bases[0], Source::Image("busybox:2".into()));
        assert_eq!(p.unused_args, vec!["X".to_string()]);
        let e = plan(&df, Some("nope"), &BTreeMap::new()).unwrap_err();
        assert!(e.to_string().contains("build, other"), "{e}");
    }

    #[test]
    fn cyclic_from_is_an_error_with_the_line() {
        let df = parse(
            "FROM busybox AS a\nCOPY --from=b /x /y\nFROM busybox AS b\nCOPY --from=a /x /y\n",
        )
        .unwrap();
        let e = plan(&df, None, &BTreeMap::new()).unwrap_err();
        assert!(
            e.to_string().contains("line 2") && e.to_string().contains("cyclic"),
            "{e}"
        );
        let df = parse("FROM busybox AS a\nCOPY --from=a /x /y\n").unwrap();
        let e = plan(&df, None, &BTreeMap::new()).unwrap_err();
        assert!(e.to_string().contains("itself"), "{e}");
        let df = parse("FROM busybox\nCOPY --from=3 /x /y\n").unwrap();
        assert!(plan(&df, None, &BTreeMap::new()).is_err());
    }

    #[test]
    fn cache_keys_change_with_each_input() {
        let a = args(&[("A", "1")]);
        let k = cache_key("sha256:1", "RUN x", "", &a);
        assert_eq!(k, cache_key("sha256:1", "RUN x", "", &a));
        assert_ne!(k, cache_key("sha256:2", "RUN x", "", &a));
        assert_ne!(k, cache_key("sha256:1", "RUN y", "", &a));
        assert_ne!(k, cache_key("sha256:1", "RUN x", "c", &a));
        assert_ne!(k, cache_key("sha256:1", "RUN x", "", &args(&[("A", "2")])));
        assert_ne!(cache_key("ab", "c", "", &a), cache_key("a", "bc", "", &a));
    }
}
