//! Just enough protobuf to read `istio.workload` out of Envoy's
//! `xds.upstream_host_metadata` (a serialized `envoy.config.core.v3.Metadata`).
//!
//! ```text
//! Metadata { map<string, google.protobuf.Struct> filter_metadata = 1; ... }
//! Struct   { map<string, Value> fields = 1; }
//! Value    { oneof kind { ...; string string_value = 3; ... } }
//! ```
//! A map entry is a message `{ key = 1; value = 2; }`. Every read is bounds
//! checked; malformed input yields `None`, never a panic.

/// One field of a message: number and payload.
enum Field<'a> {
    Bytes(u32, &'a [u8]),
    Skipped,
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let (&b, rest) = self.buf.split_first()?;
            self.buf = rest;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn skip(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }

    /// The next field, or `None` at the end or on malformed input.
    fn next(&mut self) -> Option<Field<'a>> {
        if self.buf.is_empty() {
            return None;
        }
        let tag = self.varint()?;
        let number = u32::try_from(tag >> 3).ok()?;
        match tag & 7 {
            0 => {
                self.varint()?;
                Some(Field::Skipped)
            }
            1 => self.skip(8).map(|_| Field::Skipped),
            2 => {
                let len = usize::try_from(self.varint()?).ok()?;
                self.skip(len).map(|b| Field::Bytes(number, b))
            }
            5 => self.skip(4).map(|_| Field::Skipped),
            _ => None,
        }
    }
}

/// Iterates the length-delimited fields numbered `number` of a message.
fn fields(msg: &[u8], number: u32) -> impl Iterator<Item = &[u8]> {
    let mut r = Reader { buf: msg };
    std::iter::from_fn(move || loop {
        match r.next()? {
            Field::Bytes(n, b) if n == number => return Some(b),
            Field::Bytes(..) | Field::Skipped => continue,
        }
    })
}

/// The value of map entry `key` in a message's map field `number`.
fn map_value<'a>(msg: &'a [u8], number: u32, key: &str) -> Option<&'a [u8]> {
    fields(msg, number).find_map(|entry| {
        let k = fields(entry, 1).next().unwrap_or_default();
        (k == key.as_bytes()).then(|| fields(entry, 2).next().unwrap_or_default())
    })
}

/// `filter_metadata[namespace].fields[key]` as a string, if it is one.
pub fn metadata_string(metadata: &[u8], namespace: &str, key: &str) -> Option<String> {
    let st = map_value(metadata, 1, namespace)?;
    let value = map_value(st, 1, key)?;
    let s = fields(value, 3).next()?;
    String::from_utf8(s.to_vec()).ok()
}

/// The cluster named in Istio's endpoint metadata `istio.workload`
/// (`name;namespace;canonical-name;revision;cluster`; a remote network's
/// east-west gateway is `;;;;<cluster>`).
pub fn istio_workload_cluster(metadata: &[u8]) -> Option<String> {
    let workload = metadata_string(metadata, "istio", "workload")?;
    let cluster = workload.rsplit(';').next()?;
    (workload.contains(';') && !cluster.is_empty()).then(|| cluster.to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn len_field(number: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![((number << 3) | 2) as u8];
        let mut n = payload.len();
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
        out.extend_from_slice(payload);
        out
    }

    /// Encodes `Metadata{filter_metadata{ns: Struct{fields{key: string}}}}`.
    pub(crate) fn metadata(ns: &str, key: &str, value: &str) -> Vec<u8> {
        let val = len_field(3, value.as_bytes());
        let field_entry = [len_field(1, key.as_bytes()), len_field(2, &val)].concat();
        let st = len_field(1, &field_entry);
        let md_entry = [len_field(1, ns.as_bytes()), len_field(2, &st)].concat();
        len_field(1, &md_entry)
    }

    #[test]
    fn reads_the_cluster_from_istio_workload() {
        let md = metadata(
            "istio",
            "workload",
            "echoserver;default;echoserver;latest;anthos",
        );
        assert_eq!(istio_workload_cluster(&md).as_deref(), Some("anthos"));
        let gw = metadata("istio", "workload", ";;;;gke");
        assert_eq!(istio_workload_cluster(&gw).as_deref(), Some("gke"));
    }

    #[test]
    fn other_namespaces_and_keys_are_ignored() {
        let md = [
            metadata("envoy.lb", "workload", "a;b;c;d;x"),
            metadata("istio", "workload", "a;b;c;d;gke"),
        ]
        .concat();
        assert_eq!(istio_workload_cluster(&md).as_deref(), Some("gke"));
        assert_eq!(
            istio_workload_cluster(&metadata("istio", "other", "a;b;c;d;x")),
            None
        );
        assert_eq!(
            istio_workload_cluster(&metadata("istio", "workload", "no-separators")),
            None
        );
        assert_eq!(
            istio_workload_cluster(&metadata("istio", "workload", "a;b;c;d;")),
            None
        );
    }

    #[test]
    fn malformed_input_is_none_not_a_panic() {
        let md = metadata("istio", "workload", "a;b;c;d;gke");
        for cut in 0..md.len() {
            let _ = istio_workload_cluster(&md[..cut]);
        }
        assert_eq!(istio_workload_cluster(&[0xff; 12]), None);
        assert_eq!(
            istio_workload_cluster(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]),
            None
        );
        assert_eq!(istio_workload_cluster(&[]), None);
    }
}
