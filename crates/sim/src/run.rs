//! Scenarios on the simulated mesh: the `.wasm` in the harness or the
//! decision code natively, and the parity check between the two.

use std::time::Instant;

use hybridmesh_scenario::runner::{run_with, verdict, Backend, ScenarioReport};
use hybridmesh_scenario::{Outcome, RequestSpec, Scenario, Totals};
use proxy_wasm_host::{Limits, Module};

use crate::{NativeSidecar, Sidecar, SidecarSpec, Sim, WasmSidecar};

impl Backend for Sim {
    fn cluster_names(&self) -> Vec<String> {
        Sim::cluster_names(self).to_vec()
    }
    fn request(&mut self, spec: &RequestSpec, default_from: &str) -> anyhow::Result<Outcome> {
        Sim::request(self, spec, default_from)
    }
    fn is_random(&self, from: &str, spec: &RequestSpec) -> bool {
        Sim::is_random(self, from, spec)
    }
    fn drain(&mut self, cluster: &str) -> anyhow::Result<()> {
        Sim::drain(self, cluster)
    }
    fn restore(&mut self, cluster: &str) -> anyhow::Result<()> {
        Sim::restore(self, cluster)
    }
    fn fail(&mut self, cluster: &str, status: u32) -> anyhow::Result<()> {
        Sim::fail(self, cluster, status)
    }
    fn advance(&mut self, by: std::time::Duration) -> anyhow::Result<()> {
        Sim::advance(self, by)
    }
    fn reconfigure(&mut self, cluster: &str, config: &[u8]) -> anyhow::Result<bool> {
        Sim::reconfigure(self, cluster, config)
    }
    fn metric(&self, proxy: &str, name: &str) -> anyhow::Result<Option<u64>> {
        Ok(self.sidecar(proxy)?.metric(name))
    }
    fn logs(&self, proxy: &str) -> anyhow::Result<Vec<(String, String)>> {
        Ok(self.sidecar(proxy)?.logs())
    }
    fn failure_counts(&self) -> Vec<usize> {
        Sim::failure_counts(self)
    }
    fn failures_since(&self, counts: &[usize]) -> Vec<String> {
        Sim::failures_since(self, counts)
    }
    fn answers_callouts(&self) -> bool {
        true
    }
    fn callout_problems(&mut self) -> Vec<String> {
        Sim::callout_problems(self)
    }
    fn config_rejections(&self) -> Vec<String> {
        Sim::config_rejections(self)
    }
}

/// What runs in the sidecars.
#[derive(Clone)]
pub enum Engine {
    /// A compiled proxy-wasm module in the harness, held to the limits.
    Wasm(Module, Limits),
    /// The filter's decision code, natively (for parity checks).
    Native,
}

impl Engine {
    /// `module` in the harness with the default limits.
    pub fn wasm(module: Module) -> Engine {
        Engine::Wasm(module, Limits::default())
    }
}

/// Loads `path` and runs it, within the default [`Totals`].
pub fn run_file(path: &std::path::Path, engine: &Engine) -> ScenarioReport {
    run_file_within(path, engine, &Totals::default())
}

/// Loads `path` and runs it, if its steps stay within `totals`.
pub fn run_file_within(path: &std::path::Path, engine: &Engine, totals: &Totals) -> ScenarioReport {
    let started = Instant::now();
    match Scenario::load(path).and_then(|s| s.check_totals(totals).map(|()| s)) {
        Ok(s) => run(&s, engine),
        Err(e) => {
            let mut error = format!("{e:#}");
            let plugin_config_keys = ["`clusters`", "`routes`", "`identity`", "`outlierDetection`"];
            if error.contains(": scenario: unknown field")
                && plugin_config_keys
                    .iter()
                    .any(|k| error.contains(&format!("unknown field {k}")))
            {
                error.push_str("\n  (this looks like a plugin config: check it with `hybridmesh validate`, and name it under `config:` in a scenario)");
            }
            ScenarioReport {
                name: "(scenario not loaded)".to_string(),
                path: path.display().to_string(),
                ok: false,
                error: Some(error),
                steps: Vec::new(),
                seconds: started.elapsed().as_secs_f64(),
            }
        }
    }
}

