//! Outlier detection per (service, cluster), shared by every worker VM.
//!
//! The state of one service lives in one proxy-wasm shared-data entry
//! ([`health_key`]) in a small text encoding, so a worker reads it with one
//! host call and updates it with compare-and-swap. Time is passed in (the
//! host clock); nothing here reads a clock.
//!
//! Semantics follow Envoy's outlier detection as a DestinationRule configures
//! it: `consecutive5xxErrors` consecutive failures eject the cluster for
//! `baseEjectionTime` times the number of times it has been ejected (at most
//! `maxEjectionTime`); a success resets the consecutive count; once a cluster has
//! stayed healthy for `baseEjectionTime` after its last ejection, its ejection
//! count steps back down by one.

use crate::config::OutlierDetection;

/// Shared-data key holding the health of `service`'s clusters.
pub fn health_key(service: &str) -> String {
    let mut key = String::new();
    health_key_into(service, &mut key);
    key
}

/// [`health_key`] written into a reused buffer.
pub fn health_key_into(service: &str, key: &mut String) {
    key.clear();
    key.push_str("hybridmesh.health/");
    key.push_str(service);
}

/// At most this many entries are read from a value (more entries in a
/// corrupt or hostile value are ignored).
pub const MAX_TRACKED: usize = 64;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterHealth {
    pub cluster: String,
    pub consecutive: u32,
    pub ejected_until_ms: u64,
    pub ejections: u32,
}

/// One entry of an encoded value, read in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub cluster: &'a str,
    pub consecutive: u32,
    pub ejected_until_ms: u64,
    pub ejections: u32,
}

/// The well-formed entries of an encoded value
/// (`cluster=consecutive,ejectedUntilMs,ejections;...`), at most
/// [`MAX_TRACKED`], in order; malformed entries are skipped (a broken entry
/// must never stop traffic), and so is all of a value that is not UTF-8. A
/// cluster listed twice: the first entry counts.
pub fn entries(bytes: &[u8]) -> impl Iterator<Item = Entry<'_>> {
    let text = std::str::from_utf8(bytes).unwrap_or("");
    text.split(';')
        .filter_map(|item| {
            let (name, rest) = item.split_once('=')?;
            let mut nums = rest.split(',');
            let (Some(a), Some(b), Some(c), None) =
                (nums.next(), nums.next(), nums.next(), nums.next())
            else {
                return None;
            };
            if name.is_empty() {
                return None;
            }
            Some(Entry {
                cluster: name,
                consecutive: a.parse().ok()?,
                ejected_until_ms: b.parse().ok()?,
                ejections: c.parse().ok()?,
            })
        })
        .take(MAX_TRACKED)
}

/// Reads a value in place (nothing is allocated): of the clusters `index_of`
/// knows (indices below 64), a bit per cluster ejected at `now_ms`, and a bit
/// per cluster whose entry has counts that a success must reset.
pub fn read_in_place(
    bytes: &[u8],
    index_of: impl Fn(&str) -> Option<usize>,
    now_ms: u64,
) -> (u64, u64) {
    let mut seen = 0u64;
    let mut ejected = 0u64;
    let mut dirty = 0u64;
    for e in entries(bytes) {
        let Some(k) = index_of(e.cluster).filter(|k| *k < 64) else {
            continue;
        };
        let bit = 1u64 << k;
        if seen & bit != 0 {
            continue;
        }
        seen |= bit;
        if now_ms < e.ejected_until_ms {
            ejected |= bit;
        }
        if e.consecutive > 0 || e.ejections > 0 {
            dirty |= bit;
        }
    }
    (ejected, dirty)
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthState {
    pub entries: Vec<ClusterHealth>,
}

/// What recording an outcome did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthEvent {
    /// Nothing changed that needs to be written.
    Unchanged,
    /// Counters changed; write them back.
    Updated,
    /// The cluster was just ejected until this time (ms), for the n-th time.
    Ejected { until_ms: u64, ejections: u32 },
}

