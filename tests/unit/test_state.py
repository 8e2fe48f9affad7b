"""Tests for pingap.state: the host-wide shared region (health, rate and in-flight
counters, metric series and values), driven over a plain bytearray — no shared memory."""

from __future__ import annotations

import bisect
import math
from contextlib import contextmanager
from typing import Any

import pytest

from pingap.state import (
    RATE_BUCKETS,
    RETIRED,
    SERIES,
    SERIES_NAME,
    SIZE,
    WORKER_COLUMNS,
    SeriesKind,
    SharedState,
    ShmCounters,
    key_hash,
)


def new_state(lock: Any = None) -> SharedState:
    state = SharedState(bytearray(SIZE)) if lock is None else SharedState(bytearray(SIZE), lock)
    state.initialise()
    return state


@pytest.fixture
def state() -> SharedState:
    return new_state()


# --- region ------------------------------------------------------------------------------


def test_buffer_too_small_is_refused() -> None:
    with pytest.raises(ValueError):
        SharedState(bytearray(SIZE - 1))


def test_larger_buffer_is_accepted() -> None:
    state = SharedState(bytearray(SIZE + 4096))
    state.initialise()
    state.check()


def test_check_refuses_an_unstamped_region_and_accepts_a_stamped_one() -> None:
    buf = bytearray(SIZE)
    with pytest.raises(ValueError):
        SharedState(buf).check()
    SharedState(buf).initialise()
    SharedState(buf).check()  # another view (another process) sees the stamp


def test_check_refuses_a_corrupted_magic() -> None:
    buf = bytearray(SIZE)
    SharedState(buf).initialise()
    buf[0:8] = b"NOTPGAP!"
    with pytest.raises(ValueError):
        SharedState(buf).check()


@pytest.mark.parametrize("text", ["", "a", "upstream|10.0.0.1:80", "x" * 1000, "é"])
def test_key_hash_is_stable_and_never_zero(text: str) -> None:
    assert key_hash(text) == key_hash(text)
    assert key_hash(text) != 0
    assert 0 < key_hash(text) < 2**64


def test_key_hash_differs_between_texts() -> None:
    keys = {key_hash(f"k{i}") for i in range(1000)}
    assert len(keys) == 1000


def test_lock_is_taken_by_name() -> None:
    taken: list[str] = []

    @contextmanager
    def lock(name: str) -> Any:
        taken.append(name)
        yield

    state = new_state(lock)
    state.rate_acquire("r", 0.0, 1.0, 10)
    state.inflight_acquire("i", 1, 10)
    state.inflight_release("i", 1)
    state.series_index("s")
    state.retire(0)
    state.drop_owner(1)
    assert set(taken) >= {"counters", "registry", "retire"}


# --- health ------------------------------------------------------------------------------


def test_health_unknown_is_none(state: SharedState) -> None:
    assert state.health("up", "10.0.0.1:80") is None


@pytest.mark.parametrize("healthy", [True, False])
def test_health_set_then_get(state: SharedState, healthy: bool) -> None:
    state.set_health("up", "10.0.0.1:80", healthy)
    assert state.health("up", "10.0.0.1:80") is healthy
    # neighbours stay unknown
    assert state.health("up", "10.0.0.2:80") is None
    assert state.health("other", "10.0.0.1:80") is None


def test_health_flips(state: SharedState) -> None:
    for value in (True, False, True, False):
        state.set_health("up", "a:1", value)
        assert state.health("up", "a:1") is value


def test_health_is_seen_by_another_view_of_the_same_region() -> None:
    buf = bytearray(SIZE)
    prober, reader = SharedState(buf), SharedState(buf)
    prober.initialise()
    assert reader.health("up", "a:1") is None  # asked before the first probe
    prober.set_health("up", "a:1", False)
    assert reader.health("up", "a:1") is False
    prober.set_health("up", "a:1", True)
    assert reader.health("up", "a:1") is True


def test_health_many_backends(state: SharedState) -> None:
    for i in range(500):
        state.set_health(f"up{i % 7}", f"10.0.{i // 256}.{i % 256}:80", i % 3 == 0)
    for i in range(500):
        assert state.health(f"up{i % 7}", f"10.0.{i // 256}.{i % 256}:80") is (i % 3 == 0)


