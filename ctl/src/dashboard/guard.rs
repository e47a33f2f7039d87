//! Who may use the dashboard: the one decision every request passes before anything else,
//! pure (request head in, verdict out) so that each rule is unit-tested.
//!
//! The dashboard acts with the user's own credentials, so any page that can make the
//! browser send it a request must be kept out:
//! - a request must carry the token, in `?token=` (the printed URL) or in the cookie the
//!   first such request sets (HttpOnly, SameSite=Strict: other sites' requests do not
//!   carry it, scripts cannot read it);
//! - its `Host` must be `127.0.0.1:PORT` or `localhost:PORT`, so a DNS-rebinding site
//!   (a foreign name that resolves to 127.0.0.1) is refused even with a cookie;
//! - an `Origin`, when present, must be the dashboard's own;
//! - only GET and HEAD: the dashboard never changes the cluster.

use http::{HeaderMap, Method, header};

/// The cookie's name: one per port, since cookies are not kept apart by port and two
/// dashboards may run at once.
pub fn cookie_name(port: u16) -> String {
    format!("shoal-dashboard-{port}")
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it; `set_cookie` when it came with the query token (the first visit).
    Allow {
        /// Whether the response sets the token cookie.
        set_cookie: bool,
    },
    /// Refuse it with 403 and this reason (shown as text, never the token).
    Forbidden(&'static str),
    /// Refuse it with 405: the dashboard is read-only.
    MethodNotAllowed,
}

/// The token and the port a dashboard checks requests against.
#[derive(Clone)]
pub struct Guard {
    token: String,
    port: u16,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("token", &"<hidden>")
            .field("port", &self.port)
            .finish()
    }
}

impl Guard {
    /// A guard for `token` on `port`.
    pub fn new(token: String, port: u16) -> Self {
        Guard { token, port }
    }

    /// A new random token: 32 bytes from the OS-seeded generator, in hex.
    pub fn random_token() -> String {
        hex::encode(rand::random::<[u8; 32]>())
    }

    /// The token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The `Set-Cookie` value that carries the token.
    pub fn set_cookie(&self) -> String {
        format!(
            "{}={}; Path=/; HttpOnly; SameSite=Strict",
            cookie_name(self.port),
            self.token
        )
    }

    /// Checks one request: method, Host, Origin, then the token (query or cookie).
    pub fn check(&self, method: &Method, query: Option<&str>, headers: &HeaderMap) -> Verdict {
        let host_ok = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|h| self.own_host(h));
        if !host_ok {
            return Verdict::Forbidden("this dashboard answers only to 127.0.0.1 or localhost");
        }
        for origin in headers.get_all(header::ORIGIN) {
            let ok = origin
                .to_str()
                .ok()
                .and_then(|o| o.strip_prefix("http://"))
                .is_some_and(|h| self.own_host(h));
            if !ok {
                return Verdict::Forbidden("requests from other sites are refused");
            }
        }
        if *method != Method::GET && *method != Method::HEAD {
            return Verdict::MethodNotAllowed;
        }
        if query_token(query).is_some_and(|t| same(t.as_bytes(), self.token.as_bytes())) {
            return Verdict::Allow { set_cookie: true };
        }
        let name = cookie_name(self.port);
        let cookie_ok = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .any(|(k, v)| k == name && same(v.as_bytes(), self.token.as_bytes()));
        if cookie_ok {
            Verdict::Allow { set_cookie: false }
        } else {
            Verdict::Forbidden("missing or wrong token: open the URL shoalctl dashboard printed")
        }
    }

    /// `127.0.0.1:PORT` or `localhost:PORT` (any case), nothing else.
    fn own_host(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        host == format!("127.0.0.1:{}", self.port) || host == format!("localhost:{}", self.port)
    }
}

/// The `token` parameter of a query string.
pub fn query_token(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "token")
        .map(|(_, v)| v)
}

