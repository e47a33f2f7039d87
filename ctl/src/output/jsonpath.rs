//! kubectl's `-o jsonpath=TEMPLATE`, `-o custom-columns=SPEC` and `--sort-by=PATH`.
//!
//! A template is text with `{…}` expressions, as in kubectl: `{.metadata.name}`,
//! `{.items[*].status.podIP}`, `{range .items[*]}{.metadata.name}{"\n"}{end}`, filters
//! such as `{.items[?(@.status.phase=="Running")].metadata.name}`. The path inside the
//! braces is evaluated by `serde_json_path` (RFC 9535 JSONPath, a well-kept crate): a path
//! starting with `.` or `@` is relative to the current object (the range element, else
//! the printed object or `List`), `$` is the root. Template parsing (braces, `range`/`end`,
//! string literals) is kubectl's own syntax, which no crate implements, so it is here.
//!
//! Results are printed as kubectl prints them: strings raw, other values as JSON, several
//! results separated by a space; a path that matches nothing prints nothing.

use std::cmp::Ordering;

use serde_json::Value;
use serde_json_path::JsonPath;

use crate::error::CtlError;

/// One piece of a template.
#[derive(Debug, Clone)]
enum Segment {
    /// Text printed as is (outside braces, or a `{"…"}` literal).
    Text(String),
    /// A path; its results, space-separated.
    Path(JsonPath),
    /// `{range PATH}…{end}`: the body once per result of the path.
    Range(JsonPath, Vec<Segment>),
}

/// A parsed `-o jsonpath=` template.
#[derive(Debug, Clone)]
pub struct Template {
    source: String,
    segments: Vec<Segment>,
}

