"""The reference HTTP/1 server codec: h11 plus the proxy's own strictness.

``H11ServerCodec`` implements ``pingap.http1.ServerCodec`` with h11 and the checks both
codecs share (``pingap.http1``: head limits, the proxy's checks, the response writer).
It lives apart so that a worker serving only ``http1_codec = "fast"`` (the default)
never imports h11.
"""

from __future__ import annotations

import h11

from pingap.errors import DownstreamError
from pingap.events import (
    NEED_DATA,
    BodyReceived,
    ConnectionEnded,
    Event,
    MessageEnded,
    NeedData,
    RequestReceived,
)
from pingap.http1 import (
    BAD_HEAD_CHARS,
    MAX_BODY_LENGTH,
    BaseServerCodec,
    H1Limits,
    check_field_values,
    closed_before_head,
    forwardable_trailers,
)


class H11ServerCodec(BaseServerCodec):
    """The reference codec: h11 plus the proxy's own strictness. Each request cycle gets
    a fresh ``h11.Connection`` fed only complete heads."""

    def __init__(self, limits: H1Limits | None = None) -> None:
        super().__init__(limits)
        self._conn: h11.Connection | None = None

    # --- input ----------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        if not data:
            self._closed = True
        if self._conn is None:
            self._buf += data
        else:
            self._conn.receive_data(data)

    @property
    def request_in_progress(self) -> bool:
        """True while part of a request (head or body) has been received."""
        if self._conn is None:
            return bool(self._buf.strip(b"\r\n"))
        return self._conn.their_state is h11.SEND_BODY

    def next_event(self) -> Event | NeedData:
        if self._conn is None:
            end = self._scanner.scan(self._buf)
            if not end:
                if self._closed:
                    return closed_before_head(self._buf)
                return NEED_DATA
            if BAD_HEAD_CHARS.search(self._buf, 0, end):
                raise DownstreamError("control character in the request head", status=400)
            conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_head + 8192)
            conn.receive_data(bytes(self._buf))
            if self._closed:
                conn.receive_data(b"")
            self._buf.clear()
            self._conn = conn
            self._informational_sent = False
        try:
            event = self._conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise DownstreamError(str(exc) or "bad request",
                                  status=exc.error_status_hint) from exc
        if event is h11.NEED_DATA:
            self._check_chunk_size(0)
            return NEED_DATA
        if isinstance(event, h11.Request):
            return self._request(event)
        if isinstance(event, h11.Data):
            if event.chunk_start:
                self._check_chunk_size(len(event.data))
            return BodyReceived(data=bytes(event.data))
        if isinstance(event, h11.EndOfMessage):
            trailers = event.headers.raw_items()
            check_field_values(trailers)
            return MessageEnded(trailers=forwardable_trailers(trailers))
        if isinstance(event, h11.ConnectionClosed):
            return ConnectionEnded()
        if event is h11.PAUSED:
            return NEED_DATA
        raise DownstreamError(f"unexpected event {event!r}")

    def _check_chunk_size(self, first: int) -> None:
        """DownstreamError(400) for a chunk larger than ``MAX_BODY_LENGTH``, as soon as its
        size line is read: h11 takes up to 20 hex digits and tells the size to no one, so
        it is read from its chunked reader (what is left of the chunk after the ``first``
        bytes just returned)."""
        left = getattr(getattr(self._conn, "_reader", None), "_bytes_in_chunk", 0)
        if first + left > MAX_BODY_LENGTH:
            raise DownstreamError("chunk size too large", status=400)

    def _request(self, event: h11.Request) -> RequestReceived:
        headers = event.headers.raw_items()
        content_length: int | None = None
        chunked = False
        expect_continue = False
        close = False
        host: bytes | None = None
        for name, value in headers:
            low = name.lower()
            if low == b"content-length":
                content_length = int(value)
            elif low == b"transfer-encoding":
                chunked = True
            elif low == b"host":
                host = value
            elif low == b"connection":
                close = close or b"close" in value.lower()
            elif low == b"expect" and value.lower() == b"100-continue":
                expect_continue = True
        return self._checked_request(
            event.method, event.target, event.http_version, headers,
            content_length=content_length, chunked=chunked, host=host, close=close,
            expect_continue=expect_continue)

    # --- output ---------------------------------------------------------------

    def informational(self, status: int) -> bytes:
        if self._informational_sent or self._conn is None:
            return b""
        self._informational_sent = True
        return self._writer.informational(status)

    def detach(self) -> bytes:
        """After a 101: the bytes the client sent past its request (new protocol)."""
        if self._conn is None:
            return bytes(self._buf)
        return bytes(self._conn.trailing_data[0])

    def reusable(self) -> bool:
        conn = self._conn
        writer = self._writer
        return (conn is not None and conn.their_state is h11.DONE and writer.done
                and not writer.must_close and not self._closed)

    def start_next_cycle(self) -> None:
        assert self._conn is not None
        data, closed = self._conn.trailing_data
        self._buf = bytearray(data)
        self._scanner.reset()
        self._closed = self._closed or closed
        self._conn = None
        self._writer.start(b"GET", b"1.1", False)
