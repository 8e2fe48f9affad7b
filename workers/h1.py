"""One downstream HTTP/1.1 connection: read requests, proxy them, stream both ways.

Written against ``pingap.http1.ServerCodec`` and ``pingap.session.ProxySession``; all
I/O is blocking-style on gevent sockets. Bodies stream in 64 KiB pieces in each
direction and are never held whole. A reused upstream connection that fails before a
response byte arrives is retried once on a fresh connection when the request had no
body (nothing that could not be sent again).
"""

from __future__ import annotations

import logging
import socket
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
    NEED_DATA,
    BodyReceived,
    ConnectionEnded,
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
from pingap.http1 import H11ServerCodec, ServerCodec
from pingap.plugins import plugin_response
from pingap.session import ProxySession
from workers.pool import connect

if TYPE_CHECKING:
    from pingap.runtime import ServerRuntime, UpstreamRuntime
    from workers.pool import UpstreamConnection
    from workers.worker import Worker

log = logging.getLogger("pingap.h1")

READ_SIZE = 65536
DEFAULT_IDLE_TIMEOUT = 60.0
DEFAULT_UPSTREAM_TIMEOUT = 60.0
LINGER_TIME = 2.0         # at most this long in lingering close
LINGER_TIMEOUT = 0.5      # ... and this long waiting for each read
LINGER_MAX_BYTES = 1 << 20


class ClientGone(Exception):
    """The client connection failed or closed while we were talking to it."""


class StaleConnection(Exception):
    """A reused upstream connection died before any response byte."""


