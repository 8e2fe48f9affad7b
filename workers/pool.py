"""Keep-alive connections to backends, pooled per backend address.

Idle connections are reused newest first; one found closed by the backend (checked with
a non-blocking peek) or idle past the upstream's ``idle_timeout`` is dropped. At most
``max_idle`` idle connections are kept per backend.
"""

from __future__ import annotations

import select
import socket
import time
from collections import deque

from gevent.monkey import get_original

from pingap.errors import UpstreamConnectError
from pingap.runtime import UpstreamRuntime
from pingap.upstream import Backend

DEFAULT_CONNECT_TIMEOUT = 10.0
# The unpatched poll: a zero-timeout check needs no trip through the gevent hub.
_poll = get_original("select", "poll")
_POLLIN = select.POLLIN | select.POLLERR | select.POLLHUP


class UpstreamConnection:
    """One TCP connection to a backend."""

    __slots__ = ("backend", "created", "last_used", "requests", "sock")

    def __init__(self, sock: socket.socket, backend: Backend, now: float) -> None:
        self.sock = sock
        self.backend = backend
        self.created = now
        self.last_used = now
        self.requests = 0

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
    host = backend.host
    return host[1:-1] if host.startswith("[") else host


def connect(upstream: UpstreamRuntime, backend: Backend) -> tuple[UpstreamConnection, float]:
    """A new connection and the seconds it took; UpstreamConnectError/Timeout on failure."""
    timeout = (upstream.connection_timeout or upstream.total_connection_timeout
               or DEFAULT_CONNECT_TIMEOUT)
    start = time.monotonic()
    try:
        sock = socket.create_connection((_host(backend), backend.port), timeout=timeout)
    except TimeoutError as exc:
        raise UpstreamConnectError(f"connect to {backend.addr} timed out") from exc
    except OSError as exc:
        raise UpstreamConnectError(f"connect to {backend.addr} failed: {exc}") from exc
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(None)  # per-operation deadlines are the connection loop's business
    now = time.monotonic()
    return UpstreamConnection(sock, backend, now), now - start


class UpstreamPool:
    """Idle keep-alive connections, per backend address."""

    def __init__(self, max_idle: int) -> None:
        self.max_idle = max_idle
        self._idle: dict[str, deque[UpstreamConnection]] = {}

    def acquire(self, upstream: UpstreamRuntime,
                backend: Backend) -> tuple[UpstreamConnection, bool, float]:
        """(connection, reused, connect seconds) for ``backend``."""
        idle = self._idle.get(backend.addr)
        if idle:
            now = time.monotonic()
            limit = upstream.idle_timeout
            while idle:
                conn = idle.pop()
                if (limit is None or now - conn.last_used < limit) and conn.alive():
                    return conn, True, 0.0
                conn.close()
        conn, elapsed = connect(upstream, backend)
        return conn, False, elapsed

    def release(self, conn: UpstreamConnection, *, reusable: bool) -> None:
        """Keep ``conn`` for the next request if the exchange ended cleanly with keep-alive."""
        if not reusable:
            conn.close()
            return
        idle = self._idle.setdefault(conn.backend.addr, deque())
        if len(idle) >= self.max_idle:
            conn.close()
            return
        conn.last_used = time.monotonic()
        idle.append(conn)

    def close_all(self) -> None:
        for idle in self._idle.values():
            while idle:
                idle.pop().close()


