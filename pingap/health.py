"""Backend health checks: the ``health_check`` URL, the flip rule, and the HTTP probe bytes.

The URL form (spec §4.4) is ``<scheme>://<host>[/<path>][?<params>]`` with scheme ``tcp``
(connect only), ``http``/``https`` (``GET <path>`` with ``Host: <host>``, healthy iff 200)
or ``grpc`` (Health/Check of ``service``). Consumed query parameters: ``connection_timeout``,
``read_timeout``, ``check_frequency`` (durations: ``3s``, ``500ms``, ``1m``), ``success``,
``failure`` (counts), and the flags ``reuse``, ``tls``, ``parallel`` (present = on), plus
``service``. Every other query pair stays on the probe path, as written.

Pure: the prober that connects and times out lives with the workers; this module says
what to send, how to judge the answer, and when a backend flips.

A grpc check is one unary call of ``/grpc.health.v1.Health/Check`` over HTTP/2. Its
messages are encoded here by hand (no protobuf dependency for one field each): the
request is ``HealthCheckRequest{service = 1: string}``, the answer
``HealthCheckResponse{status = 1: enum}`` with SERVING = 1, each in gRPC's framing of one
compressed-flag byte, a 4-byte big-endian length and the message.

Deliberate differences from pingap:

* ``check_frequency`` is used as given; pingap rounds it up to its 10 s scheduler tick.
* A bad URL or parameter value raises ValueError; pingap ignores bad parameter values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal
from urllib.parse import unquote_plus, urlsplit

from pingap import __version__
from pingap.headers import split_host
from pingap.units import parse_duration

Scheme = Literal["tcp", "http", "https", "grpc"]
_SCHEMES: tuple[Scheme, ...] = ("tcp", "http", "https", "grpc")


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthCheckSpec:
    """How to probe every backend of one upstream. Durations are seconds."""

    scheme: Scheme = "tcp"
    host: str = ""
    """URL host without port (IPv6 literals keep their brackets); the probe's ``Host``."""
    path: str = ""
    """Probe path plus the query pairs that are not parameters (``/health?x=1``)."""
    connection_timeout: float = 3.0
    read_timeout: float = 3.0
    check_frequency: float = 10.0
    success: int = 1
    """Consecutive successes that make an unhealthy backend healthy."""
    failure: int = 2
    """Consecutive failures that make a healthy backend unhealthy."""
    reuse: bool = False
    """Reuse the probe connection between checks."""
    tls: bool = False
    """The probe speaks TLS: ``https``, or ``grpc`` with the ``tls`` flag."""
    service: str = ""
    """gRPC service name for Health/Check."""
    parallel: bool = False
    """Probe the upstream's backends in parallel."""


DEFAULT_HEALTH_CHECK = HealthCheckSpec(failure=1)
"""The check of an upstream without ``health_check``: TCP connect, 1 success / 1 failure."""


def parse_health_check(url: str | None) -> HealthCheckSpec:
    """Parse a ``health_check`` URL; None means :data:`DEFAULT_HEALTH_CHECK`.

    An explicit URL defaults to 1 success / 2 failures to flip. Raises ValueError naming
    the problem for an unknown scheme, a missing http(s) host, or a bad parameter value.
    """
    if url is None:
        return DEFAULT_HEALTH_CHECK
    if not url.isascii() or any(c.isspace() or not c.isprintable() for c in url):
        raise ValueError(
            f"health check {url!r} must be ASCII without whitespace (percent-encode the rest)"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ValueError(f"invalid health check url {url!r}: {exc}") from exc
    scheme = next((s for s in _SCHEMES if s == parts.scheme), None)
    if scheme is None:
        raise ValueError(
            f"invalid health check url {url!r}: scheme must be tcp, http, https or grpc"
        )
    host = _host(parts.netloc)
    if scheme in ("http", "https") and not host:
        raise ValueError(f"invalid health check url {url!r}: no host")

    spec = HealthCheckSpec(scheme=scheme, host=host)
    timeouts: dict[str, float] = {}
    counts: dict[str, int] = {}
    flags: set[str] = set()
    service = spec.service
    kept: list[str] = []
    for pair in parts.query.split("&") if parts.query else ():
        raw_key, _, raw_value = pair.partition("=")
        key, value = unquote_plus(raw_key), unquote_plus(raw_value)
        if key in ("connection_timeout", "read_timeout", "check_frequency"):
            timeouts[key] = _positive_duration(key, value, url)
        elif key in ("success", "failure"):
            if not (value.isascii() and value.isdigit()) or int(value) < 1:
                raise ValueError(
                    f"health check {url!r}: {key} must be a whole number >= 1"
                )
            counts[key] = int(value)
        elif key in ("reuse", "tls", "parallel"):
            flags.add(key)
        elif key == "service":
            service = value
        elif pair:
            kept.append(pair)

    path = parts.path or ("/" if scheme in ("http", "https") else "")
    if kept:
        path = f"{path}?{'&'.join(kept)}"
    return replace(
        spec,
        path=path,
        connection_timeout=timeouts.get("connection_timeout", spec.connection_timeout),
        read_timeout=timeouts.get("read_timeout", spec.read_timeout),
        check_frequency=timeouts.get("check_frequency", spec.check_frequency),
        success=counts.get("success", spec.success),
        failure=counts.get("failure", spec.failure),
        reuse="reuse" in flags,
        tls=scheme == "https" or (scheme == "grpc" and "tls" in flags),
        service=service,
        parallel="parallel" in flags,
    )


def _host(netloc: str) -> str:
    return split_host(netloc.rpartition("@")[2])


def _positive_duration(key: str, value: str, url: str) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"health check {url!r}: {key}: {exc}") from exc
    if seconds <= 0:
        raise ValueError(f"health check {url!r}: {key} must be greater than zero")
    return seconds


