"""Access restrictions by client IP, User-Agent, Referer and country (pingap's
``ip_restriction``, ``ua_restriction``, ``referer_restriction``, ``geo_restriction``).

Each runs at the ``request`` step, answers 403 with its ``message`` (default
"Request is forbidden"; geo: "Access from your country is not allowed") and otherwise
lets the request go on. ``type = "allow"`` (the default) admits only what matches,
``"deny"`` refuses what matches. The client IP is the session's (``basic.trusted_proxies``
decides whether forwarded headers count); IPv4-mapped IPv6 addresses are compared as IPv4.

Differences from pingap, all towards refusing: an ``ip_list`` entry that is neither an
address nor a CIDR, a bad regex or country code is a config error (pingap ignores a bad
address); geo_restriction answers 400 for a client IP it cannot parse, as ip_restriction
does (pingap lets it through). pingap embeds its GeoIP database; here it is a
MaxMind-format country database read with ``maxminddb`` from ``PINGAP_GEOIP_DB`` or a
standard path (``GEOIP_PATHS``); allow/deny without one is a config error.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from pingap.actions import CONTINUE, Continue, Respond
from pingap.context import RequestContext
from pingap.plugins import (
    IPAddress,
    OptionProblems,
    Plugin,
    parse_ip,
    plugin_response,
    register,
    str_list,
)
from pingap.regexes import PingapRegex, compile_pingap_regex

log = logging.getLogger("pingap.plugins")

FORBIDDEN = "Request is forbidden"

#: Where a MaxMind-format country database is looked for when PINGAP_GEOIP_DB is unset.
GEOIP_PATHS = (
    "/usr/share/GeoIP/GeoLite2-Country.mmdb",
    "/var/lib/GeoIP/GeoLite2-Country.mmdb",
    "/usr/share/GeoIP/dbip-country-lite.mmdb",
)


def _allow_mode(options: Mapping[str, Any], problems: OptionProblems) -> bool:
    """True for ``type = "allow"`` (or unset), False for ``"deny"``."""
    kind = str(options.get("type") or "allow").lower()
    if kind not in ("allow", "deny"):
        problems.add("type", f"invalid type {kind!r}; expected allow or deny")
    return kind != "deny"


def _forbidden(options: Mapping[str, Any], default: str = FORBIDDEN) -> Respond:
    return plugin_response(403, (str(options.get("message") or "") or default).encode())


class _Restriction(Plugin):
    """The shared decision: ``found`` admits in allow mode, refuses in deny mode."""

    steps = ("request",)
    own_step_only = True

    def __init__(self, name: str, options: Mapping[str, Any], step: str | None = None) -> None:
        super().__init__(name, options, step)
        self.problems = OptionProblems()
        self.allow = _allow_mode(options, self.problems)
        self.forbidden = _forbidden(options)

    def decide(self, found: bool) -> Continue | Respond:
        return CONTINUE if found == self.allow else self.forbidden


@register
class IpRestriction(_Restriction):
    """``ip_list``: addresses and CIDR networks, IPv4 and IPv6."""

    category = "ip_restriction"

    def __init__(self, name: str, options: Mapping[str, Any], step: str | None = None) -> None:
        super().__init__(name, options, step)
        self.addresses: set[IPAddress] = set()
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for i, item in enumerate(str_list(options, "ip_list")):
            try:
                if "/" in item:
                    network = ipaddress.ip_network(item, strict=False)
                    mapped = _unmapped_network(network)
                    self.networks.append(mapped or network)
                else:
                    addr = parse_ip(item)
                    if addr is None:
                        raise ValueError(f"{item!r} is not an IP address or CIDR network")
                    self.addresses.add(addr)
            except ValueError as exc:
                self.problems.add(f"ip_list[{i}]", str(exc))
        self.problems.check()

    def matches(self, addr: IPAddress) -> bool:
        return addr in self.addresses or any(addr in net for net in self.networks)

    def handle_request(self, step: str, ctx: RequestContext) -> Continue | Respond:
        if step != self.step:
            return CONTINUE
        addr = parse_ip(ctx.client_ip)
        if addr is None:  # as pingap: an unparseable client IP is a bad request
            return plugin_response(400, f"invalid client ip {ctx.client_ip!r}".encode())
        return self.decide(self.matches(addr))


def _unmapped_network(network: ipaddress.IPv4Network | ipaddress.IPv6Network
                      ) -> ipaddress.IPv4Network | None:
    """``::ffff:a.b.c.d/n`` (n >= 96) as the IPv4 network it denotes, else None."""
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network(f"{mapped}/{network.prefixlen - 96}")
    return None


@register
class UaRestriction(_Restriction):
    """``ua_list``: regexes searched in the User-Agent (a request without one matches none)."""

    category = "ua_restriction"

    def __init__(self, name: str, options: Mapping[str, Any], step: str | None = None) -> None:
        super().__init__(name, options, step)
        self.patterns: list[PingapRegex] = []
        for i, item in enumerate(str_list(options, "ua_list")):
            try:
                self.patterns.append(compile_pingap_regex(item))
            except ValueError as exc:
                self.problems.add(f"ua_list[{i}]", str(exc))
        self.problems.check()

    def handle_request(self, step: str, ctx: RequestContext) -> Continue | Respond:
        if step != self.step:
            return CONTINUE
        ua = ctx.request_header("user-agent")
        found = ua is not None and any(p.search(ua) for p in self.patterns)
        return self.decide(found)


@register
class RefererRestriction(_Restriction):
    """``referer_list``: host names of the Referer URL; ``*.example.com`` matches every
    host ending in ``.example.com`` (not ``example.com`` itself), as in pingap."""

    category = "referer_restriction"

    def __init__(self, name: str, options: Mapping[str, Any], step: str | None = None) -> None:
        super().__init__(name, options, step)
        self.hosts: set[str] = set()
        self.suffixes: list[str] = []
        for item in str_list(options, "referer_list"):
            if item.startswith("*"):
                self.suffixes.append(item[1:].lower())
            else:
                self.hosts.add(item.lower())
        self.problems.check()

    def handle_request(self, step: str, ctx: RequestContext) -> Continue | Respond:
        if step != self.step:
            return CONTINUE
        referer = ctx.request_header("referer")
        found = False
        if referer:
            try:
                host = (urlsplit(referer.strip()).hostname or "").lower()
            except ValueError:
                host = ""
            found = bool(host) and (host in self.hosts
                                    or any(host.endswith(s) for s in self.suffixes))
        return self.decide(found)


def geoip_database_path() -> str | None:
    """``PINGAP_GEOIP_DB`` if set, else the first of ``GEOIP_PATHS`` that exists."""
    configured = os.environ.get("PINGAP_GEOIP_DB")
    if configured:
        return configured
    return next((path for path in GEOIP_PATHS if os.path.exists(path)), None)


@register
class GeoRestriction(Plugin):
    """``country_codes`` (ISO 3166-1 alpha-2) against the client IP's country;
    ``type`` allow / deny / reporting (log the lookup, always continue)."""

    category = "geo_restriction"
    steps = ("request",)
    own_step_only = True

    def __init__(self, name: str, options: Mapping[str, Any], step: str | None = None) -> None:
        super().__init__(name, options, step)
        problems = OptionProblems()
        self.mode = str(options.get("type") or "").lower()
        if self.mode not in ("allow", "deny", "reporting"):
            problems.add("type", f"invalid type {self.mode!r}; expected allow, deny or reporting")
        self.codes: set[str] = set()
        for i, item in enumerate(options.get("country_codes") or []):
            for code in re.split(r"[ ,]+", str(item).strip()):
                if not code:
                    continue
                if len(code) != 2 or not code.isascii() or not code.isalpha():
                    problems.add(f"country_codes[{i}]",
                                 f"invalid country code {code!r}: must be exactly 2 letters")
                self.codes.add(code.upper())
        self.forbidden = _forbidden(options, "Access from your country is not allowed")
        self.reader: Any = None
        path = geoip_database_path()
        if path is None:
            if self.mode != "reporting":
                problems.add("type", "no GeoIP database: set PINGAP_GEOIP_DB to a "
                             "MaxMind-format country database (.mmdb)")
        else:
            try:
                import maxminddb  # only where a geo plugin is configured
                self.reader = maxminddb.open_database(path)
            except (OSError, ValueError) as exc:
                problems.add("type", f"cannot open the GeoIP database {path}: {exc}")
        problems.check()

    def country(self, addr: IPAddress) -> str:
        """The ISO code of ``addr``, or ``"??"`` when the database does not know it."""
        if self.reader is None:
            return "??"
        record = self.reader.get(addr)
        if isinstance(record, dict):
            for key in ("country", "registered_country"):
                entry = record.get(key)
                if isinstance(entry, dict) and isinstance(entry.get("iso_code"), str):
                    return str(entry["iso_code"]).upper()
        return "??"

    def handle_request(self, step: str, ctx: RequestContext) -> Continue | Respond:
        if step != self.step:
            return CONTINUE
        addr = parse_ip(ctx.client_ip)
        if self.mode == "reporting":
            log.info("geoip lookup ip=%s country=%s", ctx.client_ip,
                     self.country(addr) if addr is not None else "??")
            return CONTINUE
        if addr is None:
            return plugin_response(400, f"invalid client ip {ctx.client_ip!r}".encode())
        try:
            found = self.country(addr) in self.codes
        except (ValueError, RuntimeError, OSError) as exc:  # a damaged database: fail closed
            log.error("geo_restriction %s: lookup of %s failed: %s", self.name, addr, exc)
            return self.forbidden
        return CONTINUE if found == (self.mode == "allow") else self.forbidden
