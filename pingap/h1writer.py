"""Serialising HTTP/1.1 responses to clients, with the framing decided here — no I/O.

Every HTTP/1 codec (h11-based or httptools-based) parses requests its own way and writes
responses with this one writer, so framing is the same whatever parser is in use:

* HEAD requests and 1xx/204/304 responses carry no body;
* a response with Content-Length is sent as is;
* otherwise HTTP/1.1 clients get ``Transfer-Encoding: chunked`` (trailers allowed) and
  HTTP/1.0 clients a close-delimited body;
* ``Connection: close`` is added when the connection will be closed (client asked, HTTP/1.0,
  close-delimited body, or the caller wants it).

Header names and values are checked before anything is sent: a name that is not a token
or a value with CR, LF or NUL raises ``DownstreamError(500)`` (no response splitting).
"""

from __future__ import annotations

import re
from http import HTTPStatus

from pingap.errors import DownstreamError
from pingap.headers import Headers

REASONS = {s.value: s.phrase.encode("ascii") for s in HTTPStatus}
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
#: the framing fields ``head`` decides itself
_FRAMING = frozenset({b"content-length", b"connection", b"transfer-encoding"})
#: header names already checked, with their lower-case form (bounded: names come from
#: upstreams and plugins)
_checked_names: dict[bytes, bytes] = {}


def _field(name: bytes, value: bytes) -> bytes:
    """One ``Name: value`` line, refused if it could split the message."""
    _checked_lower(name)
    if _BAD_VALUE.search(value):
        raise DownstreamError(
            f"cannot send response: invalid value for header {name!r}", status=500)
    return b"%s: %s\r\n" % (name, value)


def _checked_lower(name: bytes) -> bytes:
    """``name`` lower-cased, once it is known to be a token (DownstreamError if not)."""
    low = _checked_names.get(name)
    if low is None:
        if not _TOKEN.fullmatch(name):
            raise DownstreamError(f"cannot send response: invalid header name {name!r}",
                                  status=500)
        low = name.lower()
        if len(_checked_names) < 4096:
            _checked_names[name] = low
    return low


def _refuse(headers: Headers) -> None:
    """The head holds a CR, LF or NUL where none may be: name the field it came from."""
    for name, value in headers:
        if _BAD_VALUE.search(value):
            raise DownstreamError(
                f"cannot send response: invalid value for header {name!r}", status=500)
    raise DownstreamError("cannot send response: invalid reason phrase", status=500)


class ResponseWriter:
    """One response at a time on one client connection."""

    __slots__ = ("_chunked", "_no_body", "_remaining", "done", "head_sent", "http11",
                 "is_head", "keep_alive", "must_close")

    def __init__(self) -> None:
        self.start(b"GET", b"1.1", False)

    def start(self, method: bytes, http_version: bytes, keep_alive: bool) -> None:
        """Prepare for the response to a request (its method, version, keep-alive wish)."""
        self.is_head = method == b"HEAD"
        self.http11 = http_version == b"1.1"
        self.keep_alive = keep_alive and self.http11
        self.must_close = not self.keep_alive
        self.head_sent = False
        self.done = False
        self._chunked = False
        self._no_body = False
        self._remaining = -1  # bytes still owed under Content-Length; -1: no length

    def informational(self, status: int) -> bytes:
        if not self.http11 or self.head_sent:
            return b""
        return b"HTTP/1.1 %d %s\r\n\r\n" % (status, REASONS.get(status, b""))

    def switching_protocols(self, headers: Headers, reason: bytes = b"") -> bytes:
        """The 101 head that ends HTTP on this connection (Upgrade pass-through)."""
        lines = [b"HTTP/1.1 101 %s\r\n" % (reason or REASONS[101])]
        lines += [_field(name, value) for name, value in headers]
        lines.append(b"\r\n")
        self.head_sent = self.done = self.must_close = True
        return b"".join(lines)

    def head(self, status: int, headers: Headers, reason: bytes = b"") -> bytes:
        if not 200 <= status <= 999:
            raise DownstreamError(f"cannot send response: bad status {status}", status=500)
        must_close = self.must_close
        has_connection = False
        length = -1
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason or REASONS.get(status, b""))]
        append = lines.append
        for name, value in headers:
            low = _checked_names.get(name) or _checked_lower(name)
            if low in _FRAMING:
                if low == b"content-length":
                    if not value.isdigit() or (length >= 0 and int(value) != length):
                        raise DownstreamError("cannot send response: bad Content-Length",
                                              status=500)
                    length = int(value)
                elif low == b"connection":
                    if b"close" in value.lower():
                        must_close = True
                        has_connection = True
                    elif must_close:
                        # "keep-alive" from the caller would contradict the close
                        if _BAD_VALUE.search(value):  # not sent, still a caller's bug
                            _refuse(headers)
                        continue
                    else:
                        has_connection = True
                else:  # transfer-encoding: framing is decided below
                    if _BAD_VALUE.search(value):
                        _refuse(headers)
                    continue
            append(b"%s: %s\r\n" % (name, value))
        no_body = chunked = False
        remaining = -1
        if self.is_head or status in (204, 304):
            no_body = True
        elif length >= 0:
            remaining = length
        elif self.http11:
            chunked = True
            append(b"Transfer-Encoding: chunked\r\n")
        else:
            must_close = True
        if must_close and not has_connection:
            append(b"Connection: close\r\n")
        append(b"\r\n")
        data = b"".join(lines)
        # one scan of the whole head instead of three per value: each line holds exactly
        # one CR and one LF, its end, and no line holds a NUL
        if data.count(b"\n") != len(lines) or data.count(b"\r") != len(lines) \
                or b"\x00" in data:
            _refuse(headers)
        self.must_close = must_close
        self._no_body = no_body
        self._chunked = chunked
        self._remaining = remaining
        self.head_sent = True
        return data

    def head_again(self, data: bytes, length: int) -> bytes:
        """``data``, a head ``head`` made earlier for a 200 with ``Content-Length:
        length`` and no Connection field while the connection stayed open, sent for a
        new response: the writer's state becomes what ``head`` would have left. Only
        while the connection stays open and the request is not HEAD (a kept head
        carries no ``Connection: close``)."""
        if self.must_close or self.is_head:
            raise DownstreamError("cannot send response: a kept head does not apply",
                                  status=500)
        self._no_body = False
        self._chunked = False
        self._remaining = length
        self.head_sent = True
        return data

    def body(self, data: bytes) -> bytes:
        if self._no_body or not data:
            return b""
        if self._chunked:
            return b"%x\r\n%s\r\n" % (len(data), data)
        if self._remaining >= 0:
            if len(data) > self._remaining:
                raise DownstreamError("response body longer than its Content-Length",
                                      status=500)
            self._remaining -= len(data)
        return data

    def raw_owed(self) -> int:
        """Bytes still owed under Content-Length framing; -1 if the body is framed
        (chunked), absent, or unbounded."""
        if self._no_body or self._chunked:
            return -1
        return self._remaining

    def raw_sent(self, size: int) -> None:
        """``size`` body bytes went to the client without passing through ``body``."""
        if size > self._remaining:
            raise DownstreamError("response body longer than its Content-Length", status=500)
        self._remaining -= size

    def end(self, trailers: Headers | None = None) -> bytes:
        self.done = True
        if not self._chunked:
            if self._remaining > 0:
                raise DownstreamError("response body shorter than its Content-Length",
                                      status=500)
            return b""
        if not trailers:
            return b"0\r\n\r\n"
        return b"".join([b"0\r\n", *(_field(n, v) for n, v in trailers), b"\r\n"])
