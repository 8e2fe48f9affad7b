"""Active health checks: one greenlet per upstream probes every backend each interval.

``tcp`` checks connect; ``http``/``https`` send ``GET <path>`` and want status 200.
Results feed a ``HealthTracker`` per backend, and flips are written into the upstream's
``health`` map that backend selection reads (and logged, as pingap's ``backend_status``).
"""

from __future__ import annotations

import logging
import socket
import ssl
from typing import Any

import gevent

from pingap.health import (
    HealthCheckSpec,
    HealthTracker,
    build_http_probe_request,
    is_healthy_status,
)
from pingap.runtime import UpstreamRuntime
from pingap.upstream import Backend

log = logging.getLogger("pingap.health")

_insecure: ssl.SSLContext | None = None


def _insecure_context() -> ssl.SSLContext:
    """Probes do not verify certificates (as pingap); built on first https check."""
    global _insecure
    if _insecure is None:
        _insecure = ssl.create_default_context()
        _insecure.check_hostname = False
        _insecure.verify_mode = ssl.CERT_NONE
    return _insecure


def probe(spec: HealthCheckSpec, backend: Backend) -> bool:
    """One check of one backend; True if healthy."""
    host = backend.host[1:-1] if backend.host.startswith("[") else backend.host
    try:
        sock = socket.create_connection((host, backend.port),
                                        timeout=spec.connection_timeout)
    except OSError:
        return False
    try:
        if spec.scheme in ("tcp", "grpc"):
            return True
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


class HealthProber:
    """Keeps one upstream's ``health`` map current."""

    def __init__(self, upstream: UpstreamRuntime, shared: Any = None) -> None:
        self.upstream = upstream
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
