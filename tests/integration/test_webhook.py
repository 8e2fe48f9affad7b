"""Webhooks: a local HTTP receiver gets each subscribed event once per event and host
(two workers, two generations of probers) with pingap's payload fields."""

from __future__ import annotations

import json
import os
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support.proc import BackendProcess, free_port, wait_for


class Receiver:
    """A webhook endpoint on loopback that records every JSON body posted to it; the
    first ``fail_first`` posts get a 503 (to exercise the sender's retry)."""

    def __init__(self, fail_first: int = 0) -> None:
        self.posts: list[dict[str, Any]] = []
        self.refused = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.refused < fail_first:
                    receiver.refused += 1
                    self.send_response(503)
                else:
                    receiver.posts.append(json.loads(body))
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def categories(self) -> list[str]:
        return [post["category"] for post in self.posts]

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver():
    server = Receiver(fail_first=1)
    yield server
    server.stop()


def _config(port: int, backend: str, hook: str, tmp: Path, extra: str = "") -> str:
    return f"""
[basic]
grace_period = "1s"
threads = 2
pid_file = "{tmp}/pingap.pid"
webhook = "{hook}"
webhook_notifications = ["backend_status", "diff_config", "reload_config",
                         "reload_config_fail"]
{extra}
[upstreams.u]
addrs = ["{backend}"]
health_check = "http://check.local/health?check_frequency=200ms&failure=1&success=1&connection_timeout=200ms"

[locations.all]
upstream = "u"

[servers.s]
addr = "127.0.0.1:{port}"
locations = ["all"]
"""


def test_backend_down_up_reloads_and_diff_each_notify_once(tmp_path: Path, receiver, backends,
                                                      pingap) -> None:
    backend = backends("app")
    port = free_port()
    proc = pingap(_config(port, backend.addr, receiver.url, tmp_path), port=port)
    wait_for(lambda: any(r.get("target") == "/health" for r in backend.requests()),
             what="the first probe")
    backend_port = backend.port
    backend.stop()
    wait_for(lambda: "backend_status" in receiver.categories(), timeout=20,
             what="the backend down event")
    down = receiver.posts[0]
    assert down == {"name": "pingap", "level": "error", "hostname": down["hostname"],
                    "ip": down["ip"], "category": "backend_status",
                    "message": f"upstream u(127.0.0.1:{backend_port}) becomes unhealthy"}
    assert receiver.refused == 1  # the first attempt got a 503 and was retried
    revived = BackendProcess(tmp_path, "app", backend_port)
    try:
        wait_for(lambda: receiver.categories().count("backend_status") == 2, timeout=20,
                 what="the backend up event")
        assert receiver.posts[1]["message"].endswith("becomes healthy")
        assert receiver.posts[1]["level"] == "info"

        config = Path(proc.config)
        config.write_text(_config(port, revived.addr, receiver.url, tmp_path,
                                  'log_level = "INFO"'))
        os.kill(proc.pid, signal.SIGHUP)
        wait_for(lambda: "reload_config" in receiver.categories(), timeout=20,
                 what="the reload event")
        config.write_text(_config(port, revived.addr, receiver.url, tmp_path, "threads = 2"))
        os.kill(proc.pid, signal.SIGHUP)
        wait_for(lambda: "reload_config_fail" in receiver.categories(), timeout=20,
                 what="the failed reload event")
        # the sender is one FIFO thread: every duplicate of an earlier event would be here
        assert receiver.categories() == ["backend_status", "backend_status", "diff_config",
                                         "reload_config", "reload_config_fail"]
        assert receiver.posts[2]["message"].splitlines() == [
            "[MODIFIED] basic", "- log_level = None", "+ log_level = 'INFO'"]
        assert "pingap.toml: line 9: invalid TOML" in receiver.posts[4]["message"]
    finally:
        revived.stop()


