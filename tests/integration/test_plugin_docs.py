"""Every ```toml block of pingap's plugin docs for the categories this build runs
(copied into tests/data/plugin_docs) passes ``pingap -t`` with no error and no warning.

A block is a fragment: the test completes it the way a user would — placeholder
upstreams for the names it references, an address for a server without one — and puts
every plugin it defines on a location, so an unimplemented plugin would be reported. A
PEM the docs elide ("…", jwt's third block) is replaced by a real public key (that the
elided one is reported is tested in test_auth)."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomlkit
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.geoip import write_country_db

DOCS = Path(__file__).resolve().parents[1] / "data" / "plugin_docs"
BLOCKS = sorted(DOCS.glob("*.toml"))


def with_real_keys(text: str) -> str:
    """``text`` with each elided ("…") PEM public key replaced by a real one."""
    def real(_: re.Match[str]) -> str:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
        return key.public_bytes(serialization.Encoding.PEM,
                                serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return re.sub(r"-----BEGIN PUBLIC KEY-----\n[^-]*…\n-----END PUBLIC KEY-----\n", real,
                  text)


def completed(block: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {**block}
    locations = config.setdefault("locations", {})
    upstreams = config.setdefault("upstreams", {})
    plugins = config.get("plugins", {})
    locations["docTest"] = {"upstream": "docTest", "path": "/doc-test",
                            "plugins": list(plugins)}
    wanted = {loc.get("upstream") for loc in locations.values()}
    wanted |= {p.get("upstream") for p in plugins.values()
               if p.get("category") == "traffic_splitting"}
    for name in wanted - {None, *upstreams}:
        upstreams[name] = {"addrs": ["127.0.0.1:9"]}
    servers = config.setdefault("servers", {})
    for i, server in enumerate(servers.values()):
        server.setdefault("addr", f"127.0.0.1:{10 + i}")
    listed = {name for server in servers.values() for name in server.get("locations", [])}
    servers["docTest"] = {"addr": "127.0.0.1:9",
                          "locations": sorted(set(locations) - listed)}
    return config


def test_blocks_are_present() -> None:
    categories = {path.stem.rsplit("-", 1)[0] for path in BLOCKS}
    assert categories >= {"ip_restriction", "ua_restriction", "referer_restriction",
                          "geo_restriction", "basic_auth", "key_auth", "jwt",
                          "combined_auth", "forward_auth", "csrf", "compression", "cache",
                          "directory", "sub_filter", "image_optim"}


@pytest.mark.parametrize("path", BLOCKS, ids=[p.stem for p in BLOCKS])
def test_doc_block_passes_pingap_t(path: Path, tmp_path: Path) -> None:
    config = completed(tomllib.loads(with_real_keys(path.read_text())))
    target = tmp_path / "pingap.toml"
    target.write_text(tomlkit.dumps(config))
    db = write_country_db(tmp_path / "country.mmdb")
    result = subprocess.run(["pingap", "-t", "-c", str(target)], capture_output=True,
                            text=True, timeout=60,
                            env={**os.environ, "PINGAP_GEOIP_DB": str(db)})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "warning" not in output.lower(), output
    assert "not implemented" not in output, output


def test_pingap_t_reports_every_bad_plugin_option_with_name_and_key(tmp_path: Path) -> None:
    target = tmp_path / "bad.toml"
    target.write_text("""
[upstreams.u]
addrs = ["127.0.0.1:9"]
[locations.l]
upstream = "u"
plugins = ["internal", "bots", "corsApi"]
[servers.s]
addr = "127.0.0.1:9"
locations = ["l"]
[plugins.internal]
category = "ip_restriction"
ip_list = ["10.0.0.0/8", "10.0.0.0/40", "not-an-ip"]
[plugins.bots]
category = "ua_restriction"
ua_list = ["curl/", "(?<=x)y", "[unclosed"]
[plugins.corsApi]
category = "cors"
path = "(api"
""")
    result = subprocess.run(["pingap", "-t", "-c", str(target)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0
    for key in ("plugins.internal.ip_list[1]", "plugins.internal.ip_list[2]",
                "plugins.bots.ua_list[1]", "plugins.bots.ua_list[2]", "plugins.corsApi.path"):
        assert f"{key}:" in result.stderr, result.stderr
    assert "plugins.internal.ip_list[0]" not in result.stderr
