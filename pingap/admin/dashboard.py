"""The admin dashboard's host-wide figures, from shared memory, without I/O.

Every figure is the host's, whichever worker answers: workers and open connections from
the scoreboard (each worker publishes its own slot), processing/accepted from the metric
totals every worker adds to (``pingap.metrics``), upstream health from the shared health
table the host's one prober writes. Requests per second is the change of the accepted
total between samples (``RequestRate``).
"""

from __future__ import annotations

import datetime
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from pingap.scoreboard import SlotState, SlotView

RATE_WINDOW = 5.0
"""Seconds of accepted-total samples requests/s is averaged over."""


class RequestRate:
    """Requests per second from samples of a host-wide counter taken over time."""

    def __init__(self, window: float = RATE_WINDOW) -> None:
        self.window = window
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, at: float, total: int) -> None:
        if self._samples and total < self._samples[-1][1]:
            self._samples.clear()  # the counters were reset (a new shared region)
        self._samples.append((at, total))
        # keep one sample at or before the window's start, so the whole window is covered
        while len(self._samples) > 2 and at - self._samples[1][0] >= self.window:
            self._samples.popleft()

    def per_second(self) -> float | None:
        """None until two samples at least a second apart exist."""
        if len(self._samples) < 2:
            return None
        (first_at, first), (last_at, last) = self._samples[0], self._samples[-1]
        if last_at - first_at < 1.0:
            return None
        return round((last - first) / (last_at - first_at), 2)


def worker_rows(slots: Iterable[SlotView], now: float) -> list[dict[str, Any]]:
    """One row per worker process of the host (``now``: CLOCK_MONOTONIC, as heartbeats)."""
    return [{"slot": s.index, "pid": s.pid, "generation": s.generation,
             "state": s.state.name.lower(), "connections": s.connections,
             "accepted": s.accepted, "requests": s.requests,
             "heartbeat_age": round(max(now - s.heartbeat, 0.0), 1) if s.heartbeat else None}
            for s in slots if s.state is not SlotState.FREE]


def open_connections(rows: list[dict[str, Any]]) -> int:
    """Client connections open on the host (serving and draining workers)."""
    return sum(r["connections"] for r in rows if r["state"] in ("serving", "draining"))


def upstream_health(upstreams: Iterable[Any], health: Callable[[str, str], bool | None]
                    ) -> dict[str, dict[str, Any]]:
    """pingap's ``upstream_healthy_status`` (``healthy``, ``total``,
    ``unhealthy_backends``) plus ``backends``: each address's state as the health checks
    see it, ``up``, ``down`` or ``unknown`` (not probed yet; selected as up)."""
    out: dict[str, dict[str, Any]] = {}
    for upstream in upstreams:
        backends = {}
        for backend in upstream.backends:
            found = health(upstream.name, backend.addr)
            backends[backend.addr] = "unknown" if found is None else "up" if found else "down"
        down = [addr for addr, state in backends.items() if state == "down"]
        out[upstream.name] = {"healthy": len(backends) - len(down), "total": len(backends),
                              "unhealthy_backends": down, "backends": backends}
    return out


def certificate_expiry(entries: Iterable[Any], now: datetime.datetime
                       ) -> dict[str, dict[str, Any]]:
    """Each served certificate's names, ``not_after`` (Unix seconds) and whole days left
    (negative once expired)."""
    return {entry.name: {"domains": list(entry.names),
                         "not_after": int(entry.not_after.timestamp()),
                         "days_left": (entry.not_after - now) // datetime.timedelta(days=1)}
            for entry in entries}
