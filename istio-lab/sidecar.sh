#!/usr/bin/env bash
# Starts one pod's sidecar the way Kubernetes would after Istio's injection:
# Istio's pilot-agent (built from the pinned module) in the pod's own network
# namespace, which writes Envoy's bootstrap from Istio's template, starts the
# real Envoy (the one the release ships), gets its workload certificate from
# istiod's CA with the pod's service-account token and serves it to Envoy by
# SDS, proxies its ADS stream to the cluster's istiod (:15012, TLS, the token
# as its identity), and pulls Wasm modules from the lab's registry. The pod's network namespace is on the lab's pod network
# (podnet.sh), where istiod (127.N.0.1:15012) and the registry (127.60.0.1:5443) are reached
# at an "infra" namespace that forwards to them over unix sockets (labnet).
# Only loopback addresses are used; every pod's 0.0.0.0 listeners stay in its
# own namespace. A sidecar's namespace gets Istio's capture rules first (what
# istio-init does; the proxy runs as root, so root is the excluded user and
# the application runs as nobody). echo-svc pods also get their application
# (echo.py answering "GKE!!!" / "Anthos!!!" on :8080).
#
#   sidecar.sh CLUSTER NAMESPACE POD IP SERVICE_ACCOUNT APP [router]   (after up.sh)
#
# With "router", the pod is an east-west gateway (pilot-agent proxy router,
# as Istio's gateway chart runs it for the cross-network gateway:
# ISTIO_META_ROUTER_MODE=sni-dnat, REQUESTED_NETWORK_VIEW = its network).
set -euo pipefail
LAB="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$LAB/.." && pwd)"
BIN="$ROOT/target/istio-lab/bin"
RUN="$ROOT/target/istio-lab/run"
c=$1 ns=$2 pod=$3 ip=$4 sa=$5 app=$6 kind=${7:-sidecar}
source "$RUN/topology.env"   # NETWORK_<c>, NET_<c>, GCE_ZONE_<c>
net_var="NETWORK_$c"; n_var="NET_$c"; zone_var="GCE_ZONE_$c"
network=${!net_var}; n=${!n_var}; zone=${!zone_var:-}
source "$LAB/release.sh"     # ISTIO_BIN of the run's release (LAB_ISTIO, ENVOY: topology.env)
[ -x "$ENVOY" ] || { echo "no Envoy at $ENVOY: run scripts/setup-envoy $LAB_ENVOY_VERSION" >&2; exit 1; }
ISTIO_DIR="$(cat "$ISTIO_BIN/istio-module-dir")"

d="$RUN/pods/$c-$ns-$pod"
rm -rf "$d"; mkdir -p "$d"/{etc/istio/proxy,etc/istio/pod,etc/istio/config,var/lib/istio/envoy,var/run/secrets/istio,var/run/secrets/tokens}
cp "$ISTIO_DIR/tools/packaging/common/envoy_bootstrap.json" "$d/var/lib/istio/envoy/envoy_bootstrap_tmpl.json"
cp "$RUN/$c/mesh.yaml" "$d/etc/istio/config/mesh"
# downward API files
if [ "$kind" = router ]; then
  printf 'istio="eastwestgateway"\napp="%s"\nservice.istio.io/canonical-name="%s"\nservice.istio.io/canonical-revision="latest"\ntopology.istio.io/network="%s"\n' \
    "$app" "$app" "$network" >"$d/etc/istio/pod/labels"
  extra_env=(ISTIO_META_ROUTER_MODE=sni-dnat ISTIO_META_REQUESTED_NETWORK_VIEW="$network")
else
  printf 'app="%s"\nsecurity.istio.io/tlsMode="istio"\nservice.istio.io/canonical-name="%s"\nservice.istio.io/canonical-revision="latest"\ntopology.istio.io/network="%s"\n' \
    "$app" "$app" "$network" >"$d/etc/istio/pod/labels"
  extra_env=(ISTIO_META_INTERCEPTION_MODE=REDIRECT ISTIO_META_APP_CONTAINERS="$app")
fi
: >"$d/etc/istio/pod/annotations"
# On GKE the pod's resolv.conf (GKE copies the node's search path) names the
# GCE zone; pilot-agent on GCP reads its locality from it. CLOUD_PLATFORM=gcp
# is what its platform detection finds on GCE (the metadata server is not
# reachable here).
gcp_env=()
resolv_mount=:
if [ -n "$zone" ]; then
  printf 'search %s.svc.cluster.local svc.cluster.local cluster.local %s.c.kuchima-demo.internal c.kuchima-demo.internal google.internal\noptions ndots:5\n' \
    "$ns" "$zone" >"$d/etc/resolv.conf"
  gcp_env=(CLOUD_PLATFORM=gcp)
  resolv_mount="mount --bind '$d/etc/resolv.conf' /etc/resolv.conf"
fi
# What the kubelet mounts in an injected pod: the service account's token
# for audience istio-ca, bound to the pod (the injection template's
# istio-token projected volume), and the mesh root from the istio-ca-root-cert
# ConfigMap istiod writes into every namespace (istiod-ca-cert). With them
# pilot-agent asks istiod's CA (:15012) for its workload certificate (a CSR
# authenticated by the token, which istiod checks with a TokenReview) and
# authenticates its xDS stream with the same token; no certificate is mounted.
kc() { "$BIN/kubectl" --kubeconfig "$RUN/$c/kubeconfig" "$@"; }
kc -n "$ns" create token "$sa" --audience istio-ca --duration 24h \
  --bound-object-kind Pod --bound-object-name "$pod" >"$d/var/run/secrets/tokens/istio-token"