# --- rate counters -----------------------------------------------------------------------

PHASES = [0.0, 0.0137, 0.05, 0.099, 0.5, 0.73, 1234.567]


@pytest.mark.parametrize("phase", PHASES)
def test_rate_limit_accuracy_300_per_second_for_10_seconds(state: SharedState,
                                                           phase: float) -> None:
    admitted = [phase + i / 300 for i in range(3000)
                if state.rate_acquire("k", phase + i / 300, 1.0, 100)[0]]
    assert 990 <= len(admitted) <= 1015
    # no 1-second window holds more than the limit plus one sub-window's worth
    worst = max(bisect.bisect_right(admitted, t) - bisect.bisect_right(admitted, t - 1.0)
                for t in admitted)
    assert worst <= 100 + 100 // RATE_BUCKETS


def test_rate_limit_first_burst_admits_exactly_the_limit(state: SharedState) -> None:
    results = [state.rate_acquire("k", 5.0, 1.0, 100) for _ in range(150)]
    assert [ok for ok, _ in results] == [True] * 100 + [False] * 50
    # the estimate returned is the count before this request
    assert [est for _, est in results[:100]] == [float(i) for i in range(100)]
    assert all(est == 100 for _, est in results[100:])


def test_rate_limit_keys_are_independent(state: SharedState) -> None:
    for _ in range(10):
        assert state.rate_acquire("a", 1.0, 1.0, 10)[0]
    assert not state.rate_acquire("a", 1.0, 1.0, 10)[0]
    assert state.rate_acquire("b", 1.0, 1.0, 10)[0]


def test_rate_limit_is_shared_between_views_of_the_region() -> None:
    buf = bytearray(SIZE)
    one, two = SharedState(buf), SharedState(buf)
    one.initialise()
    for i in range(10):
        assert (one if i % 2 else two).rate_acquire("k", 3.0, 1.0, 10)[0]
    assert not one.rate_acquire("k", 3.0, 1.0, 10)[0]
    assert not two.rate_acquire("k", 3.0, 1.0, 10)[0]


# idle gaps, all longer than the interval by at least one sub-window (the documented
# error of the estimate: "off by at most one of them")
@pytest.mark.parametrize("idle", [1.0 + 1.0 / RATE_BUCKETS + 0.001, 1.25, 1.5, 2.0, 10.0,
                                  3600.0, 1e6])
@pytest.mark.parametrize("phase", [0.0, 0.03, 0.5, 0.97])
def test_rate_limit_budget_is_full_again_after_idle(state: SharedState, idle: float,
                                                    phase: float) -> None:
    # steady traffic for 2 s, then a burst at the end: the budget is used up
    t = phase
    for i in range(600):
        t = phase + i / 300
        state.rate_acquire("k", t, 1.0, 100)
    while state.rate_acquire("k", t, 1.0, 100)[0]:
        pass
    later = t + idle
    results = [state.rate_acquire("k", later, 1.0, 100)[0] for _ in range(101)]
    assert results == [True] * 100 + [False]


def test_rate_limit_recovers_gradually_as_the_window_slides(state: SharedState) -> None:
    for _ in range(100):
        assert state.rate_acquire("k", 0.05, 1.0, 100)[0]
    assert not state.rate_acquire("k", 0.5, 1.0, 100)[0]
    assert not state.rate_acquire("k", 0.99, 1.0, 100)[0]
    # long after: a full budget
    assert state.rate_acquire("k", 2.5, 1.0, 100)[0]


@pytest.mark.parametrize("interval, limit", [(0.1, 5), (1.0, 1), (60.0, 1000), (10.0, 0.5)])
def test_rate_limit_other_intervals(state: SharedState, interval: float, limit: float) -> None:
    admitted = sum(state.rate_acquire("k", 100.0, interval, limit)[0] for _ in range(2000))
    assert admitted == math.ceil(limit)  # admitted while the estimate is below the limit


