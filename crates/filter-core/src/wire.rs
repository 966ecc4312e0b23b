//! proxy-wasm's header map wire format, read in place.
//!
//! `proxy_get_header_map_pairs` hands the guest one buffer: the pair count,
//! then (name size, value size) per pair, then `name\0value\0` per pair, every
//! size a little-endian u32. [`Pairs`] checks the layout once and then lends
//! out slices of that buffer, so reading a request's headers copies and
//! allocates nothing.

/// A validated header map in the wire format.
#[derive(Debug, Clone, Copy)]
pub struct Pairs<'a> {
    bytes: &'a [u8],
    count: usize,
}

fn u32_at(bytes: &[u8], at: usize) -> Option<usize> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

impl<'a> Pairs<'a> {
    /// An empty map.
    pub const EMPTY: Pairs<'static> = Pairs {
        bytes: &[],
        count: 0,
    };

    /// Checks the layout of `bytes`; `None` when it is malformed (sizes that
    /// run past the end, missing terminators). An empty buffer is an empty map.
    pub fn parse(bytes: &'a [u8]) -> Option<Pairs<'a>> {
        if bytes.is_empty() {
            return Some(Pairs { bytes, count: 0 });
        }
        let count = u32_at(bytes, 0)?;
        let mut data = count.checked_mul(8)?.checked_add(4)?;
        for i in 0..count {
            let k = u32_at(bytes, 4 + i * 8)?;
            let v = u32_at(bytes, 8 + i * 8)?;
            let key_end = data.checked_add(k)?;
            let value_start = key_end.checked_add(1)?;
            let value_end = value_start.checked_add(v)?;
            if *bytes.get(key_end)? != 0 || *bytes.get(value_end)? != 0 {
                return None;
            }
            data = value_end + 1;
        }
        Some(Pairs { bytes, count })
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The pairs in order.
    pub fn iter(&self) -> Iter<'a> {
        Iter {
            bytes: self.bytes,
            count: self.count,
            index: 0,
            data: self.count * 8 + 4,
        }
    }

    /// The first value of `name`.
    pub fn get(&self, name: &[u8]) -> Option<&'a [u8]> {
        self.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    /// Is `name` present at all?
    pub fn contains(&self, name: &[u8]) -> bool {
        self.iter().any(|(k, _)| k == name)
    }
}

/// The pairs of a [`Pairs`], borrowed from its buffer.
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    bytes: &'a [u8],
    count: usize,
    index: usize,
    data: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.index >= self.count {
            return None;
        }
        // The layout was checked by `Pairs::parse`.
        let k = u32_at(self.bytes, 4 + self.index * 8)?;
        let v = u32_at(self.bytes, 8 + self.index * 8)?;
        let key = self.bytes.get(self.data..self.data + k)?;
        let value_start = self.data + k + 1;
        let value = self.bytes.get(value_start..value_start + v)?;
        self.data = value_start + v + 1;
        self.index += 1;
        Some((key, value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.count - self.index;
        (n, Some(n))
    }
}

/// Encodes pairs in the wire format.
pub fn encode<'a>(pairs: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone) -> Vec<u8> {
    let count = pairs.clone().count();
    let data: usize = pairs.clone().map(|(k, v)| k.len() + v.len() + 2).sum();
    let mut out = Vec::with_capacity(4 + count * 8 + data);
    out.extend_from_slice(&(count as u32).to_le_bytes());
    for (k, v) in pairs.clone() {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_in_order_with_repeats_and_empty_values() {
        let list: Vec<(&[u8], &[u8])> = vec![
            (b":authority", b"echo"),
            (b"x-a", b""),
            (b"x-a", b"2"),
            (b"", b"\xff\x00"),
        ];
        let bytes = encode(list.iter().copied());
        let p = Pairs::parse(&bytes).unwrap();
        assert_eq!(p.len(), 4);
        assert_eq!(p.iter().collect::<Vec<_>>(), list);
        assert_eq!(p.get(b"x-a"), Some(&b""[..]));
        assert!(p.contains(b""));
        assert!(!p.contains(b"x-b"));
    }

    #[test]
    fn malformed_buffers_are_refused() {
        let good = encode([(&b"k"[..], &b"v"[..])].into_iter());
        assert!(Pairs::parse(&good).is_some());
        for cut in 1..good.len() {
            assert!(Pairs::parse(&good[..cut]).is_none(), "cut at {cut}");
        }
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] = b'x';
        assert!(Pairs::parse(&bad).is_none());
        assert!(Pairs::parse(&[0xff, 0xff, 0xff, 0xff]).is_none());
        assert!(Pairs::parse(&[]).unwrap().is_empty());
    }
}
