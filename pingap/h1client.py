"""The upstream side of HTTP/1.1: request bytes out, response events in — no I/O.

Requests are serialised directly (their headers were validated on the way in: by the
downstream codec or at config load). Responses are parsed with httptools (llhttp, strict
mode), which is several times cheaper than a pure-Python parser on the hot path.
``ResponseReader`` turns llhttp's callbacks into three events: ``ResponseStarted``
(informational 1xx responses are skipped), ``ResponseData`` and ``ResponseEnded`` (with
trailers and whether the connection may be reused). End of input is ``feed(b"")``: it ends
a close-delimited body, and is an error anywhere else.
"""

from __future__ import annotations

import httptools

from pingap.errors import UpstreamProtocolError
from pingap.events import ResponseData, ResponseEnded, ResponseEvent, ResponseStarted
from pingap.headers import Headers


def request_head(method: bytes, target: bytes, headers: Headers) -> bytes:
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data) if data else b""


def last_chunk(trailers: Headers | None = None) -> bytes:
    if not trailers:
        return b"0\r\n\r\n"
    return b"0\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in trailers) + b"\r\n"


class ResponseReader:
    """Parses one response to a request of ``method`` (HEAD responses have no body)."""

    __slots__ = ("_close_delimited", "_events", "_extra", "_head_done", "_headers",
                 "_is_head", "_parser", "_reason", "_trailers", "body_seen",
                 "content_length", "done", "keep_alive", "leftover", "may_upgrade",
                 "started", "upgraded")

    def __init__(self, method: bytes, *, may_upgrade: bool = False) -> None:
        #: the request asked to switch protocols (Upgrade): a 101 ends the HTTP exchange
        self.may_upgrade = may_upgrade
        self.upgraded = False
        self.leftover = b""  # bytes after a 101 head: already the new protocol
        self._is_head = method == b"HEAD"
        self._parser = httptools.HttpResponseParser(self)
        self._events: list[ResponseEvent] = []
        self._headers: Headers = []
        self._trailers: Headers = []
        self._reason = b""
        self._head_done = False
        self._close_delimited = False
        self._extra = False     # bytes after the end of the response
        self.started = False   # a final response head was seen
        self.done = False
        self.keep_alive = False
        #: the final response's Content-Length when it frames the body (-1 otherwise), and
        #: the body bytes parsed so far: what ``skip_body`` needs
        self.content_length = -1
        self.body_seen = 0

    # llhttp callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.done:
            self._extra = True

    def on_status(self, reason: bytes) -> None:
        self._reason += reason  # llhttp may deliver it in pieces

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.done:
            self._extra = True
            return
        (self._trailers if self._head_done else self._headers).append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if self.done:
            self._extra = True
            return
        if status == 101 and self.may_upgrade:
            headers, self._headers = self._headers, []
            self.started = self._head_done = self.upgraded = True
            self._events.append(ResponseStarted(status=101, reason=self._reason,
                                                headers=headers,
                                                http_version=self._parser.get_http_version()))
            self._finish(keep_alive=False)
            return
        if status < 200:
            if status == 101:
                raise UpstreamProtocolError("upstream switched protocols unasked")
            self._headers = []  # 100 Continue & co: not forwarded
            self._reason = b""
            return
        self._head_done = True
        self.started = True
        headers, self._headers = self._headers, []
        self._events.append(ResponseStarted(status=status, reason=self._reason,
                                            headers=headers,
                                            http_version=self._parser.get_http_version()))
        if self._is_head:
            # llhttp does not know the request was HEAD: judge keep-alive from the head
            close = any(n.lower() == b"connection" and b"close" in v.lower()
                        for n, v in headers)
            self._finish(keep_alive=not close and self._parser.get_http_version() == "1.1")
            return
        if status in (204, 304):
            return
        coding = b""
        has_length = False
        for name, value in headers:
            low = name.lower()
            if low == b"content-length":
                has_length = True
                if value.isdigit():
                    self.content_length = int(value)
            elif low == b"transfer-encoding":
                coding = value.lower()
        if coding:
            self.content_length = -1
        # RFC 9112 §6.3: no length, or a transfer coding that is not chunked, is read
        # until the connection closes
        self._close_delimited = (not coding and not has_length) or (
            bool(coding) and not coding.rstrip().endswith(b"chunked"))

    def on_body(self, body: bytes) -> None:
        if self.done:
            self._extra = True
        elif body:
            self.body_seen += len(body)
            self._events.append(ResponseData(data=body))

    def on_message_complete(self) -> None:
        if self._head_done and not self.done:
            self._finish(keep_alive=self._parser.should_keep_alive())

    def _finish(self, *, keep_alive: bool) -> None:
        self.done = True
        self.keep_alive = keep_alive
        self._events.append(ResponseEnded(trailers=self._trailers, keep_alive=keep_alive))

    def body_skipped(self) -> ResponseEnded:
        """The rest of a Content-Length body went around the parser (``splice``): end the
        response as llhttp would have, keep-alive judged from the head."""
        assert self.started and not self.done and self.content_length >= 0
        keep_alive = self._parser.should_keep_alive()
        self._finish(keep_alive=keep_alive)
        self._release()
        events, self._events = self._events, []
        ended = events[-1]
        assert isinstance(ended, ResponseEnded)
        return ended

    # input -----------------------------------------------------------------------------

    def feed(self, data: bytes) -> list[ResponseEvent]:
        """Events from ``data``; ``b""`` means the backend closed the connection."""
        if self.done:
            if data and not self.upgraded:
                raise UpstreamProtocolError("data after the end of the response")
            return []
        if not data:
            if self._head_done and self._close_delimited:
                self._finish(keep_alive=False)
                self._release()
                events, self._events = self._events, []
                return events
            raise UpstreamProtocolError("upstream closed the connection mid-response"
                                        if self.started else "upstream closed the connection")
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            if not self.upgraded:
                raise UpstreamProtocolError("upstream switched protocols unasked") from exc
            self.leftover = data[int(exc.args[0]):]
            self._release()
            events, self._events = self._events, []
            return events
        except httptools.HttpParserError as exc:
            raise UpstreamProtocolError(f"invalid upstream response: {exc}") from exc
        if self._extra:
            raise UpstreamProtocolError("upstream sent data after the end of the response")
        if self.done:
            self._release()
        events, self._events = self._events, []
        return events

    def _release(self) -> None:
        """Drop the finished parser. It holds this reader's bound callbacks and the reader
        holds it: without this each response left a cycle (a parser, eight bound methods,
        the reader) for the garbage collector instead of being freed at once."""
        del self._parser
