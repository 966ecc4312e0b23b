//! What a scenario file's `config` gives the module (Envoy 1.40 measured, issue 14
//! gap 5), and what the report says when the first config is rejected (gap 7).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod filter_support;

use std::path::{Path, PathBuf};

use hybridmesh_sim::run::{run_file, Engine};
use proxy_wasm_host::Module;

fn scenario(name: &str, body: &str) -> PathBuf {
    filter_support::scenario_file(&format!("config-{name}"), body)
}

/// The gap-5 fixture: logs the configuration size and bytes it gets in
/// `proxy_on_configure`.
fn config_probe() -> Module {
    Module::from_file(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../wasm-host/tests/fixtures/fidelity/gap5-plugin-configuration.wat"),
    )
    .unwrap()
}

fn assert_ok(path: &Path, engine: &Engine) -> Vec<String> {
    let r = run_file(path, engine);
    let problems: Vec<String> = r.steps.iter().flat_map(|s| s.problems.clone()).collect();
    assert!(r.ok, "{:?} {problems:?}", r.error);
    r.steps.iter().flat_map(|s| s.lines.clone()).collect()
}

#[test]
fn no_config_null_and_raw_strings_reach_the_module_as_envoy_gives_them() {
    let engine = Engine::wasm(config_probe());
    let expect = |text: &str| {
        format!(
            "proxy: {{serverSidecars: false}}\nsteps:\n  - expect:\n      logs:\n        - {{proxy: gke.client, contains: {text:?}}}\n"
        )
    };
    // No `config`: nothing at all, size 0 and a null buffer (not `{}`).
    let none =
        "configure config_size=0 get_buffer_bytes(PluginConfiguration, 0, 1024)=0 ptr=0 len=0 hex=";
    assert_ok(&scenario("absent", &expect(none)), &engine);
    assert_ok(
        &scenario("null", &format!("config: null\n{}", expect(none))),
        &engine,
    );
    // A raw string goes as it is (an inline string is still a path).
    assert_ok(
        &scenario(
            "raw",
            &format!(
                "config: !raw hello\n{}",
                expect("config_size=5 get_buffer_bytes(PluginConfiguration, 0, 1024)=0")
            ),
        ),
        &engine,
    );
    assert_ok(
        &scenario(
            "raw-hex",
            &format!("config: !raw hello\n{}", expect("hex=68656c6c6f")),
        ),
        &engine,
    );
    // A reconfigure to null: the module gets no configuration.
    let path = scenario(
        "reconfigure-null",
        &format!(
            "config: !raw hello\nproxy: {{serverSidecars: false}}\nsteps:\n  - reconfigure: {{config: null, expect: accepted}}\n  - expect:\n      logs:\n        - {{proxy: gke.client, contains: {none:?}}}\n"
        ),
    );
    assert_ok(&path, &engine);
}

#[test]
fn a_bad_first_config_answers_500_and_the_report_says_it_was_rejected() {
    let module = filter_support::module();
    for fail in ["failClose", "failOpen", "failReload"] {
        let path = scenario(
            &format!("bad-first-{fail}"),
            &format!(
                "config: {{routes: not a list}}\nproxy: {{failStrategy: {fail}, serverSidecars: false}}\nsteps:\n  - request: {{authority: echo-svc.default}}\n    expect: {{status: 500, servedBy: none, body: \"\"}}\n"
            ),
        );
        for engine in [Engine::wasm(module.clone()), Engine::Native] {
            let lines = assert_ok(&path, &engine);
            assert!(
                lines.contains(
                    &"gke.client: plugin config rejected; without one Envoy answers every request there 500 (NFCF)".to_string()
                ),
                "{fail}: {lines:?}"
            );
        }
    }
}
