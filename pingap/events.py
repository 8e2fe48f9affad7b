"""Events the codecs emit, whatever the protocol: what a client or a backend did.

Request events come from the downstream codecs (the HTTP/1 codecs, the h2 adapter);
response events from the upstream clients (``pingap.h1client``, ``workers.h2upstream``),
so the request path relays HTTP/1.1 and HTTP/2 responses the same way. Past tense,
slotted and keyword-only. Treat them as immutable (``dataclasses.replace`` makes a
changed copy); they are not ``frozen`` because a frozen dataclass sets each field through
``object.__setattr__``, which made building a request's events cost ~3x as much (several
are built per request).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar, cast

from pingap.headers import Headers


@dataclass(slots=True, kw_only=True)
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


@dataclass(slots=True, kw_only=True)
class BodyReceived:
    """A piece of the request body (already de-chunked)."""

    data: bytes


@dataclass(slots=True, kw_only=True)
class MessageEnded:
    """The request body is complete; ``trailers`` from a chunked body, if any."""

    trailers: Headers = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class ConnectionEnded:
    """The client closed its side; no further request will come."""


class NeedData:
    """Sentinel: the codec needs more bytes before it can emit an event."""

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = NeedData()

Event = RequestReceived | BodyReceived | MessageEnded | ConnectionEnded


@dataclass(slots=True, kw_only=True)
class ResponseStarted:
    """A backend's final response head (informational 1xx ones are not reported)."""

    status: int
    reason: bytes
    headers: Headers
    http_version: str


@dataclass(slots=True, kw_only=True)
class ResponseData:
    """A piece of the response body (already de-chunked)."""

    data: bytes


@dataclass(slots=True, kw_only=True)
class ResponseEnded:
    """The response is complete; ``keep_alive``: the connection may carry another."""

    trailers: Headers = field(default_factory=list)
    keep_alive: bool = True


ResponseEvent = ResponseStarted | ResponseData | ResponseEnded

_Taken = TypeVar("_Taken")


class JoinedPieces:
    """Body pieces a queue's consumer has not taken yet, held as one.

    A piece (``BodyReceived`` or ``ResponseData``) that arrives while the one before it
    is still queued is ``join``-ed to that one instead of queued itself: its bytes go into
    a buffer made when the second piece arrives, and the consumer ``take``-s the queued
    piece with all of them. So a peer's tiny HTTP/2 DATA frames cost their bytes while
    the other side is slow, not a queued record (~100 bytes) each. One per queue (the
    HTTP/2 streams to clients and to backends, ``workers.h2`` and ``workers.h2upstream``).
    """

    __slots__ = ("_buf", "_of")

    def __init__(self) -> None:
        self._of: BodyReceived | ResponseData | None = None  # the piece the bytes belong to
        self._buf = bytearray()

    def join(self, last: object, event: object) -> bool:
        """Join ``event`` to ``last``, the newest queued event, when both are body pieces
        of one kind; True if it was (then nothing is to be queued for it)."""
        if not isinstance(last, (BodyReceived, ResponseData)) or type(event) is not type(last):
            return False
        if self._of is not last:
            self._of = last
            self._buf = bytearray(last.data)
        self._buf += cast(BodyReceived | ResponseData, event).data
        return True

    def take(self, event: _Taken) -> _Taken:
        """``event`` as its consumer takes it: a piece with the bytes added to it."""
        if self._of is None or event is not self._of:
            return event
        data, self._of, self._buf = bytes(self._buf), None, bytearray()
        joined = (BodyReceived(data=data) if isinstance(event, BodyReceived)
                  else ResponseData(data=data))
        return cast(_Taken, joined)
