//! Label selectors: the command-line form (`app=web,tier!=db,env in (a,b),!canary`)
//! and the manifest form (`matchLabels` + `matchExpressions`), both parsed into a
//! [`LabelSelector`] that matches label maps.

use crate::validation::{check_label_key, check_label_value};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

/// Why a selector was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The command-line form could not be parsed.
    #[error("invalid label selector {input:?} at character {position}: {message}")]
    Syntax {
        /// The whole selector text.
        input: String,
        /// 1-based character position of the problem.
        position: usize,
        /// What was expected.
        message: String,
    },
    /// A requirement is not valid (bad key or value, wrong number of values).
    #[error("{field}: {message}")]
    Invalid {
        /// Field of the manifest form (`matchExpressions[0].values`), or the key for the
        /// command-line form.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// How a requirement compares a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operator {
    /// `key=value` or `key==value`: the label is present with this value.
    Equals,
    /// `key!=value`: the label is absent or has another value.
    NotEquals,
    /// `key in (a,b)`: the label is present with one of the values.
    In,
    /// `key notin (a,b)`: the label is absent or has none of the values.
    NotIn,
    /// `key`: the label is present.
    Exists,
    /// `!key`: the label is absent.
    DoesNotExist,
}

/// One condition on one label key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// The comparison.
    pub operator: Operator,
    /// The values (one for `=`/`!=`, one or more for `in`/`notin`, none otherwise).
    pub values: BTreeSet<String>,
}

impl Requirement {
    /// Builds a requirement, checking the key, the values and their number.
    pub fn new(
        key: impl Into<String>,
        operator: Operator,
        values: impl IntoIterator<Item = String>,
    ) -> Result<Requirement, SelectorError> {
        let key = key.into();
        let values: BTreeSet<String> = values.into_iter().collect();
        let invalid = |message: String| SelectorError::Invalid {
            field: key.clone(),
            message,
        };
        check_label_key(&key).map_err(invalid)?;
        for v in &values {
            check_label_value(v).map_err(invalid)?;
        }
        match operator {
            Operator::Equals | Operator::NotEquals if values.len() != 1 => {
                return Err(invalid("'=' and '!=' take exactly one value".into()));
            }
            Operator::In | Operator::NotIn if values.is_empty() => {
                return Err(invalid("'in' and 'notin' need at least one value".into()));
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                return Err(invalid("'exists' and '!' take no values".into()));
            }
            _ => {}
        }
        Ok(Requirement {
            key,
            operator,
            values,
        })
    }

    /// True when `labels` satisfy this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.key);
        match self.operator {
            Operator::Equals | Operator::In => v.is_some_and(|v| self.values.contains(v)),
            Operator::NotEquals | Operator::NotIn => !v.is_some_and(|v| self.values.contains(v)),
            Operator::Exists => v.is_some(),
            Operator::DoesNotExist => v.is_none(),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = self.values.iter().next().map_or("", String::as_str);
        let list = || self.values.iter().cloned().collect::<Vec<_>>().join(",");
        match self.operator {
            Operator::Equals => write!(f, "{}={}", self.key, first),
            Operator::NotEquals => write!(f, "{}!={}", self.key, first),
            Operator::In => write!(f, "{} in ({})", self.key, list()),
            Operator::NotIn => write!(f, "{} notin ({})", self.key, list()),
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
        }
    }
}

/// A parsed selector: every requirement must hold. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct LabelSelector {
    /// The requirements, in the order written.
    pub requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Eq,
    NotEq,
    Bang,
    LParen,
    RParen,
    Comma,
    End,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Ident(s) => format!("{s:?}"),
            Token::Eq => "'='".into(),
            Token::NotEq => "'!='".into(),
            Token::Bang => "'!'".into(),
            Token::LParen => "'('".into(),
            Token::RParen => "')'".into(),
            Token::Comma => "','".into(),
            Token::End => "end of input".into(),
        }
    }
}

