//! What Envoy 1.40 does around each stream callback: open the context (or not: no filter
//! config, a dead VM), run the callback, then re-match the route, send a pending local
//! reply, forward or hold data, resume on `proxy_continue_stream`, finish on `proxy_done`,
//! and deliver queue notifications and gRPC closes.

use std::time::Duration;

use super::vm::{Called, Vm};
use super::{eos, len_i32, Action, FailStrategy, Plugin};
use crate::envoy::{response_flags, Connection, HeaderMap};
use crate::error::{usage, Result};
use crate::hcm;
use crate::host::{CallResponse, Phase, StreamState};
use crate::state::{LocalReply, RouteRematch};

/// Which stream callback to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StreamCallback {
    RequestHeaders,
    RequestBody,
    RequestTrailers,
    ResponseHeaders,
    ResponseBody,
    ResponseTrailers,
}

impl StreamCallback {
    fn name(self) -> &'static str {
        match self {
            StreamCallback::RequestHeaders => "proxy_on_request_headers",
            StreamCallback::RequestBody => "proxy_on_request_body",
            StreamCallback::RequestTrailers => "proxy_on_request_trailers",
            StreamCallback::ResponseHeaders => "proxy_on_response_headers",
            StreamCallback::ResponseBody => "proxy_on_response_body",
            StreamCallback::ResponseTrailers => "proxy_on_response_trailers",
        }
    }

    pub(super) fn is_request(self) -> bool {
        matches!(
            self,
            StreamCallback::RequestHeaders
                | StreamCallback::RequestBody
                | StreamCallback::RequestTrailers
        )
    }
}

/// Where a stream's state lives.
pub(super) enum Slot {
    /// In a VM (context id, VM generation); moved to `Plugin::orphans` when it leaves.
    Vm { id: u32, generation: u64 },
    /// Never filtered (no filter config, a dead VM, the filter skipped): held by the
    /// handle.
    Detached(Box<StreamState>),
}

/// Status code of a `:status` header.
pub(super) fn status_of(headers: &HeaderMap) -> Option<u32> {
    headers.get(":status").and_then(|s| s.parse().ok())
}

impl Plugin {
    /// A new `x-request-id` (a version 4 UUID, deterministic per plugin seed).
    pub(super) fn next_request_id(&mut self) -> String {
        self.request_ids += 1;
        let mut state = self.env.seed ^ 0x05ee_d1d5;
        let mut bytes = [0u8; 16];
        for chunk in bytes.chunks_mut(8) {
            state = state
                .wrapping_add(self.request_ids.wrapping_mul(0x9e37_79b9_7f4a_7c15))
                .wrapping_mul(0xbf58_476d_1ce4_e5b9);
            let z = state ^ (state >> 31);
            chunk.copy_from_slice(&z.to_le_bytes());
        }
        hcm::uuid4(bytes)
    }

    /// Opens a stream context on `worker` as Envoy would: no filter config (the first
    /// configuration was rejected) -> NFCF reply; a dead VM -> the fail strategy; the
    /// filter skipped on this thread -> pass-through; else a new context.
    pub(super) fn open_stream(
        &mut self,
        worker: usize,
        connection: Connection,
        grpc: bool,
        request_ended: bool,
    ) -> Result<Slot> {
        if worker >= self.workers {
            return Err(usage(format!(
                "no worker {worker} (the plugin has {})",
                self.workers
            )));
        }
        let now = self.clock.now();
        let hcm_headers = self.hcm_headers;
        let route_table = !self.env.routes.is_empty();
        let detached = |connection: Connection| {
            let mut state = StreamState::new(0, connection, false);
            state.grpc = grpc;
            state.hcm = hcm_headers;
            state.route_table = route_table;
            state.request_ended = request_ended;
            state
        };
        if !self.accepted {
            let mut state = detached(connection);
            no_filter_config(&mut state, now);
            return Ok(Slot::Detached(Box::new(state)));
        }
        let failed_at = self
            .vm(worker)
            .filter(|vm| vm.failed)
            .map(|vm| vm.failed_at);
        if let Some(at) = failed_at {
            let reload = self.fail_strategy == FailStrategy::FailReload
                && self.clock.elapsed() >= at + self.reload_backoff;
            if reload {
                self.reload(worker)?;
            } else {
                let mut state = detached(connection);
                if matches!(
                    self.fail_strategy,
                    FailStrategy::FailClose | FailStrategy::FailReload
                ) {
                    fail_closed(&mut state, Some(now));
                }
                return Ok(Slot::Detached(Box::new(state)));
            }
        }
        if !self
            .vm(worker)
            .is_some_and(|vm| vm.configured && !vm.failed)
        {
            // The thread-local configure failed: Envoy skips the filter.
            return Ok(Slot::Detached(Box::new(detached(connection))));
        }
        self.with_vm(worker, |p, vm| {
            let root = vm.root_id;
            let id = vm.store.data_mut().alloc_context_id();
            let mut state = StreamState::new(root, connection, true);
            state.grpc = grpc;
            state.hcm = hcm_headers;
            state.route_table = route_table;
            state.request_ended = request_ended;
            vm.store.data_mut().streams.insert(id, state);
            let create = vm.exports.on_context_create.clone();
            let generation = vm.generation;
            if let Called::Trapped = p.call(
                vm,
                worker,
                "proxy_on_context_create",
                id,
                create,
                (id as i32, root as i32),
            ) {
                p.fail_stream(vm, worker, id);
            }
            Slot::Vm { id, generation }
        })
    }

