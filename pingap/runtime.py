"""The compiled form of a config: what a worker consults on every request.

``build_runtime`` turns a loaded ``PingapConfig`` into routers, header rules, upstream
selectors, health-check specs and access-log formatters, collecting every problem it finds
(with file and key) into one ``ConfigError``. Building is pure: resolving backend host
names and running health checks is the worker's job.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pingap import __version__
from pingap.accesslog import AccessLogSpec, compile_template, parse_access_log
from pingap.context import RequestContext
from pingap.errors import ConfigError, Problem
from pingap.health import HealthCheckSpec, parse_health_check
from pingap.plugins import (
    BUILTIN_PLUGINS,
    GUARD_CATEGORIES,
    REGISTRY,
    Plugin,
    PluginOptionError,
    build_plugin,
    plugins_by_step,
)
from pingap.routing import LocationMatcher, Route, compile_route
from pingap.upstream import (
    Backend,
    Selector,
    TransparentSelector,
    make_selector,
    parse_addr,
    parse_algo,
)
from pingap.variables import REVERSE_PROXY_HEADERS, HeaderRule, parse_header_rule

DEFAULT_ERROR_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Pingap</title>
<style>
:root { color-scheme: light dark; }
body { max-width: 40em; margin: 4em auto; font-family: sans-serif; }
</style>
</head>
<body>
<h1>Pingap {{version}}</h1>
<p>{{content}}</p>
<p><small>{{error_type}}</small></p>
</body>
</html>
"""


#: ``servers.<name>.http1_codec`` values: the HTTP/1 request parsers a worker can run
HTTP1_CODECS = ("fast", "h11")

#: pingap's spellings plus the ones its docs use (which pingap silently maps to 1.2)
TLS_VERSIONS = {"tlsv1.1": "TLSv1_1", "tlsv1.2": "TLSv1_2", "tlsv1.3": "TLSv1_3",
                "tls1.1": "TLSv1_1", "tls1.2": "TLSv1_2", "tls1.3": "TLSv1_3"}


@dataclass(slots=True)
class CertificateStore:
    """Certificates by served name (see ``pingap.tls``); empty when none are configured."""

    by_name: dict[str, Any] = field(default_factory=dict)
    default: Any = None
    entries: list[Any] = field(default_factory=list)

    def add(self, entry: Any) -> None:
        self.entries.append(entry)
        for name in entry.names:
            self.by_name.setdefault(name, entry)
        if entry.is_default and self.default is None:
            self.default = entry

    def put(self, entry: Any) -> None:
        """Install ``entry`` in place of the entry of the same name (or add it): a renewed
        ACME certificate. The indexes are rebuilt aside and swapped in whole, so a lookup
        never sees a half-updated store."""
        entries = [entry if old.name == entry.name else old for old in self.entries]
        if not any(old.name == entry.name for old in self.entries):
            entries.append(entry)
        rebuilt = CertificateStore()
        for item in entries:
            rebuilt.add(item)
        self.entries, self.by_name, self.default = (rebuilt.entries, rebuilt.by_name,
                                                    rebuilt.default)

    def select(self, server_name: str | None) -> Any:
        """Exact name, else ``*.<parent>``, else the default (also without SNI)."""
        if server_name:
            name = server_name.lower().rstrip(".")
            found = self.by_name.get(name)
            if found is None and "." in name:
                found = self.by_name.get("*." + name.split(".", 1)[1])
            if found is not None:
                return found
        return self.default


