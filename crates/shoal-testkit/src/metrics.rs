//! Scraping a daemon's metrics listener as Prometheus would: a plain HTTP/1.1 GET over
//! loopback, and a tiny parser of the text format (TYPE lines and samples) — no client
//! library, so the tests see exactly the bytes a scraper gets.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// `GET path` on `addr` (`HOST:PORT`): (status, body).
pub fn http_get(addr: &str, path: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("{addr}: {e}"))?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)
        .map_err(|e| format!("{addr}{path}: {e}"))?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{addr}{path}: no end of headers in {raw:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{addr}{path}: bad status line in {head:?}"))?;
    Ok((status, body.to_string()))
}

/// One sample: its name, labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// `shoal_grpc_requests_total`.
    pub name: String,
    /// Label name to value.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

/// A parsed scrape.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// Metric family name (as in `# TYPE`) to its type.
    pub types: BTreeMap<String, String>,
    /// Every sample.
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// Parses the Prometheus / OpenMetrics text format (labels without escaped quotes).
    pub fn parse(text: &str) -> Result<Scrape, String> {
        let mut out = Scrape::default();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, ty) = rest
                    .split_once(' ')
                    .ok_or_else(|| format!("bad TYPE line {line:?}"))?;
                out.types.insert(name.to_string(), ty.to_string());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = line
                .rsplit_once(' ')
                .ok_or_else(|| format!("bad sample line {line:?}"))?;
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().map_err(|_| format!("bad value in {line:?}"))?,
            };
            let (name, labels) = match series.split_once('{') {
                None => (series, BTreeMap::new()),
                Some((name, rest)) => {
                    let inner = rest
                        .strip_suffix('}')
                        .ok_or_else(|| format!("unclosed labels in {line:?}"))?;
                    let mut labels = BTreeMap::new();
                    for pair in inner.split("\",").filter(|p| !p.is_empty()) {
                        let (k, v) = pair
                            .split_once("=\"")
                            .ok_or_else(|| format!("bad label {pair:?} in {line:?}"))?;
                        labels.insert(k.to_string(), v.trim_end_matches('"').to_string());
                    }
                    (name, labels)
                }
            };
            out.samples.push(Sample {
                name: name.to_string(),
                labels,
                value,
            });
        }
        Ok(out)
    }

    /// The value of the first sample named `name` whose labels include `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }
}

/// Scrapes `/metrics` of `addr` and parses it.
pub fn scrape(addr: &str) -> Result<Scrape, String> {
    let (status, body) = http_get(addr, "/metrics")?;
    if status != 200 {
        return Err(format!("{addr}/metrics: HTTP {status}: {body}"));
    }
    Scrape::parse(&body)
}

/// The metrics docs/observability.md lists for `process` (`controller` or `agent`;
/// rows for `both` count for each): (sample name as documented, type).
pub fn documented(process: &str) -> Vec<(String, String)> {
    let path = crate::workspace_root().join("docs/observability.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            // | `name` | type | labels | process | meaning |
            if cells.len() < 6 || !cells[1].starts_with("`shoal_") {
                return None;
            }
            let name = cells[1].trim_matches('`').to_string();
            (cells[4] == process || cells[4] == "both").then(|| (name, cells[2].to_string()))
        })
        .collect()
}

/// Checks that `scrape` has a TYPE line of the right type for every metric
/// docs/observability.md lists for `process`; returns what is missing or wrong.
pub fn missing_documented(scrape: &Scrape, process: &str) -> Vec<String> {
    let mut bad = Vec::new();
    let docs = documented(process);
    assert!(
        !docs.is_empty(),
        "docs/observability.md lists no {process} metric"
    );
    for (name, ty) in docs {
        // A counter's family is named without `_total` (its samples carry it).
        let family = match ty.as_str() {
            "counter" => name.strip_suffix("_total").unwrap_or(&name).to_string(),
            _ => name.clone(),
        };
        match scrape.types.get(&family) {
            Some(t) if *t == ty => {}
            Some(t) => bad.push(format!("{name}: documented {ty}, served {t}")),
            None => bad.push(format!("{name}: no `# TYPE {family}` line")),
        }
    }
    bad
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_types_and_samples() {
        let s = Scrape::parse(
            "# HELP a_total x\n# TYPE a counter\na_total{m=\"Get\",code=\"OK\"} 3\n\
             # TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nb 1.5\n# EOF\n",
        )
        .unwrap();
        assert_eq!(s.types["a"], "counter");
        assert_eq!(s.value("a_total", &[("m", "Get")]), Some(3.0));
        assert_eq!(s.value("a_total", &[("m", "Put")]), None);
        assert_eq!(s.value("h_bucket", &[("le", "+Inf")]), Some(2.0));
        assert_eq!(s.value("b", &[]), Some(1.5));
    }
}
