"""HTTP/2 request heads → the same ``RequestReceived`` event the HTTP/1 codecs emit.

The h2 library has already checked the frame-level rules (pseudo-header order and
presence, lower-case names, no connection-specific fields). What is left is the proxy's
own checks, kept identical to HTTP/1 where the protocols overlap:

- limits: more than ``H1Limits.max_fields`` fields or more than ``max_head`` bytes of
  decoded header list → 431 (the advertised SETTINGS_MAX_HEADER_LIST_SIZE is the same
  number, so a well-behaved client never gets there);
- ``:authority`` (or Host) must be a valid host → 400, ``:path`` must be origin-form
  (``*`` for OPTIONS) → 400; CONNECT (plain or extended) → 405, as on HTTP/1;
- Content-Length must be digits, at most 2^63-1 → 400 (as on HTTP/1);
- a control character other than HTAB in a field value → 400 (as on HTTP/1; NUL, CR and
  LF are malformed in HTTP/2 and reset the stream before this point).

The result carries HTTP/1-style headers for the upstream request: a ``Host`` field made
from ``:authority`` first, split cookie crumbs joined again (RFC 9113 §8.2.3), and the
body framed as chunked when the client sent DATA without a Content-Length.
"""

from __future__ import annotations

from pingap.errors import DownstreamError
from pingap.events import RequestReceived
from pingap.headers import Headers
from pingap.http1 import _HOST, MAX_BODY_LENGTH, H1Limits, check_field_values, validate_target

_LIMITS = H1Limits()


def request_from_h2(fields: Headers, *, end_stream: bool,
                    limits: H1Limits = _LIMITS) -> RequestReceived:
    """Convert one HEADERS block (decoded, as ``(name, value)`` bytes pairs)."""
    if len(fields) > limits.max_fields + 4:  # + the four request pseudo-headers
        raise DownstreamError("Request Header Fields Too Large", status=431)
    method = scheme = path = authority = b""
    host: bytes | None = None
    content_length: int | None = None
    expect_continue = False
    headers: Headers = []
    cookies: list[bytes] = []
    size = 0
    for name, value in fields:
        size += len(name) + len(value) + 32  # RFC 9113 §6.5.2 accounting
        if name[:1] == b":":
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value
            elif name == b":scheme":
                scheme = value
            elif name == b":protocol":
                raise DownstreamError("extended CONNECT is not supported", status=405)
            continue
        if name == b"cookie":
            cookies.append(value)
            continue
        if name == b"host":
            host = value
        elif name == b"content-length":
            if not value.isdigit():
                raise DownstreamError("invalid Content-Length", status=400)
            content_length = int(value)
            if content_length > MAX_BODY_LENGTH:
                raise DownstreamError("Content-Length too large", status=400)
        elif name == b"expect" and value.lower() == b"100-continue":
            expect_continue = True
        headers.append((name, value))
    if size > limits.max_head:
        raise DownstreamError("Request Header Fields Too Large", status=431)
    check_field_values(fields)
    if method == b"CONNECT":
        raise DownstreamError("CONNECT is not supported", status=405)
    if not method or not path or scheme not in (b"http", b"https"):
        raise DownstreamError("missing or invalid pseudo-header", status=400)
    host_value = authority or host
    if not host_value or not _HOST.match(host_value):
        raise DownstreamError("missing or invalid :authority", status=400)
    if not (path.startswith(b"/") or path == b"*"):  # no absolute form in :path
        raise DownstreamError("invalid :path", status=400)
    _, path_only, query = validate_target(method, path)
    if authority:
        if host is not None:
            headers = [(n, v) for n, v in headers if n != b"host"]
        headers.insert(0, (b"host", authority))
    if cookies:
        headers.append((b"cookie", b"; ".join(cookies)))
    if end_stream and content_length:
        raise DownstreamError("Content-Length without a body", status=400)
    chunked = not end_stream and content_length is None
    return RequestReceived(
        method=method,
        target=path,
        headers=headers,
        http_version=b"2",
        keep_alive=True,
        expect_continue=expect_continue and not end_stream,
        content_length=content_length,
        chunked=chunked,
        host=host_value,
        path=path_only,
        query=query,
    )
