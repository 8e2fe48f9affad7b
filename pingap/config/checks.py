"""Check the typed config's values and the references between its sections.

One job: given a typed ``PingapConfig`` (every field already of the right type),
report what pingap's validation reports (spec §2.3) and what pingap lets through
silently, each with the file and dotted key it came from. This is the one place each of
these rules is checked; ``pingap.runtime`` compiles what passes and reports only what
needs compiling to find (a plugin's own option checks, whether this build can run a
plugin a location uses, certificate files):

* references: a location's ``upstream`` and ``plugins``, a server's ``locations``, a
  storage named in ``includes`` (checked while merging), a ``traffic_splitting``
  plugin's ``upstream``, the capture group a ``$name`` upstream names.
  pingap silently skips unknown plugin names; we report them.
* values: listen addresses (and the same address on two servers), TLS versions, the
  HTTP/1 codec, server modules, metrics paths, upstream addresses, ``algo``, ``alpn``,
  ``discovery``, ``health_check``, keepalive limits, location ``path``/``host``/
  ``rewrite``/header rules (via ``pingap.routing`` and ``pingap.variables``),
  ``access_log`` (via ``pingap.accesslog``), ``trusted_proxies``, the Redis and ACME
  settings, certificate ``dns_provider``, storage ``category``.

Host names are never resolved here (no I/O): that happens when the upstream is built.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable

from pingap.accesslog import check_access_log
from pingap.config.addresses import parse_host_port, split_listen_addrs
from pingap.config.model import (
    LocationConfig,
    PingapConfig,
    ServerConfig,
    UpstreamConfig,
)
from pingap.config.plugin_schema import did_you_mean
from pingap.config.sources import Report
from pingap.health import parse_health_check
from pingap.plugins import BUILTIN_PLUGINS
from pingap.routing import HostMatcher, PathMatcher, Rewrite
from pingap.upstream import parse_addr, parse_algo
from pingap.variables import check_header_rule

__all__ = ["HTTP1_CODECS", "TLS_VERSIONS", "check_config"]

DISCOVERY_MODES = ("static", "dns", "docker", "transparent")
ALPN_VALUES = ("h1", "h2", "h2h1")
HASH_TYPES = ("url", "ip", "path", "header", "cookie", "query")
DNS_PROVIDERS = frozenset({"ali", "aliyun", "cf", "cloudflare", "tencent", "huawei", "manual", ""})
STORAGE_CATEGORIES = ("config", "secret")
MAX_TCP_PROBE_COUNT = 16
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
REDIS_FAILURE_MODES = ("open", "closed")

#: ``servers.<name>.http1_codec`` values: the HTTP/1 request parsers a worker can run
HTTP1_CODECS = ("fast", "h11")

#: pingap's spellings plus the ones its docs use (which pingap silently maps to 1.2),
#: mapped to ``ssl.TLSVersion`` member names
TLS_VERSIONS = {"tlsv1.1": "TLSv1_1", "tlsv1.2": "TLSv1_2", "tlsv1.3": "TLSv1_3",
                "tls1.1": "TLSv1_1", "tls1.2": "TLSv1_2", "tls1.3": "TLSv1_3"}
SERVER_MODULES = ("grpc-web",)

Reporter = Callable[[str, str], None]
"""``problem(key, message)``: record an error about a key of the entry being checked."""


def check_config(config: PingapConfig, report: Report) -> None:
    """Report every value and reference problem of ``config`` to ``report``."""

    def problem_for(section: str, name: str) -> Reporter:
        entry = section if section == "basic" else f"{section}.{name}"

        def problem(key: str, message: str) -> None:
            report.errors.append(config.problem(entry, key, message))

        return problem

    _check_basic(config, problem_for("basic", ""))
    _check_servers(config, problem_for)
    for name, location in config.locations.items():
        _check_location(location, config, problem_for("locations", name))
    for name, upstream in config.upstreams.items():
        _check_upstream(upstream, problem_for("upstreams", name))
    for name, plugin in config.plugins.items():
        target = plugin.options.get("upstream")
        is_splitter = plugin.category == "traffic_splitting"
        if is_splitter and isinstance(target, str) and target and target not in config.upstreams:
            hint = did_you_mean(target, config.upstreams)
            problem_for("plugins", name)("upstream", f"unknown upstream '{target}'{hint}")
    for name, certificate in config.certificates.items():
        provider = certificate.dns_provider
        if provider is not None and provider.lower() not in DNS_PROVIDERS:
            allowed = "ali, aliyun, cf, cloudflare, tencent, huawei, manual"
            problem_for("certificates", name)(
                "dns_provider", f"unknown DNS provider '{provider}'; expected one of: {allowed}"
            )
    for name, storage in config.storages.items():
        if storage.category and storage.category not in STORAGE_CATEGORIES:
            hint = did_you_mean(storage.category, STORAGE_CATEGORIES)
            problem_for("storages", name)(
                "category",
                f"unknown storage category '{storage.category}'; expected config or secret{hint}",
            )


def _check_basic(config: PingapConfig, problem: Reporter) -> None:
    basic = config.basic
    _check_networks("trusted_proxies", basic.trusted_proxies, problem)
    if basic.redis_url and not basic.redis_url.startswith(REDIS_SCHEMES):
        problem("redis_url", "expected a redis://, rediss:// or unix:// URL")
    if basic.redis_failure_mode not in REDIS_FAILURE_MODES:
        problem("redis_failure_mode", "expected 'open' or 'closed'")
    if not basic.acme_directory_url.startswith(("https://", "http://")):
        problem("acme_directory_url", "expected an https:// URL of an ACME directory")


def _check_networks(key: str, items: Iterable[str], problem: Reporter) -> None:
    for index, item in enumerate(items):
        try:
            ipaddress.ip_network(item.strip(), strict=False)
        except ValueError:
            problem(f"{key}[{index}]", f"'{item}' is not an IP address or CIDR network")


def _check_servers(config: PingapConfig, problem_for: Callable[[str, str], Reporter]) -> None:
    listeners: dict[tuple[str, int], str] = {}
    for name, server in config.servers.items():
        problem = problem_for("servers", name)
        if server.addr:  # "" = missing, already reported
            _check_listen(name, server, listeners, problem)
        for index, location in enumerate(server.locations):
            if location not in config.locations:
                hint = did_you_mean(location, config.locations)
                problem(f"locations[{index}]", f"unknown location '{location}'{hint}")
        if server.access_log is not None:
            message = check_access_log(server.access_log)
            if message:
                problem("access_log", message)
        for key in ("tls_min_version", "tls_max_version"):
            version = getattr(server, key)
            if version and version.strip().lower() not in TLS_VERSIONS:
                # pingap silently falls back to TLS 1.2
                problem(key, f"unknown TLS version {version!r}; expected one of "
                        "tlsv1.1, tlsv1.2, tlsv1.3")
        if server.http1_codec.strip().lower() not in HTTP1_CODECS:
            problem("http1_codec", f"unknown HTTP/1 codec {server.http1_codec!r}; expected "
                    f"one of {', '.join(HTTP1_CODECS)}")
        for module in server.modules:
            if module not in SERVER_MODULES:
                problem("modules", f"unknown module {module!r}; the only one is 'grpc-web'")
        metrics = server.prometheus_metrics
        if metrics and "://" not in metrics and not metrics.startswith("/"):
            problem("prometheus_metrics", "expected a path like '/metrics' or a push gateway URL")


def _check_listen(
    name: str, server: ServerConfig, listeners: dict[tuple[str, int], str], problem: Reporter
) -> None:
    items = split_listen_addrs(server.addr)
    if not items:
        problem("addr", "no listen address given")
    own: set[tuple[str, int]] = set()
    for item in items:
        try:
            host, port = parse_host_port(item)
        except ValueError as exc:
            problem("addr", str(exc))
            continue
        key = (host.lower(), port)
        if key in own:
            problem("addr", f"'{item}' is listed twice")
            continue
        own.add(key)
        other = listeners.setdefault(key, name)
        if other != name:
            problem("addr", f"'{item}' is also the listen address of server '{other}'")


def _check_location(location: LocationConfig, config: PingapConfig, problem: Reporter) -> None:
    upstream = location.upstream
    if upstream and not upstream.startswith("$") and upstream not in config.upstreams:
        problem(
            "upstream", f"unknown upstream '{upstream}'{did_you_mean(upstream, config.upstreams)}"
        )
    for index, plugin in enumerate(location.plugins):
        if plugin not in config.plugins and plugin not in BUILTIN_PLUGINS:
            hint = did_you_mean(plugin, [*config.plugins, *BUILTIN_PLUGINS])
            problem(f"plugins[{index}]", f"unknown plugin '{plugin}'{hint}")
    captures: set[str] | None = set()
    for key, value, parse in (
        ("path", location.path, PathMatcher.parse),
        ("host", location.host, HostMatcher.parse),
        ("rewrite", location.rewrite, Rewrite.parse),
    ):
        if value is None:
            continue
        try:
            names = parse(value).group_names  # type: ignore[operator]
        except ValueError as exc:
            problem(key, str(exc))
            captures = None
            continue
        if captures is not None:
            captures |= names
    if upstream and upstream.startswith("$") and captures is not None:
        if upstream[1:] not in captures:
            problem("upstream", f"{upstream} names no capture group of this location's host, "
                    "path or rewrite regex")
    for key, rules in (
        ("proxy_set_headers", location.proxy_set_headers),
        ("proxy_add_headers", location.proxy_add_headers),
    ):
        for index, rule in enumerate(rules):
            message = check_header_rule(rule)
            if message:
                problem(f"{key}[{index}]", message)
    for key, conditions in (
        ("match_headers", location.match_headers),
        ("match_query", location.match_query),
        ("match_cookies", location.match_cookies),
    ):
        for index, condition in enumerate(conditions):
            if not condition.partition(":")[0].strip():
                problem(
                    f"{key}[{index}]",
                    f"invalid condition '{condition}': expected 'name' or 'name:value'",
                )


def _check_upstream(upstream: UpstreamConfig, problem: Reporter) -> None:
    discovery = (upstream.discovery or "").lower()
    if discovery and discovery not in DISCOVERY_MODES:
        hint = did_you_mean(discovery, DISCOVERY_MODES)
        problem(
            "discovery",
            f"unknown discovery '{upstream.discovery}'; expected one of: {', '.join(DISCOVERY_MODES)}{hint}",
        )
    if not upstream.addrs:
        problem("addrs", "at least one backend address is required")
    elif discovery != "transparent":  # transparent proxies ignore the addresses
        for index, item in enumerate(upstream.addrs):
            message = _check_backend(item, check_ip=discovery != "docker", tls=bool(upstream.sni))
            if message:
                problem(f"addrs[{index}]", message)
    _check_algo(upstream.algo, problem)
    if upstream.alpn.lower() not in ALPN_VALUES:
        problem("alpn", f"unknown alpn '{upstream.alpn}'; expected H1, H2 or H2H1")
    if upstream.health_check is not None:
        try:
            parse_health_check(upstream.health_check)
        except ValueError as exc:
            problem("health_check", str(exc))
    if upstream.tcp_probe_count is not None and upstream.tcp_probe_count > MAX_TCP_PROBE_COUNT:
        problem("tcp_probe_count", f"{upstream.tcp_probe_count} is more than {MAX_TCP_PROBE_COUNT}")
    if upstream.max_h2_streams <= 0:
        problem("max_h2_streams", "must be greater than 0")


def _check_backend(item: str, *, check_ip: bool, tls: bool) -> str | None:
    try:
        backend = parse_addr(item, tls=tls)
    except ValueError as exc:
        return str(exc)
    if not check_ip:
        return None
    try:
        ip = ipaddress.ip_address(backend.host)
    except ValueError:
        return None  # a host name, resolved when the upstream is built
    if (
        ip.is_unspecified
        or ip.is_multicast
        or ip.is_link_local
        or ip == ipaddress.IPv4Address("255.255.255.255")
    ):
        return (f"'{backend.host}' is not a usable backend address "
                "(unspecified, broadcast, multicast or link-local)")
    return None


def _check_algo(algo: str, problem: Reporter) -> None:
    if algo in ("round_robin", "hash"):
        return
    if not algo.startswith("hash:"):
        hint = did_you_mean(algo, ("round_robin", "hash:url", "hash:ip", "hash:path"))
        problem("algo", f"unknown algo '{algo}'; expected round_robin or hash:<type>{hint}")
        return
    hash_type = algo[len("hash:") :].partition(":")[0]
    if hash_type not in HASH_TYPES:
        hint = did_you_mean(hash_type, HASH_TYPES)
        problem(
            "algo",
            f"unknown hash type '{hash_type}'; expected one of: {', '.join(HASH_TYPES)}{hint}",
        )
        return
    try:
        parse_algo(algo)
    except ValueError as exc:
        problem("algo", str(exc))
