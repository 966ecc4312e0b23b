#!/usr/bin/env bash
# The lab's pod network, loopback addresses only. Each pod gets its own
# network namespace (hmlab-<cluster>-<pod>) with its pod IP (127.N.x.y) on a
# veth whose other end is on a bridge in the namespace hmlab-node; nothing is
# in the machine's own namespace. Linux treats 127.0.0.0/8 as loopback, so in
# each pod namespace: route_localnet=1, the catch-all "local 127.0.0.0/8"
# route replaced by local routes for 127.0.0.1, 127.0.0.6 (Istio's inbound
# passthrough source) and the pod IP, and 127.0.0.0/8 routed to the veth. A pod reaches every other pod's IP over the bridge, as on a flat
# pod network.
#
#   podnet.sh add NAME IP [IP...]           create the pod's namespace
#                                           (more IPs: more addresses, e.g. the infra namespace)
#   podnet.sh down                          delete every hmlab-* namespace
set -euo pipefail
node=hmlab-node
case $1 in
add)
  name=$2 ip=$3; shift 3
  ns="hmlab-$name"
  if ! ip netns list | grep -qw "$node"; then
    ip netns add "$node"
    ip -n "$node" link add br0 type bridge
    ip -n "$node" link set br0 up
    ip -n "$node" link set lo up
  fi
  ip netns list | grep -qw "$ns" && ip netns del "$ns"
  v="hm$(printf '%s' "$name" | md5sum | cut -c1-8)"
  ip netns add "$ns"
  ip link add "${v}p" type veth peer name "${v}b"
  ip link set "${v}p" netns "$ns"
  ip link set "${v}b" netns "$node"
  ip -n "$node" link set "${v}b" master br0 up
  ip -n "$ns" link set "${v}p" name eth0
  ip -n "$ns" link set lo up
  ip netns exec "$ns" sysctl -qw net.ipv4.conf.all.route_localnet=1 net.ipv4.conf.eth0.route_localnet=1 net.ipv4.conf.lo.route_localnet=1
  ip -n "$ns" route del local 127.0.0.0/8 dev lo table local
  for a in 127.0.0.1 127.0.0.6; do ip -n "$ns" route replace local "$a" dev lo table local; done
  ip -n "$ns" addr add "$ip/32" dev eth0
  for a in "$@"; do ip -n "$ns" addr add "$a/32" dev eth0; done
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add 127.0.0.0/8 dev eth0 src "$ip"
  ;;
down)
  for ns in $(ip netns list | awk '/^hmlab-/ {print $1}'); do ip netns del "$ns"; done
  ;;
*) echo "usage: podnet.sh add NAME IP [LOCAL_IP...] | down" >&2; exit 2 ;;
esac
