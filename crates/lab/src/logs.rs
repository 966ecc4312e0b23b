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
/// log (`<time>\terror\twasm\terror in converting the wasm config to local: ...`),
/// each with the lines a multi-error continues on.
pub fn wasm_fetch_errors(pod: &std::path::Path) -> Vec<String> {
    fetch_errors(&std::fs::read_to_string(pod.join("agent.log")).unwrap_or_default())
}

fn fetch_errors(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut in_error = false;
    for l in text.lines() {
        let f: Vec<&str> = l.split('\t').collect();
        if f.len() >= 3 && f[0].starts_with("20") {
            in_error = f[1] == "error" && f[2] == "wasm";
            if in_error {
                out.push(f[3..].join(" "));
            }
        } else if in_error && !l.trim().is_empty() {
            if let Some(last) = out.last_mut() {
                last.push(' ');
                last.push_str(l.trim());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fetch_error_keeps_the_lines_it_continues_on() {
        let text = "2026-12-05T03:12:00Z\terror\twasm\terror in converting the wasm config to local: cannot fetch: 2 errors occurred:\n\t* could not parse as compat variant: invalid media type\n\t* number of layers must be 2 but got 1\n\n2026-12-05T03:12:01Z\tinfo\twasm\tfetching image x\n";
        assert_eq!(
            fetch_errors(text),
            vec!["error in converting the wasm config to local: cannot fetch: 2 errors occurred: * could not parse as compat variant: invalid media type * number of layers must be 2 but got 1".to_string()]
        );
    }

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
