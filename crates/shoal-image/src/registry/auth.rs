//! Registry authentication challenges (`WWW-Authenticate: Bearer realm=…,service=…,
//! scope=…` or `Basic realm=…`) and token answers, as the distribution spec's token
//! flow has them. Pure: no I/O.

use std::collections::BTreeMap;

use serde::Deserialize;

/// What a registry asked for with its 401.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// Send `Authorization: Basic` with the credentials.
    Basic,
    /// Get a token from `realm` (with the credentials, if any) and send it as
    /// `Authorization: Bearer`.
    Bearer {
        /// The token server's URL.
        realm: String,
        /// `service=` parameter, if given.
        service: Option<String>,
        /// `scope=` parameter, if given.
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` header value (the first scheme we know).
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => {
            let params = parse_params(rest);
            Some(Challenge::Bearer {
                realm: params.get("realm")?.clone(),
                service: params.get("service").cloned(),
                scope: params.get("scope").cloned(),
            })
        }
        _ => None,
    }
}

/// `a="x, y",b=z` → {a: "x, y", b: "z"} (keys lower-cased).
fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, tail) = if let Some(q) = after.strip_prefix('"') {
            let mut val = String::new();
            let mut chars = q.char_indices();
            let mut end = q.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            val.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => val.push(c),
                }
            }
            (val, &q[end.min(q.len())..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        out.insert(key, value);
        rest = tail.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

/// A token server's answer.
#[derive(Debug, Deserialize)]
pub struct TokenResponse {
    /// The token (Docker's name).
    #[serde(default)]
    pub token: Option<String>,
    /// The token (OAuth2's name).
    #[serde(default)]
    pub access_token: Option<String>,
}

impl TokenResponse {
    /// The token, whichever field carried it.
    pub fn into_token(self) -> Option<String> {
        self.token
            .filter(|t| !t.is_empty())
            .or(self.access_token.filter(|t| !t.is_empty()))
    }
}

/// The token URL: `realm?service=…&scope=…` (the scope we need if the challenge had none).
pub fn token_url(realm: &str, service: Option<&str>, scope: Option<&str>) -> String {
    let mut url = realm.to_string();
    let mut sep = if realm.contains('?') { '&' } else { '?' };
    for (k, v) in [("service", service), ("scope", scope)] {
        if let Some(v) = v {
            url.push(sep);
            url.push_str(k);
            url.push('=');
            url.push_str(&percent_encode(v));
            sep = '&';
        }
    }
    url
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(r#"bearer realm=http://127.0.0.1:1/t, service="a\"b""#),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:1/t".into(),
                service: Some("a\"b".into()),
                scope: None,
            })
        );
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn builds_token_urls() {
        assert_eq!(
            token_url("https://a/token", Some("reg"), Some("repository:x/y:pull")),
            "https://a/token?service=reg&scope=repository:x/y:pull"
        );
        assert_eq!(
            token_url("https://a/t?x=1", None, Some("a b")),
            "https://a/t?x=1&scope=a%20b"
        );
        let t: TokenResponse = serde_json::from_str(r#"{"access_token":"abc"}"#).unwrap();
        assert_eq!(t.into_token().as_deref(), Some("abc"));
    }
}
