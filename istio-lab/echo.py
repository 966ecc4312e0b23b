#!/usr/bin/env python3
"""The seed's echo-svc application: answers every GET with a fixed body
("GKE!!!" / "Anthos!!!") and echoes the request headers it saw as
x-echo-saw-<name> (so the client can see what the mesh added).

    echo.py BODY [PORT]
"""
import http.server
import sys

BODY = sys.argv[1].encode()
PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 8080


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(BODY)))
        for k, v in self.headers.items():
            if k.lower().startswith("x-"):
                self.send_header("x-echo-saw-" + k.lower(), v)
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