impl PartialEq for Template {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Template {}

fn bad(what: &str, source: &str, detail: impl std::fmt::Display) -> CtlError {
    CtlError::Usage(format!("{what} {source:?}: {detail}"))
}

/// Parses the path inside braces: `.a.b`, `@.a`, `$.a`, `[0]`, a bare `a.b` (kubectl
/// accepts it for --sort-by and custom columns).
fn parse_path(expr: &str, what: &str, source: &str) -> Result<JsonPath, CtlError> {
    let e = expr.trim();
    let rfc = if let Some(rest) = e.strip_prefix('@') {
        format!("${rest}")
    } else if e.starts_with('$') {
        e.to_string()
    } else if e.starts_with('.') || e.starts_with('[') {
        format!("${e}")
    } else {
        format!("$.{e}")
    };
    // kubectl writes filters as `?(@.x=="y")`: RFC 9535 takes the parenthesised form too.
    JsonPath::parse(&rfc).map_err(|err| bad(what, source, format!("path {e:?}: {err}")))
}

/// Reads a `"…"` literal (with `\n`, `\t`, `\"`, `\\` escapes); `None` if `expr` is not one.
fn literal(expr: &str) -> Option<String> {
    let inner = expr.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

impl Template {
    /// Parses a template; errors name the template and what is wrong.
    pub fn parse(source: &str) -> Result<Template, CtlError> {
        const WHAT: &str = "-o jsonpath template";
        // Open `range` bodies: (path, segments so far); the bottom one is the template.
        let mut stack: Vec<(Option<JsonPath>, Vec<Segment>)> = vec![(None, Vec::new())];
        let mut rest = source;
        while !rest.is_empty() {
            let Some(open) = rest.find('{') else {
                stack
                    .last_mut()
                    .expect("bottom")
                    .1
                    .push(Segment::Text(rest.into()));
                break;
            };
            if open > 0 {
                let text = rest[..open].to_string();
                stack
                    .last_mut()
                    .expect("bottom")
                    .1
                    .push(Segment::Text(text));
            }
            // The closing brace, outside string literals.
            let body = &rest[open + 1..];
            let mut in_str = false;
            let mut escaped = false;
            let mut close = None;
            for (i, c) in body.char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' if in_str => escaped = true,
                    '"' => in_str = !in_str,
                    '}' if !in_str => {
                        close = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let Some(close) = close else {
                return Err(bad(
                    WHAT,
                    source,
                    format!(
                        "unclosed '{{' at character {}",
                        source.len() - rest.len() + open
                    ),
                ));
            };
            let expr = body[..close].trim();
            rest = &body[close + 1..];
            if let Some(path) = expr.strip_prefix("range ") {
                stack.push((Some(parse_path(path, WHAT, source)?), Vec::new()));
            } else if expr == "end" {
                if stack.len() < 2 {
                    return Err(bad(WHAT, source, "{end} without {range …}"));
                }
                let (path, body) = stack.pop().expect("checked");
                stack
                    .last_mut()
                    .expect("bottom")
                    .1
                    .push(Segment::Range(path.expect("a range has a path"), body));
            } else if let Some(text) = literal(expr) {
                stack
                    .last_mut()
                    .expect("bottom")
                    .1
                    .push(Segment::Text(text));
            } else if expr.is_empty() {
                return Err(bad(WHAT, source, "empty {}"));
            } else {
                let p = parse_path(expr, WHAT, source)?;
                stack.last_mut().expect("bottom").1.push(Segment::Path(p));
            }
        }
        if stack.len() > 1 {
            return Err(bad(WHAT, source, "{range …} without {end}"));
        }
        Ok(Template {
            source: source.to_string(),
            segments: stack.pop().expect("bottom").1,
        })
    }

    /// The template applied to `root`.
    pub fn render(&self, root: &Value) -> String {
        let mut out = String::new();
        render_segments(&self.segments, root, &mut out);
        out
    }
}

fn render_segments(segments: &[Segment], current: &Value, out: &mut String) {
    for s in segments {
        match s {
            Segment::Text(t) => out.push_str(t),
            Segment::Path(p) => {
                let texts: Vec<String> = p.query(current).all().into_iter().map(text).collect();
                out.push_str(&texts.join(" "));
            }
            Segment::Range(p, body) => {
                for v in p.query(current).all() {
                    render_segments(body, v, out);
                }
            }
        }
    }
}

/// A value as kubectl prints it: strings raw, the rest as JSON.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One column of `-o custom-columns`.
#[derive(Debug, Clone)]
pub struct Column {
    /// The header.
    pub header: String,
    source: String,
    path: JsonPath,
}

impl PartialEq for Column {
    fn eq(&self, other: &Self) -> bool {
        self.header == other.header && self.source == other.source
    }
}

impl Eq for Column {}

/// Parses `HEADER:PATH,HEADER:PATH…` (paths with or without braces).
pub fn parse_columns(spec: &str) -> Result<Vec<Column>, CtlError> {
    const WHAT: &str = "-o custom-columns";
    if spec.trim().is_empty() {
        return Err(bad(WHAT, spec, "no columns (expected HEADER:PATH,…)"));
    }
    spec.split(',')
        .map(|col| {
            let (header, path) = col.split_once(':').ok_or_else(|| {
                bad(
                    WHAT,
                    spec,
                    format!("column {col:?} is not HEADER:PATH (e.g. NAME:.metadata.name)"),
                )
            })?;
            if header.trim().is_empty() {
                return Err(bad(WHAT, spec, format!("column {col:?} has no header")));
            }
            Ok(Column {
                header: header.trim().to_string(),
                source: path.trim().to_string(),
                path: parse_path(strip_braces(path), WHAT, spec)?,
            })
        })
        .collect()
}

fn strip_braces(p: &str) -> &str {
    let p = p.trim();
    p.strip_prefix('{')
        .and_then(|q| q.strip_suffix('}'))
        .unwrap_or(p)
}

impl Column {
    /// The cell of `item`: its results joined by `,`, `<none>` when there are none.
    pub fn cell(&self, item: &Value) -> String {
        let texts: Vec<String> = self
            .path
            .query(item)
            .all()
            .into_iter()
            .filter(|v| !v.is_null())
            .map(text)
            .collect();
        if texts.is_empty() {
            "<none>".into()
        } else {
            texts.join(",")
        }
    }
}

/// `--sort-by PATH`.
#[derive(Debug, Clone)]
pub struct SortKey {
    path: JsonPath,
}

impl SortKey {
    /// Parses `.metadata.name` or `{.metadata.name}`.
    pub fn parse(spec: &str) -> Result<SortKey, CtlError> {
        Ok(SortKey {
            path: parse_path(strip_braces(spec), "--sort-by", spec)?,
        })
    }

    /// Sorts `items` by the path's first result (stable): numbers by value, quantities and
    /// strings as text, objects without the field first.
    pub fn sort(&self, items: &mut [Value]) {
        items.sort_by(|a, b| {
            let ka = self.path.query(a).first().cloned();
            let kb = self.path.query(b).first().cloned();
            compare(ka.as_ref(), kb.as_ref())
        });
    }
}

fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Some(x), Some(y)) => text(x).cmp(&text(y)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn list() -> Value {
        json!({"kind": "List", "items": [
            {"metadata": {"name": "b", "labels": {"app": "web"}},
             "spec": {"nodeName": "n1"}, "status": {"phase": "Running", "podIP": "10.0.0.2"}},
            {"metadata": {"name": "a"}, "spec": {},
             "status": {"phase": "Pending", "restarts": 10}},
            {"metadata": {"name": "c"}, "spec": {"nodeName": "n2"},
             "status": {"phase": "Running", "podIP": "10.0.0.3", "restarts": 2}},
        ]})
    }

    #[test]
    fn templates_print_paths_ranges_literals_and_filters() {
        let t = |s: &str| Template::parse(s).unwrap().render(&list());
        assert_eq!(t("{.items[*].metadata.name}"), "b a c");
        assert_eq!(t("{.items[0].metadata.labels}"), r#"{"app":"web"}"#);
        assert_eq!(
            t(r#"{range .items[*]}{.metadata.name}{"\t"}{.status.phase}{"\n"}{end}"#),
            "b\tRunning\na\tPending\nc\tRunning\n"
        );
        assert_eq!(
            t(r#"{.items[?(@.status.phase=="Running")].status.podIP}"#),
            "10.0.0.2 10.0.0.3"
        );
        assert_eq!(t("names: {.items[*].metadata.name}!"), "names: b a c!");
        assert_eq!(t("{.items[1].spec.nodeName}"), "");
        assert_eq!(t("{$.kind}"), "List");
        assert_eq!(
            Template::parse("{.metadata.name}")
                .unwrap()
                .render(&json!({"metadata": {"name": "x"}})),
            "x"
        );
    }

    #[test]
    fn bad_templates_are_clear_errors() {
        for (t, want) in [
            ("{.items[*", "unclosed '{'"),
            ("{range .items[*]}{.x}", "without {end}"),
            ("{end}", "without {range"),
            ("{.items[?(@.a==]}", "path"),
            ("{}", "empty"),
        ] {
            let e = Template::parse(t).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("jsonpath"), "{t}: {e}");
        }
    }

    #[test]
    fn custom_columns_and_sorting() {
        let cols =
            parse_columns("NAME:.metadata.name,NODE:{.spec.nodeName},IP:.status.podIP").unwrap();
        let items = list()["items"].as_array().unwrap().clone();
        let cells: Vec<Vec<String>> = items
            .iter()
            .map(|i| cols.iter().map(|c| c.cell(i)).collect())
            .collect();
        assert_eq!(cells[1], ["a", "<none>", "<none>"]);
        assert_eq!(cells[2], ["c", "n2", "10.0.0.3"]);
        for bad_spec in ["NAME", "", ":.a", "A:.b[?"] {
            let e = parse_columns(bad_spec).unwrap_err().to_string();
            assert!(e.contains("custom-columns"), "{bad_spec}: {e}");
        }

        let mut items = list()["items"].as_array().unwrap().clone();
        SortKey::parse(".metadata.name").unwrap().sort(&mut items);
        let names: Vec<&str> = items
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
        // Numbers by value (10 after 2), missing first.
        SortKey::parse("{.status.restarts}")
            .unwrap()
            .sort(&mut items);
        let names: Vec<&str> = items
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["b", "c", "a"]);
        assert!(SortKey::parse(".a[").is_err());
    }
}
