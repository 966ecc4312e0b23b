// callout: asks the "authz" cluster before letting a request through (as an external
// authorization filter does), with a timeout the service misses on /slow and none on
// /zero, and reports a callout to a cluster Envoy does not have.
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

func (*stream) OnHttpRequestHeaders(n int, eos bool) types.Action {
	path, _ := proxywasm.GetHttpRequestHeader(":path")
	cluster := "authz"
	if strings.HasPrefix(path, "/nowhere") {
		cluster = "missing"
	}
	// The service answers /check/slow after 1.5 s: past this callout's timeout.
	timeout := uint32(5000)
	if strings.HasPrefix(path, "/slow") {
		timeout = 300
	} else if strings.HasPrefix(path, "/zero") {
		timeout = 0
	}
	headers := [][2]string{{":method", "GET"}, {":path", "/check" + path}, {":authority", "authz"}}
	_, err := proxywasm.DispatchHttpCall(cluster, headers, nil, nil, timeout, answered)
	if err != nil {
		proxywasm.LogInfof("go: dispatch to %s: %v", cluster, err)
		if err := proxywasm.SendHttpResponse(500, nil, []byte("callout failed"), -1); err != nil {
			proxywasm.LogErrorf("go: local reply: %v", err)
		}
		return types.ActionPause
	}
	proxywasm.LogInfof("go: asked %s", cluster)
	return types.ActionPause
}

func answered(headers, body, trailers int) {
	status := ""
	if hs, err := proxywasm.GetHttpCallResponseHeaders(); err == nil {
		for _, h := range hs {
			if h[0] == ":status" {
				status = h[1]
			}
		}
	}
	answer, _ := proxywasm.GetHttpCallResponseBody(0, body)
	proxywasm.LogInfof("go: authz answered %s %q", status, answer)
	if status == "200" {
		_ = proxywasm.AddHttpRequestHeader("x-authz", string(answer))
		if err := proxywasm.ResumeHttpRequest(); err != nil {
			proxywasm.LogErrorf("go: resume: %v", err)
		}
		return
	}
	if err := proxywasm.SendHttpResponse(403, [][2]string{{"x-authz-status", status}}, []byte("forbidden"), -1); err != nil {
		proxywasm.LogErrorf("go: local reply: %v", err)
	}
}
