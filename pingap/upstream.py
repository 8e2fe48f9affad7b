"""Upstream backends and load balancing: address syntax, ``algo`` parsing and backend selection.

An upstream's ``addrs`` entries are ``"host[:port][ weight]"`` (spec §4.1); ``algo`` is
``round_robin`` or ``hash:<type>[:<key>]`` (§4.3). :func:`make_selector` turns both into a
:class:`Selector` whose one method, ``select(ctx, is_available)``, returns the backend for a
request, skipping those the caller reports unavailable (unhealthy, circuit open).

Pure: no sockets, no DNS. ``host`` stays as written (a hostname is resolved by discovery,
elsewhere), and selection state lives on the selector instance (one per upstream per worker).

Deliberate differences from pingap:

* ``algo = "hash"`` (no sub-type) hashes the path, as documented upstream; pingap's code
  falls back to round robin there (spec §14.3).
* Selection tries every distinct backend before giving up; pingap tries at most 4.
* Round robin is smooth weighted round robin (nginx), so a 1:3 split is exact over every
  4 picks and interleaved; pingora repeats each backend ``weight`` times in a row.
* The hash ring follows pingora-ketama (160 CRC32 points per unit of weight), but its
  points are named after ``Backend.addr`` as written, not the resolved socket address,
  so a key need not land on the same backend as it would under pingap.
"""

from __future__ import annotations

import bisect
import ipaddress
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from pingap.context import RequestContext

IsAvailable = Callable[["Backend"], bool]

HashType = Literal["url", "ip", "header", "cookie", "query", "path"]
_HASH_TYPES: tuple[HashType, ...] = ("url", "ip", "header", "cookie", "query", "path")
_KEYED_HASH_TYPES = frozenset({"header", "cookie", "query"})

POINTS_PER_WEIGHT = 160
"""Ring points per unit of weight (pingora-ketama's ``POINT_MULTIPLE``)."""


@dataclass(frozen=True, slots=True)
class Backend:
    """One backend address of an upstream.

    ``host`` is the host as written in the config (a hostname is not resolved here), with
    the brackets of an IPv6 literal removed so it can be handed to ``connect`` as is.
    ``weight`` 0 parks the backend: it is never selected.
    """

    host: str
    port: int
    weight: int = 1
    #: ``host:port``, with IPv6 literals bracketed (``[::1]:8080``); computed once
    addr: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        addr = (f"[{self.host}]:{self.port}" if ":" in self.host
                else f"{self.host}:{self.port}")
        object.__setattr__(self, "addr", addr)


def parse_addr(text: str, *, tls: bool = False) -> Backend:
    """Parse an ``addrs`` entry, ``"host[:port][ weight]"`` (spec §4.1).

    A missing port is 443 when the upstream speaks TLS (``sni`` set) and 80 otherwise. IPv6
    literals are written ``[::1]:8080``; a bare literal with no port (``::1``) is accepted
    too. Raises ValueError on anything unparsable, including the weight, so the config
    validator can report it; pingap silently uses weight 1 for an unparsable weight.
    """
    parts = text.split()
    if not parts:
        raise ValueError("empty upstream address")
    if len(parts) > 2:
        raise ValueError(
            f"invalid upstream address {text!r}: expected 'host[:port][ weight]'"
        )
    weight = 1
    if len(parts) == 2:
        if not (parts[1].isascii() and parts[1].isdigit()):
            raise ValueError(
                f"invalid weight {parts[1]!r} in upstream address {text!r}"
            )
        weight = int(parts[1])
    host, port_text = _split_host_port(parts[0], text)
    if port_text is None:
        return Backend(host=host, port=443 if tls else 80, weight=weight)
    if (
        not (port_text.isascii() and port_text.isdigit())
        or not 0 < int(port_text) < 65536
    ):
        raise ValueError(f"invalid port {port_text!r} in upstream address {text!r}")
    return Backend(host=host, port=int(port_text), weight=weight)


def _split_host_port(hostport: str, text: str) -> tuple[str, str | None]:
    if hostport.startswith("["):
        host, bracket, rest = hostport[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"invalid IPv6 upstream address {text!r}")
        _check_ipv6(host, text)
        return host, rest[1:] if rest else None
    if hostport.count(":") > 1:
        _check_ipv6(hostport, text)
        return hostport, None
    host, colon, port = hostport.partition(":")
    if not host or any(c in host for c in "/@[]"):
        raise ValueError(f"invalid host in upstream address {text!r}")
    return host, port if colon else None


