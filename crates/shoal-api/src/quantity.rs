//! Resource quantities as in Kubernetes (`250m`, `1.5`, `64Mi`, `1G`, `1e3`) and the
//! resource sums the scheduler works with.

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::{Add, AddAssign, Sub};
use std::str::FromStr;

/// Resource name for CPU, in cores (`500m` is half a core).
pub const CPU: &str = "cpu";
/// Resource name for memory, in bytes.
pub const MEMORY: &str = "memory";
/// Resource name for the number of processes (a pids cgroup limit).
pub const PIDS: &str = "pids";
/// Resource name for the number of pods a node can run (node capacity only).
pub const PODS: &str = "pods";

/// A map from resource name (`cpu`, `memory`, `pids`, `pods`) to quantity.
pub type ResourceList = BTreeMap<String, Quantity>;

/// Why a quantity string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid quantity {input:?}: {reason}; expected a number with an optional suffix, such as 250m, 1.5, 64Mi, 1G or 1e3"
)]
pub struct QuantityError {
    /// The rejected text.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A quantity such as `250m` or `64Mi`: keeps the text it was written as and its exact
/// value (in billionths of a unit). Equality and ordering compare values, so `1000m == 1`.
#[derive(Clone)]
pub struct Quantity {
    text: String,
    nanos: i128,
}

const NANOS_PER_UNIT: i128 = 1_000_000_000;
const NANOS_PER_MILLI: i128 = 1_000_000;

fn div_ceil_away(v: i128, d: i128) -> i128 {
    // Rounds away from zero, as Kubernetes rounds quantities up.
    let q = v / d;
    if v % d == 0 {
        q
    } else if v > 0 {
        q + 1
    } else {
        q - 1
    }
}

fn saturate(v: i128) -> i64 {
    v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

impl Quantity {
    /// Parses `text` (see [`FromStr`]).
    pub fn parse(text: &str) -> Result<Quantity, QuantityError> {
        let err = |reason: &str| QuantityError {
            input: text.to_string(),
            reason: reason.to_string(),
        };
        if text.is_empty() {
            return Err(err("empty"));
        }
        let (negative, rest) = match text.as_bytes()[0] {
            b'-' => (true, &text[1..]),
            b'+' => (false, &text[1..]),
            _ => (false, text),
        };
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(num_end);
        let (int_part, frac_part) = match number.split_once('.') {
            Some((i, f)) => (i, f),
            None => (number, ""),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(err("it does not start with a number"));
        }
        if frac_part.contains('.') {
            return Err(err("more than one decimal point"));
        }
        let digits = format!("{int_part}{frac_part}");
        let digits = digits.trim_start_matches('0');
        if digits.len() > 30 {
            return Err(err("too many digits"));
        }
        let mantissa: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| err("not a number"))?
        };
        // value = mantissa * 10^(dec_exp - frac_len) * 2^bin_exp
        let (dec_exp, bin_exp): (i32, u32) = match suffix {
            "" => (0, 0),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            "Ki" => (0, 10),
            "Mi" => (0, 20),
            "Gi" => (0, 30),
            "Ti" => (0, 40),
            "Pi" => (0, 50),
            "Ei" => (0, 60),
            s if s.starts_with(['e', 'E']) => {
                let e = &s[1..];
                let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
                if digits.is_empty()
                    || digits.len() > 3
                    || !digits.chars().all(|c| c.is_ascii_digit())
                {
                    return Err(err(&format!("invalid exponent {s:?}")));
                }
                (
                    e.parse()
                        .map_err(|_| err(&format!("invalid exponent {s:?}")))?,
                    0,
                )
            }
            s => {
                return Err(err(&format!(
                    "unknown suffix {s:?} (use n, u, m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei or eN)"
                )));
            }
        };
        let too_large = || err("too large");
        let scale = 9 + dec_exp - frac_part.len() as i32;
        let mut nanos = mantissa
            .checked_mul(1i128 << bin_exp)
            .ok_or_else(too_large)?;
        if scale >= 0 {
            let factor = 10i128.checked_pow(scale as u32).ok_or_else(too_large)?;
            nanos = nanos.checked_mul(factor).ok_or_else(too_large)?;
        } else if nanos != 0 {
            let factor = 10i128.checked_pow((-scale) as u32);
            nanos = match factor {
                Some(f) => div_ceil_away(nanos, f),
                None => 1, // smaller than a nano: rounds up to one
            };
        }
        // Keep values representable in i64 nanos * 1e9 comfortably: cap at ~9.2e18 units.
        if nanos / NANOS_PER_UNIT > i64::MAX as i128 {
            return Err(too_large());
        }
        Ok(Quantity {
            text: text.to_string(),
            nanos: if negative { -nanos } else { nanos },
        })
    }

