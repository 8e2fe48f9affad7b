"""The compression plugin: negotiation, when it applies, header edits, and the streams
decoded by the standard decoders."""

from __future__ import annotations

import gzip
import random
import zlib

import brotli
import pytest
import zstandard

from pingap.plugins.compression import (
    Compression,
    Decoder,
    Encoder,
    choose_encoding,
    parse_accept_encoding,
)
from tests.unit.body_support import header, make_ctx, run

ALL = {"gzip_level": 6, "br_level": 6, "zstd_level": 6}
TEXT = b"hello compressible world " * 400


def plugin(**options: object) -> Compression:
    return Compression("c", {**ALL, **options})


def html_headers(**extra: str) -> list[tuple[bytes, bytes]]:
    out = [(b"Content-Type", b"text/html; charset=utf-8"), (b"Content-Length", b"10000")]
    out += [(k.encode(), v.encode()) for k, v in extra.items()]
    return out


@pytest.mark.parametrize(("accept", "levels", "chosen"), [
    ("gzip", ALL, "gzip"),
    ("zstd, br, gzip", ALL, "zstd"),
    ("gzip, br", ALL, "br"),                      # equal weights: pingap's priority
    ("gzip;q=1, br;q=0.5", ALL, "gzip"),          # weights decide first
    ("x-gzip", ALL, "gzip"),
    ("gzipx", ALL, None),
    ("gzip;q=0", ALL, None),
    ("gzip;q=0, br", ALL, "br"),
    ("gzip;q=0.5", ALL, "gzip"),
    ("*", ALL, "zstd"),
    ("*;q=0.1, zstd;q=0", ALL, "br"),
    ("identity", ALL, None),
    ("", ALL, None),
    ("zstd", {"gzip_level": 6}, None),            # disabled coding never chosen
    ("gzip;q=abc", ALL, None),
])
def test_negotiation(accept: str, levels: dict[str, int], chosen: str | None) -> None:
    enabled = {k.split("_")[0]: v for k, v in levels.items()}
    assert choose_encoding(accept, enabled) == chosen


def test_parse_accept_encoding_weights() -> None:
    assert parse_accept_encoding("gzip;q=0.8, BR ; q=0.9,zstd") == {
        "gzip": 0.8, "br": 0.9, "zstd": 1.0}


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_compressed_stream_decodes_with_standard_decoders(coding: str) -> None:
    ctx = make_ctx(headers={"Accept-Encoding": coding})
    headers = html_headers(ETag='"abc"')
    body_filter = plugin().body_filter(ctx, 200, headers)
    assert body_filter is not None
    chunks = [TEXT[i:i + 777] for i in range(0, len(TEXT), 777)]
    out = run(body_filter, chunks)
    decoded = {"gzip": gzip.decompress, "br": brotli.decompress,
               "zstd": lambda d: zstandard.ZstdDecompressor().decompressobj().decompress(d)}
    assert decoded[coding](out) == TEXT
    assert len(out) < len(TEXT) // 5
    assert header(headers, "content-encoding") == coding.encode()
    assert header(headers, "content-length") is None
    assert header(headers, "etag") == b'W/"abc"'
    assert header(headers, "vary") == b"Accept-Encoding"
    assert ctx.compression_ratio is not None and ctx.compression_ratio > 5


def test_each_chunk_is_flushed_so_streams_are_not_held() -> None:
    encoder = Encoder("gzip", 6)
    first = encoder.feed(b"data: event one\n\n")
    assert zlib.decompressobj(31).decompress(first) == b"data: event one\n\n"


@pytest.mark.parametrize(("method", "status", "extra", "reason"), [
    ("HEAD", 200, {}, "HEAD"),
    ("GET", 204, {}, "no content"),
    ("GET", 304, {}, "not modified"),
    ("GET", 206, {"Content-Range": "bytes 0-9/100"}, "partial"),
    ("GET", 200, {"Content-Range": "bytes 0-9/100"}, "content-range"),
    ("GET", 200, {"Content-Encoding": "gzip"}, "already encoded"),
    ("GET", 200, {"Cache-Control": "public, no-transform"}, "no-transform"),
    ("GET", 101, {}, "informational"),
])
def test_not_compressed(method: str, status: int, extra: dict[str, str], reason: str) -> None:
    ctx = make_ctx(method=method, headers={"Accept-Encoding": "gzip"})
    headers = html_headers(**extra)
    before = list(headers)
    assert plugin().body_filter(ctx, status, headers) is None, reason
    assert headers == before


