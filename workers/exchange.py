"""One request/response exchange, whatever the downstream protocol.

``Exchange`` is the protocol-independent half of a downstream connection: it runs a
``ProxySession`` for one request — local answers, plugin answers, the upstream
exchange with retries, streaming both ways — and talks to the client only through a
few hooks that the HTTP/1 connection (``workers.h1``) and the HTTP/2 stream
(``workers.h2``) implement:

- ``next_event()``: the next request body event (BodyReceived / MessageEnded);
- ``write_head`` / ``write_body`` / ``write_end``: the response, possibly buffered
  until ``flush()`` (HTTP/1 sends the head with the first body piece in one write);
- ``send_informational(status)``: a 1xx (100-continue);
- ``mark_close(headers)``: say the connection closes after this response (HTTP/1's
  ``Connection: close``; nothing in HTTP/2);
- ``switch_protocols(...)``: the 101 tunnel (HTTP/1 only).

Timeouts use ``deadline`` (monotonic seconds, 0 = none): the worker's sweeper raises
TimeoutError in the exchange's greenlet once it passes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import gevent

from pingap.actions import Forward, Respond
from pingap.context import ConnectionInfo
from pingap.errors import (
    DownstreamError,
    PingapError,
    UpstreamError,
    UpstreamTimeout,
)
from pingap.events import (
    BodyReceived,
    Headers,
    MessageEnded,
    RequestReceived,
)
from pingap.h1client import (
    ResponseData,
    ResponseEnded,
    ResponseReader,
    ResponseStarted,
    UpstreamProtocolError,
    chunk,
    last_chunk,
    request_head,
)
from pingap.plugins import plugin_response
from pingap.session import ProxySession
from workers.pool import connect

if TYPE_CHECKING:
    from pingap.runtime import ServerRuntime, UpstreamRuntime
    from workers.pool import UpstreamConnection
    from workers.worker import Worker

log = logging.getLogger("pingap.exchange")

READ_SIZE = 65536
DEFAULT_UPSTREAM_TIMEOUT = 60.0


class ClientGone(Exception):
    """The client connection (or HTTP/2 stream) failed or closed while we talked to it."""


class StaleConnection(Exception):
    """A reused upstream connection died before any response byte."""


class Exchange:
    """Serves requests through ``ProxySession``; subclasses supply the downstream I/O."""

    worker: Worker
    server: ServerRuntime
    conn: ConnectionInfo
    deadline: float
    busy: bool
    body_done: bool

    # --- downstream hooks -------------------------------------------------------

    def next_event(self) -> object:
        raise NotImplementedError

    def write_head(self, status: int, headers: Headers, reason: bytes = b"") -> None:
        raise NotImplementedError

    def write_body(self, data: bytes) -> None:
        raise NotImplementedError

    def write_end(self, trailers: Headers | None) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        raise NotImplementedError

    def send_informational(self, status: int) -> None:
        raise NotImplementedError

    def mark_close(self, headers: Headers) -> None:
        """Announce that the connection closes after this response."""

    def switch_protocols(self, up: UpstreamConnection, session: ProxySession,
                         events: Sequence[object], upstream_leftover: bytes) -> tuple[int, bool]:
        raise _UpstreamFailed(UpstreamError("protocol switch is not possible here"), False)

    # --- one request ------------------------------------------------------------

    def serve(self, request: RequestReceived) -> bool:
        """Handle one request; True if the connection may carry another."""
        server = self.server
        worker = self.worker
        now = time.monotonic()
        session = ProxySession(worker.runtime, server, self.conn, request,
                               now=now, wall=time.time())
        server.processing += 1
        server.accepted += 1
        self.body_done = False
        size = 0
        keep = False
        metrics = worker.metrics
        counted = False
        try:
            if server.prometheus_metrics == session.ctx.path:
                size, keep = self.respond(request, plugin_response(
                    200, worker.metrics_text().encode(),
                    b"text/plain; version=0.0.4; charset=utf-8"))
                return keep
            challenge = worker.acme_answer(session.ctx.path)
            if challenge is not None:
                size, keep = self.respond(request, challenge)
                return keep
            decision = session.route()
            if metrics is not None and session.location is not None:
                metrics.request_started(server.name, session.location.name,
                                        self.conn.requests > 1)
                counted = True
            if isinstance(decision, Forward):
                size, keep = self.proxy(session, request, decision.upstream)
            else:
                size, keep = self.respond(request, decision)
        except ClientGone:
            keep = False
        finally:
            server.processing -= 1
            ctx = session.finish(now=time.monotonic(), size=size)
            if counted:
                assert metrics is not None
                metrics.request_finished(server.name, ctx,
                                         session.upstream.name if session.upstream else None)
            worker.log_request(server, ctx)
        return keep

    # --- local answers ----------------------------------------------------------

    def respond(self, request: RequestReceived, answer: Respond) -> tuple[int, bool]:
        close = answer.close or self.worker.draining
        if not self.body_done:
            if request.has_body:
                close = True  # the unread body makes the connection unusable
            else:
                self.finish_request_body()
        headers = list(answer.headers)
        if close:
            self.mark_close(headers)
        if answer.delay:
            gevent.sleep(answer.delay)
        self.write_head(answer.status, headers)
        if request.method != b"HEAD" and answer.body:
            self.write_body(answer.body)
        self.write_end(None)
        self.flush()
        return len(answer.body), not close

    def finish_request_body(self) -> None:
        """Consume the end of a body-less request so the codec can start a new cycle."""
        event = self.next_event()
        if not isinstance(event, MessageEnded):
            raise DownstreamError("unexpected request body")
        self.body_done = True

    def fail(self, session: ProxySession, request: RequestReceived,
             err: PingapError, head_sent: bool) -> tuple[int, bool]:
        if head_sent:
            raise ClientGone(f"upstream failed mid-response: {err.message}")
        log.warning("%s %s -> %s: %s", request.method.decode(), session.ctx.uri,
                    session.ctx.upstream_addr or "-", err.message)
        answer = session.error(err)
        return self.respond(request, Respond(status=answer.status, headers=answer.headers,
                                             body=answer.body, close=True))

    # --- proxying ---------------------------------------------------------------

    def proxy(self, session: ProxySession, request: RequestReceived,
              upstream: UpstreamRuntime) -> tuple[int, bool]:
        ctx = session.ctx
        pool = self.worker.pool
        replayable = not request.has_body
        fresh_only = False
        while True:
            try:
                backend = session.next_backend()
            except PingapError as err:
                return self.fail(session, request, err, False)
            method, target, headers = session.upstream_request()
            select_start = time.monotonic()
            try:
                if fresh_only:
                    up, connect_time = connect(upstream, backend)
                    reused = False
                else:
                    up, reused, connect_time = pool.acquire(upstream, backend)
            except UpstreamError as err:
                if err.retryable and session.may_retry(time.monotonic()):
                    continue
                return self.fail(session, request, err, False)
            ctx.upstream_reused = reused
            ctx.upstream_connect_time = time.monotonic() - select_start
            if not reused:
                ctx.upstream_tcp_connect_time = connect_time
            ctx.upstream_connection_time = time.monotonic() - up.created
            up.requests += 1
            try:
                self.send_request(up, upstream, method, target, headers, request, session)
                return self.relay_response(up, upstream, session, request, reused)
            except StaleConnection:
                up.close()
                if reused and replayable:
                    session.forget_backend(backend)
                    fresh_only = True
                    continue
                return self.fail(session, request,
                                 UpstreamError("upstream closed the connection"), False)
            except DownstreamError as err:
                up.close()
                return self.fail(session, request, err, False)
            except ClientGone:
                up.close()
                raise
            except _UpstreamFailed as failed:
                up.close()
                return self.fail(session, request, failed.err, failed.head_sent)

    def send_upstream(self, up: UpstreamConnection, upstream: UpstreamRuntime,
                      data: bytes) -> None:
        if not data:
            return
        self.deadline = time.monotonic() + (upstream.write_timeout or DEFAULT_UPSTREAM_TIMEOUT)
        try:
            up.sock.sendall(data)
        except TimeoutError as exc:
            raise _UpstreamFailed(UpstreamTimeout("upstream write timed out"), False) from exc
        except OSError as exc:
            if up.requests > 1:
                raise StaleConnection() from exc
            raise _UpstreamFailed(UpstreamError(f"upstream write failed: {exc}"),
                                  False) from exc
        finally:
            self.deadline = 0.0

    def send_request(self, up: UpstreamConnection, upstream: UpstreamRuntime,
                     method: bytes, target: bytes, headers: list[tuple[bytes, bytes]],
                     request: RequestReceived, session: ProxySession) -> None:
        """Send the head, then stream the body as the client sends it."""
        head = request_head(method, target, headers)
        if not request.has_body:
            if not self.body_done:
                self.finish_request_body()
            self.send_upstream(up, upstream, head)
            return
        self.send_upstream(up, upstream, head)
        if request.expect_continue:
            self.send_informational(100)
        chunked = request.chunked
        received = 0
        while True:
            event = self.next_event()
            if isinstance(event, BodyReceived):
                received += len(event.data)
                session.check_body_size(received)
                self.send_upstream(up, upstream, chunk(event.data) if chunked else event.data)
            elif isinstance(event, MessageEnded):
                self.body_done = True
                if chunked:
                    self.send_upstream(up, upstream, last_chunk(event.trailers))
                return
            else:
                raise ClientGone("client closed during the request body")

    def relay_response(self, up: UpstreamConnection, upstream: UpstreamRuntime,
                       session: ProxySession, request: RequestReceived,
                       reused: bool) -> tuple[int, bool]:
        """Stream the upstream response to the client; (body bytes, keep-alive)."""
        ctx = session.ctx
        sock = up.sock
        read_timeout = upstream.read_timeout or DEFAULT_UPSTREAM_TIMEOUT
        reader = ResponseReader(request.method, may_upgrade=session.upgrade is not None)
        sent_at = body_start = time.monotonic()
        head_sent = False
        got_bytes = False
        close = False
        size = 0
        while True:
            self.deadline = time.monotonic() + read_timeout
            try:
                data = sock.recv(READ_SIZE)
            except TimeoutError as exc:
                raise _UpstreamFailed(UpstreamTimeout("upstream read timed out"),
                                      head_sent) from exc
            except OSError as exc:
                if reused and not got_bytes:
                    raise StaleConnection() from exc
                raise _UpstreamFailed(UpstreamError(f"upstream read failed: {exc}"),
                                      head_sent) from exc
            finally:
                self.deadline = 0.0
            if not data and reused and not got_bytes:
                raise StaleConnection()
            got_bytes = got_bytes or bool(data)
            try:
                events = reader.feed(data)
            except UpstreamProtocolError as exc:
                raise _UpstreamFailed(UpstreamError(str(exc)), head_sent) from exc
            if reader.upgraded:
                return self.switch_protocols(up, session, events, reader.leftover)
            wrote = False
            for event in events:
                wrote = True
                if isinstance(event, ResponseData):
                    size += len(event.data)
                    self.write_body(event.data)
                elif isinstance(event, ResponseStarted):
                    now = time.monotonic()
                    ctx.upstream_processing_time = now - sent_at
                    body_start = now
                    headers = session.response_headers(event.status, event.headers)
                    close = self.worker.draining or not request.keep_alive
                    if close:
                        self.mark_close(headers)
                    self.write_head(event.status, headers, event.reason)
                else:
                    assert isinstance(event, ResponseEnded)
                    ctx.upstream_response_time = time.monotonic() - body_start
                    self.write_end(event.trailers)
                    self.flush()
                    self.worker.pool.release(up, reusable=event.keep_alive)
                    return size, not close
            if wrote:
                # one write per read: the head goes out with the first piece of body
                self.flush()
                head_sent = True


class _UpstreamFailed(Exception):
    def __init__(self, err: PingapError, head_sent: bool) -> None:
        self.err = err
        self.head_sent = head_sent
