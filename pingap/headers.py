"""Header fields as the proxy handles them: the ``Headers`` type, lookup, the hop-by-hop
policy, and splitting a Host/authority into host and port.

Headers are ``(name, value)`` byte pairs in wire order with the names' original case;
every lookup compares lower-cased names.
"""

from __future__ import annotations

Headers = list[tuple[bytes, bytes]]

#: Headers that describe one connection, never forwarded (RFC 9110 §7.6.1, plus the
#: old Proxy-Connection/Keep-Alive and h2c's HTTP2-Settings).
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"transfer-encoding",
    b"upgrade", b"http2-settings",
})

#: Never removed because ``Connection`` names them: dropping framing or Host would turn
#: one request into a different one (HTTP Garden's "transducer strips framing" class).
PROTECTED = frozenset({b"host", b"content-length"})
_NEVER_NAMED = PROTECTED | HOP_BY_HOP | {b"close", b""}


def header_value(headers: Headers, name: bytes) -> bytes | None:
    """First value of header ``name`` (lower-case bytes), or None."""
    for key, value in headers:
        if len(key) == len(name) and key.lower() == name:
            return value
    return None


def connection_tokens(headers: Headers) -> set[bytes]:
    """The lower-cased options of every ``Connection`` header."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    return tokens


def strip_hop_by_hop(headers: Headers, also: frozenset[bytes] = frozenset()) -> Headers:
    """``headers`` without hop-by-hop ones, those ``Connection`` names, and ``also``."""
    return strip(headers, drop_set(also))


_DROP_SETS: dict[frozenset[bytes], frozenset[bytes]] = {}


def drop_set(also: frozenset[bytes]) -> frozenset[bytes]:
    """``HOP_BY_HOP | also``, built once per distinct ``also`` (one per location)."""
    drop = _DROP_SETS.get(also)
    if drop is None:
        drop = _DROP_SETS[also] = HOP_BY_HOP | also
    return drop


def strip(headers: Headers, drop: frozenset[bytes]) -> Headers:
    """``headers`` without the names in ``drop`` (a ``drop_set``) and, when ``drop``
    holds ``connection``, without the names a ``Connection`` header lists."""
    out: Headers = []
    named: set[bytes] | None = None
    for item in headers:
        low = item[0].lower()
        if low in drop:
            if low == b"connection":
                # "keep-alive", "close" and the like are dropped anyway: only other
                # names need the second pass below
                tokens = {t.strip().lower() for t in item[1].split(b",")} - _NEVER_NAMED
                if tokens:
                    named = tokens if named is None else named | tokens
            continue
        out.append(item)
    if named:
        out = [(n, v) for n, v in out if n.lower() not in named]
    return out


def split_host_port(authority: str) -> tuple[str, str]:
    """``(host, port)`` of a Host header or authority: IPv6 brackets kept on the host,
    ``port`` empty when there is none (a bare IPv6 literal has none)."""
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            return authority, ""
        rest = authority[end + 1:]
        return authority[:end + 1], rest[1:] if rest.startswith(":") else ""
    if authority.count(":") == 1:
        host, _, port = authority.partition(":")
        return host, port
    return authority, ""


def split_host(authority: str) -> str:
    """The host part of a Host header or authority (no port, IPv6 brackets kept)."""
    return split_host_port(authority)[0]


def unbracket(host: str) -> str:
    """An IPv6 literal without its brackets (any other host unchanged)."""
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host