@dataclass(slots=True)
class UpstreamRuntime:
    """An upstream's backends, balancing and connection settings."""

    name: str
    backends: tuple[Backend, ...]
    selector: Selector
    health_check: HealthCheckSpec
    connection_timeout: float | None
    total_connection_timeout: float | None
    read_timeout: float | None
    write_timeout: float | None
    idle_timeout: float | None
    tls: bool = False
    #: TLS server name (``sni``); ``"$host"`` means the request's host (transparent mode)
    sni: str | None = None
    verify_cert: bool = True
    #: ``"H1"``, ``"H2"`` or ``"H2H1"`` (upper-cased); H2 without ``sni`` is h2c
    alpn: str = "H1"
    #: concurrent streams per upstream HTTP/2 connection (at least 1)
    max_h2_streams: int = 1
    #: backend addr -> healthy, when no shared state is attached (tests, tools)
    health: dict[str, bool] = field(default_factory=dict)
    #: host-wide health written by the host's one prober (``pingap.state.SharedState``)
    shared: Any = None
    #: ``discovery = "transparent"``: the request's host is the backend
    transparent: bool = False
    #: this proxy's own listen addresses, which a transparent upstream must not target
    listeners: tuple[tuple[str, int], ...] = ()

    def is_available(self, backend: Backend) -> bool:
        shared = self.shared
        if shared is not None:
            return shared.health(self.name, backend.addr) is not False
        return self.health.get(backend.addr, True)

    def select(self, ctx: RequestContext) -> Backend | None:
        return self.selector.select(ctx, self.is_available)


