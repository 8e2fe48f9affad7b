"""Upstream balancing, failures (502/504), health checks and keep-alive retry; responses
on a kept-alive connection in order and whole (small ones wait for the end of the loop
turn, ``workers.sockio.send_later``)."""

from __future__ import annotations

import http.client
import json
import socket
from collections import Counter

from tests.support.client import read_responses, request
from tests.support.configs import proxy_config
from tests.support.proc import free_port, wait_for


def one_location(port: int, upstream: str, extra_basic: str = "") -> str:
    """``upstream`` is the whole ``[upstreams.u]`` table."""
    return proxy_config(port, upstream=upstream.removeprefix("[upstreams.u]\n"),
                        basic=extra_basic)


def test_weighted_round_robin_splits_one_to_three(backends, pingap) -> None:
    a, b = backends("a"), backends("b")
    port = free_port()
    pingap(one_location(port, f'[upstreams.u]\naddrs = ["{a.addr} 1", "{b.addr} 3"]\n'),
           port=port)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    counts = Counter(request(port, path=f"/{i}", conn=conn).header("X-Backend")
                     for i in range(1000))
    conn.close()
    assert abs(counts["a"] - 250) <= 50 and abs(counts["b"] - 750) <= 50, counts
    assert counts["a"] + counts["b"] == 1000


def test_hash_header_is_sticky_per_user(backends, pingap) -> None:
    started = [backends(f"b{i}") for i in range(3)]
    port = free_port()
    addrs = ", ".join(f'"{b.addr}"' for b in started)
    pingap(one_location(port, f'[upstreams.u]\naddrs = [{addrs}]\nalgo = "hash:header:X-User"\n'),
           port=port)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    seen: dict[str, set[str]] = {}
    for round_ in range(5):
        for user in range(30):
            reply = request(port, path=f"/r{round_}", headers={"X-User": f"user-{user}"},
                            conn=conn)
            seen.setdefault(f"user-{user}", set()).add(reply.header("X-Backend"))
    conn.close()
    assert all(len(v) == 1 for v in seen.values()), seen
    assert len({next(iter(v)) for v in seen.values()}) == 3  # users spread over all three


def test_connect_failure_is_502_quickly(pingap) -> None:
    dead = free_port()  # nothing listens here
    port = free_port()
    pingap(one_location(port, f'[upstreams.u]\naddrs = ["127.0.0.1:{dead}"]\n'), port=port)
    reply = request(port, path="/x")
    assert reply.status == 502
    assert reply.header("X-Pingap-EType") == "upstream"
    assert reply.elapsed < 2.0


def test_read_timeout_is_504_quickly(backends, pingap) -> None:
    backend = backends()
    port = free_port()
    pingap(one_location(port, f'[upstreams.u]\naddrs = ["{backend.addr}"]\n'
                              'read_timeout = "500ms"\n'), port=port)
    reply = request(port, path="/stall?s=5")
    assert reply.status == 504
    assert reply.elapsed < 2.0
    # the proxy keeps working afterwards
    assert request(port, path="/ok").status == 200


def test_health_check_takes_a_dead_backend_out(backends, pingap) -> None:
    live, doomed = backends("live"), backends("doomed")
    port = free_port()
    pingap(one_location(port, f'[upstreams.u]\naddrs = ["{live.addr}", "{doomed.addr}"]\n'
                              'health_check = "http://check.local/health?check_frequency=300ms'
                              '&failure=1&success=1&connection_timeout=200ms"\n'),
           port=port)
    wait_for(lambda: any(r["target"] == "/health" for r in doomed.requests()),
             what="the first health probe")
    assert {request(port, path="/a").header("X-Backend") for _ in range(4)} == {"live", "doomed"}
    doomed.stop()

    def only_live() -> bool:
        return all(request(port, path="/b").header("X-Backend") == "live" for _ in range(6))
    wait_for(only_live, timeout=5, what="the dead backend to leave rotation")
    replies = [request(port, path="/c") for _ in range(20)]
    assert all(r.status == 200 and r.header("X-Backend") == "live" for r in replies)


