"""Shared-memory regions (memfd) and the process-wide locks that guard them.

The master creates the scoreboard and the shared-state region before any worker starts,
passes their fds to every worker, and hands them to a new master on upgrade, so counters,
health and metric totals survive reloads and upgrades. ``fcntl.lockf`` locks belong to
the process, so workers that inherited the same fd still exclude each other; each named
lock is one byte range of the state region.
"""

from __future__ import annotations

import fcntl
import mmap
import os
from collections.abc import Iterator
from contextlib import contextmanager

from pingap.scoreboard import SIZE as SCOREBOARD_SIZE
from pingap.scoreboard import Scoreboard
from pingap.state import SIZE as STATE_SIZE
from pingap.state import SharedState

LOCK_OFFSETS = {"counters": 0, "registry": 1, "retire": 2, "slots": 3}


def create_region(name: str, size: int) -> int:
    fd = os.memfd_create(name, 0)
    os.ftruncate(fd, size)
    os.set_inheritable(fd, True)
    return fd


def open_scoreboard(fd: int) -> Scoreboard:
    return Scoreboard(memoryview(mmap.mmap(fd, SCOREBOARD_SIZE)))


def open_state(fd: int, *, fresh: bool = False) -> SharedState:
    @contextmanager
    def lock(name: str) -> Iterator[None]:
        offset = LOCK_OFFSETS[name]
        fcntl.lockf(fd, fcntl.LOCK_EX, 1, offset)
        try:
            yield
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, offset)

    state = SharedState(memoryview(mmap.mmap(fd, STATE_SIZE)), lock)
    if fresh:
        state.initialise()
    state.check()
    return state