    /// A CPU quantity of `millis` thousandths, written as `250m` (or `2` for whole cores).
    pub fn from_millis(millis: i64) -> Quantity {
        let text = if millis % 1000 == 0 {
            (millis / 1000).to_string()
        } else {
            format!("{millis}m")
        };
        Quantity {
            text,
            nanos: millis as i128 * NANOS_PER_MILLI,
        }
    }

    /// A whole-unit quantity written as a plain integer (`110` pods).
    pub fn from_i64(value: i64) -> Quantity {
        Quantity {
            text: value.to_string(),
            nanos: value as i128 * NANOS_PER_UNIT,
        }
    }

    /// A byte count, written with the largest exact binary suffix (`64Mi`, `1Gi`, `1000`).
    pub fn from_bytes(bytes: i64) -> Quantity {
        let mut text = bytes.to_string();
        if bytes != 0 {
            for (shift, suffix) in [
                (60, "Ei"),
                (50, "Pi"),
                (40, "Ti"),
                (30, "Gi"),
                (20, "Mi"),
                (10, "Ki"),
            ] {
                let unit = 1i64 << shift;
                if bytes % unit == 0 {
                    text = format!("{}{suffix}", bytes / unit);
                    break;
                }
            }
        }
        Quantity {
            text,
            nanos: bytes as i128 * NANOS_PER_UNIT,
        }
    }

    /// The value in thousandths, rounded up: `250m` is 250, `1.5` is 1500 (CPU millicores).
    pub fn as_millis(&self) -> i64 {
        saturate(div_ceil_away(self.nanos, NANOS_PER_MILLI))
    }

    /// The value in whole units, rounded up: `64Mi` is 67108864, `1G` is 1000000000.
    pub fn as_i64(&self) -> i64 {
        saturate(div_ceil_away(self.nanos, NANOS_PER_UNIT))
    }

    /// The value in bytes, rounded up (same as [`Quantity::as_i64`], named for memory).
    pub fn as_bytes(&self) -> i64 {
        self.as_i64()
    }

    /// The value as a float (for display and ratios).
    pub fn as_f64(&self) -> f64 {
        self.nanos as f64 / NANOS_PER_UNIT as f64
    }

    /// True for a value below zero.
    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    /// True for a value of zero.
    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    /// The text the quantity was written as.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;

