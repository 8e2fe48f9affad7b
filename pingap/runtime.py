"""The compiled form of a config: what a worker consults on every request.

``build_runtime`` turns a loaded ``PingapConfig`` into routers, header rules, upstream
selectors, health-check specs and access-log formatters. The rules a config must follow
are checked once, by ``pingap.config`` (checks); compiling adds only what it alone can
find (a plugin's own option checks, certificate files), through the same collector, and
``load_runtime`` runs both halves in one pass so ``pingap -t`` lists every problem at
once. Building is pure: resolving backend host names and running health checks is the
worker's job.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pingap import __version__
from pingap.accesslog import AccessLogSpec, compile_template, parse_access_log
from pingap.config import (
    Report,
    Source,
    collect_config,
    collect_config_sources,
    sorted_problems,
)
from pingap.config.checks import HTTP1_CODECS, TLS_VERSIONS
from pingap.config.model import LocationConfig, PingapConfig, ServerConfig, UpstreamConfig
from pingap.config.plugin_schema import PLUGIN_SCHEMAS
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
from pingap.tls import CertificateFacts, CertificateStore, build_store
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
    #: the plugins that may install a body filter, lowest ``filter_rank`` first
    filter_plugins: tuple[Plugin, ...] = ()
    #: the location's only plugin when it serves files (``directory``) and nothing else
    #: acts on the request (no rewrite): a plain GET may take the plain-file path
    #: (``Directory.plain_file``, ``workers.h1``)
    plain_files: Any = None

    def __post_init__(self) -> None:
        self.plugin_steps = plugins_by_step(self.plugins)
        self.filter_plugins = tuple(sorted((p for p in self.plugins if p.filter_rank),
                                           key=lambda p: p.filter_rank))


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
    #: a location takes the plain-file path (``LocationRuntime.plain_files``), and no
    #: route has conditions (matching needs only the host and path)
    plain_files: bool = False
    #: (Host, path) as sent, and the location they match when it takes the plain-file
    #: path (None: another location, or none), for ``workers.h1``; bounded there
    plain_routes: dict[tuple[bytes, bytes], Any] = field(default_factory=dict)
    processing: int = 0
    accepted: int = 0


@dataclass(slots=True)
class Runtime:
    config: PingapConfig
    servers: dict[str, ServerRuntime]
    locations: dict[str, LocationRuntime]
    upstreams: dict[str, UpstreamRuntime]
    error_template: str
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    keepalive_pool_size: int
    certificates: CertificateStore = field(default_factory=CertificateStore)
    warnings: list[Problem] = field(default_factory=list)
    version: str = __version__

    def uses_plugin(self, category: str) -> bool:
        """Some location runs a plugin of ``category``."""
        return any(plugin.category == category for location in self.locations.values()
                   for plugin in location.plugins)


def _build_upstream(name: str, cfg: UpstreamConfig) -> UpstreamRuntime | None:
    """None when the upstream has no usable backend (``checks`` reported why)."""
    tls = bool(cfg.sni)
    # pingap ignores the addresses of a transparent upstream: the request's host is the backend
    transparent = (cfg.discovery or "").lower() == "transparent"
    backends: list[Backend] = []
    for addr in () if transparent else cfg.addrs:
        try:
            backends.append(parse_addr(addr, tls=tls))
        except ValueError:
            continue  # reported by pingap.config.checks
    try:
        algo = parse_algo(cfg.algo or "round_robin")
        health = parse_health_check(cfg.health_check)
    except ValueError:
        return None  # reported by pingap.config.checks
    if not backends and not transparent:
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


def _rules(items: tuple[str, ...]) -> list[HeaderRule]:
    rules = []
    for item in items:
        try:
            rules.append(parse_header_rule(item))
        except ValueError:
            continue  # reported by pingap.config.checks
    return rules


def _build_plugins(config: PingapConfig, report: Report) -> dict[str, Plugin]:
    """Every plugin this build can run, by name; a plugin whose options the config
    checks refused is not built (it would only fail again). Built-ins are built only
    when a location names them, so an unused one loads none of its libraries."""
    refused = {problem.key.split(".")[1] for problem in report.errors
               if problem.key.startswith("plugins.")}
    named = {plugin for location in config.locations.values() for plugin in location.plugins}
    plugins: dict[str, Plugin] = {}
    for name, (category, options) in BUILTIN_PLUGINS.items():
        if options is None or name not in named:
            continue  # unused, or defined only by a command-line flag (pingap:admin)
        plugin = build_plugin(name, category, options)
        if plugin is not None:
            plugins[name] = plugin
    for name, cfg in config.plugins.items():
        plugins.pop(name, None)  # a user plugin shadows a built-in of the same name
        if name in refused:
            continue
        try:
            plugin = build_plugin(name, cfg.category, cfg.options, cfg.step)
        except PluginOptionError as exc:
            report.errors.extend(config.problem(f"plugins.{name}", key, message)
                                 for key, message in exc.problems)
            continue
        except ValueError as exc:
            report.errors.append(config.problem(f"plugins.{name}", "", str(exc)))
            continue
        except ImportError as exc:  # a plugin loads its library when it is built
            report.errors.append(config.problem(
                f"plugins.{name}", "", f"a library this plugin needs is missing: {exc}"))
            continue
        if plugin is not None:
            plugins[name] = plugin
    return plugins


def _location_plugins(config: PingapConfig, name: str, plugins: dict[str, Plugin],
                      report: Report) -> tuple[Plugin, ...]:
    """The location's plugins this build runs; one it cannot run is a warning, or an
    error for a guard (serving the location without it would open it up)."""
    chosen = []
    for index, plugin_name in enumerate(config.locations[name].plugins):
        plugin = plugins.get(plugin_name)
        if plugin is not None:
            chosen.append(plugin)
            continue
        if plugin_name in config.plugins:
            category = config.plugins[plugin_name].category
        elif plugin_name in BUILTIN_PLUGINS:
            category, options = BUILTIN_PLUGINS[plugin_name]
            if options is None:
                report.errors.append(config.problem(
                    f"locations.{name}", f"plugins[{index}]",
                    f"plugin {plugin_name!r} exists only with --admin (or "
                    "PINGAP_ADMIN_ADDR); refusing to serve the location without it"))
                continue
        else:
            continue  # an unknown name: reported by pingap.config.checks
        if category in REGISTRY or category not in PLUGIN_SCHEMAS:
            continue  # it failed to build, or its category is unknown: reported already
        where = (f"locations.{name}", f"plugins[{index}]")
        if category in GUARD_CATEGORIES:
            report.errors.append(config.problem(
                *where, f"plugin {plugin_name!r} ({category}) is not implemented in this "
                "version yet; refusing to serve the location without it"))
        else:
            report.warnings.append(config.problem(
                *where, f"plugin {plugin_name!r} ({category}) is not implemented in this "
                "version yet; skipped"))
    return tuple(chosen)


def _build_location(name: str, cfg: LocationConfig,
                    plugins: tuple[Plugin, ...]) -> tuple[LocationRuntime, Route] | None:
    header_set = []
    if cfg.enable_reverse_proxy_headers:
        header_set = [parse_header_rule(h) for h in REVERSE_PROXY_HEADERS]
    header_set += _rules(cfg.proxy_set_headers)
    runtime = LocationRuntime(
        name=name,
        upstream=cfg.upstream or None,
        header_set=tuple(header_set),
        header_add=tuple(_rules(cfg.proxy_add_headers)),
        client_max_body_size=cfg.client_max_body_size,
        max_processing=cfg.max_processing or 0,
        max_retries=cfg.max_retries or 0,
        max_retry_window=cfg.max_retry_window,
        plugins=plugins,
        set_names=frozenset(rule.name.lower() for rule in header_set),
        grpc_web=bool(cfg.grpc_web),
        client_body_buffer_size=cfg.client_body_buffer_size,
    )
    try:
        route = compile_route(
            name, path=cfg.path, host=cfg.host, weight=cfg.weight, rewrite=cfg.rewrite,
            match_headers=cfg.match_headers, match_query=cfg.match_query,
            match_cookies=cfg.match_cookies, payload=runtime)
    except ValueError:
        return None  # reported by pingap.config.checks
    if len(plugins) == 1 and hasattr(plugins[0], "plain_file") and route.rewrite is None:
        runtime.plain_files = plugins[0]
    return runtime, route


def _listen_addrs(cfg: ServerConfig) -> tuple[tuple[str, int], ...]:
    try:
        return cfg.listen_addrs
    except ValueError:
        return ()  # reported by pingap.config.checks


def _access_log(cfg: ServerConfig) -> AccessLog | None:
    if not cfg.access_log:
        return None
    try:
        spec = parse_access_log(cfg.access_log)
        return AccessLog(spec, compile_template(spec.template))
    except ValueError:
        return None  # reported by pingap.config.checks


def _trusted(config: PingapConfig) -> tuple[Any, ...]:
    networks = []
    for item in config.basic.trusted_proxies:
        try:
            networks.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            continue  # reported by pingap.config.checks
    return tuple(networks)


def _build_server(name: str, cfg: ServerConfig, routes: dict[str, Route]) -> ServerRuntime:
    mine = [routes[n] for n in cfg.locations if n in routes]
    return ServerRuntime(
        name=name,
        addrs=_listen_addrs(cfg),
        matcher=LocationMatcher.build(mine),
        plain_files=any(r.payload.plain_files is not None for r in mine)  # type: ignore[attr-defined]
        and not any(r.conditions for r in mine),
        access_log=_access_log(cfg),
        read_timeout=cfg.downstream_read_timeout,
        write_timeout=cfg.downstream_write_timeout,
        prometheus_metrics=cfg.prometheus_metrics or None,
        tls=cfg.global_certificates,
        tls_min_version=TLS_VERSIONS.get((cfg.tls_min_version or "").strip().lower()),
        tls_max_version=TLS_VERSIONS.get((cfg.tls_max_version or "").strip().lower()),
        tls_cipher_list=cfg.tls_cipher_list or None,
        enabled_h2=cfg.enabled_h2,
        http1_codec=cfg.http1_codec.strip().lower() if cfg.http1_codec.strip().lower()
        in HTTP1_CODECS else "fast",
        grpc_web="grpc-web" in cfg.modules,
    )


def compile_runtime(config: PingapConfig, report: Report,
                    certificate_facts: Mapping[str, CertificateFacts] | None = None,
                    ) -> Runtime:
    """Compile ``config``, adding to ``report`` what only compiling finds (a plugin's own
    checks, certificate files); never raises.

    ``config`` may carry problems ``pingap.config`` already reported: what they make
    impossible to compile is left out, unreported a second time, so one run lists every
    problem once.
    """
    first_warning = len(report.warnings)
    upstreams = {name: built for name, cfg in config.upstreams.items()
                 if (built := _build_upstream(name, cfg)) is not None}
    plugins = _build_plugins(config, report)
    locations: dict[str, LocationRuntime] = {}
    routes: dict[str, Route] = {}
    for name, location in config.locations.items():
        loc = _build_location(name, location,
                              _location_plugins(config, name, plugins, report))
        if loc is not None:
            locations[name], routes[name] = loc
    certificates = CertificateStore()
    if config.certificates:
        certificates, cert_problems = build_store(config, certificate_facts)
        report.errors.extend(cert_problems)
    servers: dict[str, ServerRuntime] = {}
    # an acme certificate not issued yet counts: it arrives while serving (§10.1)
    acme_pending = any(c.acme for c in config.certificates.values())
    for name, server in config.servers.items():
        servers[name] = _build_server(name, server, routes)
        if server.global_certificates and not certificates.entries and not acme_pending:
            # as pingap: the listener starts; certificates may arrive later (admin, ACME)
            report.warnings.append(config.problem(
                f"servers.{name}", "global_certificates",
                "no certificate is configured yet: TLS handshakes fail until one is added"))
    own = tuple(addr for server in servers.values() for addr in server.addrs)
    for upstream in upstreams.values():
        if upstream.transparent:
            upstream.listeners = own
    return Runtime(
        config=config,
        servers=servers,
        locations=locations,
        upstreams=upstreams,
        error_template=config.basic.error_template or DEFAULT_ERROR_TEMPLATE,
        trusted_proxies=_trusted(config),
        keepalive_pool_size=config.basic.upstream_keepalive_pool_size,
        certificates=certificates,
        warnings=report.warnings[first_warning:],
    )


def build_runtime(config: PingapConfig,
                  certificate_facts: Mapping[str, CertificateFacts] | None = None) -> Runtime:
    """Compile a loaded ``config``; raises ConfigError listing every problem.
    ``certificate_facts``: what the master found parsing the same certificates
    (``pingap.tls.dump_facts``), so that they need not be parsed again."""
    report = Report()
    runtime = compile_runtime(config, report, certificate_facts)
    if report.errors:
        raise ConfigError(sorted_problems(report.errors))
    return runtime


def load_runtime(path: str | list[Source]) -> Runtime:
    """Load, check and compile the config at ``path`` (or given as documents, e.g. read
    from etcd) in one pass; ConfigError lists every problem of both halves.
    ``runtime.config.warnings`` holds the loader's warnings, ``runtime.warnings`` the
    compiler's."""
    report = Report()
    config = (collect_config(path, report) if isinstance(path, str)
              else collect_config_sources(path, report))
    runtime = compile_runtime(config, report)
    if report.errors:
        raise ConfigError(sorted_problems(report.errors), report.warnings)
    return runtime
