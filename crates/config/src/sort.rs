//! A stable sort in little code, for what runs once per config push.
//!
//! The standard library's stable sort is fast and large: each element type
//! it sorts adds about 4 KB of `.wasm` (quicksort, driftsort and small-sort
//! copies), and every sidecar's V8 compiles those bytes in every VM. These
//! sorts run on a config (host suffixes, weights, failover candidates), so
//! one merge sort of indices serves every type.

/// Sorts `v` by `less`, keeping the order of equal elements. O(n log n).
pub fn stable_sort_by<T>(v: &mut Vec<T>, less: impl Fn(&T, &T) -> bool) {
    let order = {
        let items: &[T] = v;
        sorted_indices(items.len(), &|a, b| match (items.get(a), items.get(b)) {
            (Some(x), Some(y)) => less(x, y),
            _ => false,
        })
    };
    let mut slots: Vec<Option<T>> = v.drain(..).map(Some).collect();
    v.extend(
        order
            .into_iter()
            .filter_map(|i| slots.get_mut(i).and_then(Option::take)),
    );
}

/// The indices `0..n` in the order `less` gives, equal ones as they were:
/// a bottom-up merge sort (not generic: one copy in the module).
fn sorted_indices(n: usize, less: &dyn Fn(usize, usize) -> bool) -> Vec<usize> {
    let mut from: Vec<usize> = (0..n).collect();
    let mut to = vec![0; n];
    let mut width = 1;
    while width < n {
        let mut start = 0;
        while start < n {
            let mid = (start + width).min(n);
            let end = (start + 2 * width).min(n);
            let (mut l, mut r) = (start, mid);
            for slot in to.iter_mut().take(end).skip(start) {
                let (left, right) = (from.get(l).copied(), from.get(r).copied());
                *slot = match (left, right) {
                    (Some(a), Some(b)) if l < mid && r < end => {
                        if less(b, a) {
                            r += 1;
                            b
                        } else {
                            l += 1;
                            a
                        }
                    }
                    (Some(a), _) if l < mid => {
                        l += 1;
                        a
                    }
                    (_, Some(b)) => {
                        r += 1;
                        b
                    }
                    _ => 0,
                };
            }
            start = end;
        }
        std::mem::swap(&mut from, &mut to);
        width *= 2;
    }
    from
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_as_the_standard_stable_sort_does() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for n in 0..200 {
            let mut v: Vec<(u8, usize)> = (0..n)
                .map(|i| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    ((seed % 7) as u8, i)
                })
                .collect();
            let mut want = v.clone();
            want.sort_by_key(|e| e.0);
            stable_sort_by(&mut v, |a, b| a.0 < b.0);
            assert_eq!(v, want, "n = {n}");
        }
    }
}
