"""The ``memory://`` cache store: one per worker process, bounded by size.

Entries live in a ``cachetools.LRUCache`` weighed by their bytes, so the store never
holds more than ``max_size``; expired entries stay until evicted or replaced (a
stale entry is still useful for revalidation).
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import cachetools

from pingap.plugins.cache.policy import Entry
from pingap.units import parse_bytesize

#: the budget a bare-number ``max_size`` (a percentage) is taken of, per worker: pingap's
#: ``256mb`` fallback (its one process takes a quarter of the free memory, which N
#: workers each taking would multiply)
BUDGET = 256_000_000
#: pingap's upper bound of a memory cache
MAX_SIZE = 1024 * 1024 * 1024
#: how long a key whose response could not be stored skips the fill lock
UNCACHEABLE_TTL = 300.0
UNCACHEABLE_KEYS = 100_000


def _weight(entry: Entry) -> int:
    return len(entry.body) + sum(len(n) + len(v) for n, v in entry.headers) + 128


def memory_size(directory: str) -> int:
    """``max_size`` of a ``memory://name?max_size=...`` string: a bare number is a
    percentage of ``BUDGET`` (at most 100), a size with a unit is absolute; at most
    ``MAX_SIZE``, as pingap. A size that does not parse raises ``ValueError`` (pingap
    falls back to the default)."""
    query = parse_qs(urlsplit(directory).query)
    raw = (query.get("max_size") or [""])[-1].strip()
    if not raw:
        return BUDGET
    if raw.isdigit():
        return BUDGET * min(int(raw), 100) // 100
    return min(parse_bytesize(raw), MAX_SIZE)


class _Unbounded:
    """The write slot of a store whose writes are not capped."""

    def release(self) -> None:
        pass


_UNBOUNDED = _Unbounded()


class MemoryStore:
    """A per-worker ``CacheStore`` (see ``pingap.plugins.cache``)."""

    shared = False

    def __init__(self, max_size: int = BUDGET) -> None:
        self.entries: cachetools.LRUCache[str, Entry] = cachetools.LRUCache(
            maxsize=max_size, getsizeof=_weight)
        #: keys whose last response could not be stored, and until when that holds
        self.uncacheable: cachetools.TTLCache[str, bool] = cachetools.TTLCache(
            maxsize=UNCACHEABLE_KEYS, ttl=UNCACHEABLE_TTL)

    def get(self, key: str) -> Entry | None:
        return self.entries.get(key)

    def put(self, key: str, entry: Entry) -> None:
        self.uncacheable.pop(key, None)
        if _weight(entry) <= self.entries.maxsize:
            self.entries[key] = entry

    def write_slot(self) -> _Unbounded:
        return _UNBOUNDED

    def mark_uncacheable(self, key: str) -> None:
        self.uncacheable[key] = True

    def is_uncacheable(self, key: str) -> bool:
        return key in self.uncacheable

    def delete(self, key: str) -> bool:
        return self.entries.pop(key, None) is not None

    def purge_namespace(self, namespace: str) -> tuple[int, int] | None:
        return None  # entries are not grouped by namespace here (pingap: 501 too)
