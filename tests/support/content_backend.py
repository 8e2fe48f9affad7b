"""A real HTTP/1.1 content server for the body-plugin tests (stdlib http.server).

Run as ``python -m tests.support.content_backend --port P --record FILE``. Every request is
appended to the record file as one JSON line (method, path, arrival time, headers), so a
test counts
what reached the origin. Endpoints:
  /text?n=N&cc=..&etag=..&lm=..&type=..&cookie=1&slow=S  N bytes of HTML-ish text (default
        4000) with that Cache-Control, ETag, Last-Modified and type; an If-None-Match that
        names the ETag (or If-Modified-Since at/after lm) gets 304; slow sleeps first;
        gz=1 sends it gzip-encoded (Content-Encoding: gzip)
  /chunked?n=N   the same text, chunked, in 1000-byte chunks
  /image.png, /image.jpg   a photo-like image (Pillow)
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from PIL import Image

_lock = threading.Lock()


def text(n: int) -> bytes:
    line = b"<p>pingap serves this line again and again for compression.</p>\n"
    return (line * (n // len(line) + 1))[:n]


def image(kind: str) -> bytes:
    rng = random.Random(5)
    img = Image.new("RGB", (160, 120))
    img.putdata([(x % 160 + rng.randint(0, 50), (x // 160) * 2 + rng.randint(0, 50),
                  rng.randint(0, 90)) for x in range(160 * 120)])
    out = io.BytesIO()
    img.save(out, "PNG" if kind == "png" else "JPEG", quality=98)
    return out.getvalue()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    record = ""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _record(self) -> None:
        entry = {"method": self.command, "path": self.path, "at": time.time(),
                 "headers": {k.lower(): v for k, v in self.headers.items()}}
        with _lock, open(self.record, "a") as handle:
            handle.write(json.dumps(entry) + "\n")

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        self._record()
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if "slow" in query:
            time.sleep(float(query["slow"]))
        if url.path in ("/image.png", "/image.jpg"):
            kind = "png" if url.path.endswith("png") else "jpeg"
            self._send(200, image(kind), [("Content-Type", f"image/{kind}")])
            return
        body = text(int(query.get("n", "4000")))
        headers = [("Content-Type", query.get("type", "text/html; charset=utf-8"))]
        if "cc" in query:
            headers.append(("Cache-Control", query["cc"]))
        if "etag" in query:
            headers.append(("ETag", f'"{query["etag"]}"'))
            if self.headers.get("If-None-Match") == f'"{query["etag"]}"':
                self._send(304, b"", headers)
                return
        if "lm" in query:
            headers.append(("Last-Modified", query["lm"]))
            if self.headers.get("If-Modified-Since") == query["lm"]:
                self._send(304, b"", headers)
                return
        if query.get("gz"):
            body = gzip.compress(body)
            headers.append(("Content-Encoding", "gzip"))
        if query.get("cookie"):
            headers.append(("Set-Cookie", "session=1"))
        if url.path == "/chunked":
            self.send_response(200)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if self.command != "HEAD":
                for i in range(0, len(body), 1000):
                    piece = body[i:i + 1000]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")
            return
        self._send(200, body, headers)

    def _send(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if status != 304:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and status != 304:
            self.wfile.write(body)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", required=True)
    args = parser.parse_args()
    Handler.record = args.record
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.request_queue_size = 512
    server.serve_forever()


if __name__ == "__main__":
    main()