@pytest.mark.parametrize("times", [
    [100.0, 50.0],                 # a big step back
    [100.0, 99.95],                # one sub-window back
    [100.0, 100.0 - 1e-9],         # within the same instant
    [100.0, -5.0],                 # before zero
    [100.0, 0.0, 100.0, 200.0],    # back and forth
])
def test_rate_limit_time_going_backwards_does_not_crash(state: SharedState,
                                                        times: list[float]) -> None:
    for _ in range(20):
        state.rate_acquire("k", times[0], 1.0, 10)
    for now in times[1:]:
        for _ in range(20):
            admitted, estimate = state.rate_acquire("k", now, 1.0, 10)
            assert isinstance(admitted, bool)
            assert estimate >= 0 or estimate == pytest.approx(0, abs=1e-6)
    # and it keeps limiting afterwards
    results = [state.rate_acquire("k", 1000.0, 1.0, 10)[0] for _ in range(11)]
    assert results == [True] * 10 + [False]


def test_rate_limit_slightly_out_of_order_timestamp_does_not_reset_the_window(
        state: SharedState) -> None:
    for i in range(100):
        assert state.rate_acquire("k", 0.90 + i * 0.001, 1.0, 100)[0]
    assert not state.rate_acquire("k", 1.001, 1.0, 100)[0]
    # another worker read its clock 2 ms earlier but got the lock later
    assert not state.rate_acquire("k", 0.999, 1.0, 100)[0]


@pytest.mark.parametrize("phase", [0.0, 0.05, 0.73])
def test_rate_limit_accuracy_with_two_workers_racing(state: SharedState, phase: float) -> None:
    times = [phase + i / 300 for i in range(3000)]
    for i in range(0, 3000, 2):  # each pair reaches the lock in the other order
        times[i], times[i + 1] = times[i + 1], times[i]
    admitted = sum(state.rate_acquire("k", t, 1.0, 100)[0] for t in times)
    assert 990 <= admitted <= 1015


