//! The hop chain an application forwards, into `Chain::extend`, against a
//! reference reading: a chain is at most 2 KiB of UTF-8, sent once, a comma
//! list of cluster names (spaces around entries allowed). A valid chain keeps
//! its newest entries, at most maxHops with ours appended; anything else is
//! replaced by ours alone. A loop is our cluster already in a valid chain.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use hybridmesh_filter_core::hop::{Chain, ChainProblem, ServedBy, MAX_CHAIN_BYTES};
use libfuzzer_sys::fuzz_target;

fn cluster_name(s: &str) -> bool {
    (1..=253).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// `None`: not a valid chain.
fn reference(value: &[u8], repeated: bool) -> Option<Vec<String>> {
    if repeated || value.len() > MAX_CHAIN_BYTES {
        return None;
    }
    let text = std::str::from_utf8(value).ok()?;
    let mut out = Vec::new();
    for part in text.split(',') {
        let name = part.trim();
        if !cluster_name(name) {
            return None;
        }
        out.push(name.to_string());
    }
    Some(out)
}

const PIECES: &[&[u8]] = &[
    b"a-cluster-name-that-is-long-enough-to-fill-the-two-kilobytes-a-chain-may-have-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    b"gke", b"anthos", b"aks", b",", b" ", b"\t", b"a.b", b"x_y", b"\r\n", b"\xff", b"*", b";",
];

fn run(u: &mut Unstructured) -> arbitrary::Result<()> {
    let forwarded: Option<Vec<u8>> = match u.int_in_range(0..=3)? {
        0 => None,
        1 => Some(u.arbitrary()?),
        _ => {
            let mut v = Vec::new();
            let long = u.ratio(1, 8)?;
            let n = u.int_in_range(0..=if long { 900 } else { 40 })?;
            for _ in 0..n {
                v.extend_from_slice(u.choose(PIECES)?);
            }
            Some(v)
        }
    };
    let repeated = u.ratio(1, 10)?;
    let me = if u.ratio(7, 8)? {
        u.choose(&["gke", "anthos", "aks", "x_y"])?.to_string()
    } else {
        String::arbitrary(u)?
    };
    let max = if u.ratio(7, 8)? {
        u.int_in_range(2..=32usize)?
    } else {
        usize::arbitrary(u)?
    };

    let chain = Chain::extend(forwarded.as_deref(), repeated, &me, max);
    assert!(
        chain.clusters.len() <= max.max(1),
        "{} entries for maxHops {max}",
        chain.clusters.len()
    );
    assert_eq!(chain.clusters.last(), Some(&me), "ours last");

    let valid = forwarded.as_deref().map(|v| reference(v, repeated));
    match valid {
        None => {
            assert_eq!(chain.clusters, vec![me.clone()]);
            assert_eq!(chain.problem, None);
            assert!(!chain.looped);
        }
        Some(None) => {
            assert_eq!(
                chain.clusters,
                vec![me.clone()],
                "an invalid chain is replaced"
            );
            let oversized = forwarded
                .as_ref()
                .is_some_and(|v| v.len() > MAX_CHAIN_BYTES);
            let want = if oversized {
                ChainProblem::Oversized
            } else {
                ChainProblem::Malformed
            };
            assert_eq!(chain.problem, Some(want));
            assert!(!chain.looped);
        }
        Some(Some(list)) => {
            assert_eq!(
                chain.looped,
                list.contains(&me),
                "loop detection: {list:?} + {me:?}"
            );
            // The newest entries: at most maxHops - 1, and few enough that
            // the chain sent on is at most MAX_CHAIN_BYTES.
            let mut start = list.len().saturating_sub(max.saturating_sub(1));
            let bytes = |l: &[String]| l.iter().map(|c| c.len() + 1).sum::<usize>() + me.len();
            while start < list.len() && bytes(&list[start..]) > MAX_CHAIN_BYTES {
                start += 1;
            }
            assert_eq!(
                &chain.clusters[..chain.clusters.len() - 1],
                &list[start..],
                "newest entries kept"
            );
            assert_eq!(
                chain.problem,
                (start > 0).then_some(ChainProblem::Truncated)
            );
        }
    }
    // Sent on, the chain reads back as it was (ours is a cluster name).
    if cluster_name(&me) {
        let value = chain.value();
        assert!(!value.contains(['\r', '\n', '\0']));
        assert!(
            value.len() <= MAX_CHAIN_BYTES,
            "the next hop would not read {} bytes",
            value.len()
        );
        let next = Chain::extend(
            Some(value.as_bytes()),
            false,
            "next-hop",
            chain.clusters.len() + 1,
        );
        // The next hop reads it: all of it, unless appending its own name
        // takes it over the byte limit, then its newest entries.
        let read = &next.clusters[..next.clusters.len() - 1];
        if value.len() + ",next-hop".len() <= MAX_CHAIN_BYTES {
            assert_eq!(next.problem, None, "{value:?}");
            assert_eq!(read, chain.clusters.as_slice());
        } else {
            assert_eq!(next.problem, Some(ChainProblem::Truncated), "{value:?}");
            assert!(chain.clusters.ends_with(read) && read.len() < chain.clusters.len());
        }
    }
    // The served-by header: a cluster name or nothing.
    if let Some(v) = &forwarded {
        if let Some(sb) = ServedBy::parse(v) {
            assert!(cluster_name(&sb.cluster), "{sb:?}");
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
