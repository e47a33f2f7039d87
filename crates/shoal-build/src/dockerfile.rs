//! The Dockerfile parser: text in, [`Dockerfile`] out, every instruction with the line it
//! starts on. No I/O.
//!
//! What it reads is Docker's syntax: one instruction per logical line, `\` (or the
//! `# escape=` directive's character) joining physical lines, `#` comment lines (also
//! inside a continued instruction), the exec form (`["a", "b"]`) beside the shell form,
//! `KEY=value` pairs with quotes for ENV, ARG and LABEL, flags (`--from=`, `--chown=`).
//! Variables (`$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR:+alternative}`) are expanded
//! by [`expand`] when the build knows their values, not here.

use std::collections::BTreeMap;

use crate::BuildError;

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// `ARG`s before the first `FROM` (usable in `FROM` lines).
    pub global_args: Vec<(usize, String, Option<String>)>,
    /// The stages, in file order.
    pub stages: Vec<Stage>,
}

/// One `FROM` and the instructions up to the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// Position in the file (0 for the first `FROM`).
    pub index: usize,
    /// The `AS name`, lower-cased as Docker does.
    pub name: Option<String>,
    /// The line of the `FROM`.
    pub line: usize,
    /// The base as written: an image reference, `scratch`, or an earlier stage's name.
    pub from: String,
    /// The instructions after the `FROM`.
    pub instructions: Vec<Instruction>,
}

/// One instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// The line it starts on (1-based).
    pub line: usize,
    /// The instruction as written (continuations joined), for output and cache keys.
    pub text: String,
    /// What it means.
    pub kind: Kind,
}

/// Shell form or exec form of RUN, CMD and ENTRYPOINT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `RUN echo hi`: run with `/bin/sh -c`.
    Shell(String),
    /// `RUN ["echo", "hi"]`: run as it is.
    Exec(Vec<String>),
}

impl Command {
    /// The argv this form runs (`/bin/sh -c TEXT` for the shell form).
    pub fn argv(&self) -> Vec<String> {
        match self {
            Command::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
            Command::Exec(v) => v.clone(),
        }
    }
}

/// COPY and ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopySpec {
    /// Sources (context paths, globs, URLs for ADD), unexpanded.
    pub sources: Vec<String>,
    /// The destination, unexpanded.
    pub dest: String,
    /// `--from=STAGE|IMAGE`.
    pub from: Option<String>,
    /// `--chown=UID[:GID]`.
    pub chown: Option<String>,
}

/// What an instruction does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// RUN.
    Run(Command),
    /// CMD.
    Cmd(Command),
    /// ENTRYPOINT.
    Entrypoint(Command),
    /// ENV pairs (values unexpanded).
    Env(Vec<(String, String)>),
    /// ARG name and default (unexpanded).
    Arg(String, Option<String>),
    /// WORKDIR.
    Workdir(String),
    /// USER.
    User(String),
    /// COPY.
    Copy(CopySpec),
    /// ADD.
    Add(CopySpec),
    /// EXPOSE ports (`80`, `53/udp`).
    Expose(Vec<String>),
    /// VOLUME paths.
    Volume(Vec<String>),
    /// LABEL pairs (values unexpanded); MAINTAINER is the label `maintainer`.
    Label(Vec<(String, String)>),
}

fn err(line: usize, message: impl Into<String>) -> BuildError {
    BuildError::Dockerfile {
        line,
        message: message.into(),
    }
}

/// Instructions Docker has that we do not run yet: refused with this reason.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("ONBUILD", "ONBUILD is not supported"),
    (
        "HEALTHCHECK",
        "HEALTHCHECK is not supported (use a readinessProbe or livenessProbe in the pod)",
    ),
    (
        "SHELL",
        "SHELL is not supported: RUN's shell form always runs /bin/sh -c",
    ),
    (
        "STOPSIGNAL",
        "STOPSIGNAL is not supported: containers are stopped with SIGTERM",
    ),
];

/// The instructions we run.
const KNOWN: &[&str] = &[
    "FROM",
    "RUN",
    "CMD",
    "ENTRYPOINT",
    "ENV",
    "ARG",
    "WORKDIR",
    "USER",
    "COPY",
    "ADD",
    "EXPOSE",
    "VOLUME",
    "LABEL",
    "MAINTAINER",
];

