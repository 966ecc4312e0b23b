#!/usr/bin/env bash
# Starts the seed's two clusters under a real Istio control plane, on loopback
# addresses only: per cluster an etcd + kube-apiserver (cmd/kube) and an
# istiod (pilot-discovery), multi-primary / multi-network with remote secrets;
# Istio's install rendered by Istio's operator code (cmd/istio-install, from
# manifests/istio-install.yaml.in and the project's install-time overlays;
# the seed's east-west gateway from manifests/eastwest-gateway.yaml.in), the
# operator's objects applied with kubectl (wasmplugin/overlays/<cluster> with
# kubectl apply -k); then every pod (sleep, two echo-svc, the east-west
# gateway, per cluster) created from its Deployment through the API, where
# istiod's webhook injects it, and started from its injected spec
# (sidecar.sh): pilot-agent + real Envoy in its own network namespace on a
# 127.x pod network, with Istio's traffic capture.
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
# LAB_ISTIOD_ENV (extra NAME=value for both istiods), LAB_CONCURRENCY (each
# sidecar's worker threads, default 1; Istio's default is 2), LAB_PODS=sleep (only
# gke's sleep pod), LAB_NO_ENVOY=1 (control planes only). Needs root.
set -euo pipefail
LAB="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$LAB/.." && pwd)"
OUT="$ROOT/target/istio-lab"
BIN="$OUT/bin"
RUN="$OUT/run"
source "$LAB/release.sh"   # LAB_ISTIO, ISTIO_BIN, ENVOY
[ -x "$BIN/kube" ] || { echo "run istio-lab/build.sh first" >&2; exit 1; }
[ -x "$BIN/prometheus" ] || { echo "run istio-lab/build.sh first (it builds Prometheus)" >&2; exit 1; }
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
  for c in "${CLUSTERS[@]}"; do echo "NET_$c=${NET[$c]}"; echo "GCE_ZONE_$c=${GCE_ZONE[$c]}"; done
} >"$RUN/topology.env"
"$LAB/certs.sh" init "$RUN/ca" "${CLUSTERS[@]}"
t0=$(date +%s.%N)
for c in "${CLUSTERS[@]}"; do
  start "kube-$c" "$BIN/kube" --dir "$RUN/$c" --etcd-port "${ETCD[$c]}" --apiserver-port "${API[$c]}" \
    --service-cidr "127.${NET[$c]}.100.0/24"
done
for c in "${CLUSTERS[@]}"; do wait_file "$RUN/$c/kubeconfig"; done
printf 'apiservers ready in %.1fs\n' "$(echo "$(date +%s.%N) - $t0" | bc)"

