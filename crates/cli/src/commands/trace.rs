//! `hybridmesh trace`: read hop records back and answer where traffic went and why.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;

use hybridmesh_ops::trace::{describe, parse, path, svg, Filter, Matrix};

use super::{Output, Paint};
use crate::Outcome;

/// Read hop records from Envoy JSON access logs (with the filter state
/// `wasm.hybridmesh.hop` in a `hop` field) or from `hybridmesh simulate
/// --hops`, and show one request's path, who talked to whom, and how much
/// traffic crossed networks.
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  hybridmesh simulate --config examples/03-weighted-80-20/config.yaml --hops hops.jsonl\n  hybridmesh trace hops.jsonl --svg mesh.svg\n  hybridmesh trace access.log --request-id 5f1c... \n  hybridmesh trace access.log --cross-network --cluster anthos"
)]
pub struct TraceCommand {
    /// Log files (JSON lines).
    #[arg(required = true, value_name = "LOG")]
    logs: Vec<PathBuf>,
    /// One request's path, hop by hop.
    #[arg(long, value_name = "ID")]
    request_id: Option<String>,
    /// Only this service (exact, or a suffix such as .default.svc.cluster.local).
    #[arg(long, value_name = "HOST")]
    service: Option<String>,
    /// Only hops from or served by this cluster.
    #[arg(long, value_name = "CLUSTER")]
    cluster: Option<String>,
    /// Only hops that crossed networks.
    #[arg(long)]
    cross_network: bool,
    /// Draw the mesh (clusters, networks, flows by share) as SVG into FILE.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Keep reading the logs as they grow, printing each new hop.
    #[arg(long)]
    watch: bool,
    /// With --watch: stop after this long (e.g. 30s); default: until Ctrl-C.
    #[arg(long, value_name = "DURATION", requires = "watch")]
    watch_for: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

impl TraceCommand {
    fn filter(&self) -> Filter {
        Filter {
            request_id: self.request_id.clone(),
            service: self.service.clone(),
            cluster: self.cluster.clone(),
            cross_network_only: self.cross_network,
        }
    }

    pub fn execute(self) -> anyhow::Result<Outcome> {
        anyhow::ensure!(
            self.output != Output::Junit,
            "--output junit is for `hybridmesh test`; use text or json"
        );
        if self.watch {
            return self.watch();
        }
        let p = Paint::stdout();
        let filter = self.filter();
        let mut hops = Vec::new();
        let mut problems = 0;
        for f in &self.logs {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read {}", f.display()))?;
            let parsed = parse(&text);
            for (line, why) in &parsed.malformed {
                eprintln!("{}:{line}: skipped: {why}", f.display());
            }
            problems += parsed.malformed.len();
            if parsed.not_json > 0 && self.output == Output::Text {
                eprintln!(
                    "{}: {} line(s) that are not JSON (Envoy's own log) skipped",
                    f.display(),
                    parsed.not_json
                );
            }
            hops.extend(parsed.hops.into_iter().filter(|h| filter.matches(h)));
        }
        let matrix = Matrix::of(hops.iter());
        if let Some(file) = &self.svg {
            std::fs::write(file, svg(&matrix))
                .with_context(|| format!("cannot write {}", file.display()))?;
        }
        match self.output {
            Output::Json => {
                let flows: Vec<serde_json::Value> = matrix
                    .flows
                    .iter()
                    .map(|((a, b), n)| serde_json::json!({"source": a, "served_by": b, "requests": n,
                        "cross_network": matrix.cross.get(&(a.clone(), b.clone())).copied().unwrap_or(0)}))
                    .collect();
                let out = serde_json::json!({
                    "requests": matrix.total,
                    "cross_network": matrix.cross_network,
                    "flows": flows,
                    "hops": if self.request_id.is_some() { serde_json::to_value(&hops)? } else { serde_json::Value::Null },
                    "skipped_lines": problems,
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            }
            Output::Text | Output::Junit => {
                if let Some(id) = &self.request_id {
                    let p_hops = path(&hops, id);
                    if p_hops.is_empty() {
                        println!("no hop record for request {id}");
                    }
                    for (i, h) in p_hops.iter().enumerate() {
                        println!("{}. {}", i + 1, describe(h));
                    }
                } else {
                    println!(
                        "{}",
                        p.bold(
                            "who talked to whom (rows: source cluster; columns: serving cluster)"
                        )
                    );
                    println!("{}", matrix.table());
                }
                if let Some(file) = &self.svg {
                    println!("picture: {}", file.display());
                }
                if problems > 0 {
                    println!("{problems} line(s) skipped (see stderr)");
                }
            }
        }
        Ok(if hops.is_empty() && self.request_id.is_some() {
            Outcome::Failed
        } else {
            Outcome::Passed
        })
    }

    /// Follows the logs like `tail -f`, printing each new hop that matches.
    fn watch(&self) -> anyhow::Result<Outcome> {
        let filter = self.filter();
        let until = match &self.watch_for {
            Some(d) => Some(Instant::now() + hybridmesh_scenario::duration(d)?),
            None => None,
        };
        let mut offsets = vec![0u64; self.logs.len()];
        let mut pending = vec![String::new(); self.logs.len()];
        loop {
            for (i, f) in self.logs.iter().enumerate() {
                let mut file = std::fs::File::open(f)
                    .with_context(|| format!("cannot read {}", f.display()))?;
                let len = file.metadata()?.len();
                if len < offsets[i] {
                    offsets[i] = 0; // rotated or truncated
                }
                file.seek(SeekFrom::Start(offsets[i]))?;
                let mut chunk = String::new();
                file.read_to_string(&mut chunk)?;
                offsets[i] = len;
                pending[i].push_str(&chunk);
                // Only whole lines; a partial last line waits for its end.
                if let Some(end) = pending[i].rfind('\n') {
                    let complete: String = pending[i].drain(..=end).collect();
                    for h in parse(&complete).hops.iter().filter(|h| filter.matches(h)) {
                        println!("{} {}", h.request_id, describe(h));
                    }
                }
            }
            if until.is_some_and(|u| Instant::now() >= u) {
                return Ok(Outcome::Passed);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
