"""The ``compression`` plugin: gzip (zlib), brotli and zstd response bodies, streamed.

Negotiation reads ``Accept-Encoding`` with its q-values (RFC 9110 §12.5.3): the enabled
coding with the highest weight wins, ties broken by pingap's fixed priority zstd > br >
gzip; ``q=0`` and unlisted codings (unless ``*`` covers them) are refused. A body is
compressed only when it can be: not for HEAD, 1xx/204/304 or a partial (206 /
``Content-Range``) response, not when already encoded or ``Cache-Control:
no-transform``, only for compressible types, and not below ``min_length`` when the
length is known. Compressing drops ``Content-Length`` (the codec frames the body),
sets ``Content-Encoding``, weakens a strong ETag and adds ``Vary: Accept-Encoding``.

``mode = "upstream"`` uses pingap's narrow type list (JSON, XML, ``text/*``) and adds
the chosen coding to the cache key; the default (downstream) mode uses the broader
list pingora's module compresses. ``decompression = true`` decodes a gzip/br/zstd
response for a client that does not accept its coding.

``brotli`` and ``zstandard`` are loaded when a compression plugin is built, not by every
process that imports the negotiation helpers here.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Mapping
from typing import Any

from pingap.actions import CONTINUE, Continue, Respond
from pingap.context import BodyFilter, RequestContext, header_value
from pingap.headers import Headers
from pingap.plugins import Plugin, register, remove_header, set_header

#: pingap's fixed preference among codings of equal weight
PRIORITY = ("zstd", "br", "gzip")
MAX_LEVEL = {"gzip": 9, "br": 11, "zstd": 22}

#: pingap's upstream-mode list: exactly these, plus text/*
_UPSTREAM_TYPES = frozenset({"application/json", "application/xml", "text/html"})
#: what pingora's downstream module compresses, plus text/*
_DOWNSTREAM_TYPES = frozenset({
    "application/javascript", "application/x-javascript", "application/json",
    "application/ld+json", "application/manifest+json", "application/xml",
    "application/xhtml+xml", "application/rss+xml", "application/atom+xml",
    "application/wasm", "application/x-font-ttf", "application/vnd.ms-fontobject",
    "application/graphql+json", "font/otf", "font/ttf", "image/svg+xml",
    "image/x-icon", "image/bmp",
})
_SKIP_STATUS = frozenset({204, 206, 304})


def parse_accept_encoding(value: str) -> dict[str, float]:
    """``Accept-Encoding`` as {coding: weight}; malformed weights count as 0."""
    weights: dict[str, float] = {}
    for item in value.split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        weight = 1.0
        for param in params.split(";"):
            key, sep, raw = param.partition("=")
            if sep and key.strip().lower() == "q":
                try:
                    weight = min(max(float(raw.strip()), 0.0), 1.0)
                except ValueError:
                    weight = 0.0
        weights[coding] = max(weight, weights.get(coding, 0.0))
    return weights


def weight_of(weights: Mapping[str, float], coding: str) -> float:
    """The client's weight for ``coding`` (``*`` covers codings not listed)."""
    if coding in weights:
        return weights[coding]
    if coding == "gzip" and "x-gzip" in weights:
        return weights["x-gzip"]
    return weights.get("*", 0.0)


def choose_encoding(accept: str | None, levels: Mapping[str, int]) -> str | None:
    """The coding to use among those with a non-zero level, or None."""
    if not accept:
        return None
    weights = parse_accept_encoding(accept)
    best: str | None = None
    best_weight = 0.0
    for coding in PRIORITY:
        if levels.get(coding, 0) <= 0:
            continue
        weight = weight_of(weights, coding)
        if weight > best_weight:
            best, best_weight = coding, weight
    return best


def media_type(content_type: bytes | None) -> str:
    if not content_type:
        return ""
    return content_type.split(b";", 1)[0].strip().lower().decode("latin-1")


def compressible(content_type: bytes | None, upstream_mode: bool) -> bool:
    essence = media_type(content_type)
    if essence.startswith("text/"):
        return True
    return essence in (_UPSTREAM_TYPES if upstream_mode else _DOWNSTREAM_TYPES)


def weaken_etag(headers: Headers) -> None:
    """A strong ETag names exact bytes; after re-encoding only a weak one is true."""
    for i, (name, value) in enumerate(headers):
        if name.lower() == b"etag" and value.startswith(b'"'):
            headers[i] = (name, b"W/" + value)


def add_vary(headers: Headers, field: bytes = b"Accept-Encoding") -> None:
    """Add ``field`` to ``Vary`` unless it (or ``*``) is there already."""
    low = field.lower()
    for i, (name, value) in enumerate(headers):
        if name.lower() == b"vary":
            tokens = {t.strip().lower() for t in value.split(b",")}
            if low in tokens or b"*" in tokens:
                return
            headers[i] = (name, value + b", " + field if value.strip() else field)
            return
    headers.append((b"Vary", field))


