//! Which service a request is for, and which route's host patterns match it.
//!
//! Host patterns follow Istio's `meshConfig.serviceSettings[].hosts`: an exact
//! FQDN, a wildcard suffix `*.ns.svc.cluster.local`, or `*`. The most specific
//! pattern wins (exact, then the longest suffix, then `*`); ties go to the
//! route listed first. The table is compiled once at configure time.

use std::collections::BTreeMap;

use crate::is_dns_name;

/// One host pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// `*.<suffix>`; stored with its leading dot (`.default.svc.cluster.local`).
    Suffix(String),
    Any,
}

impl HostPattern {
    /// Parses a pattern; the error says what was expected.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        // A fully qualified name may end in one dot; a pattern may not.
        let t = match t.strip_suffix('.') {
            Some(rest) if !rest.ends_with('*') && !rest.ends_with('.') => rest,
            _ => t,
        };
        let lower = t.to_ascii_lowercase();
        if lower == "*" {
            return Ok(HostPattern::Any);
        }
        if let Some(rest) = lower.strip_prefix("*.") {
            if is_dns_name(rest) {
                return Ok(HostPattern::Suffix(format!(".{rest}")));
            }
        } else if !lower.contains('*') && is_dns_name(&lower) {
            return Ok(HostPattern::Exact(lower));
        }
        Err(format!(
            "{text:?} is not a host pattern, expected an exact name, \"*.<suffix>\" or \"*\" (e.g. \"*.default.svc.cluster.local\")"
        ))
    }

    #[inline] // per request: built with the request path, for speed
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
            HostPattern::Any => true,
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Suffix(s) => write!(f, "*{s}"),
            HostPattern::Any => f.write_str("*"),
        }
    }
}

/// All routes' patterns, compiled for lookup by specificity.
#[derive(Debug, Clone, Default)]
pub struct HostTable {
    exact: BTreeMap<String, usize>,
    /// (suffix with leading dot, route index), longest suffix first, then route order.
    suffixes: Vec<(String, usize)>,
    any: Option<usize>,
}

impl HostTable {
    /// Builds the table from each route's patterns (in route order).
    pub fn build<'a>(routes: impl Iterator<Item = &'a [HostPattern]>) -> Self {
        let mut t = HostTable::default();
        for (i, patterns) in routes.enumerate() {
            for p in patterns {
                match p {
                    HostPattern::Exact(h) => {
                        t.exact.entry(h.clone()).or_insert(i);
                    }
                    HostPattern::Suffix(s) => t.suffixes.push((s.clone(), i)),
                    HostPattern::Any => {
                        t.any.get_or_insert(i);
                    }
                }
            }
        }
        // Stable sort keeps route order among equal lengths.
        crate::sort::stable_sort_by(&mut t.suffixes, |a, b| (b.0.len(), a.1) < (a.0.len(), b.1));
        t
    }

    /// The index of the route whose most specific pattern matches `host`.
    #[inline] // per request: built with the request path, for speed
    pub fn lookup(&self, host: &str) -> Option<usize> {
        if let Some(&i) = self.exact.get(host) {
            return Some(i);
        }
        self.suffixes
            .iter()
            .find(|(s, _)| host.len() > s.len() && host.ends_with(s.as_str()))
            .map(|(_, i)| *i)
            .or(self.any)
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.suffixes.is_empty() && self.any.is_none()
    }
}

/// The FQDN in an Istio outbound cluster name `outbound|<port>|<subset>|<fqdn>`.
#[inline] // per request: built with the request path, for speed
pub fn service_from_cluster_name(name: &str) -> Option<&str> {
    let mut parts = name.splitn(4, '|');
    let direction = parts.next()?;
    let _port = parts.next()?;
    let _subset = parts.next()?;
    let fqdn = parts.next()?;
    (direction == "outbound" && !fqdn.is_empty()).then_some(fqdn)
}

/// The service an `:authority` names, expanded the way Kubernetes DNS would for a
/// pod in `namespace`: `echo-svc` -> `echo-svc.<namespace>.svc.<suffix>`,
/// `echo-svc.default` -> `echo-svc.default.svc.<suffix>`, `echo-svc.default.svc`
/// -> `... .svc.<suffix>`. Ports and a trailing dot are dropped; other names are
/// kept as they are. `None` for an empty authority or an IP address (no name to
/// match).
#[inline] // per request: built with the request path, for speed
pub fn service_from_authority(
    authority: &[u8],
    namespace: &str,
    domain_suffix: &str,
) -> Option<String> {
    let mut out = String::new();
    service_from_authority_into(authority, namespace, domain_suffix, &mut out).then_some(out)
}