def test_certificates_close_to_expiry_notify_once_per_host(tmp_path: Path, pingap) -> None:
    """Two workers, then a reload: one tls_validity event at start naming only the
    certificate within its buffer_days (the next check is a day later)."""
    from tests.support.h2_backend import make_certificates

    certs = make_certificates(tmp_path)  # valid for 30 more days
    hook = Receiver()
    port = free_port()
    try:
        config = f"""
[basic]
grace_period = "1s"
threads = 2
webhook = "{hook.url}"
webhook_notifications = ["tls_validity", "reload_config"]

[certificates.close]
tls_cert = "{certs['cert']}"
tls_key = "{certs['key']}"
buffer_days = 40

[certificates.fine]
tls_cert = "{certs['self_cert']}"
tls_key = "{certs['self_key']}"

[upstreams.u]
addrs = ["127.0.0.1:9"]

[locations.all]
upstream = "u"

[servers.s]
addr = "127.0.0.1:{port}"
locations = ["all"]
"""
        proc = pingap(config, port=port)
        wait_for(lambda: "tls_validity" in hook.categories(), timeout=20,
                 what="the tls_validity event")
        assert hook.posts[0]["level"] == "warn"
        assert hook.posts[0]["message"] == "certificate close will be expired"
        os.kill(proc.pid, signal.SIGHUP)
        wait_for(lambda: "reload_config" in hook.categories(), timeout=20,
                 what="the reload event")
        assert hook.categories() == ["tls_validity", "reload_config"]
    finally:
        hook.stop()


def test_admin_restart_sends_restart_or_restart_fail(tmp_path: Path, backends) -> None:
    """``/api/restart`` is reported as pingap's restart / restart_fail, not as a reload."""
    from tests.integration.test_admin import Admin
    from tests.support.proc import PingapProcess, port_open

    backend = backends("app")
    hook = Receiver()
    port, admin_port = free_port(), free_port()
    conf = tmp_path / "pingap.toml"
    good = _config(port, backend.addr, hook.url, tmp_path).replace(
        '["backend_status", "diff_config", "reload_config",\n                         '
        '"reload_config_fail"]',
        '["restart", "restart_fail", "reload_config", "reload_config_fail"]')
    assert '"restart_fail"' in good
    conf.write_text(good)
    proc = PingapProcess(conf, port, tmp_path,
                         args=["--admin", f"admin:s3cret@127.0.0.1:{admin_port}"])
    try:
        wait_for(lambda: port_open(admin_port), what="the admin port")
        admin = Admin(admin_port)
        status, _, body = admin.call("POST", "/api/restart")
        assert status == 200 and body["reload"]["ok"], body
        wait_for(lambda: "restart" in hook.categories(), timeout=20, what="the restart event")
        assert hook.posts[0]["level"] == "info"
        assert hook.posts[0]["message"].startswith(f"Restart now, pid:{proc.pid}")

        conf.write_text(good.replace('upstream = "u"', 'upstream = "missing"'))
        status, _, body = admin.call("POST", "/api/restart")
        assert status == 500 and not body["reload"]["ok"], body
        wait_for(lambda: "restart_fail" in hook.categories(), timeout=20,
                 what="the restart_fail event")
        assert hook.posts[1]["level"] == "error"
        assert "locations.all.upstream" in hook.posts[1]["message"]
        assert hook.categories() == ["restart", "restart_fail"]
    finally:
        proc.stop()
        hook.stop()


def _hooked_config(port: int, hook: str, categories: list[str], *, addrs: list[str],
                   basic: str = "", upstream: str = "", certificate: str = "") -> str:
    """Two workers, the webhook subscribed to ``categories``, upstream ``u`` on ``addrs``."""
    return f"""
[basic]
grace_period = "1s"
threads = 2
webhook = "{hook}"
webhook_notifications = {json.dumps(categories)}
{basic}
[upstreams.u]
addrs = {json.dumps(addrs)}
{upstream}
[locations.all]
upstream = "u"

[servers.s]
addr = "127.0.0.1:{port}"
locations = ["all"]
{certificate}
"""


