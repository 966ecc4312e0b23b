//! The `.wasm` in the harness, as a [`Sidecar`].

use std::time::Duration;

use anyhow::Context as _;

use hybridmesh_filter_core::identity::Locality;

use crate::sidecar::{Answer, CalloutQueue, Forward, Reply, Sidecar, SidecarSpec, SidecarStream};
use hybridmesh_scenario::{Fail, NodeMetadata, Pairs};
use proxy_wasm_host::envoy::{Connection, NodeMetadataStyle, Proxy, StructValue, Upstream};
use proxy_wasm_host::plugin::{FailStrategy, Module, Plugin};
use proxy_wasm_host::Limits;

pub struct WasmSidecar {
    plugin: Plugin,
    next_worker: usize,
    callouts: CalloutQueue,
}

impl WasmSidecar {
    pub fn new(module: &Module, spec: &SidecarSpec) -> anyhow::Result<WasmSidecar> {
        WasmSidecar::with_limits(module, Limits::default(), spec)
    }

    /// [`WasmSidecar::new`], the module held to `limits` (time per call, memory, logs).
    pub fn with_limits(
        module: &Module,
        limits: Limits,
        spec: &SidecarSpec,
    ) -> anyhow::Result<WasmSidecar> {
        let loc = Locality::parse(spec.locality).unwrap_or_default();
        let proxy = Proxy::istio(spec.cluster)
            .network(spec.network)
            .locality(&loc.region, &loc.zone, &loc.subzone)
            .metadata("NAMESPACE", spec.namespace)
            .direction(spec.direction)
            .node_metadata_style(match spec.options.node_metadata {
                NodeMetadata::Xds => NodeMetadataStyle::Xds,
                NodeMetadata::Legacy => NodeMetadataStyle::Legacy,
            });
        let plugin = Plugin::builder(module)
            .proxy(proxy)
            .plugin_config(spec.config)
            .workers(spec.options.workers.max(1))
            .fail_strategy(match spec.options.fail_strategy {
                Fail::FailClose => FailStrategy::FailClose,
                Fail::FailOpen => FailStrategy::FailOpen,
                Fail::FailReload => FailStrategy::FailReload,
            })
            .seed(spec.options.seed)
            .limits(limits);
        let plugin = spec
            .options
            .callout_clusters
            .iter()
            .fold(plugin, |b, cluster| b.cluster(cluster))
            .build()
            .with_context(|| {
                format!(
                    "starting the module in {}'s {:?} sidecar",
                    spec.cluster, spec.direction
                )
            })?;
        Ok(WasmSidecar {
            plugin,
            next_worker: 0,
            callouts: CalloutQueue::default(),
        })
    }

    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }
}

struct WasmStream<'p> {
    stream: proxy_wasm_host::plugin::Stream<'p>,
    callouts: CalloutQueue,
}

impl WasmStream<'_> {
    /// Answers the stream's unanswered HTTP callouts from the step's answers, as
    /// long as there are callouts and answers (an answer may lead to another callout).
    fn answer_callouts(&mut self) -> anyhow::Result<()> {
        loop {
            let pending: Vec<_> = self
                .stream
                .http_callouts()
                .into_iter()
                .filter(|c| !c.answered)
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
            for call in pending {
                let header = |name: &str| {
                    call.headers
                        .iter()
                        .find(|(k, _)| k == name)
                        .map_or("", |(_, v)| v.as_str())
                };
                let what = format!("{} {}", header(":method"), header(":path"));
                let Some(answer) = self.callouts.next(&call.upstream, &what) else {
                    return Ok(());
                };
                if answer.fail {
                    self.stream.fail_http_call(call.token)?;
                } else if answer.timeout {
                    self.stream.plugin().time_out_http_call(call.token)?;
                } else {
                    let headers: Vec<(&str, &str)> = answer
                        .headers
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    let body = answer.body.clone().unwrap_or_default();
                    self.stream.respond_http_call(
                        call.token,
                        answer.status.unwrap_or(200),
                        &headers,
                        body.as_bytes(),
                    )?;
                }
            }
        }
    }
}

fn borrowed(pairs: &Pairs) -> Vec<(&str, &str)> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

