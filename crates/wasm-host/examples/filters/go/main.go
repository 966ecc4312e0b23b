// served-by: a response-side filter built with the proxy-wasm Go SDK. It reads the node
// metadata CLUSTER_ID (property xds.node.metadata.CLUSTER_ID) once, when the plugin
// starts, and adds it to every response as x-served-by; it counts each response's body
// bytes and logs "response body N bytes" when the stream ends.
package main

import (
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

func main() {}

func init() { proxywasm.SetVMContext(&vm{}) }

type vm struct{ types.DefaultVMContext }

func (*vm) NewPluginContext(uint32) types.PluginContext { return &plugin{} }

type plugin struct {
	types.DefaultPluginContext
	cluster string
}

func (p *plugin) OnPluginStart(int) types.OnPluginStartStatus {
	p.cluster = "unknown"
	id, err := proxywasm.GetProperty([]string{"xds", "node", "metadata", "CLUSTER_ID"})
	if err != nil {
		proxywasm.LogWarnf("served-by: no CLUSTER_ID in the node metadata: %v", err)
	} else {
		p.cluster = string(id)
	}
	return types.OnPluginStartStatusOK
}

func (p *plugin) NewHttpContext(uint32) types.HttpContext { return &stream{cluster: p.cluster} }

type stream struct {
	types.DefaultHttpContext
	cluster string
	bytes   int
}

func (s *stream) OnHttpResponseHeaders(int, bool) types.Action {
	if err := proxywasm.AddHttpResponseHeader("x-served-by", s.cluster); err != nil {
		proxywasm.LogErrorf("served-by: add x-served-by: %v", err)
	}
	return types.ActionContinue
}

// OnHttpResponseBody sees each piece of the body as it arrives (the filter does not
// pause, so nothing is buffered): the sizes add up to the body's.
func (s *stream) OnHttpResponseBody(size int, eos bool) types.Action {
	proxywasm.LogDebugf("served-by: body callback, %d bytes, end of stream %t", size, eos)
	s.bytes += size
	return types.ActionContinue
}

func (s *stream) OnHttpStreamDone() {
	proxywasm.LogInfof("response body %d bytes", s.bytes)
}