@pytest.mark.parametrize(("content_type", "upstream", "expected"), [
    ("text/plain", False, True),
    ("application/json", True, True),
    ("application/xml", True, True),
    ("application/javascript", False, True),
    ("application/javascript", True, False),   # pingap's narrow upstream-mode list
    ("image/svg+xml", False, True),
    ("image/png", False, False),
    ("application/octet-stream", False, False),
])
def test_compressible_types(content_type: str, upstream: bool, expected: bool) -> None:
    ctx = make_ctx(headers={"Accept-Encoding": "gzip"})
    headers = [(b"Content-Type", content_type.encode())]
    options = {"mode": "upstream"} if upstream else {}
    assert (plugin(**options).body_filter(ctx, 200, headers) is not None) is expected


def test_missing_content_type_is_not_compressed() -> None:
    ctx = make_ctx(headers={"Accept-Encoding": "gzip"})
    assert plugin().body_filter(ctx, 200, []) is None


def test_vary_added_even_when_the_client_takes_no_coding() -> None:
    ctx = make_ctx(headers={})
    headers = html_headers(Vary="Origin")
    assert plugin().body_filter(ctx, 200, headers) is None
    assert header(headers, "vary") == b"Origin, Accept-Encoding"
    assert header(headers, "content-length") == b"10000"


def test_min_length() -> None:
    ctx = make_ctx(headers={"Accept-Encoding": "gzip"})
    small = [(b"Content-Type", b"text/plain"), (b"Content-Length", b"100")]
    assert plugin(min_length=1024).body_filter(ctx, 200, small) is None
    big = [(b"Content-Type", b"text/plain"), (b"Content-Length", b"2048")]
    assert plugin(min_length=1024).body_filter(ctx, 200, big) is not None
    unknown = [(b"Content-Type", b"text/plain")]  # no length: compressed, as pingap
    assert plugin(min_length=1024).body_filter(ctx, 200, unknown) is not None


@pytest.mark.parametrize(("key", "level", "coding"), [
    ("gzip_level", 1, "gzip"), ("gzip_level", 9, "gzip"),
    ("br_level", 1, "br"), ("br_level", 11, "br"),
    ("zstd_level", 1, "zstd"), ("zstd_level", 19, "zstd"),
])
def test_levels_reach_the_library(key: str, level: int, coding: str) -> None:
    rng = random.Random(7)
    words = [bytes(rng.choices(b"abcdefghijklmnop", k=rng.randint(2, 9))) for _ in range(500)]
    data = b" ".join(rng.choice(words) for _ in range(20000))
    assert plugin(**{key: level}).levels[coding] == level
    out = run(Encoder(coding, level), [data])
    if level > 5:
        assert len(out) <= len(run(Encoder(coding, 1), [data]))


def test_levels_are_capped_and_validated() -> None:
    assert Compression("c", {"gzip_level": 50, "br_level": 99, "zstd_level": 99}).levels == {
        "gzip": 9, "br": 11, "zstd": 22}
    with pytest.raises(ValueError):
        Compression("c", {"gzip_level": -1})
    with pytest.raises(ValueError):
        Compression("c", {"min_length": "big"})


def test_disabled_plugin_compresses_nothing() -> None:
    ctx = make_ctx(headers={"Accept-Encoding": "gzip, br, zstd"})
    assert Compression("c", {}).body_filter(ctx, 200, html_headers()) is None


def test_upstream_mode_adds_the_coding_to_the_cache_key() -> None:
    ctx = make_ctx(headers={"Accept-Encoding": "br, gzip"})
    plugin(mode="upstream").handle_request("early_request", ctx)
    assert ctx.cache_keys == ["br"]
    ctx = make_ctx(headers={"Accept-Encoding": "br"})
    plugin().handle_request("early_request", ctx)
    assert ctx.cache_keys is None


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_decompression_for_a_client_that_does_not_accept_the_coding(coding: str) -> None:
    encoded = run(Encoder(coding, 5), [TEXT[:5000], TEXT[5000:]])
    headers = [(b"Content-Type", b"text/plain"), (b"Content-Encoding", coding.encode()),
               (b"Content-Length", str(len(encoded)).encode())]
    ctx = make_ctx(headers={"Accept-Encoding": "identity"})
    body_filter = plugin(decompression=True).body_filter(ctx, 200, headers)
    assert body_filter is not None
    assert run(body_filter, [encoded[:100], encoded[100:]]) == TEXT
    assert header(headers, "content-encoding") is None
    assert header(headers, "content-length") is None


def test_no_decompression_when_the_client_accepts_it_or_unset() -> None:
    headers = [(b"Content-Type", b"text/plain"), (b"Content-Encoding", b"gzip")]
    ctx = make_ctx(headers={"Accept-Encoding": "gzip"})
    assert plugin(decompression=True).body_filter(ctx, 200, list(headers)) is None
    ctx = make_ctx(headers={})
    assert plugin().body_filter(ctx, 200, list(headers)) is None


def test_decoder_rejects_unknown_coding() -> None:
    with pytest.raises(ValueError):
        Decoder("compress")
