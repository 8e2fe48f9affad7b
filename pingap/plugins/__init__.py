"""The plugin framework: a registry keyed by category, phase methods, small results.

A plugin class declares its ``category`` and the ``steps`` it may run in (the first is
its default ``step``). Request-phase hooks return ``CONTINUE`` or a ``Respond``; they never
return bare booleans. ``build_plugins`` instantiates every ``[plugins.*]`` table plus
pingap's built-in ``pingap:*`` names (a user plugin of the same name shadows a built-in,
as in pingap).

Categories pingap has but this build does not run yet: a location naming one is a
warning, except for plugins that guard access (auth, restrictions, limits) — serving a
location without its guard would be unsafe, so that is a config error.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from pingap.actions import CONTINUE, Continue, Respond
from pingap.context import BodyFilter, RequestContext

REGISTRY: dict[str, type[Plugin]] = {}
ENTRY_POINT_GROUP = "pingap.plugins"


class CounterStore(Protocol):
    """Host-wide (shared memory) or fleet-wide (Redis) counters for limits.

    Each call answers whether to admit the request; a store that cannot reach its
    backend applies its configured failure policy instead of raising."""

    def rate_acquire(self, name: str, interval: float, limit: float) -> bool: ...
    def rate_count(self, name: str, interval: float) -> float:
        """What ``rate_acquire`` counted for ``name`` in the window, counting nothing
        (unreachable: 0 failing open, infinity failing closed)."""
        ...
    def inflight_acquire(self, name: str, limit: int) -> bool: ...
    def inflight_release(self, name: str) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchedResponse:
    """The whole answer to a plugin's outbound HTTP request."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class HttpFetcher(Protocol):
    """Outbound HTTP for plugins (forward_auth's sub-request, a JWKS download).

    Both calls raise ``OSError`` (timeouts included) or ``ValueError`` on any failure,
    so a guard plugin can deny; they never follow redirects."""

    def request(self, method: str, url: str, headers: list[tuple[bytes, bytes]],
                timeout: float) -> FetchedResponse: ...

    def get_shared(self, url: str, timeout: float) -> FetchedResponse:
        """GET ``url``; concurrent calls for one URL share a single request."""
        ...


class Services:
    """What the worker lends plugins at bind time (nothing by default)."""

    counters: CounterStore | None = None
    stats: Callable[[RequestContext], dict[str, Any]] | None = None
    http: HttpFetcher | None = None
    #: the file system for ``directory`` (``pingap.plugins.static.StaticFiles``)
    files: Any = None
    #: the cache store for (``directory``, ``namespace``) (``plugins.cache.CacheStore``)
    cache_store: Callable[[str, str], Any] | None = None


#: Categories whose absence would open a location up: never silently skipped, and their
#: options are checked strictly (a typo is an error, not an ignored key). ``admin`` holds
#: the admin credentials.
GUARD_CATEGORIES = frozenset({
    "basic_auth", "key_auth", "jwt", "combined_auth", "forward_auth", "csrf",
    "ip_restriction", "ua_restriction", "referer_restriction", "geo_restriction", "limit",
    "admin",
})

BUILTIN_PLUGINS: dict[str, tuple[str, dict[str, Any] | None]] = {
    "pingap:ping": ("ping", {"path": "/ping"}),
    "pingap:stats": ("stats", {"path": "/stats"}),
    "pingap:compression": ("compression",
                           {"gzip_level": 6, "br_level": 6, "zstd_level": 6}),
    "pingap:compressionUpstream": ("compression", {"gzip_level": 6, "br_level": 6,
                                                   "zstd_level": 6, "mode": "upstream"}),
    "pingap:requestId": ("request_id", {}),
    "pingap:acceptEncodingAdjustment": ("accept_encoding", {
        "encodings": "zstd, br, gzip", "only_one_encoding": True}),
    # no options: defined only by ``--admin`` (master.admin adds it as a configured
    # plugin, which shadows this entry); without the flag a location naming it is refused
    "pingap:admin": ("admin", None),
}
"""The one list of built-in plugin names (spec §2.12), their category and options."""


