"""HTTP cache decisions (RFC 9111), pure: what may be stored, for how long, and how a
stored entry answers a request.

An ``Entry`` is one stored response: status, head, body (bytes, or a slice of the open
file it is stored in), when it was stored, until when it is fresh, and the request
header values its ``Vary`` names. Time is wall
clock seconds (``time.time()``), as entries outlive processes in the file store.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import msgpack

from pingap import conditional
from pingap.actions import FilePart
from pingap.context import header_value
from pingap.headers import Headers

#: statuses stored (RFC 9111 §4.2.2's heuristically cacheable ones that make sense here)
CACHEABLE_STATUS = frozenset({200, 203, 204, 300, 301, 308, 404, 410})
#: pingap's freshness for a response without Cache-Control (check_cache_control off)
DEFAULT_TTL = 1.0
#: fields of a 304 that replace the stored ones (RFC 9111 §4.3.4 updates all but these)
_KEEP_ON_304 = frozenset({b"content-length", b"content-encoding", b"transfer-encoding",
                          b"content-range", b"content-type"})
_FORMAT = 1


@dataclass(frozen=True, slots=True)
class Entry:
    status: int
    headers: Headers
    body: bytes
    stored: float
    expires: float
    #: (lower-case field name, request value or b"") for each field the Vary names
    vary: tuple[tuple[bytes, bytes], ...] = ()
    #: the Age the response already had when it reached us
    initial_age: float = 0.0
    #: the body as a slice of its file (then ``body`` is empty); whoever got the entry
    #: from its store closes ``part.file`` once done with it
    part: FilePart | None = None

    @property
    def size(self) -> int:
        return self.part.length if self.part is not None else len(self.body)

    def fresh(self, now: float) -> bool:
        return now < self.expires

    def age(self, now: float) -> int:
        return max(int(now - self.stored + self.initial_age), 0)

    def validators(self) -> Headers:
        """The conditional headers that revalidate this entry upstream."""
        out: Headers = []
        etag = header_value(self.headers, b"etag")
        if etag:
            out.append((b"If-None-Match", etag))
        modified = header_value(self.headers, b"last-modified")
        if modified:
            out.append((b"If-Modified-Since", modified))
        return out

    def dumps(self) -> bytes:
        """Serialised for the file store: a msgpack head, then the body."""
        head = msgpack.packb([_FORMAT, self.status, [list(h) for h in self.headers],
                              self.stored, self.expires, [list(v) for v in self.vary],
                              self.initial_age, len(self.body)])
        return len(head).to_bytes(4, "big") + head + self.body

    @classmethod
    def loads(cls, data: bytes) -> Entry | None:
        """The entry, or None for anything but a complete entry of this format."""
        return cls._parse(data, len(data), data, None)

    @classmethod
    def in_file(cls, prefix: bytes, total: int, file: Any) -> Entry | None:
        """The entry stored in the open ``file`` of ``total`` bytes, whose first bytes
        are ``prefix`` (its head at least), with its body left in the file (``part``);
        None unless the file is whole and of this format (a torn file is never taken
        for an entry)."""
        return cls._parse(prefix, total, None, file)

    @staticmethod
    def head_size(prefix: bytes) -> int:
        """How many bytes from the start of a serialisation its head takes."""
        return 4 + int.from_bytes(prefix[:4], "big")

    @classmethod
    def _parse(cls, prefix: bytes, total: int, data: bytes | None, file: Any) -> Entry | None:
        try:
            offset = cls.head_size(prefix)
            if len(prefix) < offset:
                return None
            fmt, status, headers, stored, expires, vary, initial_age, length = \
                msgpack.unpackb(prefix[4:offset])
        except (ValueError, TypeError, msgpack.UnpackException):
            return None
        if fmt != _FORMAT or not isinstance(length, int) or offset + length != total:
            return None
        part = None if file is None else FilePart(file=file, offset=offset, length=length)
        return cls(status, [(bytes(n), bytes(v)) for n, v in headers],
                   data[offset:] if data is not None else b"", stored, expires,
                   tuple((bytes(n), bytes(v)) for n, v in vary), initial_age, part)


def _directives(value: bytes | None) -> dict[str, str]:
    out: dict[str, str] = {}
    if not value:
        return out
    for item in value.decode("latin-1").split(","):
        key, _, arg = item.strip().partition("=")
        if key:
            out[key.strip().lower()] = arg.strip().strip('"')
    return out


def _seconds(value: str | None) -> int | None:
    if value is None or not value.isdigit():
        return None
    return int(value)


def freshness(status: int, headers: Headers, *, check_cache_control: bool,
              max_ttl: float | None, now: float) -> float | None:
    """Seconds the response may be served from cache, or None if it must not be stored.

    Not stored: statuses outside ``CACHEABLE_STATUS``, ``Set-Cookie`` (someone's
    session), ``Vary: *``, ``Cache-Control`` no-store/no-cache/private or without a
    positive lifetime; without ``Cache-Control``, ``Expires`` decides, else pingap's
    1 s (or nothing with ``check_cache_control``). ``max_ttl`` caps the lifetime and
    the ``Age`` the response arrived with is taken off."""
    if status not in CACHEABLE_STATUS or header_value(headers, b"set-cookie") is not None:
        return None
    vary = header_value(headers, b"vary")
    if vary is not None and b"*" in vary:
        return None
    raw = header_value(headers, b"cache-control")
    cc = _directives(raw)
    if "no-store" in cc or "no-cache" in cc or "private" in cc:
        return None
    ttl: float | None
    if "s-maxage" in cc or "max-age" in cc:
        ttl = _seconds(cc.get("s-maxage")) if "s-maxage" in cc else _seconds(cc.get("max-age"))
        if ttl is None:
            return None
    elif raw is None and check_cache_control:
        return None
    else:
        expires = header_value(headers, b"expires")
        if expires is None and raw is not None:
            return None  # pingap: a Cache-Control without a lifetime is not stored
        if expires is not None:
            at = conditional.parse_http_date(expires.decode("latin-1"))
            date = conditional.parse_http_date(
                (header_value(headers, b"date") or b"").decode("latin-1")) or now
            ttl = (at - date) if at is not None else 0
        else:
            ttl = DEFAULT_TTL
    age = _seconds((header_value(headers, b"age") or b"").decode("latin-1").strip())
    if age:
        ttl -= age
    if max_ttl is not None:
        ttl = min(ttl, max_ttl)
    return ttl if ttl > 0 else None


def vary_values(response_headers: Headers,
                request_headers: Headers) -> tuple[tuple[bytes, bytes], ...]:
    vary = header_value(response_headers, b"vary")
    if not vary:
        return ()
    names = sorted({n.strip().lower() for n in vary.split(b",") if n.strip()})
    return tuple((n, header_value(request_headers, n) or b"") for n in names)


def vary_matches(entry: Entry, request_headers: Headers) -> bool:
    return all((header_value(request_headers, name) or b"") == value
               for name, value in entry.vary)


def make_entry(status: int, headers: Headers, body: bytes, request_headers: Headers,
               ttl: float, now: float) -> Entry:
    age = _seconds((header_value(headers, b"age") or b"").decode("latin-1").strip()) or 0
    kept = [(n, v) for n, v in headers if n.lower() != b"age"]
    return Entry(status, kept, body, now, now + ttl, vary_values(headers, request_headers),
                 float(age))


def refreshed(entry: Entry, not_modified: Headers, ttl: float, now: float) -> Entry:
    """``entry`` after the upstream answered 304 to its revalidation (RFC 9111 §4.3.4)."""
    updates = {n.lower(): (n, v) for n, v in not_modified
               if n.lower() not in _KEEP_ON_304 and n.lower() != b"age"}
    headers = [(n, v) for n, v in entry.headers if n.lower() not in updates]
    headers.extend(updates.values())
    return replace(entry, headers=headers, stored=now, expires=now + ttl, initial_age=0.0)


def answer(entry: Entry, request_headers: Headers, now: float,
           status_label: bytes) -> tuple[int, Headers, bytes]:
    """The response a stored entry gives a request: 304 when the client's own
    conditions match, else the entry; with ``Age`` and ``X-Cache-Status``."""
    headers = list(entry.headers)
    headers.append((b"Age", str(entry.age(now)).encode()))
    headers.append((b"X-Cache-Status", status_label))
    inm = header_value(request_headers, b"if-none-match")
    ims = header_value(request_headers, b"if-modified-since")
    if entry.status == 200 and (inm is not None or ims is not None):
        etag = header_value(entry.headers, b"etag")
        modified = header_value(entry.headers, b"last-modified")
        last = conditional.parse_http_date(modified.decode("latin-1")) if modified else None
        if conditional.not_modified(inm.decode("latin-1") if inm is not None else None,
                                    ims.decode("latin-1") if ims is not None else None,
                                    etag.decode("latin-1") if etag else None, last):
            return 304, [(n, v) for n, v in headers if n.lower() != b"content-length"], b""
    if header_value(headers, b"content-length") is None:
        headers.append((b"Content-Length", str(entry.size).encode()))
    return entry.status, headers, entry.body
