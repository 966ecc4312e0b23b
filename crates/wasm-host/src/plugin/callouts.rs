//! Answering callouts: HTTP call responses and gRPC messages, delivered to the calling
//! context's root context as Envoy 1.40 does.

use wasmtime::{Val, ValType};

use super::flow::status_of;
use super::vm::{Exports, F3};
use super::{len_i32, Plugin};
use crate::envoy::HeaderMap;
use crate::error::{ensure_usage, usage, Error, Result};
use crate::hcm;
use crate::host::CallResponse;
use crate::state::{self, Failure, LocalReply};

/// The body of the router's local reply to a timed-out request.
const TIMEOUT_BODY: &[u8] = b"upstream request timeout";

impl Plugin {
    /// Delivers the response of HTTP callout `token`: `proxy_on_http_call_response` runs
    /// on the calling context's root context (as in Envoy 1.40) with the headers
    /// (`:status` first), body and trailers readable. A guest resumes its stream with
    /// `proxy_set_effective_context(stream)` then `proxy_continue_stream`.
    pub fn respond_http_call(
        &mut self,
        token: u32,
        status: u32,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<()> {
        let mut map = HeaderMap::default();
        map.add(":status", &status.to_string());
        for (k, v) in headers {
            map.add(k, v);
        }
        self.deliver_http_call(token, Some((map, body.to_vec())))
    }

    /// Fails HTTP callout `token` (timeout, reset): `proxy_on_http_call_response` runs
    /// with zero headers, as Envoy does.
    ///
    /// ```
    /// use proxy_wasm_host::{Module, Plugin};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
    /// let mut plugin = Plugin::builder(&module).default_cluster("api").cluster("authz").build()?;
    /// let mut s = plugin.new_stream(0);
    /// plugin.on(&mut s)?.request_headers(&[(":method", "GET"), (":path", "/"), ("x-callout", "1")], true)?;
    /// let token = plugin.http_callouts()[0].token;
    /// plugin.fail_http_call(token)?;
    /// // The demo filter found no `:status` in the answer and says so upstream.
    /// assert_eq!(plugin.on(&mut s)?.upstream_request_header("x-authz-status").as_deref(), Some("none"));
    /// // A callout is answered once.
    /// assert!(plugin.respond_http_call(token, 200, &[], b"").is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn fail_http_call(&mut self, token: u32) -> Result<()> {
        self.deliver_http_call(token, None)
    }

