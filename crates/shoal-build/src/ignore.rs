//! `.dockerignore`: which paths of the build context stay on the client. Docker's rules:
//! one pattern a line, `#` comments, `!` re-includes, `*` `?` `[…]` within one path
//! component, `**` any number of components, a leading `/` means the context root, and
//! the last matching line decides. A pattern that matches a directory matches what is
//! under it. Pure.

/// Parsed `.dockerignore` rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ignore {
    rules: Vec<(bool, Vec<String>)>,
}

impl Ignore {
    /// Parses the file's text.
    pub fn parse(text: &str) -> Self {
        let rules = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (negate, p) = match l.strip_prefix('!') {
                    Some(p) => (true, p.trim()),
                    None => (false, l),
                };
                let parts = p
                    .split('/')
                    .filter(|s| !s.is_empty() && *s != ".")
                    .map(String::from)
                    .collect();
                (negate, parts)
            })
            .filter(|(_, parts): &(bool, Vec<String>)| !parts.is_empty())
            .collect();
        Ignore { rules }
    }

    /// Whether `path` (relative to the context, `/`-separated) is left out.
    pub fn ignored(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut out = false;
        for (negate, pattern) in &self.rules {
            let hit = (1..=parts.len()).any(|n| matches_parts(pattern, &parts[..n]));
            if hit {
                out = !negate;
            }
        }
        out
    }

    /// Whether any `!` rule could re-include something under directory `dir` (then the
    /// directory must be walked even when it is ignored).
    pub fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|(n, _)| *n)
    }
}

fn matches_parts(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((p, rest)) if p == "**" => {
            (0..=path.len()).any(|skip| matches_parts(rest, &path[skip..]))
        }
        Some((p, rest)) => match path.split_first() {
            Some((first, tail)) => {
                glob(p.as_bytes(), first.as_bytes()) && matches_parts(rest, tail)
            }
            None => false,
        },
    }
}

/// Whether `name` (one path component) matches `pattern` (`*`, `?`, `[…]`), as COPY's
/// source globs and `.dockerignore` lines match.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    glob(pattern.as_bytes(), name.as_bytes())
}

/// Go's `filepath.Match` for one component: `*`, `?`, `[abc]`, `[a-z]`, `[^a]`, `\x`.
fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| glob(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && glob(rest, &s[1..]),
        Some((b'[', rest)) => {
            let Some(end) = rest.iter().position(|&c| c == b']') else {
                return false;
            };
            let Some((&c, tail)) = s.split_first() else {
                return false;
            };
            let (neg, class) = match rest[..end].split_first() {
                Some((b'^' | b'!', cl)) => (true, cl),
                _ => (false, &rest[..end]),
            };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    hit |= class[i] <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= class[i] == c;
                    i += 1;
                }
            }
            hit != neg && glob(&rest[end + 1..], tail)
        }
        Some((b'\\', rest)) if !rest.is_empty() => {
            s.first() == Some(&rest[0]) && glob(&rest[1..], &s[1..])
        }
        Some((c, rest)) => s.first() == Some(c) && glob(rest, &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_rules() {
        let i = Ignore::parse("# comment\n*.log\n/build\n**/tmp\n!keep.log\nsecret?\n[ab].txt\n");
        assert!(i.ignored("x.log"));
        assert!(!i.ignored("dir/x.log"), "* does not cross directories");
        assert!(!i.ignored("keep.log"));
        assert!(i.ignored("build"));
        assert!(i.ignored("build/out/a.o"), "under an ignored directory");
        assert!(i.ignored("a/b/tmp/c"));
        assert!(i.ignored("tmp"));
        assert!(i.ignored("secret1") && !i.ignored("secret12"));
        assert!(i.ignored("a.txt") && !i.ignored("c.txt"));
        assert!(!i.ignored("note.txt"));
        assert!(i.has_exceptions());
        assert!(!Ignore::parse("").ignored("x"));
    }
}