    /// The guest trapped while handling stream `id`: take the stream out of the VM and
    /// apply the fail strategy. Only the deprecated `fail_open: true` lets the trapping
    /// stream through; every `failure_policy` answers it 503 (measured).
    fn fail_stream(&mut self, vm: &mut Vm, worker: usize, id: u32) {
        let Some(mut state) = vm.store.data_mut().streams.remove(&id) else {
            return;
        };
        state.filtered = false;
        let now = self.clock.now();
        if self.fail_strategy == FailStrategy::FailOpenLegacy {
            if state.local_reply.is_none() {
                if state.request_headers.is_some() {
                    forward_unfiltered_request(&mut state, now);
                }
                if state.response_headers.is_some() {
                    forward_response(&mut state, now);
                }
            }
        } else {
            fail_closed(&mut state, Some(now));
        }
        self.orphans.insert((worker, id, vm.generation), state);
    }

    /// Runs one stream callback and what Envoy does after it.
    pub(super) fn run(
        &mut self,
        worker: usize,
        id: u32,
        callback: StreamCallback,
        a: usize,
        eos_flag: Option<bool>,
    ) -> Result<Action> {
        self.with_vm(worker, |p, vm| {
            p.run_in(vm, worker, id, callback, a, eos_flag)
        })
    }

    fn run_in(
        &mut self,
        vm: &mut Vm,
        worker: usize,
        id: u32,
        callback: StreamCallback,
        a: usize,
        eos_flag: Option<bool>,
    ) -> Action {
        let Some(stream) = vm.store.data_mut().streams.get_mut(&id) else {
            return Action::Continue;
        };
        stream.route_snapshot = stream.route.clone();
        let ctx = id as i32;
        let a = len_i32(a);
        let e = &vm.exports;
        let called = match (callback, eos_flag) {
            (StreamCallback::RequestTrailers, _) => {
                let f = e.on_request_trailers.clone();
                self.call(vm, worker, callback.name(), id, f, (ctx, a))
            }
            (StreamCallback::ResponseTrailers, _) => {
                let f = e.on_response_trailers.clone();
                self.call(vm, worker, callback.name(), id, f, (ctx, a))
            }
            (cb, flag) => {
                let f = match cb {
                    StreamCallback::RequestHeaders => e.on_request_headers.clone(),
                    StreamCallback::RequestBody => e.on_request_body.clone(),
                    StreamCallback::ResponseHeaders => e.on_response_headers.clone(),
                    _ => e.on_response_body.clone(),
                };
                self.call(
                    vm,
                    worker,
                    cb.name(),
                    id,
                    f,
                    (ctx, a, eos(flag.unwrap_or(false))),
                )
            }
        };
        let action = match called {
            Called::Returned(raw) => Action::from_raw(raw),
            Called::Missing => Action::Continue,
            Called::Trapped => {
                self.fail_stream(vm, worker, id);
                return if self.fail_strategy == FailStrategy::FailOpenLegacy {
                    Action::Continue
                } else {
                    Action::Pause
                };
            }
        };
        self.after(vm, worker, id, callback.name(), Some((callback, action)));
        self.settle(worker, vm, callback.name());
        action
    }

