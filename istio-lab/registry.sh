#!/usr/bin/env bash
# The lab's private OCI registry: the CNCF registry (distribution v3, built
# by build.sh) at 127.60.0.1:5443 with TLS (its own CA, certs.sh registry) and
# htpasswd basic auth, as an on-prem registry is run. Pods reach it on the pod
# network through the infra namespace (up.sh forwards the port); the host
# reaches it directly, to push.
#
#   registry.sh up RUN      start it (first time: CA, certificate, user, password)
#   registry.sh down RUN    stop it: pulls fail with "connection refused"
#
# What it leaves in RUN/registry: ca.pem (the CA a client must trust),
# user and password, docker/config.json (what `docker login` writes, for
# `hybridmesh package --push`), data/ (the blobs), registry.log.
#
# The realm of its 401 is an https URL of a public-looking host name: since
# Istio 1.27.8 / 1.28.5 / 1.29.1 / 1.30 the agent refuses a registry whose
# WWW-Authenticate realm is not an http(s) URL or names a loopback, private
# or link-local address (pkg/wasm/imagefetcher.go, validateRealmURL), and
# this registry answers on 127.60.0.1.
set -euo pipefail
LAB="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$LAB/.." && pwd)"
BIN="$ROOT/target/istio-lab/bin"
cmd=${1:-}; run=${2:-}
[ -n "$run" ] || { echo "usage: registry.sh up|down RUN" >&2; exit 2; }
R="$run/registry"
ADDR=127.60.0.1:5443
REALM=${LAB_REGISTRY_REALM:-https://registry.hybridmesh-lab.example/}
case $cmd in
up)
  mkdir -p "$R/data" "$R/docker"
  if [ ! -f "$R/ca.pem" ]; then
    "$LAB/certs.sh" registry "$R" 127.60.0.1
    echo hybridmesh >"$R/user"
    head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$R/password"
    "$BIN/labctl" htpasswd "$(cat "$R/user")" "$(cat "$R/password")" >"$R/htpasswd"
    auth=$(printf '%s:%s' "$(cat "$R/user")" "$(cat "$R/password")" | base64 -w0)
    printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$ADDR" "$auth" >"$R/docker/config.json"
  fi
  cat >"$R/config.yml" <<YML
version: 0.1
log: {level: info, accesslog: {disabled: false}}
storage:
  filesystem: {rootdirectory: $R/data}
  delete: {enabled: true}
http:
  addr: $ADDR
  secret: hybridmesh-lab
  tls: {certificate: $R/cert.pem, key: $R/key.pem}
  debug: {addr: 127.60.0.1:5001, prometheus: {enabled: true, path: /metrics}}
auth:
  htpasswd: {realm: "$REALM", path: $R/htpasswd}
YML
  # the address exists on the host's loopback (all of 127/8 is local)
  OTEL_TRACES_EXPORTER=none setsid "$BIN/registry" serve "$R/config.yml" >>"$R/registry.log" 2>&1 &
  echo $! >"$run/registry.pid"   # down.sh stops it with the rest
  for _ in $(seq 1 100); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$R/ca.pem" "https://$ADDR/v2/" || true)
    [ "$code" = 401 ] && exit 0
    sleep 0.1
  done
  echo "the registry did not answer on $ADDR; see $R/registry.log" >&2
  exit 1
  ;;
down)
  [ -f "$run/registry.pid" ] && kill -- -"$(cat "$run/registry.pid")" 2>/dev/null || true
  rm -f "$run/registry.pid"
  for _ in $(seq 1 50); do curl -s -o /dev/null --cacert "$R/ca.pem" "https://$ADDR/v2/" || exit 0; sleep 0.1; done
  echo "the registry still answers on $ADDR" >&2; exit 1
  ;;
*) echo "usage: registry.sh up|down RUN" >&2; exit 2 ;;
esac
