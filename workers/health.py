"""Active health checks: one greenlet per upstream probes every backend each interval.

``tcp`` checks connect; ``http``/``https`` send ``GET <path>`` and want status 200;
``grpc`` makes a real gRPC call, ``/grpc.health.v1.Health/Check`` for ``service``, over
HTTP/2 (``workers.h2upstream``; h2c, or TLS with ALPN ``h2`` with the ``tls`` flag) and
wants grpc-status 0 with SERVING.
Results feed a ``HealthTracker`` per backend, and flips are written into the upstream's
``health`` map that backend selection reads (and logged, as pingap's ``backend_status``).
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

import gevent

from pingap import __version__
from pingap.errors import UpstreamError
from pingap.events import ResponseData, ResponseEnded, ResponseStarted
from pingap.headers import unbracket
from pingap.health import (
    GRPC_HEALTH_PATH,
    HealthCheckSpec,
    HealthTracker,
    build_http_probe_request,
    grpc_health_request,
    is_grpc_serving,
    is_healthy_status,
)
from pingap.runtime import UpstreamRuntime
from pingap.upstream import Backend
from workers.h2upstream import H2UpstreamConnection
from workers.pool import open_tcp

log = logging.getLogger("pingap.health")

_insecure: dict[bool, ssl.SSLContext] = {}


def _insecure_context(h2: bool = False) -> ssl.SSLContext:
    """Probes do not verify certificates (as pingap); built on first https/grpc check.
    The grpc one offers ALPN ``h2``."""
    context = _insecure.get(h2)
    if context is None:
        context = _insecure[h2] = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        if h2:
            context.set_alpn_protocols(["h2"])
    return context


def probe(spec: HealthCheckSpec, backend: Backend) -> bool:
    """One check of one backend; True if healthy."""
    try:
        sock = open_tcp(unbracket(backend.host), backend.port, spec.connection_timeout)
    except OSError:
        return False
    try:
        if spec.scheme == "tcp":
            return True
        if spec.scheme == "grpc":
            return _probe_grpc(spec, backend, sock)
        sock.settimeout(spec.read_timeout)
        if spec.tls:
            sock = _insecure_context().wrap_socket(sock, server_hostname=spec.host or None)
        sock.sendall(build_http_probe_request(spec))
        data = b""
        while b"\r\n" not in data and len(data) < 4096:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        parts = data.split(b" ", 2)
        return (len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit()
                and is_healthy_status(int(parts[1])))
    except OSError:
        return False
    finally:
        sock.close()


def _probe_grpc(spec: HealthCheckSpec, backend: Backend, sock: socket.socket) -> bool:
    """One Health/Check call on a fresh HTTP/2 connection, within ``read_timeout``."""
    deadline = time.monotonic() + spec.read_timeout
    if spec.tls:
        sock.settimeout(spec.read_timeout)
        sock = _insecure_context(h2=True).wrap_socket(sock, server_hostname=spec.host or None)
    conn = None
    try:
        conn = H2UpstreamConnection(sock, backend, time.monotonic(), 1,
                                    write_timeout=spec.read_timeout)
        if not conn.wait_ready(deadline - time.monotonic()):
            return False
        authority = spec.host or backend.addr
        stream = conn.open_stream(
            b"POST", b"https" if spec.tls else b"http", authority.encode("latin-1"),
            GRPC_HEALTH_PATH,
            [(b"content-type", b"application/grpc"), (b"te", b"trailers"),
             (b"user-agent", f"pingap/{__version__}".encode())],
            end_stream=False)
        stream.send_data(grpc_health_request(spec.service))
        stream.end()
        status = 0
        grpc_status = None
        body = b""
        while True:
            for event in stream.next_events(max(deadline - time.monotonic(), 0.0)):
                if isinstance(event, ResponseStarted):
                    status = event.status
                    # a trailers-only answer (an error) carries grpc-status in the head
                    grpc_status = _header(event.headers, b"grpc-status")
                elif isinstance(event, ResponseData):
                    body += event.data
                    if len(body) > 65536:
                        return False
                elif isinstance(event, ResponseEnded):
                    grpc_status = _header(event.trailers, b"grpc-status") or grpc_status
                    return is_grpc_serving(status, grpc_status, body)
    except (UpstreamError, OSError):  # a failed stream or timeout; a socket error
        return False
    finally:
        if conn is not None:
            conn.close()


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    return next((v for n, v in headers if n.lower() == name), None)


class HealthProber:
    """Keeps one upstream's ``health`` map current."""

    def __init__(self, upstream: UpstreamRuntime, shared: Any = None,
                 on_flip: Callable[[str, str, bool], None] | None = None) -> None:
        self.upstream = upstream
        self.on_flip = on_flip  # (upstream, backend addr, healthy): the webhook event
        self.shared = shared  # pingap.state.SharedState: publish for every worker
        self.spec = upstream.health_check
        self.trackers = {b.addr: self._tracker(b.addr) for b in upstream.backends}
        self._greenlet: gevent.Greenlet | None = None

    def _tracker(self, addr: str) -> HealthTracker:
        """Start from what the host already knows (a prober of an older generation)."""
        healthy = True
        if self.shared is not None:
            healthy = self.shared.health(self.upstream.name, addr) is not False
        return HealthTracker.for_spec(self.spec, healthy=healthy)

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)

    def check_once(self) -> None:
        jobs = [(b, gevent.spawn(probe, self.spec, b)) for b in self.upstream.backends]
        for backend, job in jobs:
            ok = bool(job.get())
            tracker = self.trackers[backend.addr]
            flipped = tracker.record(ok)
            if flipped is not None:
                self.upstream.health[backend.addr] = flipped
                log.warning("upstream %s(%s) becomes %s", self.upstream.name, backend.addr,
                            "healthy" if flipped else "unhealthy")
                if self.on_flip is not None:
                    self.on_flip(self.upstream.name, backend.addr, flipped)
            if self.shared is not None:
                # every check (not only flips), so workers of a new generation see it too
                self.shared.set_health(self.upstream.name, backend.addr, tracker.healthy)

    def _run(self) -> None:
        while True:
            try:
                self.check_once()
            except Exception:  # a bug in one check must not end the prober
                log.exception("health check of %s failed", self.upstream.name)
            gevent.sleep(self.spec.check_frequency)
