// shared: the VM lifecycle (VM start, plugin start with its configuration) and shared
// data counted with compare-and-swap across VMs; every response carries the count.
package main

import (
	"encoding/binary"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

func main() {}

func init() { proxywasm.SetVMContext(&vm{}) }

type vm struct{ types.DefaultVMContext }

func (*vm) OnVMStart(size int) types.OnVMStartStatus {
	cfg, err := proxywasm.GetVMConfiguration()
	proxywasm.LogInfof("go: vm start: %d bytes %q err=%v", size, cfg, err)
	return types.OnVMStartStatusOK
}

func (*vm) NewPluginContext(uint32) types.PluginContext { return &plugin{} }

type plugin struct{ types.DefaultPluginContext }

func (*plugin) OnPluginStart(size int) types.OnPluginStartStatus {
	cfg, err := proxywasm.GetPluginConfiguration()
	proxywasm.LogInfof("go: plugin start: %d bytes %q err=%v", size, cfg, err)
	return types.OnPluginStartStatusOK
}

func (*plugin) NewHttpContext(uint32) types.HttpContext { return &stream{} }

type stream struct{ types.DefaultHttpContext }

func (*stream) OnHttpResponseHeaders(n int, eos bool) types.Action {
	for {
		value, cas, err := proxywasm.GetSharedData("go_count")
		var count uint64
		if err == nil && len(value) == 8 {
			count = binary.LittleEndian.Uint64(value)
		} else if err != nil {
			proxywasm.LogInfof("go: first read: %v", err)
		}
		next := make([]byte, 8)
		binary.LittleEndian.PutUint64(next, count+1)
		err = proxywasm.SetSharedData("go_count", next, cas)
		if err == nil {
			_ = proxywasm.AddHttpResponseHeader("x-go-count", string(rune('0'+count+1)))
			return types.ActionContinue
		}
		proxywasm.LogInfof("go: cas mismatch, again: %v", err)
	}
}