/// Joins continuation lines: (first line number, logical line).
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut escape = '\\';
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    let mut directives = true;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let trimmed = raw.trim();
        if directives {
            // Parser directives: `# key=value` lines before anything else.
            if let Some(d) = trimmed.strip_prefix('#')
                && let Some((k, v)) = d.split_once('=')
                && !k.trim().contains(' ')
            {
                if k.trim().eq_ignore_ascii_case("escape") {
                    escape = v.trim().chars().next().unwrap_or('\\');
                }
                continue;
            }
            directives = false;
        }
        if trimmed.starts_with('#') {
            continue;
        }
        if trimmed.is_empty() && current.is_none() {
            continue;
        }
        let (start, mut buf) = current.take().unwrap_or((n, String::new()));
        let body = raw.trim_end();
        if let Some(stripped) = body.strip_suffix(escape) {
            buf.push_str(stripped);
            current = Some((start, buf));
        } else {
            buf.push_str(body);
            out.push((start, buf.trim().to_string()));
        }
    }
    if let Some((start, buf)) = current
        && !buf.trim().is_empty()
    {
        out.push((start, buf.trim().to_string()));
    }
    out
}

/// Parses a Dockerfile.
pub fn parse(text: &str) -> Result<Dockerfile, BuildError> {
    let mut df = Dockerfile {
        global_args: Vec::new(),
        stages: Vec::new(),
    };
    for (line, logical) in logical_lines(text) {
        let (word, rest) = match logical.split_once(char::is_whitespace) {
            Some((w, r)) => (w, r.trim()),
            None => (logical.as_str(), ""),
        };
        let upper = word.to_ascii_uppercase();
        if let Some((_, why)) = UNSUPPORTED.iter().find(|(k, _)| *k == upper) {
            return Err(err(line, *why));
        }
        if !KNOWN.contains(&upper.as_str()) {
            return Err(err(
                line,
                format!(
                    "unknown instruction {word:?} (expected one of {})",
                    KNOWN.join(", ")
                ),
            ));
        }
        if rest.is_empty() {
            return Err(err(line, format!("{upper} needs arguments")));
        }
        if upper == "FROM" {
            let (flags, args) = split_flags(rest);
            if let Some(f) = flags.first() {
                return Err(err(line, format!("FROM: flag {f} is not supported")));
            }
            let words: Vec<&str> = args.split_whitespace().collect();
            let (from, name) = match words.as_slice() {
                [from] => (from.to_string(), None),
                [from, as_, name] if as_.eq_ignore_ascii_case("as") => {
                    let name = name.to_ascii_lowercase();
                    if !valid_stage_name(&name) {
                        return Err(err(
                            line,
                            format!(
                                "FROM: invalid stage name {name:?} (letters, digits, '-', '_', '.'; starting with a letter)"
                            ),
                        ));
                    }
                    if df.stages.iter().any(|s| s.name.as_deref() == Some(&name)) {
                        return Err(err(
                            line,
                            format!("FROM: stage name {name:?} is used twice"),
                        ));
                    }
                    (from.to_string(), Some(name))
                }
                _ => {
                    return Err(err(
                        line,
                        "FROM: expected `FROM IMAGE` or `FROM IMAGE AS NAME`",
                    ));
                }
            };
            df.stages.push(Stage {
                index: df.stages.len(),
                name,
                line,
                from,
                instructions: Vec::new(),
            });
            continue;
        }
        let kind = parse_instruction(&upper, rest, line)?;
        match df.stages.last_mut() {
            Some(stage) => stage.instructions.push(Instruction {
                line,
                text: format!("{upper} {rest}"),
                kind,
            }),
            None => match kind {
                Kind::Arg(name, default) => df.global_args.push((line, name, default)),
                _ => {
                    return Err(err(
                        line,
                        format!("{upper} before the first FROM (only ARG may come before FROM)"),
                    ));
                }
            },
        }
    }
    if df.stages.is_empty() {
        return Err(err(
            1,
            "no FROM instruction: a Dockerfile starts with FROM IMAGE (or FROM scratch)",
        ));
    }
    Ok(df)
}