class HealthTracker:
    """Health of one backend: flips after enough consecutive results against its state.

    A backend starts healthy. ``failure`` consecutive failures make it unhealthy and
    ``success`` consecutive successes make it healthy again; a result that agrees with the
    current state resets the streak.
    """

    __slots__ = ("_failure", "_healthy", "_streak", "_success")

    def __init__(
        self, *, success: int = 1, failure: int = 1, healthy: bool = True
    ) -> None:
        if success < 1 or failure < 1:
            raise ValueError("success and failure thresholds must be >= 1")
        self._success = success
        self._failure = failure
        self._healthy = healthy
        self._streak = 0

    @classmethod
    def for_spec(cls, spec: HealthCheckSpec, *, healthy: bool = True) -> HealthTracker:
        return cls(success=spec.success, failure=spec.failure, healthy=healthy)

    @property
    def healthy(self) -> bool:
        return self._healthy

    def record(self, ok: bool) -> bool | None:
        """Count one probe result; the new state if it flipped, else None."""
        if ok == self._healthy:
            self._streak = 0
            return None
        self._streak += 1
        if self._streak < (self._success if ok else self._failure):
            return None
        self._healthy = ok
        self._streak = 0
        return ok


def build_http_probe_request(spec: HealthCheckSpec) -> bytes:
    """The raw HTTP/1.1 request an http/https check sends to each backend."""
    return (
        f"GET {spec.path or '/'} HTTP/1.1\r\n"
        f"Host: {spec.host}\r\n"
        f"User-Agent: pingap/{__version__}\r\n"
        "Connection: close\r\n"
        "\r\n"
    ).encode("latin-1")


def is_healthy_status(status: int) -> bool:
    """Whether an http/https probe's status means healthy: exactly 200, as in pingap."""
    return status == 200


GRPC_HEALTH_PATH = b"/grpc.health.v1.Health/Check"
GRPC_SERVING = 1


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def grpc_health_request(service: str) -> bytes:
    """The framed gRPC message ``HealthCheckRequest{service}`` (empty: the whole server)."""
    message = b""
    if service:
        name = service.encode("utf-8")
        message = b"\x0a" + _varint(len(name)) + name  # field 1, length-delimited
    return b"\x00" + len(message).to_bytes(4, "big") + message


def grpc_health_status(body: bytes) -> int | None:
    """The ``status`` of the framed ``HealthCheckResponse`` in ``body``; None if malformed
    (or compressed: the probe does not offer compression, so a server must not use it)."""
    if len(body) < 5 or body[0] != 0:
        return None
    length = int.from_bytes(body[1:5], "big")
    message = body[5:]
    if len(message) != length:
        return None
    status = 0  # proto3: an absent enum field is its zero value (UNKNOWN)
    pos = 0
    try:
        while pos < len(message):
            key, pos = _read_varint(message, pos)
            field_number, wire_type = key >> 3, key & 7
            if wire_type == 0:
                value, pos = _read_varint(message, pos)
                if field_number == 1:
                    status = value
            elif wire_type == 1:
                pos += 8
            elif wire_type == 2:
                size, pos = _read_varint(message, pos)
                pos += size
            elif wire_type == 5:
                pos += 4
            else:
                return None
    except IndexError:
        return None
    return status if pos == len(message) else None


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]  # IndexError when truncated
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise IndexError("varint too long")


def is_grpc_serving(http_status: int, grpc_status: bytes | None, body: bytes) -> bool:
    """Whether a Health/Check answer means healthy: HTTP 200, grpc-status 0 and SERVING."""
    return (http_status == 200 and grpc_status is not None and grpc_status.strip() == b"0"
            and grpc_health_status(body) == GRPC_SERVING)


def down_upstreams(config: Any, health: Callable[[str, str], bool | None]) -> list[str]:
    """The upstreams of ``config`` whose every backend the health checks see as down
    (pingap's ``upstream_status``); transparent upstreams have no backends to check."""
    from pingap.upstream import parse_addr

    down = []
    for name, upstream in config.upstreams.items():
        if (upstream.discovery or "").lower() == "transparent":
            continue
        addrs = []
        for addr in upstream.addrs:
            try:
                addrs.append(parse_addr(addr, tls=bool(upstream.sni)).addr)
            except ValueError:
                continue  # reported by the config checks
        if addrs and all(health(name, addr) is False for addr in addrs):
            down.append(name)
    return down