class H1Connection:
    """Serves one accepted socket until it closes."""

    def __init__(self, worker: Worker, server: ServerRuntime, sock: socket.socket,
                 conn: ConnectionInfo, codec: ServerCodec | None = None) -> None:
        self.worker = worker
        self.server = server
        self.sock = sock
        self.conn = conn
        self.codec = codec or H11ServerCodec()
        self.idle_timeout = server.read_timeout or DEFAULT_IDLE_TIMEOUT
        self.write_timeout = server.write_timeout or DEFAULT_IDLE_TIMEOUT
        # Timeouts: before each blocking step the loop sets ``deadline`` (monotonic
        # seconds; 0 = none) and the worker's sweeper raises TimeoutError in this
        # connection's greenlet once it passes. Cheaper than a gevent Timeout per call.
        self.deadline = 0.0
        self.busy = False
        self.body_done = False

    # --- downstream I/O ---------------------------------------------------------

    def send(self, data: bytes) -> None:
        if not data:
            return
        self.deadline = time.monotonic() + self.write_timeout
        try:
            self.sock.sendall(data)
        except OSError as exc:  # TimeoutError included: the client stopped reading
            raise ClientGone(str(exc)) from exc
        finally:
            self.deadline = 0.0

    def next_event(self) -> object:
        codec = self.codec
        while True:
            event = codec.next_event()
            if event is not NEED_DATA:
                return event
            self.deadline = time.monotonic() + self.idle_timeout
            try:
                data = self.sock.recv(READ_SIZE)
            except TimeoutError as exc:
                if codec.request_in_progress:
                    raise DownstreamError("Request Timeout", status=408) from exc
                raise ClientGone("idle timeout") from exc
            except OSError as exc:
                raise ClientGone(str(exc)) from exc
            finally:
                self.deadline = 0.0
            codec.receive_data(data)

    # --- the loop ---------------------------------------------------------------

    def run(self) -> None:
        try:
            while True:
                try:
                    event = self.next_event()
                except DownstreamError as err:
                    self.reject(err)
                    return
                if isinstance(event, ConnectionEnded):
                    return
                assert isinstance(event, RequestReceived)
                self.conn.requests += 1
                self.busy = True
                try:
                    if not self.serve(event):
                        return
                finally:
                    self.busy = False
                # a response sent before the drain began promised keep-alive: the next
                # request on this connection is answered (with Connection: close)
                if not self.codec.reusable():
                    return
                self.codec.start_next_cycle()
        except ClientGone:
            return
        finally:
            try:
                self.sock.close()
            except OSError:
                pass

    def reject(self, err: PingapError) -> None:
        """Answer a malformed request and close; nothing reached any upstream."""
        body = f"{err.message}\n".encode()
        headers = [(b"Content-Type", b"text/plain; charset=utf-8"),
                   (b"Content-Length", str(len(body)).encode()),
                   (b"Connection", b"close")]
        try:
            self.send(self.codec.response_head(err.status, headers) + body)
            self.linger()
        except (ClientGone, PingapError):
            pass
        log.info("rejected request from %s: %d %s", self.conn.remote_addr, err.status,
                 err.message)

    def linger(self) -> None:
        """Lingering close (nginx's): stop writing, then read and discard what the client
        still sends for a moment, so the kernel does not answer it with a reset that
        could destroy the error response before the client read it."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return
        deadline = time.monotonic() + LINGER_TIME
        discarded = 0
        while discarded < LINGER_MAX_BYTES:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self.sock.settimeout(min(remaining, LINGER_TIMEOUT))
            try:
                data = self.sock.recv(READ_SIZE)
            except OSError:
                return
            if not data:
                return
            discarded += len(data)

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
            headers.append((b"Connection", b"close"))
        if answer.delay:
            gevent.sleep(answer.delay)
        self.send(self.codec.response_head(answer.status, headers))
        self.send(self.codec.body(answer.body) if request.method != b"HEAD" else b"")
        self.send(self.codec.end())
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
            self.send(self.codec.informational(100))
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
        codec = self.codec
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
            out: list[bytes] = []
            for event in events:
                if isinstance(event, ResponseData):
                    size += len(event.data)
                    out.append(codec.body(event.data))
                elif isinstance(event, ResponseStarted):
                    now = time.monotonic()
                    ctx.upstream_processing_time = now - sent_at
                    body_start = now
                    headers = session.response_headers(event.status, event.headers)
                    close = self.worker.draining or not request.keep_alive
                    if close:
                        headers.append((b"Connection", b"close"))
                    out.append(codec.response_head(event.status, headers, event.reason))
                else:
                    assert isinstance(event, ResponseEnded)
                    ctx.upstream_response_time = time.monotonic() - body_start
                    out.append(codec.end(event.trailers))
                    self.send(b"".join(out))
                    self.worker.pool.release(up, reusable=event.keep_alive)
                    return size, not close
            if out:
                # one write per read: the head goes out with the first piece of body
                self.send(b"".join(out))
                head_sent = True


    def switch_protocols(self, up: UpstreamConnection, session: ProxySession,
                         events: Sequence[object], upstream_leftover: bytes) -> tuple[int, bool]:
        """The backend accepted an Upgrade (101): relay the 101, then bytes both ways until
        either side closes. No deadline applies while tunnelling."""
        started = next(e for e in events if isinstance(e, ResponseStarted))
        headers = session.response_headers(101, started.headers)
        upgrade = next((v for n, v in started.headers if n.lower() == b"upgrade"),
                       session.upgrade or b"")
        headers += [(b"Connection", b"upgrade"), (b"Upgrade", upgrade)]
        self.send(self.codec.switching_protocols(headers, started.reason))
        client_leftover = self.codec.detach()
        sent = [0]
        try:
            if upstream_leftover:
                self.send(upstream_leftover)
                sent[0] += len(upstream_leftover)
            if client_leftover:
                up.sock.sendall(client_leftover)
            back = gevent.spawn(_pump, up.sock, self.sock, sent)
            _pump(self.sock, up.sock, None)
            back.join()
        finally:
            up.close()
        return sent[0], False


def _pump(src: socket.socket, dst: socket.socket, counter: list[int] | None) -> None:
    """Copy ``src`` to ``dst`` until ``src`` ends; then end ``dst``'s write side."""
    try:
        while True:
            data = src.recv(READ_SIZE)
            if not data:
                break
            dst.sendall(data)
            if counter is not None:
                counter[0] += len(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class _UpstreamFailed(Exception):
    def __init__(self, err: PingapError, head_sent: bool) -> None:
        self.err = err
        self.head_sent = head_sent