/// Builds the scenario's mesh with `engine` in every sidecar.
pub fn build_sim(s: &Scenario, engine: &Engine) -> anyhow::Result<Sim> {
    let mesh = s.mesh()?;
    let config_for = |cluster: &str| s.config_for(cluster);
    let mut make = |spec: &SidecarSpec| -> anyhow::Result<Box<dyn Sidecar>> {
        Ok(match engine {
            Engine::Wasm(m, limits) => Box::new(WasmSidecar::with_limits(m, *limits, spec)?),
            Engine::Native => Box::new(NativeSidecar::new(spec)),
        })
    };
    Sim::new(
        mesh,
        s.proxy.server_sidecars,
        &config_for,
        &mut make,
        &s.proxy,
    )
}

pub fn run(s: &Scenario, engine: &Engine) -> ScenarioReport {
    let started = Instant::now();
    let mut report = ScenarioReport {
        name: s.name.clone(),
        path: s.path.display().to_string(),
        ok: true,
        error: None,
        steps: Vec::new(),
        seconds: 0.0,
    };
    let mut sim = match build_sim(s, engine) {
        Ok(sim) => sim,
        Err(e) => {
            report.ok = false;
            report.error = Some(format!("{e:#}"));
            report.seconds = started.elapsed().as_secs_f64();
            return report;
        }
    };
    run_with(s, &mut sim, report, started)
}

/// What [`parity`] found.
#[derive(Debug, Clone, Default)]
pub struct Parity {
    /// Requests compared (those whose outcome does not depend on a random pick).
    pub compared: usize,
    pub differences: Vec<String>,
}

/// Runs a scenario with the `.wasm` and natively and compares every request
/// whose outcome does not depend on a random pick.
pub fn parity(path: &std::path::Path, module: &Module) -> anyhow::Result<Parity> {
    let s = Scenario::load(path)?;
    let wasm = run(&s, &Engine::wasm(module.clone()));
    let native = run(&s, &Engine::Native);
    if let Some(e) = wasm.error.or(native.error) {
        anyhow::bail!("{}: {e}", path.display());
    }
    let mut diffs = Vec::new();
    let mut compared = 0;
    if wasm.steps.len() != native.steps.len() {
        diffs.push(format!(
            "{} steps through the wasm, {} natively",
            wasm.steps.len(),
            native.steps.len()
        ));
    }
    for (ws, ns) in wasm.steps.iter().zip(&native.steps) {
        if ws.outcomes.len() != ns.outcomes.len() {
            diffs.push(format!(
                "step {:?}: {} requests through the wasm, {} natively",
                ws.name,
                ws.outcomes.len(),
                ns.outcomes.len()
            ));
        }
        if ws.ok != ns.ok {
            diffs.push(format!(
                "step {:?}: wasm {} / native {}: {:?} / {:?}",
                ws.name,
                verdict(ws.ok),
                verdict(ns.ok),
                ws.problems,
                ns.problems
            ));
        }
        for (k, ((wo, wr), (no, nr))) in ws.outcomes.iter().zip(&ns.outcomes).enumerate() {
            if *wr || *nr {
                continue;
            }
            let comparable = |o: &Outcome| {
                let mut o = o.clone();
                // Envoy adds these; the native engine does not model them.
                o.response_headers
                    .retain(|(k, _)| k.starts_with("x-hybridmesh") || k == ":status");
                if let Some(h) = o.upstream_headers.as_mut() {
                    h.retain(|(k, _)| k.starts_with("x-hybridmesh") || k == ":authority");
                    h.sort();
                }
                o.response_headers.sort();
                o
            };
            compared += 1;
            let (a, b) = (comparable(wo), comparable(no));
            if a != b {
                diffs.push(format!(
                    "step {:?} request {}: wasm {a:?}\n  native {b:?}",
                    ws.name,
                    k + 1
                ));
            }
        }
    }
    Ok(Parity {
        compared,
        differences: diffs,
    })
}
