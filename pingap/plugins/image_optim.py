"""The ``image_optim`` plugin: PNG and JPEG responses re-encoded by Pillow.

When the client's ``Accept`` names one of ``output_types`` (``image/webp``,
``image/avif`` ...), the first such type in ``output_types`` order is the target;
otherwise the image is re-encoded in its own format (JPEG at ``jpeg_quality``, PNG
optimised and, below ``png_quality`` 100, quantised to a palette). The body must be
whole before it can be decoded, so the filter holds it (up to ``MAX_IMAGE`` bytes,
beyond which it passes the original through) and the exchange sends the head only
with the first body bytes: a failed or larger conversion sends the original, with
its own type and length, never a mislabelled body. The accepted output types join
the cache key at the ``request`` step, as in pingap.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pingap.actions import CONTINUE, Continue, Respond
from pingap.context import BodyFilter, RequestContext, header_value
from pingap.headers import Headers
from pingap.plugins import Plugin, register, remove_header, set_header
from pingap.plugins.compression import add_vary, media_type

MAX_IMAGE = 32 * 1024 * 1024
_SOURCES = {"image/png": "png", "image/jpeg": "jpeg"}
_FORMATS = ("webp", "avif", "png", "jpeg")

if TYPE_CHECKING:
    from PIL import Image


def _quality(options: Mapping[str, Any], key: str, default: int, high: int = 100) -> int:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        return default  # pingap: out of range resets to the default
    return value


class ImageConverter:
    """A whole-body filter: holds the image, re-encodes it at the end."""

    whole_body = True
    __slots__ = ("plugin", "source", "target", "headers", "parts", "size", "passing")

    def __init__(self, plugin: ImageOptim, source: str, target: str, headers: Headers) -> None:
        self.plugin = plugin
        self.source = source
        self.target = target
        self.headers = headers  # the response head, sent after our first output
        self.parts: list[bytes] = []
        self.size = 0
        self.passing = False

    def feed(self, data: bytes) -> bytes:
        if self.passing:
            return data
        self.parts.append(data)
        self.size += len(data)
        if self.size <= MAX_IMAGE:
            return b""
        self.passing = True  # too big to hold: the original goes as it comes
        held = b"".join(self.parts)
        self.parts = []
        return held

    def end(self) -> bytes:
        if self.passing:
            return b""
        original = b"".join(self.parts)
        self.parts = []
        converted = self.plugin.convert(original, self.source, self.target)
        if converted is None or len(converted) >= len(original):
            body, kind = original, self.source
        else:
            body, kind = converted, self.target
        set_header(self.headers, b"Content-Type", f"image/{kind}".encode())
        set_header(self.headers, b"Content-Length", str(len(body)).encode())
        return body


@register
class ImageOptim(Plugin):
    """Re-encodes PNG/JPEG bodies (see the module docstring)."""

    category = "image_optim"
    steps = ("request", "upstream_response")
    filter_rank = 10  # first: the other filters see the image as it will be sent

    def __init__(self, name: str, options: Mapping[str, Any], step: str | None = None) -> None:
        # Pillow is loaded by the config that builds this plugin (a missing Pillow fails
        # there), never by a process without one
        from PIL import Image  # noqa: F401

        super().__init__(name, options, step)
        types = [t.strip().lower() for t in str(options.get("output_types", "")).split(",")
                 if t.strip()]
        for kind in types:
            if kind not in _FORMATS:
                raise ValueError(f"`output_types`: {kind!r} is not one of "
                                 f"{', '.join(_FORMATS)}")
        self.output_types = types
        self.png_quality = _quality(options, "png_quality", 90)
        self.jpeg_quality = _quality(options, "jpeg_quality", 80)
        self.avif_quality = _quality(options, "avif_quality", 75)
        self.avif_speed = _quality(options, "avif_speed", 3, 10)
        self.acts_in = frozenset({"request"}) if types else frozenset()

    def _accepted(self, ctx: RequestContext) -> list[str]:
        accept = (ctx.request_header("accept") or "").lower()
        return [kind for kind in self.output_types if f"image/{kind}" in accept]

    def handle_request(self, step: str, ctx: RequestContext) -> Continue | Respond:
        if step == "request":
            for kind in sorted(self._accepted(ctx)):
                ctx.add_cache_key(f"image/{kind}")
        return CONTINUE

    def body_filter(self, ctx: RequestContext, status: int,
                    headers: Headers) -> BodyFilter | None:
        if ctx.method == "HEAD" or status != 200:
            return None
        source = _SOURCES.get(media_type(header_value(headers, b"content-type")))
        encoded = header_value(headers, b"content-encoding")
        if source is None or (encoded and encoded.strip().lower() != b"identity"):
            return None
        accepted = self._accepted(ctx)
        target = accepted[0] if accepted else source
        if self.output_types:
            add_vary(headers, b"Accept")
        remove_header(headers, b"content-length")
        remove_header(headers, b"etag")  # the bytes sent are not the upstream's
        return ImageConverter(self, source, target, headers)

    def convert(self, data: bytes, source: str, target: str) -> bytes | None:
        """``data`` re-encoded as ``target``; None when Pillow cannot do it."""
        from PIL import Image  # loaded when the plugin was built

        try:
            with Image.open(io.BytesIO(data)) as image:
                if image.format is None or image.format.lower() != source:
                    return None
                image.load()
                return self._encode(image, target)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            return None

    def _encode(self, image: Image.Image, target: str) -> bytes:
        out = io.BytesIO()
        if target == "jpeg":
            if image.mode not in ("RGB", "L"):
                image = image.convert("RGB")
            image.save(out, "JPEG", quality=self.jpeg_quality, optimize=True)
        elif target == "png":
            if self.png_quality < 100 and image.mode in ("RGB", "RGBA"):
                image = image.quantize(colors=max(2, round(256 * self.png_quality / 100)))
            image.save(out, "PNG", optimize=True)
        elif target == "webp":
            image.save(out, "WEBP", quality=self.jpeg_quality if image.mode == "RGB"
                       else self.png_quality, method=4)
        else:
            # Pillow's AVIF speed runs 0 (slowest) to 10, as pingap's avif_speed
            image.save(out, "AVIF", quality=self.avif_quality, speed=self.avif_speed)
        return out.getvalue()