# Selects objects of a YAML stream by kind or kind/name (include or exclude).
objects() { # file include|exclude Kind[/name]...
  python3 - "$@" <<'PY'
import sys, yaml
path, mode, *sel = sys.argv[1:]
docs = [o for o in yaml.safe_load_all(open(path)) if o]
hit = lambda o: o["kind"] in sel or f'{o["kind"]}/{o["metadata"]["name"]}' in sel
print(yaml.safe_dump_all([o for o in docs if hit(o) == (mode == "include")], sort_keys=False), end="")
PY
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

declare -A ECHO_TEXT=([gke]='"GKE!!!"' [anthos]='"Anthos!!!"')
for c in "${CLUSTERS[@]}"; do
  d="$RUN/$c"; n=${NET[$c]}
  mkdir -p "$d/istiod"
  # Istio's install as `istioctl install -f` renders it (the release's charts),
  # with the project's install-time overlays as shipped; the seed's east-west
  # gateway likewise
  sed -e "s/@CLUSTER@/$c/g; s/@NETWORK@/${NETWORK[$c]}/g; s/@CONCURRENCY@/${LAB_CONCURRENCY:-1}/g" "$LAB/manifests/istio-install.yaml.in" >"$d/istio-install.yaml"
  sed -e "s/@NETWORK@/${NETWORK[$c]}/g" "$LAB/manifests/eastwest-gateway.yaml.in" >"$d/eastwest-gateway.yaml"
  "$ISTIO_BIN/istio-install" -f "$d/istio-install.yaml" -f "$ROOT/wasmplugin/meshconfig-stats.yaml" \
    -f "$ROOT/wasmplugin/meshconfig-access-log.yaml" >"$d/istio-rendered.yaml"
  "$ISTIO_BIN/istio-install" -f "$d/eastwest-gateway.yaml" >"$d/eastwest-rendered.yaml"
  sed -e "s/@CLUSTER@/$c/g; s/@NETWORK@/${NETWORK[$c]}/g; s/@NET@/$n/g; s/@ECHO_TEXT@/${ECHO_TEXT[$c]}/g" "$LAB/manifests/cluster.yaml.in" |
    awk -v nl="${NODE_LABELS[$c]}" '/^@NODE_LABELS@$/ { if (nl != "") print nl; next } { print }' >"$d/cluster.yaml"
  objects "$d/cluster.yaml" include Namespace | kc "$c" apply --server-side -f - >"$d/apply.log"
  # everything but istiod's Deployment (istiod runs on the host, below) and
  # what scales or guards pods no controller makes here
  objects "$d/istio-rendered.yaml" exclude Deployment/istiod HorizontalPodAutoscaler PodDisruptionBudget |
    kc "$c" apply --server-side -f - >>"$d/apply.log"
  # a CRD created a moment ago may have no status yet, which `kubectl wait`
  # reports as an error ("accessor error: <nil>") instead of waiting: retry
  for try in $(seq 1 60); do
    kc "$c" wait --for condition=established --timeout=60s crd --all >/dev/null 2>"$d/crd-wait.log" && break
    [ "$try" = 60 ] && { cat "$d/crd-wait.log" >&2; exit 1; }
    sleep 0.5
  done
  kc "$c" apply --server-side -f "$d/cluster.yaml" >>"$d/apply.log"
  # what kube-controller-manager's root-ca-cert-publisher puts in every
  # namespace (every pod's kube-api-access volume mounts it)
  for ns in $(kc "$c" get namespaces -o 'jsonpath={.items[*].metadata.name}'); do
    kc "$c" -n "$ns" create configmap kube-root-ca.crt --from-file=ca.crt="$d/certs/apiserver.crt" >>"$d/apply.log"
  done
  objects "$d/eastwest-rendered.yaml" exclude HorizontalPodAutoscaler PodDisruptionBudget | kc "$c" apply --server-side -f - >>"$d/apply.log"
  # what a cloud or MetalLB does for a LoadBalancer Service
  kc "$c" -n gateway patch service istio-eastwestgateway --subresource=status --type=merge \
    -p "{\"status\":{\"loadBalancer\":{\"ingress\":[{\"ip\":\"127.$n.2.6\"}]}}}" >/dev/null
  # istiod's endpoint (the EndpointSlice controller's part): the apiserver
  # reaches the injection and validation webhooks through it
  cat >"$d/istiod-endpointslice.yaml" <<EOF
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: istiod-lab
  namespace: istio-system
  labels: {kubernetes.io/service-name: istiod, endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io}
addressType: IPv4
ports: [{name: grpc-xds, port: 15010, protocol: TCP}, {name: https-dns, port: 15012, protocol: TCP}, {name: https-webhook, port: 15017, protocol: TCP}, {name: http-monitoring, port: 15014, protocol: TCP}]
endpoints:
  - {addresses: [127.$n.0.1], conditions: {ready: true, serving: true, terminating: false}, nodeName: $c-node-1}
EOF
  "$BIN/labctl" put-endpointslices --etcd "http://127.0.0.1:${ETCD[$c]}" "$d/istiod-endpointslice.yaml" 2>>"$d/apply.log"
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

# istiod, one per cluster, on the host. Its working directory is its own
# (RUN/<cluster>/istiod): with no ./etc/istio/config/mesh there, it reads the
# mesh config from the install's `istio` ConfigMap (key mesh, meshNetworks),
# as in a cluster, and with no ./var/lib/istio/inject the injection template
# and values from the istio-sidecar-injector ConfigMap. --httpsAddr serves the
# injection and validation webhooks with its own DNS certificate; istiod
# patches the webhooks' caBundle itself.
for c in "${CLUSTERS[@]}"; do
  d="$RUN/$c"; n=${NET[$c]}
  # shellcheck disable=SC2086  # LAB_ISTIOD_ENV: extra NAME=value words for istiod, e.g. PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS=false
  # ROOT_CA_DIR: the plugged-in CA files, where a cluster mounts the cacerts
  # Secret (/etc/cacerts); without them istiod makes a self-signed CA.
  (cd "$d/istiod" && start "istiod-$c" env ${LAB_ISTIOD_ENV:-} ROOT_CA_DIR="$RUN/ca/$c" POD_NAMESPACE=istio-system POD_NAME="istiod-$c" REVISION=default \
    PILOT_CERT_PROVIDER=istiod ISTIOD_CUSTOM_HOST="istiod.istio-system.svc" \
    PILOT_ENABLE_METADATA_EXCHANGE="${LAB_ISTIO_PROXY_EXTENSIONS:-false}" PILOT_ENABLE_ALPN_FILTER="${LAB_ISTIO_PROXY_EXTENSIONS:-false}" \
    "$ISTIO_BIN/istiod" discovery --kubeconfig "$d/kubeconfig" --clusterID "$c" \
    --grpcAddr "127.$n.0.1:15010" --httpAddr "127.$n.0.1:8080" --monitoringAddr "127.$n.0.1:15014" \
    --httpsAddr "127.$n.0.1:15017" --secureGRPCAddr "127.$n.0.1:15012" --log_output_level "default:info")
done
for c in "${CLUSTERS[@]}"; do
  n=${NET[$c]}
  for _ in $(seq 1 300); do curl -sf "http://127.$n.0.1:8080/ready" >/dev/null 2>&1 && break; sleep 0.2; done
  curl -sf "http://127.$n.0.1:8080/ready" >/dev/null || { echo "istiod-$c not ready; see $RUN/logs/istiod-$c.log" >&2; exit 1; }
done
printf 'istiods ready in %.1fs\n' "$(echo "$(date +%s.%N) - $t0" | bc)"
# The pods, as the Deployment and ReplicaSet controllers create them
# (replicaset.py), through the API: once istiod has patched its CA into the
# sidecar-injector webhook, whose failurePolicy is Fail, each pod is created
# injected. Then what the scheduler, the kubelet and the EndpointSlice
# controller do: node, status (IP, Ready), EndpointSlices.
for c in "${CLUSTERS[@]}"; do
  d="$RUN/$c"; n=${NET[$c]}
  for _ in $(seq 1 300); do
    [ -n "$(kc "$c" get mutatingwebhookconfiguration istio-sidecar-injector -o 'jsonpath={.webhooks[0].clientConfig.caBundle}')" ] && break
    sleep 0.2
  done
  [ -n "$(kc "$c" get mutatingwebhookconfiguration istio-sidecar-injector -o 'jsonpath={.webhooks[0].clientConfig.caBundle}')" ] ||
    { echo "istiod-$c did not patch the sidecar-injector webhook's caBundle; see $RUN/logs/istiod-$c.log" >&2; exit 1; }
  {
    python3 "$LAB/replicaset.py" "$BIN/kubectl" "$d/kubeconfig" default echo-svc "$c-node-1" echo-svc-0 echo-svc-1
    python3 "$LAB/replicaset.py" "$BIN/kubectl" "$d/kubeconfig" sleep sleep "$c-node-1" sleep-0
    python3 "$LAB/replicaset.py" "$BIN/kubectl" "$d/kubeconfig" gateway istio-eastwestgateway "$c-node-1" istio-eastwestgateway-0
  } >>"$d/apply.log"
  podstatus "$c" default echo-svc-0 "127.$n.1.9" True
  podstatus "$c" default echo-svc-1 "127.$n.1.10" True
  podstatus "$c" sleep sleep-0 "127.$n.1.2" True
  podstatus "$c" gateway istio-eastwestgateway-0 "127.$n.2.6" True
  {
    slice "$c" default echo-svc http 8080 "127.$n.1.9:echo-svc-0:true" "127.$n.1.10:echo-svc-1:true"
    slice "$c" sleep sleep http 80 "127.$n.1.2:sleep-0:true"
    slice "$c" sleep httpbin-svc http 8080 "127.$n.1.9:echo-svc-0:true:default" "127.$n.1.10:echo-svc-1:true:default"
  } >"$d/endpointslices.yaml"
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
printf 'pods created and injected in %.1fs\n' "$(echo "$(date +%s.%N) - $t0" | bc)"
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
# Prometheus as a cluster's monitoring runs it: in the pod network (the infra
# namespace, 127.60.0.1:9090; on the host too, through a unix socket), finding
# the pods through each cluster's apiserver (kubernetes_sd, role pod) and
# scraping those whose annotations ask for it, where they say: the
# prometheus.io/scrape, /port, /path annotations Istio's injector writes
# (pilot-agent's merged :15020/stats/prometheus, enablePrometheusMerge). The
# relabelling is Prometheus' own example for pod annotations, plus a cluster
# label. Prometheus is built by build.sh (v0.316.0, Prometheus 3.x).
mkdir -p "$RUN/prometheus"
{
  echo "global: {scrape_interval: 2s, scrape_timeout: 2s}"
  echo "scrape_configs:"
  for c in "${CLUSTERS[@]}"; do
    n=${NET[$c]}
    # the apiserver, as pods reach it (its certificate names kubernetes.default.svc)
    start "api-host-$c" "$BIN/labnet" forward "unix:$RUN/api-$c.sock" "tcp:127.0.0.1:${API[$c]}"
    start "api-infra-$c" ip netns exec hmlab-infra "$BIN/labnet" forward "tcp:127.$n.0.1:6443" "unix:$RUN/api-$c.sock"
    cat <<EOF
  - job_name: kubernetes-pods-$c
    kubernetes_sd_configs:
      - role: pod
        api_server: https://127.$n.0.1:6443
        authorization: {credentials: lab-admin-token}
        tls_config: {ca_file: $RUN/$c/certs/apiserver.crt, server_name: kubernetes.default.svc}
    relabel_configs:
      - {source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape], action: keep, regex: "true"}
      - {source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path], action: replace, target_label: __metrics_path__, regex: (.+)}
      - {source_labels: [__address__, __meta_kubernetes_pod_annotation_prometheus_io_port], action: replace, regex: '([^:]+)(?::\d+)?;(\d+)', replacement: '\$1:\$2', target_label: __address__}
      - {action: labelmap, regex: __meta_kubernetes_pod_label_(.+)}
      - {source_labels: [__meta_kubernetes_namespace], target_label: namespace}
      - {source_labels: [__meta_kubernetes_pod_name], target_label: pod}
      - {target_label: cluster, replacement: $c}
