"""One request/response exchange, whatever the downstream protocol.

``Exchange`` is the protocol-independent half of a downstream connection: it runs a
``ProxySession`` for one request — local answers, plugin answers, the upstream
exchange with retries, streaming both ways — and talks to the client only through a
few hooks that the HTTP/1 connection (``workers.h1``) and the HTTP/2 stream
(``workers.h2``) implement:

- ``next_event()``: the next request body event (BodyReceived / MessageEnded); the
  exchange reads bodies through ``body_event``, which replays a body spooled first
  (``workers.spool``) when the location buffers request bodies;
- ``write_head`` / ``write_body`` / ``write_end``: the response, possibly buffered
  until ``flush()`` (HTTP/1 sends the head with the first body piece in one write);
- ``send_informational(status)``: a 1xx (100-continue);
- ``mark_close(headers)``: say the connection closes after this response (HTTP/1's
  ``Connection: close``; nothing in HTTP/2);
- ``switch_protocols(...)``: the 101 tunnel (HTTP/1 only).

Timeouts use ``deadline`` (monotonic seconds, 0 = none): the accept loop's sweeper (``workers.accept``) raises
TimeoutError in the exchange's greenlet once it passes.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import gevent

from pingap.actions import Forward, Respond
from pingap.admin.api import AdminCall
from pingap.context import ConnectionInfo, RequestContext
from pingap.errors import (
    ClientGone,
    DownstreamError,
    H2StreamError,
    PingapError,
    StaleConnection,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from pingap.events import (
    BodyReceived,
    MessageEnded,
    RequestReceived,
    ResponseData,
    ResponseEnded,
    ResponseStarted,
)
from pingap.grpcweb import GrpcWebBridge, is_grpc_web
from pingap.h1client import ResponseReader, chunk, last_chunk, request_head
from pingap.headers import Headers
from pingap.plugins import plugin_response
from pingap.session import ProxySession
from workers import splice
from workers.admin import body_reader
from workers.h2upstream import H2UpstreamConnection, H2UpstreamStream
from workers.local_body import ClientWriteFailed, write_local_body
from workers.spool import spool_body

if TYPE_CHECKING:
    from pingap.runtime import ServerRuntime, UpstreamRuntime
    from workers.pool import UpstreamConnection
    from workers.services import RequestServices

log = logging.getLogger("pingap.exchange")

READ_SIZE = 65536
DEFAULT_UPSTREAM_TIMEOUT = 60.0


def send_all(sock: socket.socket, data: bytes) -> None:
    """``sendall`` without its per-call cost (gevent's asks the kernel for SO_SNDBUF every
    time): one ``send`` almost always writes a whole response or request head."""
    sent = sock.send(data)
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:])


class Exchange:
    """Serves requests through ``ProxySession``; subclasses supply the downstream I/O."""

    services: RequestServices
    server: ServerRuntime
    conn: ConnectionInfo
    deadline: float
    busy: bool
    body_done: bool
    #: the current request's body, read whole first (``spool``), or None: from the client
    _body_replay: Iterator[object] | None = None

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

    def raw_sink(self, owed: int) -> socket.socket | None:
        """The client socket, if the next ``owed`` response bytes may go to it as they
        are (identity framing): the splice path. None: they go through ``write_body``."""
        return None

    def raw_body_sent(self, size: int) -> None:
        """``size`` body bytes reached the client around ``write_body``."""

    def switch_protocols(self, up: UpstreamConnection, session: ProxySession,
                         events: Sequence[object], upstream_leftover: bytes) -> tuple[int, bool]:
        raise _UpstreamFailed(UpstreamError("protocol switch is not possible here"), False)

    # --- gRPC-Web -----------------------------------------------------------------

    #: the gRPC-Web translation of the current request, if it is one
    grpc_web: GrpcWebBridge | None = None

    def grpc_web_bridge(self, session: ProxySession,
                        request: RequestReceived) -> GrpcWebBridge | None:
        location = session.location
        if location is None or not location.grpc_web:
            return None
        content_type = next((v for n, v in request.headers if n.lower() == b"content-type"),
                            None)
        if not is_grpc_web(content_type):
            return None
        if not self.server.grpc_web:  # pingap: 500 without the server's grpc-web module
            raise DownstreamError("grpc_web needs modules = [\"grpc-web\"] on the server",
                                  status=500)
        assert content_type is not None
        return GrpcWebBridge(content_type)

    # --- one request ------------------------------------------------------------

    def serve(self, request: RequestReceived) -> bool:
        """Handle one request; True if the connection may carry another."""
        self._body_replay = None
        server = self.server
        services = self.services
        now = time.monotonic()
        session = ProxySession(services.runtime, server, self.conn, request,
                               now=now, wall=time.time())
        server.processing += 1
        server.accepted += 1
        self.body_done = False
        self._pending_head = None
        size = 0
        keep = False
        metrics = services.metrics
        counted = False
        try:
            if server.prometheus_metrics == session.ctx.path:
                size, keep = self.respond(request, plugin_response(
                    200, services.metrics_text().encode(),
                    b"text/plain; version=0.0.4; charset=utf-8"))
                return keep
            acme = services.acme_answer
            challenge = acme(session.ctx.path) if acme is not None else None
            if challenge is not None:
                size, keep = self.respond(request, challenge)
                return keep
            decision = session.route()
            if metrics is not None and session.location is not None:
                metrics.request_started(server.name, session.location.name,
                                        self.conn.requests > 1)
                counted = True
            if isinstance(decision, Forward):
                try:
                    self.grpc_web = self.grpc_web_bridge(session, request)
                except DownstreamError as err:
                    size, keep = self.fail(session, request, err, False)
                else:
                    size, keep = self.proxy(session, request, decision.upstream)
            else:
                if isinstance(decision, AdminCall) and services.admin is not None:
                    decision = services.admin.answer(decision, session.ctx, body_reader(self))
                size, keep = self.respond(request, session.local_response(decision),
                                          session.ctx)
        except ClientGone:
            keep = False
        finally:
            server.processing -= 1
            ctx = session.finish(now=time.monotonic(), size=size)
            if counted:
                assert metrics is not None
                metrics.request_finished(server.name, ctx,
                                         session.upstream.name if session.upstream else None)
            services.log_request(server, ctx)
        return keep

    # --- local answers ----------------------------------------------------------

    def respond(self, request: RequestReceived, answer: Respond,
                ctx: RequestContext | None = None) -> tuple[int, bool]:
        close = answer.close or self.services.draining
        if not self.body_done:
            if request.has_body:
                close = True  # the unread body makes the connection unusable
            else:
                self.finish_request_body()

        def write_head() -> None:
            # read at write time: a whole-body filter may have edited the head
            headers = list(answer.headers)
            if close:
                self.mark_close(headers)
            self.write_head(answer.status, headers)

        if answer.delay:
            gevent.sleep(answer.delay)
        size = len(answer.body)
        if request.method == b"HEAD":
            write_head()
        elif ctx is not None and (answer.stream or ctx.body_filters):
            try:
                size = write_local_body(self, answer, ctx, write_head=write_head)
            except ClientWriteFailed as exc:
                raise ClientGone(str(exc)) from exc
        else:
            write_head()
            if answer.body:
                self.write_body(answer.body)
        self.write_end(None)
        self.flush()
        return size, not close

    #: a response head held back until the first body bytes (a whole-body filter)
    _pending_head: tuple[int, Headers, bytes] | None = None

    def _filtered_head(self, ctx: RequestContext, status: int, headers: Headers, reason: bytes) -> None:
        """Write the response head now, or, when a body filter must see the whole body
        first (its result decides the head), just before the first body bytes."""
        if ctx.body_filters and any(getattr(f, "whole_body", False) for f in ctx.body_filters):
            self._pending_head = (status, headers, reason)
        else:
            self.write_head(status, headers, reason)

    def _write_pending_head(self) -> None:
        if self._pending_head is not None:
            status, headers, reason = self._pending_head
            self._pending_head = None
            self.write_head(status, headers, reason)

    def body_event(self) -> object:
        """The next request body event: from the spooled body, or from the client."""
        replay = self._body_replay
        if replay is not None:
            return next(replay)
        return self.next_event()

    def spool(self, session: ProxySession, request: RequestReceived,
              memory_limit: int) -> RequestReceived:
        """Read the whole body before any upstream is contacted; the request as it is
        forwarded (its 100-continue answered here)."""
        if request.expect_continue:
            self.send_informational(100)
        body = spool_body(self.next_event, session, memory_limit)
        if body is None:
            raise ClientGone("client closed during the request body")
        self._body_replay = body.events()
        return replace(request, expect_continue=False)

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
        pool = self.services.pool
        location = session.location
        if location is not None and location.client_body_buffer_size is not None \
                and request.has_body and not self.body_done:
            try:
                request = self.spool(session, request, location.client_body_buffer_size)
            except DownstreamError as err:
                return self.fail(session, request, err, False)
        replayable = not request.has_body
        fresh_only = False
        h2_retried = False
        while True:
            try:
                backend = session.next_backend()
            except PingapError as err:
                return self.fail(session, request, err, False)
            method, target, headers = session.upstream_request()
            host = ctx.host or None
            select_start = time.monotonic()
            up: UpstreamConnection | H2UpstreamConnection
            try:
                if fresh_only:
                    up, _ = pool.open(upstream, backend, host)
                    reused = False
                else:
                    up, reused, _ = pool.acquire(upstream, backend, host)
            except UpstreamError as err:
                if err.retryable and session.may_retry(time.monotonic()):
                    continue
                return self.fail(session, request, err, False)
            ctx.upstream_reused = reused
            ctx.upstream_connect_time = time.monotonic() - select_start
            if not reused:
                ctx.upstream_tcp_connect_time = up.tcp_connect_time
                ctx.upstream_tls_handshake_time = up.tls_handshake_time
            ctx.upstream_connection_time = time.monotonic() - up.created
            up.requests += 1
            if isinstance(up, H2UpstreamConnection):
                try:
                    return self.proxy_h2(up, upstream, session, request, method, target,
                                         headers)
                except _Retry as retry:
                    # nothing reached the backend (GOAWAY, refused stream): once on the
                    # same backend, as its connection went away rather than the backend;
                    # after that as max_retries allows
                    if not h2_retried:
                        h2_retried = True
                        session.forget_backend(backend)
                        continue
                    if session.may_retry(time.monotonic()):
                        continue
                    return self.fail(session, request, retry.err, False)
                except DownstreamError as err:
                    return self.fail(session, request, err, False)
                except _UpstreamFailed as failed:
                    return self.fail(session, request, failed.err, failed.head_sent)
            if self.grpc_web is not None:
                pool.release(up, reusable=True)
                return self.fail(session, request, UpstreamError(
                    "gRPC-Web needs an HTTP/2 upstream (alpn = \"H2\")"), False)
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

    def proxy_h2(self, up: H2UpstreamConnection, upstream: UpstreamRuntime,
                 session: ProxySession, request: RequestReceived, method: bytes,
                 target: bytes, headers: Headers) -> tuple[int, bool]:
        """One request as a stream on a shared HTTP/2 upstream connection.

        The body goes up as the client sends it, then the response comes back, with the
        gRPC-Web translation when there is one. Timeouts come from the h2 client's own
        waits (``next_events``), never from the sweeper: an exception thrown into a
        half-written frame would break the connection for every stream on it.
        """
        ctx = session.ctx
        pool = self.services.pool
        bridge = self.grpc_web
        authority = next((v for n, v in headers if n.lower() == b"host"), ctx.host.encode())
        # (the session already kept "TE: trailers" when the client sent it, as gRPC does;
        # Host and the HTTP/1 framing fields are dropped by the h2 client's header mapping)
        fields = bridge.request_headers(headers) if bridge is not None else headers
        scheme = b"https" if upstream.sni else b"http"
        has_body = request.has_body
        read_timeout = upstream.read_timeout or DEFAULT_UPSTREAM_TIMEOUT
        head_sent = False
        stream: H2UpstreamStream | None = None
        try:
            if not has_body and not self.body_done:
                self.finish_request_body()
            try:
                stream = up.open_stream(method, scheme, authority, target, fields,
                                        end_stream=not has_body)
            except H2StreamError as err:
                if err.retryable:
                    raise _Retry(err) from err
                raise _UpstreamFailed(err, False) from err
            except TimeoutError as exc:
                raise _UpstreamFailed(UpstreamTimeout("no free upstream HTTP/2 stream"),
                                      False) from exc
            sent_at = time.monotonic()
            if has_body:
                self._stream_body(stream, session, request, bridge)
            size = 0
            body_start = sent_at
            while True:
                try:
                    events = stream.next_events(read_timeout)
                except TimeoutError as exc:
                    raise _UpstreamFailed(UpstreamTimeout("upstream read timed out"),
                                          head_sent) from exc
                except H2StreamError as err:
                    if err.retryable and not head_sent and not has_body:
                        raise _Retry(err) from err
                    raise _UpstreamFailed(err, head_sent) from err
                for event in events:
                    if session.replacement is not None and \
                            not isinstance(event, ResponseEnded):
                        continue  # a plugin answers instead (the cache's revalidated entry)
                    if isinstance(event, ResponseData):
                        data = bridge.response_body(event.data) if bridge else event.data
                        if ctx.body_filters:
                            data = _filtered(ctx, data)
                        size += len(data)
                        if data:
                            self._write_pending_head()
                            self.write_body(data)
                    elif isinstance(event, ResponseStarted):
                        now = time.monotonic()
                        ctx.upstream_processing_time = now - sent_at
                        body_start = now
                        out = session.response_headers(event.status, event.headers)
                        if session.replacement is not None:
                            continue
                        if bridge is not None:
                            out = bridge.response_headers(out)
                        if self.services.draining or not request.keep_alive:
                            self.mark_close(out)
                        self._filtered_head(ctx, event.status, out, event.reason)
                    else:
                        assert isinstance(event, ResponseEnded)
                        ctx.upstream_response_time = time.monotonic() - body_start
                        if session.replacement is not None:
                            stream = None
                            pool.release(up, reusable=True)
                            return self.respond(request,
                                                session.local_response(session.replacement),
                                                ctx)
                        trailers = event.trailers
                        if ctx.body_filters:
                            tail = _filtered_end(ctx)
                            size += len(tail)
                            self._write_pending_head()
                            if tail:
                                self.write_body(tail)
                        if bridge is not None:
                            tail = bridge.response_end(trailers)
                            if tail:
                                size += len(tail)
                                self.write_body(tail)
                            trailers = []
                        self.write_end(trailers)
                        self.flush()
                        stream = None
                        pool.release(up, reusable=True)
                        close = self.services.draining or not request.keep_alive
                        return size, not close
                if events:
                    self.flush()
                    head_sent = True
        except (ClientGone, _UpstreamFailed, DownstreamError, _Retry):
            if stream is not None:
                stream.reset()
                stream = None
                pool.release(up, reusable=True)
            raise
        finally:
            if stream is not None:  # any other way out
                stream.reset()
                pool.release(up, reusable=True)

    def _stream_body(self, stream: H2UpstreamStream, session: ProxySession,
                     request: RequestReceived, bridge: GrpcWebBridge | None) -> None:
        received = 0
        while True:
            event = self.body_event()
            if isinstance(event, BodyReceived):
                received += len(event.data)
                session.check_body_size(received)
                data = bridge.request_body(event.data) if bridge else event.data
                if data:
                    try:
                        stream.send_data(data)
                    except H2StreamError as err:
                        raise _UpstreamFailed(err, False) from err
                    except TimeoutError as exc:
                        raise _UpstreamFailed(UpstreamTimeout("upstream write timed out"),
                                              False) from exc
            elif isinstance(event, MessageEnded):
                self.body_done = True
                if bridge is not None:
                    try:
                        bridge.request_end()
                    except ValueError as exc:
                        raise DownstreamError(str(exc), status=400) from exc
                try:
                    stream.end(event.trailers or None)
                except H2StreamError as err:
                    raise _UpstreamFailed(err, False) from err
                return
            else:
                raise ClientGone("client closed during the request body")

    def send_upstream(self, up: UpstreamConnection, upstream: UpstreamRuntime,
                      data: bytes) -> None:
        if not data:
            return
        self.deadline = time.monotonic() + (upstream.write_timeout or DEFAULT_UPSTREAM_TIMEOUT)
        try:
            send_all(up.sock, data)
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
            event = self.body_event()
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
                if session.replacement is not None and not isinstance(event, ResponseEnded):
                    continue  # a plugin answers instead (the cache's revalidated entry)
                wrote = True
                if isinstance(event, ResponseData):
                    data = _filtered(ctx, event.data) if ctx.body_filters else event.data
                    size += len(data)
                    if data:
                        self._write_pending_head()
                        self.write_body(data)
                elif isinstance(event, ResponseStarted):
                    now = time.monotonic()
                    ctx.upstream_processing_time = now - sent_at
                    body_start = now
                    headers = session.response_headers(event.status, event.headers)
                    if session.replacement is not None:
                        continue
                    close = self.services.draining or not request.keep_alive
                    if close:
                        self.mark_close(headers)
                    self._filtered_head(ctx, event.status, headers, event.reason)
                else:
                    assert isinstance(event, ResponseEnded)
                    ctx.upstream_response_time = time.monotonic() - body_start
                    if session.replacement is not None:
                        self.services.pool.release(up, reusable=event.keep_alive)
                        return self.respond(request,
                                            session.local_response(session.replacement), ctx)
                    if ctx.body_filters:
                        tail = _filtered_end(ctx)
                        size += len(tail)
                        self._write_pending_head()
                        if tail:
                            self.write_body(tail)
                    self.write_end(event.trailers)
                    self.flush()
                    self.services.pool.release(up, reusable=event.keep_alive)
                    return size, not close
            if wrote:
                # one write per read: the head goes out with the first piece of body
                self.flush()
                head_sent = True
            if reader.started and not reader.done and reader.content_length >= 0 \
                    and not ctx.body_filters and session.replacement is None:
                owed = reader.content_length - reader.body_seen
                sink = self.raw_sink(owed) if owed >= splice.MIN_BYTES else None
                if sink is not None and splice.usable(sock, sink):
                    self.splice_body(sock, sink, owed, read_timeout)
                    size += owed
                    ended = reader.body_skipped()
                    ctx.upstream_response_time = time.monotonic() - body_start
                    self.write_end(ended.trailers)
                    self.flush()
                    self.services.pool.release(up, reusable=ended.keep_alive)
                    return size, not close

    def splice_body(self, src: socket.socket, dst: socket.socket, owed: int,
                    timeout: float) -> None:
        """The rest of a Content-Length body, upstream socket → client socket in the
        kernel (``workers.splice``); the response head has been flushed already."""
        pipe = splice.acquire()
        clean = False
        try:
            pipe.forward(src, dst, owed, timeout)
            clean = True
        except splice.SpliceError as exc:
            if not exc.upstream:
                raise ClientGone(str(exc)) from exc
            err = UpstreamTimeout(str(exc)) if exc.timeout else UpstreamError(str(exc))
            raise _UpstreamFailed(err, True) from exc
        finally:
            splice.release(pipe, clean=clean)
        self.raw_body_sent(owed)


def _filtered(ctx: RequestContext, data: bytes) -> bytes:
    """A body chunk through the plugins' body filters; a filter that gives up cuts
    the response off (its head is out already)."""
    try:
        return ctx.filter_body(data)
    except ValueError as exc:
        raise _UpstreamFailed(UpstreamError(f"response body filter: {exc}"), True) from exc


def _filtered_end(ctx: RequestContext) -> bytes:
    try:
        return ctx.end_body()
    except ValueError as exc:
        raise _UpstreamFailed(UpstreamError(f"response body filter: {exc}"), True) from exc


class _Retry(Exception):
    """Nothing reached the backend: the request may go again (``err`` if it may not)."""

    def __init__(self, err: PingapError) -> None:
        self.err = err


class _UpstreamFailed(Exception):
    def __init__(self, err: PingapError, head_sent: bool) -> None:
        self.err = err
        self.head_sent = head_sent
