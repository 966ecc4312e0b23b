#!/usr/bin/env bash
# Starts one pod the way a kubelet would, from the Pod as the API stores it:
# after istiod's webhook injected it (up.sh creates pods through the API, see
# replicaset.py). kubelet.py reads the pod and provides what istio-proxy
# mounts (its volumes: the pod-bound service-account token for istio-ca, the
# istio-ca-root-cert ConfigMap istiod writes, the downward API labels ...), its
# environment and args as injected, and istio-init's args. This script then
# does the container runtime's part:
#   - the pod's network namespace on the lab's pod network (podnet.sh), where
#     istiod (127.N.0.1:15012) and the registry (127.60.0.1:5443) are reached at
#     an "infra" namespace that forwards to them over unix sockets (labnet);
#   - istio-init: Istio's capture rules with the injected args (lab-iptables);
#   - istio-proxy: Istio's pilot-agent (built from the release's module) with
#     the injected args and environment, as the injected user (1337), in a
#     mount namespace where /usr/local/bin holds pilot-agent and the release's
#     Envoy (what the proxyv2 image has), /etc/hosts answers for
#     istiod.istio-system.svc (the cluster DNS's part) and /var/lib is the
#     pod's. pilot-agent writes Envoy's bootstrap, starts Envoy, gets its
#     workload certificate from istiod's CA with the token, proxies its xDS
#     stream to istiod (:15012) and pulls Wasm modules from the lab's registry.
#   - the application: echo.py for a container of the seed's echo server
#     (hashicorp/http-echo's -text and -listen args), as nobody.
# Only loopback addresses are used; every pod's 0.0.0.0 listeners stay in its
# own namespace.
#
#   sidecar.sh CLUSTER NAMESPACE POD      (after up.sh created the pod and set its IP)
#
# What the lab adds to the injected environment: SSL_CERT_FILE (the lab
# registry's private CA, as a node image that trusts it would) and, in gke,
# CLOUD_PLATFORM=gcp (what the agent's platform detection finds on GCE, whose
# metadata server is not reachable here).
set -euo pipefail
LAB="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$LAB/.." && pwd)"
BIN="$ROOT/target/istio-lab/bin"
RUN="$ROOT/target/istio-lab/run"
[ $# = 3 ] || { echo "usage: sidecar.sh CLUSTER NAMESPACE POD" >&2; exit 2; }
c=$1 ns=$2 pod=$3
source "$RUN/topology.env"   # NET_<c>, GCE_ZONE_<c>
n_var="NET_$c"; zone_var="GCE_ZONE_$c"
n=${!n_var}; zone=${!zone_var:-}
source "$LAB/release.sh"     # ISTIO_BIN of the run's release (LAB_ISTIO, ENVOY: topology.env)
[ -x "$ENVOY" ] || { echo "no Envoy at $ENVOY: run scripts/setup-envoy $LAB_ENVOY_VERSION" >&2; exit 1; }
ISTIO_DIR="$(cat "$ISTIO_BIN/istio-module-dir")"
kc() { "$BIN/kubectl" --kubeconfig "$RUN/$c/kubeconfig" "$@"; }

d="$RUN/pods/$c-$ns-$pod"
rm -rf "$d"; mkdir -p "$d"
python3 "$LAB/kubelet.py" "$BIN/kubectl" "$RUN/$c/kubeconfig" "$ns" "$pod" "$d"
ip=$(kc -n "$ns" get pod "$pod" -o 'jsonpath={.status.podIP}')
# what the proxyv2 image holds besides the binaries: Envoy's bootstrap template
mkdir -p "$d/var/lib/istio/envoy"
cp "$ISTIO_DIR/tools/packaging/common/envoy_bootstrap.json" "$d/var/lib/istio/envoy/envoy_bootstrap_tmpl.json"
# cluster DNS, for the one name the injected agent dials (CA_ADDR and the
# mesh's discoveryAddress: istiod.istio-system.svc:15012)
printf '127.%s.0.1\tistiod.istio-system.svc istiod.istio-system.svc.cluster.local\n' "$n" >>"$d/etc/hosts"
# On GKE the pod's resolv.conf (GKE copies the node's search path) names the
# GCE zone; pilot-agent on GCP reads its locality from it. On-prem has none.
gcp_env=()
resolv_mount=:
if [ -n "$zone" ]; then
  printf 'search %s.svc.cluster.local svc.cluster.local cluster.local %s.c.kuchima-demo.internal c.kuchima-demo.internal google.internal\noptions ndots:5\n' \
    "$ns" "$zone" >"$d/etc/resolv.conf"
  gcp_env=(CLOUD_PLATFORM=gcp)
  resolv_mount="mount --bind '$d/etc/resolv.conf' /etc/resolv.conf"
fi
reg_env=()
if [ -f "$RUN/registry/ca.pem" ]; then
  mkdir -p "$d/etc/ssl"; cp "$RUN/registry/ca.pem" "$d/etc/ssl/lab-registry-ca.pem"
  reg_env=(SSL_CERT_FILE=./etc/ssl/lab-registry-ca.pem)   # relative: the pod's root is the working directory
fi

# the pod's network namespace, with its IP on the lab's pod network
"$LAB/podnet.sh" add "$c-$pod" "$ip"
pns="hmlab-$c-$pod"
if [ -f "$d/init.args" ]; then
  # istio-init: `pilot-agent istio-iptables ARGS` in the proxyv2 image
  mapfile -d '' init <"$d/init.args"
  [ "${init[0]:-}" = istio-iptables ] && init=("${init[@]:1}")
  ip netns exec "$pns" "$ISTIO_BIN/lab-iptables" "${init[@]}" >"$d/istio-init.log" 2>&1
fi

mapfile -d '' proxy_args <"$d/proxy.args"
mapfile -d '' proxy_env <"$d/proxy.env"
IFS=: read -r uid gid <"$d/proxy.user"
: >"$d/agent.log"
chown -R "$uid:$gid" "$d"
cd "$d"
q() { printf '%q ' "$@"; }
env -i PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME="$d" "${proxy_env[@]}" \
  "${gcp_env[@]}" "${reg_env[@]}" \
  setsid ip netns exec "$pns" unshare --mount --propagation private --kill-child bash -c "
    set -e
    # the image's binaries
    mount -t tmpfs lab-image /usr/local/bin
    touch /usr/local/bin/pilot-agent /usr/local/bin/envoy
    mount --bind '$ISTIO_BIN/pilot-agent' /usr/local/bin/pilot-agent
    mount --bind '$ENVOY' /usr/local/bin/envoy
    # the pod's /var/lib (the agent keeps fetched Wasm modules in /var/lib/istio/data), hosts, resolv.conf
    mount --bind '$d/var/lib' /var/lib
    mount --bind '$d/etc/hosts' /etc/hosts
    $resolv_mount
    exec setpriv --reuid $uid --regid $gid --clear-groups /usr/local/bin/pilot-agent $(q "${proxy_args[@]}")
  " >>"$d/agent.log" 2>&1 &   # append: Envoy opens /dev/stdout (the access log) on its own, with O_APPEND
echo $! >"$d/pid"
# The application containers: the seed's echo server (hashicorp/http-echo)
# is played by echo.py with the container's own -text and -listen; the sleep
# client's container runs nothing (the lab sends its requests from the pod's
# namespace).
echo_args=$(python3 - "$d/app.json" <<'PY'
import json, sys
for c in json.load(open(sys.argv[1])):
    args = dict(a.lstrip("-").split("=", 1) for a in c["args"] if "=" in a)
    if "text" in args:
        print(args["text"], args.get("listen", ":5678").rsplit(":", 1)[1], sep="\n")
PY
)
if [ -n "$echo_args" ]; then
  { read -r body; read -r port; } <<<"$echo_args"
  setsid ip netns exec "$pns" setpriv --reuid 65534 --regid 65534 --clear-groups /usr/bin/python3 "$LAB/echo.py" "$body" "$port" "$d/fail-status" >"$d/app.log" 2>&1 &
  echo $! >"$d/app.pid"
fi
echo "$d"
