# Sourced by build.sh, up.sh and sidecar.sh (with LAB and ROOT set): which
# Istio release the lab runs and where its binaries are.
#
#   LAB_ISTIO   a release versions.tsv lists (default: its first istio row, the
#               newest). The shared binaries (kube, kubectl, labctl, labnet,
#               registry) are in target/istio-lab/bin; the release's own
#               (istiod, pilot-agent, lab-iptables, istio-install) there too for the release
#               istio-lab/go.mod pins, else in target/istio-lab/<release>/bin,
#               built from istio-lab/releases/<release>/go.mod.
#   ENVOY       default: the Envoy that release ships (versions.tsv), which
#               `scripts/setup-envoy <version>` installs.
# Sets LAB_ISTIO, LAB_ENVOY_VERSION, ISTIO_MOD (the go.mod's folder),
# ISTIO_BIN and ENVOY.
LAB_ISTIO=${LAB_ISTIO:-$(awk -F'\t' '$1 == "istio" { print $2; exit }' "$ROOT/versions.tsv")}
LAB_ENVOY_VERSION=$(awk -F'\t' -v v="$LAB_ISTIO" '$1 == "istio" && $2 == v { print $3 }' "$ROOT/versions.tsv")
if [ -z "$LAB_ENVOY_VERSION" ]; then
  echo "LAB_ISTIO=$LAB_ISTIO: not an Istio release of versions.tsv ($(awk -F'\t' '$1 == "istio" { printf "%s ", $2 }' "$ROOT/versions.tsv"))" >&2
  exit 2
fi
if [ -f "$LAB/releases/$LAB_ISTIO/go.mod" ]; then
  ISTIO_MOD="$LAB/releases/$LAB_ISTIO"
  ISTIO_BIN="$ROOT/target/istio-lab/$LAB_ISTIO/bin"
else
  ISTIO_MOD="$LAB"
  ISTIO_BIN="$ROOT/target/istio-lab/bin"
fi
ENVOY=${ENVOY:-$("$ROOT/scripts/setup-envoy" --path "$LAB_ENVOY_VERSION")}
