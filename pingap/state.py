"""Host-wide shared state in one shared-memory region: backend health, rate-limit
counters, in-flight counters and metric values. This module only lays out bytes.

The master creates the region (a memfd) before any worker starts and hands it to the
workers (and to a new master on upgrade). Writers that may race take a lock supplied by
the caller (``fcntl.lockf`` ranges in practice, injected so this module does no I/O):

* ``health``: written by the one prober of the host, read by every worker — no lock;
* ``counters``/``inflight``: read-modify-write under the ``counters`` lock;
* ``metrics``: every worker adds to its own column without a lock; new series names are
  registered under the ``registry`` lock; a dead worker's column is folded into the
  ``retired`` column (so totals survive worker exits) under the ``retire`` lock.

Layout (little-endian), offsets in bytes::

    0        header    magic "PGAPSTAT", version u32, registered series u32
    HEALTH   HEALTH_SLOTS x (key u64, healthy i32, pad u32)
    COUNTERS COUNTER_SLOTS x (key u64, last bucket i64, expires f64, RATE_BUCKETS + 1 x u32)
    INFLIGHT INFLIGHT_SLOTS x (key u64, owner i32, pad u32, count i64)
    REGISTRY SERIES x (kind u8, length u8, name bytes[SERIES_NAME])
    VALUES   (WORKER_COLUMNS + 1) x SERIES x f64   (last column: retired workers)
"""

from __future__ import annotations

import enum
import hashlib
import struct
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any

MAGIC = b"PGAPSTAT"
VERSION = 1
_HEADER = struct.Struct("<8sII")

HEALTH_SLOTS = 2048
_HEALTH = struct.Struct("<Qii")
COUNTER_SLOTS = 8192
RATE_BUCKETS = 10  # sub-windows per interval: the estimate is off by at most one of them
_COUNTER = struct.Struct(f"<Qqd{RATE_BUCKETS + 1}I")
INFLIGHT_SLOTS = 8192
_INFLIGHT = struct.Struct("<QiIq")
SERIES = 4096
SERIES_NAME = 254
_SERIES = struct.Struct(f"<BB{SERIES_NAME}s")
OVERFLOW = SERIES - 1  # the sink for series that do not fit
WORKER_COLUMNS = 256  # = pingap.scoreboard.SLOTS: a worker's scoreboard slot is its column

HEALTH_AT = 64
COUNTERS_AT = HEALTH_AT + HEALTH_SLOTS * _HEALTH.size
INFLIGHT_AT = COUNTERS_AT + COUNTER_SLOTS * _COUNTER.size
REGISTRY_AT = INFLIGHT_AT + INFLIGHT_SLOTS * _INFLIGHT.size
VALUES_AT = (REGISTRY_AT + SERIES * _SERIES.size + 7) // 8 * 8
SIZE = VALUES_AT + (WORKER_COLUMNS + 1) * SERIES * 8
RETIRED = WORKER_COLUMNS

Lock = Callable[[str], AbstractContextManager[object]]


class SeriesKind(enum.IntEnum):
    COUNTER = 1
    GAUGE = 2  # per-worker values; a dead worker's gauge is dropped, not retired


class StateFull(Exception):
    """A table of the shared region has no free slot."""


def key_hash(text: str) -> int:
    """Stable 64-bit key (never 0) shared by every process of the host."""
    value = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
    return value or 1


