//! Host patterns and hostnames into the host table, against a reference
//! written here from Istio's `serviceSettings.hosts` semantics: a pattern is an
//! exact name, `*.<suffix>` (any name below the suffix, not the suffix itself)
//! or `*`; matching ignores case; the most specific match wins (exact, then the
//! longest suffix, then `*`), ties go to the route listed first.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use hybridmesh_filter_core::hosts::{service_from_authority, HostPattern, HostTable};
use libfuzzer_sys::fuzz_target;

/// Small alphabet so that patterns and names collide often.
const ALPHABET: &[u8] = b"ab.*-A.x.-.9_ \t\xc3\xa9";

fn text(u: &mut Unstructured, max: usize) -> arbitrary::Result<String> {
    if u.ratio(1, 8)? {
        // Anything at all, now and then.
        let s = String::arbitrary(u)?;
        return Ok(s.chars().take(max).collect());
    }
    let n = u.int_in_range(0..=max)?;
    let mut bytes = Vec::with_capacity(n);
    for _ in 0..n {
        bytes.push(*u.choose(ALPHABET)?);
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The reference's own reading of a pattern.
#[derive(Debug, Clone, PartialEq)]
enum Ref {
    Exact(String),
    /// Without the `*.`.
    Suffix(String),
    Any,
}

fn dns_label(l: &str) -> bool {
    (1..=63).contains(&l.len())
        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

fn dns_name(s: &str) -> bool {
    (1..=253).contains(&s.len()) && s.split('.').all(dns_label)
}

fn reference_parse(text: &str) -> Option<Ref> {
    let mut t = text.trim().to_ascii_lowercase();
    // One trailing dot of a fully qualified name is dropped (not after `*` or another dot).
    if t.len() > 1 && t.ends_with('.') {
        let before = t.as_bytes()[t.len() - 2];
        if before != b'.' && before != b'*' {
            t.pop();
        }
    }
    if t == "*" {
        return Some(Ref::Any);
    }
    if let Some(rest) = t.strip_prefix("*.") {
        return dns_name(rest).then(|| Ref::Suffix(rest.to_string()));
    }
    dns_name(&t).then_some(Ref::Exact(t))
}

/// Specificity of `p` for `host`, if it matches: higher wins.
fn score(p: &Ref, host: &str) -> Option<(u8, usize)> {
    match p {
        Ref::Exact(h) => (h == host).then_some((2, 0)),
        Ref::Suffix(s) => {
            let below = host.len() > s.len() + 1
                && host.ends_with(s.as_str())
                && host.as_bytes()[host.len() - s.len() - 1] == b'.';
            below.then_some((1, s.len()))
        }
        Ref::Any => Some((0, 0)),
    }
}

fn reference_lookup(routes: &[Vec<Ref>], host: &str) -> Option<usize> {
    let mut best: Option<((u8, usize), usize)> = None;
    for (i, patterns) in routes.iter().enumerate() {
        for p in patterns {
            if let Some(s) = score(p, host) {
                if best.is_none_or(|(b, _)| s > b) {
                    best = Some((s, i));
                }
            }
        }
    }
    best.map(|(_, i)| i)
}

fn run(u: &mut Unstructured) -> arbitrary::Result<()> {
    let nroutes = u.int_in_range(0..=5)?;
    let mut parsed: Vec<Vec<HostPattern>> = Vec::new();
    let mut reference: Vec<Vec<Ref>> = Vec::new();
    let mut texts: Vec<String> = Vec::new();
    for _ in 0..nroutes {
        let n = u.int_in_range(1..=4)?;
        let mut ps = Vec::new();
        let mut rs = Vec::new();
        for _ in 0..n {
            let t = text(u, 24)?;
            let got = HostPattern::parse(&t);
            let want = reference_parse(&t);
            match (&got, &want) {
                (Ok(HostPattern::Exact(a)), Some(Ref::Exact(b))) => assert_eq!(a, b, "{t:?}"),
                (Ok(HostPattern::Suffix(a)), Some(Ref::Suffix(b))) => {
                    assert_eq!(a, &format!(".{b}"), "{t:?}")
                }
                (Ok(HostPattern::Any), Some(Ref::Any)) | (Err(_), None) => {}
                _ => panic!("pattern {t:?}: filter {got:?}, reference {want:?}"),
            }
            if let (Ok(p), Some(r)) = (got, want) {
                // Display gives back a pattern that parses to the same.
                assert_eq!(HostPattern::parse(&p.to_string()).as_ref(), Ok(&p));
                ps.push(p);
                rs.push(r);
            }
            texts.push(t);
        }
        parsed.push(ps);
        reference.push(rs);
    }
    let table = HostTable::build(parsed.iter().map(|v| v.as_slice()));
    let mut hosts: Vec<String> = Vec::new();
    // Names built from the patterns (the interesting ones), and free ones.
    for t in &texts {
        let t = t.trim().to_ascii_lowercase();
        hosts.push(t.trim_start_matches("*.").to_string());
        hosts.push(format!("{}{}", text(u, 6)?, t.trim_start_matches('*')));
    }
    for _ in 0..u.int_in_range(1..=6)? {
        hosts.push(text(u, 30)?);
    }
    for h in &hosts {
        let h = h.to_ascii_lowercase();
        assert_eq!(
            table.lookup(&h),
            reference_lookup(&reference, &h),
            "host {h:?}, routes {texts:?}"
        );
        for (ps, rs) in parsed.iter().zip(&reference) {
            for (p, r) in ps.iter().zip(rs) {
                assert_eq!(p.matches(&h), score(r, &h).is_some(), "{p} vs {h:?}");
            }
        }
        // What the filter looks up: the authority as Kubernetes DNS expands it.
        if let Some(svc) = service_from_authority(h.as_bytes(), "sleep", "cluster.local") {
            assert!(
                !svc.is_empty()
                    && svc.bytes().all(|b| b.is_ascii_lowercase()
                        || b.is_ascii_digit()
                        || b"-._".contains(&b)),
                "service {svc:?} from {h:?}"
            );
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