def test_unreadable_certificate_sends_parse_certificate_fail_once(tmp_path: Path, backends,
                                                                  pingap) -> None:
    """A reload to a config whose certificate cannot be parsed: pingap's
    parse_certificate_fail (then reload_config_fail: the old config keeps serving)."""
    from tests.support.h2_backend import make_certificates

    certs = make_certificates(tmp_path)
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n"
                      "-----END CERTIFICATE-----\n")
    backend = backends("app")
    hook = Receiver()
    port = free_port()
    categories = ["parse_certificate_fail", "reload_config", "reload_config_fail"]

    def config(cert: str, level: str = "") -> str:
        return _hooked_config(port, hook.url, categories, addrs=[backend.addr], basic=level,
                              certificate=f'[certificates.site]\ntls_cert = "{cert}"\n'
                                          f'tls_key = "{certs["key"]}"\n')
    try:
        proc = pingap(config(certs["cert"]), port=port)
        Path(proc.config).write_text(config(str(broken)))
        os.kill(proc.pid, signal.SIGHUP)
        wait_for(lambda: "reload_config_fail" in hook.categories(), timeout=20,
                 what="the failed reload")
        first = hook.posts[0]
        assert first == {"name": "pingap", "level": "error", "hostname": first["hostname"],
                         "ip": first["ip"], "category": "parse_certificate_fail",
                         "message": first["message"]}
        assert first["message"].startswith("tls_cert: ") and first["message"].endswith("(site)")
        # a later event from the same FIFO sender: nothing was sent twice meanwhile
        Path(proc.config).write_text(config(certs["cert"], 'log_level = "INFO"'))
        os.kill(proc.pid, signal.SIGHUP)
        wait_for(lambda: "reload_config" in hook.categories(), timeout=20,
                 what="the good reload")
        assert hook.categories() == ["parse_certificate_fail", "reload_config_fail",
                                     "reload_config"]
    finally:
        hook.stop()


def test_a_name_that_stops_resolving_sends_service_discover_fail_once(tmp_path: Path,
                                                                      backends,
                                                                      pingap) -> None:
    """An upstream on DNS discovery (a host name among its addresses) whose name does not
    resolve: one service_discover_fail for the host (two workers), not one per pass (every
    200 ms here) nor per worker, nor again after a reload while it lasts."""
    backend = backends("app")
    hook = Receiver()
    port = free_port()
    categories = ["service_discover_fail", "reload_config"]

    def config(level: str = "") -> str:
        return _hooked_config(port, hook.url, categories,
                              addrs=[backend.addr, "missing.invalid:80"], basic=level,
                              upstream='update_frequency = "200ms"')

    def passes() -> int:
        return proc.log().count('dns discovery resolve failed: ["missing.invalid"]')

    try:
        proc = pingap(config(), port=port)
        wait_for(lambda: "service_discover_fail" in hook.categories(), timeout=20,
                 what="the discovery event")
        event = hook.posts[0]
        assert event == {"name": "pingap", "level": "warn", "hostname": event["hostname"],
                         "ip": event["ip"], "category": "service_discover_fail",
                         "message": 'dns discovery resolve failed: ["missing.invalid"] '
                                    '(upstream u)'}
        for level in ("INFO", "WARN"):
            seen = passes()
            wait_for(lambda seen=seen: passes() >= seen + 3, what="three more failed passes")
            reloads = hook.categories().count("reload_config")
            Path(proc.config).write_text(config(f'log_level = "{level}"'))
            os.kill(proc.pid, signal.SIGHUP)
            wait_for(lambda reloads=reloads: hook.categories().count("reload_config") ==
                     reloads + 1, timeout=20, what="the reload event")
        assert hook.categories() == ["service_discover_fail", "reload_config",
                                     "reload_config"]
    finally:
        hook.stop()


def test_an_upstream_with_every_backend_down_sends_upstream_status(tmp_path: Path, backends,
                                                                   pingap) -> None:
    """pingap's upstream_status: "Upstream unhealthy" once every backend of an upstream is
    down, "Upstream healthy" once one is back; one event each for the host (two workers)."""
    backend = backends("app")
    hook = Receiver()
    port = free_port()
    check = ('health_check = "tcp://u?check_frequency=200ms&failure=1&success=1'
             '&connection_timeout=200ms"')
    try:
        pingap(_hooked_config(port, hook.url, ["upstream_status"], addrs=[backend.addr],
                              upstream=check), port=port)
        backend_port = backend.port
        backend.stop()
        wait_for(lambda: "upstream_status" in hook.categories(), timeout=30,
                 what="the upstream down event")
        down = hook.posts[0]
        assert down == {"name": "pingap", "level": "error", "hostname": down["hostname"],
                        "ip": down["ip"], "category": "upstream_status", "message": "u"}
        revived = BackendProcess(tmp_path, "app", backend_port)
        try:
            wait_for(lambda: len(hook.posts) == 2, timeout=30, what="the upstream up event")
            assert (hook.posts[1]["level"], hook.posts[1]["message"]) == ("info", "u")
        finally:
            revived.stop()
        assert hook.categories() == ["upstream_status", "upstream_status"]
    finally:
        hook.stop()
