// auth: refuses requests without "x-token: secret" with a local reply of its own; a gRPC
// request is refused with a gRPC status (UNAUTHENTICATED).
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
	token, _ := proxywasm.GetHttpRequestHeader("x-token")
	if token == "secret" {
		proxywasm.LogInfo("go: allowed")
		return types.ActionContinue
	}
	ct, _ := proxywasm.GetHttpRequestHeader("content-type")
	grpc := int32(-1)
	status := uint32(401)
	if ct == "application/grpc" {
		grpc, status = 16, 200
	}
	headers := [][2]string{{"x-go-denied", "1"}, {"www-authenticate", "Token"}}
	if err := proxywasm.SendHttpResponse(status, headers, []byte("denied by go"), grpc); err != nil {
		proxywasm.LogErrorf("go: local reply: %v", err)
	}
	proxywasm.LogInfof("go: denied (grpc status %d)", grpc)
	return types.ActionPause
}

func (*stream) OnHttpResponseHeaders(n int, eos bool) types.Action {
	status, _ := proxywasm.GetHttpResponseHeader(":status")
	denied, _ := proxywasm.GetHttpResponseHeader("x-go-denied")
	proxywasm.LogInfof("go: response %s denied=%q", status, denied)
	return types.ActionContinue
}
