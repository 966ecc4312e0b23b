#!/usr/bin/env python3
"""A mesh peer without a sidecar: one HTTP/1.1 request over mTLS straight to
a pod's port, as another pod's Envoy sends it. It presents a workload
certificate (certs.sh workload: cert-chain.pem, key.pem, root-cert.pem),
verifies the server's chain against the mesh root and offers Istio's ALPN
for HTTP over mTLS, "istio-http/1.1": the pod's inbound listener picks its
mTLS HTTP filter chain by the ALPN the client offers (its TLS inspector
reads the ClientHello). It prints the answer as `curl -i`
does (status line, headers, blank line, body).

    peer.py CERT_DIR IP PORT AUTHORITY METHOD PATH [NAME:VALUE ...] [--data BODY]

Exit status 3 and the server's TLS alert on standard error when the server
refused the handshake (with TLS 1.3 its alert arrives with the first read,
or the connection closes before it does);
2 when no HTTP answer came for another reason.
"""
import http.client
import os
import ssl
import sys

ALPN = "istio-http/1.1"


def main(argv):
    if len(argv) < 6:
        sys.stderr.write(__doc__)
        return 2
    certs, ip, port, authority, method, path = argv[:6]
    rest = argv[6:]
    body = None
    if "--data" in rest:
        i = rest.index("--data")
        body = rest[i + 1].encode()
        rest = rest[:i] + rest[i + 2:]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # The server's certificate names a SPIFFE id, not a host name: the chain
    # is checked against the mesh root, the name is not.
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(os.path.join(certs, "root-cert.pem"))
    ctx.load_cert_chain(os.path.join(certs, "cert-chain.pem"), os.path.join(certs, "key.pem"))
    ctx.set_alpn_protocols([ALPN])
    conn = http.client.HTTPSConnection(ip, int(port), context=ctx, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("host", authority)
        for h in rest:
            k, _, v = h.partition(":")
            conn.putheader(k.strip(), v.strip())
        if body is not None:
            conn.putheader("content-length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read()
    except ssl.SSLEOFError as e:
        # The server aborted the handshake and its alert was lost to the
        # close (seen once in six differential runs against Envoy's refusal
        # of a foreign trust domain): no TLS session, so no HTTP answer.
        sys.stderr.write(f"{ip}:{port} refused the handshake (closed before its alert arrived): {e}\n")
        return 3
    except ssl.SSLError as e:
        sys.stderr.write(f"{ip}:{port} refused the handshake: {e}\n")
        return 3 if "ALERT" in (e.reason or "") else 2
    except (OSError, http.client.HTTPException) as e:
        sys.stderr.write(f"no answer from {ip}:{port}: {e}\n")
        return 2
    out = [f"HTTP/1.1 {resp.status} {resp.reason}"]
    out += [f"{k}: {v}" for k, v in resp.getheaders()]
    sys.stdout.buffer.write(("\r\n".join(out) + "\r\n\r\n").encode() + data)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
