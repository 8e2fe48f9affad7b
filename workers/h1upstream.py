"""HTTP/1.1 to a backend as a stream: what ``workers.h2upstream.H2UpstreamStream`` speaks.

An ``H1UpstreamStream`` is one request on one pooled ``UpstreamConnection``. The request
head goes out with the first ``send_data`` (chunk-framed when the request body is
chunked) or with ``end``, in one send; ``next_events`` reads once and returns the
response events (``pingap.events``) that read produced, so the relay loop in
``workers.exchange`` makes one write to the client per read. ``raw_owed``/``splice`` let
that loop move the rest of a Content-Length body socket to socket in the kernel
(``workers.splice``).

Timeouts go through the deadline of the ``owner`` (the downstream connection or HTTP/2
stream whose greenlet runs this): the accept loop's sweeper raises TimeoutError in that
greenlet once it passes. A reused connection that fails before any response byte raises
``StaleConnection`` (retryable: the backend closed it while it sat idle).
"""

from __future__ import annotations

import socket
import time
from typing import Protocol

from pingap.errors import ClientGone, StaleConnection, UpstreamError, UpstreamProtocolError, UpstreamTimeout
from pingap.events import ResponseEnded, ResponseEvent
from pingap.h1client import ResponseReader, chunk, last_chunk
from pingap.headers import Headers
from workers import splice
from workers.pool import UpstreamConnection
from workers.sockio import recv_later, send_all, send_later

READ_SIZE = 65536
#: the first read of a response: its head and the start of its body. Smaller than the
#: others so that more of a large Content-Length body goes by splice, in the kernel,
#: instead of through a Python bytes object both ways (100 KB: +12 % requests per worker
#: CPU-second, median of ten same-run pairs). A body of 16-48 KB takes one more read.
FIRST_READ_SIZE = 16384


class DeadlineOwner(Protocol):
    deadline: float


class H1UpstreamStream:
    """One request/response on an HTTP/1.1 connection; used by one greenlet."""

    __slots__ = ("chunked", "conn", "got_bytes", "head", "owner", "reader", "reused",
                 "reusable", "write_timeout")

    def __init__(self, conn: UpstreamConnection, owner: DeadlineOwner, method: bytes,
                 head: bytes, *, chunked: bool, reused: bool, may_upgrade: bool,
                 write_timeout: float) -> None:
        self.conn = conn
        self.owner = owner
        self.chunked = chunked
        self.reused = reused
        self.write_timeout = write_timeout
        self.reader = ResponseReader(method, may_upgrade=may_upgrade)
        self.got_bytes = False
        #: the connection may serve another request (the response ended with keep-alive)
        self.reusable = False
        self.head = head  # sent with the first body piece, or by ``end``

    @property
    def upgraded(self) -> bool:
        """The backend switched protocols (101): ``leftover`` is already the new one."""
        return self.reader.upgraded

    @property
    def leftover(self) -> bytes:
        return self.reader.leftover

    # --- the request --------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        owner = self.owner
        owner.deadline = time.monotonic() + self.write_timeout
        try:
            send_all(self.conn.sock, data)
        except TimeoutError as exc:
            raise UpstreamTimeout("upstream write timed out") from exc
        except OSError as exc:
            if self.conn.requests > 1:
                raise StaleConnection("upstream closed the connection") from exc
            raise UpstreamError(f"upstream write failed: {exc}") from exc
        finally:
            owner.deadline = 0.0

    def send_data(self, data: bytes) -> None:
        if data:
            framed = chunk(data) if self.chunked else data
            if self.head:
                framed = self.head + framed
                self.head = b""
            self._send(framed)

    def end(self, trailers: Headers | None = None) -> None:
        """The request is complete (its head is sent now at the latest)."""
        tail = last_chunk(trailers) if self.chunked else b""
        if self.head:
            tail = self.head + tail
            self.head = b""
        # a body-less request's head goes with the loop turn's other writes
        # (``workers.sockio``); if it fails, the read that follows sees the connection end
        if tail and not send_later(self.conn.sock, [tail], self.write_timeout):
            self._send(tail)

    # --- the response -------------------------------------------------------------------

    def next_events(self, timeout: float) -> list[ResponseEvent]:
        """The events of one read (waiting up to ``timeout`` seconds for it)."""
        owner = self.owner
        owner.deadline = time.monotonic() + timeout
        try:
            if self.got_bytes:
                data = self.conn.sock.recv(READ_SIZE)
            else:
                data = recv_later(self.conn.sock, FIRST_READ_SIZE)
        except TimeoutError as exc:
            raise UpstreamTimeout("upstream read timed out") from exc
        except OSError as exc:
            if self.reused and not self.got_bytes:
                raise StaleConnection("upstream closed the connection") from exc
            raise UpstreamError(f"upstream read failed: {exc}") from exc
        finally:
            owner.deadline = 0.0
        if not data and self.reused and not self.got_bytes:
            raise StaleConnection("upstream closed the connection")
        self.got_bytes = True
        try:
            events = self.reader.feed(data)
        except UpstreamProtocolError as exc:
            raise UpstreamError(str(exc)) from exc
        if events and type(events[-1]) is ResponseEnded:
            self.reusable = events[-1].keep_alive
        return events

    def raw_owed(self) -> int:
        """Body bytes still owed under a Content-Length, or -1 (no length, or done)."""
        reader = self.reader
        if reader.started and not reader.done and reader.content_length >= 0:
            return reader.content_length - reader.body_seen
        return -1

    def splice(self, sink: socket.socket, owed: int, timeout: float) -> ResponseEnded | None:
        """The rest of the body (``owed`` bytes) to ``sink`` in the kernel; None when the
        sockets cannot splice (TLS on either side). The response head was sent already.
        A failure raises ``UpstreamError`` (``UpstreamTimeout``) for the backend's side,
        ``ClientGone`` for the client's."""
        src = self.conn.sock
        if not splice.usable(src, sink):
            return None
        pipe = splice.acquire()
        clean = False
        try:
            pipe.forward(src, sink, owed, timeout)
            clean = True
        except splice.SpliceError as exc:
            if not exc.upstream:
                raise ClientGone(str(exc)) from exc
            raise (UpstreamTimeout(str(exc)) if exc.timeout else UpstreamError(str(exc))) from exc
        finally:
            splice.release(pipe, clean=clean)
        ended = self.reader.body_skipped()
        self.reusable = ended.keep_alive
        return ended

    def reset(self) -> None:
        """Abandon the exchange: the connection cannot carry another request."""
        self.reusable = False
        self.conn.close()
