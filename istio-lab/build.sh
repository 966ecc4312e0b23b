#!/usr/bin/env bash
# Builds the lab's Go binaries into target/istio-lab/bin once, and reuses them
# while go.mod, go.sum and the sources are unchanged (a stamp holds their
# hash). Everything comes from the Go module proxy at the versions go.mod and
# go.sum pin: istio.io/istio (1.31.0, release-1.31 commit eed52eb), k8s.io/kubernetes (1.36.1, its staging
# modules replaced by their published versions), etcd 3.6.
#
#   kube      etcd (embedded) + kube-apiserver, one per cluster
#   kubectl   kubectl
#   istiod    pilot-discovery
#   pilot-agent  Istio's sidecar agent (bootstrap, SDS, xDS proxy, Wasm fetch)
#   labctl    EndpointSlices into etcd (see cmd/labctl)
#   labnet    unix-socket bridge between a pod's network namespace and the host
#   lab-iptables  istio-iptables (Istio's traffic capture) for pods with 127.x IPs
#   istio-install  Istio's operator render (istioctl install -f / manifest
#             generate): the release's charts with IstioOperator files
#   registry  the CNCF registry (distribution v3), the lab's private OCI registry;
#             its own module at its own pin, built apart (install_tool)
#   prometheus  Prometheus (github.com/prometheus/prometheus v0.316.0), likewise
#
# LAB_ISTIO=1.30 (a release of versions.tsv, see release.sh) also builds that
# release's istiod, pilot-agent, lab-iptables and istio-install from
# istio-lab/releases/1.30/go.mod into target/istio-lab/1.30/bin, with a stamp
# of their own (the shared binaries above are the same for every release).
#
# The machine is shared: builds run niced with one package at a time unless
# LAB_BUILD_PARALLEL=1. FORCE=1 rebuilds.
set -euo pipefail
LAB="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$LAB/.." && pwd)"
BIN="$ROOT/target/istio-lab/bin"
mkdir -p "$BIN"
cd "$LAB"
ENVOY=unused  # release.sh: only the release's binaries are needed here
source "$LAB/release.sh"
# Released tools first, apart from the rest: `go install` at a released
# version (checked against the Go checksum database), each with a stamp of
# its own.
install_tool() { # name module/cmd@version
  local name=$1 pkg=$2 stamp start
  stamp="${pkg##*@}-$(go env GOVERSION)"
  if [ "${FORCE:-}" = 1 ] || [ ! -x "$BIN/$name" ] || [ "$(cat "$BIN/.$name-stamp" 2>/dev/null)" != "$stamp" ]; then
    echo "istio-lab: building $pkg into $BIN"
    start=$(date +%s)
    GOBIN="$BIN" GOFLAGS="-trimpath -buildvcs=false" nice -n 15 go install -ldflags="-s -w" "$pkg"
    echo "$stamp" >"$BIN/.$name-stamp"
    echo "istio-lab: $name built in $(( $(date +%s) - start ))s"
  fi
}
# the CNCF registry, the lab's private OCI registry
install_tool registry github.com/distribution/distribution/v3/cmd/registry@v3.1.2
# Prometheus (Debian's package, which crates/replica's test uses, is built
# without Kubernetes service discovery): the lab's Prometheus finds the pods
# through the apiservers, as a cluster's monitoring does
install_tool prometheus github.com/prometheus/prometheus/cmd/prometheus@v0.316.0
export GOFLAGS="-trimpath -buildvcs=false -mod=readonly"
[ "${LAB_BUILD_PARALLEL:-}" = 1 ] || GOFLAGS="$GOFLAGS -p=1"
# The release's own binaries, when it is not the one go.mod pins: the same
# mains (releases/<release>/cmd/* link to cmd/*) against its go.mod.
if [ "$ISTIO_MOD" != "$LAB" ]; then
  rel_stamp=$(cat "$ISTIO_MOD/go.mod" "$ISTIO_MOD/go.sum" build.sh cmd/istiod/*.go cmd/pilot-agent/*.go cmd/lab-iptables/*.go cmd/istio-install/*.go | sha256sum | cut -d' ' -f1)-$(go env GOVERSION)
  if [ "${FORCE:-}" = 1 ] || [ "$(cat "$ISTIO_BIN/.stamp" 2>/dev/null)" != "$rel_stamp" ]; then
    mkdir -p "$ISTIO_BIN"
    echo "istio-lab: building Istio $LAB_ISTIO's istiod pilot-agent lab-iptables istio-install into $ISTIO_BIN"
    rel_start=$(date +%s)
    (cd "$ISTIO_MOD" && nice -n 15 go mod download && \
      nice -n 15 go build -ldflags="-s -w" -o "$ISTIO_BIN/" ./cmd/istiod ./cmd/pilot-agent ./cmd/lab-iptables ./cmd/istio-install && \
      go list -m -f '{{.Dir}}' istio.io/istio >"$ISTIO_BIN/istio-module-dir")
    echo "$rel_stamp" >"$ISTIO_BIN/.stamp"
    echo "istio-lab: Istio $LAB_ISTIO built in $(( $(date +%s) - rel_start ))s"
  else
    echo "istio-lab: Istio $LAB_ISTIO's binaries up to date in $ISTIO_BIN"
  fi
fi
stamp=$(cat go.mod go.sum build.sh $(find cmd -name '*.go' | sort) | sha256sum | cut -d' ' -f1)-$(go env GOVERSION)
if [ "${FORCE:-}" != 1 ] && [ -f "$BIN/.stamp" ] && [ "$(cat "$BIN/.stamp")" = "$stamp" ]; then
  echo "istio-lab: binaries up to date in $BIN"
  exit 0
fi
start=$(date +%s)
echo "istio-lab: downloading modules"
# Istio tags its releases without a "v", so go.mod names the release-1.31
# commit by its pseudo-version (the module proxy serves a few such commits
# only: see docs/src/verification/lab-internals.md, A).
nice -n 15 go mod download
echo "istio-lab: building kube kubectl istiod pilot-agent labctl labnet lab-iptables istio-install into $BIN (GOFLAGS=$GOFLAGS)"
# one go build for all four: shared packages are compiled once
nice -n 15 go build -ldflags="-s -w" -o "$BIN/" ./cmd/kube ./cmd/kubectl ./cmd/istiod ./cmd/pilot-agent ./cmd/labctl ./cmd/labnet ./cmd/lab-iptables ./cmd/istio-install
go list -m -f '{{.Dir}}' istio.io/istio >"$BIN/istio-module-dir"
echo "$stamp" >"$BIN/.stamp"
echo "istio-lab: built in $(( $(date +%s) - start ))s"
ls -la "$BIN"