fn valid_stage_name(n: &str) -> bool {
    n.starts_with(|c: char| c.is_ascii_alphabetic())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Leading `--flag=value` words and the rest.
fn split_flags(rest: &str) -> (Vec<String>, &str) {
    let mut flags = Vec::new();
    let mut r = rest.trim_start();
    while r.starts_with("--") {
        let end = r.find(char::is_whitespace).unwrap_or(r.len());
        flags.push(r[..end].to_string());
        r = r[end..].trim_start();
    }
    (flags, r)
}

/// Exec form if `rest` is a JSON array of strings, else shell form.
fn command(rest: &str) -> Command {
    if rest.starts_with('[')
        && let Ok(v) = serde_json::from_str::<Vec<String>>(rest)
    {
        return Command::Exec(v);
    }
    Command::Shell(rest.to_string())
}

fn parse_instruction(upper: &str, rest: &str, line: usize) -> Result<Kind, BuildError> {
    let no_flags = |what: &str| -> Result<(), BuildError> {
        let (flags, _) = split_flags(rest);
        match flags.first() {
            Some(f) => Err(err(line, format!("{what}: flag {f} is not supported"))),
            None => Ok(()),
        }
    };
    Ok(match upper {
        "RUN" => {
            no_flags("RUN")?;
            Kind::Run(command(rest))
        }
        "CMD" => Kind::Cmd(command(rest)),
        "ENTRYPOINT" => Kind::Entrypoint(command(rest)),
        "ENV" => Kind::Env(pairs(rest, line, "ENV", true)?),
        "LABEL" => Kind::Label(pairs(rest, line, "LABEL", false)?),
        "MAINTAINER" => Kind::Label(vec![("maintainer".into(), rest.to_string())]),
        "ARG" => {
            let words = words(rest, line)?;
            let [one] = words.as_slice() else {
                return Err(err(line, "ARG: expected one NAME or NAME=default"));
            };
            match one.split_once('=') {
                Some((k, v)) => Kind::Arg(check_key(k, line, "ARG")?, Some(v.to_string())),
                None => Kind::Arg(check_key(one, line, "ARG")?, None),
            }
        }
        "WORKDIR" => Kind::Workdir(rest.to_string()),
        "USER" => Kind::User(rest.to_string()),
        "EXPOSE" => Kind::Expose(rest.split_whitespace().map(String::from).collect()),
        "VOLUME" => Kind::Volume(match command(rest) {
            Command::Exec(v) => v,
            Command::Shell(s) => s.split_whitespace().map(String::from).collect(),
        }),
        "COPY" | "ADD" => {
            let (flags, args) = split_flags(rest);
            let mut spec = CopySpec {
                sources: Vec::new(),
                dest: String::new(),
                from: None,
                chown: None,
            };
            for f in flags {
                let (k, v) = f.split_once('=').unwrap_or((f.as_str(), ""));
                match (k, upper) {
                    ("--from", "COPY") if !v.is_empty() => spec.from = Some(v.to_ascii_lowercase()),
                    ("--chown", _) if !v.is_empty() => spec.chown = Some(v.to_string()),
                    _ => {
                        return Err(err(
                            line,
                            format!(
                                "{upper}: flag {f} is not supported (COPY takes --from=STAGE and --chown=UID[:GID]; ADD takes --chown)"
                            ),
                        ));
                    }
                }
            }
            let mut all = match command(args) {
                Command::Exec(v) => v,
                Command::Shell(_) => words(args, line)?,
            };
            if all.len() < 2 {
                return Err(err(line, format!("{upper}: expected SOURCE... DEST")));
            }
            spec.dest = all.pop().unwrap_or_default();
            spec.sources = all;
            if upper == "COPY" {
                Kind::Copy(spec)
            } else {
                Kind::Add(spec)
            }
        }
        _ => return Err(err(line, format!("unknown instruction {upper}"))),
    })
}

fn check_key(k: &str, line: usize, what: &str) -> Result<String, BuildError> {
    if k.is_empty() || k.contains(char::is_whitespace) {
        return Err(err(line, format!("{what}: invalid name {k:?}")));
    }
    Ok(k.to_string())
}

/// Splits on unquoted whitespace, removing quotes (`"…"` and `'…'`) and keeping escapes
/// (`\"`) as the character.
fn words(s: &str, line: usize) -> Result<Vec<String>, BuildError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut has = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if has {
                    out.push(std::mem::take(&mut cur));
                    has = false;
                }
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                has = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => cur.push(c),
            (_, '\\') => {
                // Keep `\$` so that expansion leaves a literal `$`.
                match chars.next() {
                    Some('$') => cur.push_str("\\$"),
                    Some(n) => cur.push(n),
                    None => cur.push('\\'),
                }
                has = true;
            }
            (_, c) => {
                cur.push(c);
                has = true;
            }
        }
    }
    if quote.is_some() {
        return Err(err(line, format!("unterminated quote in {s:?}")));
    }
    if has {
        out.push(cur);
    }
    Ok(out)
}

