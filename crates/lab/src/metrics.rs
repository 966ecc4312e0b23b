//! The lab's Prometheus (started by `up.sh` in the pod network): it finds the
//! pods through each cluster's apiserver and scrapes what the annotations
//! Istio's injector writes ask for. This module queries it and compares what
//! it stored with what each sidecar serves.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::{admin, output, Lab, CLUSTERS, ECHO_PODS};

/// Where the lab's Prometheus answers on the host (`up.sh`).
pub const PROMETHEUS: &str = "http://127.60.0.1:9090";

/// One series: its labels (the metric name as `__name__`) and value.
pub type Series = (BTreeMap<String, String>, f64);

/// The series of a Prometheus text exposition (`name{k="v",...} value`),
/// comments skipped. Label values are unescaped (`\\`, `\"`, `\n`).
pub fn exposition(text: &str) -> Vec<Series> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((head, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let mut labels = BTreeMap::new();
        let (name, rest) = match head.split_once('{') {
            Some((n, r)) => (n, r.strip_suffix('}').unwrap_or(r)),
            None => (head, ""),
        };
        labels.insert("__name__".to_string(), name.to_string());
        let mut chars = rest.chars().peekable();
        loop {
            let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
            if key.is_empty() || chars.next() != Some('"') {
                break;
            }
            let mut v = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some('n') => v.push('\n'),
                        Some(e) => v.push(e),
                        None => {}
                    },
                    '"' => break,
                    c => v.push(c),
                }
            }
            labels.insert(key.trim_start_matches(',').to_string(), v);
            if chars.peek() == Some(&',') {
                chars.next();
            }
        }
        out.push((labels, value));
    }
    out
}

impl Lab {
    /// An instant query to the lab's Prometheus: each series' labels
    /// (`__name__` included) and value.
    pub fn prometheus_query(&self, query: &str) -> anyhow::Result<Vec<Series>> {
        let text = output(Command::new("curl").args([
            "-sf",
            "--max-time",
            "5",
            "-G",
            &format!("{PROMETHEUS}/api/v1/query"),
            "--data-urlencode",
            &format!("query={query}"),
        ]))
        .with_context(|| format!("the lab's Prometheus ({PROMETHEUS}, up.sh starts it)"))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{query}: not JSON: {text}"))?;
        anyhow::ensure!(v["status"] == "success", "{query}: {v}");
        let mut out = Vec::new();
        for r in v["data"]["result"].as_array().into_iter().flatten() {
            let labels = r["metric"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            let value = r["value"][1]
                .as_str()
                .and_then(|s| s.parse::<f64>().ok())
                .with_context(|| format!("{query}: no value in {r}"))?;
            out.push((labels, value));
        }
        Ok(out)
    }

    /// Waits until what Prometheus stored equals what every sidecar serves
    /// on its agent's `:15020/stats/prometheus` (what the annotations point
    /// at), for each series whose name starts with `prefix`: the same
    /// labels, plus the ones service discovery adds (`cluster`,
    /// `namespace`, `pod`), and the same value. Returns how many series were
    /// compared; on timeout, the ones that differ.
    pub fn scraped_as_served(&self, prefix: &str, timeout: Duration) -> anyhow::Result<usize> {
        let start = Instant::now();
        loop {
            let mut compared = 0;
            let mut differ = Vec::new();
            for (c, _, _) in CLUSTERS {
                let pods = std::iter::once(("sleep", "sleep-0"))
                    .chain(ECHO_PODS.iter().map(|(p, _)| ("default", *p)));
                for (ns, pod) in pods {
                    let served = admin::agent_get(&self.pod_dir(c, ns, pod), "stats/prometheus")?;
                    let stored = self.prometheus_query(&format!(
                        "{{__name__=~\"{prefix}.*\",cluster=\"{c}\",namespace=\"{ns}\",pod=\"{pod}\"}}"
                    ))?;
                    for (labels, value) in exposition(&served)
                        .into_iter()
                        .filter(|(l, _)| l["__name__"].starts_with(prefix))
                    {
                        compared += 1;
                        let found = stored
                            .iter()
                            .find(|(s, _)| labels.iter().all(|(k, v)| s.get(k) == Some(v)));
                        match found {
                            Some((_, v)) if *v == value => {}
                            Some((_, v)) => differ.push(format!(
                                "{c}/{ns}/{pod} {labels:?}: served {value}, stored {v}"
                            )),
                            None => differ
                                .push(format!("{c}/{ns}/{pod} {labels:?} = {value}: not stored")),
                        }
                    }
                }
            }
            if differ.is_empty() {
                return Ok(compared);
            }
            if start.elapsed() > timeout {
                anyhow::bail!(
                    "after {timeout:?}, {} of {compared} series differ between the sidecars and Prometheus:\n  {}",
                    differ.len(),
                    differ.join("\n  ")
                );
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_reads_names_labels_escapes_and_values() {
        let text = "# TYPE x counter\nhybridmesh_requests_total{source_cluster=\"gke\",decision=\"a\\\"b\"} 3\nup 1\nbad line\n";
        let s = exposition(text);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].0["__name__"], "hybridmesh_requests_total");
        assert_eq!(s[0].0["source_cluster"], "gke");
        assert_eq!(s[0].0["decision"], "a\"b");
        assert_eq!(s[0].1, 3.0);
        assert_eq!(s[1].0.len(), 1);
        assert_eq!(s[1].1, 1.0);
    }
}
