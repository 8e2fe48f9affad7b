"""``discovery = "transparent"`` through the real binary: the request's Host is the backend,
and a Host naming the proxy itself is refused (508) instead of looping."""

from __future__ import annotations

from tests.support.client import request
from tests.support.proc import free_port


def transparent_config(port: int) -> str:
    # pingap's examples/transparent-proxy, on plain HTTP: addrs are ignored
    return f"""
[basic]
grace_period = "1s"
threads = 1

[upstreams.transparentUpstream]
addrs = ["127.0.0.1"]
discovery = "transparent"

[locations.transparentLocation]
upstream = "transparentUpstream"

[servers.test]
addr = "127.0.0.1:{port}"
locations = ["transparentLocation"]
"""


def test_transparent_upstream_follows_the_host_header(pingap, backends) -> None:
    first, second = backends("first"), backends("second")
    port = free_port()
    proc = pingap(transparent_config(port), port=port)
    for backend in (first, second):
        reply = request(port, path="/where", headers={"Host": backend.addr})
        assert reply.status == 200
        assert reply.json()["backend"] == backend.name
    assert [r["target"] for r in first.requests()] == ["/where"]
    # the Host goes on as sent
    assert ["host", first.addr] in [[k.lower(), v] for k, v in first.requests()[0]["headers"]]
    assert "discovery" not in proc.log()  # acted on: no "not supported" warning


def test_transparent_upstream_refuses_to_proxy_to_itself(pingap, backends) -> None:
    backend = backends()
    port = free_port()
    proc = pingap(transparent_config(port), port=port)
    for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
        reply = request(port, path="/loop", headers={"Host": host})
        assert reply.status == 508, host
    assert "this proxy's own listener (a loop)" in proc.log()
    nothing = f"127.0.0.1:{free_port()}"  # nobody listens there: a plain 502
    assert request(port, headers={"Host": nothing}).status == 502
    assert request(port, headers={"Host": backend.addr}).status == 200
    assert backend.requests()[0]["target"] == "/"