/// `K=V K2="v 2"`, or the legacy `K value with spaces` (ENV only).
fn pairs(
    rest: &str,
    line: usize,
    what: &str,
    legacy: bool,
) -> Result<Vec<(String, String)>, BuildError> {
    let first = rest.split_whitespace().next().unwrap_or("");
    if !first.contains('=') {
        if !legacy {
            return Err(err(line, format!("{what}: expected KEY=VALUE pairs")));
        }
        let (k, v) = rest
            .split_once(char::is_whitespace)
            .ok_or_else(|| err(line, format!("{what}: expected KEY=VALUE or KEY VALUE")))?;
        return Ok(vec![(check_key(k, line, what)?, v.trim().to_string())]);
    }
    words(rest, line)?
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) => Ok((check_key(k, line, what)?, v.to_string())),
            None => Err(err(line, format!("{what}: expected KEY=VALUE, got {w:?}"))),
        })
        .collect()
}

/// Expands `$VAR`, `${VAR}`, `${VAR:-default}` and `${VAR:+alternative}` from `vars`
/// (unset: empty); `\$` is a literal `$`.
pub fn expand(s: &str, vars: &BTreeMap<String, String>, line: usize) -> Result<String, BuildError> {
    let mut out = String::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let name_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' && chars.get(i + 1) == Some(&'$') {
            out.push('$');
            i += 2;
            continue;
        }
        if c != '$' {
            out.push(c);
            i += 1;
            continue;
        }
        if chars.get(i + 1) == Some(&'{') {
            let end = chars[i + 2..]
                .iter()
                .position(|&c| c == '}')
                .ok_or_else(|| err(line, format!("unterminated ${{ in {s:?}")))?;
            let inner: String = chars[i + 2..i + 2 + end].iter().collect();
            i += end + 3;
            let (name, op, word) = match inner.find(":-").or_else(|| inner.find(":+")) {
                Some(p) => (&inner[..p], &inner[p..p + 2], &inner[p + 2..]),
                None => (inner.as_str(), "", ""),
            };
            if name.is_empty() || !name.chars().all(name_char) {
                return Err(err(line, format!("bad substitution ${{{inner}}} in {s:?}")));
            }
            let value = vars.get(name).filter(|v| !v.is_empty());
            match (op, value) {
                (":-", None) => out.push_str(&expand(word, vars, line)?),
                (":+", Some(_)) => out.push_str(&expand(word, vars, line)?),
                (":+", None) => {}
                (_, v) => out.push_str(v.map(String::as_str).unwrap_or("")),
            }
            continue;
        }
        let len = chars[i + 1..].iter().take_while(|&&c| name_char(c)).count();
        if len == 0 {
            out.push('$');
            i += 1;
            continue;
        }
        let name: String = chars[i + 1..i + 1 + len].iter().collect();
        out.push_str(vars.get(&name).map(String::as_str).unwrap_or(""));
        i += 1 + len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_of(e: BuildError) -> (usize, String) {
        match e {
            BuildError::Dockerfile { line, message } => (line, message),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn parses_the_three_dockerfiles_of_the_issue() {
        let one = parse("FROM busybox:latest\nRUN echo \"building super simple docker image\"\nCMD echo \"Hi container\"\n").unwrap();
        assert_eq!(one.stages.len(), 1);
        assert_eq!(one.stages[0].from, "busybox:latest");
        assert_eq!(
            one.stages[0].instructions[0].kind,
            Kind::Run(Command::Shell(
                "echo \"building super simple docker image\"".into()
            ))
        );
        assert_eq!(one.stages[0].instructions[1].line, 3);
        let two = parse("FROM first_image\nENV GREETING=hello-env\nWORKDIR /app\nADD note.txt /app/note.txt\nADD files.tar.gz /app/files/\nCMD [\"sh\", \"-c\", \"echo $GREETING; cat note.txt; ls files; pwd\"]\n").unwrap();
        let ins = &two.stages[0].instructions;
        assert_eq!(
            ins[0].kind,
            Kind::Env(vec![("GREETING".into(), "hello-env".into())])
        );
        assert_eq!(ins[1].kind, Kind::Workdir("/app".into()));
        assert_eq!(
            ins[3].kind,
            Kind::Add(CopySpec {
                sources: vec!["files.tar.gz".into()],
                dest: "/app/files/".into(),
                from: None,
                chown: None
            })
        );
        assert_eq!(
            ins[4].kind,
            Kind::Cmd(Command::Exec(vec![
                "sh".into(),
                "-c".into(),
                "echo $GREETING; cat note.txt; ls files; pwd".into()
            ]))
        );
        let three = parse("FROM busybox:latest AS build\nRUN mkdir /out && echo 'echo built-in-stage-one' > /out/app.sh\nFROM busybox:latest\nCOPY --from=build /out/app.sh /app.sh\nCMD [\"sh\", \"/app.sh\"]\n").unwrap();
        assert_eq!(three.stages.len(), 2);
        assert_eq!(three.stages[0].name.as_deref(), Some("build"));
        assert_eq!(three.stages[1].line, 3);
        match &three.stages[1].instructions[0].kind {
            Kind::Copy(c) => assert_eq!(c.from.as_deref(), Some("build")),
            k => panic!("{k:?}"),
        }
    }

    #[test]
    fn continuations_comments_and_directives_keep_line_numbers() {
        let df =
            parse("# escape=`\n# a comment\nFROM scratch\nRUN a `\n  # inside\n  b\n\nENV A=1 `\n")
                .unwrap();
        let ins = &df.stages[0].instructions;
        assert_eq!(df.stages[0].line, 3);
        assert_eq!(ins[0].line, 4);
        assert_eq!(ins[0].kind, Kind::Run(Command::Shell("a   b".into())));
        assert_eq!(ins[1].line, 8);
        assert_eq!(ins[1].kind, Kind::Env(vec![("A".into(), "1".into())]));
    }

    #[test]
    fn env_label_and_arg_forms() {
        let df = parse("ARG BASE=busybox\nFROM $BASE\nENV A=\"x y\" B=z\nENV LEGACY some value\nLABEL \"k\"=\"v w\"\nARG N\nMAINTAINER me\n").unwrap();
        assert_eq!(
            df.global_args,
            vec![(1, "BASE".into(), Some("busybox".into()))]
        );
        let k: Vec<&Kind> = df.stages[0].instructions.iter().map(|i| &i.kind).collect();
        assert_eq!(
            *k[0],
            Kind::Env(vec![("A".into(), "x y".into()), ("B".into(), "z".into())])
        );
        assert_eq!(
            *k[1],
            Kind::Env(vec![("LEGACY".into(), "some value".into())])
        );
        assert_eq!(*k[2], Kind::Label(vec![("k".into(), "v w".into())]));
        assert_eq!(*k[3], Kind::Arg("N".into(), None));
        assert_eq!(*k[4], Kind::Label(vec![("maintainer".into(), "me".into())]));
    }

    #[test]
    fn bad_input_names_the_line() {
        let (l, m) = line_of(parse("FROM busybox\n\nFOO bar\n").unwrap_err());
        assert_eq!(l, 3);
        assert!(m.contains("unknown instruction \"FOO\""), "{m}");
        let (l, m) = line_of(parse("RUN x\nFROM a\n").unwrap_err());
        assert_eq!(l, 1);
        assert!(m.contains("before the first FROM"), "{m}");
        let (_, m) = line_of(parse("# nothing\n").unwrap_err());
        assert!(m.contains("no FROM"), "{m}");
        let (l, m) = line_of(parse("FROM a\nHEALTHCHECK CMD true\n").unwrap_err());
        assert_eq!((l, m.contains("not supported")), (2, true));
        let (l, m) = line_of(parse("FROM a\nCOPY --link a b\n").unwrap_err());
        assert_eq!((l, m.contains("--link")), (2, true));
        let (l, m) = line_of(parse("FROM a\nCOPY onlyone\n").unwrap_err());
        assert_eq!((l, m.contains("SOURCE... DEST")), (2, true));
        let (_, m) = line_of(parse("FROM a AS x\nFROM b AS X\n").unwrap_err());
        assert!(m.contains("used twice"), "{m}");
        let (l, _) = line_of(parse("FROM a\nENV A=\"open\n").unwrap_err());
        assert_eq!(l, 2);
        let (l, m) = line_of(parse("FROM a\nRUN\n").unwrap_err());
        assert_eq!((l, m.contains("needs arguments")), (2, true));
    }

    #[test]
    fn expansion_follows_docker() {
        let vars: BTreeMap<String, String> = [
            ("A".to_string(), "x".to_string()),
            ("E".to_string(), String::new()),
        ]
        .into();
        let e = |s: &str| expand(s, &vars, 1).unwrap();
        assert_eq!(e("$A/${A}/$NONE/"), "x/x//");
        assert_eq!(e("${E:-d}${A:-d}${A:+alt}${E:+alt}"), "dxalt");
        assert_eq!(e("\\$A $ 5$"), "$A $ 5$");
        assert!(expand("${A", &vars, 7).is_err());
        assert!(expand("${A B}", &vars, 7).is_err());
    }
}
