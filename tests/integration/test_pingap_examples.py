"""pingap's own sample configs (tests/data/pingap-examples, see ORIGIN.md there) pass
``pingap -t``: its shipped conf/ directory, its examples/ and the ```toml blocks of its
READMEs, as pingap accepts them.

The only errors allowed are the documented exceptions in ``KNOWN_DIFFERENCES``; every
plugin category these samples use runs here. Doc blocks are fragments: the test
completes them as a user would (placeholder upstreams and locations for the names they
reference, an address for a server without one, every plugin on a location)."""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomlkit

from tests.support.geoip import write_country_db

DATA = Path(__file__).resolve().parents[1] / "data" / "pingap-examples"
SAMPLES = [DATA / "conf", *sorted((DATA / "examples").iterdir())]
DOC_BLOCKS = sorted((DATA / "docs").glob("*.toml"))

#: (sample, key) errors that are deliberate differences, documented in README.rst
KNOWN_DIFFERENCES = {
    # a limit with tag = "query" and no key never limits in pingap; a guard that cannot
    # work is refused here
    ("conf", "plugins.ipLimit"),
}


@pytest.fixture(scope="module")
def geoip_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pingap's conf/ has a geo_restriction plugin: it needs a country database."""
    return write_country_db(tmp_path_factory.mktemp("geoip") / "country.mmdb")


def check(target: Path, geoip_db: Path) -> tuple[int, list[str], str]:
    result = subprocess.run(["pingap", "-t", "-c", str(target)], capture_output=True,
                            text=True, timeout=60,
                            env={**os.environ, "PINGAP_GEOIP_DB": str(geoip_db)})
    errors = [line.strip() for line in result.stderr.splitlines() if line.startswith("  ")]
    return result.returncode, errors, result.stdout + result.stderr


def unexpected(sample: str, errors: list[str]) -> list[str]:
    left = []
    for line in errors:
        key = line.split(": ")[1] if line.count(": ") >= 2 else ""
        if (sample, key) in KNOWN_DIFFERENCES:
            continue
        left.append(line)
    return left


@pytest.mark.parametrize("sample", SAMPLES, ids=[p.name for p in SAMPLES])
def test_pingap_sample_passes(sample: Path, geoip_db: Path) -> None:
    code, errors, output = check(sample, geoip_db)
    assert unexpected(sample.name, errors) == [], output
    assert "not implemented" not in output, output
    assert code == (1 if errors else 0), output
    assert "Traceback" not in output


def completed(block: dict[str, Any]) -> dict[str, Any]:
    """A doc fragment made whole the way a user would."""
    config: dict[str, Any] = {**block}
    servers = config.setdefault("servers", {})
    locations = config.setdefault("locations", {})
    upstreams = config.setdefault("upstreams", {})
    plugins = config.get("plugins", {})
    for name in {n for s in servers.values() for n in s.get("locations", [])} - set(locations):
        locations[name] = {"upstream": "placeholder"}
    if plugins:
        locations["docTest"] = {"upstream": "placeholder", "path": "/doc-test",
                                "plugins": list(plugins)}
    for name in {loc.get("upstream") for loc in locations.values()} - {None, *upstreams}:
        upstreams[name] = {"addrs": ["127.0.0.1:9"]}
    for index, server in enumerate(servers.values()):
        server.setdefault("addr", f"127.0.0.1:{20 + index}")
    listed = {n for s in servers.values() for n in s.get("locations", [])}
    if set(locations) - listed:
        servers["docTest"] = {"addr": "127.0.0.1:9", "locations": sorted(set(locations) - listed)}
    return config


@pytest.mark.parametrize("block", DOC_BLOCKS, ids=[p.stem for p in DOC_BLOCKS])
def test_pingap_doc_block_passes(block: Path, tmp_path: Path, geoip_db: Path) -> None:
    target = tmp_path / "pingap.toml"
    target.write_text(tomlkit.dumps(completed(tomllib.loads(block.read_text()))))
    code, errors, output = check(target, geoip_db)
    assert unexpected(block.stem, errors) == [], output
    assert "not implemented" not in output, output
    assert code == (1 if errors else 0), output


def test_stale_sample_keys_are_named_in_warnings(geoip_db: Path) -> None:
    """pingap's conf/ carries keys pingap ignores (``stats.value``, an array for
    ``accept_encoding.encodings``): accepted, each named in a warning."""
    _, _, output = check(DATA / "conf", geoip_db)
    warnings = [line for line in output.splitlines() if line.startswith("pingap: warning:")]
    assert any("plugins.performanceStats.value: unknown option of a stats plugin" in line
               for line in warnings), output
    assert any("plugins.commonAcceptEncoding.encodings: expected a string, got an array"
               in line for line in warnings), output


@pytest.mark.parametrize("name", ["test.hcl", "test.kdl"])
def test_pingap_hcl_and_kdl_samples_pass_and_convert(name: str, tmp_path: Path,
                                                     geoip_db: Path) -> None:
    sample = DATA / "formats" / name
    code, errors, output = check(sample, geoip_db)
    assert (code, errors) == (0, []), output
    converted = subprocess.run(["pingap", "--to-toml", "-c", str(sample)],
                               capture_output=True, text=True, timeout=60)
    assert converted.returncode == 0, converted.stderr
    document = tomllib.loads(converted.stdout)
    assert document["servers"]["test"]["locations"] == ["github-api", "static"]
    assert document["locations"]["github-api"]["upstream"] == "api"
    target = tmp_path / "converted.toml"
    target.write_text(converted.stdout)
    code, errors, output = check(target, geoip_db)
    assert (code, errors) == (0, []), output
