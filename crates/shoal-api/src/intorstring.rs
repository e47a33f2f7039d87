//! `IntOrString`: a port number or port name, or a count or percentage.

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;

/// A value written either as an integer or as a string: `targetPort: 8080` or
/// `targetPort: http`; `maxSurge: 1` or `maxSurge: "25%"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IntOrString {
    /// An integer.
    Int(i32),
    /// A string (a port name or a percentage such as `25%`).
    String(String),
}

impl IntOrString {
    /// For a percentage `"N%"`, N; for an integer, `None`; for any other string, an error.
    fn percent(&self) -> Result<Option<i64>, String> {
        match self {
            IntOrString::Int(_) => Ok(None),
            IntOrString::String(s) => {
                let n = s
                    .strip_suffix('%')
                    .and_then(|n| n.parse::<i64>().ok())
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| {
                        format!("expected a non-negative integer or a percentage such as \"25%\", got {s:?}")
                    })?;
                Ok(Some(n))
            }
        }
    }

    /// Checks that the value is a non-negative integer or a percentage (`maxSurge`).
    pub fn check_count_or_percent(&self) -> Result<(), String> {
        match self {
            IntOrString::Int(i) if *i < 0 => Err(format!("must not be negative, got {i}")),
            _ => self.percent().map(|_| ()),
        }
    }

    /// Resolves a count or percentage of `total` (`25%` of 10 is 3 rounding up, 2 down).
    pub fn resolve(&self, total: i32, round_up: bool) -> Result<i32, String> {
        match self.percent()? {
            None => match self {
                IntOrString::Int(i) => Ok(*i),
                IntOrString::String(_) => Ok(0),
            },
            Some(p) => {
                let v = p * i64::from(total);
                let r = if round_up { (v + 99) / 100 } else { v / 100 };
                Ok(r.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32)
            }
        }
    }
}

impl fmt::Display for IntOrString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntOrString::Int(i) => write!(f, "{i}"),
            IntOrString::String(s) => f.write_str(s),
        }
    }
}

impl From<i32> for IntOrString {
    fn from(v: i32) -> Self {
        IntOrString::Int(v)
    }
}

impl From<&str> for IntOrString {
    fn from(v: &str) -> Self {
        IntOrString::String(v.to_string())
    }
}

impl Serialize for IntOrString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            IntOrString::Int(i) => s.serialize_i32(*i),
            IntOrString::String(v) => s.serialize_str(v),
        }
    }
}

struct IosVisitor;

impl Visitor<'_> for IosVisitor {
    type Value = IntOrString;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer or a string")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntOrString, E> {
        i32::try_from(v)
            .map(IntOrString::Int)
            .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntOrString, E> {
        i32::try_from(v)
            .map(IntOrString::Int)
            .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<IntOrString, E> {
        Ok(IntOrString::String(v.to_string()))
    }
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<IntOrString, D::Error> {
        d.deserialize_any(IosVisitor)
    }
}

impl schemars::JsonSchema for IntOrString {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "IntOrString".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": ["integer", "string"],
            "description": "An integer or a string (a port name, or a percentage such as 25%)."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_and_resolve() {
        let v: IntOrString = serde_json::from_str("8080").unwrap();
        assert_eq!(v, IntOrString::Int(8080));
        let v: IntOrString = serde_json::from_str("\"25%\"").unwrap();
        assert_eq!(v.resolve(10, true).unwrap(), 3);
        assert_eq!(v.resolve(10, false).unwrap(), 2);
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"25%\"");
        assert_eq!(IntOrString::Int(2).resolve(10, true).unwrap(), 2);
        assert!(IntOrString::from("x%").check_count_or_percent().is_err());
        assert!(IntOrString::Int(-1).check_count_or_percent().is_err());
        assert!(IntOrString::from("0%").check_count_or_percent().is_ok());
        assert!(serde_json::from_str::<IntOrString>("1.5").is_err());
        assert!(serde_json::from_str::<IntOrString>("99999999999").is_err());
    }
}