impl HealthState {
    /// Decodes a value (see [`entries`]).
    pub fn decode(bytes: &[u8]) -> Self {
        let mut entries: Vec<ClusterHealth> = Vec::new();
        for e in self::entries(bytes) {
            if entries.iter().any(|x| x.cluster == e.cluster) {
                continue;
            }
            entries.push(ClusterHealth {
                cluster: e.cluster.to_string(),
                consecutive: e.consecutive,
                ejected_until_ms: e.ejected_until_ms,
                ejections: e.ejections,
            });
        }
        HealthState { entries }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::new();
        for e in &self.entries {
            if !out.is_empty() {
                out.push(';');
            }
            out.push_str(&e.cluster);
            out.push('=');
            crate::text::push_u64(&mut out, u64::from(e.consecutive));
            out.push(',');
            crate::text::push_u64(&mut out, e.ejected_until_ms);
            out.push(',');
            crate::text::push_u64(&mut out, u64::from(e.ejections));
        }
        out.into_bytes()
    }

    pub fn get(&self, cluster: &str) -> Option<&ClusterHealth> {
        self.entries.iter().find(|e| e.cluster == cluster)
    }

    pub fn is_ejected(&self, cluster: &str, now_ms: u64) -> bool {
        self.get(cluster)
            .is_some_and(|e| now_ms < e.ejected_until_ms)
    }

