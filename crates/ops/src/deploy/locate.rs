//! The line of a field path (`services[0].distribute[0].to`) in a YAML text,
//! from the parser itself: the text is read again with a visitor that stops
//! with an error at that field, and the parser's error carries the position
//! of the event it stopped at (the key's line for a map entry, the item's
//! line for a list item). Exact where a text search would guess, and as cheap
//! as one more parse of a small file.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// `a.b[2].c` -> [Key a, Key b, Index 2, Key c]. Keys holding dots cannot be
/// written this way; their line is the nearest one that can.
pub(crate) fn segments(path: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            if i > 0 {
                out.push(Seg::Key(rest[..i].to_string()));
            }
            rest = &rest[i..];
            while let Some(stripped) = rest.strip_prefix('[') {
                let Some(end) = stripped.find(']') else { break };
                match stripped[..end].parse() {
                    Ok(n) => out.push(Seg::Index(n)),
                    Err(_) => out.push(Seg::Key(stripped[..end].to_string())),
                }
                rest = &stripped[end + 1..];
            }
        } else {
            out.push(Seg::Key(rest.to_string()));
        }
    }
    out
}

const FOUND: &str = "hybridmesh-locate: found";

/// The 1-based line of `path` in `text` (the first YAML document), or of the
/// nearest enclosing field that exists.
pub fn line_of(text: &str, path: &str) -> Option<usize> {
    let segs = segments(path);
    for n in (1..=segs.len()).rev() {
        if let Some(line) = exact(text, &segs[..n]) {
            return Some(line);
        }
    }
    None
}

fn exact(text: &str, segs: &[Seg]) -> Option<usize> {
    let doc = serde_yaml_ng::Deserializer::from_str(text).next()?;
    let seek = Seek { segs };
    match seek.deserialize(doc) {
        Err(e) if e.to_string().contains(FOUND) => e.location().map(|l| l.line()),
        _ => None,
    }
}

struct Seek<'a> {
    segs: &'a [Seg],
}

impl<'de> DeserializeSeed<'de> for Seek<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seek<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
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

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Seg::Index(want), rest)) = self.segs.split_first() else {
            return self.scalar();
        };
        let mut i = 0;
        loop {
            if i == *want {
                // The item itself: its first event is where the parser stops.
                return match seq.next_element_seed(Seek { segs: rest })? {
                    Some(()) => Ok(()),
                    None => Ok(()),
                };
            }
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Seg::Key(want), rest)) = self.segs.split_first() else {
            return self.scalar();
        };
        loop {
            let key = KeySeed {
                want,
                last: rest.is_empty(),
            };
            match map.next_key_seed(key)? {
                None => return Ok(()),
                Some(true) => return map.next_value_seed(Seek { segs: rest }),
                Some(false) => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
    }
}

impl Seek<'_> {
    /// At the end of the path: stop here. Elsewhere: the path goes on below a
    /// value that has nothing below it.
    fn scalar<E: de::Error>(&self) -> Result<(), E> {
        if self.segs.is_empty() {
            Err(E::custom(FOUND))
        } else {
            Ok(())
        }
    }
}

/// Reads a map key; stops on it when it is the path's last step.
struct KeySeed<'a> {
    want: &'a str,
    last: bool,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map key")
    }

    fn visit_str<E: de::Error>(self, k: &str) -> Result<bool, E> {
        if k == self.want && self.last {
            return Err(E::custom(FOUND));
        }
        Ok(k == self.want)
    }
    fn visit_bool<E: de::Error>(self, k: bool) -> Result<bool, E> {
        self.visit_str(&k.to_string())
    }
    fn visit_i64<E: de::Error>(self, k: i64) -> Result<bool, E> {
        self.visit_str(&k.to_string())
    }
    fn visit_u64<E: de::Error>(self, k: u64) -> Result<bool, E> {
        self.visit_str(&k.to_string())
    }
    fn visit_f64<E: de::Error>(self, k: f64) -> Result<bool, E> {
        self.visit_str(&k.to_string())
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# comment\nimage:\n  url: oci://x\nservices:\n  - host: a.b.svc.cluster.local\n    distribute:\n      - from: \"*\"\n        to: {gke: 50, anthos: 51}\n  - host: c.d.svc.cluster.local\n    outlierDetection:\n      baseEjectionTime: 60\n";

    #[test]
    fn lines_of_keys_items_and_missing_fields() {
        assert_eq!(line_of(TEXT, "image"), Some(2));
        assert_eq!(line_of(TEXT, "image.url"), Some(3));
        assert_eq!(line_of(TEXT, "services[0]"), Some(5));
        assert_eq!(line_of(TEXT, "services[0].distribute[0].to"), Some(8));
        assert_eq!(line_of(TEXT, "services[0].distribute[0].to.gke"), Some(8));
        assert_eq!(
            line_of(TEXT, "services[1].outlierDetection.baseEjectionTime"),
            Some(11)
        );
        // Missing: the nearest field that exists.
        assert_eq!(line_of(TEXT, "services[1].failover[0].to"), Some(9));
        assert_eq!(line_of(TEXT, "plugin.config"), None);
        assert_eq!(line_of("", "a"), None);
        assert_eq!(line_of("[1, 2", "a"), None);
    }
}
