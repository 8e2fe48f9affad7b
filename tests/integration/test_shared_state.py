"""Host-wide state: limits across workers (shared memory, Redis), one prober per host,
exact Prometheus totals, plugins (built-in and out of tree)."""

from __future__ import annotations

import http.client
import http.server
import json
import re
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from tests.support.client import request
from tests.support.proc import free_port, wait_for


def config(tmp: Path, port: int, backend: str, *, basic: str = "", location: str = "",
           plugins: str = "", server: str = "", upstream: str = "", threads: int = 2) -> str:
    return f"""
[basic]
threads = {threads}
grace_period = "5s"
pid_file = "{tmp}/pingap.pid"
{basic}
[upstreams.u]
addrs = ["{backend}"]
{upstream}
[locations.all]
upstream = "u"
{location}
{plugins}
[servers.s]
addr = "127.0.0.1:{port}"
locations = ["all"]
{server}
"""


LIMIT_100 = """
[plugins.per_key]
category = "limit"
tag = "header"
key = "X-Key"
max = 100
interval = "1s"
"""


def paced_load(port: int, rate: int, seconds: float, headers: dict[str, str],
               clients: int = 10) -> list[tuple[float, int]]:
    """Send ``rate`` requests/s for ``seconds`` at fixed instants; (send time, status)."""
    start = time.monotonic() + 0.2
    total = int(rate * seconds)
    results: list[tuple[float, int]] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for n in range(index, total, clients):
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sent = time.monotonic()
            try:
                conn.request("GET", f"/r{n}", headers=headers)
                resp = conn.getresponse()
                resp.read()
                status = resp.status
                if resp.will_close:
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            except OSError:
                status = 0
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            with lock:
                results.append((sent - start, status))
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(results)


@pytest.mark.parametrize("store", ["shared-memory", "redis"])
def test_limit_is_exact_across_two_workers(store: str, tmp_path: Path, backends, pingap,
                                           redis_server) -> None:
    backend = backends()
    port = free_port()
    basic = ""
    if store == "redis":
        basic = f'redis_url = "{redis_server().url}"'
    pingap(config(tmp_path, port, backend.addr, basic=basic, plugins=LIMIT_100,
                  location='plugins = ["per_key"]'), port=port)
    wait_for(lambda: serving(tmp_path) == 2, what="two serving workers")
    results = paced_load(port, rate=300, seconds=10, headers={"X-Key": "tenant-1"})
    statuses = Counter(status for _, status in results)
    assert set(statuses) <= {200, 429}, statuses
    assert 950 <= statuses[200] <= 1050, statuses
    # both workers served requests: the budget is one for the host, not one per worker
    status = json.loads((tmp_path / "pingap.pid.status").read_text())
    serving_workers = [w for w in status["workers"] if w["state"] == "serving"]
    assert len(serving_workers) == 2
    assert all(w["requests"] > 100 for w in serving_workers), status["workers"]


@pytest.mark.timeout(180)
def test_redis_outage_fails_open_then_limits_again(tmp_path: Path, backends, pingap,
                                                  redis_server) -> None:
    backend = backends()
    redis = redis_server()
    port = free_port()
    limit = LIMIT_100.replace("max = 100", "max = 20")
    proxy = pingap(config(tmp_path, port, backend.addr, basic=f'redis_url = "{redis.url}"',
                          plugins=limit, location='plugins = ["per_key"]'), port=port)
    wait_for(lambda: serving(tmp_path) == 2, what="two serving workers")
    workers = proxy.worker_pids()
    box: dict[str, object] = {}

    def outage() -> None:
        time.sleep(4)
        redis.stop()
        box["stopped"] = time.monotonic()
        time.sleep(10)
        redis.start()
        box["restarted"] = time.monotonic()

    started = time.monotonic()
    chaos = threading.Thread(target=outage)
    chaos.start()
    results = paced_load(port, rate=60, seconds=20, headers={"X-Key": "k"}, clients=6)
    chaos.join()
    stopped = box["stopped"] - started - 0.2  # type: ignore[operator]
    restarted = box["restarted"] - started - 0.2  # type: ignore[operator]
    before = [s for t, s in results if t < stopped - 0.5]
    during = [s for t, s in results if stopped + 1.0 < t < restarted]
    after = [(t, s) for t, s in results if t > restarted]
    assert 429 in before                                   # limited while Redis is up
    assert during and set(during) == {200}, Counter(during)   # fail-open while it is down
    first_429 = min(t for t, s in after if s == 429)
    assert first_429 - restarted < 2.0                     # limits back within 2 s
    assert all(s in (200, 429) for _, s in results)
    assert sorted(proxy.worker_pids()) == sorted(workers)  # no worker died


