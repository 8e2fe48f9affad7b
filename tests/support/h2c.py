"""One request over HTTP/1.1 (http.client) and over HTTP/2 (curl, h2c prior knowledge),
so a test can assert both protocols get the same answer from the proxy."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field

from tests.support.client import request


@dataclass
class Answer:
    status: int
    headers: dict[str, list[str]] = field(default_factory=dict)  # lower-case names
    body: bytes = b""

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


def http1(port: int, method: str = "GET", path: str = "/",
          headers: dict[str, str] | None = None) -> Answer:
    reply = request(port, method, path, headers=headers)
    out: dict[str, list[str]] = {}
    for name, value in reply.headers.items():
        out.setdefault(name.lower(), []).append(value)
    return Answer(reply.status, out, reply.body)


def http2(port: int, method: str = "GET", path: str = "/",
          headers: dict[str, str] | None = None) -> Answer:
    args = ["curl", "-sS", "--max-time", "10", "--http2-prior-knowledge", "-X", method,
            "-D", "-", "-o", "-"]
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    if method == "HEAD":
        args = [a for a in args if a not in ("-X", "HEAD")] + ["-I"]
    result = subprocess.run([*args, f"http://127.0.0.1:{port}{path}"], capture_output=True,
                            timeout=20, check=True)
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/2 "), lines[0]
    out: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        out.setdefault(name.strip().lower(), []).append(value.strip())
    return Answer(int(lines[0].split()[1]), out, body)


def both(port: int, method: str = "GET", path: str = "/",
         headers: dict[str, str] | None = None) -> tuple[Answer, Answer]:
    """(HTTP/1.1 answer, HTTP/2 answer) of the same request."""
    return http1(port, method, path, headers), http2(port, method, path, headers)
