"""Conditional and range requests (RFC 9110 §13, §14): pure checks on header values.

Used by the static-file server and the HTTP cache alike: whether a request's
``If-None-Match`` / ``If-Modified-Since`` make the answer a 304, whether ``If-Range``
lets a ``Range`` apply, and the parsed byte ranges of a representation.
"""

from __future__ import annotations

import email.utils
import functools
from collections.abc import Sequence

#: more ranges than this in one request are not honoured (the whole body is sent
#: instead, as RFC 9110 §14.2 allows): many small ranges cost far more than they save
MAX_RANGES = 32


class Unsatisfiable(Exception):
    """No requested range overlaps the representation: 416."""


def http_date(timestamp: float) -> str:
    return _http_date(int(timestamp))


@functools.lru_cache(maxsize=1024)
def _http_date(seconds: int) -> str:
    """The IMF-fixdate of whole seconds; cached, as the same few modification times
    (a site's files) are formatted again on every request."""
    return email.utils.formatdate(seconds, usegmt=True)


def parse_http_date(value: str | None) -> float | None:
    """Seconds since the epoch of an HTTP-date, or None if it is not one."""
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.timestamp()


def _opaque(tag: str) -> str:
    tag = tag.strip()
    return tag[2:] if tag.startswith("W/") else tag


def etag_matches(condition: str, etag: str | None) -> bool:
    """``If-None-Match`` semantics: weak comparison, ``*`` matches any current ETag."""
    if etag is None:
        return False
    if condition.strip() == "*":
        return True
    want = _opaque(etag)
    return any(_opaque(tag) == want for tag in condition.split(","))


def not_modified(if_none_match: str | None, if_modified_since: str | None,
                 etag: str | None, last_modified: float | None) -> bool:
    """True when a GET/HEAD may be answered 304 (If-None-Match wins when present)."""
    if if_none_match is not None:
        return etag_matches(if_none_match, etag)
    since = parse_http_date(if_modified_since)
    if since is None or last_modified is None:
        return False
    return int(last_modified) <= since


def if_range_allows(if_range: str | None, etag: str | None,
                    last_modified: float | None) -> bool:
    """Whether ``Range`` applies: no ``If-Range``, or one that still names this
    representation (strong comparison for an ETag; an exact date otherwise)."""
    if if_range is None:
        return True
    value = if_range.strip()
    if value.startswith('"') or value.startswith("W/"):
        return bool(etag) and not value.startswith("W/") and etag is not None \
            and not etag.startswith("W/") and value == etag
    date = parse_http_date(value)
    return date is not None and last_modified is not None and int(last_modified) == date


def parse_ranges(value: str, size: int) -> list[tuple[int, int]] | None:
    """Inclusive (first, last) byte ranges of ``Range`` for a body of ``size`` bytes.

    None: the header is to be ignored (not bytes, malformed, too many ranges) and the
    whole body sent. Raises ``Unsatisfiable`` when no range overlaps the body.
    Overlapping or adjacent ranges are merged (RFC 9110 §14.2)."""
    unit, sep, spec = value.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    items = [item.strip() for item in spec.split(",") if item.strip()]
    if not items or len(items) > MAX_RANGES:
        return None
    ranges: list[tuple[int, int]] = []
    for item in items:
        first_s, dash, last_s = item.partition("-")
        first_s, last_s = first_s.strip(), last_s.strip()
        if not dash or (first_s and not first_s.isdigit()) or (last_s and not last_s.isdigit()):
            return None
        if not first_s:
            if not last_s:
                return None
            suffix = int(last_s)
            if suffix == 0:
                continue
            ranges.append((max(size - suffix, 0), size - 1))
            continue
        first = int(first_s)
        last = int(last_s) if last_s else first
        if last < first:
            return None
        if first >= size:
            continue
        ranges.append((first, min(last, size - 1) if last_s else size - 1))
    if not ranges or size == 0:
        raise Unsatisfiable()
    return merge_ranges(ranges)


def merge_ranges(ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged
