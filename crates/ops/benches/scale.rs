//! How `validate` and `render` grow with a mesh: 64 clusters (the filter's
//! limit) and 250 to 2,000 services, from `synthetic_description`. Each size
//! is checked the way `validate` checks a mesh description
//! (`MeshDescription::from_yaml`, `mesh_check::check`) and rendered the way
//! `render --out` renders it, short of writing the files
//! (`mesh_check::check_and_render`, `render::render_files`).
//!
//! The sizes are interleaved round by round and each figure is the median
//! over rounds; the ratio to the row before is what doubling the services
//! costs (2.0: linear). Run with `cargo bench -p hybridmesh-ops --bench scale`
//! (`-- --rounds 9` for more rounds).

use std::time::{Duration, Instant};

use hybridmesh_ops::deploy::mesh::synthetic_description;
use hybridmesh_ops::deploy::render::{self, Which};
use hybridmesh_ops::deploy::{mesh_check, MeshDescription};

const CLUSTERS: usize = 64;
const SERVICES: [usize; 4] = [250, 500, 1_000, 2_000];

fn validate(text: &str) -> anyhow::Result<usize> {
    let mesh = MeshDescription::from_yaml(text)
        .map_err(|p| anyhow::anyhow!("{}", mesh_check::join(&p)))?;
    let problems = mesh_check::check(&mesh, text);
    anyhow::ensure!(problems.is_empty(), "{}", mesh_check::join(&problems));
    Ok(mesh.services.len())
}

fn render(text: &str) -> anyhow::Result<usize> {
    let mesh = MeshDescription::from_yaml(text)
        .map_err(|p| anyhow::anyhow!("{}", mesh_check::join(&p)))?;
    let (problems, rules) = mesh_check::check_and_render(&mesh, text);
    anyhow::ensure!(problems.is_empty(), "{}", mesh_check::join(&problems));
    let rules = rules.ok_or_else(|| anyhow::anyhow!("nothing rendered"))?;
    let files = render::render_files(&mesh, &Which::All, "scale.yaml", rules)?;
    Ok(files.iter().map(|f| f.len()).sum())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn main() -> anyhow::Result<()> {
    let mut rounds = 5;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--rounds" {
            rounds = args.next().and_then(|n| n.parse().ok()).unwrap_or(rounds);
        }
    }
    let texts: Vec<String> = SERVICES
        .iter()
        .map(|&n| synthetic_description(CLUSTERS, n))
        .collect();
    let mut times = vec![(Vec::new(), Vec::new()); SERVICES.len()];
    let mut bytes = vec![0; SERVICES.len()];
    for round in 0..rounds {
        // The order rotates: no size always runs after the largest.
        for k in 0..SERVICES.len() {
            let i = (k + round) % SERVICES.len();
            let t = Instant::now();
            validate(&texts[i])?;
            times[i].0.push(t.elapsed());
            let t = Instant::now();
            bytes[i] = render(&texts[i])?;
            times[i].1.push(t.elapsed());
        }
    }
    println!(
        "validate and render, {CLUSTERS} clusters, median of {rounds} rounds ({} cores)",
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    println!(
        "{:>9} {:>12} {:>10} {:>12} {:>10} {:>14}",
        "services", "validate", "x before", "render", "x before", "rendered"
    );
    let mut before: Option<(f64, f64)> = None;
    for (i, n) in SERVICES.iter().enumerate() {
        let v = median(times[i].0.clone()).as_secs_f64();
        let r = median(times[i].1.clone()).as_secs_f64();
        let ratio = |now: f64, then: Option<f64>| {
            then.map_or_else(|| "-".to_string(), |t| format!("{:.2}", now / t))
        };
        println!(
            "{n:>9} {:>10.3} s {:>10} {:>10.3} s {:>10} {:>11.1} MB",
            v,
            ratio(v, before.map(|b| b.0)),
            r,
            ratio(r, before.map(|b| b.1)),
            bytes[i] as f64 / 1e6
        );
        before = Some((v, r));
    }
    Ok(())
}