fn tokenize(input: &str) -> Result<Vec<(Token, usize)>, SelectorError> {
    let chars: Vec<char> = input.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let pos = i + 1;
        match c {
            c if c.is_whitespace() => {
                i += 1;
            }
            ',' => {
                out.push((Token::Comma, pos));
                i += 1;
            }
            '(' => {
                out.push((Token::LParen, pos));
                i += 1;
            }
            ')' => {
                out.push((Token::RParen, pos));
                i += 1;
            }
            '=' => {
                i += if chars.get(i + 1) == Some(&'=') { 2 } else { 1 };
                out.push((Token::Eq, pos));
            }
            '!' => {
                if chars.get(i + 1) == Some(&'=') {
                    out.push((Token::NotEq, pos));
                    i += 2;
                } else {
                    out.push((Token::Bang, pos));
                    i += 1;
                }
            }
            '<' | '>' => {
                return Err(SelectorError::Syntax {
                    input: input.to_string(),
                    position: pos,
                    message: format!(
                        "operator '{c}' is not supported (use =, ==, !=, in, notin, key or !key)"
                    ),
                });
            }
            _ => {
                let start = i;
                while i < chars.len()
                    && !chars[i].is_whitespace()
                    && !matches!(chars[i], ',' | '(' | ')' | '=' | '!' | '<' | '>')
                {
                    i += 1;
                }
                out.push((Token::Ident(chars[start..i].iter().collect()), pos));
            }
        }
    }
    out.push((Token::End, chars.len() + 1));
    Ok(out)
}

struct Parser<'a> {
    input: &'a str,
    tokens: Vec<(Token, usize)>,
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Token {
        &self.tokens[self.at.min(self.tokens.len() - 1)].0
    }

    fn pos(&self) -> usize {
        self.tokens[self.at.min(self.tokens.len() - 1)].1
    }

    /// Returns the current token and moves past it (`at` may pass the end; `peek`
    /// keeps answering `End` there, and `at -= 1` always undoes one `next`).
    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        self.at += 1;
        t
    }

    fn error(&self, message: String) -> SelectorError {
        SelectorError::Syntax {
            input: self.input.to_string(),
            position: self.pos(),
            message,
        }
    }

    fn key(&mut self) -> Result<(String, usize), SelectorError> {
        let pos = self.pos();
        match self.peek().clone() {
            Token::Ident(s) => {
                self.next();
                check_label_key(&s).map_err(|m| SelectorError::Syntax {
                    input: self.input.to_string(),
                    position: pos,
                    message: m,
                })?;
                Ok((s, pos))
            }
            t => Err(self.error(format!("expected a label key, found {}", t.describe()))),
        }
    }

    fn value(&mut self, s: String, pos: usize) -> Result<String, SelectorError> {
        check_label_value(&s).map_err(|m| SelectorError::Syntax {
            input: self.input.to_string(),
            position: pos,
            message: m,
        })?;
        Ok(s)
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        if *self.peek() == Token::Bang {
            self.next();
            let (key, _) = self.key()?;
            return Ok(Requirement {
                key,
                operator: Operator::DoesNotExist,
                values: BTreeSet::new(),
            });
        }
        let (key, _) = self.key()?;
        let op = match self.peek().clone() {
            Token::Comma | Token::End => {
                return Ok(Requirement {
                    key,
                    operator: Operator::Exists,
                    values: BTreeSet::new(),
                });
            }
            Token::Eq => Operator::Equals,
            Token::NotEq => Operator::NotEquals,
            Token::Ident(s) if s == "in" => Operator::In,
            Token::Ident(s) if s == "notin" => Operator::NotIn,
            t => {
                return Err(self.error(format!(
                    "expected '=', '==', '!=', 'in', 'notin', ',' or end after key {key:?}, found {}",
                    t.describe()
                )));
            }
        };
        self.next();
        let mut values = BTreeSet::new();
        if matches!(op, Operator::Equals | Operator::NotEquals) {
            let pos = self.pos();
            match self.peek().clone() {
                Token::Ident(s) => {
                    self.next();
                    values.insert(self.value(s, pos)?);
                }
                Token::Comma | Token::End => {
                    values.insert(String::new());
                }
                t => {
                    return Err(
                        self.error(format!("expected a label value, found {}", t.describe()))
                    );
                }
            }
        } else {
            if self.next() != Token::LParen {
                self.at -= 1;
                return Err(self.error(format!(
                    "expected '(' after {}, found {}",
                    if op == Operator::In {
                        "'in'"
                    } else {
                        "'notin'"
                    },
                    self.peek().describe()
                )));
            }
            loop {
                let pos = self.pos();
                match self.next() {
                    Token::Ident(s) => {
                        values.insert(self.value(s, pos)?);
                    }
                    t => {
                        self.at -= 1;
                        return Err(
                            self.error(format!("expected a label value, found {}", t.describe()))
                        );
                    }
                }
                match self.next() {
                    Token::Comma => continue,
                    Token::RParen => break,
                    t => {
                        self.at -= 1;
                        return Err(
                            self.error(format!("expected ',' or ')', found {}", t.describe()))
                        );
                    }
                }
            }
        }
        Ok(Requirement {
            key,
            operator: op,
            values,
        })
    }
}

impl LabelSelector {
    /// The selector that matches every label map.
    pub fn everything() -> LabelSelector {
        LabelSelector::default()
    }

