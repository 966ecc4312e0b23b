//! Work spread over the cores: a large mesh renders and checks thousands of
//! documents that do not depend on one another.

use std::sync::atomic::{AtomicUsize, Ordering};

/// At most this many threads, whatever the machine has.
const MAX_WORKERS: usize = 8;

/// `items.iter().map(f).collect()`, run on up to one thread per core (the
/// items are taken one at a time, so uneven ones balance out); the results
/// are in the items' order. A panic in `f` is raised again here.
pub fn map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, MAX_WORKERS)
        .min(items.len());
    if workers <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let k = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(k) else {
                return done;
            };
            done.push((k, f(item)));
        }
    };
    let mut done: Vec<(usize, R)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers).map(|_| s.spawn(work)).collect();
        let mut all = Vec::with_capacity(items.len());
        for h in handles {
            match h.join() {
                Ok(part) => all.extend(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        all
    });
    done.sort_by_key(|(k, _)| *k);
    done.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_the_items_order() {
        let items: Vec<u64> = (0..1000).collect();
        // Uneven work: later items are cheaper.
        let out = map(&items, |&n| {
            (0..(1000 - n) * 100).fold(n, |a, b| a.wrapping_add(b % 3))
        });
        let expected: Vec<u64> = items
            .iter()
            .map(|&n| (0..(1000 - n) * 100).fold(n, |a, b| a.wrapping_add(b % 3)))
            .collect();
        assert_eq!(out, expected);
        assert_eq!(map(&[] as &[u8], |_| 1), Vec::<i32>::new());
    }
}
