"""A real HTTP auth service for forward_auth and jwt tests (stdlib ``http.server``).

Run as ``python -m tests.support.auth_server --port P --record FILE [--jwks FILE]``.
Every request is appended to the record file as one JSON line (method, path, headers).

  /verify   200 with X-User-Id/X-User-Role for ``Authorization: Bearer good``;
            302 to /login for ``Cookie: session=expired``; otherwise 401 with
            WWW-Authenticate and the body ``denied by auth``
  /slow     answers after 5 seconds (longer than any timeout a test sets)
  /jwks     the JSON of the ``--jwks`` file
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class AuthHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    record = ""
    jwks = ""
    lock = threading.Lock()

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        with self.lock, open(self.record, "a") as f:
            f.write(json.dumps({"method": self.command, "path": self.path,
                                "headers": [[k, v] for k, v in self.headers.items()]}) + "\n")
        path = self.path.split("?", 1)[0]
        if path == "/slow":
            time.sleep(5)
            self.answer(200, [], b"late")
        elif path == "/jwks":
            with open(self.jwks, "rb") as f:
                self.answer(200, [("Content-Type", "application/json")], f.read())
        elif self.headers.get("Authorization") == "Bearer good":
            self.answer(200, [("X-User-Id", "42"), ("X-User-Role", "admin"),
                              ("X-Not-Copied", "1")], b"")
        elif self.headers.get("Cookie") == "session=expired":
            self.answer(302, [("Location", "/login")], b"")
        else:
            self.answer(401, [("WWW-Authenticate", 'Bearer realm="auth"'),
                              ("Content-Type", "text/plain")], b"denied by auth")

    def answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", required=True)
    parser.add_argument("--jwks", default="")
    args = parser.parse_args()
    AuthHandler.record = args.record
    AuthHandler.jwks = args.jwks
    server = ThreadingHTTPServer(("127.0.0.1", args.port), AuthHandler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
