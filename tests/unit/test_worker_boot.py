"""What a worker sets up for itself at boot (``workers.worker``)."""

from __future__ import annotations

from collections.abc import Iterator

import gevent
import pytest

from workers.worker import untrack_greenlets


@pytest.fixture
def gevent_config() -> Iterator[None]:
    before = gevent.config.track_greenlet_tree
    yield
    gevent.config.track_greenlet_tree = before


def test_greenlets_spawned_in_a_worker_do_not_copy_their_spawning_stack(
        gevent_config: None) -> None:
    """gevent's default records the spawner and a copy of its stack at every spawn (an
    HTTP/2 stream is one); a worker turns that off."""
    gevent.config.track_greenlet_tree = True
    tracked = gevent.spawn(lambda: None)
    assert tracked.spawning_stack is not None
    untrack_greenlets()
    untracked = gevent.spawn(lambda: None)
    assert untracked.spawning_stack is None and untracked.spawning_greenlet is None
    gevent.joinall([tracked, untracked])
