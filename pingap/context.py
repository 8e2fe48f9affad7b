"""Per-connection and per-request state, shared by the session, header rules and the access log.

Times are ``time.monotonic()`` seconds (``*_time`` durations in seconds, ``None`` when the
step did not happen); ``start_wall`` is the ``time.time()`` of the request start. Header
lists hold ``(name, value)`` byte pairs with the name in its original case.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pingap.headers import header_value


class BodyFilter(Protocol):
    """Rewrites a response body as it streams: ``feed`` each chunk, ``end`` adds the tail.

    A filter may hold data back (return ``b""``) and must bound what it holds; it raises
    ``ValueError`` when the body cannot be rewritten (the response is then cut off)."""

    def feed(self, data: bytes) -> bytes: ...
    def end(self) -> bytes: ...


@dataclass(slots=True)
class ConnectionInfo:
    """What is known about a downstream connection when it is accepted."""

    connection_id: int
    remote_addr: str
    remote_port: int
    server_addr: str
    server_port: int
    accepted_at: float
    tls: bool = False
    tls_version: str | None = None
    tls_cipher: str | None = None
    tls_handshake_time: float | None = None
    requests: int = 0


@dataclass(slots=True)
class RequestContext:
    """Everything one request leaves behind, for variables, plugins and the access log."""

    conn: ConnectionInfo
    method: str
    path: str
    query: str
    http_version: str
    host: str
    request_headers: list[tuple[bytes, bytes]]
    client_ip: str
    start: float
    start_wall: float
    connection_reused: bool = False
    connection_time: float = 0.0
    processing: int = 0
    location: str | None = None
    variables: dict[str, str] = field(default_factory=dict)
    request_id: str | None = None
    #: the upstream a plugin chose instead of the location's (traffic_splitting)
    upstream_name: str | None = None
    status: int | None = None
    response_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    payload_size: int = 0
    size: int = 0
    upstream_addr: str | None = None
    upstream_status: int | None = None
    upstream_reused: bool | None = None
    upstream_connected: int | None = None
    upstream_connect_time: float | None = None
    upstream_tcp_connect_time: float | None = None
    upstream_tls_handshake_time: float | None = None
    upstream_connection_time: float | None = None
    upstream_processing_time: float | None = None
    upstream_response_time: float | None = None
    compression_time: float | None = None
    compression_ratio: float | None = None
    cache_lookup_time: float | None = None
    cache_lock_time: float | None = None
    end: float | None = None
    #: callbacks run when the request is over (plugins releasing what they hold)
    cleanups: list[Callable[[], None]] | None = None
    #: response body rewriters a plugin installed with the response head, in order
    body_filters: list[BodyFilter] | None = None
    #: extra cache-key parts plugins add (compression coding, image types), in order
    cache_keys: list[str] | None = None
    #: per-request state a plugin keeps between its hooks, by plugin name
    plugin_data: dict[str, Any] | None = None
    #: the Host (or :authority) as sent, port included (``host`` has no port)
    authority: str = ""

    def on_finish(self, callback: Callable[[], None]) -> None:
        if self.cleanups is None:
            self.cleanups = []
        self.cleanups.append(callback)

    def add_body_filter(self, body_filter: BodyFilter) -> None:
        """Rewrite the upstream response body; the plugin fixes the head's framing
        (drops Content-Length) itself."""
        if self.body_filters is None:
            self.body_filters = []
        self.body_filters.append(body_filter)

    def filter_body(self, data: bytes) -> bytes:
        """``data`` through every body filter."""
        for body_filter in self.body_filters or ():
            data = body_filter.feed(data)
        return data

    def end_body(self) -> bytes:
        """What the body filters still hold once the body is over."""
        out = b""
        for body_filter in self.body_filters or ():
            out = (body_filter.feed(out) if out else b"") + body_filter.end()
        return out

    def plugin_state(self, name: str, value: Any = None) -> Any:
        """The state plugin ``name`` keeps for this request (stored first if given)."""
        if value is not None:
            if self.plugin_data is None:
                self.plugin_data = {}
            self.plugin_data[name] = value
            return value
        return None if self.plugin_data is None else self.plugin_data.get(name)

    def add_cache_key(self, part: str) -> None:
        if self.cache_keys is None:
            self.cache_keys = []
        self.cache_keys.append(part)

    @property
    def uri(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path

    @property
    def scheme(self) -> str:
        return "https" if self.conn.tls else "http"

    def request_header(self, name: str) -> str | None:
        value = header_value(self.request_headers, name.lower().encode("latin-1"))
        return None if value is None else value.decode("latin-1")

    def response_header(self, name: str) -> str | None:
        value = header_value(self.response_headers, name.lower().encode("latin-1"))
        return None if value is None else value.decode("latin-1")

    def cookie(self, name: str) -> str | None:
        for key, value in self.request_headers:
            if key.lower() != b"cookie":
                continue
            for part in value.decode("latin-1").split(";"):
                k, sep, v = part.strip().partition("=")
                if sep and k == name:
                    return v
        return None

    def query_param(self, name: str) -> str | None:
        """Raw (undecoded) value of the first ``name`` query parameter."""
        for part in self.query.split("&"):
            k, _, v = part.partition("=")
            if k == name:
                return v
        return None
