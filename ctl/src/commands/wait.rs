//! `shoalctl wait TYPE/NAME… --for=condition=C[=V] | --for=delete | --for=jsonpath='{…}'=V`:
//! reads the objects until each meets the condition or the timeout passes, like kubectl
//! wait. [`WaitFor`] (parsing and judging one object) is pure.

use std::time::Duration;

use serde_json::Value;

use super::{Context, print};
use crate::cli::WaitArgs;
use crate::error::CtlError;
use crate::kinds::{self, KindInfo};
use crate::output::jsonpath::Template;
use crate::output::{self};

/// How often the objects are read again.
const POLL: Duration = Duration::from_millis(250);

/// What to wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitFor {
    /// `condition=TYPE[=STATUS]`: `status.conditions[type=TYPE].status` is STATUS
    /// (default `True`, compared without case).
    Condition(String, String),
    /// `delete`: the object is gone.
    Delete,
    /// `jsonpath='{PATH}'=VALUE`: the path's result prints as VALUE.
    JsonPath(Template, String),
}

impl WaitFor {
    /// Parses the value of `--for`.
    pub fn parse(spec: &str) -> Result<WaitFor, CtlError> {
        let bad = |why: &str| {
            CtlError::Usage(format!(
                "--for {spec:?}: {why} (expected condition=NAME[=VALUE], delete, or jsonpath='{{PATH}}'=VALUE)"
            ))
        };
        if spec == "delete" {
            return Ok(WaitFor::Delete);
        }
        if let Some(c) = spec.strip_prefix("condition=") {
            let (name, value) = c.split_once('=').unwrap_or((c, "True"));
            if name.is_empty() || value.is_empty() {
                return Err(bad("empty condition name or value"));
            }
            return Ok(WaitFor::Condition(name.to_string(), value.to_string()));
        }
        if let Some(j) = spec.strip_prefix("jsonpath=") {
            // The template ends at the last '}' followed by '='.
            let Some(end) = j.rfind("}=") else {
                return Err(bad("a jsonpath condition needs a value after '='"));
            };
            let (path, value) = (&j[..=end], &j[end + 2..]);
            return Ok(WaitFor::JsonPath(Template::parse(path)?, value.to_string()));
        }
        Err(bad("unknown condition"))
    }

    /// True when `obj` (None: the object does not exist) meets the condition.
    pub fn met(&self, obj: Option<&Value>) -> bool {
        match (self, obj) {
            (WaitFor::Delete, o) => o.is_none(),
            (_, None) => false,
            (WaitFor::Condition(name, want), Some(o)) => o
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|c| {
                    c.get("type").and_then(Value::as_str) == Some(name.as_str())
                        && c.get("status")
                            .and_then(Value::as_str)
                            .is_some_and(|s| s.eq_ignore_ascii_case(want))
                }),
            (WaitFor::JsonPath(t, want), Some(o)) => t.render(o) == *want,
        }
    }

    /// kubectl's line when met: `condition met` or `deleted`.
    fn done(&self) -> &'static str {
        match self {
            WaitFor::Delete => "deleted",
            _ => "condition met",
        }
    }
}

/// Runs `wait`.
pub async fn run(ctx: &mut Context, args: WaitArgs) -> Result<(), CtlError> {
    let cond = WaitFor::parse(&args.for_)?;
    let (kind, mut names) = targets(&args.targets)?;
    let ns = ctx.namespace_for(&kind);
    if let Some(sel) = &args.selector {
        if !names.is_empty() {
            return Err(CtlError::Usage(
                "give object names or -l SELECTOR, not both".into(),
            ));
        }
        shoal_api::selector::LabelSelector::parse(sel)
            .map_err(|e| CtlError::Usage(e.to_string()))?;
        let (items, _) = ctx.list(&kind, &ns, sel, "").await?;
        names = items
            .iter()
            .map(|v| output::name_of(v).to_string())
            .collect();
        if names.is_empty() {
            return Err(CtlError::NotFound(format!(
                "no {} match {sel:?} in namespace {ns}",
                kind.plural
            )));
        }
    }
    if names.is_empty() {
        return Err(CtlError::Usage(format!(
            "which {}? give TYPE/NAME or -l SELECTOR",
            kind.singular
        )));
    }
    let deadline = tokio::time::Instant::now() + args.timeout;
    for name in &names {
        loop {
            let obj = match ctx.get(&kind, &ns, name).await {
                Ok(v) => Some(v),
                Err(CtlError::NotFound(_)) if cond == WaitFor::Delete => None,
                Err(e) => return Err(e),
            };
            if cond.met(obj.as_ref()) {
                print(&format!("{} {}\n", kind.slash_name(name), cond.done()))?;
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(CtlError::WaitTimeout(format!(
                    "timed out after {} waiting for --for {} on {}",
                    output::human_age(chrono::Duration::from_std(args.timeout).unwrap_or_default()),
                    args.for_,
                    kind.slash_name(name)
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(())
}

/// `TYPE/NAME…` (one type) or `TYPE NAME…`.
fn targets(args: &[String]) -> Result<(KindInfo, Vec<String>), CtlError> {
    let Some(first) = args.first() else {
        return Err(CtlError::Usage("what to wait for? give TYPE/NAME".into()));
    };
    if first.contains('/') {
        let mut kind = None;
        let mut names = Vec::new();
        for a in args {
            let (k, n) = kinds::split_kind_name(a)?;
            if kind
                .as_ref()
                .is_some_and(|prev: &KindInfo| prev.kind != k.kind)
            {
                return Err(CtlError::Usage(
                    "wait takes objects of one type at a time".into(),
                ));
            }
            names.extend(n);
            kind = Some(k);
        }
        Ok((kind.expect("one argument at least"), names))
    } else {
        Ok((kinds::resolve(first)?, args[1..].to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conditions_parse_and_judge_objects() {
        let pod = json!({"status": {"phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}]}});
        let ready = WaitFor::parse("condition=Ready").unwrap();
        assert!(ready.met(Some(&pod)));
        assert!(!ready.met(None));
        assert!(
            !WaitFor::parse("condition=Ready=false")
                .unwrap()
                .met(Some(&pod))
        );
        assert!(WaitFor::parse("condition=ready=TRUE").is_ok());
        let phase = WaitFor::parse("jsonpath={.status.phase}=Running").unwrap();
        assert!(phase.met(Some(&pod)));
        assert!(
            !WaitFor::parse("jsonpath={.status.phase}=Pending")
                .unwrap()
                .met(Some(&pod))
        );
        assert!(WaitFor::Delete.met(None));
        assert!(!WaitFor::Delete.met(Some(&pod)));
        for bad in [
            "ready",
            "condition=",
            "jsonpath={.status.phase}",
            "jsonpath={.a[}=x",
        ] {
            let e = WaitFor::parse(bad).unwrap_err().to_string();
            assert!(e.contains("--for") || e.contains("jsonpath"), "{bad}: {e}");
        }
    }
}
