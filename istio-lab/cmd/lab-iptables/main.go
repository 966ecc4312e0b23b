// Command lab-iptables is Istio's istio-iptables (what istio-init runs in a
// pod), from the pinned module, with one difference: istio-iptables reads the
// pod's interface addresses only to tell an IPv4 pod from an IPv6 one, and
// skips loopback addresses, which the lab's pod IPs (127.0.0.0/8) are. Here
// that look-up answers "an IPv4 pod" (a documentation address, 192.0.2.1,
// which no rule names and nothing is sent to). The rules are istio-iptables'
// own. It takes istio-init's args as injected (pilot-agent's logging flags
// included).
package main

import (
	"net"
	"os"

	"istio.io/istio/pkg/log"
	"istio.io/istio/tools/common/config"
	iptables "istio.io/istio/tools/istio-iptables/pkg/cmd"
)

func main() {
	config.LocalIPAddrs = func() ([]net.Addr, error) {
		return []net.Addr{&net.IPNet{IP: net.IPv4(192, 0, 2, 1), Mask: net.CIDRMask(32, 32)}}, nil
	}
	// as `pilot-agent istio-iptables` (istio-init's command line): the agent's
	// logging flags (--log_output_level ...) are its root command's
	opts := log.DefaultOptions()
	cmd := iptables.GetCommand(opts)
	opts.AttachCobraFlags(cmd)
	if err := cmd.Execute(); err != nil {
		os.Exit(1)
	}
}
