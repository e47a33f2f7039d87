//! Finds the line of a field path (`spec.containers[0].image`) in one document of a
//! YAML text, so that manifest errors can point at it.

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

const FOUND: &str = "shoal-locate: found";
const MISSING: &str = "shoal-locate: missing";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// Splits `a.b[0].c[key.with/dots]` into segments.
fn parse_path(path: &str) -> Vec<Seg> {
    let mut segs = Vec::new();
    let mut cur = String::new();
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        match c {
            '.' => {
                if !cur.is_empty() {
                    segs.push(Seg::Key(std::mem::take(&mut cur)));
                }
            }
            '[' => {
                if !cur.is_empty() {
                    segs.push(Seg::Key(std::mem::take(&mut cur)));
                }
                let inner: String = chars.by_ref().take_while(|&c| c != ']').collect();
                match inner.parse::<usize>() {
                    Ok(i) => segs.push(Seg::Index(i)),
                    Err(_) => segs.push(Seg::Key(inner)),
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        segs.push(Seg::Key(cur));
    }
    segs
}

/// Walks to the node at `path`; fails with [`FOUND`] there (so the YAML deserializer
/// attaches that node's position) or with [`MISSING`].
struct Locate<'a> {
    path: &'a [Seg],
}

impl<'de> DeserializeSeed<'de> for Locate<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Locate<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.scalar()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.scalar()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Seg::Key(want), rest)) = self.path.split_first() else {
            return Err(de::Error::custom(if self.path.is_empty() {
                FOUND
            } else {
                MISSING
            }));
        };
        loop {
            let key = KeySeed {
                want,
                stop: rest.is_empty(),
            };
            match map.next_key_seed(key)? {
                None => return Err(de::Error::custom(MISSING)),
                Some(true) => {
                    map.next_value_seed(Locate { path: rest })?;
                    return Err(de::Error::custom(MISSING));
                }
                Some(false) => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Seg::Index(want), rest)) = self.path.split_first() else {
            return Err(de::Error::custom(if self.path.is_empty() {
                FOUND
            } else {
                MISSING
            }));
        };
        for _ in 0..*want {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Err(de::Error::custom(MISSING));
            }
        }
        seq.next_element_seed(Locate { path: rest })?;
        Err(de::Error::custom(MISSING))
    }
}

impl Locate<'_> {
    fn scalar<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(if self.path.is_empty() {
            FOUND
        } else {
            MISSING
        }))
    }
}

/// Reads a mapping key: `Ok(true)` when it is the wanted one (and the walk goes on into
/// its value), `Err(FOUND)` when it is the wanted one and the last segment.
struct KeySeed<'a> {
    want: &'a str,
    stop: bool,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        if v == self.want && self.stop {
            Err(E::custom(FOUND))
        } else {
            Ok(v == self.want)
        }
    }
}

/// The 1-based line of `path` in document `document` (1-based) of `text`, or of its
/// nearest existing ancestor; `None` for the document root or when nothing is found.
pub(crate) fn line_of(text: &str, document: usize, path: &str) -> Option<usize> {
    let segs = parse_path(path);
    (1..=segs.len()).rev().find_map(|n| {
        let doc = serde_yaml_ng::Deserializer::from_str(text).nth(document.checked_sub(1)?)?;
        match (Locate { path: &segs[..n] }).deserialize(doc) {
            Err(e) if e.to_string().contains(FOUND) => e.location().map(|l| l.line()),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "a: 1\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  labels:\n    example.com/x.y: z\nspec:\n  containers:\n  - name: c\n    image: busybox\n  - name: d\n    ports: [{containerPort: 80}]\n";

    #[test]
    fn paths_parse() {
        assert_eq!(
            parse_path("spec.containers[0].labels[example.com/x.y]"),
            vec![
                Seg::Key("spec".into()),
                Seg::Key("containers".into()),
                Seg::Index(0),
                Seg::Key("labels".into()),
                Seg::Key("example.com/x.y".into())
            ]
        );
        assert!(parse_path("").is_empty());
    }

    #[test]
    fn lines_of_paths() {
        assert_eq!(line_of(TEXT, 1, "a"), Some(1));
        assert_eq!(line_of(TEXT, 2, "kind"), Some(4));
        assert_eq!(line_of(TEXT, 2, "metadata.name"), Some(6));
        assert_eq!(
            line_of(TEXT, 2, "metadata.labels[example.com/x.y]"),
            Some(8)
        );
        assert_eq!(line_of(TEXT, 2, "spec.containers[0].image"), Some(12));
        assert_eq!(line_of(TEXT, 2, "spec.containers[1].name"), Some(13));
        assert_eq!(
            line_of(TEXT, 2, "spec.containers[1].ports[0].containerPort"),
            Some(14)
        );
        // Missing leaf: the nearest ancestor (the second container starts on line 13).
        assert_eq!(line_of(TEXT, 2, "spec.containers[1].image"), Some(13));
        assert_eq!(line_of(TEXT, 2, "spec.volumes[0]"), Some(9));
        assert_eq!(line_of(TEXT, 2, ""), None);
        assert_eq!(line_of(TEXT, 3, "kind"), None);
    }
}
