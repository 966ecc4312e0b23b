//! Sidecars: one proxy running the module, as the simulated mesh drives it.
//!
//! Two implementations: [`crate::WasmSidecar`] runs a `.wasm` in the harness;
//! [`crate::NativeSidecar`] runs the filter's decision code natively. The same
//! scenario through both must give the same results.

use std::time::Duration;

use hybridmesh_scenario::{Pairs, ProxyOptions};
use proxy_wasm_host::{Connection, Direction};

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