impl SidecarStream for WasmStream<'_> {
    fn request(&mut self, headers: &Pairs, body: Option<&[u8]>) -> anyhow::Result<Forward> {
        // Framed as the client's protocol frames it (HTTP/1.x: the data, then an
        // empty end of stream).
        self.stream
            .request(&borrowed(headers), body.unwrap_or_default())?;
        self.answer_callouts()?;
        let s = &mut self.stream;
        if s.local_reply().is_some() || !s.request_forwarded() {
            s.complete()?;
            return Ok(Forward::Reply(Reply {
                status: s.client_response_status().unwrap_or(0),
                headers: s.client_response_headers().unwrap_or_default(),
                body: s.client_response_body(),
                hop: hop_record(s),
            }));
        }
        Ok(Forward::Headers(
            s.upstream_request_headers().unwrap_or_default(),
        ))
    }

    fn respond(&mut self, a: &Answer) -> anyhow::Result<Reply> {
        let mut up = Upstream::new(a.status).body(&a.body).flags(a.flags);
        for (k, v) in &a.headers {
            up = up.header(k, v);
        }
        if let Some(addr) = &a.address {
            up = up.address(addr);
        }
        if let Some(w) = &a.workload {
            up = up.istio_workload(w);
        }
        self.stream.respond(up)?;
        self.answer_callouts()?;
        let s = &mut self.stream;
        s.complete()?;
        Ok(Reply {
            status: s.client_response_status().unwrap_or(0),
            headers: s.client_response_headers().unwrap_or_default(),
            body: s.client_response_body(),
            hop: hop_record(s),
        })
    }
}

/// The filter's hop record (filter state `hybridmesh.hop`), as Envoy's access
/// log would read it.
fn hop_record(s: &proxy_wasm_host::plugin::Stream<'_>) -> Option<String> {
    s.filter_state()
        .get("hybridmesh.hop")
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

impl Sidecar for WasmSidecar {
    fn open(&mut self, connection: Connection) -> Box<dyn SidecarStream + '_> {
        self.open_with_metadata(connection, &[])
    }

    fn open_with_metadata(
        &mut self,
        connection: Connection,
        metadata: &[(String, String, StructValue)],
    ) -> Box<dyn SidecarStream + '_> {
        let workers = self.plugin.workers().max(1);
        let worker = self.next_worker % workers;
        self.next_worker += 1;
        let mut stream = self.plugin.stream(worker).connection(connection);
        for (namespace, key, value) in metadata {
            stream.filter_metadata(namespace, key, value.clone());
        }
        Box::new(WasmStream {
            stream,
            callouts: self.callouts.clone(),
        })
    }

    fn answer_callouts_from(&mut self, queue: &CalloutQueue) {
        self.callouts = queue.clone();
    }

    fn advance(&mut self, by: Duration) -> anyhow::Result<()> {
        Ok(self.plugin.advance(by)?)
    }

    fn reconfigure(&mut self, config: &[u8]) -> anyhow::Result<bool> {
        Ok(self.plugin.reconfigure(config)?)
    }

    fn configured(&self) -> bool {
        self.plugin.configured()
    }

    fn config_rejected(&self) -> bool {
        !self.plugin.config_accepted()
    }

    fn metric(&self, name: &str) -> Option<u64> {
        self.plugin.metric(name)
    }

    fn failures(&self) -> Vec<String> {
        self.plugin
            .failures()
            .into_iter()
            .map(|f| {
                let vm = self.plugin.vm_name(f.worker);
                format!(
                    "the module trapped in {} ({vm}): {}",
                    f.callback,
                    trap_summary(&f.message)
                )
            })
            .collect()
    }

    fn logs(&self) -> Vec<(String, String)> {
        self.logs_since(0)
    }

    fn logs_since(&self, start: usize) -> Vec<(String, String)> {
        self.plugin
            .logs_since(start)
            .into_iter()
            .map(|l| (format!("{:?}", l.level).to_ascii_lowercase(), l.message))
            .collect()
    }
}

/// One line for a trap: its reason (the last message of wasmtime's error
/// chain, e.g. "wasm trap: wasm `unreachable` instruction executed"), and
/// the innermost guest frame when there is one. The chain's first message,
/// "error while executing at wasm backtrace:", says nothing by itself.
fn trap_summary(message: &str) -> String {
    let reason = message
        .lines()
        .rfind(|l| {
            !l.starts_with(char::is_whitespace)
                && !l.trim().is_empty()
                && l.trim_end() != "error while executing at wasm backtrace:"
        })
        .unwrap_or_else(|| message.lines().next().unwrap_or_default())
        .trim();
    let frame = message.lines().map(str::trim).find(|l| {
        l.split_once(':')
            .is_some_and(|(n, _)| n.parse::<u32>().is_ok())
    });
    match frame {
        Some(f) => format!("{reason} (innermost frame {f})"),
        None => reason.to_string(),
    }
}

#[cfg(test)]
mod trap_tests {
    use super::trap_summary;

    #[test]
    fn a_trap_is_summed_up_by_its_reason_and_innermost_frame() {
        let chain = "error while executing at wasm backtrace:\n    0:   0x4d - <unknown>!proxy_on_request_headers\n    1:   0x60 - <unknown>!other\nwasm trap: wasm `unreachable` instruction executed";
        assert_eq!(
            trap_summary(chain),
            "wasm trap: wasm `unreachable` instruction executed (innermost frame 0:   0x4d - <unknown>!proxy_on_request_headers)"
        );
        assert_eq!(trap_summary("out of fuel"), "out of fuel");
    }
}
