// properties: logs the properties a filter reads most, request by request, the dynamic metadata a filter ahead of it set, and the plugin's configuration, so the values Envoy gives can be compared with the harness's.
package main

import (
	"bytes"
	"encoding/binary"
	"sort"
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
	if path == "metadata" {
		// A serialized protobuf whose map entries Envoy writes in hash order (it changes
		// from request to request): only its size is comparable.
		proxywasm.LogInfof("go: %s: %d bytes", path, len(v))
		return
	}
	if strings.HasPrefix(path, "metadata.") {
		v = canonical(v)
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
	// What the listener's set_metadata filter, ahead of this one, left in the stream's
	// dynamic metadata.
	for _, p := range []string{"metadata", "metadata.filter_metadata", "metadata.filter_metadata.probe",
		"metadata.filter_metadata.probe.s", "metadata.filter_metadata.probe.n", "metadata.filter_metadata.probe.b",
		"metadata.filter_metadata.probe.nested", "metadata.filter_metadata.probe.nested.k",
		"metadata.filter_metadata.probe.list", "metadata.filter_metadata.probe.z",
		"metadata.filter_metadata.probe.absent",
		"metadata.filter_metadata.absent"} {
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

// canonical rewrites a value in the proxy-wasm pairs encoding (how Envoy serializes a CEL
// map) with its entries sorted by key, recursively, since Envoy writes map entries in
// hash order. A list (every second element empty) keeps its order; anything that is not
// a well-formed pairs encoding is returned as it is.
func canonical(b []byte) []byte {
	pairs, ok := decodePairs(b)
	if !ok {
		return b
	}
	list := true
	for _, p := range pairs {
		if len(p[1]) != 0 {
			list = false
		}
	}
	for i := range pairs {
		pairs[i][1] = canonical(pairs[i][1])
	}
	if !list {
		sort.Slice(pairs, func(i, j int) bool { return bytes.Compare(pairs[i][0], pairs[j][0]) < 0 })
	}
	var out []byte
	out = binary.LittleEndian.AppendUint32(out, uint32(len(pairs)))
	for _, p := range pairs {
		out = binary.LittleEndian.AppendUint32(out, uint32(len(p[0])))
		out = binary.LittleEndian.AppendUint32(out, uint32(len(p[1])))
	}
	for _, p := range pairs {
		out = append(append(append(append(out, p[0]...), 0), p[1]...), 0)
	}
	return out
}

func decodePairs(b []byte) ([][2][]byte, bool) {
	if len(b) < 4 {
		return nil, false
	}
	n := int(binary.LittleEndian.Uint32(b))
	if n == 0 || n > len(b)/8 {
		return nil, false
	}
	sizes, data := b[4:], 4+8*n
	pairs := make([][2][]byte, n)
	for i := 0; i < n; i++ {
		k := int(binary.LittleEndian.Uint32(sizes[8*i:]))
		v := int(binary.LittleEndian.Uint32(sizes[8*i+4:]))
		if data+k+v+2 > len(b) || b[data+k] != 0 || b[data+k+1+v] != 0 {
			return nil, false
		}
		pairs[i] = [2][]byte{b[data : data+k], b[data+k+1 : data+k+1+v]}
		data += k + v + 2
	}
	return pairs, data == len(b)
}
