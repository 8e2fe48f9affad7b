"""Config in a real etcd: load, watch (-a) and apply, survive etcd going away, --sync.

Two proxies on one etcd prefix both serve a change written to etcd; with etcd stopped
for longer than 10 s both keep serving the last config and pick up the next change once
etcd is back."""

from __future__ import annotations

import http.client
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from master.storage import open_storage
from tests.support.client import request
from tests.support.configs import proxy_config
from tests.support.etcd import EtcdServer
from tests.support.proc import PingapProcess, free_port, wait_for


@pytest.fixture
def etcd(tmp_path: Path):
    server = EtcdServer(tmp_path)
    yield server
    server.stop()


def _seed(etcd: EtcdServer, tmp_path: Path, text: str, prefix: str = "pingap") -> None:
    seed = tmp_path / "seed.toml"
    seed.write_text(text)
    run = subprocess.run(["pingap", "-c", str(seed), "--sync", etcd.url(prefix)],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    assert "copied" in run.stdout


def _served_by(port: int) -> str | None:
    try:
        return request(port, "GET", "/", timeout=2).header("X-Backend")
    except OSError:
        return None


def _answer(port: int, proxies: list[PingapProcess]) -> tuple[str | None, int]:
    """(backend that answered, index of the proxy whose worker held the connection)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/")
        assert conn.sock is not None
        local = conn.sock.getsockname()[1]  # before a Connection: close answer drops it
        reply = conn.getresponse()
        reply.read()
        for index, proxy in enumerate(proxies):
            for pid in proxy.worker_pids():
                try:
                    held = psutil.Process(pid).net_connections("tcp")
                except psutil.Error:
                    continue
                if any(c.raddr and c.raddr.port == local for c in held):
                    return reply.getheader("X-Backend"), index
        return reply.getheader("X-Backend"), -1
    except OSError:
        return None, -1
    finally:
        conn.close()


def _all_serve(port: int, proxies: list[PingapProcess], backend: str) -> bool:
    """Every answer comes from ``backend`` and each proxy answered at least once
    (the kernel spreads SO_REUSEPORT connections over both; 60 tries miss one with
    odds of 2**-59)."""
    seen: set[int] = set()
    for _ in range(60):
        served, index = _answer(port, proxies)
        if served != backend:
            return False
        seen.add(index)
        if seen >= set(range(len(proxies))):
            return True
    return False


def test_two_proxies_follow_etcd_and_survive_its_absence(tmp_path: Path, etcd, backends
                                                         ) -> None:
    a, b = backends("a"), backends("b")
    port = free_port()
    # two hosts on one prefix: here two masters sharing the listener with SO_REUSEPORT
    _seed(etcd, tmp_path, proxy_config(port, a.addr, server="reuse_port = true",
                                       basic=f'pid_file = "{tmp_path}/pingap.pid"'))
    storage = open_storage(etcd.url())
    proxies = [PingapProcess(etcd.url(), port, tmp_path, args=["-a"]),
               PingapProcess(etcd.url(), port, tmp_path, args=["--autoreload"])]
    try:
        wait_for(lambda: all(p.worker_pids() for p in proxies), what="workers")
        assert wait_for(lambda: _all_serve(port, proxies, "a"), what="both proxies up")

        start = time.monotonic()
        storage.save_entry("upstreams", "u", {"addrs": [b.addr]})
        wait_for(lambda: _all_serve(port, proxies, "b"), timeout=15,
                 what="both proxies to serve the edit from etcd")
        print(f"etcd edit served by both proxies after {time.monotonic() - start:.2f}s")

        etcd.stop()
        away = time.monotonic()
        while time.monotonic() - away < 11:  # etcd gone for more than 10 s
            assert _all_serve(port, proxies, "b")
            time.sleep(0.5)
        assert all(p.proc.poll() is None for p in proxies)

        etcd.start()
        storage = open_storage(etcd.url())
        storage.save_entry("upstreams", "u", {"addrs": [a.addr]})
        wait_for(lambda: _all_serve(port, proxies, "a"), timeout=15,
                 what="both proxies to pick up the change after etcd returned")
    finally:
        for proxy in proxies:
            proxy.stop()


def test_invalid_etcd_config_names_the_etcd_keys(tmp_path: Path, etcd) -> None:
    storage = open_storage(etcd.url())
    storage.save_entry("upstreams", "u", {"addrs": ["127.0.0.1:1"], "algo": "bogus"})
    storage.save_entry("locations", "lo", {"upstream": "nope"})
    run = subprocess.run(["pingap", "-t", "-c", etcd.url()], capture_output=True, text=True,
                         timeout=30)
    assert run.returncode == 1
    assert f"etcd://{etcd.endpoint}/pingap/upstreams/u.toml: upstreams.u.algo" in run.stderr
    assert f"etcd://{etcd.endpoint}/pingap/locations/lo.toml: locations.lo.upstream" \
        in run.stderr
    assert "password" not in run.stderr


def test_unreachable_etcd_is_a_clear_error(tmp_path: Path) -> None:
    url = f"etcd://127.0.0.1:{free_port()}/pingap?timeout=1s&user=u&password=secret"
    run = subprocess.run(["pingap", "-t", "-c", url], capture_output=True, text=True,
                         timeout=30)
    assert run.returncode == 1
    assert "etcd is unreachable" in run.stderr and "secret" not in run.stderr


def test_sync_from_etcd_back_to_files(tmp_path: Path, etcd, backends) -> None:
    port = free_port()
    _seed(etcd, tmp_path, proxy_config(port, "127.0.0.1:9"))
    out = tmp_path / "conf"
    run = subprocess.run(["pingap", "-c", etcd.url(), "--sync", f"{out}?separation=true"],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    assert (out / "upstreams" / "u.toml").read_text() == \
        '[upstreams.u]\naddrs = ["127.0.0.1:9"]\n'
    check = subprocess.run(["pingap", "-t", "-c", str(out)], capture_output=True, text=True,
                           timeout=30)
    assert check.returncode == 0, check.stderr


def test_admin_writes_to_etcd_and_a_second_host_follows(tmp_path: Path, etcd, backends
                                                        ) -> None:
    from tests.integration.test_admin import Admin

    a, b = backends("a"), backends("b")
    port, admin_port = free_port(), free_port()
    _seed(etcd, tmp_path, proxy_config(port, a.addr, server="reuse_port = true",
                                       basic=f'pid_file = "{tmp_path}/pingap.pid"'))
    proxies = [PingapProcess(etcd.url(), port, tmp_path,
                             args=["-a", "--admin", f"admin:pw@127.0.0.1:{admin_port}"]),
               PingapProcess(etcd.url(), port, tmp_path, args=["-a"])]
    try:
        wait_for(lambda: all(p.worker_pids() for p in proxies), what="workers")
        admin = Admin(admin_port, "admin", "pw")
        wait_for(lambda: admin.call("GET", "/api/configs")[0] == 200, what="the admin")
        _, headers, _ = admin.call("GET", "/api/configs/upstream/u")
        status, _, body = admin.call("POST", "/api/configs/upstream/u", {"addrs": [b.addr]},
                                     headers={"If-Match": headers["etag"]})
        assert status == 200, body
        assert body["file"] == f"etcd://{etcd.endpoint}/pingap/upstreams/u.toml"
        wait_for(lambda: _all_serve(port, proxies, "b"), timeout=15,
                 what="both hosts to serve the admin's edit")
        # a second edit from the same stale version is refused by the etcd transaction
        status, _, _ = admin.call("POST", "/api/configs/upstream/u", {"addrs": [a.addr]},
                                  headers={"If-Match": headers["etag"]})
        assert status == 409
    finally:
        for proxy in proxies:
            proxy.stop()