def register(cls: type[Plugin]) -> type[Plugin]:
    """Class decorator: make ``cls`` the implementation of its category."""
    REGISTRY[cls.category] = cls
    return cls


class Plugin:
    """Base class. Subclasses set ``category``/``steps`` and override the hooks they use."""

    category: ClassVar[str] = ""
    steps: ClassVar[tuple[str, ...]] = ("request",)
    #: ``handle_request`` acts in the plugin's own ``step`` only: ``acts_in`` starts as it
    own_step_only: ClassVar[bool] = False

    def __init__(self, name: str, options: Mapping[str, Any], step: str | None = None) -> None:
        self.name = name
        self.options = options
        self.step = step or self.steps[0]
        #: the request steps ``handle_request`` acts in; None: it is called at every one
        self.acts_in: frozenset[str] | None = (frozenset({self.step}) if self.own_step_only
                                               else None)

    def handle_request(self, step: str, ctx: RequestContext) -> Continue | Respond:
        """Called for every request step; act only in ``self.step``."""
        return CONTINUE

    def handle_upstream_response(self, ctx: RequestContext, status: int,
                                 headers: list[tuple[bytes, bytes]]) -> None:
        """pingap's ``upstream_response`` step: the upstream's response head, edited in
        place, before any ``handle_response`` (pingora's upstream_response_filter)."""

    def handle_response(self, ctx: RequestContext, status: int,
                        headers: list[tuple[bytes, bytes]]) -> Respond | None:
        """pingap's ``response`` step: the proxied response head, edited in place, just
        before it is sent. Like pingap, a plugin's own ``Respond`` skips both steps.
        A returned ``Respond`` replaces the upstream response (the cache's entry after
        a 304 revalidation)."""
        return None

    #: the plugin's place in the body-filter chain (lower runs first); 0 = no body filter
    filter_rank: ClassVar[int] = 0

    def body_filter(self, ctx: RequestContext, status: int,
                    headers: list[tuple[bytes, bytes]]) -> BodyFilter | None:
        """After every ``handle_response``, in ``filter_rank`` order, for plugins with a
        rank: a streaming filter for the body (``headers`` editable), or None."""
        return None

    def bind(self, services: Services) -> None:
        """Receive the worker's services (counters, stats) before serving."""


class PluginOptionError(ValueError):
    """Bad options of one plugin: ``problems`` are ``(key, message)`` pairs, all of them,
    so ``pingap -t`` reports each as ``plugins.<name>.<key>``."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{key}: {message}" if key else message
                                   for key, message in problems))


class OptionProblems:
    """Collects a plugin constructor's option problems; ``check`` raises them at once."""

    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []

    def add(self, key: str, message: str) -> None:
        self.problems.append((key, message))

    def check(self) -> None:
        if self.problems:
            raise PluginOptionError(self.problems)


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip(text: str) -> IPAddress | None:
    """An address, IPv4-mapped IPv6 (``::ffff:a.b.c.d``) unwrapped to IPv4; None if bad."""
    try:
        addr = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def str_list(options: Mapping[str, Any], key: str) -> list[str]:
    """A string-array option (also one comma-separated string, as pingap reads it)."""
    value = options.get(key) or []
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    return [item.strip() for item in items if item.strip()]


def remove_header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """Remove every ``name`` header in place; the first removed value, or None."""
    low = name.lower()
    size = len(low)
    for item in headers:
        if len(item[0]) == size and item[0].lower() == low:
            headers[:] = [i for i in headers if len(i[0]) != size or i[0].lower() != low]
            return item[1]
    return None


def set_header(headers: list[tuple[bytes, bytes]], name: bytes, value: bytes) -> None:
    """Replace every ``name`` header in place by one ``name: value`` at the end (pingora's
    insert_header)."""
    low = name.lower()
    size = len(low)
    for item in headers:
        if len(item[0]) == size and item[0].lower() == low:
            headers[:] = [i for i in headers if len(i[0]) != size or i[0].lower() != low]
            break
    headers.append((name, value))


