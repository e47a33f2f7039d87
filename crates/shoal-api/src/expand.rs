//! Kubernetes' `$(VAR)` expansion in `command`, `args` and `env[].value`: `$(NAME)` is
//! replaced by the variable's value when it is defined, `$$` is a literal `$` (so
//! `$$(NAME)` gives `$(NAME)`), and a reference to an unknown variable or an unclosed
//! `$(` stays as written.

/// Expands `$(VAR)` references in `input`, looking each name up with `lookup`.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('(') {
            match tail.find(')') {
                Some(end) => {
                    let name = &tail[..end];
                    match lookup(name) {
                        Some(v) => out.push_str(&v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &tail[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = tail;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Resolves a container's environment in order, as the kubelet does: each value may
/// refer to variables defined before it (and to `base`, e.g. from `envFrom`); the result
/// holds every variable, later definitions replacing earlier ones in place.
pub fn expand_env(base: &[(String, String)], env: &[(String, String)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = base.to_vec();
    for (name, raw) in env {
        let value = expand(raw, |n| {
            out.iter()
                .rev()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
        });
        match out.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = value,
            None => out.push((name.clone(), value)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(n: &str) -> Option<String> {
        match n {
            "A" => Some("alpha".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn kubernetes_expansion_rules() {
        for (input, want) in [
            ("$(A)", "alpha"),
            ("x-$(A)-y", "x-alpha-y"),
            ("$(A)$(A)", "alphaalpha"),
            ("$$(A)", "$(A)"),
            ("$$$(A)", "$alpha"),
            ("$$$$", "$$"),
            ("$(UNKNOWN)", "$(UNKNOWN)"),
            ("$(EMPTY)|", "|"),
            ("$(A", "$(A"),
            ("$A", "$A"),
            ("cost $5", "cost $5"),
            ("trailing $", "trailing $"),
            ("", ""),
            ("$()", "$()"),
            ("ünï $(A) ✓", "ünï alpha ✓"),
        ] {
            assert_eq!(expand(input, vars), want, "{input:?}");
        }
    }

    #[test]
    fn env_refers_to_earlier_variables_only() {
        let base = vec![("FROM_CM".to_string(), "cm".to_string())];
        let env = vec![
            ("B".to_string(), "$(FROM_CM)-$(C)".to_string()),
            ("C".to_string(), "c".to_string()),
            ("D".to_string(), "$(B)/$(C)".to_string()),
            ("FROM_CM".to_string(), "over-$(FROM_CM)".to_string()),
        ];
        let got = expand_env(&base, &env);
        assert_eq!(
            got,
            vec![
                ("FROM_CM".to_string(), "over-cm".to_string()),
                ("B".to_string(), "cm-$(C)".to_string()),
                ("C".to_string(), "c".to_string()),
                ("D".to_string(), "cm-$(C)/c".to_string()),
            ]
        );
    }
}
