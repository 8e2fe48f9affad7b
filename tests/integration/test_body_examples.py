"""pingap's examples that need the body plugins, run as shipped (addresses, paths and
the origin swapped for test ones): ``examples/static-serve`` (cache + upstream-mode
compression in front of a static origin) and ``examples/grpc-web`` (its page served by
the ``directory`` plugin over TLS, HTTP/1.1 and HTTP/2)."""

from __future__ import annotations

import gzip
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomlkit
import zstandard

from tests.support.content_backend import text
from tests.support.h2c import http1
from tests.support.proc import Origin, PingapProcess, free_port

EXAMPLES = Path(__file__).resolve().parents[1] / "data" / "pingap-examples" / "examples"


def load(name: str) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for path in sorted((EXAMPLES / name).glob("*.toml")):
        for section, entries in tomllib.loads(path.read_text()).items():
            config.setdefault(section, {}).update(entries)
    return config


def test_static_serve_caches_and_compresses(pingap: Callable[..., PingapProcess],
                                            origin: Origin, tmp_path: Path) -> None:
    config = load("static-serve")
    port = free_port()
    config["servers"]["test"]["addr"] = f"127.0.0.1:{port}"
    upstream = config["upstreams"]["downloadsUpstream"]
    upstream["addrs"] = [origin.addr]
    upstream.pop("health_check", None)  # the origin has no /health
    cache = config["plugins"]["staticCache"]
    cache["directory"] = cache["directory"].replace("/opt/pingap/cache", str(tmp_path / "c"))
    pingap(tomlkit.dumps(config), port=port)
    path = "/text?n=40000&cc=max-age%3D600"
    first = http1(port, path=path, headers={"Accept-Encoding": "gzip"})
    assert first.header("x-cache-status") == "miss"
    assert first.header("content-encoding") == "gzip"
    assert gzip.decompress(first.body) == text(40000)
    again = http1(port, path=path, headers={"Accept-Encoding": "gzip"})
    assert again.header("x-cache-status") == "hit"
    assert gzip.decompress(again.body) == text(40000)
    assert sum(1 for r in origin.requests() if r["path"] == path) == 1
    # upstream-mode compression puts the coding in the cache key (as pingap): one entry
    # per coding
    zstd = http1(port, path=path, headers={"Accept-Encoding": "zstd, gzip"})
    assert zstd.header("x-cache-status") == "miss"
    assert zstd.header("content-encoding") == "zstd"
    assert zstandard.ZstdDecompressor().decompressobj().decompress(zstd.body) == text(40000)
    assert http1(port, path=path, headers={"Accept-Encoding": "zstd"}).header(
        "x-cache-status") == "hit"
    assert sum(1 for r in origin.requests() if r["path"] == path) == 2
    # check_cache_control = true: a response without Cache-Control is not kept
    bare = "/text?n=500"
    http1(port, path=bare)
    assert http1(port, path=bare).header("x-cache-status") == "miss"
    assert list((tmp_path / "c" / "static").rglob("*"))  # the file store, with levels


@pytest.mark.parametrize("http", ["--http1.1", "--http2"])
def test_grpc_web_example_serves_its_page(pingap: Callable[..., PingapProcess],
                                          tmp_path: Path, http: str) -> None:
    home = tmp_path / "home"
    page = home / "tmp" / "grpc" / "commonjs-example"
    page.mkdir(parents=True)
    (page / "index.html").write_text("<title>grpc-web echo</title>")
    (page / "dist").mkdir()
    (page / "dist" / "main.js").write_text("console.log('echo');")
    config = load("grpc-web")
    port = free_port()
    config["servers"]["grpc-web"]["addr"] = f"127.0.0.1:{port}"
    config["plugins"]["grpc-web-static"]["path"] = str(page)  # the example's ~/tmp/grpc/...
    pingap(tomlkit.dumps(config), port=port)
    for target, expected in (("/", b"<title>grpc-web echo</title>"),
                             ("/dist/main.js", b"console.log('echo');")):
        result = subprocess.run(["curl", "-sSk", "--max-time", "10", http, "-w",
                                 "\n%{http_version} %{http_code}",
                                 f"https://127.0.0.1:{port}{target}"],
                                capture_output=True, timeout=20, check=True)
        body, _, status = result.stdout.rpartition(b"\n")
        assert body == expected
        assert status == (b"2 200" if http == "--http2" else b"1.1 200")
