//! What one request looked like end to end, on any backend.

/// Header pairs, (lower-case name, value), in order.
pub type Pairs = Vec<(String, String)>;

/// What one request looked like end to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub from: String,
    /// The HTTP status; 0 when no HTTP answer came: the server's sidecar
    /// refused the connection ([`Outcome::refused`]; `body` says why).
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
    /// What a share or consistency check needs, and no more: from, status,
    /// served_by, target and route; body and headers dropped. The runner keeps
    /// whole outcomes for a scenario's first requests only
    /// ([`crate::runner::KEPT_OUTCOMES`]), these after.
    pub fn slim(self) -> Outcome {
        Outcome {
            body: String::new(),
            upstream_headers: None,
            response_headers: Vec::new(),
            ..self
        }
    }

    /// A connection the server's sidecar refused before any HTTP (a client
    /// certificate it does not accept): no status, no headers; `why` as the
    /// backend saw it.
    pub fn refused(from: &str, to: &str, why: &str) -> Outcome {
        Outcome {
            from: from.to_string(),
            status: 0,
            body: why.to_string(),
            served_by: Some(to.to_string()),
            target: None,
            route: None,
            upstream_headers: None,
            response_headers: Vec::new(),
        }
    }

    /// Whether the connection was refused before any HTTP answer.
    pub fn is_refused(&self) -> bool {
        self.status == 0
    }

    pub fn response_header(&self, name: &str) -> Option<&str> {
        header(&self.response_headers, name)
    }

    pub fn upstream_header(&self, name: &str) -> Option<&str> {
        self.upstream_headers.as_ref().and_then(|h| header(h, name))
    }

    /// What two backends must agree on for the same request (the
    /// differential checks between the harness and real proxies): status,
    /// the decision, the cluster that served a decided request, the body of a
    /// served or refused one, and the filter's `x-hybridmesh-*` headers the
    /// application and the client saw. A request is decided when the decision
    /// is known or no route is reported (a backend that cannot tell). Who
    /// serves a request Envoy routes itself (no target cluster: the default
    /// spread) depends on Envoy's balancer, so it is compared as shares by
    /// the scenario's own checks, not request by request; so are random picks.
    pub fn differential(&self) -> String {
        let decided = self.target.is_some() || self.route.is_none();
        let ours = |h: &[(String, String)], with_served_by: bool| {
            let mut v: Vec<String> = h
                .iter()
                .filter(|(k, _)| k.starts_with("x-hybridmesh-"))
                .filter(|(k, _)| with_served_by || k != "x-hybridmesh-served-by")
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            v.sort();
            v.join(" | ")
        };
        let body = if (self.status == 200 && decided) || self.body.starts_with("hybridmesh:") {
            self.body.trim_end().to_string()
        } else {
            String::new()
        };
        format!(
            "status={} target={:?} served_by={:?} body={body:?}\n  upstream: {}\n  response: {}",
            self.status,
            self.target,
            if decided {
                self.served_by.clone()
            } else {
                None
            },
            self.upstream_headers
                .as_deref()
                .map(|h| ours(h, true))
                .unwrap_or_default(),
            ours(&self.response_headers, decided),
        )
    }
}

pub fn header<'a>(pairs: &'a Pairs, name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}
