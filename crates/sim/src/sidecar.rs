//! Sidecars: one proxy running the module, as the simulated mesh drives it.
//!
//! Two implementations: [`crate::WasmSidecar`] runs a `.wasm` in the harness;
//! [`crate::NativeSidecar`] runs the filter's decision code natively. The same
//! scenario through both must give the same results.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hybridmesh_scenario::{CalloutAnswer, Pairs, ProxyOptions};
use proxy_wasm_host::{Connection, Direction, StructValue};

/// What leaves a sidecar towards the downstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u32,
    pub headers: Pairs,
    pub body: Vec<u8>,
    /// The hop record the sidecar wrote for this stream (JSON), if any.
    pub hop: Option<String>,
}

/// What a sidecar did with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forward {
    Headers(Pairs),
    Reply(Reply),
}

/// What the upstream of a sidecar answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u32,
    pub headers: Pairs,
    pub body: Vec<u8>,
    pub address: Option<String>,
    pub workload: Option<String>,
    pub flags: u64,
}

/// One stream through a sidecar.
pub trait SidecarStream {
    fn request(&mut self, headers: &Pairs, body: Option<&[u8]>) -> anyhow::Result<Forward>;
    fn respond(&mut self, answer: &Answer) -> anyhow::Result<Reply>;
}

/// One sidecar proxy running the module.
pub trait Sidecar {
    fn open(&mut self, connection: Connection) -> Box<dyn SidecarStream + '_>;
    /// [`Sidecar::open`] for a stream that carries dynamic metadata filters ahead of the
    /// module set ((namespace, key, value)); a sidecar that cannot read it ignores it.
    fn open_with_metadata(
        &mut self,
        connection: Connection,
        _metadata: &[(String, String, StructValue)],
    ) -> Box<dyn SidecarStream + '_> {
        self.open(connection)
    }
    fn advance(&mut self, by: Duration) -> anyhow::Result<()>;
    fn reconfigure(&mut self, config: &[u8]) -> anyhow::Result<bool>;
    fn configured(&self) -> bool;
    fn metric(&self, name: &str) -> Option<u64>;
    /// (level, message) lines, levels in lower case.
    fn logs(&self) -> Vec<(String, String)>;
    /// The lines from the `start`-th on.
    fn logs_since(&self, start: usize) -> Vec<(String, String)> {
        self.logs().into_iter().skip(start).collect()
    }
    /// Whether the sidecar runs without a plugin config (its first one was
    /// rejected): Envoy answers every request there 500 (NFCF).
    fn config_rejected(&self) -> bool {
        false
    }
    /// Traps in the module so far, one line each (callback and message).
    fn failures(&self) -> Vec<String> {
        Vec::new()
    }
    /// Where the module's HTTP callouts are answered from during the next
    /// request (the step's `request.callouts`, shared by all the request's
    /// sidecars). A sidecar whose module makes no callouts ignores it.
    fn answer_callouts_from(&mut self, _queue: &CalloutQueue) {}
}

/// The answers a step gives for the module's callouts, used in the order the
/// callouts are made, and what went wrong with them.
#[derive(Clone, Debug, Default)]
pub struct CalloutQueue(Arc<Mutex<QueueState>>);

#[derive(Debug, Default)]
struct QueueState {
    answers: VecDeque<CalloutAnswer>,
    used: usize,
    problems: Vec<String>,
}

impl CalloutQueue {
    pub fn new(answers: &[CalloutAnswer]) -> CalloutQueue {
        CalloutQueue(Arc::new(Mutex::new(QueueState {
            answers: answers.iter().cloned().collect(),
            ..QueueState::default()
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The answer for the next callout (to `cluster`, `what` describing it), or
    /// `None` when none is left (recorded as a problem).
    pub fn next(&self, cluster: &str, what: &str) -> Option<CalloutAnswer> {
        let mut st = self.state();
        st.used += 1;
        let n = st.used;
        let Some(answer) = st.answers.pop_front() else {
            st.problems.push(format!(
                "the module called out to {cluster} ({what}) and no answer was left for it: add one under request.callouts"
            ));
            return None;
        };
        if let Some(expected) = answer.cluster.as_deref().filter(|c| *c != cluster) {
            st.problems.push(format!(
                "callout {n} went to {cluster} ({what}), its answer is for {expected}"
            ));
        }
        Some(answer)
    }

    /// The problems so far, and one for answers nobody asked for; empties the queue.
    pub fn finish(&self) -> Vec<String> {
        let mut st = self.state();
        let left: Vec<String> = st.answers.drain(..).map(|a| a.describe()).collect();
        let mut problems = std::mem::take(&mut st.problems);
        if !left.is_empty() {
            problems.push(format!(
                "{} callout answer(s) left unused ({}): the module made {} callout(s)",
                left.len(),
                left.join(", "),
                st.used
            ));
        }
        problems
    }
}

/// How to make a sidecar for a cluster.
pub struct SidecarSpec<'a> {
    pub cluster: &'a str,
    pub network: &'a str,
    pub locality: &'a str,
    pub namespace: &'a str,
    pub direction: Direction,
    pub config: &'a [u8],
    pub options: &'a ProxyOptions,
}