    /// Parses the command-line form: comma-separated requirements `key=value`,
    /// `key==value`, `key!=value`, `key in (a,b)`, `key notin (a,b)`, `key`, `!key`.
    /// The empty string is the selector that matches everything.
    pub fn parse(input: &str) -> Result<LabelSelector, SelectorError> {
        let tokens = tokenize(input)?;
        let mut p = Parser {
            input,
            tokens,
            at: 0,
        };
        let mut requirements = Vec::new();
        if *p.peek() == Token::End {
            return Ok(LabelSelector { requirements });
        }
        loop {
            requirements.push(p.requirement()?);
            match p.next() {
                Token::End => break,
                Token::Comma => {}
                t => {
                    p.at -= 1;
                    return Err(p.error(format!("expected ',' or end, found {}", t.describe())));
                }
            }
        }
        Ok(LabelSelector { requirements })
    }

    /// Equality requirements for every entry of `labels` (a Service's `spec.selector`).
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Result<LabelSelector, SelectorError> {
        let mut requirements = Vec::new();
        for (k, v) in labels {
            requirements.push(
                Requirement::new(k.clone(), Operator::Equals, [v.clone()]).map_err(
                    |e| match e {
                        SelectorError::Invalid { message, .. } => SelectorError::Invalid {
                            field: format!("matchLabels[{k}]"),
                            message,
                        },
                        other => other,
                    },
                )?,
            );
        }
        Ok(LabelSelector { requirements })
    }

    /// Converts the manifest form; errors name the field (`matchExpressions[1].values`).
    pub fn from_spec(spec: &LabelSelectorSpec) -> Result<LabelSelector, SelectorError> {
        let mut sel = LabelSelector::from_labels(&spec.match_labels)?;
        for (i, e) in spec.match_expressions.iter().enumerate() {
            let field = format!("matchExpressions[{i}]");
            let op = match e.operator {
                SelectorOperator::In => Operator::In,
                SelectorOperator::NotIn => Operator::NotIn,
                SelectorOperator::Exists => Operator::Exists,
                SelectorOperator::DoesNotExist => Operator::DoesNotExist,
            };
            if let Err(m) = check_label_key(&e.key) {
                return Err(SelectorError::Invalid {
                    field: format!("{field}.key"),
                    message: m,
                });
            }
            let r =
                Requirement::new(e.key.clone(), op, e.values.iter().cloned()).map_err(|err| {
                    match err {
                        SelectorError::Invalid { message, .. } => SelectorError::Invalid {
                            field: format!("{field}.values"),
                            message,
                        },
                        other => other,
                    }
                })?;
            sel.requirements.push(r);
        }
        Ok(sel)
    }

