"""Which upstreams use DNS discovery, and pingap's ``service_discover_fail`` messages.

pingap's guess: an explicit ``discovery`` wins; otherwise an upstream is on ``dns`` when a
backend's host is not an IP literal. Here every connection resolves its backend's host
(so a DNS change is followed at once); the host's master also resolves each discovered
name every ``update_frequency`` (``master/discovery.py``) to tell ops, as pingap does,
when a name stops resolving. No I/O here.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pingap.upstream import parse_addr

DEFAULT_UPDATE_FREQUENCY = 60.0
"""pingap's re-discovery period for ``dns`` upstreams."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DnsDiscovery:
    upstream: str
    hosts: tuple[tuple[str, int], ...]  # every backend's (IP literals resolve to themselves)
    every: float


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def dns_discoveries(config: Any) -> list[DnsDiscovery]:
    """The upstreams of ``config`` on DNS discovery that have a name to resolve (pingap
    resolves IP literals too, so a name failing beside them is a partial failure)."""
    out = []
    for name, upstream in config.upstreams.items():
        mode = (upstream.discovery or "").lower()
        if mode not in ("", "dns"):
            continue  # static, docker, transparent
        hosts = []
        for addr in upstream.addrs:
            try:
                backend = parse_addr(addr, tls=bool(upstream.sni))
            except ValueError:
                continue  # reported by the config checks
            if (backend.host, backend.port) not in hosts:
                hosts.append((backend.host, backend.port))
        if any(not _is_ip(host) for host, _ in hosts):
            out.append(DnsDiscovery(upstream=name, hosts=tuple(hosts),
                                    every=upstream.update_frequency or DEFAULT_UPDATE_FREQUENCY))
    return out


def discover_fail_message(discovery: DnsDiscovery, failed: Sequence[str], error: str
                          ) -> str | None:
    """pingap's message for one pass: some names failed (``dns discovery resolve failed:
    ["a"]``) or all of them (``dns discovery ["a:80"], error: …``); None when all
    resolved. The upstream is named after it (pingap's message does not say which)."""
    if not failed:
        return None
    if len(failed) < len(discovery.hosts):
        text = f"dns discovery resolve failed: {json.dumps(list(failed), separators=(', ', ': '))}"
    else:
        hosts = [f"{host}:{port}" for host, port in discovery.hosts]
        text = f"dns discovery {json.dumps(hosts, separators=(', ', ': '))}, error: {error}"
    return f"{text} (upstream {discovery.upstream})"