EOF
  done
} >"$RUN/prometheus/prometheus.yml"
start prometheus ip netns exec hmlab-infra "$BIN/prometheus" --config.file="$RUN/prometheus/prometheus.yml" \
  --storage.tsdb.path="$RUN/prometheus/data" --web.listen-address=127.60.0.1:9090
start prometheus-infra ip netns exec hmlab-infra "$BIN/labnet" forward "unix:$RUN/prometheus.sock" tcp:127.60.0.1:9090
start prometheus-host "$BIN/labnet" forward tcp:127.60.0.1:9090 "unix:$RUN/prometheus.sock"
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
    [ "${LAB_PODS:-all}" = sleep ] && [ "$c" != gke ] && continue
    "$LAB/sidecar.sh" "$c" sleep sleep-0 >/dev/null
    [ "${LAB_PODS:-all}" = sleep ] && continue
    "$LAB/sidecar.sh" "$c" default echo-svc-0 >/dev/null
    "$LAB/sidecar.sh" "$c" default echo-svc-1 >/dev/null
    "$LAB/sidecar.sh" "$c" gateway istio-eastwestgateway-0 >/dev/null
  done
  echo "pods: $(ls "$RUN/pods" | tr '\n' ' ')"
  echo "admin of a pod's Envoy: nsenter -t \$(pgrep -g \$(cat $RUN/pods/<pod>/pid) -x envoy) -n curl 127.0.0.1:15000/config_dump"
fi