/// [`service_from_authority`] written into `out` (cleared first); false when
/// the authority names no service. Nothing is allocated once `out` has room.
#[inline] // per request: built with the request path, for speed
pub fn service_from_authority_into(
    authority: &[u8],
    namespace: &str,
    domain_suffix: &str,
    out: &mut String,
) -> bool {
    out.clear();
    let Ok(text) = std::str::from_utf8(authority) else {
        return false;
    };
    let text = text.trim();
    if text.starts_with('[') {
        return false; // IPv6 literal
    }
    let host = match text.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => text,
    };
    let host = host.trim_end_matches('.');
    // Only names that could be DNS names: anything else (an IP, a stray byte)
    // names no service.
    if host.is_empty()
        || host.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    {
        return false;
    }
    // ASCII only from here (checked above): lower-case it into `out`.
    out.push_str(host);
    out.make_ascii_lowercase();
    let svc_suffix_len = ".svc.".len() + domain_suffix.len();
    if out.len() > svc_suffix_len
        && out.ends_with(domain_suffix)
        && out[..out.len() - domain_suffix.len()].ends_with(".svc.")
    {
        return true;
    }
    let labels = out.bytes().filter(|b| *b == b'.').count() + 1;
    match labels {
        1 if !namespace.is_empty() => {
            out.push('.');
            out.push_str(namespace);
            out.push_str(".svc.");
            out.push_str(domain_suffix);
        }
        2 => {
            out.push_str(".svc.");
            out.push_str(domain_suffix);
        }
        3 if out.ends_with(".svc") => {
            out.push('.');
            out.push_str(domain_suffix);
        }
        _ => {}
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(routes: &[&[&str]]) -> HostTable {
        let parsed: Vec<Vec<HostPattern>> = routes
            .iter()
            .map(|r| r.iter().map(|h| HostPattern::parse(h).unwrap()).collect())
            .collect();
        HostTable::build(parsed.iter().map(|v| v.as_slice()))
    }

    #[test]
    fn most_specific_pattern_wins_regardless_of_order() {
        let t = table(&[
            &["*"],
            &["*.svc.cluster.local"],
            &["*.default.svc.cluster.local"],
            &["echo-svc.default.svc.cluster.local"],
        ]);
        assert_eq!(t.lookup("echo-svc.default.svc.cluster.local"), Some(3));
        assert_eq!(t.lookup("other.default.svc.cluster.local"), Some(2));
        assert_eq!(t.lookup("httpbin-svc.sleep.svc.cluster.local"), Some(1));
        assert_eq!(t.lookup("example.com"), Some(0));
    }

    #[test]
    fn ties_go_to_the_route_listed_first() {
        let t = table(&[
            &["*.default.svc.cluster.local"],
            &["*.default.svc.cluster.local", "a.b.svc.cluster.local"],
            &["a.b.svc.cluster.local"],
        ]);
        assert_eq!(t.lookup("x.default.svc.cluster.local"), Some(0));
        assert_eq!(t.lookup("a.b.svc.cluster.local"), Some(1));
    }

    #[test]
    fn suffix_does_not_match_itself_or_partial_labels() {
        let t = table(&[&["*.default.svc.cluster.local"]]);
        assert_eq!(t.lookup("default.svc.cluster.local"), None);
        assert_eq!(t.lookup("x.notdefault.svc.cluster.local"), None);
        assert_eq!(t.lookup("x.default.svc.cluster.local"), Some(0));
    }

    #[test]
    fn no_pattern_no_route() {
        let t = table(&[&["echo-svc.default.svc.cluster.local"]]);
        assert_eq!(t.lookup("echo-svc.sleep.svc.cluster.local"), None);
    }

    #[test]
    fn patterns_are_case_insensitive_and_validated() {
        assert_eq!(
            HostPattern::parse("Echo-Svc.Default.svc.cluster.local.").unwrap(),
            HostPattern::Exact("echo-svc.default.svc.cluster.local".into())
        );
        for bad in [
            "", "*.", "**", "*.*.svc", "foo*.svc", "a..b", "*foo.svc", "-a.b",
        ] {
            assert!(
                HostPattern::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn authority_expansion_follows_kubernetes_dns() {
        let s = |a: &str| service_from_authority(a.as_bytes(), "sleep", "cluster.local");
        assert_eq!(
            s("echo-svc.default").as_deref(),
            Some("echo-svc.default.svc.cluster.local")
        );
        assert_eq!(
            s("echo-svc.default:80").as_deref(),
            Some("echo-svc.default.svc.cluster.local")
        );
        assert_eq!(
            s("echo-svc").as_deref(),
            Some("echo-svc.sleep.svc.cluster.local")
        );
        assert_eq!(
            s("echo-svc.default.svc").as_deref(),
            Some("echo-svc.default.svc.cluster.local")
        );
        assert_eq!(
            s("echo-svc.default.svc.cluster.local.").as_deref(),
            Some("echo-svc.default.svc.cluster.local")
        );
        assert_eq!(
            s("ECHO-SVC.Default").as_deref(),
            Some("echo-svc.default.svc.cluster.local")
        );
        assert_eq!(s("www.example.com").as_deref(), Some("www.example.com"));
        assert_eq!(s("10.0.0.1:8080"), None);
        assert_eq!(s("[::1]:80"), None);
        assert_eq!(s("echo svc.default"), None);
        assert_eq!(s("echo\r\nx-injected: 1"), None);
        assert_eq!(s(""), None);
        assert_eq!(
            service_from_authority(b"echo-svc", "", "cluster.local").as_deref(),
            Some("echo-svc")
        );
        assert_eq!(
            service_from_authority(&[0xff, 0xfe], "sleep", "cluster.local"),
            None
        );
    }

    #[test]
    fn outbound_cluster_names_carry_the_fqdn() {
        assert_eq!(
            service_from_cluster_name("outbound|80||echo-svc.default.svc.cluster.local"),
            Some("echo-svc.default.svc.cluster.local")
        );
        assert_eq!(
            service_from_cluster_name("outbound|80|gke|echo-svc.default.svc.cluster.local"),
            Some("echo-svc.default.svc.cluster.local")
        );
        assert_eq!(service_from_cluster_name("inbound|8080||"), None);
        assert_eq!(service_from_cluster_name("PassthroughCluster"), None);
    }
}
