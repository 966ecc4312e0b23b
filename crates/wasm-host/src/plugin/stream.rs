//! [`Stream`]: one HTTP stream on a worker, driven like Envoy drives its filter chain.

use std::collections::BTreeMap;

use anyhow::{bail, Context as _};

use super::flow::{forward_response, forward_unfiltered_request, status_of, Slot, StreamCallback};
use super::{Action, Plugin};
use crate::envoy::{Connection, HeaderMap, MatchedRoute, Metadata, StructValue, Upstream};
use crate::error::{ensure_usage, usage};
use crate::hcm;
use crate::host::{Phase, StreamState};
use crate::state::{GrpcCallout, HttpCallout, LocalReply, RouteRematch, Shared};

/// One HTTP stream on a worker, driven like Envoy drives its filter chain.
///
/// [`Plugin::stream`] gives one that borrows the plugin until it is dropped: enough for a
/// request at a time. For requests in flight together (two callouts answered out of
/// order, a tick or a config push between a request and its response), keep each as a
/// [`StreamHandle`] ([`Plugin::new_stream`]) and drive it with [`Plugin::on`].
///
/// Stream methods return `Err` only for harness misuse or host problems; guest traps are
/// handled by the fail strategy (see [`Plugin::failures`]). The error is an
/// [`anyhow::Error`] holding a [`crate::Error`] (`err.downcast_ref::<proxy_wasm_host::Error>()`).
///
/// # A request and its response
///
/// The demo filter adds `x-demo`, `x-greeting` (shared data `greeting`) and `x-cluster`
/// (the node's `CLUSTER_ID`) to each request, and `x-demo-response` to each response.
/// Here a request goes through in pieces (headers, body, trailers), then the upstream's
/// answer (headers, body, trailers), then the stream ends:
///
/// ```
/// use proxy_wasm_host::{Action, Module, Plugin, Proxy, Upstream};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
/// let mut plugin = Plugin::builder(&module)
///     .proxy(Proxy::istio("gke"))
///     .default_cluster("backend")
///     .build()?;
/// plugin.set_shared_data("greeting", b"hello");
///
/// let mut s = plugin.stream(0);
/// assert_eq!(s.context_id(), None); // no context before the request headers
/// let post = [(":method", "POST"), (":path", "/upload"), (":authority", "api")];
/// assert_eq!(s.request_headers(&post, false)?, Action::Continue);
/// assert!(s.context_id().is_some());
/// assert!(s.is_filtered());
/// assert_eq!(s.request_body(b"hello", false)?, Action::Continue);
/// assert_eq!(s.request_trailers(&[("x-checksum", "5d41")])?, Action::Continue);
///
/// // The request headers as the filter left them, and as they went upstream (with what
/// // Envoy's connection manager adds).
/// let headers = s.request_header_map().unwrap();
/// assert!(headers.contains(&("x-demo".to_string(), "yes".to_string())));
/// assert!(s.request_forwarded());
/// assert_eq!(s.upstream_request_header("x-greeting").as_deref(), Some("hello"));
/// assert_eq!(s.upstream_request_header("x-cluster").as_deref(), Some("gke"));
/// let upstream = s.upstream_request_headers().unwrap();
/// assert!(upstream.iter().any(|(k, _)| k == "x-request-id"));
/// assert_eq!(s.upstream_request_body(), b"hello");
/// assert_eq!(s.route().unwrap().name, "default");
/// assert_eq!(s.upstream_cluster().as_deref(), Some("backend"));
///
/// // The upstream answers, piece by piece (`respond` does it in one call).
/// s.upstream(Upstream::new(200).address("10.0.0.7:8080").service_time_ms(3))?;
/// s.response_headers(&[("content-type", "text/plain")], false)?;
/// s.response_body(b"stored", false)?;
/// s.response_trailers(&[("x-upload-id", "42")])?;
/// assert_eq!(s.client_response_status(), Some(200));
/// assert_eq!(s.client_response_header("x-demo-response").as_deref(), Some("yes"));
/// assert_eq!(s.client_response_header("x-envoy-upstream-service-time").as_deref(), Some("3"));
/// let response = s.client_response_headers().unwrap();
/// assert_eq!(response[0], (":status".to_string(), "200".to_string()));
/// assert_eq!(s.client_response_body(), b"stored");
/// assert_eq!(
///     s.client_response_trailers(),
///     Some(vec![("x-upload-id".to_string(), "42".to_string())])
/// );
/// assert_eq!(s.local_reply(), None);
/// assert_eq!(s.response_flags(), 0);
///
/// assert!(!s.is_finished());
/// s.complete()?; // proxy_on_log, proxy_on_done, proxy_on_delete
/// assert!(s.is_finished());
/// assert!(!s.was_reset());
/// # Ok(())
/// # }
/// ```
///
/// # A local reply
///
/// With `x-deny` the demo filter answers 403 itself: nothing goes upstream, the client
/// gets the filter's reply, and the upstream can no longer answer. A plugin whose
/// configuration was rejected (delivered by ECDS, the default) has no filter config at
/// all: Envoy answers every stream 500 with the response flag NFCF.
///
/// ```
/// use proxy_wasm_host::{response_flags, Action, Module, Plugin, Upstream};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
/// let mut plugin = Plugin::builder(&module).default_cluster("backend").build()?;
/// let mut s = plugin.stream(0);
/// let denied = [(":method", "GET"), (":path", "/"), (":authority", "api"), ("x-deny", "1")];
/// assert_eq!(s.request_headers(&denied, true)?, Action::Pause);
/// assert!(!s.request_forwarded());
/// assert_eq!(s.upstream_request_headers(), None);
/// let reply = s.local_reply().unwrap();
/// assert_eq!((reply.status, reply.details.as_str()), (403, "demo_denied"));
/// assert_eq!(s.client_response_status(), Some(403));
/// assert_eq!(s.client_response_body(), b"denied");
/// // The local reply goes through the filter's response callback too.
/// assert_eq!(s.client_response_header("x-demo-response").as_deref(), Some("yes"));
/// assert_eq!(s.response_flags(), 0);
/// assert!(s.respond(Upstream::new(200)).is_err()); // nothing was forwarded
///
/// let mut rejected = Plugin::builder(&module)
///     .plugin_config(b"reject")
///     .default_cluster("backend")
///     .build()?;
/// let mut s = rejected.stream(0);
/// s.request_headers(&[(":method", "GET"), (":path", "/"), (":authority", "api")], true)?;
/// assert!(!s.is_filtered());
/// assert_eq!(s.client_response_status(), Some(500));
/// assert_eq!(s.response_flags(), response_flags::NO_FILTER_CONFIG_FOUND);
/// # Ok(())
/// # }
/// ```
///
/// # A callout answered on the stream
///
/// With `x-callout` the demo filter pauses the request on an HTTP callout to cluster
/// `authz` and sends the answer's `:status` upstream as `x-authz-status` (`none` when the
/// callout failed); with `x-grpc` it pauses on a gRPC call until it closes. The stream
/// lists its own callouts and answers the HTTP ones; [`Stream::plugin`] reaches the rest
/// of the plugin while the stream is open.
///
/// ```
/// use std::time::Duration;
///
/// use proxy_wasm_host::{Action, Module, Plugin, Upstream};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
/// let mut plugin = Plugin::builder(&module)
///     .default_cluster("backend")
///     .cluster("authz")
///     .build()?;
/// let get = [(":method", "GET"), (":path", "/"), (":authority", "api"), ("x-callout", "1")];
///
/// let mut s = plugin.stream(0);
/// assert_eq!(s.request_headers(&get, true)?, Action::Pause);
/// assert!(!s.request_forwarded());
/// let callouts = s.http_callouts();
/// assert_eq!(callouts.len(), 1);
/// assert_eq!(callouts[0].upstream, "authz");
/// assert_eq!(callouts[0].timeout, Duration::from_millis(500));
/// s.respond_http_call(callouts[0].token, 200, &[], b"ok")?;
/// assert!(s.request_forwarded());
/// assert_eq!(s.upstream_request_header("x-authz-status").as_deref(), Some("200"));
/// assert!(s.http_callouts()[0].answered);
/// s.respond(Upstream::new(200))?;
/// assert_eq!(s.client_response_status(), Some(200));
/// drop(s);
///
/// // A callout that fails (reset, no healthy upstream...).
/// let mut s = plugin.stream(0);
/// s.request_headers(&get, true)?;
/// let token = s.http_callouts()[0].token;
/// s.fail_http_call(token)?;
/// assert_eq!(s.upstream_request_header("x-authz-status").as_deref(), Some("none"));
/// drop(s);
///
/// // A gRPC call, closed through the plugin.
/// let mut s = plugin.stream(0);
/// let grpc = [(":method", "GET"), (":path", "/"), (":authority", "api"), ("x-grpc", "1")];
/// assert_eq!(s.request_headers(&grpc, true)?, Action::Pause);
/// assert!(s.http_callouts().is_empty());
/// let calls = s.grpc_callouts();
/// assert_eq!((calls[0].service.as_str(), calls[0].method.as_str()), ("demo.Checker", "Check"));
/// s.plugin().grpc_close(calls[0].token, 0, "")?;
/// assert!(s.request_forwarded());
/// assert!(s.plugin().logs_at(proxy_wasm_host::Level::Info).contains(&"grpc closed".to_string()));
/// # Ok(())
/// # }
/// ```
pub struct Stream<'p> {
    plugin: &'p mut Plugin,
    h: Held<'p>,
}