    /// Times HTTP callout `token` out, as Envoy's async client does once the timeout the
    /// guest gave passed without an answer: the router's local reply, `504` with
    /// `upstream request timeout`, is the response. [`Plugin::advance`] calls it at the
    /// callout's deadline; a test may call it earlier.
    ///
    /// ```
    /// use std::time::Duration;
    /// use proxy_wasm_host::{Module, Plugin};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
    /// let mut plugin = Plugin::builder(&module).default_cluster("api").cluster("authz").build()?;
    /// let mut s = plugin.new_stream(0);
    /// plugin.on(&mut s)?.request_headers(&[(":method", "GET"), (":path", "/"), ("x-callout", "1")], true)?;
    /// let callout = plugin.http_callouts()[0].clone();
    /// assert_eq!(callout.deadline(), Some(Duration::from_millis(500)));
    ///
    /// // Timed out before its deadline: the filter sees the router's 504.
    /// plugin.time_out_http_call(callout.token)?;
    /// assert_eq!(plugin.on(&mut s)?.upstream_request_header("x-authz-status").as_deref(), Some("504"));
    /// assert!(plugin.http_callouts()[0].answered);
    /// assert_eq!(plugin.http_callouts()[0].deadline(), None); // it is over
    /// // Its old deadline passes without a second answer (that would be an error).
    /// plugin.advance(Duration::from_millis(500))?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn time_out_http_call(&mut self, token: u32) -> Result<()> {
        let reply = LocalReply {
            status: 504,
            details: "upstream_response_timeout".to_owned(),
            body: TIMEOUT_BODY.to_vec(),
            headers: Vec::new(),
            grpc_status: None,
        };
        self.deliver_http_call(token, Some(hcm::local_reply(&reply, false)))
    }

    fn deliver_http_call(
        &mut self,
        token: u32,
        response: Option<(HeaderMap, Vec<u8>)>,
    ) -> Result<()> {
        let (worker, context) = {
            let mut shared = state::lock(&self.shared);
            let callout = shared
                .http_callouts
                .iter_mut()
                .find(|c| c.token == token)
                .ok_or_else(|| usage(format!("no HTTP callout with token {token}")))?;
            ensure_usage!(
                !callout.answered,
                "HTTP callout {token} was already answered"
            );
            callout.answered = true;
            (callout.worker, callout.root_id)
        };
        self.with_vm(worker, |p, vm| {
            let (headers, body) = response.unwrap_or_default();
            let status = status_of(&headers).unwrap_or(0);
            let args = (
                context as i32,
                token as i32,
                len_i32(headers.len()),
                len_i32(body.len()),
                0,
            );
            vm.store.data_mut().call = Some(CallResponse {
                headers,
                body: Some(body),
                trailers: HeaderMap::default(),
                status: (status, String::new()),
            });
            let f = vm.exports.on_http_call_response.clone();
            p.call(vm, worker, "proxy_on_http_call_response", context, f, args);
            vm.store.data_mut().call = None;
            p.settle(worker, vm, "proxy_on_http_call_response");
        })
    }

    fn grpc_callout(&self, token: u32) -> Result<(usize, u32)> {
        let shared = state::lock(&self.shared);
        let c = shared
            .grpc_callouts
            .iter()
            .find(|c| c.token == token)
            .ok_or_else(|| usage(format!("no gRPC callout with token {token}")))?;
        Ok((c.worker, c.root_id))
    }

    fn deliver_grpc(
        &mut self,
        token: u32,
        name: &'static str,
        call: CallResponse,
        arg: i32,
        pick: fn(&Exports) -> Option<F3<()>>,
    ) -> Result<()> {
        let (worker, context) = self.grpc_callout(token)?;
        self.with_vm(worker, |p, vm| {
            vm.store.data_mut().call = Some(call);
            let f = pick(&vm.exports);
            p.call(
                vm,
                worker,
                name,
                context,
                f,
                (context as i32, token as i32, arg),
            );
            vm.store.data_mut().call = None;
            p.settle(worker, vm, name);
        })
    }

    /// Delivers gRPC initial metadata (`proxy_on_grpc_receive_initial_metadata`).
    pub fn grpc_initial_metadata(&mut self, token: u32, metadata: &[(&str, &str)]) -> Result<()> {
        let headers = HeaderMap::from_pairs(metadata);
        let n = len_i32(headers.len());
        let call = CallResponse {
            headers,
            ..CallResponse::default()
        };
        self.deliver_grpc(
            token,
            "proxy_on_grpc_receive_initial_metadata",
            call,
            n,
            |e| e.on_grpc_receive_initial_metadata.clone(),
        )
    }

    /// Delivers a gRPC message (`proxy_on_grpc_receive`, readable as `GRPC_CALL_MESSAGE`).
    pub fn grpc_receive(&mut self, token: u32, message: &[u8]) -> Result<()> {
        let n = len_i32(message.len());
        let call = CallResponse {
            body: Some(message.to_vec()),
            ..CallResponse::default()
        };
        self.deliver_grpc(token, "proxy_on_grpc_receive", call, n, |e| {
            e.on_grpc_receive.clone()
        })
    }

    /// Delivers gRPC trailing metadata (`proxy_on_grpc_receive_trailing_metadata`).
    pub fn grpc_trailing_metadata(&mut self, token: u32, metadata: &[(&str, &str)]) -> Result<()> {
        let trailers = HeaderMap::from_pairs(metadata);
        let n = len_i32(trailers.len());
        let call = CallResponse {
            trailers,
            ..CallResponse::default()
        };
        self.deliver_grpc(
            token,
            "proxy_on_grpc_receive_trailing_metadata",
            call,
            n,
            |e| e.on_grpc_receive_trailing_metadata.clone(),
        )
    }

    /// Closes a gRPC call or stream (`proxy_on_grpc_close`; `proxy_get_status` gives
    /// `status` and `message`).
    pub fn grpc_close(&mut self, token: u32, status: u32, message: &str) -> Result<()> {
        // (An unknown token is refused by the delivery below.)
        if let Some(c) = state::lock(&self.shared)
            .grpc_callouts
            .iter_mut()
            .find(|c| c.token == token)
        {
            c.ended = true;
        }
        let call = CallResponse {
            status: (status, message.to_owned()),
            ..CallResponse::default()
        };
        self.deliver_grpc(token, "proxy_on_grpc_close", call, status as i32, |e| {
            e.on_grpc_close.clone()
        })
    }

    /// Times gRPC call `token` out, as Envoy does once the timeout the guest gave passed
    /// without the call ending: `proxy_on_grpc_close` with status 14 and
    /// [`crate::state::GRPC_TIMEOUT_MESSAGE`]. [`Plugin::advance`] calls it at the call's
    /// deadline ([`crate::GrpcCallout::deadline`]); a test may call it earlier.
    ///
    /// ```
    /// use std::time::Duration;
    /// use proxy_wasm_host::{Module, Plugin};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
    /// let mut plugin = Plugin::builder(&module).default_cluster("api").cluster("authz").build()?;
    /// let mut s = plugin.new_stream(0);
    /// plugin.on(&mut s)?.request_headers(&[(":method", "GET"), (":path", "/"), ("x-grpc", "1")], true)?;
    /// let call = plugin.grpc_callouts()[0].clone();
    /// assert_eq!(call.deadline(), Some(Duration::from_millis(500)));
    ///
    /// // The demo filter logs the close and resumes its request.
    /// plugin.time_out_grpc_call(call.token)?;
    /// assert_eq!(plugin.logs().last().map(|l| l.message.as_str()), Some("grpc closed"));
    /// assert!(plugin.on(&mut s)?.request_forwarded());
    /// assert!(plugin.grpc_callouts()[0].ended);
    /// assert_eq!(plugin.grpc_callouts()[0].deadline(), None);
    /// # Ok(())
    /// # }
    /// ```
    pub fn time_out_grpc_call(&mut self, token: u32) -> Result<()> {
        self.grpc_close(token, 14, state::GRPC_TIMEOUT_MESSAGE)
    }

    // --- direct access, for ABI tests and debugging ------------------------------------

    /// Calls any guest export with `context_id` effective, then does what Envoy does after
    /// a callback (route re-match, local reply, resume, queue notifications). Arguments are
    /// converted to the export's i32/i64 parameter types; a trap is returned as an error
    /// (and kills the VM, as any trap).
    ///
    /// ```
    /// use proxy_wasm_host::{Module, Plugin};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
    /// let mut plugin = Plugin::builder(&module).default_cluster("api").build()?;
    /// let root = plugin.root_context_id(0).ok_or("no root context")?;
    ///
    /// // A tick on worker 0's root context, without moving the clock.
    /// let results = plugin.call_export(0, root, "proxy_on_tick", &[i64::from(root)])?;
    /// assert!(results.is_empty());
    /// let last = plugin.logs().pop().ok_or("no log")?;
    /// assert_eq!((last.worker, last.context_id, last.message.as_str()), (0, root, "tick"));
    ///
    /// // The demo filter's allocator hands out 16 bytes, then the next 16.
    /// let first = plugin.call_export(0, root, "proxy_on_memory_allocate", &[16])?;
    /// let second = plugin.call_export(0, root, "proxy_on_memory_allocate", &[16])?;
    /// assert_eq!(second[0] - first[0], 16);
    ///
    /// assert!(plugin.call_export(0, root, "no_such_export", &[]).is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn call_export(
        &mut self,
        worker: usize,
        context_id: u32,
        name: &str,
        args: &[i64],
    ) -> Result<Vec<i64>> {
        self.with_vm(worker, |p, vm| {
            ensure_usage!(!vm.failed, "VM {worker} is dead");
            let func = vm
                .store
                .data()
                .instance_exports
                .get(name)
                .copied()
                .ok_or_else(|| usage(format!("the module exports no function {name}")))?;
            let ty = func.ty(&vm.store);
            ensure_usage!(
                ty.params().len() == args.len(),
                "{name} takes {} arguments",
                ty.params().len()
            );
            let params: Vec<Val> = ty
                .params()
                .zip(args)
                .map(|(t, a)| match t {
                    ValType::I64 => Val::I64(*a),
                    _ => Val::I32(*a as i32),
                })
                .collect();
            let mut results: Vec<Val> = ty.results().map(|_| Val::I32(0)).collect();
            if let Some(s) = vm.store.data_mut().streams.get_mut(&context_id) {
                s.route_snapshot = s.route.clone();
            }
            vm.store.data_mut().active_context = context_id;
            vm.arm(&p.env.limits);
            let outcome = func.call(&mut vm.store, &params, &mut results);
            vm.disarm();
            if let Err(error) = outcome {
                vm.failed = true;
                vm.failed_at = p.clock.elapsed();
                let message = crate::limits::trap_message(&error, &p.env.limits);
                p.shared().failures.push(Failure {
                    worker,
                    callback: name.to_owned(),
                    message: message.clone(),
                });
                return Err(Error::Host(format!("{name} trapped: {message}")));
            }
            p.after(vm, worker, context_id, name, None);
            p.settle(worker, vm, name);
            Ok(results
                .iter()
                .map(|v| v.i64().or(v.i32().map(i64::from)).unwrap_or(0))
                .collect())
        })?
    }
}