for _ in $(seq 1 100); do
  kc -n "$ns" get configmap istio-ca-root-cert -o 'jsonpath={.data.root-cert\.pem}' >"$d/var/run/secrets/istio/root-cert.pem" 2>/dev/null &&
    [ -s "$d/var/run/secrets/istio/root-cert.pem" ] && break
  sleep 0.1
done
[ -s "$d/var/run/secrets/istio/root-cert.pem" ] || { echo "$c: no istio-ca-root-cert ConfigMap in $ns (istiod writes it)" >&2; exit 1; }

# the pod's network namespace, with its IP on the lab's pod network
"$LAB/podnet.sh" add "$c-$pod" "$ip"
pns="hmlab-$c-$pod"
if [ "$kind" = sidecar ]; then
  # what istio-init does in a pod: Istio's own traffic capture rules (REDIRECT
  # mode, all ports), excluding the proxy's user: here root (-u 0), so the
  # applications run as nobody
  ip netns exec "$pns" "$ISTIO_BIN/lab-iptables" -p 15001 -z 15006 -u 0 -g 0 -m REDIRECT \
    -i '*' -x '' -b '*' -d 15090,15021,15020 >"$d/istio-iptables.log" 2>&1
fi

# PROXY_CONFIG as the injector writes it: the mesh's defaultConfig, here with
# the project's stats overlay as rendered (wasmplugin/meshconfig-stats.yaml:
# extraStatTags, proxyStatsMatcher), which an operator installs with Istio.
proxy_config=$(python3 - "$ROOT/wasmplugin/meshconfig-stats.yaml" "$n" "$ENVOY" <<'PY'
import json, sys, yaml
stats = yaml.safe_load(open(sys.argv[1]))["spec"]["meshConfig"]["defaultConfig"]
config = {"discoveryAddress": f"127.{sys.argv[2]}.0.1:15012", "controlPlaneAuthPolicy": "MUTUAL_TLS",
          "binaryPath": sys.argv[3], "configPath": "./etc/istio/proxy", "meshId": "mesh1",
          "concurrency": 1, **stats}
print(json.dumps(config))
PY
)
# xDS over istiod's authenticated port (15012), as in a cluster: the agent
# presents the token and checks istiod's certificate against the mesh root
# for istiod's service name (it dials an address). istiod then knows the
# proxy's identity, which it requires before it sends a WasmPlugin's pull
# secret (pilot/pkg/xds/ecds.go, GeneratePullSecrets: "proxy ... is not
# authorized to receive secret").
xds_env=(ISTIOD_SAN=istiod.istio-system.svc)
# The agent pulls the filter's image from the lab's registry, whose
# certificate a private CA signed: the agent trusts it as a node image that
# carries that CA would (Go reads SSL_CERT_FILE for its roots).
reg_env=()
[ -f "$RUN/registry/ca.pem" ] && reg_env=(SSL_CERT_FILE="$RUN/registry/ca.pem")
cd "$d"
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$d" \
  POD_NAME="$pod" POD_NAMESPACE="$ns" INSTANCE_IP="$ip" HOST_IP="127.$n.0.1" SERVICE_ACCOUNT="$sa" \
  PROXY_CONFIG="$proxy_config" PILOT_CERT_PROVIDER=istiod CA_ADDR="127.$n.0.1:15012" \
  ISTIO_META_CLUSTER_ID="$c" ISTIO_META_NETWORK="$network" ISTIO_META_MESH_ID=mesh1 TRUST_DOMAIN=cluster.local \
  ISTIO_META_WORKLOAD_NAME="$app" ISTIO_META_OWNER="kubernetes://apis/apps/v1/namespaces/$ns/deployments/$app" \
  "${extra_env[@]}" "${gcp_env[@]}" "${reg_env[@]}" "${xds_env[@]}" ISTIO_META_NODE_NAME="$c-node-1" \
  ISTIO_META_POD_PORTS='[]' ISTIO_META_ENABLE_HBONE=false \
  setsid ip netns exec "$pns" unshare --mount --propagation private --kill-child bash -c "
    # the pod's own /var/lib (the agent keeps fetched Wasm modules in /var/lib/istio/data)
    mkdir -p '$d/var/lib/istio/data' && mount --bind '$d/var/lib' /var/lib && $resolv_mount
    exec '$ISTIO_BIN/pilot-agent' proxy $kind --domain $ns.svc.cluster.local --proxyLogLevel=warning \
      --proxyComponentLogLevel=misc:error --log_output_level=default:info --concurrency 1
  " >>"$d/agent.log" 2>&1 &   # append: Envoy opens /dev/stdout (the access log) on its own, with O_APPEND
echo $! >"$d/pid"
case "$c:$app" in   # the application container
  gke:echo-svc) body='"GKE!!!"' ;;
  anthos:echo-svc) body='"Anthos!!!"' ;;
  *) body= ;;
esac
if [ -n "$body" ]; then
  setsid ip netns exec "$pns" setpriv --reuid 65534 --regid 65534 --clear-groups /usr/bin/python3 "$LAB/echo.py" "$body" 8080 "$d/fail-status" >"$d/app.log" 2>&1 &
  echo $! >"$d/app.pid"
fi
echo "$d"