    /// Accepts an optionally signed decimal number with an optional suffix: a decimal
    /// SI suffix (`n u m k M G T P E`), a binary one (`Ki Mi Gi Ti Pi Ei`) or an
    /// exponent (`e3`, `E-2`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Quantity::parse(s)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Quantity({:?})", self.text)
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

impl Hash for Quantity {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.nanos.hash(state);
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

struct QuantityVisitor;

impl Visitor<'_> for QuantityVisitor {
    type Value = Quantity;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a quantity such as 250m, 1.5, 64Mi or 1G")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Quantity, E> {
        Quantity::parse(v).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Quantity, E> {
        Ok(Quantity::from_i64(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Quantity, E> {
        Quantity::parse(&v.to_string()).map_err(E::custom)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Quantity, E> {
        if !v.is_finite() {
            return Err(E::custom(format!(
                "invalid quantity {v}: not a finite number"
            )));
        }
        Quantity::parse(&v.to_string()).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Quantity, D::Error> {
        d.deserialize_any(QuantityVisitor)
    }
}

/// Amounts of the resources the scheduler counts, in base units; sums of
/// [`ResourceList`]s (`a + b`, `total - used`, `sum()`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// CPU in millicores.
    pub cpu_millis: i64,
    /// Memory in bytes.
    pub memory_bytes: i64,
    /// Number of processes.
    pub pids: i64,
    /// Number of pods.
    pub pods: i64,
}

impl Resources {
    /// Reads `cpu`, `memory`, `pids` and `pods` from a resource list (missing ones are 0).
    pub fn from_list(list: &ResourceList) -> Resources {
        let get = |k: &str| list.get(k);
        Resources {
            cpu_millis: get(CPU).map_or(0, Quantity::as_millis),
            memory_bytes: get(MEMORY).map_or(0, Quantity::as_bytes),
            pids: get(PIDS).map_or(0, Quantity::as_i64),
            pods: get(PODS).map_or(0, Quantity::as_i64),
        }
    }

    /// Writes the non-zero amounts back as a resource list.
    pub fn to_list(&self) -> ResourceList {
        let mut list = ResourceList::new();
        if self.cpu_millis != 0 {
            list.insert(CPU.into(), Quantity::from_millis(self.cpu_millis));
        }
        if self.memory_bytes != 0 {
            list.insert(MEMORY.into(), Quantity::from_bytes(self.memory_bytes));
        }
        if self.pids != 0 {
            list.insert(PIDS.into(), Quantity::from_i64(self.pids));
        }
        if self.pods != 0 {
            list.insert(PODS.into(), Quantity::from_i64(self.pods));
        }
        list
    }

    /// True when every amount of `self` is at most the same amount of `available`.
    pub fn fits_in(&self, available: &Resources) -> bool {
        self.cpu_millis <= available.cpu_millis
            && self.memory_bytes <= available.memory_bytes
            && self.pids <= available.pids
            && self.pods <= available.pods
    }

    /// Names of the resources where `self` exceeds `available` (for "insufficient cpu" messages).
    pub fn exceeding(&self, available: &Resources) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.cpu_millis > available.cpu_millis {
            v.push(CPU);
        }
        if self.memory_bytes > available.memory_bytes {
            v.push(MEMORY);
        }
        if self.pids > available.pids {
            v.push(PIDS);
        }
        if self.pods > available.pods {
            v.push(PODS);
        }
        v
    }
}

impl Add for Resources {
    type Output = Resources;

    fn add(self, o: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_add(o.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(o.memory_bytes),
            pids: self.pids.saturating_add(o.pids),
            pods: self.pods.saturating_add(o.pods),
        }
    }
}

impl AddAssign for Resources {
    fn add_assign(&mut self, o: Resources) {
        *self = *self + o;
    }
}

impl Sub for Resources {
    type Output = Resources;

    fn sub(self, o: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(o.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_sub(o.memory_bytes),
            pids: self.pids.saturating_sub(o.pids),
            pods: self.pods.saturating_sub(o.pods),
        }
    }
}

impl std::iter::Sum for Resources {
    fn sum<I: Iterator<Item = Resources>>(iter: I) -> Resources {
        iter.fold(Resources::default(), Add::add)
    }
}

impl schemars::JsonSchema for Quantity {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Quantity".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": ["string", "number"],
            "description": "A Kubernetes quantity: a number with an optional suffix (m, k, M, G, Ki, Mi, Gi, …), e.g. 250m, 64Mi."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn cpu_millis() {
        assert_eq!(q("250m").as_millis(), 250);
        assert_eq!(q("1.5").as_millis(), 1500);
        assert_eq!(q("2").as_millis(), 2000);
        assert_eq!(q("0.1").as_millis(), 100);
        assert_eq!(q(".5").as_millis(), 500);
        assert_eq!(q("100u").as_millis(), 1); // rounds up
        assert_eq!(q("1500000n").as_millis(), 2);
        assert_eq!(q("0").as_millis(), 0);
    }

    #[test]
    fn memory_bytes() {
        assert_eq!(q("64Mi").as_bytes(), 64 * 1024 * 1024);
        assert_eq!(q("1G").as_bytes(), 1_000_000_000);
        assert_eq!(q("1e3").as_bytes(), 1000);
        assert_eq!(q("1E3").as_bytes(), 1000);
        assert_eq!(q("128974848").as_bytes(), 128_974_848);
        assert_eq!(q("129e6").as_bytes(), 129_000_000);
        assert_eq!(q("123Mi").as_bytes(), 123 * 1024 * 1024);
        assert_eq!(q("0.5Gi").as_bytes(), 512 * 1024 * 1024);
        assert_eq!(q("1Ki").as_bytes(), 1024);
        assert_eq!(q("1k").as_bytes(), 1000);
        assert_eq!(q("1E").as_bytes(), 1_000_000_000_000_000_000);
        assert_eq!(q("2Ei").as_i64(), 2 << 60);
        assert_eq!(q("1.5k").as_i64(), 1500);
        assert_eq!(q("-1").as_i64(), -1);
        assert!(q("-1").is_negative());
        assert_eq!(q("+3").as_i64(), 3);
    }

    #[test]
    fn garbage_is_rejected_with_a_clear_message() {
        for bad in [
            "lots",
            "",
            "1.2.3",
            "1Z",
            "1mi",
            "m",
            "1e",
            "1e+",
            "10 Mi",
            " 1",
            "1ee3",
            "--1",
            "0x10",
            "1e99999",
            "99999999999999999999E",
        ] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        let e = Quantity::parse("lots").unwrap_err().to_string();
        assert!(e.starts_with("invalid quantity \"lots\""), "{e}");
        assert!(e.contains("250m"), "{e}");
        let e = Quantity::parse("1Z").unwrap_err().to_string();
        assert!(e.contains("unknown suffix \"Z\""), "{e}");
    }

    #[test]
    fn equality_by_value_display_by_text() {
        assert_eq!(q("1000m"), q("1"));
        assert_eq!(q("1Ki"), q("1024"));
        assert!(q("1Gi") > q("1G"));
        assert_eq!(q("1000m").to_string(), "1000m");
    }

    #[test]
    fn constructors() {
        assert_eq!(Quantity::from_millis(250).to_string(), "250m");
        assert_eq!(Quantity::from_millis(2000).to_string(), "2");
        assert_eq!(Quantity::from_bytes(64 << 20).to_string(), "64Mi");
        assert_eq!(Quantity::from_bytes(1000).to_string(), "1000");
        assert_eq!(Quantity::from_bytes(0).to_string(), "0");
        assert_eq!(Quantity::from_i64(110).as_i64(), 110);
    }

    #[test]
    fn serde_string_or_number() {
        let v: Quantity = serde_json::from_str("\"250m\"").unwrap();
        assert_eq!(v.as_millis(), 250);
        let v: Quantity = serde_json::from_str("1.5").unwrap();
        assert_eq!(v.as_millis(), 1500);
        let v: Quantity = serde_json::from_str("2").unwrap();
        assert_eq!(v.as_millis(), 2000);
        assert_eq!(serde_json::to_string(&q("64Mi")).unwrap(), "\"64Mi\"");
        let e = serde_json::from_str::<Quantity>("\"lots\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid quantity \"lots\""), "{e}");
        assert!(serde_json::from_str::<Quantity>("true").is_err());
    }

    #[test]
    fn resources_sum_and_fit() {
        let list = ResourceList::from([
            (CPU.to_string(), q("500m")),
            (MEMORY.to_string(), q("64Mi")),
        ]);
        let r = Resources::from_list(&list);
        assert_eq!(r.cpu_millis, 500);
        assert_eq!(r.memory_bytes, 64 << 20);
        let total: Resources = [r, r, r].into_iter().sum();
        assert_eq!(total.cpu_millis, 1500);
        let node = Resources {
            cpu_millis: 1000,
            memory_bytes: 1 << 30,
            pids: 1000,
            pods: 110,
        };
        assert!(r.fits_in(&node));
        assert!(!total.fits_in(&node));
        assert_eq!(total.exceeding(&node), vec![CPU]);
        assert_eq!((node - r).cpu_millis, 500);
        assert_eq!(Resources::from_list(&r.to_list()), r);
    }

    /// Random inputs from a fixed seed: parsing never panics, and parsed values keep
    /// their text and agree with a re-parse of that text.
    #[test]
    fn random_inputs_never_panic() {
        let alphabet: Vec<char> = "0123456789.+-eEmkMGTPKiun Z".chars().collect();
        let mut seed: u64 = 0x5eed_0002;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        let mut parsed = 0;
        for _ in 0..50_000 {
            let len = next() % 10;
            let input: String = (0..len)
                .map(|_| alphabet[next() % alphabet.len()])
                .collect();
            if let Ok(q) = Quantity::parse(&input) {
                parsed += 1;
                assert_eq!(q.to_string(), input);
                assert_eq!(Quantity::parse(&q.to_string()).unwrap(), q);
                let _ = (q.as_millis(), q.as_i64(), q.as_f64());
            }
        }
        assert!(
            parsed > 100,
            "seed 0x5eed_0002: only {parsed} inputs parsed"
        );
    }
}
