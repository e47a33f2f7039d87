//! Ages and timestamps as kubectl writes them (`5s`, `3m20s`, `4d5h`) and as `describe`
//! shows them.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// Formats a duration like kubectl does (`5s`, `119s`, `3m20s`, `3h`, `4d`, `2y30d`).
pub fn human_age(d: chrono::Duration) -> String {
    let secs = d.num_seconds();
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 60 * 2 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// Parses an RFC 3339 timestamp field.
pub fn parse_time(v: Option<&Value>) -> Option<DateTime<Utc>> {
    let s = v?.as_str()?;
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The age of a timestamp field at `now`, `<unknown>` when missing or unparsable.
pub fn age_of(v: Option<&Value>, now: DateTime<Utc>) -> String {
    match parse_time(v) {
        Some(t) => human_age(now - t),
        None => "<unknown>".into(),
    }
}

/// A timestamp as `describe` shows it: `Sat, 28 Nov 2026 19:30:00 +0000`.
pub(super) fn long_time(v: Option<&Value>) -> String {
    match parse_time(v) {
        Some(t) => t.format("%a, %d %b %Y %H:%M:%S %z").to_string(),
        None => "<unknown>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[allow(unused_imports)]
    use crate::output::testutil::*;

    #[test]
    fn ages_like_kubectl() {
        let d = chrono::Duration::seconds;
        for (secs, want) in [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (200, "3m20s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 25 * 60, "3h25m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (4 * 86400, "4d"),
            (4 * 86400 + 5 * 3600, "4d5h"),
            (30 * 86400, "30d"),
            (3 * 365 * 86400 + 10 * 86400, "3y10d"),
            (9 * 365 * 86400, "9y"),
        ] {
            assert_eq!(human_age(d(secs)), want, "{secs}s");
        }
        assert_eq!(age_of(None, now()), "<unknown>");
        assert_eq!(age_of(Some(&json!("garbage")), now()), "<unknown>");
        assert_eq!(age_of(Some(&json!(ago(90))), now()), "90s");
    }
}