def test_redis_outage_fails_closed_when_configured(tmp_path: Path, backends, pingap,
                                                  redis_server) -> None:
    backend = backends()
    redis = redis_server()
    port = free_port()
    pingap(config(tmp_path, port, backend.addr,
                  basic=f'redis_url = "{redis.url}"\nredis_failure_mode = "closed"',
                  plugins=LIMIT_100, location='plugins = ["per_key"]'), port=port)
    assert request(port, path="/a", headers={"X-Key": "k"}).status == 200
    redis.stop()
    assert request(port, path="/b", headers={"X-Key": "k"}).status == 429
    assert request(port, path="/c").status == 200  # no key: not limited


def serving(tmp: Path) -> int:
    """Workers the master reports serving (its status file)."""
    try:
        status = json.loads((tmp / "pingap.pid.status").read_text())
    except (OSError, ValueError):
        return 0
    return sum(w["state"] == "serving" for w in status["workers"])


def metric(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} not in the exposition")


@pytest.mark.timeout(300)
def test_metrics_totals_are_exact_after_100_worker_restarts(tmp_path: Path, backends,
                                                           pingap) -> None:
    backend = backends()
    port = free_port()
    conf_text = config(tmp_path, port, backend.addr, server='prometheus_metrics = "/metrics"')
    proxy = pingap(conf_text, port=port)
    # the port opens with the first worker; pingapctl finds the master once the whole
    # generation serves and the pid file is written
    wait_for(lambda: (tmp_path / "pingap.pid").exists(), what="pid file")
    sent = 0
    for _ in range(50):  # 50 reloads x 2 workers
        for _ in range(6):
            assert request(port, path="/x").status == 200
            sent += 1
        reload = subprocess.run(["pingapctl", "reload", "--pid-file",
                                 str(tmp_path / "pingap.pid")], capture_output=True, text=True,
                                timeout=60)
        assert reload.returncode == 0, reload.stderr + proxy.log()[-4000:]
    wait_for(lambda: len(proxy.worker_pids()) == 2, timeout=20, what="old workers gone")
    started = time.monotonic()
    reply = request(port, path="/metrics")
    took = time.monotonic() - started
    assert reply.status == 200
    text = reply.body.decode()
    assert metric(text, 'pingap_http_requests_total{server="s",location=""}') == sent
    assert metric(text, 'pingap_http_requests_total{server="s",location="all"}') == sent
    assert metric(text, 'pingap_http_responses_codes{server="s",location="",code="2xx"}') == sent
    assert metric(text, 'pingap_http_requests_current{server="s",location=""}') == 0
    assert f'pingap_http_response_time_seconds_count{{server="s",location=""}} {sent}' in text
    assert re.search(r'pingap_process_resident_memory_bytes\{role="worker",pid="\d+"\} \d+', text)
    assert "pingap_build_info{" in text
    assert took < 0.1, f"scrape took {took * 1000:.0f} ms"


