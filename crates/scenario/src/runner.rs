//! Running a scenario on any backend: play the steps, check expectations.

use std::time::Instant;

use serde::Serialize;

use crate::{Acceptance, Expect, Outcome, RequestSpec, Scenario, Step};

/// What a scenario runs against: the harness's simulated mesh (`Sim`) or
/// the real-Envoy replica (`Replica`). The runner only talks to this.
pub trait Backend {
    fn cluster_names(&self) -> Vec<String>;
    fn request(&mut self, spec: &RequestSpec, default_from: &str) -> anyhow::Result<Outcome>;
    /// Does the filter's decision for this request depend on a random pick?
    fn is_random(&self, from: &str, spec: &RequestSpec) -> bool;
    fn drain(&mut self, cluster: &str) -> anyhow::Result<()>;
    fn restore(&mut self, cluster: &str) -> anyhow::Result<()>;
    fn fail(&mut self, cluster: &str, status: u32) -> anyhow::Result<()>;
    fn advance(&mut self, by: std::time::Duration) -> anyhow::Result<()>;
    /// Pushes a config to `cluster`'s sidecars (or `all`); whether all accepted it.
    fn reconfigure(&mut self, cluster: &str, config: &[u8]) -> anyhow::Result<bool>;
    /// A counter of a proxy (`<cluster>.client` / `<cluster>.server`).
    fn metric(&self, proxy: &str, name: &str) -> anyhow::Result<Option<u64>>;
    /// A proxy's filter log lines, (level, message).
    fn logs(&self, proxy: &str) -> anyhow::Result<Vec<(String, String)>>;
    /// Traps so far, per sidecar (the harness sees them; a real proxy logs them).
    fn failure_counts(&self) -> Vec<usize> {
        Vec::new()
    }
    fn failures_since(&self, _counts: &[usize]) -> Vec<String> {
        Vec::new()
    }
    /// One line per proxy running without a plugin config because its first one
    /// was rejected (Envoy then answers every request there itself).
    fn config_rejections(&self) -> Vec<String> {
        Vec::new()
    }
    /// Whether this backend answers the module's callouts from a step's
    /// `request.callouts` (the simulated mesh does; real proxies call real services).
    fn answers_callouts(&self) -> bool {
        false
    }
    /// What went wrong with the last request's callouts: one made with no answer
    /// left, an answer for another cluster, answers left unused.
    fn callout_problems(&mut self) -> Vec<String> {
        Vec::new()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub name: String,
    pub ok: bool,
    pub problems: Vec<String>,
    /// What a person would have seen (curl-like lines).
    pub lines: Vec<String>,
    #[serde(skip)]
    pub outcomes: Vec<(Outcome, bool)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub name: String,
    pub path: String,
    pub ok: bool,
    /// A problem before any step could run (bad file, module that does not load).
    pub error: Option<String>,
    pub steps: Vec<StepReport>,
    pub seconds: f64,
}

/// Whole outcomes (headers and body, up to ~20 KB each) kept per scenario;
/// later ones are kept [`Outcome::slim`] (a few dozen bytes), so memory stays
/// bounded by the request total (`file::Totals`).
pub const KEPT_OUTCOMES: usize = 10_000;

/// Plays the scenario's steps against any backend.
pub fn run_on(s: &Scenario, backend: &mut dyn Backend) -> ScenarioReport {
    let report = ScenarioReport {
        name: s.name.clone(),
        path: s.path.display().to_string(),
        ok: true,
        error: None,
        steps: Vec::new(),
        seconds: 0.0,
    };
    run_with(s, backend, report, Instant::now())
}

pub fn run_with(
    s: &Scenario,
    backend: &mut dyn Backend,
    mut report: ScenarioReport,
    started: Instant,
) -> ScenarioReport {
    let default_from = s
        .from
        .clone()
        .or_else(|| backend.cluster_names().first().cloned())
        .unwrap_or_default();
    let mut kept = 0usize;
    for (i, step) in s.steps.iter().enumerate() {
        let r = run_step(s, backend, step, i, &default_from, &mut kept);
        report.ok &= r.ok;
        report.steps.push(r);
    }
    report.seconds = started.elapsed().as_secs_f64();
    report
}

fn step_name(step: &Step, i: usize, default_from: &str) -> String {
    if let Some(n) = &step.name {
        return n.clone();
    }
    if let Some(r) = &step.request {
        let from = r.from.as_deref().unwrap_or(default_from);
        let times = step.repeat.map(|n| format!(" x{n}")).unwrap_or_default();
        return match &r.direct {
            Some(to) => format!("request {} straight to {to}'s sidecar{times}", r.authority),
            None => format!("curl {} from {from}{times}", r.authority),
        };
    }
    if let Some(c) = &step.drain {
        return format!("drain {c}");
    }
    if let Some(c) = &step.restore {
        return format!("restore {c}");
    }
    if let Some(f) = &step.fail {
        return format!("{} answers {}", f.cluster, f.status);
    }
    if let Some(a) = &step.advance {
        return format!("wait {a}");
    }
    if let Some(r) = &step.reconfigure {
        return format!("reconfigure {}", r.cluster);
    }
    if step.expect.is_some() {
        return "check the proxies' metrics and logs".to_string();
    }
    format!("step {i}")
}

fn run_step(
    s: &Scenario,
    sim: &mut dyn Backend,
    step: &Step,
    i: usize,
    default_from: &str,
    kept: &mut usize,
) -> StepReport {
    let mut r = StepReport {
        name: step_name(step, i, default_from),
        ok: true,
        problems: Vec::new(),
        lines: Vec::new(),
        outcomes: Vec::new(),
    };
    let traps_before = sim.failure_counts();
    if let Err(e) = play(s, sim, step, default_from, &mut r, kept) {
        r.problems.push(format!("{e:#}"));
    }
    // A trap in the module is the first thing its author needs to see, unless
    // the step expects it.
    let traps = sim.failures_since(&traps_before);
    match step.expect.as_ref().and_then(|e| e.trap.as_deref()) {
        Some(text) => {
            let (expected, other): (Vec<String>, Vec<String>) =
                traps.into_iter().partition(|f| f.contains(text));
            match expected.first() {
                Some(first) => r.lines.push(format!("trapped, as expected: {first}")),
                None if other.is_empty() => r.problems.push(format!(
                    "expected the module to trap with {text:?}; it did not trap"
                )),
                None => r.problems.push(format!(
                    "expected the module to trap with {text:?}; its traps said otherwise:"
                )),
            }
            r.problems.extend(other.into_iter().take(3));
        }
        None => r.problems.extend(traps.into_iter().take(3)),
    }
    if let Some(expect) = &step.expect {
        check_proxies(sim, expect, &mut r.problems);
    }
    r.ok = r.problems.is_empty();
    // A failing request step on a proxy without a config: say why first.
    if !r.ok && step.request.is_some() {
        let rejections = sim.config_rejections();
        r.problems.splice(0..0, rejections);
    }
    r
}

fn play(
    s: &Scenario,
    sim: &mut dyn Backend,
    step: &Step,
    default_from: &str,
    r: &mut StepReport,
    kept: &mut usize,
) -> anyhow::Result<()> {
    if let Some(req) = &step.request {
        // What an operator would find in the proxy's log: the config was rejected.
        r.lines.extend(sim.config_rejections());
        let n = step.repeat.unwrap_or(1).max(1);
        let expect = step.expect.clone().unwrap_or_default();
        let from = req.from.as_deref().unwrap_or(default_from);
        // Every request is sent (later steps depend on the mesh's state); only
        // the first few problems are listed.
        const SHOWN: usize = 5;
        let mut hidden = 0usize;
        if !req.callouts.is_empty() && !sim.answers_callouts() {
            anyhow::bail!(
                "request.callouts: this backend cannot answer the module's callouts (real proxies call real services); the simulated mesh (`hybridmesh test`) does"
            );
        }
        for k in 0..n {
            let random = sim.is_random(from, req);
            let o = sim.request(req, default_from)?;
            if r.lines.len() < 12 {
                r.lines.push(curl_line(&o));
            }
            let mut found = sim.callout_problems();
            check_outcome(&o, &expect, &mut found);
            for problem in found {
                if r.problems.len() >= SHOWN {
                    hidden += 1;
                } else if n > 1 {
                    r.problems
                        .push(format!("request {} of {n}: {problem}", k + 1));
                } else {
                    r.problems.push(problem);
                }
            }
            if *kept < KEPT_OUTCOMES {
                *kept += 1;
                r.outcomes.push((o, random));
            } else {
                r.outcomes.push((o.slim(), random));
            }
        }
        if hidden > 0 {
            r.problems
                .push(format!("({hidden} more problem(s) in this step not shown)"));
        }
        check_share(&r.outcomes, &expect, &mut r.problems);
    } else if let Some(c) = &step.drain {
        sim.drain(c)?;
        r.lines.push(format!("{c}: endpoints drained"));
    } else if let Some(c) = &step.restore {
        sim.restore(c)?;
        r.lines.push(format!("{c}: endpoints back"));
    } else if let Some(f) = &step.fail {
        sim.fail(&f.cluster, f.status)?;
        r.lines
            .push(format!("{}: endpoints answer {}", f.cluster, f.status));
    } else if let Some(a) = &step.advance {
        sim.advance(crate::duration(a)?)?;
    } else if let Some(rc) = &step.reconfigure {
        let bytes = crate::config_json(s.dir(), &rc.config)?;
        let accepted = sim.reconfigure(&rc.cluster, &bytes)?;
        r.lines.push(format!(
            "config {}",
            if accepted { "accepted" } else { "rejected" }
        ));
        match rc.expect {
            Some(Acceptance::Accepted) if !accepted => r
                .problems
                .push("the config was rejected, expected accepted".into()),
            Some(Acceptance::Rejected) if accepted => r
                .problems
                .push("the config was accepted, expected rejected".into()),
            _ => {}
        }
    }
    Ok(())
}

/// `"Anthos!!!"   <- anthos  target=anthos  200`
pub fn curl_line(o: &Outcome) -> String {
    let body = o.body.trim_end();
    let body = if body.len() > 60 {
        format!("{}…", &body[..60.min(body.len())])
    } else {
        body.to_string()
    };
    format!(
        "{body:<14} status={} served_by={} target={}",
        o.status,
        o.served_by.as_deref().unwrap_or("none"),
        o.target.as_deref().unwrap_or("none")
    )
}

fn check_outcome(o: &Outcome, e: &Expect, problems: &mut Vec<String>) {
    match (e.refused, o.is_refused()) {
        (true, false) => problems.push(format!(
            "answered status {}, expected the connection refused",
            o.status
        )),
        (false, true) => {
            // A refusal carries its reason; no status and no reason is a
            // stream that never completed (issue #25: "refused: " and nothing).
            let why = o.body.trim_end();
            problems.push(if why.is_empty() {
                "no answer: the stream was held and never completed (a callback stopped iteration, e.g. returned an unknown action code, and nothing resumed it)".to_string()
            } else {
                format!("the connection was refused: {why}")
            });
            return;
        }
        _ => {}
    }
    if let Some(status) = e.status {
        if o.status != status {
            problems.push(format!(
                "status {}, expected {status} (body: {:?})",
                o.status,
                o.body.trim_end()
            ));
        }
    }
    if let Some(body) = &e.body {
        if o.body.trim_end() != body.trim_end() {
            problems.push(format!("body {:?}, expected {body:?}", o.body.trim_end()));
        }
    }
    if let Some(part) = &e.body_contains {
        if !o.body.contains(part.as_str()) {
            problems.push(format!(
                "body {:?} does not contain {part:?}",
                o.body.trim_end()
            ));
        }
    }
    if let Some(c) = &e.served_by {
        let got = o.served_by.as_deref().unwrap_or("none");
        if got != c {
            problems.push(format!("served by {got}, expected {c}"));
        }
    }
    if let Some(t) = &e.target_cluster {
        let got = o.target.as_deref().unwrap_or("none");
        if got != t {
            problems.push(format!("target cluster {got}, expected {t}"));
        }
    }
    if e.served_by_header {
        let header = o.response_header("x-hybridmesh-served-by").unwrap_or("");
        let named = header.split(';').find_map(|kv| kv.strip_prefix("cluster="));
        let complete = header.contains(";network=") && header.contains(";locality=");
        if named.is_none() || named != o.served_by.as_deref() || !complete {
            problems.push(format!(
                "response header x-hybridmesh-served-by: {header:?}, expected cluster=<who served>;network=...;locality=... (served by {})",
                o.served_by.as_deref().unwrap_or("none")
            ));
        }
    }
    if let Some(want) = &e.route {
        let got = o.route.as_deref().unwrap_or("none");
        if got != want {
            problems.push(format!("route {got}, expected {want}"));
        }
    }
    for (name, want) in &e.upstream_headers {
        match &o.upstream_headers {
            None => problems.push(format!(
                "upstream header {name}: the request did not reach the application"
            )),
            Some(_) => {
                let got = o.upstream_header(name);
                if got != want.as_deref() {
                    problems.push(format!(
                        "upstream header {name}: {}, expected {}",
                        show(got),
                        show(want.as_deref())
                    ));
                }
            }
        }
    }
    for (name, want) in &e.response_headers {
        let got = o.response_header(name);
        if got != want.as_deref() {
            problems.push(format!(
                "response header {name}: {}, expected {}",
                show(got),
                show(want.as_deref())
            ));
        }
    }
}

fn show(v: Option<&str>) -> String {
    v.map(|v| format!("{v:?}"))
        .unwrap_or_else(|| "absent".into())
}

fn check_share(outcomes: &[(Outcome, bool)], e: &Expect, problems: &mut Vec<String>) {
    let n = outcomes.len().max(1) as f64;
    if e.consistent {
        let mut served: Vec<&str> = outcomes
            .iter()
            .map(|(o, _)| o.served_by.as_deref().unwrap_or("none"))
            .collect();
        served.dedup();
        if served.len() > 1 {
            problems.push(format!(
                "served by {} in turn, expected one cluster throughout",
                served.join(", then ")
            ));
        }
    }
    for (cluster, [lo, hi]) in &e.share {
        let count = outcomes
            .iter()
            .filter(|(o, _)| o.served_by.as_deref().unwrap_or("none") == cluster)
            .count();
        let share = count as f64 / n;
        if share < *lo || share > *hi {
            problems.push(format!(
                "{cluster} served {count} of {} ({:.1}%), expected {:.0}%-{:.0}%",
                outcomes.len(),
                share * 100.0,
                lo * 100.0,
                hi * 100.0
            ));
        }
    }
}

fn check_proxies(sim: &dyn Backend, e: &Expect, problems: &mut Vec<String>) {
    for (proxy, metrics) in &e.metrics {
        for (name, want) in metrics {
            match sim.metric(proxy, name) {
                Err(err) => problems.push(format!("{err:#}")),
                Ok(got) if got != Some(*want) => problems.push(format!(
                    "{proxy}: metric {name} is {}, expected {want}",
                    got.map(|v| v.to_string())
                        .unwrap_or_else(|| "not defined".into())
                )),
                Ok(_) => {}
            }
        }
    }
    for l in &e.logs {
        let lines = match sim.logs(&l.proxy) {
            Ok(lines) => lines,
            Err(err) => {
                problems.push(format!("{err:#}"));
                continue;
            }
        };
        let found = lines.iter().any(|(level, msg)| {
            l.level.as_ref().is_none_or(|want| want == level) && msg.contains(&l.contains)
        });
        if !found {
            problems.push(format!(
                "{}: no {}log line contains {:?}",
                l.proxy,
                l.level
                    .as_ref()
                    .map(|l| format!("{l} "))
                    .unwrap_or_default(),
                l.contains
            ));
        }
    }
}

pub fn verdict(ok: bool) -> &'static str {
    if ok {
        "passed"
    } else {
        "failed"
    }
}