def _check_ipv6(host: str, text: str) -> None:
    try:
        ipaddress.IPv6Address(host)
    except ValueError as exc:
        raise ValueError(
            f"invalid IPv6 literal {host!r} in upstream address {text!r}"
        ) from exc


@dataclass(frozen=True, slots=True)
class Algo:
    """A parsed ``algo``: round robin, or a consistent hash of one request attribute.

    ``hash_type`` and ``key`` are None for round robin; ``key`` is the header, cookie or
    query parameter name for those hash types and None for the others.
    """

    kind: Literal["round_robin", "hash"]
    hash_type: HashType | None = None
    key: str | None = None


ROUND_ROBIN = Algo(kind="round_robin")


def parse_algo(algo: str) -> Algo:
    """Parse ``algo`` (spec §4.3).

    ``round_robin`` and any value not starting with ``hash`` are round robin.
    ``hash:url|ip|path`` and ``hash:header|cookie|query:<name>`` are consistent hashes.
    Bare ``hash`` and ``hash:<unknown>`` hash the URI path: for bare ``hash`` that is what
    pingap documents, although its code falls back to round robin (spec §14.3).
    Raises ValueError when a header, cookie or query hash has no name, which in pingap
    would silently send every request to the same backend.
    """
    if algo == "hash":
        return Algo(kind="hash", hash_type="path")
    if not algo.startswith("hash:"):
        return ROUND_ROBIN
    hash_type, _, key = algo[len("hash:") :].partition(":")
    for known in _HASH_TYPES:
        if hash_type == known:
            if known not in _KEYED_HASH_TYPES:
                return Algo(kind="hash", hash_type=known)
            if not key:
                raise ValueError(f"algo {algo!r} needs a name: 'hash:{known}:<name>'")
            return Algo(kind="hash", hash_type=known, key=key)
    return Algo(kind="hash", hash_type="path")


def hash_key(algo: Algo, ctx: RequestContext) -> str:
    """The request attribute a hash ``algo`` hashes; "" when a header/cookie/query is missing."""
    match algo.hash_type:
        case "url":
            return ctx.uri
        case "ip":
            return ctx.client_ip
        case "header":
            return ctx.request_header(algo.key or "") or ""
        case "cookie":
            return ctx.cookie(algo.key or "") or ""
        case "query":
            return ctx.query_param(algo.key or "") or ""
        case _:
            return ctx.path


class Selector(Protocol):
    """Picks the backend for a request, whichever the algorithm."""

    @property
    def backends(self) -> tuple[Backend, ...]: ...

    def select(self, ctx: RequestContext, is_available: IsAvailable) -> Backend | None:
        """The backend for ``ctx`` among those ``is_available`` accepts, or None."""
        ...


class WeightedRoundRobin:
    """Smooth weighted round robin (nginx): weights are met exactly and picks interleave.

    Each pick adds every available backend's weight to its running score, takes the
    highest score (the earliest on a tie) and subtracts the total weight from it.
    Unavailable backends sit the round out, so the split holds among the rest.
    """

    __slots__ = ("_backends", "_scores")

    def __init__(self, backends: Iterable[Backend]) -> None:
        self._backends = tuple(backends)
        self._scores = [0] * len(self._backends)

    @property
    def backends(self) -> tuple[Backend, ...]:
        return self._backends

    def pick(self, is_available: IsAvailable) -> Backend | None:
        """The next backend; ``is_available`` is asked once per backend. None if none is."""
        backends = self._backends
        if len(backends) == 1:  # the common case: no scores to keep
            only = backends[0]
            return only if only.weight > 0 and is_available(only) else None
        scores = self._scores
        best = -1
        total = 0
        for index, backend in enumerate(self._backends):
            if backend.weight <= 0 or not is_available(backend):
                continue
            scores[index] += backend.weight
            total += backend.weight
            if best < 0 or scores[index] > scores[best]:
                best = index
        if best < 0:
            return None
        scores[best] -= total
        return self._backends[best]

    def select(self, ctx: RequestContext, is_available: IsAvailable) -> Backend | None:
        return self.pick(is_available)


def _crc32(data: bytes, start: int = 0) -> int:
    return zlib.crc32(data, start) & 0xFFFFFFFF