    /// What Envoy does once a callback returned: re-match the route if the cache was
    /// cleared, send a pending local reply, forward or hold data, resume on
    /// `proxy_continue_stream` (delivering what was held), finish on `proxy_done`.
    pub(super) fn after(
        &mut self,
        vm: &mut Vm,
        worker: usize,
        id: u32,
        name: &str,
        returned: Option<(StreamCallback, Action)>,
    ) {
        let now = self.clock.now();
        let routes = &self.env.routes;
        let Some(s) = vm.store.data_mut().streams.get_mut(&id) else {
            return;
        };
        if s.route_cache_cleared {
            s.route_cache_cleared = false;
            let changed = std::mem::take(&mut s.changed_headers);
            if !s.request_forwarded {
                let previous = s.route.take();
                s.route = s.request_headers.as_ref().and_then(|h| routes.select(h));
                s.rematches.push(RouteRematch {
                    callback: name.to_owned(),
                    changed_headers: changed,
                    previous_route: previous.map(|r| r.name),
                    route: s.route.as_ref().map(|r| r.name.clone()),
                    cluster: s.route.as_ref().map(|r| r.cluster.clone()),
                });
            }
        }
        // The filter reset the stream (`proxy_close_stream`): Envoy ends it at once,
        // whatever the callback returned: nothing more goes upstream or to the client,
        // and the filter gets `proxy_on_log` and `proxy_on_done` (measured in Envoy
        // 1.40.0 and 1.36.4: tests/fixtures/fidelity/gap9-reset-and-no-route.wat).
        if s.close_requested && !s.reset && s.phase != Phase::Log {
            s.reset = true;
            s.local_reply_pending = false;
            self.end_stream(vm, worker, id);
            return;
        }
        if s.local_reply_pending {
            s.local_reply_pending = false;
            s.request_paused = false;
            s.request_held = false;
            self.deliver_local_reply(vm, worker, id);
            return;
        }
        if s.local_reply.is_some() && s.phase == Phase::Request {
            return;
        }
        if let Some((callback, action)) = returned {
            match (callback, action) {
                // ABI 0.2.x: Pause on headers is StopAllIterationAndWatermark.
                (StreamCallback::RequestHeaders, Action::Pause) => {
                    s.request_paused = true;
                    s.request_held = true;
                }
                (StreamCallback::ResponseHeaders, Action::Pause) => {
                    s.response_paused = true;
                    s.response_held = true;
                }
                (cb, Action::Continue) if cb.is_request() => forward_request(s),
                (cb, Action::Pause) if cb.is_request() => s.request_paused = true,
                (_, Action::Continue) => forward_response(s, now),
                (_, Action::Pause) => s.response_paused = true,
            }
        }
        let mut resume_request = false;
        let mut resume_response = false;
        if std::mem::take(&mut s.continue_request) && s.request_paused {
            s.request_paused = false;
            let held = std::mem::take(&mut s.request_held);
            if held && std::mem::take(&mut s.request_held_data) {
                resume_request = true;
            } else {
                forward_request(s);
            }
        }
        if std::mem::take(&mut s.continue_response) && s.response_paused {
            s.response_paused = false;
            let held = std::mem::take(&mut s.response_held);
            if held && std::mem::take(&mut s.response_held_data) {
                resume_response = true;
            } else {
                forward_response(s, now);
            }
        }
        // The request reached a direct-response route: the router answers.
        if s.local_reply_pending && !resume_request {
            s.local_reply_pending = false;
            self.deliver_local_reply(vm, worker, id);
            return;
        }
        let finish = s.awaiting_done && s.done_called;
        if resume_request {
            self.deliver_held(vm, worker, id, true);
        }
        if resume_response {
            self.deliver_held(vm, worker, id, false);
        }
        if finish {
            if let Some(s) = vm.store.data_mut().streams.get_mut(&id) {
                s.awaiting_done = false;
            }
            self.finalize(vm, worker, id);
        }
    }

