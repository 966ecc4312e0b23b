// Filters written for this project with the proxy-wasm Go SDK (taken from the Go module
// proxy at test time), run in real Envoy and in the harness by ../go_sdk.rs.
module hybridmesh.test/go-sdk

go 1.24

require github.com/proxy-wasm/proxy-wasm-go-sdk v0.0.0-20260105142703-44c7d5847745