@dataclass(slots=True)
class LocationRuntime:
    """A location's proxying behaviour (its matching lives in ``route``)."""

    name: str
    upstream: str | None
    header_set: tuple[HeaderRule, ...]
    header_add: tuple[HeaderRule, ...]
    client_max_body_size: int | None
    max_processing: int
    max_retries: int
    max_retry_window: float | None
    plugins: tuple[Plugin, ...] = ()
    #: lower-cased names the set rules replace (stripped from the client's headers)
    set_names: frozenset[bytes] = frozenset()
    #: translate gRPC-Web requests to gRPC (needs the server's ``grpc-web`` module)
    grpc_web: bool = False
    #: buffer request bodies before connecting upstream: bytes kept in memory (the rest
    #: goes to a temp file); None streams them
    client_body_buffer_size: int | None = None
    processing: int = 0
    #: ``plugins`` by step, as the session runs them (``plugins_by_step``)
    plugin_steps: dict[str, tuple[Plugin, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.plugin_steps = plugins_by_step(self.plugins)


@dataclass(slots=True)
class AccessLog:
    spec: AccessLogSpec
    format: Callable[[RequestContext], str]


@dataclass(slots=True)
class ServerRuntime:
    name: str
    addrs: tuple[tuple[str, int], ...]
    matcher: LocationMatcher
    access_log: AccessLog | None
    read_timeout: float | None
    write_timeout: float | None
    prometheus_metrics: str | None = None
    #: TLS termination with the global certificate store (``global_certificates``)
    tls: bool = False
    tls_min_version: str | None = None   # ssl.TLSVersion member names
    tls_max_version: str | None = None
    tls_cipher_list: str | None = None
    #: HTTP/2 to clients: ALPN ``h2`` on TLS, h2c with prior knowledge on plain TCP
    enabled_h2: bool = False
    #: the HTTP/1 request parser (``http1_codec``, one of ``HTTP1_CODECS``)
    http1_codec: str = "fast"
    #: ``modules = ["grpc-web"]``: gRPC-Web requests to ``grpc_web`` locations are bridged
    grpc_web: bool = False
    processing: int = 0
    accepted: int = 0


@dataclass(slots=True)
class Runtime:
    config: Any
    servers: dict[str, ServerRuntime]
    locations: dict[str, LocationRuntime]
    upstreams: dict[str, UpstreamRuntime]
    error_template: str
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    keepalive_pool_size: int
    certificates: CertificateStore = field(default_factory=CertificateStore)
    warnings: list[Problem] = field(default_factory=list)
    version: str = __version__


class _Collector:
    def __init__(self, config: Any) -> None:
        self.config = config
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []

    def problem(self, section: str, name: str, key: str, message: str) -> Problem:
        sources = getattr(self.config, "sources", {}) or {}
        file = sources.get(f"{section}.{name}", sources.get(section, ""))
        return Problem(file, f"{section}.{name}.{key}" if key else f"{section}.{name}",
                       message)

    def add(self, section: str, name: str, key: str, message: str) -> None:
        self.problems.append(self.problem(section, name, key, message))

    def warn(self, section: str, name: str, key: str, message: str) -> None:
        self.warnings.append(self.problem(section, name, key, message))


def _build_upstream(name: str, cfg: Any, out: _Collector) -> UpstreamRuntime | None:
    tls = bool(getattr(cfg, "sni", None))
    # pingap ignores the addresses of a transparent upstream: the request's host is the backend
    transparent = (cfg.discovery or "").lower() == "transparent"
    backends: list[Backend] = []
    for i, addr in enumerate(() if transparent else cfg.addrs):
        try:
            backends.append(parse_addr(addr, tls=tls))
        except ValueError as exc:
            out.add("upstreams", name, f"addrs[{i}]", str(exc))
    try:
        algo = parse_algo(cfg.algo or "round_robin")
    except ValueError as exc:
        out.add("upstreams", name, "algo", str(exc))
        return None
    try:
        health = parse_health_check(cfg.health_check)
    except ValueError as exc:
        out.add("upstreams", name, "health_check", str(exc))
        return None
    if not backends and not transparent:
        if not cfg.addrs:
            out.add("upstreams", name, "addrs", "at least one address is required")
        return None
    return UpstreamRuntime(
        name=name,
        backends=tuple(backends),
        selector=TransparentSelector(tls) if transparent else make_selector(algo, backends),
        transparent=transparent,
        health_check=health,
        connection_timeout=cfg.connection_timeout,
        total_connection_timeout=cfg.total_connection_timeout,
        read_timeout=cfg.read_timeout,
        write_timeout=cfg.write_timeout,
        idle_timeout=cfg.idle_timeout,
        tls=tls,
        sni=cfg.sni or None,
        verify_cert=cfg.verify_cert,
        alpn=(cfg.alpn or "H1").upper(),
        max_h2_streams=max(1, cfg.max_h2_streams),
    )


def _rules(name: str, key: str, items: Any, out: _Collector) -> list[HeaderRule]:
    rules = []
    for i, item in enumerate(items or ()):
        try:
            rules.append(parse_header_rule(item))
        except ValueError as exc:
            out.add("locations", name, f"{key}[{i}]", str(exc))
    return rules


def _build_plugins(config: Any, out: _Collector) -> dict[str, tuple[str, Plugin | None]]:
    """name -> (category, instance or None when this build lacks the category)."""
    plugins: dict[str, tuple[str, Plugin | None]] = {}
    for name, (category, options) in BUILTIN_PLUGINS.items():
        plugins[name] = (category, build_plugin(name, category, options))
    for name, cfg in config.plugins.items():
        try:
            plugins[name] = (cfg.category,
                             build_plugin(name, cfg.category, cfg.options, cfg.step))
        except PluginOptionError as exc:
            for key, message in exc.problems:
                out.add("plugins", name, key, message)
            plugins[name] = (cfg.category, None)
        except ValueError as exc:
            out.add("plugins", name, "", str(exc))
            plugins[name] = (cfg.category, None)
    return plugins


def _location_plugins(name: str, cfg: Any, plugins: dict[str, tuple[str, Plugin | None]],
                      out: _Collector) -> tuple[Plugin, ...]:
    chosen = []
    for i, plugin_name in enumerate(cfg.plugins or ()):
        if plugin_name not in plugins:
            out.add("locations", name, f"plugins[{i}]", f"plugin {plugin_name!r} is not defined")
            continue
        category, plugin = plugins[plugin_name]
        if plugin is not None:
            chosen.append(plugin)
        elif category in REGISTRY:
            continue  # it failed to build: reported under plugins.<name> already
        elif category in GUARD_CATEGORIES:
            out.add("locations", name, f"plugins[{i}]",
                    f"plugin {plugin_name!r} ({category}) is not implemented in this version; "
                    "refusing to serve the location without it")
        else:
            out.warn("locations", name, f"plugins[{i}]",
                     f"plugin {plugin_name!r} ({category}) is not implemented in this "
                     "version; skipped")
    return tuple(chosen)


def _build_location(name: str, cfg: Any, upstreams: dict[str, Any],
                    plugins: dict[str, tuple[str, Plugin | None]],
                    out: _Collector) -> tuple[LocationRuntime, Route] | None:
    header_set = []
    if cfg.enable_reverse_proxy_headers:
        header_set = [parse_header_rule(h) for h in REVERSE_PROXY_HEADERS]
    header_set += _rules(name, "proxy_set_headers", cfg.proxy_set_headers, out)
    header_add = _rules(name, "proxy_add_headers", cfg.proxy_add_headers, out)
    upstream = cfg.upstream or None
    if upstream and not upstream.startswith("$") and upstream not in upstreams:
        out.add("locations", name, "upstream", f"upstream {upstream!r} is not defined")
    runtime = LocationRuntime(
        name=name,
        upstream=upstream,
        header_set=tuple(header_set),
        header_add=tuple(header_add),
        client_max_body_size=cfg.client_max_body_size,
        max_processing=cfg.max_processing or 0,
        max_retries=cfg.max_retries or 0,
        max_retry_window=cfg.max_retry_window,
        plugins=_location_plugins(name, cfg, plugins, out),
        set_names=frozenset(rule.name.lower() for rule in header_set),
        grpc_web=bool(cfg.grpc_web),
        client_body_buffer_size=cfg.client_body_buffer_size,
    )
    try:
        route = compile_route(
            name, path=cfg.path, host=cfg.host, weight=cfg.weight, rewrite=cfg.rewrite,
            match_headers=cfg.match_headers, match_query=cfg.match_query,
            match_cookies=cfg.match_cookies, payload=runtime)
    except ValueError as exc:
        out.add("locations", name, "", str(exc))
        return None
    if upstream and upstream.startswith("$") and upstream[1:] not in route.capture_names:
        out.add("locations", name, "upstream",
                f"{upstream} names no capture group of this location's host, path or "
                f"rewrite regex")
    return runtime, route


def _tls_version(server: str, key: str, value: str | None, out: _Collector) -> str | None:
    """pingap's ``tlsv1.x`` (and the ``tls1.x`` its docs show); anything else is an error
    (pingap silently treats it as TLS 1.2)."""
    if not value:
        return None
    version = TLS_VERSIONS.get(value.strip().lower())
    if version is None:
        out.add("servers", server, key, f"unknown TLS version {value!r}; expected one of "
                "tlsv1.1, tlsv1.2, tlsv1.3")
    return version


def _http1_codec(server: str, value: str, out: _Collector) -> str:
    """``http1_codec`` (our extension): 'fast' (httptools) or 'h11'."""
    codec = value.strip().lower()
    if codec not in HTTP1_CODECS:
        out.add("servers", server, "http1_codec", f"unknown HTTP/1 codec {value!r}; expected "
                f"one of {', '.join(HTTP1_CODECS)}")
        return "fast"
    return codec


def _trusted(config: Any, out: _Collector) -> tuple[Any, ...]:
    networks = []
    for i, item in enumerate(config.basic.trusted_proxies or ()):
        try:
            networks.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError as exc:
            out.problems.append(Problem(config.sources.get("basic", ""),
                                        f"basic.trusted_proxies[{i}]", str(exc)))
    return tuple(networks)


def build_runtime(config: Any) -> Runtime:
    """Compile ``config``; raises ConfigError listing every problem."""
    out = _Collector(config)
    upstreams: dict[str, UpstreamRuntime] = {}
    for name, cfg in config.upstreams.items():
        built = _build_upstream(name, cfg, out)
        if built is not None:
            upstreams[name] = built
    locations: dict[str, LocationRuntime] = {}
    routes: dict[str, Route] = {}
    plugins = _build_plugins(config, out)
    for name, cfg in config.locations.items():
        loc = _build_location(name, cfg, config.upstreams, plugins, out)
        if loc is not None:
            locations[name], routes[name] = loc
    certificates = CertificateStore()
    if config.certificates:  # cryptography is loaded only when certificates are used
        from pingap.tls import build_store
        certificates, cert_problems = build_store(config)
        out.problems.extend(cert_problems)
    servers: dict[str, ServerRuntime] = {}
    for name, cfg in config.servers.items():
        access_log = None
        if cfg.access_log:
            try:
                spec = parse_access_log(cfg.access_log)
                access_log = AccessLog(spec, compile_template(spec.template))
            except ValueError as exc:
                out.add("servers", name, "access_log", str(exc))
        matcher = LocationMatcher.build(routes[n] for n in (cfg.locations or ()) if n in routes)
        servers[name] = ServerRuntime(
            name=name,
            addrs=tuple(cfg.listen_addrs),
            matcher=matcher,
            access_log=access_log,
            read_timeout=cfg.downstream_read_timeout,
            write_timeout=cfg.downstream_write_timeout,
            prometheus_metrics=cfg.prometheus_metrics or None,
            tls=bool(cfg.global_certificates),
            tls_min_version=_tls_version(name, "tls_min_version", cfg.tls_min_version, out),
            tls_max_version=_tls_version(name, "tls_max_version", cfg.tls_max_version, out),
            tls_cipher_list=cfg.tls_cipher_list or None,
            enabled_h2=bool(cfg.enabled_h2),
            http1_codec=_http1_codec(name, cfg.http1_codec, out),
            grpc_web="grpc-web" in (cfg.modules or ()),
        )
        for module in cfg.modules or ():
            if module != "grpc-web":
                out.add("servers", name, "modules",
                        f"unknown module {module!r}; the only one is 'grpc-web'")
        # an acme certificate not issued yet counts: it arrives while serving (§10.1)
        acme_pending = any(c.acme for c in config.certificates.values())
        if cfg.global_certificates and not certificates.entries and not acme_pending:
            out.add("servers", name, "global_certificates",
                    "no certificate with tls_cert and tls_key (or acme) is configured")
        metrics = cfg.prometheus_metrics
        if metrics and "://" not in metrics and not metrics.startswith("/"):
            out.add("servers", name, "prometheus_metrics",
                    "expected a path like '/metrics' or a push gateway URL")
    own = tuple(addr for server in servers.values() for addr in server.addrs)
    for upstream in upstreams.values():
        if upstream.transparent:
            upstream.listeners = own
    trusted = _trusted(config, out)
    basic = config.basic
    if basic.redis_url and not basic.redis_url.startswith(("redis://", "rediss://", "unix://")):
        out.problems.append(Problem(config.sources.get("basic", ""), "basic.redis_url",
                                    "expected a redis://, rediss:// or unix:// URL"))
    if basic.redis_failure_mode not in ("open", "closed"):
        out.problems.append(Problem(config.sources.get("basic", ""), "basic.redis_failure_mode",
                                    "expected 'open' or 'closed'"))
    if not basic.acme_directory_url.startswith(("https://", "http://")):
        out.problems.append(Problem(config.sources.get("basic", ""), "basic.acme_directory_url",
                                    "expected an https:// URL of an ACME directory"))
    if out.problems:
        raise ConfigError(out.problems)
    return Runtime(
        config=config,
        servers=servers,
        locations=locations,
        upstreams=upstreams,
        error_template=config.basic.error_template or DEFAULT_ERROR_TEMPLATE,
        trusted_proxies=trusted,
        keepalive_pool_size=config.basic.upstream_keepalive_pool_size,
        certificates=certificates,
        warnings=out.warnings,
    )
