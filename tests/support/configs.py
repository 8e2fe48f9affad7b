"""The config most integration tests need: one upstream ``u``, one catch-all location
``all`` and one server ``s``, with room for extra lines in each section."""

from __future__ import annotations


def proxy_config(port: int, backend: str | None = None, *, upstream: str = "",
                 location: str = "", server: str = "", basic: str = "") -> str:
    addrs = f'addrs = ["{backend}"]\n' if backend else ""
    return f"""
[basic]
grace_period = "1s"
{basic}
[upstreams.u]
{addrs}{upstream}
[locations.all]
upstream = "u"
{location}
[servers.s]
addr = "127.0.0.1:{port}"
locations = ["all"]
{server}
"""
