// Command pilot-agent is Istio's sidecar agent, unchanged: it writes the
// Envoy bootstrap from Istio's template, starts Envoy, serves it SDS, proxies
// its xDS stream to istiod and fetches Wasm modules for ECDS. This main only
// wires the pinned istio.io/istio packages together the way Istio's own
// pilot-agent main does.
package main

import (
	"os"

	meshconfig "istio.io/api/mesh/v1alpha1"
	"istio.io/istio/pilot/cmd/pilot-agent/app"
	istioagent "istio.io/istio/pkg/istio-agent"
	"istio.io/istio/pkg/log"
	"istio.io/istio/pkg/security"
	"istio.io/istio/security/pkg/nodeagent/sds"
)

func main() {
	log.EnableKlogWithCobra()
	root := app.NewRootCommand(func(o *security.Options, c security.SecretManager, p *meshconfig.PrivateKeyProvider) istioagent.SDSService {
		return sds.NewServer(o, c, p)
	})
	if err := root.Execute(); err != nil {
		log.Error(err)
		os.Exit(1)
	}
}
