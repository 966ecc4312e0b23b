//! The filter's log lines in what pilot-agent writes: Envoy's log in Istio's
//! format (`<time>\t<level>\tenvoy wasm <source>\twasm log <plugin>: <message>\tthread=<n>`).

/// (level, message) of every `wasm log` line, levels as in the harness (`warn`).
pub fn wasm_log_lines(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split('\t').collect();
            let level = *fields.get(1)?;
            let message = fields.iter().find_map(|f| f.strip_prefix("wasm log "))?;
            let message = message.split_once(": ").map(|(_, m)| m).unwrap_or(message);
            let level = if level == "warning" { "warn" } else { level };
            Some((level.to_string(), message.to_string()))
        })
        .collect()
}

/// istio-agent's errors about fetching a Wasm module, from the pod's agent
/// log (`<time>\terror\twasm\terror in converting the wasm config to local: ...`).
pub fn wasm_fetch_errors(pod: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(pod.join("agent.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            f.get(1) == Some(&"error") && f.get(2) == Some(&"wasm")
        })
        .map(|l| l.split('\t').skip(3).collect::<Vec<_>>().join(" "))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_formatted_envoy_lines() {
        let text = "2026-12-01T11:00:00.000000Z\twarning\tenvoy wasm external/envoy/source/extensions/common/wasm/context.cc:1204\twasm log istio-system.hybridmesh-client~istio-translated-wasmplugin: hybridmesh: config rejected\tthread=12\n2026-12-01T11:00:00.1Z\tinfo\tcache\tfetched\n";
        assert_eq!(
            wasm_log_lines(text),
            vec![(
                "warn".to_string(),
                "hybridmesh: config rejected".to_string()
            )]
        );
    }
}
