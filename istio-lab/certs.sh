#!/usr/bin/env bash
# The mesh's certificates, as Istio's "plug in CA certificates" set-up for a
# multi-cluster mesh has them: one root, one intermediate per cluster (the
# `cacerts` secret istiod signs with), workload certificates under a
# cluster's intermediate.
#
#   certs.sh init DIR CLUSTER...                       root + intermediates
#   certs.sh workload DIR CLUSTER SPIFFE_ID OUTDIR     cert-chain.pem key.pem root-cert.pem
#   certs.sh registry DIR IP                           ca.pem, and cert.pem key.pem for a registry at IP
#                                                      (a private registry's own CA, not the mesh's)
set -euo pipefail
cmd=$1; dir=$2; shift 2
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
case $cmd in
init)
  mkdir -p "$dir"
  key "$dir/root-key.pem"
  openssl req -x509 -new -key "$dir/root-key.pem" -subj "/O=hybridmesh-lab/CN=Root CA" -days 30 \
    -addext "basicConstraints=critical,CA:true" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$dir/root-cert.pem" 2>/dev/null
  for c in "$@"; do
    mkdir -p "$dir/$c"
    key "$dir/$c/ca-key.pem"
    openssl req -new -key "$dir/$c/ca-key.pem" -subj "/O=hybridmesh-lab/CN=Intermediate CA $c/L=$c" -out "$dir/$c/ca.csr" 2>/dev/null
    openssl x509 -req -in "$dir/$c/ca.csr" -CA "$dir/root-cert.pem" -CAkey "$dir/root-key.pem" -CAcreateserial -days 30 \
      -extfile <(printf 'basicConstraints=critical,CA:true,pathlen:0\nkeyUsage=critical,digitalSignature,keyCertSign,cRLSign\nsubjectAltName=URI:spiffe://cluster.local/ns/istio-system/sa/istiod\n') \
      -out "$dir/$c/ca-cert.pem" 2>/dev/null
    cp "$dir/root-cert.pem" "$dir/$c/root-cert.pem"
    cat "$dir/$c/ca-cert.pem" "$dir/root-cert.pem" >"$dir/$c/cert-chain.pem"
  done
  ;;
workload)
  c=$1 id=$2 out=$3
  mkdir -p "$out"
  key "$out/key.pem"
  openssl req -new -key "$out/key.pem" -subj "/O=hybridmesh-lab" -out "$out/w.csr" 2>/dev/null
  openssl x509 -req -in "$out/w.csr" -CA "$dir/$c/ca-cert.pem" -CAkey "$dir/$c/ca-key.pem" -CAcreateserial -days 1 \
    -extfile <(printf 'basicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=critical,URI:%s\n' "$id") \
    -out "$out/leaf.pem" 2>/dev/null
  cat "$out/leaf.pem" "$dir/$c/ca-cert.pem" >"$out/cert-chain.pem"
  cp "$dir/root-cert.pem" "$out/root-cert.pem"
  rm -f "$out/w.csr" "$out/leaf.pem"
  ;;
registry)
  ip=$1
  mkdir -p "$dir"
  key "$dir/ca-key.pem"
  openssl req -x509 -new -key "$dir/ca-key.pem" -subj "/O=hybridmesh-lab/CN=Registry CA" -days 30 \
    -addext "basicConstraints=critical,CA:true" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$dir/ca.pem" 2>/dev/null
  key "$dir/key.pem"
  openssl req -new -key "$dir/key.pem" -subj "/O=hybridmesh-lab/CN=$ip" -out "$dir/r.csr" 2>/dev/null
  openssl x509 -req -in "$dir/r.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" -CAcreateserial -days 30 \
    -extfile <(printf 'basicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:%s\n' "$ip") \
    -out "$dir/cert.pem" 2>/dev/null
  rm -f "$dir/r.csr"
  ;;
*) echo "usage: certs.sh init DIR CLUSTER... | workload DIR CLUSTER SPIFFE_ID OUTDIR | registry DIR IP" >&2; exit 2 ;;
esac
