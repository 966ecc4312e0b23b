// panic: a filter that panics on "/panic". A Go panic traps the VM: what happens to that
// request and to the ones after it is the proxy's fail strategy.
package main

import (
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"

	"hybridmesh.test/go-sdk/scaffold"
)

func main() {}

func init() { scaffold.Streams(func() types.HttpContext { return &stream{} }) }

type stream struct{ types.DefaultHttpContext }

func (*stream) OnHttpRequestHeaders(n int, eos bool) types.Action {
	path, _ := proxywasm.GetHttpRequestHeader(":path")
	proxywasm.LogInfof("go: request %s", path)
	if path == "/panic" {
		panic("go plugin panics on " + path)
	}
	_ = proxywasm.AddHttpRequestHeader("x-go-ok", "1")
	return types.ActionContinue
}
