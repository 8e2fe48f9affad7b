"""The config most integration tests need: one upstream ``u``, one catch-all location
``all`` and one server ``s``, with room for extra lines in each section; and the same
laid out one entry per file, as the admin writes it with ``?separation=true``."""

from __future__ import annotations

from pathlib import Path


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


def per_entry_conf_dir(tmp: Path, port: int, backend: str) -> str:
    """The proxy config as a directory of per-entry files (``basic.toml``,
    ``upstreams/u.toml``, the location and server in ``main.toml``), as the ``-c``
    argument that keeps history: ``<dir>?separation=true&enable_history=true``."""
    conf = tmp / "conf"
    (conf / "upstreams").mkdir(parents=True)
    (conf / "basic.toml").write_text(f'[basic]\ngrace_period = "1s"\n'
                                     f'pid_file = "{tmp}/pingap.pid"\n')
    (conf / "upstreams" / "u.toml").write_text(f'[upstreams.u]\naddrs = ["{backend}"]\n')
    (conf / "main.toml").write_text(f'[locations.all]\nupstream = "u"\n[servers.s]\n'
                                    f'addr = "127.0.0.1:{port}"\nlocations = ["all"]\n')
    return f"{conf}?separation=true&enable_history=true"
