"""Check the typed config's values and the references between its sections.

One job: given a typed ``PingapConfig`` (every field already of the right type),
report what pingap's validation reports (spec §2.3) and what pingap lets through
silently, each with the file and dotted key it came from:

* references: a location's ``upstream`` and ``plugins``, a server's ``locations``,
  a storage named in ``includes`` (checked while merging), a ``traffic_splitting``
  plugin's ``upstream``. pingap silently skips unknown plugin names; we report them.
* values: listen addresses (and the same address on two servers), upstream
  addresses, ``algo``, ``alpn``, ``discovery``, ``health_check``, keepalive limits,
  location ``path``/``host``/``rewrite``/header rules (via ``pingap.routing`` and
  ``pingap.variables``), ``access_log`` (via ``pingap.accesslog``),
  ``trusted_proxies``, certificate ``dns_provider``, storage ``category``.

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
from pingap.config.sources import RawConfig, Report
from pingap.health import parse_health_check
from pingap.routing import check_host, check_path, check_rewrite
from pingap.upstream import parse_addr, parse_algo
from pingap.variables import check_header_rule

__all__ = ["BUILTIN_PLUGINS", "check_config"]

BUILTIN_PLUGINS = frozenset(
    {
        "pingap:compression",
        "pingap:compressionUpstream",
        "pingap:ping",
        "pingap:stats",
        "pingap:requestId",
        "pingap:acceptEncodingAdjustment",
        "pingap:admin",
    }
)
"""Plugin names always available to locations (spec §2.12)."""

DISCOVERY_MODES = ("static", "dns", "docker", "transparent")
ALPN_VALUES = ("h1", "h2", "h2h1")
HASH_TYPES = ("url", "ip", "path", "header", "cookie", "query")
DNS_PROVIDERS = frozenset({"ali", "aliyun", "cf", "cloudflare", "tencent", "huawei", "manual", ""})
STORAGE_CATEGORIES = ("config", "secret")
MAX_TCP_PROBE_COUNT = 16

Reporter = Callable[[str, str], None]
"""``problem(key, message)``: record an error about a key of the entry being checked."""


def check_config(config: PingapConfig, raw: RawConfig, report: Report) -> None:
    """Report every value and reference problem of ``config`` (built from ``raw``)."""

    def problem_for(section: str, name: str) -> Reporter:
        entry = raw.basic if section == "basic" else raw.sections[section][name]
        assert entry is not None  # only called for entries that were loaded

        def problem(key: str, message: str) -> None:
            report.errors.append(entry.problem(key, message))

        return problem

    if raw.basic is not None:
        _check_networks("trusted_proxies", config.basic.trusted_proxies, problem_for("basic", ""))
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
    for key, value, check in (
        ("path", location.path, check_path),
        ("host", location.host, check_host),
        ("rewrite", location.rewrite, check_rewrite),
    ):
        if value is not None:
            message = check(value)
            if message:
                problem(key, message)
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