def _window(record: tuple[Any, ...], key: int, now: float, interval: float
            ) -> tuple[list[int], int, float]:
    """A rate record's bucket counts as of ``now`` (stale buckets zeroed), the bucket
    ``now`` counts in, and the sliding-window estimate: ``RATE_BUCKETS`` sub-windows, the
    oldest weighted by how much of it is still inside the window."""
    ring = RATE_BUCKETS + 1
    width = interval / RATE_BUCKETS
    bucket = int(now // width)
    fraction = (now - bucket * width) / width
    counts = list(record[3:])
    last = record[1]
    if bucket < last and record[0] == key and last - bucket <= RATE_BUCKETS:
        # a worker read the clock a moment before another but took the lock after it:
        # count it in the newest bucket instead of rewinding the window
        bucket, fraction = last, 0.0
    if record[0] != key or bucket - last > RATE_BUCKETS or bucket < last:
        counts = [0] * ring  # new key, idle for a whole window, or clock stepped
    else:
        for stale in range(last + 1, bucket + 1):
            counts[stale % ring] = 0
    estimate = sum(counts[(bucket - i) % ring] for i in range(RATE_BUCKETS))
    estimate += counts[(bucket - RATE_BUCKETS) % ring] * (1.0 - fraction)
    return counts, bucket, estimate


def _no_lock(name: str) -> AbstractContextManager[object]:
    return nullcontext()


class SharedState:
    """Typed access to the shared region (any writable buffer of ``SIZE`` bytes)."""

    def __init__(self, buffer: memoryview | bytearray, lock: Lock = _no_lock) -> None:
        self.buf = memoryview(buffer)
        if len(self.buf) < SIZE:
            raise ValueError(f"shared state buffer too small ({len(self.buf)} < {SIZE})")
        self.lock = lock
        self.values = self.buf[VALUES_AT:SIZE].cast("d")
        self._series: dict[str, int] = {}
        self.overflowed = False
        self._health_keys: dict[tuple[str, str], int] = {}
        self._health_slots: dict[tuple[str, str], int] = {}

    def initialise(self) -> None:
        """Stamp a fresh (zeroed) region; done once by the master that creates it."""
        _HEADER.pack_into(self.buf, 0, MAGIC, VERSION, 0)

    def check(self) -> None:
        magic, version, _ = _HEADER.unpack_from(self.buf, 0)
        if magic != MAGIC or version != VERSION:
            raise ValueError("shared state region has an unknown layout")

    # --- health -------------------------------------------------------------------------

    def _health_slot(self, key: int, create: bool) -> int | None:
        start = key % HEALTH_SLOTS
        for i in range(HEALTH_SLOTS):
            slot = (start + i) % HEALTH_SLOTS
            found, _, _ = _HEALTH.unpack_from(self.buf, HEALTH_AT + slot * _HEALTH.size)
            if found == key:
                return slot
            if found == 0:
                return slot if create else None
        if create:
            raise StateFull("health table is full")
        return None

    def set_health(self, upstream: str, addr: str, healthy: bool) -> None:
        key = key_hash(f"{upstream}|{addr}")
        slot = self._health_slot(key, True)
        assert slot is not None
        offset = HEALTH_AT + slot * _HEALTH.size
        struct.pack_into("<i", self.buf, offset + 8, 1 if healthy else 2)
        struct.pack_into("<Q", self.buf, offset, key)  # key last: readers never see half

    def health(self, upstream: str, addr: str) -> bool | None:
        """True/False once probed; None when no probe result exists yet."""
        pair = (upstream, addr)
        slot = self._health_slots.get(pair)
        if slot is None:
            key = self._health_keys.get(pair)
            if key is None:
                key = self._health_keys[pair] = key_hash(f"{upstream}|{addr}")
            slot = self._health_slot(key, False)
            if slot is None:
                return None
            # a health slot, once taken, holds its key for the region's lifetime
            self._health_slots[pair] = slot
        _, state, _ = _HEALTH.unpack_from(self.buf, HEALTH_AT + slot * _HEALTH.size)
        return None if state == 0 else state == 1

    # --- rate counters --------------------------------------------------------------------

    def _probe(self, at: int, slots: int, fmt: struct.Struct, key: int,
               match: Callable[[tuple[Any, ...]], bool],
               reusable: Callable[[tuple[Any, ...]], bool]) -> int:
        """Open addressing with reuse: the slot holding ``key`` if there is one, else the
        first reusable slot on its probe path (a record nobody needs any more), else the
        never-used slot that ends the path."""
        start = key % slots
        candidate = -1
        for i in range(slots):
            slot = (start + i) % slots
            record = fmt.unpack_from(self.buf, at + slot * fmt.size)
            if match(record):
                return slot
            if record[0] == 0:
                return candidate if candidate >= 0 else slot
            if candidate < 0 and reusable(record):
                candidate = slot
        if candidate >= 0:
            return candidate
        raise StateFull("shared counter table is full")

    def rate_acquire(self, name: str, now: float, interval: float,
                     limit: float) -> tuple[bool, float]:
        """Sliding-window rate limit: admit if fewer than ``limit`` requests were admitted
        in the last ``interval`` seconds. The window is kept as ``RATE_BUCKETS`` buckets
        (a ring of one more), the oldest weighted by how much of it is still inside.
        Returns (admitted, estimate before this one)."""
        key = key_hash(name)
        with self.lock("counters"):
            slot = self._probe(COUNTERS_AT, COUNTER_SLOTS, _COUNTER, key,
                               lambda r: r[0] == key, lambda r: r[2] < now)
            offset = COUNTERS_AT + slot * _COUNTER.size
            counts, bucket, estimate = _window(_COUNTER.unpack_from(self.buf, offset), key,
                                               now, interval)
            admitted = estimate < limit
            if admitted:
                counts[bucket % (RATE_BUCKETS + 1)] += 1
            # reusable by another key once nothing counted here is inside any window
            _COUNTER.pack_into(self.buf, offset, key, bucket, now + 2 * interval, *counts)
        return admitted, estimate

    def rate_count(self, name: str, now: float, interval: float) -> float:
        """What ``rate_acquire`` would estimate for ``name`` now, counting nothing."""
        key = key_hash(name)
        start = key % COUNTER_SLOTS
        with self.lock("counters"):
            for i in range(COUNTER_SLOTS):
                record = _COUNTER.unpack_from(
                    self.buf, COUNTERS_AT + (start + i) % COUNTER_SLOTS * _COUNTER.size)
                if record[0] == key:
                    return _window(record, key, now, interval)[2]
                if record[0] == 0:
                    break  # a key sits before the first never-used slot of its path
        return 0.0

    # --- in-flight counters -----------------------------------------------------------------

    def inflight_acquire(self, name: str, owner: int, limit: int) -> tuple[bool, int]:
        """Count one more request of ``name`` in flight for worker ``owner`` if the host
        total stays within ``limit``. Returns (admitted, total before this one)."""
        key = key_hash(name)
        with self.lock("counters"):
            total = 0
            mine = -1
            for slot, record in self._inflight_records(key):
                total += record[3]
                if record[1] == owner:
                    mine = slot
            if total >= limit:
                return False, total
            if mine < 0:
                mine = self._probe(INFLIGHT_AT, INFLIGHT_SLOTS, _INFLIGHT, key,
                                   lambda r: r[0] == key and r[1] == owner,
                                   lambda r: r[3] == 0)
                count = 0
            else:
                count = _INFLIGHT.unpack_from(self.buf, INFLIGHT_AT + mine * _INFLIGHT.size)[3]
            _INFLIGHT.pack_into(self.buf, INFLIGHT_AT + mine * _INFLIGHT.size, key, owner, 0,
                                count + 1)
        return True, total

    def inflight_release(self, name: str, owner: int) -> None:
        key = key_hash(name)
        with self.lock("counters"):
            for slot, record in self._inflight_records(key):
                if record[1] == owner and record[3] > 0:
                    _INFLIGHT.pack_into(self.buf, INFLIGHT_AT + slot * _INFLIGHT.size, key,
                                        owner, 0, record[3] - 1)
                    return

    def inflight_reset(self, name: str, owner: int) -> None:
        """Worker ``owner`` holds nothing of ``name`` (a new holder of the slot says so,
        voiding what a dead predecessor may have left if the master did not)."""
        key = key_hash(name)
        with self.lock("counters"):
            for slot, record in self._inflight_records(key):
                if record[1] == owner and record[3]:
                    _INFLIGHT.pack_into(self.buf, INFLIGHT_AT + slot * _INFLIGHT.size, key,
                                        owner, 0, 0)

    def _inflight_records(self, key: int) -> Iterator[tuple[int, tuple[int, int, int, int]]]:
        start = key % INFLIGHT_SLOTS
        for i in range(INFLIGHT_SLOTS):
            slot = (start + i) % INFLIGHT_SLOTS
            record = _INFLIGHT.unpack_from(self.buf, INFLIGHT_AT + slot * _INFLIGHT.size)
            if record[0] == 0:
                return
            if record[0] == key:
                yield slot, record

    def drop_owner(self, owner: int) -> None:
        """A worker is gone: its in-flight counts no longer hold anything."""
        with self.lock("counters"):
            for slot in range(INFLIGHT_SLOTS):
                offset = INFLIGHT_AT + slot * _INFLIGHT.size
                key, found_owner, _, count = _INFLIGHT.unpack_from(self.buf, offset)
                if key and found_owner == owner and count:
                    _INFLIGHT.pack_into(self.buf, offset, key, owner, 0, 0)

    # --- metrics ----------------------------------------------------------------------------

    def series_count(self) -> int:
        return int(_HEADER.unpack_from(self.buf, 0)[2])

    def series_index(self, name: str, kind: SeriesKind = SeriesKind.COUNTER) -> int:
        """Index of a metric series (``name{labels}``), registering it on first use.

        Never raises: when the registry is full or the name too long, the series goes to
        ``OVERFLOW`` (counted nowhere, never rendered) and ``overflowed`` is set."""
        index = self._series.get(name)
        if index is not None:
            return index
        encoded = name.encode()
        if len(encoded) > SERIES_NAME:
            self.overflowed = True
            return OVERFLOW
        with self.lock("registry"):
            count = self.series_count()
            for i in range(count):
                _, length, raw = _SERIES.unpack_from(self.buf, REGISTRY_AT + i * _SERIES.size)
                self._series[raw[:length].decode()] = i
            index = self._series.get(name)
            if index is None:
                if count >= OVERFLOW:
                    self.overflowed = True
                    return OVERFLOW
                _SERIES.pack_into(self.buf, REGISTRY_AT + count * _SERIES.size, int(kind),
                                  len(encoded), encoded)
                _HEADER.pack_into(self.buf, 0, MAGIC, VERSION, count + 1)
                index = self._series[name] = count
        return index

    def series(self) -> Iterator[tuple[int, str, SeriesKind]]:
        for i in range(min(self.series_count(), OVERFLOW)):
            kind, length, raw = _SERIES.unpack_from(self.buf, REGISTRY_AT + i * _SERIES.size)
            yield i, raw[:length].decode(), SeriesKind(kind)

    def add(self, column: int, index: int, amount: float = 1.0) -> None:
        self.values[column * SERIES + index] += amount

    def set(self, column: int, index: int, value: float) -> None:
        self.values[column * SERIES + index] = value

    def totals(self, columns: list[int]) -> dict[int, float]:
        """Series index -> value summed over ``columns`` (counters also over RETIRED)."""
        values = self.values
        out: dict[int, float] = {}
        for index, _, kind in self.series():
            total = 0.0
            for column in columns:
                total += values[column * SERIES + index]
            if kind is SeriesKind.COUNTER:
                total += values[RETIRED * SERIES + index]
            out[index] = total
        return out

    def retire(self, column: int) -> None:
        """Fold a dead worker's counters into the retired column and clear its column."""
        values = self.values
        with self.lock("retire"):
            for index, _, kind in self.series():
                value = values[column * SERIES + index]
                if value and kind is SeriesKind.COUNTER:
                    values[RETIRED * SERIES + index] += value
                values[column * SERIES + index] = 0.0


class ShmCounters:
    """``CounterStore`` over the shared region: host-wide, never unreachable."""

    def __init__(self, state: SharedState, owner: int, clock: Callable[[], float]) -> None:
        self.state = state
        self.owner = owner
        self.clock = clock

    def rate_acquire(self, name: str, interval: float, limit: float) -> bool:
        return self.state.rate_acquire(name, self.clock(), interval, limit)[0]

    def rate_count(self, name: str, interval: float) -> float:
        return self.state.rate_count(name, self.clock(), interval)

    def inflight_acquire(self, name: str, limit: int) -> bool:
        return self.state.inflight_acquire(name, self.owner, limit)[0]

    def inflight_release(self, name: str) -> None:
        self.state.inflight_release(name, self.owner)