def set_request_headers(ctx: RequestContext, edits: Iterable[tuple[bytes, bytes | None]]) -> None:
    """Set (value) or remove (None) request headers; they reach the upstream.

    The list is copied first: the codec's request event keeps the client's original."""
    headers = list(ctx.request_headers)
    for name, value in edits:
        if value is None:
            remove_header(headers, name)
        else:
            set_header(headers, name, value)
    ctx.request_headers = headers


REQUEST_STEPS = ("early_request", "request", "proxy_upstream")


def plugins_by_step(plugins: tuple[Plugin, ...]) -> dict[str, tuple[Plugin, ...]]:
    """For each step, in order, the plugins with something to do there: the request steps
    a plugin ``acts_in`` (all when unset), and ``upstream_response``/``response`` for the
    plugins that override those hooks. Built once per location, so a request does not
    call hooks that would do nothing."""
    table: dict[str, tuple[Plugin, ...]] = {}
    for step in REQUEST_STEPS:
        table[step] = tuple(p for p in plugins if p.acts_in is None or step in p.acts_in)
    table["upstream_response"] = tuple(
        p for p in plugins
        if type(p).handle_upstream_response is not Plugin.handle_upstream_response)
    table["response"] = tuple(
        p for p in plugins if type(p).handle_response is not Plugin.handle_response)
    return table


def plugin_response(status: int, body: bytes, content_type: bytes = b"text/plain; charset=utf-8",
                    headers: list[tuple[bytes, bytes]] | None = None) -> Respond:
    """A plugin-made response: always a Content-Length, private/no-cache unless set."""
    out = list(headers or [])
    names = {n.lower() for n, _ in out}
    if b"content-type" not in names:
        out.append((b"Content-Type", content_type))
    if b"cache-control" not in names:
        out.append((b"Cache-Control", b"private, no-cache"))
    out.append((b"Content-Length", str(len(body)).encode()))
    return Respond(status=status, headers=out, body=body)


def build_plugin(name: str, category: str, options: Mapping[str, Any],
                 step: str | None = None) -> Plugin | None:
    """The plugin instance, or None when the category is not implemented here."""
    cls = REGISTRY.get(category)
    if cls is None:
        return None
    return cls(name, options, step)


def load_entry_points(entry_points: Any) -> list[str]:
    """Register third-party plugin classes from the ``pingap.plugins`` entry-point group.

    ``entry_points`` is ``importlib.metadata.entry_points`` (passed in: reading installed
    package metadata is the caller's I/O). Each entry point's name is the category a
    config names; its object is a ``Plugin`` subclass. Returns the categories added."""
    added = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        cls = ep.load()
        if not (isinstance(cls, type) and issubclass(cls, Plugin)):
            raise TypeError(f"entry point {ep.name} ({ep.value}) is not a pingap Plugin class")
        if ep.name in REGISTRY and REGISTRY[ep.name] is not cls:
            raise ValueError(f"plugin category {ep.name!r} is defined twice")
        REGISTRY[ep.name] = cls
        added.append(ep.name)
    return added


# the families register their categories on import
from pingap.plugins import admin as _admin  # noqa: E402,F401
from pingap.plugins import auth as _auth  # noqa: E402,F401
from pingap.plugins import builtin as _builtin  # noqa: E402,F401
from pingap.plugins import cache as _cache  # noqa: E402,F401
from pingap.plugins import compression as _compression  # noqa: E402,F401
from pingap.plugins import headers as _headers  # noqa: E402,F401
from pingap.plugins import image_optim as _image_optim  # noqa: E402,F401
from pingap.plugins import restrictions as _restrictions  # noqa: E402,F401
from pingap.plugins import static as _static  # noqa: E402,F401
from pingap.plugins import sub_filter as _sub_filter  # noqa: E402,F401
from pingap.plugins import traffic as _traffic  # noqa: E402,F401
