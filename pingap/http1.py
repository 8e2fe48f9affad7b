"""Server-side HTTP/1.1 codec: bytes in, events out, response bytes out — no I/O.

``ServerCodec`` is the interface every HTTP/1 codec implements: ``H11ServerCodec``
(``pingap.http1_h11``), the reference, and ``pingap.http1_fast.FastServerCodec``
(httptools), the default; the
worker's connection loop is written against the interface only. What both share lives
here, so their decisions cannot drift apart: ``HeadScanner`` (the head limits),
``BaseServerCodec`` (the proxy's checks on a parsed head, ``validate_target``, and the
response side, written by ``pingap.h1writer.ResponseWriter``).

``H11ServerCodec`` wraps h11 and adds the checks a proxy needs beyond h11 0.16 (see
docs), most of them here: hard limits on the request head applied before h11 sees a byte (request line
> 8 KiB → 414; a header line > 8 KiB, head > 32 KiB or > 100 fields → 431, however the
bytes arrive), Content-Length with Transfer-Encoding → 400, Transfer-Encoding on
HTTP/1.0 → 400, a Content-Length or chunk size over 2^63-1 → 400, a control character
other than HTAB in a field value → 400, an HTTP major version other than 1 → 505, a
missing (HTTP/1.1 and later) or malformed Host → 400, request-target validation → 400 (405 for CONNECT). An
absolute-form target replaces the Host header (RFC 9112 §3.2.2), and framing, routing
and hop-by-hop fields are dropped from request trailers. Each request cycle gets a fresh
``h11.Connection`` fed only complete heads, so pipelined bytes are counted against the
limits too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from pingap.errors import DownstreamError
from pingap.events import ConnectionEnded, Event, NeedData, RequestReceived
from pingap.h1writer import ResponseWriter
from pingap.headers import Headers


@dataclass(frozen=True, slots=True)
class H1Limits:
    """Request head limits (nginx's large_client_header_buffers 4 × 8k, gunicorn's 100)."""

    max_request_line: int = 8192
    max_header_line: int = 8192
    max_head: int = 32768
    max_fields: int = 100


class ServerCodec(Protocol):
    """What the connection loop needs from an HTTP/1 codec."""

    def receive_data(self, data: bytes) -> None: ...
    def next_event(self) -> Event | NeedData: ...
    def informational(self, status: int) -> bytes: ...
    def response_head(self, status: int, headers: Headers, reason: bytes = b"") -> bytes: ...
    def response_head_again(self, data: bytes, length: int) -> bytes: ...
    def body(self, data: bytes) -> bytes: ...
    def raw_body_owed(self) -> int: ...
    def raw_body_sent(self, size: int) -> None: ...
    def end(self, trailers: Headers | None = None) -> bytes: ...
    def switching_protocols(self, headers: Headers, reason: bytes = b"") -> bytes: ...
    def detach(self) -> bytes: ...
    def reusable(self) -> bool: ...
    def ended_keep_alive(self) -> bool: ...
    def keeps_alive(self) -> bool: ...
    def start_next_cycle(self) -> None: ...
    @property
    def request_in_progress(self) -> bool: ...


_PCT_BAD = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_ORIGIN = re.compile(rb"^/[!-~]*$")
_ABSOLUTE = re.compile(rb"^(https?)://([^/?#@\s]+)([/?][!-~]*)?$", re.IGNORECASE)
_AUTHORITY = re.compile(rb"^[A-Za-z0-9.\-\[\]:]+:[0-9]+$")
# RFC 9110 §7.2 / RFC 3986 §3.2.2: Host = uri-host [ ":" port ] (reg-name may be empty).
_HOST = re.compile(rb"^(?:\[[0-9A-Za-z:._~!$&'()*+,;=-]+\]"
                   rb"|(?:[A-Za-z0-9._~!$&'()*+,;=-]|%[0-9A-Fa-f]{2})*)(?::[0-9]*)?$")
#: RFC 9110 §5.5: a field value with a control character other than HTAB is refused (400)
#: rather than forwarded - NUL, CR and LF always, and the rest that a backend may read
#: otherwise (h11 and llhttp disagree on them; this is the one rule both codecs apply).
BAD_VALUE_CHARS = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# the same characters anywhere in a head but its line ends: a request line or field name
# with one is refused anyway, so a head with one is refused before any other check
BAD_HEAD_CHARS = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
#: The largest Content-Length or chunk size accepted: 2^63-1, as nginx. A bigger one is
#: refused (400), never forwarded: a backend that wraps it reads the body as requests.
MAX_BODY_LENGTH = 2**63 - 1
#: Fields that must never come from a trailer section (RFC 9110 §6.5.1): framing,
#: routing and hop-by-hop fields are dropped instead of being forwarded.
NOT_TRAILERS = frozenset({
    b"content-length", b"transfer-encoding", b"trailer", b"host", b"connection",
    b"keep-alive", b"proxy-connection", b"te", b"upgrade", b"http2-settings",
})


def check_field_values(fields: Headers) -> None:
    """DownstreamError(400) when a field value holds a control character (see
    ``BAD_VALUE_CHARS``)."""
    search = BAD_VALUE_CHARS.search
    for _, value in fields:
        if search(value):
            raise DownstreamError("control character in a header value", status=400)


def split_target(target: bytes) -> tuple[bytes, bytes]:
    path, _, query = target.partition(b"?")
    return path, query


def validate_target(method: bytes, target: bytes) -> tuple[bytes, bytes, bytes]:
    """(authority, path, query) of a request target, or DownstreamError(400/405)."""
    if (b"%" in target and _PCT_BAD.search(target)) or b"#" in target:
        raise DownstreamError("invalid request target", status=400)
    if method == b"CONNECT":  # RFC 9112 §3.2.3: authority-form only, whatever the target
        if _AUTHORITY.match(target):
            raise DownstreamError("CONNECT is not supported", status=405)
        raise DownstreamError("invalid CONNECT target", status=400)
    if target.startswith(b"/"):
        if not _ORIGIN.match(target):
            raise DownstreamError("invalid request target", status=400)
        path, query = split_target(target)
        return b"", path, query
    if target == b"*":
        if method != b"OPTIONS":
            raise DownstreamError("'*' target is only valid for OPTIONS", status=400)
        return b"", b"*", b""
    found = _ABSOLUTE.match(target)
    if found is None or not _HOST.match(found.group(2)) or found.group(2)[:1] == b":":
        raise DownstreamError("invalid request target", status=400)
    rest = found.group(3) or b"/"
    if rest.startswith(b"?"):
        rest = b"/" + rest
    path, query = split_target(rest)
    return found.group(2), path, query


def valid_host(host: bytes) -> bool:
    """Whether a Host value is ``uri-host [ ":" port ]``; recent answers are remembered
    (a connection's requests, and most clients, repeat the same few hosts)."""
    if host in _good_hosts:
        return True
    if not _HOST.match(host):
        return False
    if len(_good_hosts) < 1024:
        _good_hosts.add(host)
    return True


_good_hosts: set[bytes] = set()


def forwardable_trailers(fields: Headers) -> Headers:
    """A trailer section without the fields that must not come from one."""
    return [(n, v) for n, v in fields if n.lower() not in NOT_TRAILERS]


class HeadScanner:
    """The request-head limits, applied to a receive buffer before any parser sees it.

    Request line > ``max_request_line`` → 414; a header line > ``max_header_line``, a head
    > ``max_head`` or > ``max_fields`` fields → 431. Incremental: each line is checked once,
    when its LF arrives, so a slow client costs no rescans. Sizes exclude line terminators,
    and the verdict is the same however the bytes are split across reads. Empty lines
    before the request line are removed from the buffer (RFC 9112 §2.2).
    """

    __slots__ = ("_fields", "_head_size", "_line_start", "_whole_limit", "limits")

    def __init__(self, limits: H1Limits) -> None:
        self.limits = limits
        # a buffer no longer than this holds no line or head over any limit
        self._whole_limit = min(limits.max_request_line, limits.max_header_line,
                                limits.max_head)
        self.reset()

    def reset(self) -> None:
        """Start on a new request head (at the start of the buffer)."""
        self._line_start = 0   # start of the first line not checked yet
        self._fields = -1      # header lines seen; -1 until the request line is complete
        self._head_size = 0    # bytes of head up to the end of the last complete line

    def scan(self, buf: bytearray) -> int:
        """The length of the complete head at the start of ``buf`` (its empty line
        included), 0 while the head is incomplete; DownstreamError(414/431) past a limit."""
        limits = self.limits
        if self._line_start == 0 and len(buf) <= self._whole_limit \
                and buf[:1] not in (b"\r", b"\n"):
            # the common case: a small head that arrived whole - no line can be too long.
            # Without a bare LF before it, the first CRLF CRLF is where the head ends.
            end = buf.find(b"\r\n\r\n")
            if end > 0:
                lines = buf.count(b"\n", 0, end)
                if lines <= limits.max_fields and lines == buf.count(b"\r\n", 0, end):
                    return end + 4
        if self._fields < 0 and self._line_start == 0:
            while buf[:2] == b"\r\n" or buf[:1] == b"\n":  # RFC 9112 §2.2: skip empty lines
                del buf[: 2 if buf[:1] == b"\r" else 1]
        pos = self._line_start
        while True:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                break
            end = nl - 1 if nl > pos and buf[nl - 1] == 13 else nl
            length = end - pos
            if self._fields < 0:
                if length > limits.max_request_line:
                    raise DownstreamError("request line too long", status=414)
                self._fields = 0
            elif length == 0:
                if self._head_size > limits.max_head:
                    raise DownstreamError("request header fields too large", status=431)
                return nl + 1
            else:
                if length > limits.max_header_line:
                    raise DownstreamError("request header field too large", status=431)
                self._fields += 1
                if self._fields > limits.max_fields:
                    raise DownstreamError("too many header fields", status=431)
            self._head_size = end
            pos = self._line_start = nl + 1
        partial = len(buf) - pos - (1 if buf[-1:] == b"\r" else 0)
        if self._fields < 0:
            if partial > limits.max_request_line:
                raise DownstreamError("request line too long", status=414)
        elif partial > 0:
            if partial > limits.max_header_line:
                raise DownstreamError("request header field too large", status=431)
            if self._fields + 1 > limits.max_fields:
                raise DownstreamError("too many header fields", status=431)
        if (pos + partial if partial > 0 else self._head_size) > limits.max_head:
            raise DownstreamError("request header fields too large", status=431)
        return 0


def closed_before_head(buf: bytearray) -> ConnectionEnded:
    """The client closed with no complete head buffered: a clean end, or 400 when part
    of a request was sent (whitespace alone is no request)."""
    if buf.strip():
        raise DownstreamError("incomplete request head", status=400)
    return ConnectionEnded()


class BaseServerCodec:
    """What every HTTP/1 codec shares: the receive buffer and head scan, the proxy's own
    checks on a parsed request head, and the response side (one ``ResponseWriter``)."""

    def __init__(self, limits: H1Limits | None = None) -> None:
        self.limits = limits or H1Limits()
        self._buf = bytearray()
        self._closed = False
        self._scanner = HeadScanner(self.limits)
        self._informational_sent = False
        # requests are parsed by the subclass; responses are framed by ResponseWriter
        self._writer = ResponseWriter()

    def _checked_request(self, method: bytes, target: bytes, version: bytes,
                         headers: Headers, *, content_length: int | None, chunked: bool,
                         host: bytes | None, close: bool,
                         expect_continue: bool) -> RequestReceived:
        """The request event of a head the parser accepted (its fields normalised as h11
        does), after the checks a proxy needs beyond h11 - or DownstreamError."""
        major, _, minor = version.partition(b".")
        if major != b"1":  # h11 accepts any digit.digit, e.g. "HTTP/2.0"
            raise DownstreamError("HTTP Version Not Supported", status=505)
        if content_length is not None and content_length > MAX_BODY_LENGTH:
            raise DownstreamError("Content-Length too large", status=400)
        if chunked and content_length is not None:
            raise DownstreamError("both Content-Length and Transfer-Encoding", status=400)
        if chunked and version == b"1.0":
            raise DownstreamError("Transfer-Encoding on HTTP/1.0", status=400)
        if host is None and minor != b"0":  # h11 only insists for exactly "1.1"
            raise DownstreamError("Missing mandatory Host: header", status=400)
        if host is not None and not valid_host(host):
            raise DownstreamError("invalid Host header", status=400)
        authority, path, query = validate_target(method, target)
        if authority:  # RFC 9112 §3.2.2: the target's authority replaces Host
            headers = [(n, v) for n, v in headers if n.lower() != b"host"]
            headers.insert(0, (b"Host", authority))
        # HTTP/1.0 keep-alive is not offered: the response closes the connection
        keep_alive = version == b"1.1" and not close
        self._writer.start(method, version, keep_alive)
        return RequestReceived(
            method=method,
            target=target,
            headers=headers,
            http_version=version,
            keep_alive=keep_alive,
            expect_continue=expect_continue and version == b"1.1",
            content_length=content_length,
            chunked=chunked,
            host=authority or host or b"",
            path=path,
            query=query,
        )

    # --- output ---------------------------------------------------------------

    def response_head(self, status: int, headers: Headers, reason: bytes = b"") -> bytes:
        return self._writer.head(status, headers, reason)

    def response_head_again(self, data: bytes, length: int) -> bytes:
        """A head ``response_head`` made earlier on a kept-alive connection, for a 200
        with that Content-Length: sent again as it is (``ResponseWriter.head_again``)."""
        return self._writer.head_again(data, length)

    def body(self, data: bytes) -> bytes:
        return self._writer.body(data)

    def raw_body_owed(self) -> int:
        """Body bytes the response still owes under identity framing (Content-Length,
        sent as is), or -1: what may bypass ``body`` (``raw_body_sent``, e.g. splice)."""
        return self._writer.raw_owed()

    def raw_body_sent(self, size: int) -> None:
        self._writer.raw_sent(size)

    def end(self, trailers: Headers | None = None) -> bytes:
        return self._writer.end(trailers)

    def switching_protocols(self, headers: Headers, reason: bytes = b"") -> bytes:
        return self._writer.switching_protocols(headers, reason)

    def ended_keep_alive(self) -> bool:
        """The response was written whole and the connection stays open for another."""
        writer = self._writer
        return writer.done and not writer.must_close

    def keeps_alive(self) -> bool:
        """The connection stays open after the response being written."""
        return not self._writer.must_close
