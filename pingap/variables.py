"""Header rules and the ``$variables`` their values may name (spec §3.5).

``proxy_set_headers``/``proxy_add_headers`` entries are ``"Name:value"``. A value that
starts with ``$`` or ``:`` is dynamic and is resolved per request. Unlike pingap, an
unknown variable is a configuration error (pingap sends the literal text), ``$http_<name>``
converts ``_`` to ``-`` like nginx does (pingap looks the name up verbatim, so both
spellings work here), and a variable that resolves to nothing drops the header instead of
sending an empty or literal value.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass

from pingap.accesslog import millis
from pingap.context import RequestContext
from pingap.units import format_duration_human

Resolver = Callable[[RequestContext], "str | None"]

TOKEN = _TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
BAD_VALUE = _BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # controls but HTAB (RFC 9110 §5.5)

#: Request-context keys usable as ``:key`` (the access log's ``{:key}`` names).
CONTEXT_KEYS = frozenset({
    "connection_id", "connection_reused", "connection_time", "tls_version", "tls_cipher",
    "tls_handshake_time", "processing", "location", "upstream_addr", "upstream_status",
    "upstream_reused", "upstream_connected", "upstream_connect_time",
    "upstream_tcp_connect_time", "upstream_tls_handshake_time", "upstream_connection_time",
    "upstream_processing_time", "upstream_response_time", "compression_time",
    "compression_ratio", "cache_lookup_time", "cache_lock_time", "service_time",
})
#: Timing keys that also have a ``<key>_human`` form ("1.5s", "320ms"), as in the access log.
_TIMING_KEYS = frozenset({
    "connection_time", "tls_handshake_time", "upstream_connect_time",
    "upstream_tcp_connect_time", "upstream_tls_handshake_time", "upstream_connection_time",
    "upstream_processing_time", "upstream_response_time", "compression_time",
    "cache_lookup_time", "cache_lock_time", "service_time",
})
CONTEXT_KEYS = CONTEXT_KEYS | {f"{key}_human" for key in _TIMING_KEYS}


def _forwarded_for(ctx: RequestContext) -> str:
    existing = ctx.request_header("x-forwarded-for")
    addr = ctx.conn.remote_addr
    return f"{existing}, {addr}" if existing else addr


_BUILTINS: dict[str, Resolver] = {
    "host": lambda ctx: ctx.host or None,
    "scheme": lambda ctx: ctx.scheme,
    "remote_addr": lambda ctx: ctx.conn.remote_addr,
    "remote_port": lambda ctx: str(ctx.conn.remote_port),
    "server_addr": lambda ctx: ctx.conn.server_addr,
    "server_port": lambda ctx: str(ctx.conn.server_port),
    "upstream_addr": lambda ctx: ctx.upstream_addr,
    "proxy_add_x_forwarded_for": _forwarded_for,
    "client_ip": lambda ctx: ctx.client_ip,
    "request_uri": lambda ctx: ctx.uri,
}


def _context_resolver(key: str) -> Resolver:
    if key.endswith("_human"):
        return _human_resolver(key.removesuffix("_human"))

    def resolve(ctx: RequestContext) -> str | None:
        if key == "service_time":
            return str(millis((ctx.end or ctx.start) - ctx.start))
        if key == "connection_id":
            return str(ctx.conn.connection_id)
        if key in ("tls_version", "tls_cipher", "tls_handshake_time"):
            value: object = getattr(ctx.conn, key)
        else:
            value = getattr(ctx, key, None)
        if value is None:
            return None
        if isinstance(value, bool):
            return "true" if value else "false"
        if key == "compression_ratio" and isinstance(value, float):
            return f"{value:.1f}"
        if isinstance(value, float):
            return str(millis(value))
        return str(value)
    return resolve


def _human_resolver(key: str) -> Resolver:
    def resolve(ctx: RequestContext) -> str | None:
        if key == "service_time":
            return format_duration_human((ctx.end or ctx.start) - ctx.start)
        holder = ctx.conn if key == "tls_handshake_time" else ctx
        value = getattr(holder, key, None)
        return None if value is None else format_duration_human(value)
    return resolve


def compile_value(text: str, *, env: dict[str, str] | None = None) -> Resolver:
    """Resolver for a dynamic value (``$name`` or ``:key``); ValueError if unknown."""
    environ = os.environ if env is None else env
    if text.startswith(":"):
        key = text[1:]
        if key not in CONTEXT_KEYS:
            raise ValueError(f"unknown context key {text!r}")
        return _context_resolver(key)
    name = text[1:]
    if name in _BUILTINS:
        return _BUILTINS[name]
    if name == "hostname":
        hostname = socket.gethostname()
        return lambda ctx: hostname
    if name.startswith("http_") and len(name) > 5:
        header = name[5:].replace("_", "-")
        return lambda ctx: ctx.request_header(header)
    if name in environ:
        value = environ[name]
        return lambda ctx: value
    raise ValueError(f"unknown variable ${name} (not a built-in variable, "
                     f"and no environment variable {name} is set)")


@dataclass(frozen=True, slots=True)
class HeaderRule:
    """One header to set or add on the upstream request."""

    name: bytes
    static: bytes | None
    resolver: Resolver | None = None

    def value(self, ctx: RequestContext) -> bytes | None:
        if self.resolver is None:
            return self.static
        resolved = self.resolver(ctx)
        return None if resolved is None else resolved.encode("latin-1", "replace")


def parse_header_rule(text: str) -> HeaderRule:
    """``"Name:value"`` → HeaderRule; ValueError with a readable reason otherwise."""
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not name:
        raise ValueError(f"invalid header {text!r}: expected 'Name:value'")
    if not _TOKEN.match(name):
        raise ValueError(f"invalid header name {name!r}")
    if _BAD_VALUE.search(value):
        raise ValueError(f"invalid header value for {name!r}: control characters")
    if value[:1] in ("$", ":") and len(value) > 1:
        return HeaderRule(name.encode("latin-1"), None, compile_value(value))
    return HeaderRule(name.encode("latin-1"), value.encode("latin-1", "replace"))


def check_header_rule(text: str) -> str | None:
    """Config validator: an error message when ``text`` is not a usable header rule."""
    try:
        parse_header_rule(text)
    except ValueError as exc:
        return str(exc)
    return None


#: What ``enable_reverse_proxy_headers`` sets, in pingap's order.
REVERSE_PROXY_HEADERS = (
    "X-Real-IP:$remote_addr",
    "X-Forwarded-For:$proxy_add_x_forwarded_for",
    "X-Forwarded-Proto:$scheme",
    "X-Forwarded-Host:$host",
    "X-Forwarded-Port:$server_port",
)
