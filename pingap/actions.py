"""What the session (or a plugin) tells the connection loop to do next.

Imperative names, frozen and keyword-only: ``Respond`` locally, ``Forward`` upstream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pingap.headers import Headers


@dataclass(frozen=True, slots=True, kw_only=True)
class FilePart:
    """``length`` bytes at ``offset`` of an open file (``fileno()``): sent with sendfile
    where the socket allows. The plugin that opened the file closes it at finish."""

    file: Any
    offset: int
    length: int
    #: the read size when the part cannot go by sendfile (TLS, HTTP/2, body filters)
    chunk_size: int = 65536


@dataclass(frozen=True, slots=True, kw_only=True)
class Respond:
    """Answer the client locally (after ``delay`` seconds, if set).

    The body is ``body``, or, for a streamed one (a static file, multipart ranges),
    the pieces of ``stream`` in order; ``Content-Length`` in ``headers`` covers them."""

    status: int
    headers: Headers
    body: bytes
    close: bool = False
    delay: float | None = None
    stream: tuple[bytes | FilePart, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Forward:
    """Proxy the request to ``upstream`` (a ``runtime.UpstreamRuntime``)."""

    upstream: Any


@dataclass(frozen=True, slots=True)
class Continue:
    """A plugin ran (or did not apply) and the request goes on."""


CONTINUE = Continue()