def test_metrics_pushed_to_a_gateway(tmp_path: Path, backends, pingap) -> None:
    backend = backends()
    pushes: list[tuple[str, str, str]] = []

    class Gateway(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            pushes.append((self.path, self.headers.get("Authorization", ""), body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    gateway = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    threading.Thread(target=gateway.serve_forever, daemon=True).start()
    gport = gateway.server_address[1]
    port = free_port()
    url = f"http://user:secret@127.0.0.1:{gport}/metrics/job/pingap?interval=500ms"
    pingap(config(tmp_path, port, backend.addr, server=f'prometheus_metrics = "{url}"'),
           port=port)
    for _ in range(3):
        assert request(port, path="/p").status == 200
    wait_for(lambda: any('pingap_http_requests_total{server="s",location=""} 3' in body
                         for _, _, body in pushes), timeout=10, what="a push with 3 requests")
    path, auth, _ = pushes[-1]
    assert path == "/metrics/job/pingap?interval=500ms"
    assert auth == "Basic dXNlcjpzZWNyZXQ="
    gateway.shutdown()


def test_one_prober_per_host_and_dead_backend_leaves_every_worker(tmp_path: Path, backends,
                                                                   pingap) -> None:
    live, doomed = backends("live"), backends("doomed")
    port = free_port()
    upstream = ('health_check = "http://h/health?check_frequency=500ms&failure=1'
                '&connection_timeout=200ms"')
    config_text = config(tmp_path, port, live.addr, upstream=upstream).replace(
        f'addrs = ["{live.addr}"]', f'addrs = ["{live.addr}", "{doomed.addr}"]')
    pingap(config_text, port=port)
    wait_for(lambda: serving(tmp_path) == 2, what="two serving workers")

    def probe_times() -> list[float]:
        return [r["time"] for r in live.requests() if r["target"] == "/health"]
    times = wait_for(lambda: len(probe_times()) >= 8 and probe_times(), timeout=15,
                     what="eight probes")[:8]
    # one prober every 500 ms: 8 probes span ~3.5 s (two probers would need ~1.75 s)
    assert times[-1] - times[0] > 2.8, times
    doomed.stop()
    killed = time.monotonic()
    results = []
    while time.monotonic() - killed < 3.5:
        conn_start = time.monotonic()
        reply = request(port, path="/after")
        results.append((conn_start - killed, reply.status))
    late_failures = [t for t, s in results if s != 200 and t > 0.5 + 1.0]
    assert late_failures == [], results
    assert results[-1][1] == 200


def test_stats_ping_and_mock_plugins(tmp_path: Path, backends, pingap) -> None:
    backend = backends()
    port = free_port()
    plugins = """
[plugins.stats]
category = "stats"
path = "/stats"
[plugins.canned]
category = "mock"
path = "/canned"
status = 202
headers = ["X-Mock: yes"]
data = "canned body"
"""
    pingap(config(tmp_path, port, backend.addr, plugins=plugins,
                  location='plugins = ["pingap:ping", "stats", "canned"]'), port=port)
    assert request(port, path="/ping").body == b"pong"
    reply = request(port, path="/canned")
    assert (reply.status, reply.body, reply.header("X-Mock")) == (202, b"canned body", "yes")
    wait_for(lambda: serving(tmp_path) == 2, what="two serving workers")
    stats = request(port, path="/stats").json()
    master = psutil.Process(int((tmp_path / "pingap.pid").read_text()))
    assert stats["pid"] in {child.pid for child in master.children()}
    assert {"processing", "accepted", "uptime", "memory_mb", "fd_count"} <= set(stats)
    assert backend.requests() == []  # all three answered by plugins


def test_out_of_tree_plugin_from_an_installed_package(tmp_path: Path, backends,
                                                      pingap) -> None:
    # scripts/test.sh installs tests/plugin_example with pip; this fails loudly if not
    import pingap_example_plugin  # noqa: F401

    backend = backends()
    port = free_port()
    plugins = """
[plugins.stamp]
category = "phase_stamp"
step = "proxy_upstream"
header = "X-Phase"
"""
    pingap(config(tmp_path, port, backend.addr, plugins=plugins,
                  location='plugins = ["stamp"]'), port=port)
    reply = request(port, path="/stamped")
    assert reply.header("X-Phase-Seen") == "proxy_upstream"
    assert ["X-Phase", "proxy_upstream"] in backend.requests()[-1]["headers"]
    bad = tmp_path / "bad.toml"
    bad.write_text(config(tmp_path, port, backend.addr,
                          plugins=plugins.replace('header = "X-Phase"', 'bogus = 1'),
                          location='plugins = ["stamp"]'))
    result = subprocess.run(["pingap", "-t", "-c", str(bad)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    assert "plugins.stamp" in result.stderr and "bogus" in result.stderr
