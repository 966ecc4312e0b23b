#!/usr/bin/env bash
# Starts the seed's two clusters under a real Istio control plane, on loopback
# addresses only: per cluster an etcd + kube-apiserver (cmd/kube) and an
# istiod (pilot-discovery), multi-primary / multi-network with remote secrets,
# the operator's objects applied with kubectl (wasmplugin/overlays/<cluster>
# with kubectl apply -k); then every pod (sleep, two echo-svc, the east-west
# gateway, per cluster) as pilot-agent + real Envoy in its own network
# namespace on a 127.x pod network, with Istio's traffic capture.
#
#   istio-lab/build.sh && istio-lab/up.sh      # state in target/istio-lab/run
#   istio-lab/down.sh                          # stops what up.sh started, by process group
#
# Environment: LAB_ISTIO (the Istio release, default the newest of versions.tsv;
# see release.sh), ENVOY (default: the Envoy that release ships, which
# `scripts/setup-envoy <version>` installs),
# WASM (default: target/wasm32-wasip1/wasm/hybridmesh_filter.wasm), pushed to
# the lab's registry and applied unless LAB_APPLY_PLUGINS=0 (HYBRIDMESH: the
# command line that pushes, default cargo run -p hybridmesh),
# LAB_ISTIOD_ENV (extra NAME=value for both istiods), LAB_PODS=sleep (only
# gke's sleep pod), LAB_NO_ENVOY=1 (control planes only). Needs root.
set -euo pipefail
LAB="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$LAB/.." && pwd)"
OUT="$ROOT/target/istio-lab"
BIN="$OUT/bin"
RUN="$OUT/run"
source "$LAB/release.sh"   # LAB_ISTIO, ISTIO_BIN, ENVOY
[ -x "$BIN/kube" ] || { echo "run istio-lab/build.sh first" >&2; exit 1; }
[ -x "$ISTIO_BIN/istiod" ] || { echo "Istio $LAB_ISTIO is not built: run LAB_ISTIO=$LAB_ISTIO istio-lab/build.sh" >&2; exit 1; }
[ -x "$ENVOY" ] || { echo "no Envoy at $ENVOY: run scripts/setup-envoy $LAB_ENVOY_VERSION (the Envoy Istio $LAB_ISTIO ships)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "up.sh needs root (network namespaces)" >&2; exit 1; }
# Istio's capture rules need iptables in each pod's namespace (Debian's package)
command -v iptables >/dev/null || { apt-get update -qq && apt-get install -y -qq iptables >/dev/null; }
"$LAB/down.sh" >/dev/null 2>&1 || true
rm -rf "$RUN"; mkdir -p "$RUN/logs"
ISTIO_DIR="$(cat "$ISTIO_BIN/istio-module-dir")"

# cluster name, network, 127.N, etcd port, apiserver port, node labels
CLUSTERS=(gke anthos)
declare -A NETWORK=([gke]=kuchima-demo-vpc01 [anthos]=default)
declare -A NET=([gke]=61 [anthos]=62)
declare -A ETCD=([gke]=23791 [anthos]=23793)
declare -A API=([gke]=16443 [anthos]=16444)
declare -A NODE_LABELS=(
  [gke]='    topology.kubernetes.io/region: asia-northeast1
    topology.kubernetes.io/zone: asia-northeast1-a'
  [anthos]='')

start() { # name cmd...   (own process group, so down.sh stops it and its children by that id)
  local name=$1; shift
  setsid "$@" >"$RUN/logs/$name.log" 2>&1 &
  echo $! >"$RUN/$name.pid"
}
kc() { local c=$1; shift; "$BIN/kubectl" --kubeconfig "$RUN/$c/kubeconfig" "$@"; }
wait_file() { for _ in $(seq 1 600); do [ -s "$1" ] && return 0; sleep 0.2; done; echo "timed out waiting for $1" >&2; return 1; }

# GKE's nodes are GCE instances: a pod's resolv.conf names its zone, which
# is where pilot-agent takes the proxy's locality from on GCP (Istio's
# pkg/bootstrap/platform/gcp.go, zoneFromResolvConf). On-prem has none.
declare -A GCE_ZONE=([gke]=asia-northeast1-a [anthos]=)
{
  # the release, its binaries and the Envoy every pod of this run uses
  # (sidecar.sh and crates/lab read them)
  echo "LAB_ISTIO=$LAB_ISTIO"; echo "ISTIO_BIN=$ISTIO_BIN"; echo "ENVOY=$ENVOY"
  for c in "${CLUSTERS[@]}"; do echo "NETWORK_$c=${NETWORK[$c]}"; echo "NET_$c=${NET[$c]}"; echo "GCE_ZONE_$c=${GCE_ZONE[$c]}"; done
} >"$RUN/topology.env"
"$LAB/certs.sh" init "$RUN/ca" "${CLUSTERS[@]}"
t0=$(date +%s.%N)
for c in "${CLUSTERS[@]}"; do
  start "kube-$c" "$BIN/kube" --dir "$RUN/$c" --etcd-port "${ETCD[$c]}" --apiserver-port "${API[$c]}" \
    --service-cidr "127.${NET[$c]}.100.0/24"
done
for c in "${CLUSTERS[@]}"; do wait_file "$RUN/$c/kubeconfig"; done
printf 'apiservers ready in %.1fs\n' "$(echo "$(date +%s.%N) - $t0" | bc)"

pod() { # cluster name ns sa ip labels(yaml flow) containers(yaml)
  local c=$1 name=$2 ns=$3 sa=$4 ip=$5 labels=$6 app=$7
  cat <<EOF
---
apiVersion: v1
kind: Pod
metadata:
  name: $name
  namespace: $ns
  labels: {$labels, security.istio.io/tlsMode: istio, service.istio.io/canonical-name: $app, service.istio.io/canonical-revision: latest, topology.istio.io/network: ${NETWORK[$c]}}
  annotations:
    sidecar.istio.io/status: '{"initContainers":["istio-init"],"containers":["istio-proxy"],"volumes":["istio-envoy","istio-data","istio-podinfo","istio-token","istiod-ca-cert"],"imagePullSecrets":null,"revision":"default"}'
spec:
  nodeName: $c-node-1
  serviceAccountName: $sa
  containers:
EOF
  if [ "$app" = istio-proxy ]; then   # a gateway: the proxy is the pod
    echo "    - {name: istio-proxy, image: registry.invalid/proxyv2:lab, args: [proxy, router]}"
  else
    echo "    - {name: $app, image: registry.invalid/$app:lab}"
    echo "    - {name: istio-proxy, image: registry.invalid/proxyv2:lab, args: [proxy, sidecar]}"
  fi
}
podstatus() { # cluster ns name ip ready(True/False)
  kc "$1" -n "$2" patch pod "$3" --subresource=status --type=merge -p "{\"status\":{\"phase\":\"Running\",\"hostIP\":\"127.${NET[$1]}.0.1\",\"podIP\":\"$4\",\"podIPs\":[{\"ip\":\"$4\"}],\"conditions\":[{\"type\":\"PodScheduled\",\"status\":\"True\"},{\"type\":\"Initialized\",\"status\":\"True\"},{\"type\":\"ContainersReady\",\"status\":\"$5\"},{\"type\":\"Ready\",\"status\":\"$5\"}]}}" >/dev/null
}
slice() { # cluster ns service name port-name port ip:pod:ready ...
  local c=$1 ns=$2 svc=$3 pname=$4 port=$5; shift 5
  cat <<EOF
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: $svc-lab
  namespace: $ns
  labels: {kubernetes.io/service-name: $svc, endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io}
addressType: IPv4
ports: [{name: $pname, port: $port, protocol: TCP}]
endpoints:
EOF
  local e ip p r pns
  for e in "$@"; do   # ip:pod:ready[:the pod's namespace, if not the Service's]
    IFS=: read -r ip p r pns <<<"$e"
    echo "  - {addresses: [$ip], conditions: {ready: $r, serving: $r, terminating: false}, nodeName: $c-node-1, targetRef: {kind: Pod, namespace: ${pns:-$ns}, name: $p}}"
  done
}

for c in "${CLUSTERS[@]}"; do
  d="$RUN/$c"; n=${NET[$c]}
  kc "$c" apply --server-side -f "$ISTIO_DIR/manifests/charts/base/files/crd-all.gen.yaml" >"$d/crds.log"
  # a CRD created a moment ago may have no status yet, which `kubectl wait`
  # reports as an error ("accessor error: <nil>") instead of waiting: retry
  for try in $(seq 1 60); do
    kc "$c" wait --for condition=established --timeout=60s crd --all >/dev/null 2>"$d/crd-wait.log" && break
    [ "$try" = 60 ] && { cat "$d/crd-wait.log" >&2; exit 1; }
    sleep 0.5
  done
  sed -e "s/@CLUSTER@/$c/g; s/@NETWORK@/${NETWORK[$c]}/g; s/@NET@/$n/g" "$LAB/manifests/cluster.yaml.in" |
    awk -v nl="${NODE_LABELS[$c]}" '/^@NODE_LABELS@$/ { if (nl != "") print nl; next } { print }' >"$d/cluster.yaml"
  {
    pod "$c" echo-svc-0 default default "127.$n.1.9" "app: echo-svc, version: v1" echo-svc
    pod "$c" echo-svc-1 default default "127.$n.1.10" "app: echo-svc, version: v1" echo-svc
    pod "$c" sleep-0 sleep sleep "127.$n.1.2" "app: sleep" sleep
    pod "$c" istio-eastwestgateway-0 gateway istio-eastwestgateway "127.$n.2.6" "istio: eastwestgateway, app: istio-eastwestgateway" istio-proxy
  } >"$d/pods.yaml"
  kc "$c" apply -f "$d/cluster.yaml" >"$d/apply.log"
  kc "$c" apply -f "$d/pods.yaml" >>"$d/apply.log"
  podstatus "$c" default echo-svc-0 "127.$n.1.9" True
  podstatus "$c" default echo-svc-1 "127.$n.1.10" True
  podstatus "$c" sleep sleep-0 "127.$n.1.2" True
  podstatus "$c" gateway istio-eastwestgateway-0 "127.$n.2.6" True
  # what a cloud or MetalLB does for a LoadBalancer Service
  kc "$c" -n gateway patch service istio-eastwestgateway --subresource=status --type=merge \
    -p "{\"status\":{\"loadBalancer\":{\"ingress\":[{\"ip\":\"127.$n.2.6\"}]}}}" >/dev/null
  {
    slice "$c" default echo-svc http 8080 "127.$n.1.9:echo-svc-0:true" "127.$n.1.10:echo-svc-1:true"
    slice "$c" sleep sleep http 80 "127.$n.1.2:sleep-0:true"
    slice "$c" sleep httpbin-svc http 8080 "127.$n.1.9:echo-svc-0:true:default" "127.$n.1.10:echo-svc-1:true:default"
  } >"$d/endpointslices.yaml"
  # gateway's own slice: one port each
  for p in status-port:15021 tls:15443 tls-istiod:15012 tls-webhook:15017; do :; done
  cat >>"$d/endpointslices.yaml" <<EOF
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: istio-eastwestgateway-lab
  namespace: gateway
  labels: {kubernetes.io/service-name: istio-eastwestgateway, endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io}
addressType: IPv4
ports: [{name: status-port, port: 15021, protocol: TCP}, {name: tls, port: 15443, protocol: TCP}, {name: tls-istiod, port: 15012, protocol: TCP}, {name: tls-webhook, port: 15017, protocol: TCP}]
endpoints:
  - {addresses: [127.$n.2.6], conditions: {ready: true, serving: true, terminating: false}, nodeName: $c-node-1, targetRef: {kind: Pod, namespace: gateway, name: istio-eastwestgateway-0}}
EOF
  "$BIN/labctl" put-endpointslices --etcd "http://127.0.0.1:${ETCD[$c]}" "$d/endpointslices.yaml" 2>>"$d/apply.log"
done

# remote secrets (what `istioctl create-remote-secret` makes), each cluster's in the other
for c in "${CLUSTERS[@]}"; do
  for o in "${CLUSTERS[@]}"; do
    [ "$o" = "$c" ] && continue
    sed "s/name: lab\$/name: $o/; s/cluster: lab,/cluster: $o,/; s/current-context: lab/current-context: $o/; s/- name: lab$/- name: $o/" "$RUN/$o/kubeconfig" >"$RUN/$c/remote-$o.kubeconfig"
    kc "$c" -n istio-system create secret generic "istio-remote-secret-$o" --from-file="$o=$RUN/$c/remote-$o.kubeconfig" \
      --dry-run=client -o yaml |
      kc "$c" label --local -f - istio/multiCluster=true -o yaml |
      kc "$c" annotate --local -f - networking.istio.io/cluster="$o" -o yaml |
      kc "$c" apply -f - >>"$RUN/$c/apply.log"
  done
done

# plugged-in CA certificates: one root for the mesh, an intermediate per cluster
for c in "${CLUSTERS[@]}"; do
  kc "$c" -n istio-system create secret generic cacerts --from-file="$RUN/ca/$c/ca-cert.pem" \
    --from-file="$RUN/ca/$c/ca-key.pem" --from-file="$RUN/ca/$c/root-cert.pem" --from-file="$RUN/ca/$c/cert-chain.pem" >>"$RUN/$c/apply.log"
done

# mesh config: the install's meshConfig plus the project's meshconfig-stats overlay
for c in "${CLUSTERS[@]}"; do
  d="$RUN/$c"; n=${NET[$c]}
  cat >"$d/mesh.yaml" <<EOF
rootNamespace: istio-system
trustDomain: cluster.local
defaultConfig:
  discoveryAddress: 127.$n.0.1:15012
  meshId: mesh1
  extraStatTags: [decision, cross_network, direction, problem]
  proxyStatsMatcher:
    inclusionRegexps: [".*hybridmesh_.*"]
EOF
  # the project's access log provider, as shipped (wasmplugin/meshconfig-access-log.yaml)
  python3 - "$ROOT/wasmplugin/meshconfig-access-log.yaml" >>"$d/mesh.yaml" <<'PY'
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
print(yaml.safe_dump({"extensionProviders": doc["spec"]["meshConfig"]["extensionProviders"]}, sort_keys=False), end="")
PY
  echo "networks: {}" >"$d/meshNetworks.yaml"
  # shellcheck disable=SC2086  # LAB_ISTIOD_ENV: extra NAME=value words for istiod, e.g. PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS=false
  # ROOT_CA_DIR: the plugged-in CA files, where a cluster mounts the cacerts
  # Secret (/etc/cacerts); without them istiod makes a self-signed CA.
  start "istiod-$c" env ${LAB_ISTIOD_ENV:-} ROOT_CA_DIR="$RUN/ca/$c" POD_NAMESPACE=istio-system POD_NAME="istiod-$c" REVISION=default \
    PILOT_CERT_PROVIDER=istiod ISTIOD_CUSTOM_HOST="istiod.istio-system.svc" \
    PILOT_ENABLE_METADATA_EXCHANGE="${LAB_ISTIO_PROXY_EXTENSIONS:-false}" PILOT_ENABLE_ALPN_FILTER="${LAB_ISTIO_PROXY_EXTENSIONS:-false}" \
    "$ISTIO_BIN/istiod" discovery --kubeconfig "$d/kubeconfig" --clusterID "$c" \
    --meshConfig "$d/mesh.yaml" --networksConfig "$d/meshNetworks.yaml" \
    --grpcAddr "127.$n.0.1:15010" --httpAddr "127.$n.0.1:8080" --monitoringAddr "127.$n.0.1:15014" \
    --httpsAddr "" --secureGRPCAddr "127.$n.0.1:15012" --log_output_level "default:info"
done
for c in "${CLUSTERS[@]}"; do
  n=${NET[$c]}
  for _ in $(seq 1 300); do curl -sf "http://127.$n.0.1:8080/ready" >/dev/null 2>&1 && break; sleep 0.2; done
  curl -sf "http://127.$n.0.1:8080/ready" >/dev/null || { echo "istiod-$c not ready; see $RUN/logs/istiod-$c.log" >&2; exit 1; }
done
printf 'istiods ready in %.1fs\n' "$(echo "$(date +%s.%N) - $t0" | bc)"
# istiods and the registry as pods see them: an "infra" namespace on the
# pod network holding 127.N.0.1 (each cluster's istiod) and 127.60.0.1 (the
# registry), forwarding over unix sockets to the real ones on the host.
"$LAB/podnet.sh" add infra 127.60.0.1 $(for c in "${CLUSTERS[@]}"; do echo "127.${NET[$c]}.0.1"; done)
for c in "${CLUSTERS[@]}"; do
  # 15012: xDS (and the CA) over mTLS, what the sidecars use; 15010: plaintext, for by-hand checks
  for port in 15010 15012; do
    start "xds-host-$c-$port" "$BIN/labnet" forward "unix:$RUN/xds-$c-$port.sock" "tcp:127.${NET[$c]}.0.1:$port"
    start "xds-infra-$c-$port" ip netns exec hmlab-infra "$BIN/labnet" forward "tcp:127.${NET[$c]}.0.1:$port" "unix:$RUN/xds-$c-$port.sock"
  done
done
# The filter's delivery, as in a cluster: a private OCI registry (registry.sh:
# the CNCF registry, TLS, htpasswd) at 127.60.0.1:5443 in every pod's
# namespace, and in each cluster the pull secret the WasmPlugins name
# (imagePullSecret: a kubernetes.io/dockerconfigjson Secret in the plugins'
# namespace; istiod reads it in the proxy's own cluster, so every cluster
# needs its own). Each cluster's overlay is wasmplugin/overlays/<cluster> as
# rendered, with one patch: the url's registry host is the lab's.
"$LAB/registry.sh" up "$RUN"
start registry-host "$BIN/labnet" forward "unix:$RUN/registry.sock" tcp:127.60.0.1:5443
start registry-infra ip netns exec hmlab-infra "$BIN/labnet" forward tcp:127.60.0.1:5443 "unix:$RUN/registry.sock"
for c in "${CLUSTERS[@]}"; do
  kc "$c" -n istio-system create secret docker-registry hybridmesh-pull --docker-server=127.60.0.1:5443 \
    --docker-username="$(cat "$RUN/registry/user")" --docker-password="$(cat "$RUN/registry/password")" | sed "s/^/  $c: /"
  rendered=$(sed -n 's/^ *url: oci:\/\/\([^/]*\)\/\(.*\)$/\2/p' "$ROOT/wasmplugin/overlays/$c/wasmplugins.yaml" | head -n1)
  [ -n "$rendered" ] || { echo "wasmplugin/overlays/$c renders no oci:// url" >&2; exit 1; }
  echo "oci://127.60.0.1:5443/$rendered" >"$RUN/image-url"
  o="$RUN/$c/overlay"; mkdir -p "$o"
  cat >"$o/kustomization.yaml" <<EOF2
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [$(realpath --relative-to="$o" "$ROOT/wasmplugin/overlays/$c")]
patches:
  - target: {kind: WasmPlugin}
    patch: |-
      - {op: replace, path: /spec/url, value: "oci://127.60.0.1:5443/$rendered"}
EOF2
  # the Telemetry resource that turns the project's access log on, as shipped
  kc "$c" apply -f "$ROOT/wasmplugin/telemetry-access-log.yaml" | sed "s/^/  $c: /"
done
# By hand (LAB_APPLY_PLUGINS=1, the default): push the filter's image with
# `hybridmesh package --push` as an operator does, then apply the overlays
# before the pods start. crates/lab (LAB_APPLY_PLUGINS=0) pushes and applies
# them itself once the pods run.
WASM="${WASM:-$ROOT/target/wasm32-wasip1/wasm/hybridmesh_filter.wasm}"
if [ "${LAB_APPLY_PLUGINS:-1}" = 1 ] && [ -f "$WASM" ]; then
  # shellcheck disable=SC2086  # HYBRIDMESH: a command line, e.g. "cargo run -q -p hybridmesh --"
  DOCKER_CONFIG="$RUN/registry/docker" ${HYBRIDMESH:-cargo run --quiet --manifest-path "$ROOT/Cargo.toml" -p hybridmesh --} \
    package --wasm "$WASM" --push "$(cat "$RUN/image-url")" --registry-ca "$RUN/registry/ca.pem" --output json >"$RUN/pushed.json"
  pushed=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pushed"]["sha256"])' "$RUN/pushed.json")
  pinned=$(sed -n 's/^ *sha256: \([0-9a-f]*\)$/\1/p' "$ROOT/wasmplugin/overlays/gke/wasmplugins.yaml" | head -n1)
  if [ "$pushed" != "$pinned" ]; then
    echo "this .wasm is not the release wasmplugin/ pins (image sha256 $pushed, pinned $pinned): the overlays pin the pushed one (scripts/release makes them agree)"
    for c in "${CLUSTERS[@]}"; do
      printf '      - {op: replace, path: /spec/sha256, value: "%s"}\n' "$pushed" >>"$RUN/$c/overlay/kustomization.yaml"
    done
  fi
  for c in "${CLUSTERS[@]}"; do kc "$c" apply -k "$RUN/$c/overlay" | sed "s/^/  $c: /"; done
elif [ "${LAB_APPLY_PLUGINS:-1}" = 1 ]; then
  echo "no $WASM: WasmPlugins not applied (scripts/build-wasm)"
fi

echo "run dir: $RUN"
# Every pod: its own network namespace on the lab's pod network, Istio's
# capture rules, pilot-agent + Envoy, and the application (echo.py for echo-svc).
# LAB_PODS=sleep starts only gke's sleep pod; LAB_NO_ENVOY=1 none.
if [ "${LAB_NO_ENVOY:-}" != 1 ]; then
  for c in "${CLUSTERS[@]}"; do
    n=${NET[$c]}
    [ "${LAB_PODS:-all}" = sleep ] && [ "$c" != gke ] && continue
    "$LAB/sidecar.sh" "$c" sleep sleep-0 "127.$n.1.2" sleep sleep >/dev/null
    [ "${LAB_PODS:-all}" = sleep ] && continue
    "$LAB/sidecar.sh" "$c" default echo-svc-0 "127.$n.1.9" default echo-svc >/dev/null
    "$LAB/sidecar.sh" "$c" default echo-svc-1 "127.$n.1.10" default echo-svc >/dev/null
    "$LAB/sidecar.sh" "$c" gateway istio-eastwestgateway-0 "127.$n.2.6" istio-eastwestgateway istio-eastwestgateway router >/dev/null
  done
  echo "pods: $(ls "$RUN/pods" | tr '\n' ' ')"
  echo "admin of a pod's Envoy: nsenter -t \$(pgrep -g \$(cat $RUN/pods/<pod>/pid) -x envoy) -n curl 127.0.0.1:15000/config_dump"
fi
