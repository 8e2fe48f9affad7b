"""Parse listen addresses (``servers.*.addr``): comma-separated ``host:port`` items.

The host is an IPv4 address, a bracketed IPv6 address (``[::]:80``) or a host name.
Functions raise ``ValueError`` with a message meant for a config Problem. (Upstream
addresses, ``host[:port][ weight]``, are parsed by ``pingap.upstream.parse_addr``.)
"""

from __future__ import annotations

import ipaddress
import re

__all__ = ["parse_host_port", "split_listen_addrs"]

_HOSTNAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?")


def split_listen_addrs(addr: str) -> list[str]:
    """The non-empty comma-separated items of a ``servers.*.addr`` value, stripped."""
    return [item.strip() for item in addr.split(",") if item.strip()]


def _port(text: str, item: str) -> int:
    if not text.isdigit():
        raise ValueError(f"invalid port '{text}' in '{item}'")
    port = int(text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} in '{item}' is out of range 1-65535")
    return port


def _check_host(host: str, item: str) -> str:
    """``host`` unchanged if it is an IP address or a plausible host name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOSTNAME.fullmatch(host):
            raise ValueError(f"invalid host '{host}' in '{item}'") from None
    return host


def parse_host_port(item: str, default_port: int | None = None) -> tuple[str, int]:
    """``(host, port)`` of ``"host:port"`` / ``"[v6]:port"``; brackets are removed.

    Without a port, ``default_port`` is used, or ``ValueError`` is raised when it is None.
    A bare IPv6 literal (``"::1"``) is accepted only when a default port applies.
    """
    item = item.strip()
    if not item:
        raise ValueError("empty address")
    if item.startswith("["):
        end = item.find("]")
        if end < 0:
            raise ValueError(f"missing ']' in '{item}'")
        host, rest = item[1:end], item[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"invalid IPv6 address '{host}' in '{item}'") from None
        if rest.startswith(":"):
            return host, _port(rest[1:], item)
        if rest:
            raise ValueError(f"unexpected '{rest}' after ']' in '{item}'")
    elif item.count(":") > 1:
        try:
            ipaddress.IPv6Address(item)
        except ValueError:
            raise ValueError(f"invalid address '{item}'") from None
        host = item
        if default_port is None:
            raise ValueError(f"an IPv6 address with a port needs brackets: '[{item}]:port'")
    elif ":" in item:
        host, _, port_text = item.partition(":")
        if not host:
            raise ValueError(f"missing host in '{item}' (use 0.0.0.0{item} or [::]{item})")
        return _check_host(host, item), _port(port_text, item)
    else:
        host = _check_host(item, item)
    if default_port is None:
        raise ValueError(f"missing port in '{item}' (expected host:port)")
    return host, default_port
