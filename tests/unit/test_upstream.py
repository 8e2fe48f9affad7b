"""Tests for pingap.upstream: address and algo parsing, hash keys, and backend selection."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from pingap.context import ConnectionInfo, RequestContext
from pingap.upstream import (
    Algo,
    Backend,
    ConsistentHash,
    HashSelector,
    TransparentSelector,
    WeightedRoundRobin,
    hash_key,
    is_own_listener,
    make_selector,
    parse_addr,
    parse_algo,
)


def make_ctx(
    path: str = "/a/b",
    query: str = "",
    headers: list[tuple[bytes, bytes]] | None = None,
    client_ip: str = "10.0.0.9",
) -> RequestContext:
    conn = ConnectionInfo(
        connection_id=1,
        remote_addr="127.0.0.1",
        remote_port=50000,
        server_addr="127.0.0.1",
        server_port=6188,
        accepted_at=0.0,
    )
    return RequestContext(
        conn=conn,
        method="GET",
        path=path,
        query=query,
        http_version="1.1",
        host="example.com",
        request_headers=headers or [],
        client_ip=client_ip,
        start=0.0,
        start_wall=0.0,
    )


def always(_: Backend) -> bool:
    return True


FOUR = [Backend(f"10.0.0.{i}", 8080) for i in range(1, 5)]
KEYS = [f"/user/{i}" for i in range(10_000)]


# --- address syntax -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tls", "expected", "addr"),
    [
        ("127.0.0.1:3000", False, Backend("127.0.0.1", 3000, 1), "127.0.0.1:3000"),
        ("127.0.0.1:3000 10", False, Backend("127.0.0.1", 3000, 10), "127.0.0.1:3000"),
        ("127.0.0.1", False, Backend("127.0.0.1", 80, 1), "127.0.0.1:80"),
        ("127.0.0.1", True, Backend("127.0.0.1", 443, 1), "127.0.0.1:443"),
        ("127.0.0.1:8443", True, Backend("127.0.0.1", 8443, 1), "127.0.0.1:8443"),
        ("example.com 3", False, Backend("example.com", 80, 3), "example.com:80"),
        ("Example.COM:81", False, Backend("Example.COM", 81, 1), "Example.COM:81"),
        ("[::1]:8080", False, Backend("::1", 8080, 1), "[::1]:8080"),
        ("[::1]:8080 2", False, Backend("::1", 8080, 2), "[::1]:8080"),
        ("[::1]", True, Backend("::1", 443, 1), "[::1]:443"),
        ("::1", False, Backend("::1", 80, 1), "[::1]:80"),
        ("  10.0.0.1:81   5 ", False, Backend("10.0.0.1", 81, 5), "10.0.0.1:81"),
        ("10.0.0.1:81 0", False, Backend("10.0.0.1", 81, 0), "10.0.0.1:81"),
    ],
)
def test_parse_addr(text: str, tls: bool, expected: Backend, addr: str) -> None:
    backend = parse_addr(text, tls=tls)
    assert backend == expected
    assert backend.addr == addr


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "127.0.0.1:3000 x",
        "127.0.0.1:3000 -1",
        "127.0.0.1:3000 1.5",
        "127.0.0.1:3000 ²",
        "127.0.0.1:８０",
        "127.0.0.1:3000 1 2",
        "127.0.0.1:http",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        "127.0.0.1:",
        ":8080",
        "[::1",
        "[::1]8080",
        "[zz::1]:80",
        "fe80:::x",
        "http://example.com",
    ],
)
def test_parse_addr_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_addr(text)


def test_backend_is_frozen_and_hashable() -> None:
    backend = Backend("a", 1)
    assert backend.weight == 1
    with pytest.raises(AttributeError):
        backend.port = 2  # type: ignore[misc]
    assert {backend, Backend("a", 1)} == {backend}


# --- algo -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("round_robin", Algo("round_robin")),
        ("", Algo("round_robin")),
        ("random", Algo("round_robin")),
        ("hashx", Algo("round_robin")),
        ("hash", Algo("hash", "path")),
        ("hash:", Algo("hash", "path")),
        ("hash:path", Algo("hash", "path")),
        ("hash:whatever", Algo("hash", "path")),
        ("hash:url", Algo("hash", "url")),
        ("hash:ip", Algo("hash", "ip")),
        ("hash:header:X-User", Algo("hash", "header", "X-User")),
        ("hash:cookie:session", Algo("hash", "cookie", "session")),
        ("hash:query:id", Algo("hash", "query", "id")),
        ("hash:query:a:b", Algo("hash", "query", "a:b")),
    ],
)
def test_parse_algo(text: str, expected: Algo) -> None:
    assert parse_algo(text) == expected


@pytest.mark.parametrize("text", ["hash:header", "hash:cookie:", "hash:query"])
def test_parse_algo_needs_a_name(text: str) -> None:
    with pytest.raises(ValueError, match="needs a name"):
        parse_algo(text)


def test_hash_key_for_every_type() -> None:
    ctx = make_ctx(
        path="/api/items",
        query="id=42&x=1",
        headers=[(b"X-User", b"alice"), (b"Cookie", b"a=1; session=s3cr3t")],
        client_ip="192.0.2.7",
    )
    assert hash_key(parse_algo("hash:url"), ctx) == "/api/items?id=42&x=1"
    assert hash_key(parse_algo("hash:ip"), ctx) == "192.0.2.7"
    assert hash_key(parse_algo("hash:header:x-user"), ctx) == "alice"
    assert hash_key(parse_algo("hash:header:X-Missing"), ctx) == ""
    assert hash_key(parse_algo("hash:cookie:session"), ctx) == "s3cr3t"
    assert hash_key(parse_algo("hash:cookie:missing"), ctx) == ""
    assert hash_key(parse_algo("hash:query:id"), ctx) == "42"
    assert hash_key(parse_algo("hash:query:missing"), ctx) == ""
    assert hash_key(parse_algo("hash:path"), ctx) == "/api/items"
    assert hash_key(parse_algo("hash"), ctx) == "/api/items"
    assert hash_key(parse_algo("hash:other"), ctx) == "/api/items"
    assert hash_key(parse_algo("hash:url"), make_ctx(path="/p")) == "/p"


# --- weighted round robin ----------------------------------------------------------


def test_weighted_split_is_exact_and_interleaved() -> None:
    a, b = Backend("a", 80, 1), Backend("b", 80, 3)
    rr = WeightedRoundRobin([a, b])
    picks = [rr.pick(always) for _ in range(1000)]
    assert Counter(picks) == {a: 250, b: 750}
    for start in range(0, 1000, 4):
        assert Counter(picks[start : start + 4]) == {a: 1, b: 3}
    assert picks[:4] == [b, a, b, b]


def test_equal_weights_alternate() -> None:
    rr = WeightedRoundRobin(FOUR)
    assert [rr.pick(always) for _ in range(8)] == FOUR + FOUR


def test_unavailable_backend_is_skipped() -> None:
    rr = WeightedRoundRobin(FOUR)
    down = FOUR[1]
    asked: list[Backend] = []

    def available(backend: Backend) -> bool:
        asked.append(backend)
        return backend != down

    picks = [rr.pick(available) for _ in range(300)]
    assert down not in picks
    assert Counter(picks) == {FOUR[0]: 100, FOUR[2]: 100, FOUR[3]: 100}
    assert len(asked) == 300 * len(FOUR)  # each backend asked once per pick


def test_weights_hold_among_available_backends() -> None:
    a, b, c = Backend("a", 80, 1), Backend("b", 80, 2), Backend("c", 80, 5)
    rr = WeightedRoundRobin([a, b, c])
    picks = [rr.pick(lambda backend: backend != c) for _ in range(300)]
    assert Counter(picks) == {a: 100, b: 200}


def test_round_robin_none_available_and_zero_weight() -> None:
    assert WeightedRoundRobin(FOUR).pick(lambda _: False) is None
    assert WeightedRoundRobin([]).pick(always) is None
    parked, live = Backend("p", 80, 0), Backend("l", 80, 1)
    rr = WeightedRoundRobin([parked, live])
    assert {rr.pick(always) for _ in range(10)} == {live}
    assert WeightedRoundRobin([parked]).pick(always) is None


# --- consistent hash ---------------------------------------------------------------


def test_hash_is_sticky_across_instances() -> None:
    first, second = ConsistentHash(FOUR), ConsistentHash(FOUR)
    for key in KEYS[:500]:
        chosen = first.pick(key, always)
        assert chosen is not None
        assert all(first.pick(key, always) == chosen for _ in range(3))
        assert second.pick(key, always) == chosen


def test_hash_ring_is_stable_across_processes() -> None:
    # Python's hash() is salted per process; the ring must not depend on it.
    script = (
        "from pingap.upstream import Backend, ConsistentHash\n"
        "ring = ConsistentHash([Backend(f'10.0.0.{i}', 8080) for i in range(1, 5)])\n"
        "print(' '.join(ring.pick(f'/user/{i}', lambda b: True).addr for i in range(50)))\n"
    )
    ring = ConsistentHash(FOUR)
    here = [ring.pick(f"/user/{i}", always) for i in range(50)]
    for seed in ("1", "2"):
        child = subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": seed},
            cwd=Path(__file__).resolve().parents[2],
            capture_output=True,
            text=True,
            check=True,
        )
        assert child.stdout.split() == [b.addr if b else "" for b in here]


def test_hash_distribution_is_balanced() -> None:
    ring = ConsistentHash(FOUR)
    counts = Counter(ring.pick(key, always) for key in KEYS)
    even = len(KEYS) / len(FOUR)
    assert set(counts) == set(FOUR)
    for backend, count in counts.items():
        assert abs(count - even) <= 0.15 * even, (backend, count)


def test_hash_distribution_follows_weight() -> None:
    light, heavy = Backend("10.0.0.1", 80, 1), Backend("10.0.0.2", 80, 3)
    ring = ConsistentHash([light, heavy])
    counts = Counter(ring.pick(key, always) for key in KEYS)
    assert 0.15 < counts[light] / len(KEYS) < 0.35


def test_unavailable_backend_moves_only_its_keys() -> None:
    ring = ConsistentHash(FOUR)
    before = {key: ring.pick(key, always) for key in KEYS}
    down = FOUR[2]
    after = {key: ring.pick(key, lambda b: b != down) for key in KEYS}
    moved = {key for key in KEYS if before[key] != after[key]}
    assert moved == {key for key in KEYS if before[key] == down}
    assert down not in after.values()
    # The orphaned keys spread over the survivors rather than piling onto one.
    assert len({after[key] for key in moved}) == 3


def test_removed_backend_moves_only_its_keys() -> None:
    before = ConsistentHash(FOUR)
    after = ConsistentHash([b for b in FOUR if b != FOUR[0]])
    for key in KEYS:
        old = before.pick(key, always)
        if old != FOUR[0]:
            assert after.pick(key, always) == old


def test_added_backend_takes_keys_only_for_itself() -> None:
    before = ConsistentHash(FOUR)
    extra = Backend("10.0.0.5", 8080)
    after = ConsistentHash([*FOUR, extra])
    for key in KEYS:
        new = after.pick(key, always)
        assert new in (before.pick(key, always), extra)


def test_hash_tries_every_backend_before_giving_up() -> None:
    ring = ConsistentHash(FOUR)
    only = FOUR[3]
    asked: list[Backend] = []

    def available(backend: Backend) -> bool:
        asked.append(backend)
        return backend == only

    assert all(ring.pick(key, available) == only for key in KEYS[:200])
    asked.clear()

    def refuse(backend: Backend) -> bool:
        asked.append(backend)
        return False

    assert ring.pick("k", refuse) is None
    assert sorted(asked, key=FOUR.index) == FOUR  # each distinct backend asked once
    assert ConsistentHash([]).pick("k", always) is None
    assert ConsistentHash([Backend("z", 80, 0)]).pick("k", always) is None


# --- selector factory --------------------------------------------------------------


def test_make_selector_round_robin_ignores_the_request() -> None:
    selector = make_selector(parse_algo("round_robin"), FOUR)
    assert isinstance(selector, WeightedRoundRobin)
    assert selector.backends == tuple(FOUR)
    ctx = make_ctx()
    assert [selector.select(ctx, always) for _ in range(4)] == FOUR


def test_make_selector_hash_uses_the_algo_key() -> None:
    selector = make_selector(parse_algo("hash:header:X-User"), FOUR)
    assert isinstance(selector, HashSelector)
    assert selector.backends == tuple(FOUR)
    ring = ConsistentHash(FOUR)
    for user in ("alice", "bob", "carol", "dave", "erin"):
        ctx = make_ctx(path=f"/{user}", headers=[(b"x-user", user.encode())])
        assert selector.select(ctx, always) == ring.pick(user, always)
    sticky = make_ctx(headers=[(b"x-user", b"alice")])
    chosen = selector.select(sticky, always)
    assert chosen is not None
    assert selector.select(sticky, lambda b: b != chosen) not in (None, chosen)


# --- discovery = "transparent" ---------------------------------------------------------------


def test_transparent_backend_is_the_request_host() -> None:
    def pick(host: str, tls: bool = False) -> Backend | None:
        ctx = make_ctx()
        ctx.authority = ctx.host = host
        return TransparentSelector(tls).select(ctx, always)

    assert pick("example.com") == Backend("example.com", 80)
    assert pick("example.com", tls=True) == Backend("example.com", 443)  # port by scheme
    assert pick("127.0.0.1:8081") == Backend("127.0.0.1", 8081)  # a port in Host wins
    assert pick("[::1]:8443", tls=True) == Backend("::1", 8443)
    for bad in ("", "a b", "host:port", "[::1", "a:99999"):
        assert pick(bad) is None, bad
    ctx = make_ctx()
    ctx.host = "example.com"
    assert TransparentSelector(False).select(ctx, lambda b: False) is None  # tried already
    assert TransparentSelector(False).backends == ()


def test_own_listener_detection() -> None:
    def local() -> frozenset[str]:
        return frozenset({"192.0.2.7"})

    listeners = [("127.0.0.1", 6188), ("0.0.0.0", 8080), ("::1", 9000)]
    assert is_own_listener("127.0.0.1", 6188, listeners, local)
    assert not is_own_listener("127.0.0.2", 6188, listeners, local)
    assert not is_own_listener("127.0.0.1", 6189, listeners, local)
    assert is_own_listener("0.0.0.0", 6188, listeners, local)  # connecting to 0.0.0.0 is local
    assert is_own_listener("127.0.0.5", 8080, listeners, local)  # wildcard: any local address
    assert is_own_listener("192.0.2.7", 8080, listeners, local)
    assert not is_own_listener("198.51.100.1", 8080, listeners, local)
    assert is_own_listener("::1", 9000, listeners, local)
    assert is_own_listener("::ffff:127.0.0.1", 6188, listeners, local)
    assert not is_own_listener("not-an-ip", 6188, listeners, local)
