"""WebSocket (and any Upgrade) pass-through on HTTP/1.1, with location plugins applied."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from websockets.sync.client import connect

from tests.support.client import raw_exchange, status_of
from tests.support.configs import proxy_config
from tests.support.proc import Process, free_port, port_open, wait_for


def test_websocket_echo_of_1000_messages(tmp_path: Path, pingap) -> None:
    ws_port = free_port()
    backend = Process([sys.executable, "-m", "tests.support.ws_backend", "--port",
                       str(ws_port)], log=tmp_path / "ws.log")
    try:
        wait_for(lambda: port_open(ws_port), what="the websocket backend")
        port = free_port()
        pingap(f"""
[upstreams.ws]
addrs = ["127.0.0.1:{ws_port}"]
[locations.ws]
upstream = "ws"
path = "/ws"
proxy_set_headers = ["X-Through:pingap"]
plugins = ["stamp"]
[plugins.stamp]
category = "phase_stamp"
header = "X-Phase"
[servers.s]
addr = "127.0.0.1:{port}"
locations = ["ws"]
""", port=port)
        with connect(f"ws://127.0.0.1:{port}/ws/chat", compression=None,
                     open_timeout=10) as ws:
            headers = dict((k.lower(), v) for k, v in json.loads(ws.recv(timeout=10)))
            assert headers["x-through"] == "pingap"      # header rules ran
            assert headers["x-phase"] == "request"       # location plugins ran on upgrade
            messages = [f"message {i} " + "x" * (i % 300) for i in range(1000)]
            for text in messages:
                ws.send(text)
            echoed = [ws.recv(timeout=10) for _ in messages]
            assert echoed == messages
            binary = bytes(range(256)) * 64
            ws.send(binary)
            assert ws.recv(timeout=10) == binary
    finally:
        backend.stop()


def test_h2c_upgrade_is_not_passed_through(tmp_path: Path, backends, pingap) -> None:
    backend = backends()
    port = free_port()
    pingap(proxy_config(port, backend.addr), port=port)
    reply = raw_exchange(port, b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, "
                               b"HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABk"
                               b"\r\n\r\n", read_until_close=False)
    assert status_of(reply) == 200
    names = {n.lower() for n, _ in backend.requests()[-1]["headers"]}
    assert not names & {"upgrade", "connection", "http2-settings"}
