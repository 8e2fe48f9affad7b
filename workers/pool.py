"""Connections to backends: TCP or TLS, HTTP/1.1 or HTTP/2, pooled per backend.

``connect`` opens one: TCP, then TLS when the upstream has ``sni`` (one cached
``SSLContext`` per combination of ``verify_cert`` and ``alpn``; verification uses the
system trust store, which ``SSL_CERT_FILE``/``SSL_CERT_DIR`` can point elsewhere, and
checks the certificate against the SNI). ALPN offers ``http/1.1`` (H1), ``h2`` (H2) or
both (H2H1); the connection records what was negotiated in ``protocol``. ``alpn = "H2"``
without ``sni`` is h2c with prior knowledge. ``sni = "$host"`` uses the request's host,
which the caller passes. ``connection_timeout`` bounds the TCP connect;
``total_connection_timeout`` (else ``connection_timeout``) bounds TCP connect, TLS
handshake and an HTTP/2 backend's first SETTINGS together.

``UpstreamPool`` keeps idle HTTP/1.1 connections (reused newest first; one found closed
by the backend, checked with a non-blocking peek, or idle past the upstream's
``idle_timeout`` is dropped; at most ``max_idle`` per key) and shares HTTP/2 connections
(``workers.h2upstream``): one stays in the pool, serving new streams, while it has room
for them. Pool keys are the backend address plus the TLS settings, so a connection is
never reused with another server name. Whether an H2H1 backend answered ``h2`` is
remembered, so concurrent requests wait for its one connection instead of each
opening their own.
"""

from __future__ import annotations

import functools
import ipaddress
import select
import socket
import ssl
import time
from collections import deque
from typing import Any

from gevent.event import AsyncResult
from gevent.monkey import get_original

from pingap.errors import H2StreamError, ProxyLoopError, UpstreamConnectError
from pingap.headers import split_host, unbracket
from pingap.runtime import UpstreamRuntime
from pingap.upstream import Backend, is_own_listener
from workers.h2upstream import H2UpstreamConnection

DEFAULT_CONNECT_TIMEOUT = 10.0
#: what ALPN offers for each ``alpn`` setting, in preference order
ALPN_PROTOCOLS = {"H1": ["http/1.1"], "H2": ["h2"], "H2H1": ["h2", "http/1.1"]}
# The unpatched poll: a zero-timeout check needs no trip through the gevent hub.
_poll = get_original("select", "poll")
_POLLIN = select.POLLIN | select.POLLERR | select.POLLHUP


class UpstreamConnection:
    """One TCP (or TLS) connection to a backend."""

    __slots__ = ("backend", "created", "last_used", "pool_key", "protocol", "requests",
                 "sock", "tcp_connect_time", "tls_handshake_time")

    def __init__(self, sock: socket.socket, backend: Backend, now: float) -> None:
        self.sock = sock
        self.backend = backend
        self.created = now
        self.last_used = now
        self.requests = 0
        #: "http/1.1", or "h2" when ALPN (or h2c prior knowledge) chose HTTP/2
        self.protocol = "http/1.1"
        self.pool_key: Any = backend.addr
        self.tcp_connect_time: float | None = None
        self.tls_handshake_time: float | None = None

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def alive(self) -> bool:
        """False if the backend closed it (EOF or unexpected bytes waiting)."""
        poller = _poll()
        poller.register(self.sock.fileno(), _POLLIN)
        try:
            # Readable while idle means EOF, an error, or bytes nobody asked for.
            return not poller.poll(0)
        except OSError:
            return False


def _host(backend: Backend) -> str:
    return unbracket(backend.host)


@functools.lru_cache(maxsize=1024)
def _literal_family(host: str) -> socket.AddressFamily | None:
    """AF_INET or AF_INET6 for an IP address literal, None for a name."""
    try:
        version = ipaddress.ip_address(host).version
    except ValueError:
        return None
    return socket.AF_INET if version == 4 else socket.AF_INET6