def test_rate_limit_many_keys_over_time(state: SharedState) -> None:
    """20,000 distinct keys, each used once, time advancing 2 s every 1,000 keys: more
    keys than the table holds, but old ones are long idle, so their slots are reused."""
    for i in range(20_000):
        now = (i // 1000) * 2.0
        admitted, estimate = state.rate_acquire(f"limit|ip|10.{i >> 16}.{(i >> 8) & 255}."
                                                f"{i & 255}", now, 1.0, 10)
        assert admitted, i
        assert estimate == 0, i


def test_rate_limit_many_keys_keep_limiting(state: SharedState) -> None:
    """After slot churn, a live key still has its own count."""
    for _ in range(3):
        state.rate_acquire("hot", 100.0, 1.0, 3)
    for i in range(12_000):
        state.rate_acquire(f"cold{i}", (i // 1000) * 2.0, 1.0, 3)
    assert not state.rate_acquire("hot", 100.0, 1.0, 3)[0]
    assert state.rate_acquire("hot", 102.0, 1.0, 3)[0]


# --- in-flight counters ------------------------------------------------------------------


def test_inflight_acquire_release_one_owner(state: SharedState) -> None:
    assert state.inflight_acquire("k", 1, 2) == (True, 0)
    assert state.inflight_acquire("k", 1, 2) == (True, 1)
    assert state.inflight_acquire("k", 1, 2) == (False, 2)
    state.inflight_release("k", 1)
    assert state.inflight_acquire("k", 1, 2) == (True, 1)


def test_inflight_host_total_is_capped_across_owners(state: SharedState) -> None:
    assert state.inflight_acquire("k", 1, 3)[0]
    assert state.inflight_acquire("k", 2, 3)[0]
    assert state.inflight_acquire("k", 3, 3) == (True, 2)
    for owner in (1, 2, 3, 4):
        assert state.inflight_acquire("k", owner, 3) == (False, 3)
    state.inflight_release("k", 2)
    assert state.inflight_acquire("k", 4, 3) == (True, 2)


def test_inflight_release_only_touches_own_owner(state: SharedState) -> None:
    state.inflight_acquire("k", 1, 10)
    state.inflight_release("k", 2)  # owner 2 holds nothing: no-op
    assert state.inflight_acquire("k", 3, 10) == (True, 1)


def test_inflight_release_never_goes_negative(state: SharedState) -> None:
    state.inflight_release("k", 1)
    state.inflight_acquire("k", 1, 5)
    state.inflight_release("k", 1)
    state.inflight_release("k", 1)
    state.inflight_release("k", 1)
    assert state.inflight_acquire("k", 1, 5) == (True, 0)


def test_inflight_keys_are_independent(state: SharedState) -> None:
    assert state.inflight_acquire("a", 1, 1)[0]
    assert not state.inflight_acquire("a", 1, 1)[0]
    assert state.inflight_acquire("b", 1, 1)[0]


def test_inflight_drop_owner(state: SharedState) -> None:
    for _ in range(3):
        state.inflight_acquire("a", 7, 10)
        state.inflight_acquire("b", 7, 10)
    state.inflight_acquire("a", 8, 10)
    state.drop_owner(7)
    assert state.inflight_acquire("a", 9, 10) == (True, 1)  # only owner 8's remains
    assert state.inflight_acquire("b", 9, 10) == (True, 0)
    # the dropped owner's releases are harmless, its slot works again
    state.inflight_release("a", 7)
    assert state.inflight_acquire("a", 7, 10) == (True, 2)


def test_inflight_reset_voids_one_owners_count_of_one_name(state: SharedState) -> None:
    for _ in range(3):
        state.inflight_acquire("a", 7, 10)
        state.inflight_acquire("b", 7, 10)
    state.inflight_acquire("a", 8, 10)
    state.inflight_reset("a", 7)
    assert state.inflight_acquire("a", 9, 10) == (True, 1)  # owner 8's stays
    assert state.inflight_acquire("b", 9, 10) == (True, 3)  # another name's stays
    state.inflight_reset("c", 7)  # nothing counted: nothing to do
    assert state.inflight_acquire("c", 7, 1) == (True, 0)


def test_inflight_is_shared_between_views() -> None:
    buf = bytearray(SIZE)
    one, two = SharedState(buf), SharedState(buf)
    one.initialise()
    assert one.inflight_acquire("k", 1, 2)[0]
    assert two.inflight_acquire("k", 2, 2)[0]
    assert not one.inflight_acquire("k", 1, 2)[0]
    two.inflight_release("k", 2)
    assert one.inflight_acquire("k", 1, 2) == (True, 1)


def test_inflight_many_keys_over_time(state: SharedState) -> None:
    """More distinct keys than the table has slots, each released before the next:
    released slots are reused, nothing raises."""
    for i in range(20_000):
        name = f"limit|inflight|{i}"
        assert state.inflight_acquire(name, i % 4, 1) == (True, 0), i
        state.inflight_release(name, i % 4)
    assert state.inflight_acquire("limit|inflight|0", 0, 1) == (True, 0)


# --- metric series and values ------------------------------------------------------------


def test_series_registry_is_idempotent(state: SharedState) -> None:
    a = state.series_index('x_total{a="1"}')
    b = state.series_index('x_total{a="2"}', SeriesKind.GAUGE)
    assert a != b
    assert state.series_index('x_total{a="1"}') == a
    assert state.series_index('x_total{a="2"}', SeriesKind.GAUGE) == b
    assert state.series_count() == 2
    assert list(state.series()) == [(a, 'x_total{a="1"}', SeriesKind.COUNTER),
                                    (b, 'x_total{a="2"}', SeriesKind.GAUGE)]


def test_series_registry_is_shared_between_views() -> None:
    buf = bytearray(SIZE)
    one, two = SharedState(buf), SharedState(buf)
    one.initialise()
    a = one.series_index("a")
    b = one.series_index("b")
    assert two.series_index("b") == b
    c = two.series_index("c")
    assert one.series_index("c") == c  # learnt from the region, not registered twice
    assert one.series_index("a") == a
    assert one.series_count() == two.series_count() == 3
    assert len({a, b, c}) == 3


def test_series_name_at_the_length_limit(state: SharedState) -> None:
    name = "n" * SERIES_NAME
    index = state.series_index(name)
    assert [n for _, n, _ in state.series()] == [name]
    assert state.series_index(name) == index


def test_series_name_unicode_round_trips(state: SharedState) -> None:
    name = 'x{location="/é/ü"}'
    index = state.series_index(name)
    assert list(state.series()) == [(index, name, SeriesKind.COUNTER)]


def test_series_name_too_long_never_raises(state: SharedState) -> None:
    """Series are registered on the request path: a too-long name must not raise."""
    kept = state.series_index("kept")
    state.add(0, kept, 2)
    index = state.series_index("x" * (SERIES_NAME + 1))
    assert 0 <= index < SERIES
    state.add(0, index, 5)  # the caller adds to whatever it got
    assert state.totals([0])[kept] == 2
    assert "x" * (SERIES_NAME + 1) not in [n for _, n, _ in state.series()]


def test_add_and_set_per_column(state: SharedState) -> None:
    i = state.series_index("c")
    state.add(0, i)
    state.add(0, i, 2.5)
    state.add(3, i, 10)
    assert state.totals([0]) == {i: 3.5}
    assert state.totals([3]) == {i: 10.0}
    assert state.totals([0, 3]) == {i: 13.5}
    assert state.totals([]) == {i: 0.0}
    state.set(0, i, 1.0)
    assert state.totals([0, 3]) == {i: 11.0}


def test_totals_counters_include_retired_gauges_do_not(state: SharedState) -> None:
    c = state.series_index("c", SeriesKind.COUNTER)
    g = state.series_index("g", SeriesKind.GAUGE)
    for column in (0, 1, WORKER_COLUMNS - 1):
        state.add(column, c, 1)
        state.add(column, g, 10)
    state.add(RETIRED, c, 100)
    state.add(RETIRED, g, 1000)  # never happens via retire(); must still be ignored
    assert state.totals([0, 1]) == {c: 102.0, g: 20.0}
    assert state.totals([0, 1, WORKER_COLUMNS - 1]) == {c: 103.0, g: 30.0}
    assert state.totals([]) == {c: 100.0, g: 0.0}


def test_retire_folds_counters_and_zeroes_the_column(state: SharedState) -> None:
    c = state.series_index("c", SeriesKind.COUNTER)
    g = state.series_index("g", SeriesKind.GAUGE)
    state.add(0, c, 5)
    state.add(0, g, 2)
    state.add(1, c, 7)
    state.add(1, g, 3)
    state.retire(1)
    assert state.totals([0, 1]) == {c: 12.0, g: 2.0}  # the counter survives, the gauge not
    assert state.totals([0]) == {c: 12.0, g: 2.0}
    # the column is clean for the next worker that gets it
    state.add(1, c, 1)
    state.add(1, g, 1)
    assert state.totals([1]) == {c: 8.0, g: 1.0}
    # retiring twice does not double count
    state.retire(1)
    state.retire(1)
    assert state.totals([]) == {c: 8.0, g: 0.0}


def test_retire_is_additive_over_workers(state: SharedState) -> None:
    c = state.series_index("c")
    for column in range(10):
        state.add(column, c, column + 1)
        state.retire(column)
    assert state.totals([]) == {c: 55.0}


def test_values_are_shared_between_views() -> None:
    buf = bytearray(SIZE)
    one, two = SharedState(buf), SharedState(buf)
    one.initialise()
    i = one.series_index("c")
    one.add(0, i, 1)
    two.add(1, two.series_index("c"), 2)
    assert one.totals([0, 1]) == two.totals([0, 1]) == {i: 3.0}


# --- ShmCounters -------------------------------------------------------------------------


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_shm_counters_rate_uses_the_injected_clock(state: SharedState) -> None:
    clock = FakeClock(10.0)
    counters = ShmCounters(state, owner=1, clock=clock)
    assert [counters.rate_acquire("k", 1.0, 3) for _ in range(4)] == [True, True, True, False]
    clock.now = 10.5
    assert not counters.rate_acquire("k", 1.0, 3)
    clock.now = 12.0
    assert counters.rate_acquire("k", 1.0, 3)


def test_shm_counters_inflight_per_owner(state: SharedState) -> None:
    clock = FakeClock()
    w1 = ShmCounters(state, owner=1, clock=clock)
    w2 = ShmCounters(state, owner=2, clock=clock)
    assert w1.inflight_acquire("k", 2)
    assert w2.inflight_acquire("k", 2)
    assert not w1.inflight_acquire("k", 2)
    w2.inflight_release("k")
    w2.inflight_release("k")  # extra release: harmless
    assert w1.inflight_acquire("k", 2)
    assert not w2.inflight_acquire("k", 2)
    state.drop_owner(1)
    assert w2.inflight_acquire("k", 2)
    assert w2.inflight_acquire("k", 2)
    assert not w1.inflight_acquire("k", 2)