/// Compares in time that depends only on the lengths (the token is not guessed byte by byte).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const TOKEN: &str = "00ff";

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn guard() -> Guard {
        Guard::new(TOKEN.into(), 8123)
    }

    #[test]
    fn the_token_comes_in_the_query_or_the_cookie() {
        let g = guard();
        let h = headers(&[(header::HOST, "127.0.0.1:8123")]);
        assert_eq!(
            g.check(&Method::GET, Some("namespace=a&token=00ff"), &h),
            Verdict::Allow { set_cookie: true }
        );
        for bad in [
            None,
            Some("token=00fe"),
            Some("token="),
            Some("token=00ff00"),
            Some("x=00ff"),
        ] {
            assert!(
                matches!(g.check(&Method::GET, bad, &h), Verdict::Forbidden(_)),
                "{bad:?}"
            );
        }
        let with_cookie =
            |c: &str| headers(&[(header::HOST, "localhost:8123"), (header::COOKIE, c)]);
        assert_eq!(
            g.check(
                &Method::GET,
                None,
                &with_cookie("a=b; shoal-dashboard-8123=00ff")
            ),
            Verdict::Allow { set_cookie: false }
        );
        // Another dashboard's cookie (another port) or a wrong value does not do.
        for c in [
            "shoal-dashboard-8124=00ff",
            "shoal-dashboard-8123=00fe",
            "shoal-dashboard-8123",
        ] {
            assert!(matches!(
                g.check(&Method::GET, None, &with_cookie(c)),
                Verdict::Forbidden(_)
            ));
        }
        assert_eq!(
            g.set_cookie(),
            "shoal-dashboard-8123=00ff; Path=/; HttpOnly; SameSite=Strict"
        );
        assert!(!format!("{g:?}").contains(TOKEN));
    }

    #[test]
    fn host_and_origin_must_be_the_dashboards_own() {
        let g = guard();
        let q = Some("token=00ff");
        for host in ["127.0.0.1:8123", "localhost:8123", "LOCALHOST:8123"] {
            let h = headers(&[(header::HOST, host)]);
            assert_eq!(
                g.check(&Method::GET, q, &h),
                Verdict::Allow { set_cookie: true }
            );
        }
        // DNS rebinding: a foreign name resolving to 127.0.0.1; another port; no Host.
        for host in [
            "evil.example:8123",
            "127.0.0.1:8124",
            "127.0.0.1",
            "localhost",
            "[::1]:8123",
        ] {
            let h = headers(&[(header::HOST, host)]);
            assert!(
                matches!(g.check(&Method::GET, q, &h), Verdict::Forbidden(_)),
                "{host}"
            );
        }
        assert!(matches!(
            g.check(&Method::GET, q, &HeaderMap::new()),
            Verdict::Forbidden(_)
        ));
        for origin in ["http://127.0.0.1:8123", "http://localhost:8123"] {
            let h = headers(&[(header::HOST, "127.0.0.1:8123"), (header::ORIGIN, origin)]);
            assert_eq!(
                g.check(&Method::GET, q, &h),
                Verdict::Allow { set_cookie: true }
            );
        }
        for origin in [
            "http://evil.example",
            "null",
            "https://127.0.0.1:8123",
            "http://127.0.0.1:8124",
            "http://127.0.0.1:8123.evil.example",
        ] {
            let h = headers(&[(header::HOST, "127.0.0.1:8123"), (header::ORIGIN, origin)]);
            assert!(
                matches!(g.check(&Method::GET, q, &h), Verdict::Forbidden(_)),
                "{origin}"
            );
        }
    }

    #[test]
    fn only_reads_are_served() {
        let g = guard();
        let h = headers(&[(header::HOST, "127.0.0.1:8123")]);
        assert_eq!(
            g.check(&Method::HEAD, Some("token=00ff"), &h),
            Verdict::Allow { set_cookie: true }
        );
        assert_eq!(
            g.check(&Method::POST, Some("token=00ff"), &h),
            Verdict::MethodNotAllowed
        );
    }

    #[test]
    fn tokens_are_random_hex_of_32_bytes() {
        let (a, b) = (Guard::random_token(), Guard::random_token());
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
