"""compression, sub_filter and image_optim through the real pingap, over HTTP/1.1 and
HTTP/2 (h2c), against a real origin; clients decode what they get with the standard
decoders (Python's gzip, brotli, zstandard; curl --compressed; Pillow)."""

from __future__ import annotations

import gzip
import io
import subprocess
from collections.abc import Callable
from pathlib import Path

import brotli
import pytest
import zstandard
from PIL import Image

from tests.support.configs import proxy_config
from tests.support.content_backend import text
from tests.support.h2c import Answer, http1, http2
from tests.support.proc import Origin, PingapProcess, free_port

DECODE: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.decompress,
    "br": brotli.decompress,
    "zstd": lambda data: zstandard.ZstdDecompressor().decompressobj().decompress(data),
}
CLIENTS = {"http1": http1, "http2": http2}


def start(pingap: Callable[..., PingapProcess], origin: Origin, plugins: str,
          names: list[str]) -> int:
    port = free_port()
    location = f"plugins = {names!r}".replace("'", '"')
    pingap(proxy_config(port, origin.addr, location=location, server="enabled_h2 = true")
           + plugins, port=port)
    return port


COMPRESSION = """
[plugins.comp]
category = "compression"
gzip_level = 6
br_level = 6
zstd_level = 6
"""


@pytest.mark.parametrize("client", ["http1", "http2"])
def test_compressed_responses_decode(pingap: Callable[..., PingapProcess], origin: Origin,
                                     client: str) -> None:
    port = start(pingap, origin, COMPRESSION, ["comp"])
    for coding in ("gzip", "br", "zstd"):
        for path in ("/text?n=100000", "/chunked?n=100000"):
            answer = CLIENTS[client](port, path=path, headers={"Accept-Encoding": coding})
            assert answer.status == 200
            assert answer.header("content-encoding") == coding, (coding, path)
            assert answer.header("vary") == "Accept-Encoding"
            assert answer.header("content-length") is None or \
                int(answer.header("content-length") or 0) == len(answer.body)
            assert DECODE[coding](answer.body) == text(100000)
            assert len(answer.body) < 100000 // 10


@pytest.mark.parametrize("http", ["--http1.1", "--http2-prior-knowledge"])
def test_curl_compressed(pingap: Callable[..., PingapProcess], origin: Origin, http: str,
                         tmp_path: Path) -> None:
    port = start(pingap, origin, COMPRESSION, ["comp"])
    out = tmp_path / "body"
    result = subprocess.run(["curl", "-sS", "--max-time", "10", http, "--compressed",
                             "-w", "%{size_download}", "-o", str(out),
                             f"http://127.0.0.1:{port}/text?n=50000"],
                            capture_output=True, timeout=20, check=True)
    assert out.read_bytes() == text(50000)
    assert int(result.stdout) < 50000 // 10  # what travelled was compressed


@pytest.mark.parametrize("client", ["http1", "http2"])
def test_what_is_not_compressed(pingap: Callable[..., PingapProcess], origin: Origin,
                                client: str) -> None:
    port = start(pingap, origin, COMPRESSION, ["comp"])
    get = CLIENTS[client]
    png = get(port, path="/image.png", headers={"Accept-Encoding": "gzip"})
    assert png.header("content-encoding") is None
    assert png.body.startswith(b"\x89PNG") and int(png.header("content-length") or 0) == len(png.body)
    refused = get(port, path="/text?n=5000", headers={"Accept-Encoding": "gzip;q=0"})
    assert refused.header("content-encoding") is None and refused.body == text(5000)
    no_transform = get(port, path="/text?n=5000&cc=no-transform",
                       headers={"Accept-Encoding": "gzip"})
    assert no_transform.header("content-encoding") is None
    head = get(port, "HEAD", "/text?n=5000", headers={"Accept-Encoding": "gzip"})
    assert head.status == 200 and head.header("content-encoding") is None


