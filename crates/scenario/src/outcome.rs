//! What one request looked like end to end, on any backend.

/// Header pairs, (lower-case name, value), in order.
pub type Pairs = Vec<(String, String)>;

/// What one request looked like end to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub from: String,
    pub status: u32,
    pub body: String,
    /// The cluster whose server side answered; `None` when the client side or Envoy did.
    pub served_by: Option<String>,
    /// The target-cluster header the request left the client sidecar with.
    pub target: Option<String>,
    /// The Envoy cluster the route chose (`outbound|80|<subset>|<fqdn>`).
    pub route: Option<String>,
    /// Request headers as the server application saw them.
    pub upstream_headers: Option<Pairs>,
    /// Response headers as the client application saw them.
    pub response_headers: Pairs,
}

impl Outcome {
    pub fn response_header(&self, name: &str) -> Option<&str> {
        header(&self.response_headers, name)
    }

    pub fn upstream_header(&self, name: &str) -> Option<&str> {
        self.upstream_headers.as_ref().and_then(|h| header(h, name))
    }
}

pub fn header<'a>(pairs: &'a Pairs, name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}
