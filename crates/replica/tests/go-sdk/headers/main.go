// headers: reads every request and response header, adds, replaces and removes some, and
// logs what it saw, so Envoy's header maps and the harness's can be compared in order.
package main

import (
	"strings"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"

	"hybridmesh.test/go-sdk/scaffold"
)

func main() {}

func init() { scaffold.Streams(func() types.HttpContext { return &stream{} }) }

type stream struct{ types.DefaultHttpContext }

// names lists the header names in order, leaving out those whose values differ per request.
func names(hs [][2]string) string {
	var out []string
	for _, h := range hs {
		out = append(out, h[0])
	}
	return strings.Join(out, ",")
}

func (*stream) OnHttpRequestHeaders(n int, eos bool) types.Action {
	hs, err := proxywasm.GetHttpRequestHeaders()
	if err != nil {
		proxywasm.LogErrorf("go: request headers: %v", err)
	}
	proxywasm.LogInfof("go: request headers (%d, eos=%t): %s", n, eos, names(hs))
	path, _ := proxywasm.GetHttpRequestHeader(":path")
	proxywasm.LogInfof("go: :path=%s", path)
	if _, err := proxywasm.GetHttpRequestHeader("x-absent"); err != nil {
		proxywasm.LogInfof("go: x-absent: %v", err)
	}
	_ = proxywasm.AddHttpRequestHeader("x-go-added", "1")
	_ = proxywasm.AddHttpRequestHeader("x-go-multi", "a")
	_ = proxywasm.AddHttpRequestHeader("x-go-multi", "b")
	_ = proxywasm.ReplaceHttpRequestHeader("x-go-replaced", "new")
	_ = proxywasm.RemoveHttpRequestHeader("x-go-removed")
	return types.ActionContinue
}

func (*stream) OnHttpResponseHeaders(n int, eos bool) types.Action {
	hs, err := proxywasm.GetHttpResponseHeaders()
	if err != nil {
		proxywasm.LogErrorf("go: response headers: %v", err)
	}
	proxywasm.LogInfof("go: response headers (%d, eos=%t): %s", n, eos, names(hs))
	status, _ := proxywasm.GetHttpResponseHeader(":status")
	_ = proxywasm.AddHttpResponseHeader("x-go-status", status)
	_ = proxywasm.RemoveHttpResponseHeader("x-upstream-secret")
	return types.ActionContinue
}