/// A stream kept apart from its plugin, so that many are in flight at once: what
/// [`Plugin::new_stream`] opens and [`Plugin::on`] drives. It holds no borrow; what the
/// filter did to it stays readable after it finished, through [`Plugin::on`].
///
/// ```
/// use proxy_wasm_host::{Module, Plugin, Upstream};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let module = Module::from_bytes(br#"(module
///     (memory (export "memory") 1)
///     (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024)
///     (func (export "proxy_on_configure") (param i32 i32) (result i32) i32.const 1))"#)?;
/// let mut plugin = Plugin::builder(&module).default_cluster("backend").build()?;
/// let get = [(":method", "GET"), (":path", "/"), (":authority", "api")];
/// // Two requests in flight on one worker; the second is answered first.
/// let mut a = plugin.new_stream(0);
/// let mut b = plugin.new_stream(0);
/// plugin.on(&mut a)?.request_headers(&get, true)?;
/// plugin.on(&mut b)?.request_headers(&get, true)?;
/// plugin.on(&mut b)?.respond(Upstream::new(200).body(b"second"))?;
/// plugin.on(&mut a)?.respond(Upstream::new(200).body(b"first"))?;
/// assert_ne!(plugin.on(&mut a)?.context_id(), plugin.on(&mut b)?.context_id());
/// assert_eq!(plugin.on(&mut a)?.client_response_body(), b"first");
/// assert_eq!(plugin.on(&mut b)?.client_response_body(), b"second");
/// # Ok(())
/// # }
/// ```
pub struct StreamHandle {
    /// The plugin that opened it ([`Plugin::on`] refuses another's).
    pub(super) plugin: u64,
    pub(super) worker: usize,
    pub(super) slot: Option<Slot>,
    pub(super) connection: Connection,
    /// Dynamic metadata other filters set, for the stream to carry once it opens.
    pub(super) metadata: Metadata,
    pub(super) upstream: Option<Upstream>,
    /// How many HTTP and gRPC callouts the plugin had made when the stream opened: its
    /// own come after.
    pub(super) callouts_from: (usize, usize),
}

