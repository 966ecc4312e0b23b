// metrics: a counter, a gauge and a histogram, defined at plugin start and changed by
// every request, so Envoy's stats can be compared with the harness's metrics.
package main

import (
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"

	"hybridmesh.test/go-sdk/scaffold"
)

func main() {}

func init() { scaffold.Plugins(func() types.PluginContext { return &plugin{} }) }

type plugin struct {
	types.DefaultPluginContext
	requests proxywasm.MetricCounter
	inflight proxywasm.MetricGauge
	sizes    proxywasm.MetricHistogram
}

func (p *plugin) OnPluginStart(int) types.OnPluginStartStatus {
	p.requests = proxywasm.DefineCounterMetric("go_requests_total")
	p.inflight = proxywasm.DefineGaugeMetric("go_inflight")
	p.sizes = proxywasm.DefineHistogramMetric("go_path_bytes")
	return types.OnPluginStartStatusOK
}

func (p *plugin) NewHttpContext(uint32) types.HttpContext { return &stream{p: p} }

type stream struct {
	types.DefaultHttpContext
	p *plugin
}

func (s *stream) OnHttpRequestHeaders(n int, eos bool) types.Action {
	s.p.requests.Increment(1)
	s.p.inflight.Add(1)
	path, _ := proxywasm.GetHttpRequestHeader(":path")
	s.p.sizes.Record(uint64(len(path)))
	proxywasm.LogInfof("go: requests=%d inflight=%d", s.p.requests.Value(), s.p.inflight.Value())
	return types.ActionContinue
}

func (s *stream) OnHttpStreamDone() {
	s.p.inflight.Add(-1)
	proxywasm.LogInfof("go: done, inflight=%d", s.p.inflight.Value())
}
