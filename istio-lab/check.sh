#!/usr/bin/env bash
# The prototype's end-to-end check: builds (once), starts both clusters'
# control planes and every pod (up.sh), shows from gke's sleep sidecar's
# config_dump what istiod pushed, sends requests from both sleep pods
# (including the seed's failover through the east-west gateway), drains pods
# and watches istiod push the new endpoints, applies the seed's
# DestinationRule, shows the anthos gateway's config, and stops everything.
#
#   istio-lab/check.sh              # Istio 1.31 defaults (unhealthy endpoints sent)
#   LAB_ISTIOD_ENV=PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS=false istio-lab/check.sh
set -euo pipefail
LAB="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$LAB/.." && pwd)"
RUN="$ROOT/target/istio-lab/run"
BIN="$ROOT/target/istio-lab/bin"
"$LAB/build.sh"
trap '"$LAB/down.sh"' EXIT
"$LAB/up.sh" | grep -v last-applied
cd "$RUN"
d=pods/gke-sleep-sleep-0
envoy_pid() { for _ in $(seq 1 100); do p=$(pgrep -g "$(cat "$1/pid")" -x envoy || true); [ -n "$p" ] && { echo "$p"; return; }; sleep 0.1; done; echo "no envoy in $1" >&2; exit 1; }
admin() { nsenter -t "$(envoy_pid "$1")" -n curl -s "127.0.0.1:15000/$2"; }
# wait for the listeners (LDS comes after CDS/EDS) and the Wasm filters (ECDS)
for _ in $(seq 1 100); do admin $d config_dump | grep -q hybridmesh-client && break; sleep 0.2; done

echo; echo "=== what gke's istiod pushed to sleep-0's sidecar (real Envoy $(admin $d server_info | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"].split("/")[1])'))"
admin $d "config_dump?include_eds" >"$RUN/gke-sleep-config_dump.json"
python3 "$LAB/show.py" "$RUN/gke-sleep-config_dump.json"
echo "Wasm VMs: $(admin $d stats | grep -E '^wasm.envoy.wasm.runtime.v8.active|^wasmcustom.hybridmesh_vm_memory_bytes' | tr '\n' ' ')"

