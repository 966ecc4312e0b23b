// properties: logs the properties a filter reads most, request by request, and the
// plugin's configuration, so the values Envoy gives can be compared with the harness's.
package main

import (
	"strings"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"

	"hybridmesh.test/go-sdk/scaffold"
)

func main() {}

func init() { scaffold.Plugins(func() types.PluginContext { return &plugin{} }) }

type plugin struct{ types.DefaultPluginContext }

func (*plugin) OnPluginStart(size int) types.OnPluginStartStatus {
	cfg, err := proxywasm.GetPluginConfiguration()
	proxywasm.LogInfof("go: plugin start: %d bytes %q err=%v", size, cfg, err)
	for _, p := range []string{"plugin_name", "plugin_root_id", "plugin_vm_id", "node.id", "node.cluster"} {
		show(p)
	}
	return types.OnPluginStartStatusOK
}

func (*plugin) NewHttpContext(uint32) types.HttpContext { return &stream{} }

type stream struct{ types.DefaultHttpContext }

func show(path string) {
	v, err := proxywasm.GetProperty(strings.Split(path, "."))
	if err != nil {
		proxywasm.LogInfof("go: %s: %v", path, err)
		return
	}
	if strings.HasSuffix(path, ".port") {
		// The client's port changes from run to run: its size says what it is.
		proxywasm.LogInfof("go: %s: %d bytes", path, len(v))
		return
	}
	proxywasm.LogInfof("go: %s=%q", path, v)
}

func (*stream) OnHttpRequestHeaders(n int, eos bool) types.Action {
	for _, p := range []string{"request.path", "request.url_path", "request.method", "request.host",
		"request.scheme", "request.protocol", "request.query", "request.headers.x-probe",
		"source.port", "destination.port", "connection.mtls", "listener_direction", "route_name",
		"cluster_name", "xds.listener_direction", "xds.route_name", "xds.cluster_name",
		"response.code", "no.such.property"} {
		show(p)
	}
	return types.ActionContinue
}

func (*stream) OnHttpResponseHeaders(n int, eos bool) types.Action {
	for _, p := range []string{"response.code", "response.code_details", "xds.cluster_name", "xds.route_name",
		"upstream.port"} {
		show(p)
	}
	return types.ActionContinue
}
