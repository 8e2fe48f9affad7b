"""Bounded work per turn: no connection keeps its worker's event loop to itself.

gevent switches greenlets only when one blocks. A client that keeps a connection's input
full (HTTP/1 pipelining to a route the proxy answers itself, an HTTP/2 frame flood) never
makes its greenlet block: every ``recv`` finds data and every ``send`` finds room, so the
hub - and with it every other connection, the heartbeat and the timeout sweeper - waits
until the flood stops, and the master ends up killing the worker. A ``Turn`` counts the
units of work a greenlet does (HTTP/1 requests, HTTP/2 frames) within one iteration of
the event loop; after a turn's worth (``REQUESTS_PER_TURN``, ``FRAMES_PER_TURN``) it
waits for the next iteration, so a flooding connection gets its fair share and no more.
A connection that blocks on its socket now and then (any ordinary one) is never held.

The wait is a timer (``TURN_PAUSE``), not ``gevent.sleep(0)``: a zero sleep is a callback,
and the hub runs callbacks - including the ones two flooders keep adding - for up to 50
at a time before it looks at the clock and polls for I/O again; measured, that left a
normal client waiting 0.6 s behind two pipelining floods. A timer fires only after the
loop has polled, so every ready socket gets its turn in between. When nothing else is
ready the pause costs the flooder at most about a millisecond per turn.
"""

from __future__ import annotations

import gevent

#: HTTP/1 requests served between two yields (pipelined ones; others block on reads)
REQUESTS_PER_TURN = 8
#: HTTP/2 frames (state machine events) handled between two yields
FRAMES_PER_TURN = 32
#: the yield: long enough to be a timer (polled after I/O), as short as the loop allows
TURN_PAUSE = 0.0001


class Turn:
    """One greenlet's work since the event loop last polled for I/O."""

    __slots__ = ("_iteration", "_left", "_per_turn")

    def __init__(self, per_turn: int) -> None:
        self._per_turn = per_turn
        self._left = per_turn
        self._iteration = -1

    def spend(self, units: int = 1) -> None:
        """Count ``units`` of work; wait for the next loop iteration once a turn's worth
        was done without the loop polling in between. A greenlet that blocked (and so
        let the loop go round) since its last call starts a fresh turn: only one that
        never blocks is held back."""
        iteration = getattr(gevent.get_hub().loop, "iteration", -1)
        if iteration != self._iteration:
            self._iteration = iteration
            self._left = self._per_turn
        self._left -= units
        if self._left <= 0:
            self._left = self._per_turn
            gevent.sleep(TURN_PAUSE)