weights() { admin $d clusters | grep -F 'outbound|80||echo-svc.default.svc.cluster.local::' | grep -E '::(weight|health_flags)::' | sed 's/^outbound|80||echo-svc.default.svc.cluster.local:://' | paste -sd' ' | sed 's/::health_flags::/ /g; s/::weight::/ w=/g'; }
drain() { # cluster ips...   (the kubelet marks the pods not ready; the EndpointSlice controller's part is labctl's)
  local c=$1; shift
  cp "$c/endpointslices.yaml" "$c/endpointslices-now.yaml"
  for ip in "$@"; do sed -i "s/\[$ip\], conditions: {ready: true, serving: true/[$ip], conditions: {ready: false, serving: false/" "$c/endpointslices-now.yaml"; done
  local port=23791; [ "$c" = anthos ] && port=23793
  "$BIN/labctl" put-endpointslices --etcd "http://127.0.0.1:$port" "$c/endpointslices-now.yaml" 2>/dev/null
  local p ready
  for p in echo-svc-0:1.9 echo-svc-1:1.10; do
    ready=True; for ip in "$@"; do [ "$ip" = "127.$([ "$c" = gke ] && echo 61 || echo 62).${p#*:}" ] && ready=False; done
    "$BIN/kubectl" --kubeconfig "$c/kubeconfig" -n default patch pod "${p%%:*}" --subresource=status --type=merge \
      -p "{\"status\":{\"conditions\":[{\"type\":\"Ready\",\"status\":\"$ready\"},{\"type\":\"ContainersReady\",\"status\":\"$ready\"}]}}" >/dev/null
  done
}
# one request from a cluster's sleep pod, as its application (not root: the proxy's user is excluded from capture)
req() { # cluster
  local vip; vip=$("$BIN/kubectl" --kubeconfig "$1/kubeconfig" -n default get svc echo-svc -o jsonpath='{.spec.clusterIP}')
  local out
  out=$(ip netns exec "hmlab-$1-sleep-0" setpriv --reuid 65534 --regid 65534 --clear-groups \
    curl -s -i -m 5 --resolve "echo-svc.default:80:$vip" http://echo-svc.default/ | tr -d '\r' || true)
  printf '    %-20s status=%s %s\n' "$(printf '%s\n' "$out" | sed -n '/^$/,$p' | tail -n +2)" \
    "$(printf '%s\n' "$out" | head -1 | cut -d' ' -f2)" "$(printf '%s\n' "$out" | grep -i '^x-hybridmesh-served-by' | cut -d' ' -f2)"
}

echo; echo "=== traffic: curl echo-svc.default from each cluster's sleep pod (app -> iptables -> Envoy -> mTLS -> Envoy -> app)"
echo "  gke:";    for _ in 1 2 3; do req gke; done
echo "  anthos:"; for _ in 1 2 3; do req anthos; done
echo "  anthos's two echo pods drained (not Ready; istiod pushes):"
drain anthos 127.62.1.9 127.62.1.10; sleep 1.5
for _ in 1 2 3 4; do req anthos; done
echo "  via gke's east-west gateway: $(admin pods/gke-gateway-istio-eastwestgateway-0 clusters | grep -E '^outbound_\.80_\._\.echo-svc.*cx_total' | sed 's/^outbound_.80_._.echo-svc.default.svc.cluster.local:://' | paste -sd' ')"
drain anthos; drain gke; sleep 1.5
echo; echo "=== drain: istiod pushes new endpoints (outbound|80||echo-svc at gke's sidecar)"
echo "  before:                     $(weights)"
t0=$(date +%s.%N); before=$(weights)
drain anthos 127.62.1.9
for _ in $(seq 1 150); do [ "$(weights)" != "$before" ] && break; sleep 0.02; done
printf '  anthos echo-svc-0 drained:  %s   (%.2fs)\n' "$(weights)" "$(echo "$(date +%s.%N) - $t0" | bc)"
sleep 1
drain anthos 127.62.1.9 127.62.1.10; drain gke 127.61.1.9; sleep 1.5
echo "  + anthos echo-svc-1, gke echo-svc-0: $(weights)"
drain anthos; drain gke; sleep 1.5
echo "  all back:                   $(weights)"

echo; echo "=== the seed's DestinationRule applied in gke (locality failover): EDS priorities"
"$BIN/kubectl" --kubeconfig gke/kubeconfig apply -f "$LAB/manifests/seed-destinationrule.yaml"
sleep 1.5
admin $d "config_dump?include_eds" | python3 -c '
import json,sys
for c in json.load(sys.stdin)["configs"]:
    if c["@type"].endswith("EndpointsConfigDump"):
        for e in c["dynamic_endpoint_configs"]:
            cla = e["endpoint_config"]
            if cla["cluster_name"] == "outbound|80||echo-svc.default.svc.cluster.local":
                for le in cla["endpoints"]:
                    print("  priority", le.get("priority", 0), le.get("locality", {}), [lb["endpoint"]["address"]["socket_address"]["address"] for lb in le["lb_endpoints"]])'

echo; echo "=== anthos's east-west gateway (pilot-agent proxy router): SNI passthrough on :15443"
g=pods/anthos-gateway-istio-eastwestgateway-0
admin "$g" "config_dump?include_eds" | python3 -c '
import json,sys
for c in json.load(sys.stdin)["configs"]:
    t = c["@type"].split(".")[-1]
    if t == "ListenersConfigDump":
        for l in c.get("dynamic_listeners", []):
            L = l["active_state"]["listener"]
            for fc in L["filter_chains"]:
                sn = fc.get("filter_chain_match", {}).get("server_names", [])
                if any("echo-svc" in s for s in sn):
                    print("  ", L["name"], "sni", sn)
    if t == "EndpointsConfigDump":
        for e in c.get("dynamic_endpoint_configs", []):
            cla = e["endpoint_config"]
            if cla["cluster_name"].startswith("outbound_.80_") and "echo-svc" in cla["cluster_name"]:
                print("  ", cla["cluster_name"], [lb["endpoint"]["address"]["socket_address"]["address"] for le in cla.get("endpoints", []) for lb in le["lb_endpoints"]])'
echo; echo "logs and dumps: $RUN"