impl StreamHandle {
    pub(super) fn new(plugin: u64, worker: usize) -> StreamHandle {
        StreamHandle {
            plugin,
            worker,
            slot: None,
            connection: Connection::plaintext(),
            metadata: Metadata::default(),
            upstream: None,
            callouts_from: (0, 0),
        }
    }

    /// The downstream connection (default: plaintext). Set before `request_headers`.
    ///
    /// ```
    /// use proxy_wasm_host::{Connection, Module, Plugin};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
    /// let mut plugin = Plugin::builder(&module).default_cluster("backend").build()?;
    /// let tls = Connection::mtls("spiffe://cluster.local/ns/a/sa/client", "spiffe://cluster.local/ns/b/sa/api");
    /// let mut handle = plugin.new_stream(0).connection(tls);
    /// let mut s = plugin.on(&mut handle)?;
    /// s.request_headers(&[(":method", "GET"), (":path", "/"), (":authority", "api")], true)?;
    /// assert_eq!(s.upstream_request_header("x-forwarded-proto").as_deref(), Some("https"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn connection(mut self, connection: Connection) -> Self {
        self.connection = connection;
        self
    }

    /// The worker the stream runs on.
    ///
    /// ```
    /// use proxy_wasm_host::{Module, Plugin};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
    /// let mut plugin = Plugin::builder(&module).workers(2).default_cluster("backend").build()?;
    /// let mut handle = plugin.new_stream(1);
    /// assert_eq!(handle.worker(), 1);
    /// let get = [(":method", "GET"), (":path", "/"), (":authority", "api")];
    /// plugin.on(&mut handle)?.request_headers(&get, true)?;
    /// // Each worker has its own VM: the filter's `request` log came from worker 1's.
    /// let by: Vec<usize> = plugin.logs().iter().filter(|l| l.message == "request").map(|l| l.worker).collect();
    /// assert_eq!(by, [1]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn worker(&self) -> usize {
        self.worker
    }
}

impl std::fmt::Debug for StreamHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let context = match &self.slot {
            Some(Slot::Vm { id, .. }) => Some(*id),
            _ => None,
        };
        f.debug_struct("StreamHandle")
            .field("worker", &self.worker)
            .field("context_id", &context)
            .finish_non_exhaustive()
    }
}

/// The stream a [`Stream`] drives: its own ([`Plugin::stream`]) or a test's
/// ([`Plugin::on`]).
enum Held<'p> {
    Owned(Box<StreamHandle>),
    Borrowed(&'p mut StreamHandle),
}

impl std::ops::Deref for Held<'_> {
    type Target = StreamHandle;
    fn deref(&self) -> &StreamHandle {
        match self {
            Held::Owned(h) => h,
            Held::Borrowed(h) => h,
        }
    }
}

impl std::ops::DerefMut for Held<'_> {
    fn deref_mut(&mut self) -> &mut StreamHandle {
        match self {
            Held::Owned(h) => h,
            Held::Borrowed(h) => h,
        }
    }
}

impl<'p> Stream<'p> {
    pub(super) fn new(plugin: &'p mut Plugin, worker: usize) -> Stream<'p> {
        let h = StreamHandle::new(plugin.id, worker);
        Stream {
            plugin,
            h: Held::Owned(Box::new(h)),
        }
    }

    pub(super) fn of(plugin: &'p mut Plugin, handle: &'p mut StreamHandle) -> Stream<'p> {
        Stream {
            plugin,
            h: Held::Borrowed(handle),
        }
    }

