"""Events a downstream codec emits, whatever the protocol (HTTP/1 codecs, the h2 adapter).

Past tense, frozen, slotted and keyword-only: they say what the client did.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestReceived:
    """A complete, validated request head. ``headers`` keep their original name case."""

    method: bytes
    target: bytes
    headers: Headers
    http_version: bytes
    keep_alive: bool
    expect_continue: bool
    content_length: int | None
    chunked: bool
    host: bytes = b""
    path: bytes = b"/"
    query: bytes = b""

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)


@dataclass(frozen=True, slots=True, kw_only=True)
class BodyReceived:
    """A piece of the request body (already de-chunked)."""

    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageEnded:
    """The request body is complete; ``trailers`` from a chunked body, if any."""

    trailers: Headers = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionEnded:
    """The client closed its side; no further request will come."""


class NeedData:
    """Sentinel: the codec needs more bytes before it can emit an event."""

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = NeedData()

Event = RequestReceived | BodyReceived | MessageEnded | ConnectionEnded
