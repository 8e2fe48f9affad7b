"""What the session (or a plugin) tells the connection loop to do next.

Imperative names, frozen and keyword-only: ``Respond`` locally, ``Forward`` upstream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Respond:
    """Answer the client locally (after ``delay`` seconds, if set)."""

    status: int
    headers: Headers
    body: bytes
    close: bool = False
    delay: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Forward:
    """Proxy the request to ``upstream`` (a ``runtime.UpstreamRuntime``)."""

    upstream: Any


@dataclass(frozen=True, slots=True)
class Continue:
    """A plugin ran (or did not apply) and the request goes on."""


CONTINUE = Continue()