class Encoder:
    """One response body compressed as it streams; each fed chunk is flushed so a
    slow stream (server-sent events, long polls) reaches the client as it comes."""

    __slots__ = ("_compress", "_flush", "_finish", "ctx", "bytes_in", "bytes_out", "spent")
    _compress: Callable[[bytes], bytes]
    _flush: Callable[[], bytes]
    _finish: Callable[[], bytes]

    def __init__(self, coding: str, level: int, ctx: RequestContext | None = None) -> None:
        if coding == "gzip":
            gz = zlib.compressobj(level, zlib.DEFLATED, 31)
            self._compress = gz.compress
            self._flush = lambda: gz.flush(zlib.Z_SYNC_FLUSH)
            self._finish = gz.flush
        elif coding == "br":
            import brotli

            br = brotli.Compressor(quality=level)
            self._compress = br.process
            self._flush = br.flush
            self._finish = br.finish
        elif coding == "zstd":
            import zstandard

            zs = zstandard.ZstdCompressor(level=level).compressobj()
            self._compress = zs.compress
            self._flush = lambda: zs.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
            self._finish = zs.flush
        else:
            raise ValueError(f"unsupported coding {coding!r}")
        self.ctx = ctx
        self.bytes_in = self.bytes_out = 0
        self.spent = 0.0

    def feed(self, data: bytes) -> bytes:
        start = time.perf_counter()
        out = self._compress(data) + self._flush()
        self.spent += time.perf_counter() - start
        self.bytes_in += len(data)
        self.bytes_out += len(out)
        return out

    def end(self) -> bytes:
        start = time.perf_counter()
        out = self._finish()
        self.spent += time.perf_counter() - start
        self.bytes_out += len(out)
        if self.ctx is not None:
            self.ctx.compression_time = self.spent
            if self.bytes_out:
                self.ctx.compression_ratio = round(self.bytes_in / self.bytes_out, 1)
        return out


def _nothing() -> bytes:
    return b""


class Decoder:
    """One gzip/br/zstd response body decoded as it streams."""

    __slots__ = ("_process", "_finish")
    _process: Callable[[bytes], bytes]
    _finish: Callable[[], bytes]

    def __init__(self, coding: str) -> None:
        if coding in ("gzip", "x-gzip"):
            gz = zlib.decompressobj(47)  # gzip or zlib header, auto-detected
            self._process = gz.decompress
            self._finish = gz.flush
        elif coding == "br":
            import brotli

            br = brotli.Decompressor()
            self._process = br.process
            self._finish = _nothing
        elif coding == "zstd":
            import zstandard

            # a body may hold several frames (one per upstream flush)
            zs = zstandard.ZstdDecompressor().decompressobj(read_across_frames=True)
            self._process = zs.decompress
            self._finish = _nothing
        else:
            raise ValueError(f"unsupported coding {coding!r}")

    def feed(self, data: bytes) -> bytes:
        return self._process(data) if data else b""

    def end(self) -> bytes:
        return self._finish()


def _level(options: Mapping[str, Any], key: str, coding: str) -> int:
    value = options.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"`{key}` must be a non-negative integer, got {value!r}")
    return min(value, MAX_LEVEL[coding])


@register
class Compression(Plugin):
    """Streams compressed response bodies (see the module docstring)."""

    category = "compression"
    steps = ("early_request", "upstream_response")
    filter_rank = 30  # last: it compresses what the other filters produced

    def __init__(self, name: str, options: Mapping[str, Any], step: str | None = None) -> None:
        import brotli  # noqa: F401  (a process without a compression plugin never loads them)
        import zstandard  # noqa: F401

        super().__init__(name, options, step)
        self.levels = {"gzip": _level(options, "gzip_level", "gzip"),
                       "br": _level(options, "br_level", "br"),
                       "zstd": _level(options, "zstd_level", "zstd")}
        self.upstream_mode = str(options.get("mode", "")).lower() == "upstream"
        min_length = options.get("min_length", 0)
        if isinstance(min_length, bool) or not isinstance(min_length, int) or min_length < 0:
            raise ValueError(f"`min_length` must be a non-negative integer, got {min_length!r}")
        self.min_length = min_length
        self.decompression = bool(options.get("decompression", False))
        self.enabled = any(self.levels.values())
        self.acts_in = frozenset({"early_request"}) if self.upstream_mode else frozenset()

    def handle_request(self, step: str, ctx: RequestContext) -> Continue | Respond:
        if step == "early_request" and self.upstream_mode and self.enabled:
            coding = choose_encoding(ctx.request_header("accept-encoding"), self.levels)
            if coding is not None:
                ctx.add_cache_key(coding)
        return CONTINUE

    def body_filter(self, ctx: RequestContext, status: int,
                    headers: Headers) -> BodyFilter | None:
        if ctx.method == "HEAD" or status < 200 or status in _SKIP_STATUS \
                or header_value(headers, b"content-range") is not None:
            return None
        accept = ctx.request_header("accept-encoding")
        encoded = header_value(headers, b"content-encoding")
        if encoded is not None and encoded.strip().lower() not in (b"", b"identity"):
            return self._decoder(accept, encoded, headers)
        cache_control = header_value(headers, b"cache-control")
        if cache_control is not None and b"no-transform" in cache_control.lower():
            return None
        if not self.enabled or not compressible(header_value(headers, b"content-type"),
                                                self.upstream_mode):
            return None
        add_vary(headers)
        if self.min_length:
            length = header_value(headers, b"content-length")
            if length is not None and length.isdigit() and int(length) < self.min_length:
                return None
        coding = choose_encoding(accept, self.levels)
        if coding is None:
            return None
        remove_header(headers, b"content-length")
        set_header(headers, b"Content-Encoding", coding.encode())
        weaken_etag(headers)
        return Encoder(coding, self.levels[coding], ctx)

    def _decoder(self, accept: str | None, encoded: bytes,
                 headers: Headers) -> BodyFilter | None:
        if not self.decompression:
            return None
        coding = encoded.strip().lower().decode("latin-1")
        if coding not in ("gzip", "x-gzip", "br", "zstd"):
            return None
        if weight_of(parse_accept_encoding(accept or ""), coding) > 0:
            return None  # the client takes it as it is
        remove_header(headers, b"content-length")
        remove_header(headers, b"content-encoding")
        weaken_etag(headers)
        add_vary(headers)
        return Decoder(coding)
