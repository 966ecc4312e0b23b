// Package scaffold holds the contexts every filter of the corpus needs: a VM context
// whose plugin context makes one HTTP context per stream.
package scaffold

import (
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

type vm struct {
	types.DefaultVMContext
	plugin func() types.PluginContext
}

func (v *vm) NewPluginContext(uint32) types.PluginContext { return v.plugin() }

type plugin struct {
	types.DefaultPluginContext
	stream func() types.HttpContext
}

func (p *plugin) NewHttpContext(uint32) types.HttpContext { return p.stream() }

// Plugins sets the VM context: each plugin context is made by newPlugin.
func Plugins(newPlugin func() types.PluginContext) {
	proxywasm.SetVMContext(&vm{plugin: newPlugin})
}

// Streams sets a VM context whose plugin contexts make each stream with newStream.
func Streams(newStream func() types.HttpContext) {
	Plugins(func() types.PluginContext { return &plugin{stream: newStream} })
}