    /// A paused headers callback was resumed: Envoy now delivers what it held, ONE body
    /// callback with everything buffered (end of stream when the client ended it without
    /// trailers), then the trailers.
    fn deliver_held(&mut self, vm: &mut Vm, worker: usize, id: u32, request: bool) {
        let Some(s) = vm.store.data().streams.get(&id) else {
            return;
        };
        let (body, trailers, ended) = if request {
            (
                s.request_body.as_ref().map(Vec::len),
                s.request_trailers.as_ref().map(HeaderMap::len),
                s.request_ended,
            )
        } else {
            (
                s.response_body.as_ref().map(Vec::len),
                s.response_trailers.as_ref().map(HeaderMap::len),
                s.response_ended,
            )
        };
        let (body_cb, trailers_cb) = if request {
            (StreamCallback::RequestBody, StreamCallback::RequestTrailers)
        } else {
            (
                StreamCallback::ResponseBody,
                StreamCallback::ResponseTrailers,
            )
        };
        if let Some(len) = body {
            self.run_in(
                vm,
                worker,
                id,
                body_cb,
                len,
                Some(ended && trailers.is_none()),
            );
        }
        let live = vm
            .store
            .data()
            .streams
            .get(&id)
            .is_some_and(|s| s.local_reply.is_none());
        if let (Some(n), true) = (trailers, live) {
            self.run_in(vm, worker, id, trailers_cb, n, None);
        }
    }

    /// Handles stream work left by a callback on another context (e.g. an HTTP call
    /// response resuming a stream), delivers gRPC closes Envoy owes the guest and queued
    /// `proxy_on_queue_ready`.
    pub(super) fn settle(&mut self, worker: usize, vm: &mut Vm, name: &str) {
        loop {
            let pending: Vec<u32> = vm
                .store
                .data()
                .streams
                .iter()
                .filter(|(_, s)| s.has_pending())
                .map(|(id, _)| *id)
                .collect();
            for id in &pending {
                self.after(vm, worker, *id, name, None);
            }
            let closes = std::mem::take(&mut vm.store.data_mut().pending_grpc_close);
            for (root, token) in &closes {
                self.grpc_close_unknown_cluster(vm, worker, *root, *token);
            }
            let event = self.shared().queue_ready.pop_front();
            match event {
                Some((target, root, queue)) if target == worker => {
                    self.queue_ready(vm, worker, root, queue)
                }
                Some((target, root, queue)) => {
                    // Another VM (not being driven right now).
                    let _ = self.with_vm(target, |p, other| {
                        p.queue_ready(other, target, root, queue);
                        p.settle(target, other, "proxy_on_queue_ready");
                    });
                }
                None if pending.is_empty() && closes.is_empty() => break,
                None => {}
            }
        }
    }

    /// `proxy_on_grpc_close(root, token, 14)` for a gRPC call to an unknown cluster named
    /// in a `GrpcService` (Envoy delivers it although the call returned
    /// `InternalFailure`).
    fn grpc_close_unknown_cluster(&mut self, vm: &mut Vm, worker: usize, root: u32, token: u32) {
        if !vm.store.data().roots.contains_key(&root) {
            return;
        }
        vm.store.data_mut().call = Some(CallResponse {
            status: (14, String::new()),
            ..CallResponse::default()
        });
        let f = vm.exports.on_grpc_close.clone();
        self.call(
            vm,
            worker,
            "proxy_on_grpc_close",
            root,
            f,
            (root as i32, token as i32, 14),
        );
        vm.store.data_mut().call = None;
    }

    fn queue_ready(&mut self, vm: &mut Vm, worker: usize, root: u32, queue: u32) {
        if vm.store.data().roots.contains_key(&root) {
            let f = vm.exports.on_queue_ready.clone();
            self.call(
                vm,
                worker,
                "proxy_on_queue_ready",
                root,
                f,
                (root as i32, queue as i32),
            );
        }
    }

