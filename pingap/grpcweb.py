"""gRPC-Web ⇄ gRPC translation (a location with ``grpc_web = true`` on a server with
``modules = ["grpc-web"]``), so a browser — or any HTTP/1.1 client — can call a gRPC
backend over HTTP/2.

The gRPC-Web protocol (github.com/grpc/grpc/blob/master/doc/PROTOCOL-WEB.md) keeps
gRPC's length-prefixed message framing and differs in three places, which is all this
module touches:

- content types: ``application/grpc-web[+proto|+json]`` ⇄ ``application/grpc[+...]``;
  ``application/grpc-web-text[+...]`` is the same with the body base64-encoded;
- trailers: HTTP/1.1 clients cannot rely on them, so the backend's trailers
  (``grpc-status``, ``grpc-message``, ...) travel as a last frame in the body: flag byte
  0x80, a 4-byte big-endian length, then ``name:value\\r\\n`` lines;
- the backend needs ``te: trailers`` and HTTP/2, which the proxy's upstream side adds.

Pure code: the exchange calls these per request, per body piece and at the end.
"""

from __future__ import annotations

import base64
import struct

from pingap.headers import Headers

_GRPC_WEB = b"application/grpc-web"
_GRPC_WEB_TEXT = b"application/grpc-web-text"
_TRAILER_FLAG = 0x80


def is_grpc_web(content_type: bytes | None) -> bool:
    return bool(content_type) and content_type.lower().startswith(_GRPC_WEB)  # type: ignore[union-attr]


class GrpcWebBridge:
    """The translation state of one gRPC-Web request."""

    def __init__(self, content_type: bytes) -> None:
        low = content_type.lower()
        self.text = low.startswith(_GRPC_WEB_TEXT)
        prefix = _GRPC_WEB_TEXT if self.text else _GRPC_WEB
        self.suffix = low[len(prefix):]          # "", "+proto", "+json", ...
        self.response_type = content_type         # echoed back in the client's spelling
        self._pending = b""                       # base64 text not yet a multiple of 4

    # --- request: client → backend ------------------------------------------------

    def request_headers(self, headers: Headers) -> Headers:
        out: Headers = []
        for name, value in headers:
            low = name.lower()
            if low == b"content-type":
                value = b"application/grpc" + self.suffix
            elif low == b"content-length" and self.text:
                continue  # the decoded body is shorter; it is sent chunked / as DATA
            elif low in (b"te", b"x-grpc-web", b"x-user-agent"):
                continue
            out.append((name, value))
        out.append((b"te", b"trailers"))
        return out

    def request_body(self, data: bytes) -> bytes:
        if not self.text:
            return data
        data = self._pending + data
        usable = len(data) - len(data) % 4
        self._pending = data[usable:]
        return base64.b64decode(data[:usable]) if usable else b""

    def request_end(self) -> bytes:
        """What is left of a text body (nothing, if it was well formed)."""
        if self._pending:
            raise ValueError("grpc-web-text body is not valid base64")
        return b""

    # --- response: backend → client -----------------------------------------------

    def response_headers(self, headers: Headers) -> Headers:
        """Rename the content type; trailers-only responses keep their grpc-status fields
        in the head, which is what gRPC-Web expects too."""
        out: Headers = []
        for name, value in headers:
            low = name.lower()
            if low == b"content-type":
                value = self.response_type
            elif low in (b"content-length", b"trailer"):
                continue
            out.append((name, value))
        return out

    def response_body(self, data: bytes) -> bytes:
        return base64.b64encode(data) if self.text and data else data

    def response_end(self, trailers: Headers) -> bytes:
        """The trailer frame that replaces the backend's trailers (empty if none)."""
        if not trailers:
            return b""
        block = b"".join(name.lower() + b":" + value + b"\r\n" for name, value in trailers)
        frame = struct.pack(">BI", _TRAILER_FLAG, len(block)) + block
        return base64.b64encode(frame) if self.text else frame


def parse_trailer_frame(frame: bytes) -> Headers:
    """The fields of one trailer frame (for tests and clients)."""
    flag, length = struct.unpack(">BI", frame[:5])
    if not flag & _TRAILER_FLAG or len(frame) != 5 + length:
        raise ValueError("not a gRPC-Web trailer frame")
    out: Headers = []
    for line in frame[5:].split(b"\r\n"):
        if line:
            name, _, value = line.partition(b":")
            out.append((name.strip(), value.strip()))
    return out