    /// The downstream connection (default: plaintext). Set before `request_headers`.
    ///
    /// Over TLS, the connection manager marks the request `https`:
    ///
    /// ```
    /// use proxy_wasm_host::{Connection, Module, Plugin};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
    /// let mut plugin = Plugin::builder(&module).default_cluster("backend").build()?;
    /// let tls = Connection::mtls("spiffe://cluster.local/ns/a/sa/client", "spiffe://cluster.local/ns/b/sa/api");
    /// let mut s = plugin.stream(0).connection(tls);
    /// s.request_headers(&[(":method", "GET"), (":path", "/"), (":authority", "api")], true)?;
    /// assert_eq!(s.upstream_request_header(":scheme").as_deref(), Some("https"));
    /// assert_eq!(s.upstream_request_header("x-forwarded-proto").as_deref(), Some("https"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn connection(mut self, connection: Connection) -> Self {
        self.h.connection = connection;
        self
    }

    /// Sets a field of the stream's dynamic metadata, as a filter ahead of this one does
    /// (Envoy's `StreamInfo::setDynamicMetadata`): the filter reads it with
    /// `get_property` under the path `metadata`, `filter_metadata`, `<namespace>`, `<key>`
    /// (one path segment each: a namespace with dots, such as
    /// `envoy.filters.http.jwt_authn`, is one segment), and the whole message under
    /// `metadata`. Set before the request headers or at any point after: the next
    /// callback sees it.
    ///
    /// ```
    /// use proxy_wasm_host::{Module, Plugin, StructValue};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let module = Module::from_bytes(br#"(module
    /// #     (memory (export "memory") 1)
    /// #     (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024))"#)?;
    /// let mut plugin = Plugin::builder(&module).default_cluster("backend").build()?;
    /// let mut s = plugin.stream(0);
    /// s.filter_metadata("envoy.filters.http.jwt_authn", "sub", StructValue::String("alice".into()));
    /// s.request_headers(&[(":method", "GET"), (":path", "/"), (":authority", "api")], true)?;
    /// assert!(s.request_forwarded());
    /// # Ok(())
    /// # }
    /// ```
    pub fn filter_metadata(&mut self, namespace: &str, key: &str, value: StructValue) {
        self.h.metadata = std::mem::take(&mut self.h.metadata).field(namespace, key, value);
        let metadata = self.h.metadata.clone();
        if let Some(s) = self.state_mut() {
            s.metadata = metadata;
        }
    }

    /// The plugin, e.g. to answer a callout while the stream waits.
    pub fn plugin(&mut self) -> &mut Plugin {
        self.plugin
    }

    /// Answers an HTTP callout (see [`Plugin::respond_http_call`]).
    pub fn respond_http_call(
        &mut self,
        token: u32,
        status: u32,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> anyhow::Result<()> {
        Ok(self
            .plugin
            .respond_http_call(token, status, headers, body)?)
    }

    /// Fails HTTP callout `token` (see [`Plugin::fail_http_call`]).
    pub fn fail_http_call(&mut self, token: u32) -> anyhow::Result<()> {
        Ok(self.plugin.fail_http_call(token)?)
    }

    /// The HTTP callouts this stream's callbacks made, in order (answered ones too: see
    /// [`HttpCallout::answered`]). A callout made from the root context (a tick, another
    /// callout's answer) belongs to no stream: see [`Plugin::http_callouts`].
    pub fn http_callouts(&self) -> Vec<HttpCallout> {
        self.own(
            self.h.callouts_from.0,
            |s| &s.http_callouts,
            |c| (c.worker, c.context_id),
        )
    }

    /// The gRPC calls and streams this stream's callbacks opened, in order.
    pub fn grpc_callouts(&self) -> Vec<GrpcCallout> {
        self.own(
            self.h.callouts_from.1,
            |s| &s.grpc_callouts,
            |c| (c.worker, c.context_id),
        )
    }

    /// The entries of a plugin-wide list of callouts (from `from` on) that this stream
    /// made: its worker, its context id.
    fn own<T: Clone>(
        &self,
        from: usize,
        list: fn(&Shared) -> &Vec<T>,
        by: fn(&T) -> (usize, u32),
    ) -> Vec<T> {
        let Some(id) = self.context_id() else {
            return Vec::new();
        };
        let me = (self.h.worker, id);
        list(&self.plugin.shared())
            .iter()
            .skip(from)
            .filter(|c| by(c) == me)
            .cloned()
            .collect()
    }

    /// Context id of this stream in its VM (`None` before `request_headers` or when the
    /// plugin was unusable).
    pub fn context_id(&self) -> Option<u32> {
        match &self.h.slot {
            Some(Slot::Vm { id, .. }) => Some(*id),
            _ => None,
        }
    }

    fn state(&self) -> Option<&StreamState> {
        match self.h.slot.as_ref()? {
            Slot::Detached(state) => Some(state),
            Slot::Vm { id, generation } => {
                let vm = self.plugin.vm(self.h.worker)?;
                if vm.generation == *generation {
                    if let Some(s) = vm.store.data().streams.get(id) {
                        return Some(s);
                    }
                }
                self.plugin.orphans.get(&(self.h.worker, *id, *generation))
            }
        }
    }

    fn state_mut(&mut self) -> Option<&mut StreamState> {
        let worker = self.h.worker;
        match self.h.slot.as_mut()? {
            Slot::Detached(state) => Some(state),
            Slot::Vm { id, generation } => {
                let key = (worker, *id, *generation);
                let in_vm = self.plugin.vm(worker).is_some_and(|vm| {
                    vm.generation == *generation && vm.store.data().streams.contains_key(id)
                });
                if in_vm {
                    let vm = self.plugin.vms.get_mut(worker)?.as_mut()?;
                    vm.store.data_mut().streams.get_mut(id)
                } else {
                    self.plugin.orphans.get_mut(&key)
                }
            }
        }
    }

    /// The context id when the stream is still inside a live VM with the filter active.
    fn live_id(&self) -> Option<u32> {
        match self.h.slot.as_ref()? {
            Slot::Vm { id, generation } => {
                let vm = self.plugin.vm(self.h.worker)?;
                (vm.generation == *generation && vm.store.data().streams.contains_key(id))
                    .then_some(*id)
            }
            Slot::Detached(_) => None,
        }
    }

    /// Request headers arrive from the client: `proxy_on_request_headers`. Envoy's
    /// connection manager first adds `:scheme`, `x-forwarded-proto` and `x-request-id`
    /// when absent (unless [`PluginBuilder::hcm_headers`](super::PluginBuilder::hcm_headers)
    /// is off); the route is matched; header changes re-match it afterwards.
    ///
    /// A [`Action::Pause`] here holds the whole request, body and trailers included,
    /// until the filter resumes it (Envoy's StopAllIterationAndWatermark for ABI 0.2.x).
    pub fn request_headers(
        &mut self,
        headers: &[(&str, &str)],
        end_of_stream: bool,
    ) -> anyhow::Result<Action> {
        if self.h.slot.is_some() {
            return Err(usage("request headers were already sent on this stream").into());
        }
        let mut map = HeaderMap::from_pairs(headers);
        if self.plugin.hcm_headers {
            let tls = self.h.connection.is_mtls();
            let plugin = &mut *self.plugin;
            hcm::add_request_headers(&mut map, tls, || plugin.next_request_id());
        }
        let grpc = hcm::is_grpc(Some(&map));
        self.h.callouts_from = {
            let shared = self.plugin.shared();
            (shared.http_callouts.len(), shared.grpc_callouts.len())
        };
        let slot = self.plugin.open_stream(
            self.h.worker,
            self.h.connection.clone(),
            grpc,
            end_of_stream,
        )?;
        self.h.slot = Some(slot);
        let route = self.plugin.env.routes.select(&map);
        let metadata = self.h.metadata.clone();
        let n = map.len();
        let Some(s) = self.state_mut() else {
            bail!("the stream was lost");
        };
        s.route = route;
        s.metadata = metadata;
        s.request_ended = end_of_stream;
        if s.request_headers.is_none() {
            s.request_headers = Some(map);
        }
        if !s.filtered {
            return Ok(self.passthrough_request());
        }
        self.drive(StreamCallback::RequestHeaders, n, Some(end_of_stream))
    }

    fn passthrough_request(&mut self) -> Action {
        let now = self.plugin.clock.now();
        match self.state_mut() {
            Some(s) if s.local_reply.is_none() => {
                forward_unfiltered_request(s, now);
                Action::Continue
            }
            _ => Action::Pause,
        }
    }

    fn drive(
        &mut self,
        callback: StreamCallback,
        n: usize,
        end_of_stream: Option<bool>,
    ) -> anyhow::Result<Action> {
        match self.live_id() {
            Some(id) => Ok(self
                .plugin
                .run(self.h.worker, id, callback, n, end_of_stream)?),
            None => Ok(if callback.is_request() {
                self.passthrough_request()
            } else {
                self.passthrough_response()
            }),
        }
    }

    fn passthrough_response(&mut self) -> Action {
        let now = self.plugin.clock.now();
        match self.state_mut() {
            Some(s) if s.local_reply.is_none() || !s.filtered && s.response_headers.is_some() => {
                forward_response(s, now);
                Action::Continue
            }
            _ => Action::Pause,
        }
    }

    /// The client sends a whole request, framed as its protocol frames it
    /// ([`Connection::protocol`]): the headers (with the end of stream when there is no
    /// body), then over HTTP/1.x the body as the data and an empty end of stream (two
    /// `proxy_on_request_body` calls: Envoy's HTTP/1 codec ends the message after its
    /// data, with a `content-length` or chunked), over HTTP/2 the body with the end of
    /// stream (one call). Measured in Envoy 1.40 with curl 7.88. For any other framing,
    /// send the pieces with [`Stream::request_headers`] and [`Stream::request_body`].
    ///
    /// ```
    /// use proxy_wasm_host::{Connection, Module, Plugin, Upstream};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let module = Module::from_bytes(br#"(module
    /// #     (memory (export "memory") 1)
    /// #     (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024))"#)?;
    /// let mut plugin = Plugin::builder(&module).default_cluster("backend").build()?;
    /// let post = [(":method", "POST"), (":path", "/"), (":authority", "api"), ("content-length", "5")];
    /// let mut s = plugin.stream(0).connection(Connection::plaintext().protocol("HTTP/2"));
    /// s.request(&post, b"hello")?;
    /// assert_eq!(s.upstream_request_body(), b"hello");
    /// s.respond(Upstream::new(200).protocol("HTTP/1.1").body(b"hi"))?;
    /// assert_eq!(s.client_response_body(), b"hi");
    /// # Ok(())
    /// # }
    /// ```
    pub fn request(&mut self, headers: &[(&str, &str)], body: &[u8]) -> anyhow::Result<()> {
        self.request_headers(headers, body.is_empty())?;
        if body.is_empty() {
            return Ok(());
        }
        if self.h.connection.is_http1() {
            self.request_body(body, false)?;
            self.request_body(b"", true)?;
        } else {
            self.request_body(body, true)?;
        }
        Ok(())
    }

    /// A request body chunk: `proxy_on_request_body` with the whole buffer so far. While
    /// the filter pauses on the body, chunks are buffered and the filter sees the whole
    /// buffer; while it pauses on the headers, chunks are only buffered (no callback)
    /// and delivered in one `proxy_on_request_body` once it resumes.
    ///
    /// The demo filter pauses a request with `x-callout` at its headers until the callout
    /// is answered; the body waits with it:
    ///
    /// ```
    /// use proxy_wasm_host::{Action, Module, Plugin};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
    /// let mut plugin = Plugin::builder(&module).default_cluster("backend").cluster("authz").build()?;
    /// let mut s = plugin.stream(0);
    /// let post = [(":method", "POST"), (":path", "/"), (":authority", "api"), ("x-callout", "1")];
    /// assert_eq!(s.request_headers(&post, false)?, Action::Pause);
    /// assert_eq!(s.request_body(b"hel", false)?, Action::Pause);
    /// assert_eq!(s.request_body(b"lo", true)?, Action::Pause);
    /// assert!(!s.request_forwarded());
    /// assert_eq!(s.upstream_request_body(), b"");
    /// let token = s.http_callouts()[0].token;
    /// s.respond_http_call(token, 200, &[], b"")?;
    /// assert!(s.request_forwarded());
    /// assert_eq!(s.upstream_request_body(), b"hello");
    /// # Ok(())
    /// # }
    /// ```
    pub fn request_body(&mut self, chunk: &[u8], end_of_stream: bool) -> anyhow::Result<Action> {
        let s = self
            .state_mut()
            .context("request headers were not sent yet")?;
        if s.local_reply.is_some() {
            return Ok(Action::Pause);
        }
        let body = s.request_body.get_or_insert_with(Vec::new);
        body.extend_from_slice(chunk);
        let n = body.len();
        s.request_ended |= end_of_stream;
        if s.request_held {
            s.request_held_data = true;
            return Ok(Action::Pause);
        }
        self.drive(StreamCallback::RequestBody, n, Some(end_of_stream))
    }

    /// Request trailers: `proxy_on_request_trailers` (held like the body while the
    /// filter pauses on the headers).
    pub fn request_trailers(&mut self, trailers: &[(&str, &str)]) -> anyhow::Result<Action> {
        let s = self
            .state_mut()
            .context("request headers were not sent yet")?;
        if s.local_reply.is_some() {
            return Ok(Action::Pause);
        }
        let map = HeaderMap::from_pairs(trailers);
        let n = map.len();
        s.request_trailers = Some(map);
        s.request_ended = true;
        if s.request_held {
            s.request_held_data = true;
            return Ok(Action::Pause);
        }
        self.drive(StreamCallback::RequestTrailers, n, None)
    }

    /// Sets what the upstream answered without sending it yet (see [`Stream::respond`]).
    pub fn upstream(&mut self, upstream: Upstream) -> anyhow::Result<()> {
        let s = self
            .state_mut()
            .context("request headers were not sent yet")?;
        ensure_usage!(
            s.request_forwarded,
            "the request was not forwarded upstream (paused or answered locally)"
        );
        s.upstream = Some(upstream.clone());
        s.response_flags = upstream.flags;
        self.h.upstream = Some(upstream);
        Ok(())
    }

    /// Response headers from the upstream: `proxy_on_response_headers`. `:status` comes
    /// from [`Stream::upstream`] unless given; the router adds
    /// `x-envoy-upstream-service-time` when an upstream host answered (unless
    /// [`PluginBuilder::hcm_headers`](super::PluginBuilder::hcm_headers) is off). A
    /// [`Action::Pause`] holds the body and trailers until the filter resumes.
    pub fn response_headers(
        &mut self,
        headers: &[(&str, &str)],
        end_of_stream: bool,
    ) -> anyhow::Result<Action> {
        let status = self.h.upstream.as_ref().map(|u| u.status);
        let service_time = self
            .h
            .upstream
            .as_ref()
            .filter(|u| u.address.is_some() && self.plugin.hcm_headers)
            .map(|u| u.service_time_ms);
        let s = self
            .state_mut()
            .context("request headers were not sent yet")?;
        ensure_usage!(s.local_reply.is_none(), "the stream was answered locally");
        let mut map = HeaderMap::default();
        if let Some(status) = status.filter(|_| !headers.iter().any(|(k, _)| *k == ":status")) {
            map.add(":status", &status.to_string());
        }
        for (k, v) in headers {
            map.add(k, v);
        }
        if let Some(ms) = service_time {
            map.add("x-envoy-upstream-service-time", &ms.to_string());
        }
        s.response_code = status_of(&map);
        s.phase = Phase::Response;
        s.response_ended = end_of_stream;
        let n = map.len();
        s.response_headers = Some(map);
        self.drive(StreamCallback::ResponseHeaders, n, Some(end_of_stream))
    }

    /// A response body chunk: `proxy_on_response_body` (buffered as for requests).
    pub fn response_body(&mut self, chunk: &[u8], end_of_stream: bool) -> anyhow::Result<Action> {
        let s = self
            .state_mut()
            .context("request headers were not sent yet")?;
        ensure_usage!(
            s.response_headers.is_some(),
            "response headers were not sent yet"
        );
        if s.local_reply.is_some() && s.filtered {
            return Ok(Action::Pause);
        }
        let body = s.response_body.get_or_insert_with(Vec::new);
        body.extend_from_slice(chunk);
        let n = body.len();
        s.response_ended |= end_of_stream;
        if s.response_held {
            s.response_held_data = true;
            return Ok(Action::Pause);
        }
        self.drive(StreamCallback::ResponseBody, n, Some(end_of_stream))
    }

    /// Response trailers: `proxy_on_response_trailers`.
    pub fn response_trailers(&mut self, trailers: &[(&str, &str)]) -> anyhow::Result<Action> {
        let s = self
            .state_mut()
            .context("request headers were not sent yet")?;
        if s.local_reply.is_some() && s.filtered {
            return Ok(Action::Pause);
        }
        let map = HeaderMap::from_pairs(trailers);
        let n = map.len();
        s.response_trailers = Some(map);
        s.response_ended = true;
        if s.response_held {
            s.response_held_data = true;
            return Ok(Action::Pause);
        }
        self.drive(StreamCallback::ResponseTrailers, n, None)
    }

    /// The upstream answers: sets it (see [`Stream::upstream`]) and runs its headers, body
    /// and trailers through the filter's response callbacks, the body framed as the
    /// upstream's protocol delivers it ([`Upstream::protocol`]).
    pub fn respond(&mut self, upstream: Upstream) -> anyhow::Result<()> {
        self.upstream(upstream.clone())?;
        let headers: Vec<(&str, &str)> = upstream
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let has_body = !upstream.body.is_empty();
        let has_trailers = !upstream.trailers.is_empty();
        self.response_headers(&headers, !has_body && !has_trailers)?;
        if has_body && upstream.http1 && !has_trailers {
            self.response_body(&upstream.body, false)?;
            self.response_body(b"", true)?;
        } else if has_body {
            self.response_body(&upstream.body, !has_trailers)?;
        }
        if has_trailers {
            let trailers: Vec<(&str, &str)> = upstream
                .trailers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            self.response_trailers(&trailers)?;
        }
        Ok(())
    }

    /// The stream ends, as Envoy ends it: `proxy_on_log` (the access log runs first),
    /// then `proxy_on_done`, then (when that returned true, or once the filter calls
    /// `proxy_done`) `proxy_on_delete`.
    pub fn complete(&mut self) -> anyhow::Result<()> {
        match self.live_id() {
            Some(id) => Ok(self.plugin.complete_stream(self.h.worker, id)?),
            None => {
                if let Some(s) = self.state_mut() {
                    s.finished = true;
                }
                Ok(())
            }
        }
    }

    // --- what a test reads -----------------------------------------------------------

    /// Request headers as the filter left them.
    pub fn request_header_map(&self) -> Option<Vec<(String, String)>> {
        self.state()?
            .request_headers
            .as_ref()
            .map(HeaderMap::to_vec)
    }

    /// Request headers as forwarded upstream (`None`: not forwarded).
    pub fn upstream_request_headers(&self) -> Option<Vec<(String, String)>> {
        self.state()?
            .upstream_request_headers
            .as_ref()
            .map(HeaderMap::to_vec)
    }

    /// First value of a forwarded request header.
    pub fn upstream_request_header(&self, key: &str) -> Option<String> {
        self.state()?
            .upstream_request_headers
            .as_ref()?
            .get(key)
            .map(str::to_owned)
    }

    /// Request body as forwarded upstream.
    pub fn upstream_request_body(&self) -> Vec<u8> {
        self.state()
            .map(|s| s.upstream_request_body.clone())
            .unwrap_or_default()
    }

    /// Whether the request went upstream.
    pub fn request_forwarded(&self) -> bool {
        self.state().is_some_and(|s| s.request_forwarded)
    }

    /// The route chosen now (after any re-match).
    pub fn route(&self) -> Option<MatchedRoute> {
        self.state()?.route.clone()
    }

    /// The cluster the request goes to (after any re-match; none on a direct-response
    /// route).
    pub fn upstream_cluster(&self) -> Option<String> {
        self.state()?
            .route
            .as_ref()
            .filter(|r| r.direct_response.is_none())
            .map(|r| r.cluster.clone())
    }

    /// Route re-matches caused by the filter (their count is how many extra matches Envoy
    /// would do).
    ///
    /// Changing request headers clears Envoy's route cache: the route is matched again
    /// once the callback returns. The demo filter adds `x-demo: yes`, which a route here
    /// matches:
    ///
    /// ```
    /// use proxy_wasm_host::{Module, Plugin, Route};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
    /// let mut plugin = Plugin::builder(&module)
    ///     .routes(vec![Route::new("demo").header("x-demo", "yes").cluster("demo-backend")])
    ///     .default_cluster("backend")
    ///     .build()?;
    /// let mut s = plugin.stream(0);
    /// s.request_headers(&[(":method", "GET"), (":path", "/"), (":authority", "api")], true)?;
    /// let rematches = s.route_rematches();
    /// assert_eq!(rematches.len(), 1);
    /// assert_eq!(rematches[0].callback, "proxy_on_request_headers");
    /// assert_eq!(rematches[0].changed_headers, ["x-demo"]);
    /// assert_eq!(rematches[0].previous_route.as_deref(), Some("default"));
    /// assert_eq!(rematches[0].route.as_deref(), Some("demo"));
    /// assert_eq!(s.upstream_cluster().as_deref(), Some("demo-backend"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn route_rematches(&self) -> Vec<RouteRematch> {
        self.state()
            .map(|s| s.rematches.clone())
            .unwrap_or_default()
    }

    /// The local reply, if the filter sent one, or Envoy did (a failed VM, no filter
    /// config, a [`crate::Route::direct_response`] route: details `direct_response`).
    pub fn local_reply(&self) -> Option<LocalReply> {
        self.state()?.local_reply.clone()
    }

    /// Response headers as the client got them.
    pub fn client_response_headers(&self) -> Option<Vec<(String, String)>> {
        self.state()?
            .client_response_headers
            .as_ref()
            .map(HeaderMap::to_vec)
    }

    /// First value of a response header the client got.
    pub fn client_response_header(&self, key: &str) -> Option<String> {
        self.state()?
            .client_response_headers
            .as_ref()?
            .get(key)
            .map(str::to_owned)
    }

    /// HTTP status the client got.
    pub fn client_response_status(&self) -> Option<u32> {
        status_of(self.state()?.client_response_headers.as_ref()?)
    }

    /// Response body as the client got it.
    pub fn client_response_body(&self) -> Vec<u8> {
        self.state()
            .map(|s| s.client_response_body.clone())
            .unwrap_or_default()
    }

    /// Filter state set with `proxy_set_property` on this stream.
    ///
    /// Keyed by the property path, its segments joined by `.` (the demo filter sets none:
    /// here a tiny filter sets `wasm` / `user`):
    ///
    /// ```
    /// use proxy_wasm_host::{Module, Plugin};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let module = Module::from_bytes(br#"(module
    ///   (import "env" "proxy_set_property" (func $set (param i32 i32 i32 i32) (result i32)))
    ///   (memory (export "memory") 1)
    ///   (data (i32.const 100) "wasm\00user")
    ///   (data (i32.const 120) "alice")
    ///   (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024)
    ///   (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    ///     (drop (call $set (i32.const 100) (i32.const 9) (i32.const 120) (i32.const 5)))
    ///     i32.const 0))"#)?;
    /// let mut plugin = Plugin::builder(&module).default_cluster("backend").build()?;
    /// let mut s = plugin.stream(0);
    /// assert!(s.filter_state().is_empty());
    /// s.request_headers(&[(":method", "GET"), (":path", "/"), (":authority", "api")], true)?;
    /// assert_eq!(s.filter_state().get("wasm.user").map(Vec::as_slice), Some(&b"alice"[..]));
    /// # Ok(())
    /// # }
    /// ```
    pub fn filter_state(&self) -> BTreeMap<String, Vec<u8>> {
        self.state()
            .map(|s| s.filter_state.clone())
            .unwrap_or_default()
    }

    /// Whether the filter runs on this stream (false: fail-open pass-through, fail-close
    /// reply, no filter config, the filter skipped on this thread, or after a trap).
    ///
    /// Under [`FailStrategy::FailOpen`](crate::FailStrategy::FailOpen), a trap (the demo
    /// filter traps on `x-trap`) answers that stream 503, then the filter no longer runs:
    ///
    /// ```
    /// use proxy_wasm_host::{FailStrategy, Module, Plugin};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
    /// let mut plugin = Plugin::builder(&module)
    ///     .fail_strategy(FailStrategy::FailOpen)
    ///     .default_cluster("backend")
    ///     .build()?;
    /// let get = [(":method", "GET"), (":path", "/"), (":authority", "api")];
    /// let mut s = plugin.stream(0);
    /// s.request_headers(&get, true)?;
    /// assert!(s.is_filtered());
    /// assert_eq!(s.upstream_request_header("x-demo").as_deref(), Some("yes"));
    /// drop(s);
    ///
    /// let mut s = plugin.stream(0);
    /// s.request_headers(&[(":method", "GET"), (":path", "/"), (":authority", "api"), ("x-trap", "1")], true)?;
    /// assert_eq!(s.client_response_status(), Some(503));
    /// drop(s);
    ///
    /// let mut s = plugin.stream(0);
    /// s.request_headers(&get, true)?;
    /// assert!(!s.is_filtered());
    /// assert!(s.request_forwarded());
    /// assert_eq!(s.upstream_request_header("x-demo"), None);
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_filtered(&self) -> bool {
        self.state().is_some_and(|s| s.filtered)
    }

    /// Whether the filter reset the stream with `proxy_close_stream`.
    ///
    /// The stream ends at once, whatever the callback then returned, as in Envoy (which
    /// logs details `wasm_close_stream`): nothing reaches the upstream, the client sees a
    /// reset, and the filter gets `proxy_on_log` and `proxy_on_done`. The demo filter
    /// never resets; here a tiny filter resets every request at its headers and returns
    /// Continue:
    ///
    /// ```
    /// use proxy_wasm_host::{Module, Plugin, Upstream};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let module = Module::from_bytes(br#"(module
    ///   (import "env" "proxy_close_stream" (func $close (param i32) (result i32)))
    ///   (memory (export "memory") 1)
    ///   (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024)
    ///   (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    ///     (drop (call $close (i32.const 0)))
    ///     i32.const 0))"#)?;
    /// let mut plugin = Plugin::builder(&module).default_cluster("backend").build()?;
    /// let mut s = plugin.stream(0);
    /// s.request_headers(&[(":method", "GET"), (":path", "/"), (":authority", "api")], true)?;
    /// assert!(s.was_reset());
    /// assert!(!s.request_forwarded());
    /// assert_eq!(s.client_response_status(), None); // no response: the client sees a reset
    /// assert!(s.is_finished()); // proxy_on_log, proxy_on_done, proxy_on_delete ran
    /// assert!(s.respond(Upstream::new(200)).is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn was_reset(&self) -> bool {
        self.state().is_some_and(|s| s.close_requested)
    }

    /// Whether `proxy_on_delete` ran (or the unfiltered stream completed).
    pub fn is_finished(&self) -> bool {
        self.state().is_some_and(|s| s.finished)
    }

    /// Response flags of the stream (Envoy's `%RESPONSE_FLAGS%` bits, see
    /// [`crate::response_flags`]): the upstream's, or NFCF for a stream Envoy answered
    /// for want of a filter config.
    pub fn response_flags(&self) -> u64 {
        self.state().map_or(0, |s| s.response_flags)
    }

    /// Response trailers as the client got them.
    pub fn client_response_trailers(&self) -> Option<Vec<(String, String)>> {
        self.state()?
            .client_response_trailers
            .as_ref()
            .map(HeaderMap::to_vec)
    }
}
