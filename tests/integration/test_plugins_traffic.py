"""redirect, traffic_splitting and host-wide stats through the real pingap, with HTTP/1.1
and HTTP/2 (h2c) clients getting the same result."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

from tests.integration.test_plugins_access import plugins_config
from tests.support.client import request
from tests.support.h2c import both
from tests.support.proc import free_port, wait_for


def test_redirect_to_https_with_prefix(backends, pingap) -> None:
    backend = backends()
    port = free_port()
    pingap(plugins_config(port, backend.addr, """
[plugins.apiPrefix]
category = "redirect"
http_to_https = true
prefix = "/api"
status = 308
""", ["apiPrefix"]), port=port)
    for answer in both(port, "GET", "/users?page=2", {"Host": "example.com"}):
        assert answer.status == 308
        assert answer.header("location") == "https://example.com/api/users?page=2"
    for answer in both(port, "GET", "/api/users", {"Host": "example.com"}):
        assert answer.header("location") == "https://example.com/api/users"
    assert backend.requests() == []


def test_traffic_splitting_sticky_canary(backends, pingap) -> None:
    v1, v2 = backends("v1"), backends("v2")
    port = free_port()
    config = plugins_config(port, v1.addr, f"""
[upstreams.v2]
addrs = ["{v2.addr}"]

[plugins.canary]
category = "traffic_splitting"
upstream = "v2"
weight = 50
stickiness = true
sticky_cookie = "deviceId"
""", ["canary"])
    pingap(config, port=port)
    devices = [f"device-{i}" for i in range(12)]
    for device in devices:
        expected = "v2" if zlib.crc32(device.encode()) % 100 < 50 else "v1"
        for _ in range(2):  # the same device lands on the same side every time
            for answer in both(port, "GET", "/", {"Cookie": f"deviceId={device}"}):
                assert json.loads(answer.body)["backend"] == expected
    # no cookie: never on the canary
    for answer in both(port):
        assert json.loads(answer.body)["backend"] == "v1"
    assert len(v1.requests()) > 0 and len(v2.requests()) > 0


def test_stats_counts_every_worker_of_the_host(tmp_path: Path, backends, pingap) -> None:
    backend = backends()
    port = free_port()
    config = plugins_config(port, backend.addr, """
[plugins.stats]
category = "stats"
path = "/stats"
""", ["stats"], basic=f'threads = 2\npid_file = "{tmp_path}/pingap.pid"')
    proc = pingap(config, port=port)
    wait_for(lambda: len(proc.worker_pids()) == 2, what="two workers")
    proxied = 30
    for _ in range(proxied):  # each on a new connection: both workers serve some
        assert request(port, path="/x").status == 200
    seen_pids: set[int] = set()
    answered = 0

    def stats_from_both_workers() -> bool:
        nonlocal answered
        stats = request(port, path="/stats").json()
        # every request before this one counts, whichever worker served it
        assert stats["accepted"] == proxied + answered
        assert stats["location_accepted"] == proxied + answered
        answered += 1
        # a worker counts a request finished just after its last byte is sent, so the
        # answer before this one may still be open in the host's books for a moment
        if stats["processing"] or stats["location_processing"]:
            return False
        seen_pids.add(stats["pid"])  # a worker seen with nothing in progress anywhere
        return len(seen_pids) == 2

    wait_for(stats_from_both_workers, timeout=30, what="stats answered by both workers")
    stats = request(port, path="/stats").json()
    pingap_fields = {"processing", "accepted", "location_processing", "location_accepted",
                     "hostname", "version", "rustc_version", "start_time", "uptime",
                     "memory_mb", "memory", "total_memory", "used_memory", "arch", "cpus",
                     "physical_cpus", "threads", "fd_count", "tcp_count", "tcp6_count"}
    assert pingap_fields <= set(stats)
    assert stats["workers"] == 2 and stats["memory_mb"] > 0 and stats["tcp_count"] > 0
    h2 = both(port, "GET", "/stats")[1]
    assert h2.status == 200 and json.loads(h2.body)["accepted"] >= proxied