    /// Sends the local reply through this filter's response callbacks (Envoy does), or,
    /// when it was sent from a response callback, replaces the response.
    fn deliver_local_reply(&mut self, vm: &mut Vm, worker: usize, id: u32) {
        let now = self.clock.now();
        let Some(s) = vm.store.data_mut().streams.get_mut(&id) else {
            return;
        };
        let Some(reply) = s.local_reply.clone() else {
            return;
        };
        let (headers, body) = hcm::local_reply(&reply, s.grpc);
        let code = status_of(&headers);
        if s.phase != Phase::Request {
            s.client_response_headers = None;
            s.client_response_body = Vec::new();
            s.response_forwarded = false;
            s.response_headers = Some(headers);
            s.response_body = Some(body);
            s.response_code = code;
            forward_response(s, now);
            return;
        }
        s.phase = Phase::Response;
        s.upstream = None;
        s.response_code = code;
        let n = headers.len();
        s.response_headers = Some(headers);
        self.run_in(
            vm,
            worker,
            id,
            StreamCallback::ResponseHeaders,
            n,
            Some(body.is_empty()),
        );
        if !body.is_empty() {
            if let Some(s) = vm.store.data_mut().streams.get_mut(&id) {
                s.response_body = Some(body);
                let len = s.response_body.as_ref().map_or(0, Vec::len);
                s.response_held = false;
                self.run_in(
                    vm,
                    worker,
                    id,
                    StreamCallback::ResponseBody,
                    len,
                    Some(true),
                );
            }
        }
        // A local reply is sent even if the filter paused on it.
        if let Some(s) = vm.store.data_mut().streams.get_mut(&id) {
            s.response_paused = false;
            s.response_held = false;
            forward_response(s, now);
        }
    }

    /// The stream ends as Envoy ends it: its access log first (`proxy_on_log`), then
    /// its filters are destroyed (`proxy_on_done`; when that returns false, the filter
    /// finishes with `proxy_done`), then `proxy_on_delete` (the order measured in Envoy
    /// 1.40.0 and 1.36.4: tests/fixtures/fidelity/gap9-reset-and-no-route.wat).
    fn end_stream(&mut self, vm: &mut Vm, worker: usize, id: u32) {
        if let Some(s) = vm.store.data_mut().streams.get_mut(&id) {
            s.phase = Phase::Log;
        }
        let log = vm.exports.on_log.clone();
        self.call(vm, worker, "proxy_on_log", id, log, id as i32);
        let done = vm.exports.on_done.clone();
        match self.call(vm, worker, "proxy_on_done", id, done, id as i32) {
            Called::Returned(0) => {
                if let Some(s) = vm.store.data_mut().streams.get_mut(&id) {
                    s.awaiting_done = true;
                }
            }
            Called::Trapped => self.fail_stream(vm, worker, id),
            _ => self.finalize(vm, worker, id),
        }
    }

    /// `proxy_on_delete`, then the stream leaves the VM.
    fn finalize(&mut self, vm: &mut Vm, worker: usize, id: u32) {
        let delete = vm.exports.on_delete.clone();
        self.call(vm, worker, "proxy_on_delete", id, delete, id as i32);
        if let Some(mut s) = vm.store.data_mut().streams.remove(&id) {
            s.finished = true;
            self.orphans.insert((worker, id, vm.generation), s);
        }
    }

    pub(super) fn complete_stream(&mut self, worker: usize, id: u32) -> Result<()> {
        self.with_vm(worker, |p, vm| {
            if !vm.store.data().streams.contains_key(&id) {
                return;
            }
            p.end_stream(vm, worker, id);
            p.settle(worker, vm, "proxy_on_done");
        })
    }
}

/// Envoy answers the stream itself: the reply goes straight to the client (no filter
/// callbacks).
fn envoy_reply(state: &mut StreamState, reply: LocalReply, flags: u64, now: Option<Duration>) {
    let (headers, body) = hcm::local_reply(&reply, state.grpc);
    state.filtered = false;
    state.response_code = status_of(&headers);
    state.response_flags |= flags;
    state.response_headers = Some(headers);
    state.response_body = Some(body);
    state.client_response_headers = None;
    state.client_response_body = Vec::new();
    state.response_forwarded = false;
    state.local_reply = Some(reply);
    forward_response(state, now.unwrap_or_default());
}

/// The request of a stream the filter no longer sees goes on; a direct response then goes
/// straight to the client.
pub(super) fn forward_unfiltered_request(s: &mut StreamState, now: Duration) {
    forward_request(s);
    if std::mem::take(&mut s.local_reply_pending) {
        if let Some(reply) = s.local_reply.take() {
            envoy_reply(s, reply, 0, Some(now));
        }
    }
}