def open_tcp(host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to ``host`` (an address or a name, unbracketed) within ``timeout``.

    An address (what most backends are) is connected directly: ``create_connection``
    would first ask gevent's resolver, which hands every lookup, an address's too, to its
    thread pool (~60 µs of a ~150 µs connect). A name still goes through
    ``create_connection``: each address it resolves to, in turn."""
    family = _literal_family(host)
    if family is None:
        return socket.create_connection((host, port), timeout=timeout)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


_tls_contexts: dict[tuple[bool, str], ssl.SSLContext] = {}


def tls_context(upstream: UpstreamRuntime) -> ssl.SSLContext:
    """The client context for ``upstream``'s ``verify_cert`` and ``alpn``, built once."""
    key = (upstream.verify_cert, upstream.alpn)
    context = _tls_contexts.get(key)
    if context is None:
        context = ssl.create_default_context()
        if not upstream.verify_cert:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols(ALPN_PROTOCOLS.get(upstream.alpn, ["http/1.1"]))
        _tls_contexts[key] = context
    return context


def server_name(upstream: UpstreamRuntime, backend: Backend, host: str | None) -> str | None:
    """The SNI (and the name the certificate must match); None without TLS.

    ``sni = "$host"`` is the request's host without its port (the backend's host when
    the caller has no request host).
    """
    if not upstream.tls or not upstream.sni:
        return None
    if upstream.sni != "$host":
        return upstream.sni
    if not host:
        return _host(backend)
    return unbracket(split_host(host))


def pool_key(upstream: UpstreamRuntime, backend: Backend,
             host: str | None = None) -> Any:
    """What a pooled connection can be reused for: the address, plus the TLS settings."""
    if not upstream.tls and upstream.alpn != "H2":
        return backend.addr
    return (backend.addr, server_name(upstream, backend, host), upstream.verify_cert,
            upstream.alpn)


def connect_budget(upstream: UpstreamRuntime) -> float:
    """Seconds for TCP connect, TLS handshake and (HTTP/2) the backend's SETTINGS together:
    ``total_connection_timeout``, else ``connection_timeout``, else 10 s."""
    return (upstream.total_connection_timeout or upstream.connection_timeout
            or DEFAULT_CONNECT_TIMEOUT)


def connect(upstream: UpstreamRuntime, backend: Backend,
            host: str | None = None) -> tuple[UpstreamConnection, float]:
    """A new connection and the seconds it took (TCP and TLS); UpstreamConnectError on
    failure. ``host`` is the request's host, used for ``sni = "$host"``."""
    timeout = (upstream.connection_timeout or upstream.total_connection_timeout
               or DEFAULT_CONNECT_TIMEOUT)
    start = time.monotonic()
    if upstream.transparent:
        _refuse_loop(upstream, backend)
    try:
        sock = open_tcp(_host(backend), backend.port, timeout)
    except TimeoutError as exc:
        raise UpstreamConnectError(f"connect to {backend.addr} timed out") from exc
    except OSError as exc:
        raise UpstreamConnectError(f"connect to {backend.addr} failed: {exc}") from exc
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    tcp_time = time.monotonic() - start
    tls_time = None
    protocol = "h2" if upstream.alpn == "H2" else "http/1.1"  # h2c: prior knowledge
    if upstream.tls:
        sock, protocol = _handshake(upstream, backend, host, sock,
                                    connect_budget(upstream) - tcp_time)
        tls_time = time.monotonic() - start - tcp_time
    sock.settimeout(None)  # per-operation deadlines are the connection loop's business
    now = time.monotonic()
    conn = UpstreamConnection(sock, backend, now)
    conn.protocol = protocol
    conn.pool_key = pool_key(upstream, backend, host)
    conn.tcp_connect_time = tcp_time
    conn.tls_handshake_time = tls_time
    return conn, now - start


@functools.cache
def _local_ips() -> frozenset[str]:
    """This host's interface addresses (for wildcard listeners), looked up once."""
    import psutil  # here: only a transparent upstream needs it
    return frozenset(entry.address.split("%", 1)[0]
                     for entries in psutil.net_if_addrs().values() for entry in entries
                     if entry.family in (socket.AF_INET, socket.AF_INET6))


def _refuse_loop(upstream: UpstreamRuntime, backend: Backend) -> None:
    """A transparent upstream whose request names this proxy would proxy to itself, again
    and again: ProxyLoopError (508) instead, before anything is sent."""
    try:
        infos = socket.getaddrinfo(_host(backend), backend.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise UpstreamConnectError(f"cannot resolve {backend.host}: {exc}") from exc
    for info in infos:
        if is_own_listener(str(info[4][0]), backend.port, upstream.listeners, _local_ips):
            raise ProxyLoopError(f"transparent upstream {upstream.name}: {backend.addr} is "
                                 f"this proxy's own listener (a loop)")


def _handshake(upstream: UpstreamRuntime, backend: Backend, host: str | None,
               sock: socket.socket, timeout: float) -> tuple[socket.socket, str]:
    """TLS over ``sock`` within ``timeout``: (the TLS socket, the negotiated protocol)."""
    name = server_name(upstream, backend, host)
    try:
        if timeout <= 0:
            raise TimeoutError()
        sock.settimeout(timeout)
        tls = tls_context(upstream).wrap_socket(sock, server_hostname=name)
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        raise UpstreamConnectError(
            f"TLS to {backend.addr} ({name}): certificate verify failed: "
            f"{exc.verify_message}") from exc
    except TimeoutError as exc:
        sock.close()
        raise UpstreamConnectError(f"TLS handshake with {backend.addr} timed out") from exc
    except OSError as exc:  # ssl.SSLError included
        sock.close()
        raise UpstreamConnectError(f"TLS handshake with {backend.addr} failed: {exc}") from exc
    return tls, "h2" if tls.selected_alpn_protocol() == "h2" else "http/1.1"


AnyConnection = UpstreamConnection | H2UpstreamConnection


class UpstreamPool:
    """Idle HTTP/1.1 keep-alive connections and shared HTTP/2 connections, per key."""

    def __init__(self, max_idle: int) -> None:
        self.max_idle = max_idle
        self._idle: dict[Any, deque[UpstreamConnection]] = {}
        self._h2: dict[Any, list[H2UpstreamConnection]] = {}
        #: keys whose backend negotiated h2 last time (H2H1)
        self._speaks_h2: set[Any] = set()
        #: keys with an HTTP/2 connection being opened: others wait for it, and fail with it
        self._connecting: dict[Any, AsyncResult] = {}

    def acquire(self, upstream: UpstreamRuntime, backend: Backend,
                host: str | None = None, *, probe: bool = True) -> tuple[AnyConnection, bool, float]:
        """(connection, reused, connect seconds) for ``backend``.

        The connection is an ``UpstreamConnection`` (HTTP/1.1: one request at a time,
        give it back with ``release``) or a shared ``H2UpstreamConnection`` with room for
        a stream (open one on it with ``open_stream``, ``release`` when it is done).
        ``host`` is the request's host (for ``sni = "$host"``). ``probe``: check that an
        idle HTTP/1.1 connection is still open before handing it out (a ``poll``); a
        request that may be sent again skips it and learns of a closed one from the
        failed write or read (``StaleConnection``, retried on a fresh connection).
        """
        key = pool_key(upstream, backend, host)
        while True:
            shared = self._shared_h2(key, upstream)
            if shared is not None:
                return shared, True, 0.0
            idle = self._idle.get(key)
            if idle:
                now = time.monotonic()
                limit = upstream.idle_timeout
                while idle:
                    conn = idle.pop()
                    if (limit is None or now - conn.last_used < limit) and \
                            (not probe or conn.alive()):
                        return conn, True, 0.0
                    conn.close()
            pending = self._connecting.get(key)
            if pending is None:
                break
            # an HTTP/2 connection to this backend is on its way: share it (or open the
            # next one ourselves if it fills up); if it fails, so does this request,
            # rather than every waiter trying the same dead backend in turn
            pending.wait(connect_budget(upstream))
            err = pending.exception
            if isinstance(err, UpstreamConnectError):
                raise UpstreamConnectError(err.message)
        opened, elapsed = self.open(upstream, backend, host)
        return opened, False, elapsed

    def open(self, upstream: UpstreamRuntime, backend: Backend,
             host: str | None = None) -> tuple[AnyConnection, float]:
        """A new connection (an HTTP/2 one joins the pool at once); UpstreamConnectError."""
        key = pool_key(upstream, backend, host)
        pending = None
        if (upstream.alpn == "H2" or key in self._speaks_h2) and key not in self._connecting:
            pending = self._connecting[key] = AsyncResult()
        try:
            opened = self._open(key, upstream, backend, host)
        except BaseException as exc:
            if pending is not None:
                del self._connecting[key]
                pending.set_exception(exc)
            raise
        if pending is not None:
            del self._connecting[key]
            pending.set(None)
        return opened

    def _open(self, key: Any, upstream: UpstreamRuntime, backend: Backend,
              host: str | None) -> tuple[AnyConnection, float]:
        conn, elapsed = connect(upstream, backend, host)
        if conn.protocol != "h2":
            self._speaks_h2.discard(key)
            return conn, elapsed
        self._speaks_h2.add(key)
        try:
            shared = H2UpstreamConnection(conn.sock, backend, conn.created,
                                          upstream.max_h2_streams,
                                          write_timeout=upstream.write_timeout)
        except H2StreamError as exc:  # the preface could not be sent
            conn.close()
            raise UpstreamConnectError(
                f"HTTP/2 preface to {backend.addr} failed: {exc}") from exc
        remaining = connect_budget(upstream) - elapsed - (time.monotonic() - conn.created)
        if not shared.wait_ready(max(remaining, 0.001)):
            shared.close()
            raise UpstreamConnectError(f"{backend.addr} did not answer the HTTP/2 preface")
        elapsed += time.monotonic() - conn.created
        shared.pool_key = key
        shared.tcp_connect_time = conn.tcp_connect_time
        shared.tls_handshake_time = conn.tls_handshake_time
        self._h2.setdefault(key, []).append(shared)
        return shared, elapsed

    def _shared_h2(self, key: Any, upstream: UpstreamRuntime) -> H2UpstreamConnection | None:
        """An HTTP/2 connection with room for a stream; drops dead and long-idle ones."""
        conns = self._h2.get(key)
        if not conns:
            return None
        now = time.monotonic()
        limit = upstream.idle_timeout
        found = None
        for conn in list(conns):
            if conn.closed or conn.goaway:
                conns.remove(conn)  # a GOAWAY'd one closes itself after its last stream
            elif not conn.streams and limit is not None and now - conn.last_used >= limit:
                conns.remove(conn)
                conn.close()
            elif found is None and conn.available:
                found = conn
        if not conns:
            del self._h2[key]
        return found

    def release(self, conn: AnyConnection, *, reusable: bool) -> None:
        """Give ``conn`` back after an exchange.

        HTTP/1.1: kept for the next request if the exchange ended cleanly with
        keep-alive (``reusable``), else closed. HTTP/2: the stream is over; the connection
        stays shared unless it is closed, or not ``reusable`` with no other stream open
        (a stream failure does not close a connection other streams use), or one idle
        connection too many for its backend.
        """
        if isinstance(conn, H2UpstreamConnection):
            self._release_h2(conn, reusable)
            return
        if not reusable:
            conn.close()
            return
        idle = self._idle.setdefault(conn.pool_key, deque())
        if len(idle) >= self.max_idle:
            conn.close()
            return
        conn.last_used = time.monotonic()
        idle.append(conn)

    def _release_h2(self, conn: H2UpstreamConnection, reusable: bool) -> None:
        conns = self._h2.get(conn.pool_key, [])
        if conn.streams and not conn.closed:
            return
        idle = sum(1 for c in conns if not c.streams and not c.closed)
        if conn.closed or not reusable or idle > self.max_idle:
            conn.close()
            if conn in conns:
                conns.remove(conn)

    def close_all(self) -> None:
        for idle in self._idle.values():
            while idle:
                idle.pop().close()
        for conns in self._h2.values():
            for conn in conns:
                conn.close()
        self._h2.clear()


