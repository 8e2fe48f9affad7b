"""The admin dashboard's figures: requests/s from counter samples, worker rows and open
connections from scoreboard slots, upstream health, certificate expiry."""

from __future__ import annotations

import datetime
from types import SimpleNamespace

from pingap.admin.dashboard import (
    RequestRate,
    certificate_expiry,
    open_connections,
    upstream_health,
    worker_rows,
)
from pingap.scoreboard import Scoreboard, SlotState


def test_request_rate_over_the_window() -> None:
    rate = RequestRate(window=5.0)
    assert rate.per_second() is None
    rate.add(100.0, 1000)
    rate.add(100.5, 1010)
    assert rate.per_second() is None  # less than a second of samples
    rate.add(102.0, 1040)
    assert rate.per_second() == 20.0
    for second in range(3, 20):
        rate.add(100.0 + second, 1040 + 10 * (second - 2))
    assert rate.per_second() == 10.0  # the early, faster samples left the window
    rate.add(121.0, 5)  # counters reset: start again
    assert rate.per_second() is None


def test_workers_and_connections_from_the_scoreboard() -> None:
    board = Scoreboard(bytearray(1 << 20))
    board.write(0, pid=11, generation=2, state=SlotState.SERVING, connections=3,
                accepted=9, requests=40, heartbeat=50.0)
    board.write(1, pid=12, generation=2, state=SlotState.SERVING, connections=4,
                requests=7, heartbeat=51.0)
    board.write(2, pid=13, generation=1, state=SlotState.DRAINING, connections=1,
                heartbeat=51.0)
    board.write(3, pid=14, generation=2, state=SlotState.STANDBY, heartbeat=51.0)
    rows = worker_rows(board.slots(), now=51.5)
    assert [(r["pid"], r["state"], r["heartbeat_age"]) for r in rows] == [
        (11, "serving", 1.5), (12, "serving", 0.5), (13, "draining", 0.5),
        (14, "standby", 0.5)]
    assert open_connections(rows) == 8


def test_upstream_health_as_the_checks_see_it() -> None:
    backends = [SimpleNamespace(addr=a) for a in ("10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80")]
    upstreams = [SimpleNamespace(name="u", backends=backends),
                 SimpleNamespace(name="t", backends=[])]
    seen = {("u", "10.0.0.1:80"): True, ("u", "10.0.0.2:80"): False}
    health = upstream_health(upstreams, lambda name, addr: seen.get((name, addr)))
    assert health["u"] == {"healthy": 2, "total": 3, "unhealthy_backends": ["10.0.0.2:80"],
                           "backends": {"10.0.0.1:80": "up", "10.0.0.2:80": "down",
                                        "10.0.0.3:80": "unknown"}}
    assert health["t"] == {"healthy": 0, "total": 0, "unhealthy_backends": [],
                           "backends": {}}


def test_certificate_expiry_in_days() -> None:
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    entries = [SimpleNamespace(name="a", names=("a.test",),
                               not_after=now + datetime.timedelta(days=30, hours=5)),
               SimpleNamespace(name="old", names=("b.test",),
                               not_after=now - datetime.timedelta(hours=1))]
    expiry = certificate_expiry(entries, now)
    assert expiry["a"] == {"domains": ["a.test"], "days_left": 30,
                           "not_after": int((now + datetime.timedelta(days=30, hours=5)).timestamp())}
    assert expiry["old"]["days_left"] == -1
