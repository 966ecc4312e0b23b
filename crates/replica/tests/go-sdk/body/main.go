// body: buffers the request body and sends it upstream in upper case; appends to the
// response body. Logs each body callback, so the calls Envoy makes can be compared.
package main

import (
	"bytes"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"

	"hybridmesh.test/go-sdk/scaffold"
)

func main() {}

func init() { scaffold.Streams(func() types.HttpContext { return &stream{} }) }

type stream struct{ types.DefaultHttpContext }

func (*stream) OnHttpRequestHeaders(n int, eos bool) types.Action {
	proxywasm.LogInfof("go: request headers eos=%t", eos)
	return types.ActionContinue
}

func (*stream) OnHttpRequestBody(size int, eos bool) types.Action {
	proxywasm.LogInfof("go: request body size=%d eos=%t", size, eos)
	if !eos {
		return types.ActionPause
	}
	body, err := proxywasm.GetHttpRequestBody(0, size)
	if err != nil {
		proxywasm.LogErrorf("go: request body: %v", err)
		return types.ActionContinue
	}
	if err := proxywasm.ReplaceHttpRequestBody(bytes.ToUpper(body)); err != nil {
		proxywasm.LogErrorf("go: replace request body: %v", err)
	}
	return types.ActionContinue
}

func (*stream) OnHttpResponseHeaders(n int, eos bool) types.Action {
	proxywasm.LogInfof("go: response headers eos=%t", eos)
	// The body grows below: the upstream's length no longer holds.
	_ = proxywasm.RemoveHttpResponseHeader("content-length")
	return types.ActionContinue
}

func (*stream) OnHttpResponseBody(size int, eos bool) types.Action {
	proxywasm.LogInfof("go: response body size=%d eos=%t", size, eos)
	if !eos {
		return types.ActionPause
	}
	if err := proxywasm.AppendHttpResponseBody([]byte("|go")); err != nil {
		proxywasm.LogErrorf("go: append response body: %v", err)
	}
	return types.ActionContinue
}