class ConsistentHash:
    """A Ketama hash ring: each backend gets ``weight * 160`` points on a 32-bit circle.

    Point ``i`` of a backend is the CRC32 of ``"<addr>\\0"`` followed by point ``i-1``
    (little-endian), in the style of pingora-ketama; a key maps to the first point at or after its
    own CRC32, wrapping around. CRC32 keeps the ring identical in every process (Python's
    ``hash()`` is salted per process). Removing a backend, or skipping an unavailable
    one, moves only the keys that landed on its points.
    """

    __slots__ = ("_backends", "_distinct", "_hashes", "_owners")

    def __init__(self, backends: Iterable[Backend]) -> None:
        self._backends = tuple(backends)
        points: list[tuple[int, int]] = []
        for index, backend in enumerate(self._backends):
            seed = _crc32(b"\0", _crc32(backend.addr.encode("utf-8")))
            previous = 0
            for _ in range(max(backend.weight, 0) * POINTS_PER_WEIGHT):
                previous = _crc32(previous.to_bytes(4, "little"), seed)
                points.append((previous, index))
        points.sort()
        self._hashes = [point for point, _ in points]
        self._owners = [index for _, index in points]
        self._distinct = len({index for _, index in points})

    @property
    def backends(self) -> tuple[Backend, ...]:
        return self._backends

    def pick(self, key: str, is_available: IsAvailable) -> Backend | None:
        """The backend owning ``key``, walking clockwise past unavailable ones.

        Every distinct backend is tried once before giving up (pingap stops after 4).
        """
        if not self._hashes:
            return None
        start = bisect.bisect_left(
            self._hashes, _crc32(key.encode("utf-8", "surrogateescape"))
        )
        size = len(self._owners)
        tried: set[int] = set()
        for step in range(size):
            index = self._owners[(start + step) % size]
            if index in tried:
                continue
            backend = self._backends[index]
            if is_available(backend):
                return backend
            tried.add(index)
            if len(tried) == self._distinct:
                break
        return None


class HashSelector:
    """Consistent hashing of the request attribute named by a hash ``Algo``."""

    __slots__ = ("_algo", "_ring")

    def __init__(self, algo: Algo, backends: Iterable[Backend]) -> None:
        self._algo = algo
        self._ring = ConsistentHash(backends)

    @property
    def backends(self) -> tuple[Backend, ...]:
        return self._ring.backends

    def select(self, ctx: RequestContext, is_available: IsAvailable) -> Backend | None:
        return self._ring.pick(hash_key(self._algo, ctx), is_available)


class TransparentSelector:
    """``discovery = "transparent"`` (pingap): the backend is the request's host, ``addrs``
    are ignored. The port is the one in the Host header when it names one (ours: pingap
    always uses the scheme's), else 443 with TLS (``sni`` set) and 80 without."""

    backends: tuple[Backend, ...] = ()

    def __init__(self, tls: bool) -> None:
        self.tls = tls

    def select(self, ctx: RequestContext, is_available: IsAvailable) -> Backend | None:
        host = ctx.authority or ctx.host
        if not host or any(c.isspace() for c in host):
            return None
        try:
            backend = parse_addr(host, tls=self.tls)
        except ValueError:
            return None
        return backend if is_available(backend) else None


def is_own_listener(ip: str, port: int, listeners: Iterable[tuple[str, int]],
                    local_ips: Callable[[], frozenset[str]]) -> bool:
    """Whether a connection to ``ip``:``port`` would reach one of ``listeners`` (this
    proxy's own ``(host, port)`` listen addresses): the same address, or any local one
    for a wildcard listener. ``local_ips`` is asked only for a wildcard listener."""
    try:
        addr = ipaddress.ip_address(ip.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    for host, listen_port in listeners:
        if listen_port != port:
            continue
        try:
            listen = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            continue
        if listen.is_unspecified:
            if addr.is_loopback or addr.is_unspecified or str(addr) in local_ips():
                return True
        elif listen == addr or (addr.is_unspecified and listen.is_loopback):
            return True
    return False


def make_selector(algo: Algo, backends: Sequence[Backend]) -> Selector:
    """The selector for ``algo`` over ``backends``; build a new one when the backends change."""
    if algo.kind == "hash":
        return HashSelector(algo, backends)
    return WeightedRoundRobin(backends)
