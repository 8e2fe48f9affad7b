"""Tests for pingap.scoreboard: the fixed table of worker slots over a writable buffer."""

from __future__ import annotations

import random

import pytest

from pingap.scoreboard import SIZE, SLOT, SLOTS, Scoreboard, SlotState, SlotView


@pytest.fixture
def board() -> Scoreboard:
    return Scoreboard(bytearray(SIZE))


def test_layout_size() -> None:
    assert SLOT.size == 48
    assert SIZE == 48 * SLOTS


@pytest.mark.parametrize("size", [0, 1, SIZE - 1])
def test_buffer_too_small(size: int) -> None:
    with pytest.raises(ValueError):
        Scoreboard(bytearray(size))


def test_buffer_large_enough() -> None:
    Scoreboard(bytearray(SIZE))
    Scoreboard(bytearray(SIZE + 100))
    Scoreboard(memoryview(bytearray(SIZE)))


def test_zeroed_buffer_is_all_free(board: Scoreboard) -> None:
    assert list(board.slots()) == []
    assert board.free_index() == 0
    view = board.read(SLOTS - 1)
    assert view == SlotView(SLOTS - 1, 0, 0, SlotState.FREE, 0, 0, 0, 0.0)


@pytest.mark.parametrize("index", [0, 1, 17, SLOTS - 1])
@pytest.mark.parametrize("fields", [
    dict(pid=1, generation=1, state=SlotState.BOOTING),
    dict(pid=4321, generation=2**32 - 1, state=SlotState.SERVING, connections=2**32 - 1,
         accepted=2**64 - 1, requests=2**63, heartbeat=12345.678901),
    dict(pid=2**31 - 1, generation=0, state=SlotState.DRAINING, connections=5, accepted=6,
         requests=7, heartbeat=0.5),
])
def test_write_then_read(board: Scoreboard, index: int, fields: dict[str, object]) -> None:
    board.write(index, **fields)  # type: ignore[arg-type]
    view = board.read(index)
    want = {"connections": 0, "accepted": 0, "requests": 0, "heartbeat": 0.0, **fields}
    assert view == SlotView(index=index, **want)  # type: ignore[arg-type]
    assert isinstance(view.state, SlotState)


def test_slots_do_not_overlap(board: Scoreboard) -> None:
    for i in range(SLOTS):
        board.write(i, pid=i + 1, generation=i, state=SlotState.SERVING, connections=i,
                    accepted=i * 10, requests=i * 100, heartbeat=i / 2)
    for i in range(SLOTS):
        assert board.read(i) == SlotView(i, i + 1, i, SlotState.SERVING, i, i * 10, i * 100,
                                         i / 2)


def test_written_slot_is_seen_by_another_view() -> None:
    buf = bytearray(SIZE)
    worker, master = Scoreboard(buf), Scoreboard(buf)
    worker.write(3, pid=77, generation=2, state=SlotState.SERVING, connections=9)
    assert master.read(3).pid == 77
    assert [v.index for v in master.slots()] == [3]


def test_free_index_skips_used_slots(board: Scoreboard) -> None:
    for i in (0, 1, 2, 4):
        board.write(i, pid=100 + i, generation=1, state=SlotState.SERVING)
    assert board.free_index() == 3
    board.write(3, pid=103, generation=1, state=SlotState.BOOTING)
    assert board.free_index() == 5
    board.write(5, pid=105, generation=1, state=SlotState.DRAINING)
    assert board.free_index() == 6


def test_free_index_when_full(board: Scoreboard) -> None:
    for i in range(SLOTS):
        board.write(i, pid=i + 1, generation=1, state=SlotState.SERVING)
    with pytest.raises(RuntimeError):
        board.free_index()
    board.clear(200)
    assert board.free_index() == 200


def test_clear(board: Scoreboard) -> None:
    board.write(2, pid=5, generation=3, state=SlotState.DRAINING, connections=4, accepted=5,
                requests=6, heartbeat=7.0)
    board.write(3, pid=6, generation=3, state=SlotState.SERVING)
    board.clear(2)
    assert board.read(2) == SlotView(2, 0, 0, SlotState.FREE, 0, 0, 0, 0.0)
    assert board.read(3).pid == 6
    assert [v.index for v in board.slots()] == [3]
    assert board.free_index() == 0
    board.write(0, pid=1, generation=1, state=SlotState.SERVING)
    assert board.free_index() == 1
    board.write(1, pid=1, generation=1, state=SlotState.SERVING)
    assert board.free_index() == 2


def test_slots_lists_non_free_in_order(board: Scoreboard) -> None:
    board.write(9, pid=9, generation=1, state=SlotState.DRAINING)
    board.write(1, pid=1, generation=1, state=SlotState.BOOTING)
    board.write(5, pid=5, generation=1, state=SlotState.SERVING)
    board.write(7, pid=7, generation=1, state=SlotState.FREE)
    assert [(v.index, v.state) for v in board.slots()] == [
        (1, SlotState.BOOTING), (5, SlotState.SERVING), (9, SlotState.DRAINING)]


@pytest.mark.parametrize("slots, average", [
    ([], 0.0),
    ([(SlotState.BOOTING, 100)], 0.0),
    ([(SlotState.DRAINING, 100)], 0.0),
    ([(SlotState.SERVING, 0)], 0.0),
    ([(SlotState.SERVING, 10)], 10.0),
    ([(SlotState.SERVING, 10), (SlotState.SERVING, 20)], 15.0),
    ([(SlotState.SERVING, 10), (SlotState.SERVING, 20), (SlotState.BOOTING, 100),
      (SlotState.DRAINING, 50), (SlotState.FREE, 1000)], 15.0),
    ([(SlotState.SERVING, 1), (SlotState.SERVING, 2), (SlotState.SERVING, 2)], 5 / 3),
])
def test_serving_average(board: Scoreboard, slots: list[tuple[SlotState, int]],
                         average: float) -> None:
    for i, (state, connections) in enumerate(slots):
        board.write(i * 3, pid=i + 1, generation=1, state=state, connections=connections)
    assert board.serving_average() == pytest.approx(average)


def test_serving_average_agrees_with_the_slots_read_whole(board: Scoreboard) -> None:
    """The fast read (state bytes, then the serving slots' counts) against the
    definition, over random tables that use the first and the last slot too."""
    rng = random.Random(7)
    for _ in range(50):
        for i in range(SLOTS):
            board.write(i, pid=i, generation=1, state=rng.choice(list(SlotState)),
                        connections=rng.randrange(1 << 32), accepted=rng.randrange(1 << 64),
                        requests=rng.randrange(1 << 64), heartbeat=rng.random())
        counts = [v.connections for v in board.slots() if v.state is SlotState.SERVING]
        assert board.serving_average() == pytest.approx(
            sum(counts) / len(counts) if counts else 0.0)


def test_rewrite_updates_in_place(board: Scoreboard) -> None:
    board.write(4, pid=4, generation=1, state=SlotState.BOOTING)
    board.write(4, pid=4, generation=1, state=SlotState.SERVING, connections=3, accepted=10,
                requests=20, heartbeat=1.5)
    assert board.read(4) == SlotView(4, 4, 1, SlotState.SERVING, 3, 10, 20, 1.5)
    assert len(list(board.slots())) == 1
