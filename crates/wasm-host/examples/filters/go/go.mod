// The filter of examples/go_filter.rs, built with the proxy-wasm Go SDK (the version the
// replica's Go SDK corpus pins, crates/replica/tests/go-sdk/go.mod).
module hybridmesh.example/served-by

go 1.24

require github.com/proxy-wasm/proxy-wasm-go-sdk v0.0.0-20260105142703-44c7d5847745
