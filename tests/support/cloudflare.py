"""A stand-in for Cloudflare's v4 DNS API, backed by pebble's DNS (challtestsrv).

It answers the three calls pingap's ``cf`` provider makes — list zones by name, create a
TXT record, delete it — checking the bearer token, and turns records into real DNS
answers through challtestsrv's management API, so pebble validates DNS-01 against them.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.pebble import PebbleServer


class FakeCloudflare:
    def __init__(self, pebble: PebbleServer, zone: str, token: str) -> None:
        self.pebble, self.zone, self.token = pebble, zone, token
        self.records: dict[str, dict[str, str]] = {}   # id -> record
        self.deleted: list[str] = []
        self.calls: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, result: Any, success: bool = True) -> None:
                body = json.dumps({"success": success, "result": result,
                                   "errors": [] if success else [{"message": "denied"}]})
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def _handle(self) -> None:
                fake.calls.append(f"{self.command} {self.path}")
                if self.headers.get("Authorization") != f"Bearer {fake.token}":
                    self._answer(403, None, success=False)
                    return
                url = urlsplit(self.path)
                parts = url.path.strip("/").split("/")
                if self.command == "GET" and parts == ["client", "v4", "zones"]:
                    name = parse_qs(url.query).get("name", [""])[0]
                    found = [{"id": "zone-1", "name": name}] if name == fake.zone else []
                    self._answer(200, found)
                elif self.command == "POST" and parts[3:] == ["zone-1", "dns_records"]:
                    record = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                    record_id = f"rec-{len(fake.records) + 1}"
                    fake.records[record_id] = record
                    fake.pebble.set_txt(record["name"], record["content"])
                    self._answer(200, {"id": record_id})
                elif self.command == "DELETE" and parts[3:5] == ["zone-1", "dns_records"] \
                        and parts[5] in fake.records:
                    fake.deleted.append(parts[5])
                    fake.pebble.clear_txt(fake.records[parts[5]]["name"])
                    self._answer(200, {"id": parts[5]})
                else:
                    self._answer(404, None, success=False)

            do_GET = do_POST = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
