#!/usr/bin/env python3
"""The seed's echo-svc application: answers every request with a fixed body
("GKE!!!" / "Anthos!!!") and echoes the request headers it saw as
x-echo-saw-<name> (so the client can see what the mesh added). While
STATUS_FILE holds a number, it answers that status with "error <status>"
instead (a failing application, as the replica's echo does).

    echo.py BODY [PORT [STATUS_FILE]]
"""
import http.server
import sys

BODY = sys.argv[1].encode()
PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 8080
STATUS_FILE = sys.argv[3] if len(sys.argv) > 3 else None


def failing():
    if not STATUS_FILE:
        return 0
    try:
        with open(STATUS_FILE) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self):
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        status = failing()
        body = BODY + b"\n" if status == 0 else b"error %d\n" % status
        self.send_response(status or 200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        for k, v in self.headers.items():
            if k.lower().startswith("x-"):
                self.send_header("x-echo-saw-" + k.lower(), v)
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = answer

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
