"""Header rules, variables, hop-by-hop stripping, case preservation, access log."""

from __future__ import annotations

from pathlib import Path

from tests.support.client import raw_exchange, request, status_of
from tests.support.configs import proxy_config
from tests.support.proc import free_port, wait_for


def test_header_rules_and_variables(backends, pingap) -> None:
    backend = backends()
    port = free_port()
    pingap(proxy_config(port, backend.addr, location="""
enable_reverse_proxy_headers = true
proxy_set_headers = ["X-Set:fixed", "X-User-Id:$http_x_user", "X-Scheme:$scheme",
                     "Host:backend.internal"]
proxy_add_headers = ["X-Add:one", "X-Add:two", "X-Up:$upstream_addr"]
"""), port=port)
    reply = request(port, path="/h", headers={"Host": "front.test", "X-User": "u42",
                                              "X-Set": "client", "X-Forwarded-For": "1.2.3.4"})
    assert reply.status == 200
    headers = reply.json()["headers"]
    by_name: dict[str, list[str]] = {}
    for name, value in headers:
        by_name.setdefault(name, []).append(value)
    assert by_name["X-Set"] == ["fixed"]
    assert by_name["X-User-Id"] == ["u42"]
    assert by_name["X-Scheme"] == ["http"]
    assert by_name["Host"] == ["backend.internal"]
    assert by_name["X-Add"] == ["one", "two"]
    assert by_name["X-Up"] == [backend.addr]
    assert by_name["X-Real-IP"] == ["127.0.0.1"]
    assert by_name["X-Forwarded-For"] == ["1.2.3.4, 127.0.0.1"]
    assert by_name["X-Forwarded-Proto"] == ["http"]
    assert by_name["X-Forwarded-Host"] == ["front.test"]
    assert by_name["X-Forwarded-Port"] == [str(port)]


def test_hop_by_hop_stripped_and_case_preserved(backends, pingap) -> None:
    backend = backends()
    port = free_port()
    pingap(proxy_config(port, backend.addr), port=port)
    raw = (b"GET /c HTTP/1.1\r\nHost: t\r\nX-MiXeD-CaSe: v\r\nConnection: close, X-Secret\r\n"
           b"X-Secret: hidden\r\nKeep-Alive: timeout=5\r\nUpgrade: h2c\r\n"
           b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nProxy-Connection: keep-alive\r\n\r\n")
    reply = raw_exchange(port, raw)
    assert status_of(reply) == 200
    assert b"\r\nX-Backend: backend\r\n" in reply and b"\r\nX-Hop: kept\r\n" in reply
    names = [name for name, _ in backend.requests()[-1]["headers"]]
    assert "X-MiXeD-CaSe" in names
    lowered = {n.lower() for n in names}
    assert not lowered & {"connection", "x-secret", "keep-alive", "upgrade", "http2-settings",
                          "proxy-connection"}


def test_access_log_file_with_template(tmp_path: Path, backends, pingap) -> None:
    backend = backends()
    port = free_port()
    log_file = tmp_path / "logs" / "access.log"
    template = ("{method} {uri} {status} {:location} {:upstream_addr} {>x-tag} {<x-backend} "
                "{size}")
    pingap(proxy_config(port, backend.addr, server=f'access_log = "{log_file} {template}"'),
           port=port)
    assert request(port, path="/logged?x=1", headers={"X-Tag": "t1"}).status == 200
    line = wait_for(lambda: log_file.exists() and log_file.read_text().strip(),
                    what="the access log line")
    method, uri, status, location, upstream, tag, from_backend, size = line.split(" ")
    assert (method, uri, status, location, upstream, tag, from_backend) == (
        "GET", "/logged?x=1", "200", "all", backend.addr, "t1", "backend")
    assert int(size) > 0