    /// Records one response from `cluster`.
    pub fn record(
        &mut self,
        cluster: &str,
        failed: bool,
        now_ms: u64,
        od: &OutlierDetection,
    ) -> HealthEvent {
        let idx = match self.entries.iter().position(|e| e.cluster == cluster) {
            Some(i) => i,
            None if !failed => return HealthEvent::Unchanged,
            None if self.entries.len() >= MAX_TRACKED => return HealthEvent::Unchanged,
            None => {
                self.entries.push(ClusterHealth {
                    cluster: cluster.to_string(),
                    ..ClusterHealth::default()
                });
                self.entries.len() - 1
            }
        };
        let Some(e) = self.entries.get_mut(idx) else {
            return HealthEvent::Unchanged;
        };
        if !failed {
            let mut changed = false;
            if e.consecutive != 0 {
                e.consecutive = 0;
                changed = true;
            }
            if e.ejections > 0 && now_ms >= e.ejected_until_ms.saturating_add(od.base_ejection_ms) {
                e.ejections -= 1;
                e.ejected_until_ms = now_ms;
                changed = true;
            }
            return if changed {
                HealthEvent::Updated
            } else {
                HealthEvent::Unchanged
            };
        }
        e.consecutive = e.consecutive.saturating_add(1);
        let ejected_now = now_ms < e.ejected_until_ms;
        if od.consecutive_5xx > 0 && e.consecutive >= od.consecutive_5xx && !ejected_now {
            e.ejections = e.ejections.saturating_add(1);
            let duration = od
                .base_ejection_ms
                .saturating_mul(u64::from(e.ejections))
                .min(od.max_ejection_ms);
            e.ejected_until_ms = now_ms.saturating_add(duration);
            e.consecutive = 0;
            return HealthEvent::Ejected {
                until_ms: e.ejected_until_ms,
                ejections: e.ejections,
            };
        }
        HealthEvent::Updated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn od(n: u32, base: u64) -> OutlierDetection {
        OutlierDetection {
            consecutive_5xx: n,
            base_ejection_ms: base,
            max_ejection_ms: 300_000,
        }
    }

    #[test]
    fn ejects_after_consecutive_errors_and_readmits_after_base_time() {
        let mut h = HealthState::default();
        let od = od(2, 60_000);
        assert_eq!(h.record("anthos", true, 1_000, &od), HealthEvent::Updated);
        assert!(!h.is_ejected("anthos", 1_000));
        assert_eq!(
            h.record("anthos", true, 2_000, &od),
            HealthEvent::Ejected {
                until_ms: 62_000,
                ejections: 1
            }
        );
        assert!(h.is_ejected("anthos", 61_999));
        assert!(!h.is_ejected("anthos", 62_000));
        assert!(!h.is_ejected("gke", 2_000));
    }

    #[test]
    fn a_success_resets_the_consecutive_count() {
        let mut h = HealthState::default();
        let od = od(2, 1_000);
        h.record("gke", true, 0, &od);
        assert_eq!(h.record("gke", false, 1, &od), HealthEvent::Updated);
        assert_eq!(h.record("gke", true, 2, &od), HealthEvent::Updated);
        assert!(!h.is_ejected("gke", 3));
        assert_eq!(h.record("gke", false, 4, &od), HealthEvent::Updated);
        assert_eq!(h.record("gke", false, 5, &od), HealthEvent::Unchanged);
    }

    #[test]
    fn repeated_ejections_last_longer_up_to_the_maximum() {
        let mut h = HealthState::default();
        let od = OutlierDetection {
            consecutive_5xx: 1,
            base_ejection_ms: 100_000,
            max_ejection_ms: 250_000,
        };
        assert_eq!(
            h.record("a", true, 0, &od),
            HealthEvent::Ejected {
                until_ms: 100_000,
                ejections: 1
            }
        );
        assert_eq!(
            h.record("a", true, 100_000, &od),
            HealthEvent::Ejected {
                until_ms: 300_000,
                ejections: 2
            }
        );
        assert_eq!(
            h.record("a", true, 300_000, &od),
            HealthEvent::Ejected {
                until_ms: 550_000,
                ejections: 3
            }
        );
    }

    #[test]
    fn failures_while_ejected_do_not_extend_the_ejection() {
        let mut h = HealthState::default();
        let od = od(1, 1_000);
        h.record("a", true, 0, &od);
        assert_eq!(h.record("a", true, 500, &od), HealthEvent::Updated);
        assert_eq!(h.get("a").map(|e| e.ejected_until_ms), Some(1_000));
    }

    #[test]
    fn ejection_count_decays_after_a_healthy_period() {
        let mut h = HealthState::default();
        let od = od(1, 1_000);
        h.record("a", true, 0, &od);
        assert_eq!(h.record("a", false, 1_500, &od), HealthEvent::Unchanged);
        assert_eq!(h.record("a", false, 2_000, &od), HealthEvent::Updated);
        assert_eq!(h.get("a").map(|e| e.ejections), Some(0));
    }

    #[test]
    fn zero_threshold_never_ejects() {
        let mut h = HealthState::default();
        for t in 0..100 {
            h.record("a", true, t, &od(0, 1_000));
        }
        assert!(!h.is_ejected("a", 100));
    }

    #[test]
    fn the_in_place_reader_agrees_with_decode() {
        let value = b"gke=0,15,1;anthos=2,0,0;gke=9,99,9;x=1,2;other=0,50,1";
        let names = ["gke", "anthos", "other"];
        let index_of = |n: &str| names.iter().position(|x| *x == n);
        let h = HealthState::decode(value);
        for now in [0, 14, 15, 49, 50] {
            let (mask, dirty) = read_in_place(value, index_of, now);
            for (k, n) in names.iter().enumerate() {
                assert_eq!(mask & (1 << k) != 0, h.is_ejected(n, now), "{n} at {now}");
                let want = h
                    .get(n)
                    .is_some_and(|e| e.consecutive > 0 || e.ejections > 0);
                assert_eq!(dirty & (1 << k) != 0, want, "{n}");
            }
        }
    }

    #[test]
    fn encoding_round_trips_and_tolerates_garbage() {
        let mut h = HealthState::default();
        h.record("gke", true, 5, &od(1, 10));
        h.record("anthos", true, 5, &od(3, 10));
        let bytes = h.encode();
        assert_eq!(String::from_utf8_lossy(&bytes), "gke=0,15,1;anthos=1,0,0");
        assert_eq!(HealthState::decode(&bytes), h);
        let junk = HealthState::decode(b"gke=1,2;x=a,b,c;=1,2,3;ok=1,2,3;ok=4,5,6;\xff");
        assert_eq!(junk.entries.len(), 0, "invalid UTF-8 decodes to empty");
        let junk = HealthState::decode(b"gke=1,2;x=a,b,c;=1,2,3;ok=1,2,3;ok=4,5,6");
        assert_eq!(
            junk.entries,
            vec![ClusterHealth {
                cluster: "ok".into(),
                consecutive: 1,
                ejected_until_ms: 2,
                ejections: 3
            }]
        );
    }
}
