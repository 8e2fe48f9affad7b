"""The cache plugin through the real pingap against a real origin that records every
request: hit, miss, expired, revalidated and purged, shown by X-Cache-Status and by what
reached the origin; the file store shared by two workers (one origin request for 100
concurrent misses with ``lock``) and kept across a restart."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.client import request
from tests.support.h2c import http1, http2
from tests.support.proc import Origin, PingapProcess, free_port, hits, wait_for


def config(port: int, origin: Origin, directory: str, extra: str = "") -> str:
    return f"""
[basic]
grace_period = "1s"
threads = 2

[upstreams.u]
addrs = ["{origin.addr}"]

[plugins.c]
category = "cache"
directory = "{directory}"
lock = "30s"
purge_ip_list = ["127.0.0.1"]
{extra}
[locations.all]
upstream = "u"
plugins = ["c"]

[servers.s]
addr = "127.0.0.1:{port}"
locations = ["all"]
enabled_h2 = true
"""


@pytest.mark.parametrize("store", ["memory", "file"])
def test_miss_hit_conditional_purge(pingap: Callable[..., PingapProcess], origin: Origin,
                                    tmp_path: Path, store: str) -> None:
    port = free_port()
    directory = "memory://t" if store == "memory" else str(tmp_path / "cache")
    pingap(config(port, origin, directory), port=port)
    path = "/text?n=5000&cc=max-age%3D600&etag=v1"
    first = http1(port, path=path)
    assert first.status == 200 and first.header("x-cache-status") == "miss"
    assert (first.header("x-cache-lookup") or "").endswith("ms")
    # the memory store is per worker: a later request may land on the other worker,
    # whose store is still empty; one request per worker fills both at most
    wait_for(lambda: http1(port, path=path).header("x-cache-status") == "hit",
             what="a cache hit")
    filled = hits(origin, path)
    assert filled <= 2
    for get in (http1, http2):
        answer = get(port, path=path)
        if answer.header("x-cache-status") == "hit":
            assert answer.body == first.body and answer.header("age") is not None
    assert hits(origin, path) <= 2
    if store == "file":  # shared by the workers: one fill for the host
        assert hits(origin, path) == 1
        for _ in range(6):
            assert http2(port, path=path).header("x-cache-status") == "hit"
        not_modified = http1(port, path=path, headers={"If-None-Match": '"v1"'})
        assert not_modified.status == 304 and not_modified.header("x-cache-status") == "hit"
        assert hits(origin, path) == 1
    purged = request(port, "PURGE", path)
    assert purged.status == 204
    if store == "file":
        assert http1(port, path=path).header("x-cache-status") == "miss"
        assert hits(origin, path) == 2


def test_not_stored_responses(pingap: Callable[..., PingapProcess], origin: Origin,
                              tmp_path: Path) -> None:
    port = free_port()
    pingap(config(port, origin, str(tmp_path / "cache"), 'skip = "^/chunked"'), port=port)
    for path in ("/text?n=100&cc=no-store", "/text?n=100&cc=private,max-age%3D60",
                 "/text?n=100&cc=max-age%3D60&cookie=1", "/chunked?n=100&cc=max-age%3D60"):
        for _ in range(2):
            assert http1(port, path=path).status == 200
        assert hits(origin, path) == 2, path


def test_expired_and_revalidated(pingap: Callable[..., PingapProcess], origin: Origin,
                                 tmp_path: Path) -> None:
    port = free_port()
    pingap(config(port, origin, str(tmp_path / "cache")), port=port)
    path = "/text?n=3000&cc=max-age%3D1&etag=e7"
    assert http1(port, path=path).header("x-cache-status") == "miss"
    # once the second of freshness is over, the entry is revalidated with its ETag
    answer = wait_for(lambda: (a := http1(port, path=path)).header("x-cache-status")
                      == "revalidated" and a, timeout=15, what="a revalidation")
    assert answer.status == 200 and len(answer.body) == 3000
    last = [r for r in origin.requests() if r["path"] == path][-1]
    assert last["headers"].get("if-none-match") == '"e7"'
    # without validators, an expired entry is fetched again in full
    plain = "/text?n=3000&cc=max-age%3D1"
    http1(port, path=plain)
    wait_for(lambda: http1(port, path=plain).header("x-cache-status") == "expired",
             timeout=15, what="an expired entry")


def test_purge_refused_outside_the_list(pingap: Callable[..., PingapProcess], origin: Origin,
                                        tmp_path: Path) -> None:
    port = free_port()
    text = config(port, origin, str(tmp_path / "cache")).replace(
        'purge_ip_list = ["127.0.0.1"]', 'purge_ip_list = ["10.0.0.0/8"]')
    pingap(text, port=port)
    path = "/text?n=100&cc=max-age%3D600"
    http1(port, path=path)
    refused = request(port, "PURGE", path)
    assert refused.status == 403 and refused.body == b"Forbidden, ip is not allowed"
    assert http1(port, path=path).header("x-cache-status") == "hit"


def test_lock_makes_concurrent_misses_one_origin_request(
        pingap: Callable[..., PingapProcess], origin: Origin, tmp_path: Path) -> None:
    port = free_port()
    pingap(config(port, origin, str(tmp_path / "cache")), port=port)
    path = "/text?n=20000&cc=max-age%3D600&slow=1"
    results: list[tuple[int, str | None, int]] = []
    lock = threading.Lock()
    gate = threading.Barrier(100)

    def fetch() -> None:
        gate.wait()
        reply = request(port, "GET", path, timeout=30)
        with lock:
            results.append((reply.status, reply.header("x-cache-status"), len(reply.body)))

    threads = [threading.Thread(target=fetch) for _ in range(100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 100
    assert all(status == 200 and size == 20000 for status, _, size in results)
    assert hits(origin, path) == 1
    assert sorted(label or "" for _, label, _ in results).count("miss") == 1


def test_file_entries_survive_a_restart(pingap: Callable[..., PingapProcess], origin: Origin,
                                        tmp_path: Path) -> None:
    port = free_port()
    first = pingap(config(port, origin, str(tmp_path / "cache")), port=port)
    path = "/text?n=4000&cc=max-age%3D600"
    assert http1(port, path=path).header("x-cache-status") == "miss"
    first.stop()
    port = free_port()
    pingap(config(port, origin, str(tmp_path / "cache")), port=port, name="again.toml")
    again = http1(port, path=path)
    assert again.header("x-cache-status") == "hit" and len(again.body) == 4000
    assert hits(origin, path) == 1


def test_uncacheable_requests_do_not_queue_on_the_lock(
        pingap: Callable[..., PingapProcess], origin: Origin, tmp_path: Path) -> None:
    port = free_port()
    pingap(config(port, origin, str(tmp_path / "cache")), port=port)
    path = "/text?n=100&cc=no-store&slow=3"
    assert http1(port, path=path).header("x-cache-status") == "miss"  # found uncacheable
    gate = threading.Barrier(6)

    def fetch() -> None:
        gate.wait()
        request(port, "GET", path, timeout=60)

    threads = [threading.Thread(target=fetch) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    arrivals = [r["at"] for r in origin.requests() if r["path"] == path][1:]
    assert len(arrivals) == 6
    # each answer takes the origin 3 s: had they waited on the fill lock one after the
    # other, they would have arrived at least 3 s apart (15 s from first to last)
    assert max(arrivals) - min(arrivals) < 3.0
