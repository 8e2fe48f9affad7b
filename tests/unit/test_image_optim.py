"""image_optim: Pillow re-encoding by Accept and output_types; failures and larger
results pass the original with its own type."""

from __future__ import annotations

import io
import random

import pytest
from PIL import Image

from pingap.plugins.image_optim import ImageOptim
from tests.unit.body_support import header, make_ctx, run


def png_bytes() -> bytes:
    """A photo-like image: a gradient with noise, which PNG stores poorly."""
    rng = random.Random(3)
    image = Image.new("RGB", (96, 96))
    for x in range(96):
        for y in range(96):
            image.putpixel((x, y), (x * 2 + rng.randint(0, 40), y * 2 + rng.randint(0, 40),
                                    x + y + rng.randint(0, 40)))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def jpeg_bytes() -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(png_bytes())).save(out, "JPEG", quality=100)
    return out.getvalue()


def convert(options: dict[str, object], accept: str, body: bytes,
            content_type: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    plugin = ImageOptim("i", options)
    headers = [(b"Content-Type", content_type), (b"Content-Length", str(len(body)).encode())]
    body_filter = plugin.body_filter(make_ctx(headers={"Accept": accept}), 200, headers)
    assert body_filter is not None
    assert getattr(body_filter, "whole_body", False)
    return run(body_filter, [body[:100], body[100:]]), headers


@pytest.mark.parametrize(("accept", "kind"), [
    ("image/avif,image/webp,*/*", "avif"), ("image/webp,*/*", "webp")])
def test_png_to_modern_format_when_accepted(accept: str, kind: str) -> None:
    original = png_bytes()
    out, headers = convert({"output_types": "avif,webp"}, accept, original, b"image/png")
    assert header(headers, "content-type") == f"image/{kind}".encode()
    assert header(headers, "content-length") == str(len(out)).encode()
    assert header(headers, "vary") == b"Accept"
    assert Image.open(io.BytesIO(out)).format.lower() == kind
    assert len(out) < len(original)


def test_jpeg_reencoded_in_place_without_accept() -> None:
    original = jpeg_bytes()
    out, headers = convert({"output_types": "webp", "jpeg_quality": 40}, "*/*", original,
                           b"image/jpeg")
    assert header(headers, "content-type") == b"image/jpeg"
    assert Image.open(io.BytesIO(out)).format == "JPEG" and len(out) < len(original)


def test_broken_image_passes_the_original() -> None:
    broken = b"\x89PNG\r\n\x1a\n" + b"garbage" * 50
    out, headers = convert({"output_types": "webp"}, "image/webp", broken, b"image/png")
    assert out == broken and header(headers, "content-type") == b"image/png"
    assert header(headers, "content-length") == str(len(broken)).encode()


def test_other_types_and_statuses_pass() -> None:
    plugin = ImageOptim("i", {"output_types": "webp"})
    ctx = make_ctx(headers={"Accept": "image/webp"})
    assert plugin.body_filter(ctx, 200, [(b"Content-Type", b"image/gif")]) is None
    assert plugin.body_filter(ctx, 404, [(b"Content-Type", b"image/png")]) is None
    assert plugin.body_filter(ctx, 200, [(b"Content-Type", b"image/png"),
                                         (b"Content-Encoding", b"gzip")]) is None


def test_accepted_types_join_the_cache_key_sorted() -> None:
    ctx = make_ctx(headers={"Accept": "image/webp,image/avif"})
    ImageOptim("i", {"output_types": "webp,avif"}).handle_request("request", ctx)
    assert ctx.cache_keys == ["image/avif", "image/webp"]


def test_options() -> None:
    plugin = ImageOptim("i", {"png_quality": 0, "avif_speed": 11, "jpeg_quality": 70})
    assert (plugin.png_quality, plugin.avif_speed, plugin.jpeg_quality) == (90, 3, 70)
    with pytest.raises(ValueError):
        ImageOptim("i", {"output_types": "gif"})
