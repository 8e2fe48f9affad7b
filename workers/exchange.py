"""One request/response exchange, whatever the protocol on either side.

A downstream connection creates one ``Exchange`` per request (an HTTP/1.1 connection per
request it reads, an HTTP/2 connection per stream) and calls ``serve``. The exchange runs
a ``ProxySession`` — local answers, plugin answers, the upstream exchange with retries —
using only the worker's ``RequestServices`` and the ``Downstream`` it was given, whose
hooks the HTTP/1 connection (``workers.h1``) and the HTTP/2 stream (``workers.h2``)
implement:

- ``next_event()``: the next request body event (BodyReceived / MessageEnded);
- ``write_head`` / ``write_body`` / ``write_end``: the response, possibly buffered
  until ``flush()`` (HTTP/1 sends the head with the first body piece in one write);
- ``send_informational(status)``: a 1xx (100-continue);
- ``mark_close(headers)``: say the connection closes after this response (HTTP/1's
  ``Connection: close``; nothing in HTTP/2);
- ``raw_sink(owed)`` / ``raw_body_sent(n)``: the client socket for a kernel splice or
  ``sendfile``;
- ``switch_protocols(...)``: the 101 tunnel (HTTP/1 only).

The exchange reads the request body through its own ``next_event``, which replays a body
read whole first (``workers.spool``) when the location buffers request bodies.

The upstream side is one relay loop for both protocols: an ``H1UpstreamStream``
(``workers.h1upstream``) and an ``H2UpstreamStream`` (``workers.h2upstream``) speak the
same calls (``send_data``, ``end``, ``next_events``, ``reset``), so one pump sends the
request body, one loop relays the response, and one ``finally`` gives the connection
back to the pool. Each read's events go to the client in one flush (the head with the
first piece of body). Body rewriters run there chunk by chunk for either protocol: the
gRPC-Web translation (a ``ResponseFilter``) and the body filters plugins install on the
request context with the response head (``RequestContext.body_filters``: compression,
sub_filter, ...); a filter that must see the whole body first (``whole_body``) holds the
head back until its output. With none, a Content-Length body from a plaintext HTTP/1.1
backend to a plaintext HTTP/1.1 client is spliced in the kernel.

Timeouts use the downstream's ``deadline`` (monotonic seconds, 0 = none): the accept
loop's sweeper raises TimeoutError in the greenlet once it passes. HTTP/2 upstream waits
time out by themselves (an exception thrown into a half-written frame would break the
connection for every stream on it). Either upstream stream reports a timeout as
``UpstreamTimeout``, like its other failures (``pingap.errors``).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

import gevent

from pingap.actions import Forward, Respond
from pingap.admin.api import AdminCall
from pingap.context import ConnectionInfo, RequestContext
from pingap.errors import (
    ClientGone,
    DownstreamError,
    PingapError,
    UpstreamError,
)
from pingap.events import (
    BodyReceived,
    MessageEnded,
    RequestReceived,
    ResponseData,
    ResponseStarted,
)
from pingap.grpcweb import GrpcWebBridge, is_grpc_web
from pingap.h1client import request_head
from pingap.headers import Headers, header_value
from pingap.plugins import plugin_response
from pingap.session import ProxySession
from workers import splice
from workers.admin import body_reader
from workers.h1upstream import H1UpstreamStream
from workers.h2upstream import H2UpstreamConnection, H2UpstreamStream
from workers.local_body import ClientWriteFailed, write_local_body
from workers.pool import UpstreamConnection
from workers.spool import spool_body

if TYPE_CHECKING:
    from pingap.runtime import ServerRuntime, UpstreamRuntime
    from workers.services import RequestServices

log = logging.getLogger("pingap.exchange")

DEFAULT_UPSTREAM_TIMEOUT = 60.0
METRICS_CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

UpstreamStream = H1UpstreamStream | H2UpstreamStream
#: methods sent again on a fresh connection when a pooled one turns out closed
_REPLAYABLE = frozenset({b"GET", b"HEAD", b"OPTIONS"})


class ResponseFilter(Protocol):
    """Rewrites a response on its way to the client, one chunk at a time."""

    def response_headers(self, headers: Headers) -> Headers: ...
    def response_body(self, data: bytes) -> bytes: ...
    def response_end(self, trailers: Headers) -> bytes: ...


class Downstream:
    """The client side of one exchange: an HTTP/1.1 connection or an HTTP/2 stream."""

    services: RequestServices
    server: ServerRuntime
    conn: ConnectionInfo
    #: monotonic seconds after which the sweeper times the greenlet out (0 = none)
    deadline: float

    def next_event(self) -> object:
        raise NotImplementedError

    def write_head(self, status: int, headers: Headers, reason: bytes = b"") -> None:
        raise NotImplementedError

    def write_body(self, data: bytes) -> None:
        raise NotImplementedError

    def write_end(self, trailers: Headers | None) -> None:
        raise NotImplementedError

    def flush(self, more: bool = False) -> None:
        """Send what was written. ``more``: the caller writes to ``raw_sink`` at once, so a
        plaintext HTTP/1 connection may hold these bytes back to go out with that data."""
        raise NotImplementedError

    def send_informational(self, status: int) -> None:
        raise NotImplementedError

    def mark_close(self, headers: Headers) -> None:
        """Announce that the connection closes after this response."""

    def raw_sink(self, owed: int) -> socket.socket | None:
        """The client socket, if the next ``owed`` response bytes may go to it as they
        are (identity framing): the splice path. None: they go through ``write_body``."""
        return None

    def raw_body_sent(self, size: int) -> None:
        """``size`` body bytes reached the client around ``write_body``."""

    def hold_file(self, file: Any, offset: int, count: int) -> bool:
        """End the response with what was written and ``count`` bytes of ``file`` from
        ``offset``, sent with the loop turn's other writes (``workers.sockio``); False:
        the caller sends them now. Only for the last bytes of a body going to
        ``raw_sink``; the caller may close ``file`` at once."""
        return False

    def switch_protocols(self, up: UpstreamConnection, session: ProxySession,
                         events: Sequence[object], upstream_leftover: bytes) -> int:
        """Relay a 101 and tunnel both ways; the bytes sent to the client."""
        raise UpstreamError("protocol switch is not possible here")


class Exchange:
    """One request: serves it through ``ProxySession`` and the downstream's hooks."""

    __slots__ = ("body_done", "body_started", "bridge", "down", "head_sent", "pending_head",
                 "replay", "request", "server", "services", "session", "size")

    def __init__(self, services: RequestServices, down: Downstream,
                 request: RequestReceived) -> None:
        self.services = services
        self.down = down
        self.server = down.server
        self.request = request
        self.body_done = False     # the request's MessageEnded was read
        self.body_started = False  # request body bytes went upstream: no retry from here
        self.head_sent = False     # response bytes reached the client
        #: the gRPC-Web translation, when the request is one (both directions)
        self.bridge: GrpcWebBridge | None = None
        #: a response head held back until the first body bytes (a whole-body filter)
        self.pending_head: tuple[int, Headers, bytes] | None = None
        #: the request body read whole first (``spool``), replayed upstream
        self.replay: Iterator[BodyReceived | MessageEnded] | None = None
        self.size = 0              # response body bytes sent

    # --- one request ------------------------------------------------------------

    def serve(self) -> bool:
        """Handle the request; True if the connection may carry another."""
        server = self.server
        services = self.services
        request = self.request
        now = time.monotonic()
        session = self.session = ProxySession(services.runtime, server, self.down.conn,
                                              request, now=now, wall=time.time())
        server.processing += 1
        server.accepted += 1
        keep = False
        metrics = services.metrics
        counted = False
        try:
            path = session.ctx.path
            if server.prometheus_metrics == path:
                return self.respond(plugin_response(
                    200, services.metrics_text().encode(), METRICS_CONTENT_TYPE))
            acme = services.acme_answer
            if acme is not None:
                challenge = acme(path)
                if challenge is not None:
                    return self.respond(challenge)
            decision = session.route()
            if metrics is not None and session.location is not None:
                metrics.request_started(server.name, session.location.name,
                                        self.down.conn.requests > 1)
                counted = True
            if isinstance(decision, Forward):
                try:
                    self.bridge = self.grpc_web_bridge()
                except DownstreamError as err:
                    keep = self.fail(err)
                else:
                    keep = self.proxy(decision.upstream)
            else:
                if isinstance(decision, AdminCall) and services.admin is not None:
                    decision = services.admin.answer(decision, session.ctx, body_reader(self))
                keep = self.respond(session.local_response(decision), session.ctx)
        except ClientGone:
            keep = False
        finally:
            server.processing -= 1
            ctx = session.finish(now=time.monotonic(), size=self.size)
            if counted:
                assert metrics is not None
                metrics.request_finished(server.name, ctx,
                                         session.upstream.name if session.upstream else None)
            services.log_request(server, ctx)
        return keep

    def grpc_web_bridge(self) -> GrpcWebBridge | None:
        location = self.session.location
        if location is None or not location.grpc_web:
            return None
        content_type = header_value(self.request.headers, b"content-type")
        if not is_grpc_web(content_type):
            return None
        if not self.server.grpc_web:  # pingap: 500 without the server's grpc-web module
            raise DownstreamError("grpc_web needs modules = [\"grpc-web\"] on the server",
                                  status=500)
        assert content_type is not None
        return GrpcWebBridge(content_type)

    # --- the request body -----------------------------------------------------------

    def next_event(self) -> object:
        """The next request body event: from the spooled body, or from the client."""
        replay = self.replay
        event = next(replay) if replay is not None else self.down.next_event()
        if type(event) is MessageEnded:
            self.body_done = True
        return event

    def finish_request_body(self) -> None:
        """Consume the end of a body-less request so the codec can start a new cycle."""
        if not isinstance(self.next_event(), MessageEnded):
            raise DownstreamError("unexpected request body")

    def spool(self, memory_limit: int) -> None:
        """Read the whole body before any upstream is contacted (its 100-continue
        answered here); the upstream gets it from ``replay``."""
        request = self.request
        if request.expect_continue:
            self.down.send_informational(100)
        body = spool_body(self.down.next_event, self.session, memory_limit)
        if body is None:
            raise ClientGone("client closed during the request body")
        self.replay = body.events()
        self.request = replace(request, expect_continue=False)

    # --- local answers ----------------------------------------------------------

    def respond(self, answer: Respond, ctx: RequestContext | None = None) -> bool:
        """Answer locally (a plugin's answer, a file, an error page); True if the
        connection may carry another request. With ``ctx``, the body goes through the
        request's body filters (``workers.local_body``)."""
        down = self.down
        request = self.request
        close = answer.close or self.services.draining
        if not self.body_done:
            if request.has_body and self.replay is None:
                close = True  # the unread body makes the connection unusable
            elif not request.has_body:
                self.finish_request_body()

        def write_head() -> None:
            # read at write time: a whole-body filter may have edited the head
            headers = list(answer.headers)
            if close:
                down.mark_close(headers)
            down.write_head(answer.status, headers)

        if answer.delay:
            gevent.sleep(answer.delay)
        size = len(answer.body)
        if request.method == b"HEAD":
            write_head()
        elif ctx is not None and (answer.stream or ctx.body_filters):
            try:
                size = write_local_body(down, answer, ctx, write_head=write_head)
            except ClientWriteFailed as exc:
                raise ClientGone(str(exc)) from exc
        else:
            write_head()
            if answer.body:
                down.write_body(answer.body)
        down.write_end(None)
        down.flush()
        self.size = size
        return not close

    def fail(self, err: PingapError) -> bool:
        """Answer ``err`` with the error page, or — once the response has begun — give
        the client connection up."""
        if self.head_sent:
            raise ClientGone(f"upstream failed mid-response: {err.message}")
        session = self.session
        log.warning("%s %s -> %s: %s", self.request.method.decode(), session.ctx.uri,
                    session.ctx.upstream_addr or "-", err.message)
        answer = session.error(err)
        return self.respond(Respond(status=answer.status, headers=answer.headers,
                                    body=answer.body, close=True))

    # --- proxying ---------------------------------------------------------------

    def proxy(self, upstream: UpstreamRuntime) -> bool:
        """The request to ``upstream``, with retries; True if the client connection may
        carry another request."""
        session = self.session
        ctx = session.ctx
        pool = self.services.pool
        location = session.location
        if location is not None and location.client_body_buffer_size is not None \
                and self.request.has_body:
            try:
                self.spool(location.client_body_buffer_size)
            except DownstreamError as err:
                return self.fail(err)
        fresh_only = False
        free_retry = True  # once, on the same backend: its connection failed, not it
        # an idle connection the backend closed shows itself on the first write or read;
        # only a request that could not be sent again needs it checked beforehand
        probe = self.request.has_body or self.request.method not in _REPLAYABLE
        while True:
            try:
                backend = session.next_backend()
            except PingapError as err:
                return self.fail(err)
            method, target, headers = session.upstream_request()
            select_start = time.monotonic()
            up: UpstreamConnection | H2UpstreamConnection
            try:
                if fresh_only:
                    up, _ = pool.open(upstream, backend, ctx.host or None)
                    reused = False
                else:
                    up, reused, _ = pool.acquire(upstream, backend, ctx.host or None,
                                                 probe=probe)
            except UpstreamError as err:
                if err.retryable and session.may_retry(time.monotonic()):
                    continue
                return self.fail(err)
            now = time.monotonic()
            ctx.upstream_reused = reused
            ctx.upstream_connect_time = now - select_start
            if not reused:
                ctx.upstream_tcp_connect_time = up.tcp_connect_time
                ctx.upstream_tls_handshake_time = up.tls_handshake_time
            ctx.upstream_connection_time = now - up.created
            up.requests += 1
            stream: UpstreamStream | None = None
            clean = False
            try:
                stream = self.open_stream(up, upstream, method, target, headers, reused)
                keep = self.relay(stream, up, upstream)
                clean = True
            except UpstreamError as exc:
                failure: PingapError = exc
            except DownstreamError as exc:
                failure = exc
            finally:
                # the one place a pooled connection goes back
                if stream is not None and not clean:
                    stream.reset()
                pool.release(up, reusable=stream is None or stream.reusable)
            if clean:
                if keep is None:  # a plugin answers instead (the cache's revalidated entry)
                    assert session.replacement is not None
                    return self.respond(session.local_response(session.replacement), ctx)
                return keep
            # the backend cannot have acted on the request, the client has seen nothing
            # and no body was taken from it: send it again (a stale keep-alive
            # connection, a refused or GOAWAY'd HTTP/2 stream)
            if failure.retryable and not self.head_sent and not self.body_started:
                if free_retry:
                    free_retry = False
                    session.forget_backend(backend)
                    fresh_only = not isinstance(up, H2UpstreamConnection)
                    continue
                if session.may_retry(time.monotonic()):
                    continue
            return self.fail(failure)

    def open_stream(self, up: UpstreamConnection | H2UpstreamConnection,
                    upstream: UpstreamRuntime, method: bytes, target: bytes,
                    headers: Headers, reused: bool) -> UpstreamStream:
        """The request on ``up``: a stream the body and the response go through."""
        request = self.request
        has_body = request.has_body
        if not has_body and not self.body_done:
            self.finish_request_body()
        if isinstance(up, H2UpstreamConnection):
            bridge = self.bridge
            fields = bridge.request_headers(headers) if bridge is not None else headers
            authority = header_value(headers, b"host") or self.session.ctx.host.encode()
            scheme = b"https" if upstream.sni else b"http"
            # (the session kept "TE: trailers" when the client sent it, as gRPC does;
            # Host and the HTTP/1 framing fields are dropped by the h2 header mapping)
            return up.open_stream(method, scheme, authority, target, fields,
                                  end_stream=not has_body)
        if self.bridge is not None:
            raise UpstreamError("gRPC-Web needs an HTTP/2 upstream (alpn = \"H2\")")
        return H1UpstreamStream(
            up, self.down, method, request_head(method, target, headers),
            chunked=request.chunked, reused=reused,
            may_upgrade=self.session.upgrade is not None,
            write_timeout=upstream.write_timeout or DEFAULT_UPSTREAM_TIMEOUT)

    def send_body(self, stream: UpstreamStream) -> None:
        """The request body, as the client sends it (the one body pump)."""
        self.body_started = True  # from here on the request cannot be sent again
        if self.request.expect_continue:
            self.down.send_informational(100)
        bridge = self.bridge
        session = self.session
        received = 0
        while True:
            event = self.next_event()
            if type(event) is BodyReceived:
                received += len(event.data)
                session.check_body_size(received)
                data = bridge.request_body(event.data) if bridge else event.data
                if data:
                    stream.send_data(data)
            elif type(event) is MessageEnded:
                if bridge is not None:
                    try:
                        bridge.request_end()
                    except ValueError as exc:
                        raise DownstreamError(str(exc), status=400) from exc
                stream.end(event.trailers or None)
                return
            else:
                raise ClientGone("client closed during the request body")

    def relay(self, stream: UpstreamStream, up: UpstreamConnection | H2UpstreamConnection,
              upstream: UpstreamRuntime) -> bool | None:
        """Send the request body, then relay the response to the client (the one relay
        loop); True if the client connection may carry another request, None if a
        plugin answers instead of the upstream's response (``session.replacement``)."""
        request = self.request
        if request.has_body:
            self.send_body(stream)
        else:
            stream.end()
        session = self.session
        ctx = session.ctx
        down = self.down
        filt: ResponseFilter | None = self.bridge
        read_timeout = upstream.read_timeout or DEFAULT_UPSTREAM_TIMEOUT
        sent_at = body_start = time.monotonic()
        may_upgrade = session.upgrade is not None
        bodies = None  # the plugins' body filters, known with the response head
        replaced = False
        close = False
        size = 0
        while True:
            events = stream.next_events(read_timeout)
            if may_upgrade and stream.upgraded:
                assert isinstance(up, UpstreamConnection)
                self.size = down.switch_protocols(up, session, events, stream.leftover)
                return False
            for event in events:
                kind = type(event)
                if kind is ResponseData:
                    if replaced:
                        continue
                    data = event.data  # type: ignore[union-attr]
                    if filt is not None:
                        data = filt.response_body(data)
                    if bodies:
                        data = self.filter_body(data)
                    if data:
                        size += len(data)
                        if self.pending_head is not None:
                            self.write_pending_head()
                        down.write_body(data)
                elif kind is ResponseStarted:
                    now = time.monotonic()
                    ctx.upstream_processing_time = now - sent_at
                    body_start = now
                    headers = session.response_headers(event.status,  # type: ignore[union-attr]
                                                       event.headers)  # type: ignore[union-attr]
                    if session.replacement is not None:
                        replaced = True
                        continue
                    bodies = ctx.body_filters
                    if filt is not None:
                        headers = filt.response_headers(headers)
                    close = self.services.draining or not request.keep_alive
                    if close:
                        down.mark_close(headers)
                    status, reason = event.status, event.reason  # type: ignore[union-attr]
                    if bodies and any(getattr(f, "whole_body", False) for f in bodies):
                        self.pending_head = (status, headers, reason)
                    else:
                        down.write_head(status, headers, reason)
                else:  # ResponseEnded
                    ctx.upstream_response_time = time.monotonic() - body_start
                    if replaced:
                        return None
                    trailers = event.trailers  # type: ignore[union-attr]
                    if bodies:
                        tail = self.filter_body(None)
                        size += len(tail)
                        if self.pending_head is not None:
                            self.write_pending_head()
                        if tail:
                            down.write_body(tail)
                    if filt is not None:
                        tail = filt.response_end(trailers)
                        if tail:
                            size += len(tail)
                            down.write_body(tail)
                        trailers = []
                    down.write_end(trailers)
                    down.flush()
                    self.size = size
                    return not close
            if events and not replaced:
                # one write per read: the head goes out with the first piece of body
                down.flush()
                self.head_sent = True
            if filt is None and not bodies and not replaced:
                owed = stream.raw_owed()
                if owed >= splice.MIN_BYTES:
                    sink = down.raw_sink(owed)
                    if sink is not None:
                        ended = stream.splice(sink, owed, read_timeout)
                        if ended is not None:
                            down.raw_body_sent(owed)
                            size += owed
                            ctx.upstream_response_time = time.monotonic() - body_start
                            down.write_end(ended.trailers)
                            down.flush()
                            self.size = size
                            return not close

    def write_pending_head(self) -> None:
        assert self.pending_head is not None
        status, headers, reason = self.pending_head
        self.pending_head = None
        self.down.write_head(status, headers, reason)

    def filter_body(self, data: bytes | None) -> bytes:
        """A body chunk through the plugins' body filters (None: the end of the body); a
        filter that gives up cuts the response off, as its head is on its way."""
        ctx = self.session.ctx
        try:
            return ctx.end_body() if data is None else ctx.filter_body(data)
        except ValueError as exc:
            self.head_sent = True
            raise UpstreamError(f"response body filter: {exc}") from exc