def test_builtin_compression_plugins(pingap: Callable[..., PingapProcess],
                                     origin: Origin) -> None:
    port = start(pingap, origin, "", ["pingap:compression"])
    answer = http1(port, path="/text?n=20000", headers={"Accept-Encoding": "gzip, br"})
    assert answer.header("content-encoding") == "br"
    assert brotli.decompress(answer.body) == text(20000)
    port = start(pingap, origin, "", ["pingap:compressionUpstream"])
    answer = http2(port, path="/text?n=20000&type=application/json",
                   headers={"Accept-Encoding": "zstd"})
    assert answer.header("content-encoding") == "zstd"
    assert DECODE["zstd"](answer.body) == text(20000)


def test_decompression_for_a_client_without_the_coding(pingap: Callable[..., PingapProcess],
                                                       origin: Origin) -> None:
    port = start(pingap, origin, COMPRESSION + "decompression = true\n", ["comp"])
    plain = http1(port, path="/text?n=30000&gz=1", headers={"Accept-Encoding": "identity"})
    assert plain.header("content-encoding") is None and plain.body == text(30000)
    h2 = http2(port, path="/text?n=30000&gz=1", headers={"Accept-Encoding": "br;q=1"})
    assert h2.header("content-encoding") is None and h2.body == text(30000)
    passed = http1(port, path="/text?n=30000&gz=1", headers={"Accept-Encoding": "gzip"})
    assert passed.header("content-encoding") == "gzip"
    assert gzip.decompress(passed.body) == text(30000)


SUB_FILTER = """
[plugins.rewrite]
category = "sub_filter"
filters = ["sub_filter 'again and again' 'once' g", "subs_filter '<p>(\\\\w+)' '<div>$1' g"]
"""


@pytest.mark.parametrize("client", ["http1", "http2"])
def test_sub_filter_rewrites_streamed_bodies(pingap: Callable[..., PingapProcess],
                                             origin: Origin, client: str) -> None:
    port = start(pingap, origin, SUB_FILTER + COMPRESSION, ["comp", "rewrite"])
    answer = CLIENTS[client](port, path="/chunked?n=200000", headers={"Accept-Encoding": "gzip"})
    expected = text(200000).replace(b"again and again", b"once").replace(b"<p>pingap",
                                                                           b"<div>pingap")
    # rewritten first, compressed last, whatever the plugins' order in the location
    assert answer.header("content-encoding") == "gzip"
    assert gzip.decompress(answer.body) == expected


IMAGE = """
[plugins.img]
category = "image_optim"
output_types = "avif,webp"
"""


@pytest.mark.parametrize("client", ["http1", "http2"])
@pytest.mark.parametrize(("accept", "kind"), [("image/webp,*/*", "webp"),
                                              ("image/avif,image/webp", "avif")])
def test_image_optim_converts_by_accept(pingap: Callable[..., PingapProcess], origin: Origin,
                                        client: str, accept: str, kind: str) -> None:
    port = start(pingap, origin, IMAGE, ["img"])
    original = http1(port, path="/image.png", headers={"Accept": "*/*"})
    answer = CLIENTS[client](port, path="/image.png", headers={"Accept": accept})
    assert answer.status == 200 and answer.header("content-type") == f"image/{kind}"
    assert int(answer.header("content-length") or 0) == len(answer.body)
    assert Image.open(io.BytesIO(answer.body)).format.lower() == kind
    assert len(answer.body) < len(original.body)
    assert original.header("content-type") in ("image/png",)


def test_image_optim_passes_other_images(pingap: Callable[..., PingapProcess],
                                         origin: Origin) -> None:
    port = start(pingap, origin, IMAGE, ["img"])
    answer: Answer = http1(port, path="/text?n=100&type=image/gif",
                           headers={"Accept": "image/webp"})
    assert answer.header("content-type") == "image/gif" and answer.body == text(100)