/// The stream fails closed: a 503 local reply (`wasm_fail_stream`; gRPC: 200 with
/// `grpc-status: 14`), no filter callbacks.
pub(super) fn fail_closed(state: &mut StreamState, now: Option<Duration>) {
    let reply = LocalReply {
        status: 503,
        details: "wasm_fail_stream".to_owned(),
        body: Vec::new(),
        headers: Vec::new(),
        grpc_status: Some(14),
    };
    envoy_reply(state, reply, 0, now);
}

/// No filter config (a first configuration delivered by ECDS and rejected): 500, empty
/// body, response flag NFCF, empty details (gRPC: 200 with `grpc-status: 2`).
fn no_filter_config(state: &mut StreamState, now: Duration) {
    let reply = LocalReply {
        status: 500,
        details: String::new(),
        body: Vec::new(),
        headers: Vec::new(),
        grpc_status: None,
    };
    envoy_reply(
        state,
        reply,
        response_flags::NO_FILTER_CONFIG_FOUND,
        Some(now),
    );
}

/// Request headers (first time), buffered body and trailers go upstream, or, on a
/// [`crate::Route::direct_response`] route or when no route matched, the router answers:
/// a local reply is then pending (`local_reply_pending`) and nothing is forwarded.
pub(super) fn forward_request(s: &mut StreamState) {
    if !s.request_forwarded {
        // No route matched: the router answers 404, details `route_not_found`, flag NR,
        // no body, through the filter's response callbacks (measured in Envoy 1.40.0 and
        // 1.36.4: tests/fixtures/fidelity/gap9-reset-and-no-route.wat).
        if s.route.is_none() && s.route_table {
            if s.local_reply.is_none() {
                s.local_reply = Some(LocalReply {
                    status: 404,
                    details: "route_not_found".to_owned(),
                    body: Vec::new(),
                    headers: Vec::new(),
                    grpc_status: None,
                });
                s.response_flags |= response_flags::NO_ROUTE_FOUND;
                s.local_reply_pending = true;
            }
            return;
        }
        if let Some(direct) = s.route.as_ref().and_then(|r| r.direct_response.as_ref()) {
            if s.local_reply.is_none() {
                s.local_reply = Some(LocalReply {
                    status: direct.status,
                    details: "direct_response".to_owned(),
                    body: direct.body.clone(),
                    headers: Vec::new(),
                    grpc_status: None,
                });
                s.local_reply_pending = true;
            }
            return;
        }
        s.request_forwarded = true;
        s.upstream_request_headers = s.request_headers.clone();
        // The router tells the upstream the route's timeout (Envoy's
        // `FilterUtility::finalTimeout`, unless it is zero).
        let timeout = s.route.as_ref().map_or(Duration::ZERO, |r| r.timeout);
        if let Some(h) = s.upstream_request_headers.as_mut() {
            if !timeout.is_zero() {
                h.replace(
                    "x-envoy-expected-rq-timeout-ms",
                    &timeout.as_millis().to_string(),
                );
            }
        }
    }
    if let Some(body) = s.request_body.as_mut() {
        s.upstream_request_body.append(body);
    }
    if s.request_trailers.is_some() {
        s.upstream_request_trailers = s.request_trailers.clone();
    }
}

/// Response headers (first time, with what Envoy adds after the filter), buffered body and
/// trailers go to the client.
pub(super) fn forward_response(s: &mut StreamState, now: Duration) {
    if !s.response_forwarded {
        s.response_forwarded = true;
        let mut headers = s.response_headers.clone();
        if let Some(h) = headers.as_mut() {
            if s.hcm {
                hcm::finish_client_headers(h, now);
                let headers_only = match &s.local_reply {
                    // A gRPC request's reply is trailers-only: its body is the
                    // `grpc-message`.
                    Some(reply) => reply.body.is_empty() || s.grpc,
                    None => {
                        s.response_ended
                            && s.response_body.as_ref().is_none_or(Vec::is_empty)
                            && s.response_trailers.is_none()
                    }
                };
                hcm::add_codec_framing(h, s.connection.is_http1(), headers_only, s.request_ended);
            }
        }
        s.client_response_headers = headers;
    }
    if let Some(body) = s.response_body.as_mut() {
        s.client_response_body.append(body);
    }
    if s.response_trailers.is_some() {
        s.client_response_trailers = s.response_trailers.clone();
    }
}