    /// True when every requirement holds for `labels` (always true when empty).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// True when the selector has no requirement (matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

impl FromStr for LabelSelector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LabelSelector::parse(s)
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Operator of a manifest `matchExpressions` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum SelectorOperator {
    /// The label's value is one of `values`.
    In,
    /// The label is absent or its value is none of `values`.
    NotIn,
    /// The label is present (`values` must be empty).
    Exists,
    /// The label is absent (`values` must be empty).
    DoesNotExist,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    /// The label key.
    pub key: String,
    /// The comparison.
    pub operator: SelectorOperator,
    /// Values for `In`/`NotIn`; empty for `Exists`/`DoesNotExist`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// The manifest form of a selector (`spec.selector` of a Deployment).
#[derive(
    Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorSpec {
    /// Labels that must be present with these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Further requirements.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

impl LabelSelectorSpec {
    /// True when neither labels nor expressions are given.
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// Converts to a [`LabelSelector`] (see [`LabelSelector::from_spec`]).
    pub fn to_selector(&self) -> Result<LabelSelector, SelectorError> {
        LabelSelector::from_spec(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parse_all_forms_and_display_round_trip() {
        let s = LabelSelector::parse("app=web,tier!=db,env in (b,a),!canary,env2 notin (x),owner")
            .unwrap();
        assert_eq!(s.requirements.len(), 6);
        assert_eq!(s.requirements[0].operator, Operator::Equals);
        assert_eq!(s.requirements[1].operator, Operator::NotEquals);
        assert_eq!(s.requirements[2].operator, Operator::In);
        assert_eq!(s.requirements[3].operator, Operator::DoesNotExist);
        assert_eq!(s.requirements[4].operator, Operator::NotIn);
        assert_eq!(s.requirements[5].operator, Operator::Exists);
        let text = s.to_string();
        assert_eq!(
            text,
            "app=web,tier!=db,env in (a,b),!canary,env2 notin (x),owner"
        );
        assert_eq!(LabelSelector::parse(&text).unwrap(), s);
    }

    #[test]
    fn whitespace_double_equals_and_empty_values() {
        let s = LabelSelector::parse(" app == web , env in ( a , b ) ,x=").unwrap();
        assert_eq!(s.to_string(), "app=web,env in (a,b),x=");
        assert!(s.matches(&labels(&[("app", "web"), ("env", "b"), ("x", "")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("env", "b")])));
    }

    #[test]
    fn matching() {
        let s = LabelSelector::parse("app=web,tier!=db,env in (a,b),!canary").unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("env", "a")])));
        assert!(s.matches(&labels(&[("app", "web"), ("env", "b"), ("tier", "fe")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("env", "a"), ("tier", "db")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("env", "c")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("env", "a"), ("canary", "")])));
        assert!(!s.matches(&labels(&[("env", "a")])));
        let s = LabelSelector::parse("env notin (x),k").unwrap();
        assert!(s.matches(&labels(&[("k", "1")])));
        assert!(s.matches(&labels(&[("k", "1"), ("env", "y")])));
        assert!(!s.matches(&labels(&[("k", "1"), ("env", "x")])));
        assert!(!s.matches(&labels(&[("env", "y")])));
    }

    #[test]
    fn empty_matches_everything() {
        let s = LabelSelector::parse("").unwrap();
        assert!(s.is_empty());
        assert!(s.matches(&labels(&[])));
        assert!(s.matches(&labels(&[("a", "b")])));
        assert_eq!(s.to_string(), "");
        assert!(LabelSelector::parse("   ").unwrap().is_empty());
    }

    #[test]
    fn syntax_errors() {
        for bad in [
            "app=web,",
            ",app",
            "=web",
            "app in a",
            "app in ()",
            "app in (a,",
            "app in (a b)",
            "app=web=x",
            "app>1",
            "Bad Key=x",
            "app=-web",
            "!",
            "app notin",
            "a=b c",
            "app==(x)",
        ] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad:?} should fail");
        }
        let e = LabelSelector::parse("app=web,,x").unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid label selector \"app=web,,x\" at character 9: expected a label key, found ','"
        );
        let e = LabelSelector::parse("app in (a").unwrap_err().to_string();
        assert!(e.contains("expected ',' or ')', found end of input"), "{e}");
        let e = LabelSelector::parse("app>1").unwrap_err().to_string();
        assert!(e.contains("operator '>' is not supported"), "{e}");
    }

    #[test]
    fn from_spec_and_errors() {
        let spec: LabelSelectorSpec = serde_json::from_value(serde_json::json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["a", "b"]},
                {"key": "canary", "operator": "DoesNotExist"}
            ]
        }))
        .unwrap();
        let s = spec.to_selector().unwrap();
        assert_eq!(s.to_string(), "app=web,env in (a,b),!canary");
        assert!(s.matches(&labels(&[("app", "web"), ("env", "a")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("env", "a"), ("canary", "1")])));

        let bad: LabelSelectorSpec = serde_json::from_value(serde_json::json!({
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["a"]},
                {"key": "env", "operator": "In", "values": []}
            ]
        }))
        .unwrap();
        let e = LabelSelector::from_spec(&bad).unwrap_err();
        assert_eq!(
            e,
            SelectorError::Invalid {
                field: "matchExpressions[1].values".into(),
                message: "'in' and 'notin' need at least one value".into()
            }
        );
        let bad: LabelSelectorSpec =
            serde_json::from_value(serde_json::json!({"matchLabels": {"app": "we b"}})).unwrap();
        let e = LabelSelector::from_spec(&bad).unwrap_err().to_string();
        assert!(
            e.starts_with("matchLabels[app]: label value \"we b\""),
            "{e}"
        );
    }

    /// Random inputs from a fixed seed: parsing never panics, and whatever parses
    /// prints back to text that parses to the same selector.
    #[test]
    fn random_inputs_never_panic_and_round_trip() {
        let alphabet: Vec<char> = "ab=!(), in notin.-_/xZ9 ".chars().collect();
        let mut seed: u64 = 0x5eed_0001;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        let mut parsed = 0;
        for _ in 0..20_000 {
            let len = next() % 16;
            let input: String = (0..len)
                .map(|_| alphabet[next() % alphabet.len()])
                .collect();
            if let Ok(sel) = LabelSelector::parse(&input) {
                parsed += 1;
                let again = LabelSelector::parse(&sel.to_string())
                    .unwrap_or_else(|e| panic!("seed 0x5eed_0001: {input:?} -> {sel}: {e}"));
                assert_eq!(again, sel, "seed 0x5eed_0001: {input:?}");
            }
        }
        assert!(parsed > 100, "only {parsed} inputs parsed");
    }
}
