// Command istio-install renders an Istio install the way `istioctl install -f`
// and `istioctl manifest generate -f` do: the release's own Helm charts
// (compiled into the istio.io/istio module this binary is built from) with
// the IstioOperator files given, merged in order and validated by Istio's
// operator code. It prints the rendered objects as one YAML stream.
//
//	istio-install -f IOP.yaml [-f OVERLAY.yaml ...] [--set path=value ...]
//
// The lab applies from it what a cluster's install puts in place for the
// control plane it runs itself: the mesh ConfigMap istiod reads, the
// injection template and values, the sidecar-injector webhook, istiod's
// Service.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"istio.io/istio/operator/pkg/render"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var files, sets list
	flag.Var(&files, "f", "IstioOperator file (repeatable, merged in order)")
	flag.Var(&sets, "set", "path=value, as istioctl's --set (repeatable)")
	flag.Parse()
	if len(files) == 0 {
		fmt.Fprintln(os.Stderr, "istio-install: at least one -f IstioOperator file")
		os.Exit(2)
	}
	manifests, _, err := render.GenerateManifest(files, sets, false, nil, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "istio-install:", err)
		os.Exit(1)
	}
	for _, set := range manifests {
		for _, m := range set.Manifests {
			fmt.Printf("# component: %s\n%s\n---\n", set.Component, strings.TrimSpace(m.Content))
		}
	}
}
