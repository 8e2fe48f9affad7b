"""Small real-client helpers (http.client and raw sockets) for the integration tests."""

from __future__ import annotations

import http.client
import json
import socket
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    elapsed: float

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


def request(port: int, method: str = "GET", path: str = "/", *, headers: dict[str, str] |
            None = None, body: Any = None, conn: http.client.HTTPConnection | None = None,
            timeout: float = 10.0, encode_chunked: bool = False) -> Reply:
    own = conn is None
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    start = time.monotonic()
    try:
        c.request(method, path, body=body, headers=headers or {},
                  encode_chunked=encode_chunked)
        resp = c.getresponse()
        data = resp.read()
        return Reply(resp.status, resp.headers, data, time.monotonic() - start)
    finally:
        if own:
            c.close()


def raw_exchange(port: int, data: bytes, *, timeout: float = 5.0,
                 read_until_close: bool = True) -> bytes:
    """Send raw bytes, return everything the server sends until it closes (or times out)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            chunks.append(chunk)
            if not read_until_close:
                break
        return b"".join(chunks)


def status_of(raw: bytes) -> int | None:
    """Status code of the first response in ``raw``."""
    if not raw.startswith(b"HTTP/1."):
        return None
    return int(raw.split(b" ", 2)[1])


@dataclass
class Answer:
    """One response, whatever the protocol: header names in lower case."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    elapsed: float

    def header(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n == name.lower()), None)

    def json(self) -> Any:
        return json.loads(self.body)


def h1_request(port: int, method: str = "GET", path: str = "/", *,
               headers: dict[str, str] | None = None, body: bytes = b"",
               timeout: float = 10.0) -> Answer:
    """``request`` as an ``Answer`` (the same shape as the HTTP/2 client's)."""
    reply = request(port, method, path, headers=headers, body=body or None, timeout=timeout)
    return Answer(reply.status, [(n.lower(), v) for n, v in reply.headers.items()],
                  reply.body, reply.elapsed)


class _KeptOpen:
    """One buffered reader shared by successive responses (each would close it)."""

    def __init__(self, stream: object) -> None:
        self._stream = stream

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)

    def close(self) -> None:
        pass


def read_responses(sock: socket.socket,
                    count: int) -> list[tuple[http.client.HTTPResponse, bytes]]:
    """``count`` responses read one after the other from ``sock``, with their bodies."""
    stream = _KeptOpen(sock.makefile("rb"))
    replies = []
    for _ in range(count):
        reply = http.client.HTTPResponse(sock)
        reply.fp = stream  # type: ignore[assignment]  # every response from one reader
        reply.begin()
        replies.append((reply, reply.read()))
    return replies
