"""One downstream HTTP/1.1 connection: read requests, proxy them, stream both ways.

Written against ``pingap.http1.ServerCodec``; each request is served by its own
``workers.exchange.Exchange`` through the ``Downstream`` hooks implemented here. All I/O is
blocking-style on gevent sockets. Bodies stream in 64 KiB pieces in each
direction and are never held whole.

Hostile clients: ``downstream_read_timeout`` bounds each read of a body, and the whole
request head from its first byte (nginx's ``client_header_timeout``: a head trickled a
line at a time is answered 408 once that total has passed). Pipelined requests are read
only as earlier ones are answered (the socket is read only when the codec needs bytes),
and the connection yields to the hub every few requests (``workers.turns``).

A reused upstream connection that fails before a response byte arrives is retried once
on a fresh connection when the request had no body (nothing that could not be sent
again).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import gevent
from gevent.socket import socket as PlainSocket

from pingap.context import ConnectionInfo
from pingap.errors import ClientGone, DownstreamError, PingapError
from pingap.events import NEED_DATA, ConnectionEnded, RequestReceived, ResponseStarted
from pingap.headers import Headers, split_host
from pingap.http1 import ServerCodec
from pingap.http1_fast import FastServerCodec
from pingap.session import ProxySession
from workers.exchange import Downstream, Exchange
from workers.local_body import ClientWriteFailed, send_file
from workers.sockio import VECTOR_MIN, recv_later, send_all, send_file_later, send_later, send_pieces, settle
from workers.turns import REQUESTS_PER_TURN, Turn

if TYPE_CHECKING:
    from pingap.runtime import LocationRuntime, ServerRuntime
    from workers.pool import UpstreamConnection
    from workers.services import RequestServices

log = logging.getLogger("pingap.h1")

READ_SIZE = 65536
DEFAULT_IDLE_TIMEOUT = 60.0
LINGER_TIME = 2.0         # at most this long in lingering close
LINGER_TIMEOUT = 0.5      # ... and this long waiting for each read
LINGER_MAX_BYTES = 1 << 20

#: request fields that can make a file's answer other than its plain 200 (a range, a
#: conditional): such a request takes the general path. Accept-Encoding is handed to the
#: plugin, which leaves the request to the general path when a sibling would be sent
_NOT_PLAIN = frozenset({b"range", b"if-range", b"if-none-match", b"if-modified-since",
                        b"if-match", b"if-unmodified-since"})
#: field names (as sent) known to be none of those nor Accept-Encoding
_plain_names: set[bytes] = set()
#: (Host, path) pairs a server remembers the plain-file routing of (then it starts over)
PLAIN_ROUTES_MAX = 1024
_UNROUTED = object()


class H1Connection(Downstream):
    """Serves one accepted socket until it closes."""

    def __init__(self, services: RequestServices, server: ServerRuntime,
                 sock: socket.socket, conn: ConnectionInfo, codec: ServerCodec | None = None) -> None:
        self.services = services
        self.server = server
        self.sock = sock
        self.conn = conn
        self.codec = codec or (FastServerCodec() if server.http1_codec != "h11" else h11_codec())
        self.idle_timeout = server.read_timeout or DEFAULT_IDLE_TIMEOUT
        self.write_timeout = server.write_timeout or DEFAULT_IDLE_TIMEOUT
        # Timeouts: before each blocking step the loop sets ``deadline`` (monotonic
        # seconds; 0 = none) and the accept loop's sweeper raises TimeoutError in this
        # connection's greenlet once it passes. Cheaper than a gevent Timeout per call.
        self.deadline = 0.0
        self.busy = False
        self._out: list[bytes] = []
        self._turn = Turn(REQUESTS_PER_TURN)  # pipelined requests: yield to the hub every few
        self._reading_head = True  # no request head parsed yet in this cycle
        self._head_since = 0.0     # when its first byte came (monotonic; 0 = not yet)
        #: plain GETs of files may skip the exchange (plaintext: the body is sendfile's)
        self.plain_files = server.plain_files and type(sock) is PlainSocket

    def drain(self) -> None:
        """The worker is draining: nothing to announce, the next response closes."""

    # --- downstream I/O ---------------------------------------------------------

    def send(self, data: bytes | list[bytes], flags: int = 0) -> None:
        """Write ``data`` to the client: bytes, or the large pieces of one flush."""
        if not data:
            return
        self.deadline = time.monotonic() + self.write_timeout
        try:
            if type(data) is list:
                send_pieces(self.sock, data, flags)
            else:
                send_all(self.sock, data, flags)  # type: ignore[arg-type]
        except OSError as exc:  # TimeoutError included: the client stopped reading
            raise ClientGone(str(exc)) from exc
        finally:
            self.deadline = 0.0

    def next_event(self) -> object:
        codec = self.codec
        while True:
            event = codec.next_event()
            if event is not NEED_DATA:
                if self._reading_head and isinstance(event, RequestReceived):
                    self._reading_head = False
                return event
            now = time.monotonic()
            self.deadline = now + self.idle_timeout
            if self._reading_head and codec.request_in_progress:
                # the head as a whole has the read timeout, not each of its reads
                self._head_since = self._head_since or now
                self.deadline = self._head_since + self.idle_timeout
            try:
                if self._reading_head and self.conn.requests and not codec.request_in_progress:
                    data = recv_later(self.sock, READ_SIZE)  # the next request, keep-alive
                else:
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
                    if not (self.plain_files and self.serve_plain_file(event)) \
                            and not Exchange(self.services, self, event).serve():
                        return
                finally:
                    self.busy = False
                # a response sent before the drain began promised keep-alive: the next
                # request on this connection is answered (with Connection: close)
                if not self.codec.reusable():
                    return
                self._turn.spend()
                self._reading_head = True
                self._head_since = 0.0
                self.codec.start_next_cycle()
        except ClientGone:
            return
        finally:
            self.close()

    def serve_plain_file(self, request: RequestReceived) -> bool:
        """The plain-file path: a GET with nothing conditional about it (no Range, no
        ``If-*``; an Accept-Encoding only if no precompressed sibling of the file takes
        it), routed to a location whose only plugin is
        ``directory`` (``LocationRuntime.plain_files``), answered here with the file's
        200 without the session, plugin chain and exchange a request otherwise goes
        through: the same bytes (``Directory.plain_file``), counted in the metrics and
        written to the access log the same. True: answered, the connection stays open.
        False, with nothing done: ``Exchange`` serves it, and decides everything else
        (a refused or missing path, a directory, a 304, a range, HTTP/1.0, a drain)."""
        if request.method != b"GET" or request.has_body:
            return False
        services = self.services
        codec = self.codec
        if services.draining or not codec.keeps_alive() or services.acme_answer is not None:
            return False
        names = _plain_names
        accept: bytes | None = None
        for name, value in request.headers:
            if name not in names:
                low = name.lower()
                if low == b"accept-encoding":
                    if accept is None:  # the first, as the plugin reads it
                        accept = value
                    continue
                if low in _NOT_PLAIN:
                    return False
                if len(names) < 1024:
                    names.add(name)
        server = self.server
        key = (request.host, request.path)
        routes = server.plain_routes
        location = routes.get(key, _UNROUTED)
        if location is _UNROUTED:
            location = routes[key] = self._plain_location(request)
            if len(routes) > PLAIN_ROUTES_MAX:
                routes.clear()
        if location is None or (location.max_processing
                                and location.processing >= location.max_processing):
            return False
        start = time.monotonic()
        session = None
        if server.access_log is not None:  # the record, as the general path makes it
            session = ProxySession(services.runtime, server, self.conn, request, now=start,
                                   wall=time.time())
        opened = location.plain_files.plain_file(
            request.path.decode("latin-1"),
            None if accept is None else accept.decode("latin-1"))
        if opened is None:
            return False
        handle, plain = opened  # closed in the ``finally`` below, nothing can raise before
        metrics = services.metrics
        server.accepted += 1
        server.processing += 1
        location.processing += 1
        if metrics is not None:
            metrics.request_started(server.name, location.name, self.conn.requests > 1)
        size = 0
        try:
            codec.next_event()  # the request's end (no body)
            length = plain.size
            wire = plain.wire
            if wire is None:
                wire = plain.wire = codec.response_head(200, list(plain.headers))
            else:
                codec.response_head_again(wire, length)
            self._out.append(wire)
            sink = self.raw_sink(length)
            assert sink is not None
            if not self.hold_file(handle, 0, length):
                self.flush(more=True)
                try:
                    send_file(sink, handle, 0, length)
                except ClientWriteFailed as exc:
                    raise ClientGone(str(exc)) from exc
            codec.raw_body_sent(length)
            codec.end(None)
            size = length
        finally:
            handle.close()
            server.processing -= 1
            location.processing -= 1
            end = time.monotonic()
            if metrics is not None:
                metrics.answered(server.name, location.name, 200, 0, size, end - start)
            if session is None:
                services.requests += 1
            else:
                ctx = session.ctx
                ctx.location = location.name
                ctx.status = 200
                ctx.response_headers = list(plain.headers)
                ctx.end = end
                ctx.size = size
                services.log_request(server, ctx)
        return True

    def _plain_location(self, request: RequestReceived) -> LocationRuntime | None:
        """The location the request's Host and path match, if it takes the plain-file
        path; None otherwise (the general path routes it, to that location or another)."""
        path = request.path.decode("latin-1")
        server = self.server
        if path == server.prometheus_metrics:
            return None
        found = server.matcher.match(split_host(request.host.decode("latin-1")), path)
        if found is None or found[1]:  # no location, or captures a log may print
            return None
        location: LocationRuntime = found[0].payload  # type: ignore[assignment]
        return location if location.plain_files is not None else None

    def close(self) -> None:
        """Close the socket, once what was written to it went out (``send_later``)."""
        try:
            self._settle()
        except ClientGone:
            pass
        finally:
            try:
                self.sock.close()  # also when killed while settling (a second drain step)
            except OSError:
                pass

    def _settle(self) -> None:
        """Send what the socket still owes of its held writes (``sockio.settle``), within
        the write timeout."""
        self.deadline = time.monotonic() + self.write_timeout
        try:
            settle(self.sock)
        except OSError as exc:
            raise ClientGone(str(exc)) from exc
        finally:
            self.deadline = 0.0

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

    # --- Downstream hooks: the response goes out through the codec -----------------

    def write_head(self, status: int, headers: Headers, reason: bytes = b"") -> None:
        self._out.append(self.codec.response_head(status, headers, reason))

    def write_body(self, data: bytes) -> None:
        piece = self.codec.body(data)
        if piece:
            self._out.append(piece)

    def write_end(self, trailers: Headers | None) -> None:
        piece = self.codec.end(trailers)  # nothing under Content-Length: no write for it
        if piece:
            self._out.append(piece)

    def flush(self, more: bool = False) -> None:
        out = self._out
        if not out:
            return
        self._out = []
        if more:
            # MSG_MORE: the kernel keeps the head until the raw write that follows, so
            # head and body leave in the same segments (a static file: one wake-up of the
            # client fewer; 16 % of that path was this send alone)
            self.send(out[0] if len(out) == 1 else b"".join(out), socket.MSG_MORE)
        elif self.codec.ended_keep_alive() and send_later(self.sock, out, self.write_timeout):
            # the end of a whole response on a kept-alive connection goes out with the
            # loop turn's other writes (``workers.sockio``)
            pass
        elif len(out) == 1:
            self.send(out[0])
        elif sum(map(len, out)) < VECTOR_MIN:
            self.send(b"".join(out))
        else:  # a large body: its pieces go as they are, not copied into one first
            self.send(out)

    def send_informational(self, status: int) -> None:
        self.send(self.codec.informational(status))

    def mark_close(self, headers: Headers) -> None:
        headers.append((b"Connection", b"close"))

    def raw_sink(self, owed: int) -> socket.socket | None:
        if self.codec.raw_body_owed() != owed:
            return None
        self._settle()  # written around send_all: what the socket still owes goes first
        return self.sock

    def hold_file(self, file: Any, offset: int, count: int) -> bool:
        if not self.codec.keeps_alive():
            return False
        out = self._out
        if not send_file_later(self.sock, out, file, offset, count,
                               self.write_timeout):
            return False
        self._out = []
        return True

    def raw_body_sent(self, size: int) -> None:
        self.codec.raw_body_sent(size)

    def switch_protocols(self, up: UpstreamConnection, session: ProxySession,
                         events: Sequence[object], upstream_leftover: bytes) -> int:
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
        return sent[0]


def h11_codec() -> ServerCodec:
    """The reference codec (``http1_codec = "h11"``), imported when a server asks for it."""
    from pingap.http1_h11 import H11ServerCodec
    return H11ServerCodec()


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