def test_reused_connection_dropped_by_backend_is_retried(backends, pingap) -> None:
    backend = backends()
    port = free_port()
    pingap(one_location(port, f'[upstreams.u]\naddrs = ["{backend.addr}"]\n'), port=port)
    assert request(port, path="/arm-drop").status == 200   # pooled conn now drops the next
    reply = request(port, path="/after")
    assert reply.status == 200
    events = backend.requests()
    assert {"backend": "backend", "event": "dropped", "target": "/after"} in events
    assert [e["target"] for e in events if "method" in e] == ["/arm-drop", "/after"]


def test_no_retry_when_upstream_is_down_and_no_retries(backends, pingap) -> None:
    live = backends("live")
    dead = free_port()
    port = free_port()
    pingap(one_location(port, f'[upstreams.u]\naddrs = ["127.0.0.1:{dead}", "{live.addr}"]\n'
                              'health_check = "tcp://x?check_frequency=1h"\n'), port=port)
    statuses = Counter(request(port, path="/x").status for _ in range(4))
    assert statuses == {502: 2, 200: 2}


def test_max_retries_moves_to_the_next_backend(backends, pingap) -> None:
    live = backends("live")
    dead = free_port()
    port = free_port()
    upstream = (f'[upstreams.u]\naddrs = ["127.0.0.1:{dead}", "{live.addr}"]\n'
                'health_check = "tcp://x?check_frequency=1h"\n')
    config = one_location(port, upstream).replace('upstream = "u"\n',
                                                  'upstream = "u"\nmax_retries = 1\n')
    pingap(config, port=port)
    assert all(request(port, path="/x").status == 200 for _ in range(6))


def test_pipelined_small_and_large_responses_come_back_whole_and_in_order(
        backends, pingap) -> None:
    """Small responses wait for the end of the loop turn, large ones go at once: on one
    connection they still arrive in request order, each whole. Proxied and local answers
    (a mock plugin's, small and large) alternate, so a large local answer is written right
    after a small held one without any wait in between."""
    backend = backends()
    port = free_port()
    big = "b" * 40000
    config = one_location(port, f'[upstreams.u]\naddrs = ["{backend.addr}"]\n') + f"""
[locations.local]
path = "/local"
plugins = ["small", "big"]

[plugins.small]
category = "mock"
path = "/local/small"
data = "tiny"

[plugins.big]
category = "mock"
path = "/local/big"
data = "{big}"
"""
    pingap(config.replace('locations = ["all"]', 'locations = ["local", "all"]'), port=port)
    paths = []
    for i in range(8):
        paths += [f"/p/{i}", "/local/big", f"/big?n={40000 + i}&cl=1", "/local/small"]
    wire = b"".join(f"GET {p} HTTP/1.1\r\nHost: pipe.test\r\n\r\n".encode()
                    for p in paths)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(wire)
        replies = read_responses(sock, len(paths))
    for path, (reply, body) in zip(paths, replies, strict=True):
        assert reply.status == 200, path
        if path == "/local/big":
            assert body == big.encode()
        elif path == "/local/small":
            assert body == b"tiny"
        elif path.startswith("/big"):
            assert len(body) == int(path.split("=")[1].split("&")[0]), path
        else:
            assert json.loads(body)["target"] == path


def test_a_request_followed_by_the_end_of_the_client_stream_gets_its_response(
        backends, pingap) -> None:
    """The client sends one request and shuts its side down at once: the response (held
    to the end of the loop turn) still reaches it before the connection closes."""
    backend = backends()
    port = free_port()
    pingap(one_location(port, f'[upstreams.u]\naddrs = ["{backend.addr}"]\n'), port=port)
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /half-closed HTTP/1.1\r\nHost: fin.test\r\n\r\n")
            sock.shutdown(socket.SHUT_WR)
            reply, body = read_responses(sock, 1)[0]
            assert reply.status == 200
            assert json.loads(body)["target"] == "/half-closed"
            assert sock.recv(100) == b""  # then the proxy closes
