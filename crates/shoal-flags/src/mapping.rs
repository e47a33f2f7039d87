//! Pure part: the text of a config file -> command-line arguments, each
//! checked against the clap [`Command`] it is meant for. No I/O.

use std::ffi::OsString;
use std::path::Path;

use clap::{Arg, ArgAction, Command};
use serde_yaml_ng::Value;

use crate::{CONFIG_ID, FlagsError};

/// Turns the YAML `text` of the config file `path` into `--key=value`
/// arguments for `cmd`, in the file's order.
///
/// Keys are the flags' long names. A key for which `set_elsewhere(arg id)`
/// is true (the command line or the environment already gives that flag) is
/// skipped, so those win over the file. Every value goes through the flag's
/// own value parser here, so that a bad one is reported with the file and key.
pub fn file_args(
    cmd: &Command,
    path: &Path,
    text: &str,
    set_elsewhere: &dyn Fn(&str) -> bool,
) -> Result<Vec<OsString>, FlagsError> {
    let doc: Value = serde_yaml_ng::from_str(text).map_err(|e| FlagsError::Syntax {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let map = match doc {
        // An empty file (or one holding only comments) sets nothing.
        Value::Null => return Ok(Vec::new()),
        Value::Mapping(m) => m,
        other => {
            return Err(FlagsError::Syntax {
                path: path.to_path_buf(),
                message: format!(
                    "expected a mapping of flag names to values (e.g. `listen: 0.0.0.0:7000`), got {}",
                    type_name(&other)
                ),
            });
        }
    };
    let mut out = Vec::new();
    for (key, value) in map {
        let Value::String(key) = key else {
            return Err(FlagsError::Syntax {
                path: path.to_path_buf(),
                message: format!(
                    "keys must be flag names (strings), got {} {}",
                    type_name(&key),
                    scalar_text(&key).unwrap_or_default()
                ),
            });
        };
        let Some(arg) = accepted_args(cmd).find(|a| a.get_long() == Some(key.as_str())) else {
            return Err(FlagsError::UnknownKey {
                path: path.to_path_buf(),
                key,
                accepted: accepted_keys(cmd),
            });
        };
        if set_elsewhere(arg.get_id().as_str()) {
            continue;
        }
        let flag = format!("--{key}");
        let wrong = |expected: String| FlagsError::WrongType {
            path: path.to_path_buf(),
            key: key.clone(),
            expected,
            got: type_name(&value).to_string(),
        };
        match arg.get_action() {
            ArgAction::SetTrue | ArgAction::SetFalse => {
                let Value::Bool(b) = value else {
                    return Err(wrong(format!("true or false (the switch {flag})")));
                };
                // `SetTrue`: `true` gives the switch; `SetFalse`: `false` does.
                if b == matches!(arg.get_action(), ArgAction::SetTrue) {
                    out.push(OsString::from(&flag));
                }
            }
            ArgAction::Count => {
                let n = value.as_u64().ok_or_else(|| {
                    wrong(format!(
                        "a non-negative integer (how many times to give {flag})"
                    ))
                })?;
                out.extend((0..n).map(|_| OsString::from(&flag)));
            }
            ArgAction::Append => {
                let items = match &value {
                    Value::Sequence(items) => items.clone(),
                    _ => vec![value.clone()],
                };
                for item in &items {
                    let text = scalar_text(item).ok_or_else(|| {
                        wrong(format!(
                            "a value or a list of values for {} (repeatable)",
                            form(arg)
                        ))
                    })?;
                    check(cmd, path, &key, &text)?;
                    out.push(OsString::from(format!("{flag}={text}")));
                }
            }
            _ => {
                let text = scalar_text(&value)
                    .ok_or_else(|| wrong(format!("a single value for {}", form(arg))))?;
                check(cmd, path, &key, &text)?;
                out.push(OsString::from(format!("{flag}={text}")));
            }
        }
    }
    Ok(out)
}

/// The keys a config file for `cmd` may use, sorted.
pub fn accepted_keys(cmd: &Command) -> Vec<String> {
    let mut keys: Vec<String> = accepted_args(cmd)
        .filter_map(|a| a.get_long().map(str::to_string))
        .collect();
    keys.sort();
    keys
}

/// Arguments that may be set from a file: every one with a long name except
/// `--config` itself, `--help` and `--version`.
fn accepted_args(cmd: &Command) -> impl Iterator<Item = &Arg> {
    cmd.get_arguments().filter(|a| {
        a.get_long().is_some()
            && a.get_id() != CONFIG_ID
            && !matches!(a.get_action(), ArgAction::Help | ArgAction::Version)
            && !matches!(a.get_action(), ArgAction::HelpShort | ArgAction::HelpLong)
    })
}

/// Runs the flag's value parser on `text`; a refusal names the file and key.
///
/// clap keeps `ValueParser::parse_ref` private, so the value goes through the
/// whole command with only this flag given; errors about other flags (a
/// required one missing) are not this value's and are left to the real parse.
fn check(cmd: &Command, path: &Path, key: &str, text: &str) -> Result<(), FlagsError> {
    use clap::error::ErrorKind;
    let argv = [
        OsString::from(cmd.get_name()),
        OsString::from(format!("--{key}={text}")),
    ];
    match cmd.clone().try_get_matches_from(argv) {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::MissingRequiredArgument
                    | ErrorKind::MissingSubcommand
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(FlagsError::InvalidValue {
            path: path.to_path_buf(),
            key: key.to_string(),
            message: first_line(&e),
        }),
    }
}

/// clap's message on one line, without its `error: ` prefix and the hint
/// to try `--help` (`invalid value 'x' for '--network <NETWORK>' [possible
/// values: bridge, none]`).
fn first_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
        .collect();
    let joined = lines.join(" ");
    joined
        .strip_prefix("error: ")
        .unwrap_or(&joined)
        .to_string()
}

/// `--long <VALUE>`, the way `--help` shows the flag.
fn form(arg: &Arg) -> String {
    let long = arg.get_long().unwrap_or_default();
    let name = arg
        .get_value_names()
        .and_then(|n| n.first())
        .map(|n| n.to_string())
        .unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
    let possible: Vec<String> = arg
        .get_possible_values()
        .iter()
        .map(|p| p.get_name().to_string())
        .collect();
    if possible.is_empty() {
        format!("--{long} <{name}>")
    } else {
        format!("--{long} <{}>", possible.join("|"))
    }
}

/// The text a scalar stands for on the command line; `None` for anything else.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null (no value)",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}
