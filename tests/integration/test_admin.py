"""The admin API (``--admin``) against the real proxy: pingap's routes and login, every
write validated like ``pingap -t`` and applied through the master as a reload whose
result comes back; 401, lock-out, 409, a refused delete, comments kept in the file."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from pingap.admin.auth import make_token
from tests.support.client import request
from tests.support.configs import per_entry_conf_dir
from tests.support.proc import PingapProcess, free_port, port_open, wait_for

CONFIG = """# the team's proxy
[basic]
grace_period = "1s"
pid_file = "{tmp}/pingap.pid"

[upstreams.u]
# where the app runs
addrs = ["{backend}"] # primary

[locations.all]
upstream = "u"

[servers.s]
addr = "127.0.0.1:{port}"
locations = ["all"]

[certificates.c]
tls_cert = "{cert}"
tls_key = "{key}"
"""


class Admin:
    def __init__(self, port: int, user: str = "admin", password: str = "s3cret") -> None:
        self.port, self.user, self.password = port, user, password

    def call(self, method: str, path: str, body: Any = None, *, auth: bool = True,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        sent = dict(headers or {})
        if auth:
            sent["Authorization"] = make_token(self.user, self.password, int(time.time()))
        data = None
        if body is not None:
            sent.setdefault("Content-Type", "application/json")
            data = json.dumps(body)
        for _ in range(5):
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            try:
                conn.request(method, path, body=data, headers=sent)
                reply = conn.getresponse()
                raw = reply.read()
            finally:
                conn.close()
            # a worker being replaced after a reload says "retry" (the documented contract)
            if reply.status != 503 or reply.getheader("Retry-After") != "0":
                break
        kind = reply.getheader("Content-Type") or ""
        return (reply.status, {k.lower(): v for k, v in reply.getheaders()},
                json.loads(raw) if "json" in kind else raw)


@pytest.fixture
def setup(tmp_path: Path, backends):
    from tests.support.h2_backend import make_certificates

    a, b = backends("a"), backends("b")
    certs = make_certificates(tmp_path)
    port, admin_port = free_port(), free_port()
    conf = tmp_path / "pingap.toml"
    conf.write_text(CONFIG.format(tmp=tmp_path, backend=a.addr, port=port,
                                  cert=certs["cert"], key=certs["key"]))
    proc = PingapProcess(conf, port, tmp_path,
                         args=["--admin", f"admin:s3cret@127.0.0.1:{admin_port}"])
    wait_for(lambda: port_open(admin_port), what="the admin port")
    yield conf, port, Admin(admin_port), a, b, proc
    proc.stop()


def _served_by(port: int, path: str = "/") -> str | None:
    return request(port, "GET", path).header("X-Backend")


def test_reads_need_a_login_and_hide_secrets(setup) -> None:
    conf, port, admin, a, b, proc = setup
    assert admin.call("GET", "/api/configs", auth=False)[0] == 401
    wrong = Admin(admin.port, password="nope")
    assert wrong.call("GET", "/api/configs")[0] == 401
    old = {"Authorization": make_token("admin", "s3cret", int(time.time()) - 3 * 86400)}
    assert admin.call("GET", "/api/configs", auth=False, headers=old)[0] == 401  # max_age
    status, _, body = admin.call("GET", "/api/configs")
    assert status == 200
    assert body["upstreams"]["u"]["addrs"] == [a.addr]
    assert body["certificates"]["c"]["tls_key"] == "********"
    assert "PRIVATE KEY" not in json.dumps(body)
    status, headers, entry = admin.call("GET", "/api/configs/upstream/u")
    assert status == 200 and entry == {"addrs": [a.addr]} and headers["etag"].startswith('"')
    status, _, upstreams = admin.call("GET", "/api/configs/upstreams")
    assert list(upstreams) == ["u"]
    status, _, basic = admin.call("GET", "/api/basic")
    assert status == 200 and basic["generation"] == 1 and basic["pid"] == proc.pid


def test_failed_logins_lock_the_ip_out(setup) -> None:
    _, _, admin, *_ = setup
    wrong = Admin(admin.port, password="guess")
    for _ in range(10):  # pingap's default ip_fail_limit
        assert wrong.call("GET", "/api/configs")[0] == 401
    # the eleventh attempt, even a right one, is refused
    assert admin.call("GET", "/api/configs")[0] == 403


def test_save_applies_through_a_reload_and_keeps_comments(setup) -> None:
    conf, port, admin, a, b, _ = setup
    assert _served_by(port) == "a"
    _, headers, entry = admin.call("GET", "/api/configs/upstream/u")
    status, _, body = admin.call("POST", "/api/configs/upstream/u", {"addrs": [b.addr]},
                                 headers={"If-Match": headers["etag"]})
    assert status == 200, body
    assert body["reload"] == {"ok": True, "problems": []}
    assert _served_by(port) == "b"  # the reload is over when the answer comes
    text = conf.read_text()
    assert "# the team's proxy" in text and "# where the app runs" in text
    assert f'addrs = ["{b.addr}"] # primary' in text
    # the certificate was saved back masked: the stored key is untouched
    status, _, _ = admin.call("POST", "/api/configs/certificate/c",
                              {**admin.call("GET", "/api/configs/certificate/c")[2]})
    assert status == 200 and "********" not in conf.read_text()  # mask never stored
    # a stale version is refused, and nothing changes
    before = conf.read_text()
    status, _, body = admin.call("POST", "/api/configs/upstream/u", {"addrs": [a.addr]},
                                 headers={"If-Match": headers["etag"]})
    assert status == 409 and "changed by someone else" in body["message"]
    assert conf.read_text() == before and _served_by(port) == "b"


def test_new_route_bad_regex_and_referenced_delete(setup) -> None:
    conf, port, admin, a, b, _ = setup
    status, _, body = admin.call("POST", "/api/configs/upstream/api", {"addrs": [b.addr]})
    assert status == 200, body
    status, _, body = admin.call("POST", "/api/configs/location/api",
                                 {"upstream": "api", "path": "~^/api/("})
    assert status == 400
    assert any("locations.api.path" in p for p in body["problems"]), body
    status, _, body = admin.call("POST", "/api/configs/location/api",
                                 {"upstream": "api", "path": "/api"})
    assert status == 200, body
    status, _, body = admin.call("POST", "/api/configs/server/s",
                                 {"addr": f"127.0.0.1:{port}", "locations": ["api", "all"]})
    assert status == 200, body
    assert _served_by(port, "/api/x") == "b" and _served_by(port, "/x") == "a"
    before = conf.read_text()
    status, _, body = admin.call("DELETE", "/api/configs/upstream/api")
    assert status == 400 and any("locations.api.upstream" in p for p in body["problems"])
    assert conf.read_text() == before
    status, _, body = admin.call("POST", "/api/configs/upstream/x", {"addrs": ["a"]},
                                 headers={"Content-Type": "text/plain"})
    assert status == 415  # a cross-site form cannot post JSON
    status, _, tested = admin.call("POST", "/api/route-test", {"url": "/api/x"})
    assert status == 200 and (tested["location"], tested["upstream"]) == ("api", "api")
    assert [s["location"] for s in tested["steps"]] == ["api", "all"]


def test_history_of_a_per_entry_directory(tmp_path: Path, backends) -> None:
    a, b = backends("a"), backends("b")
    port, admin_port = free_port(), free_port()
    conf = tmp_path / "conf"
    proc = PingapProcess(per_entry_conf_dir(tmp_path, port, a.addr), port, tmp_path,
                         args=["--admin", f"admin:s3cret@127.0.0.1:{admin_port}"])
    try:
        wait_for(lambda: port_open(admin_port), what="the admin port")
        admin = Admin(admin_port)
        assert admin.call("POST", "/api/configs/upstream/u", {"addrs": [b.addr]})[0] == 200
        assert admin.call("POST", "/api/configs/upstream/v", {"addrs": [a.addr]})[0] == 200
        assert (conf / "upstreams" / "v.toml").is_file()  # a new entry gets its own file
        status, _, history = admin.call("GET", "/api/config-history/upstream/u")
        assert status == 200
        assert [item["data"] for item in history["history"]] == [{"addrs": [a.addr]}]
        assert _served_by(port) == "b"
    finally:
        proc.stop()


def test_import_and_certificates(setup) -> None:
    conf, port, admin, a, b, _ = setup
    status, _, certs = admin.call("GET", "/api/certificates")
    assert status == 200 and "localhost" in certs["c"]["domains"]
    assert certs["c"]["not_after"] > time.time() and "key" not in json.dumps(certs).lower()
    before = conf.read_text()
    bad = f'[upstreams.w]\naddrs = ["{b.addr}"]\n[locations.w]\nupstream = "nope"\n'
    conn = http.client.HTTPConnection("127.0.0.1", admin.port, timeout=60)
    token = make_token("admin", "s3cret", int(time.time()))
    conn.request("POST", "/api/configs/import", body=bad,
                 headers={"Authorization": token, "Content-Type": "application/json"})
    reply = conn.getresponse()
    body = json.loads(reply.read())
    conn.close()
    assert reply.status == 400 and any("locations.w.upstream" in p for p in body["problems"])
    assert conf.read_text() == before
    good = (f'[upstreams.u]\naddrs = ["{b.addr}"]\n'
            f'[upstreams.w]\naddrs = ["{a.addr}"]\n')
    conn = http.client.HTTPConnection("127.0.0.1", admin.port, timeout=60)
    conn.request("POST", "/api/configs/import", body=good,
                 headers={"Authorization": token, "Content-Type": "application/json"})
    reply = conn.getresponse()
    body = json.loads(reply.read())
    conn.close()
    assert reply.status == 200, body
    assert _served_by(port) == "b"
    assert "# where the app runs" in conf.read_text() and "[upstreams.w]" in conf.read_text()


def test_control_panel_serves_the_admin_only(tmp_path: Path) -> None:
    port, admin_port = free_port(), free_port()
    conf = tmp_path / "pingap.toml"
    conf.write_text(f'[basic]\npid_file = "{tmp_path}/pingap.pid"\n[upstreams.u]\n'
                    f'addrs = ["127.0.0.1:1"]\n[locations.all]\nupstream = "u"\n'
                    f'[servers.s]\naddr = "127.0.0.1:{port}"\nlocations = ["all"]\n')
    proc = PingapProcess(conf, admin_port, tmp_path,
                         args=["--admin", f"admin:s3cret@127.0.0.1:{admin_port}", "--cp"])
    try:
        admin = Admin(admin_port)
        status, _, body = admin.call("GET", "/api/configs/server/s")
        assert status == 200 and body["addr"] == f"127.0.0.1:{port}"  # editable...
        assert not port_open(port)  # ...but not served
        status, _, body = admin.call("POST", "/api/configs/upstream/u", {"addrs": ["127.0.0.1:2"]})
        assert status == 200, body
        assert "127.0.0.1:2" in conf.read_text() and not port_open(port)
    finally:
        proc.stop()
    run = subprocess.run(["pingap", "-c", str(conf), "--cp"], capture_output=True, text=True,
                         timeout=30)
    assert run.returncode == 1 and "needs --admin" in run.stderr


def test_aes_encrypts_and_decrypts_as_pingap(setup) -> None:
    from pingap.aes import aes_encrypt

    _, _, admin, _, _, _ = setup
    body = {"category": "encrypt", "key": "k" * 40, "data": "db password"}
    assert admin.call("POST", "/api/aes", body, auth=False)[0] == 401
    status, _, sealed = admin.call("POST", "/api/aes", body)
    assert status == 200 and sealed == {"value": aes_encrypt("k" * 32, "db password")}
    status, _, plain = admin.call("POST", "/api/aes", {"category": "decrypt", "key": "k" * 40,
                                                       "data": sealed["value"]})
    assert status == 200 and plain == {"value": "db password"}
    status, _, failed = admin.call("POST", "/api/aes", {"category": "decrypt", "key": "x",
                                                        "data": sealed["value"]})
    assert status == 400 and "wrong key" in failed["message"]


@pytest.fixture
def two_workers(tmp_path: Path, backends):
    """The proxy with two workers, upstream ``u`` on a live and a dead backend (checked
    every 200 ms), and the admin on its own port."""
    from tests.support.h2_backend import make_certificates

    a = backends("a")
    dead = f"127.0.0.1:{free_port()}"
    certs = make_certificates(tmp_path)
    port, admin_port = free_port(), free_port()
    conf = tmp_path / "pingap.toml"
    conf.write_text(CONFIG.format(tmp=tmp_path, backend=a.addr, port=port, cert=certs["cert"],
                                  key=certs["key"])
                    .replace('grace_period = "1s"\n', 'grace_period = "1s"\nthreads = 2\n')
                    .replace(f'addrs = ["{a.addr}"] # primary',
                             f'addrs = ["{a.addr}", "{dead}"]\nhealth_check = '
                             f'"tcp://u?check_frequency=200ms&failure=1&success=1"'))
    proc = PingapProcess(conf, port, tmp_path,
                         args=["--admin", f"admin:s3cret@127.0.0.1:{admin_port}"])
    wait_for(lambda: port_open(admin_port), what="the admin port")
    admin = Admin(admin_port)
    # the port opens with the first worker; the second may still be booting
    wait_for(lambda: admin.call("GET", "/api/basic")[2]["workers"] == 2, timeout=30,
             what="both workers serving")
    yield port, admin, a.addr, dead, proc
    proc.stop()


def _connections_to_each_worker(admin: Admin, how_many: int = 2
                                ) -> list[http.client.HTTPConnection]:
    """Keep-alive admin connections, each taken by a different worker (a connection stays
    with the worker that accepted it)."""
    found: dict[int, http.client.HTTPConnection] = {}
    extra = []
    for _ in range(60):
        conn = http.client.HTTPConnection("127.0.0.1", admin.port, timeout=30)
        pid = _basic(admin, conn)["worker_pid"]
        if pid in found:
            extra.append(conn)  # held open, so the busier worker lets the other accept
        else:
            found[pid] = conn
        if len(found) == how_many:
            break
    for conn in extra:
        conn.close()
    assert len(found) == how_many, f"only {len(found)} workers took admin connections"
    return list(found.values())


def _basic(admin: Admin, conn: http.client.HTTPConnection, status: int = 200
           ) -> dict[str, Any]:
    conn.request("GET", "/api/basic", headers={
        "Authorization": make_token(admin.user, admin.password, int(time.time()))})
    reply = conn.getresponse()
    raw = reply.read()
    assert reply.status == status, raw
    return dict(json.loads(raw)) if status == 200 else {}


def _worker_requests(info: dict[str, Any]) -> int:
    return sum(w["requests"] for w in info["worker_processes"])


def test_dashboard_figures_are_the_hosts(two_workers) -> None:
    port, admin, live, dead, proc = two_workers
    first, second = _connections_to_each_worker(admin)
    info = _basic(admin, first)
    serving = [w["pid"] for w in info["worker_processes"] if w["state"] == "serving"]
    assert info["workers"] == 2 and sorted(serving) == sorted(proc.worker_pids())
    # upstream health as the host's one prober sees it, whichever worker answers
    for conn in (first, second):
        health = wait_for(lambda conn=conn: (h := _basic(admin, conn)["upstream_healthy_status"]
                                             ["u"])["backends"] == {live: "up", dead: "down"}
                          and h, what="the dead backend reported down")
        assert (health["healthy"], health["total"], health["unhealthy_backends"]) == \
            (1, 2, [dead])
    cert = info["certificates"]["c"]
    assert "localhost" in cert["domains"] and cert["days_left"] > 0
    assert cert["not_after"] > time.time() + cert["days_left"] * 86400 - 86400

    # open connections: every worker's, counted by whichever worker answers
    wait_for(lambda: _basic(admin, first)["connections"] == 2, what="only the admin's two")
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(6)]
    try:
        for conn in (second, first):
            wait_for(lambda conn=conn: _basic(admin, conn)["connections"] == 8,
                     what="8 connections")
    finally:
        for sock in idle:
            sock.close()
    wait_for(lambda: _basic(admin, first)["connections"] == 2, what="the idle ones closed")

    # requests: the host's totals (each fresh connection may go to either worker)
    before = _basic(admin, first)
    for _ in range(40):
        assert request(port, "GET", "/").status == 200
    after_first, after_second = _basic(admin, first), _basic(admin, second)
    assert after_first["accepted"] >= before["accepted"] + 40
    assert 0 <= after_second["accepted"] - after_first["accepted"] <= 2  # its own calls
    # the workers table: each worker's own count, published with its heartbeat
    wait_for(lambda: _worker_requests(_basic(admin, first)) >= _worker_requests(before) + 40,
             what="the workers' request counts")
    rate = wait_for(lambda: _basic(admin, first)["requests_per_second"], timeout=15,
                    what="a request rate")
    assert rate > 0
    first.close()
    second.close()


def _fail_login(port: int, conn: http.client.HTTPConnection | None = None) -> int:
    """One attempt with a wrong password (on ``conn``, or a connection of its own)."""
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/api/configs",
                 headers={"Authorization": make_token("admin", "guess", int(time.time()))})
    reply = conn.getresponse()
    reply.read()
    if own:
        conn.close()
    return reply.status


def test_ip_fail_limit_holds_for_the_whole_host(two_workers) -> None:
    _, admin, *_ = two_workers
    first, second = _connections_to_each_worker(admin)
    # nine failures spread over both workers and fresh connections: not locked yet
    for attempt in range(9):
        conn = (first, second, None)[attempt % 3]
        assert _fail_login(admin.port, conn) == 401
    _basic(admin, first)
    _basic(admin, second)
    assert _fail_login(admin.port, second) == 401  # the tenth (pingap's default limit)
    # now every worker refuses this IP, even with the right password
    _basic(admin, first, status=403)
    _basic(admin, second, status=403)
    assert admin.call("GET", "/api/basic")[0] == 403
    first.close()
    second.close()


def test_ip_fail_limit_with_redis_holds_for_every_host(tmp_path: Path, backends,
                                                       redis_server) -> None:
    """With ``redis_url`` the failures are counted in Redis, as the limit plugins'
    requests: two proxies sharing it lock the IP out together."""
    a = backends("a")
    redis = redis_server()
    ports: list[int] = []
    procs = []
    try:
        for host in ("one", "two"):
            home = tmp_path / host
            home.mkdir()
            port = free_port()
            conf = home / "pingap.toml"
            conf.write_text(f'[basic]\nredis_url = "{redis.url}"\n'
                            f'pid_file = "{home}/pingap.pid"\n[upstreams.u]\n'
                            f'addrs = ["{a.addr}"]\n[locations.all]\nupstream = "u"\n'
                            f'plugins = ["guard"]\n[servers.s]\n'
                            f'addr = "127.0.0.1:{port}"\nlocations = ["all"]\n'
                            f'[plugins.guard]\ncategory = "admin"\npath = "/admin"\n'
                            f'authorizations = ["admin:s3cret"]\nip_fail_limit = 4\n')
            procs.append(PingapProcess(conf, port, home))
            ports.append(port)
        for attempt in range(3):
            assert _fail_login_at(ports[attempt % 2]) == 401
        assert [_login_at(port) for port in ports] == [200, 200]
        assert _fail_login_at(ports[1]) == 401  # the fourth: ip_fail_limit
        assert [_login_at(port) for port in ports] == [403, 403]
    finally:
        for proc in procs:
            proc.stop()


def _fail_login_at(port: int) -> int:
    return request(port, "GET", "/admin/api/configs", headers={
        "Authorization": make_token("admin", "guess", int(time.time()))}).status


def _login_at(port: int) -> int:
    return request(port, "GET", "/admin/api/basic", headers={
        "Authorization": make_token("admin", "s3cret", int(time.time()))}).status
