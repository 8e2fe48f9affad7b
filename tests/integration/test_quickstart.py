"""pingap's config-less start: ``--upstream``/``--addr`` (+ ``--cert``/``--key``) proxy
with no file, ``--template`` prints pingap's template, and wrong combinations fail."""

from __future__ import annotations

import http.client
import ssl
import subprocess
import tomllib
from pathlib import Path

from tests.support.client import request
from tests.support.h2_backend import make_certificates
from tests.support.proc import Process, free_port, port_open, wait_for


def _pingap(tmp_path: Path, port: int, *args: str) -> Process:
    proc = Process(["pingap", *args], log=tmp_path / f"pingap-{port}.log")
    wait_for(lambda: port_open(port) or proc.proc.poll() is not None, what="pingap")
    assert proc.proc.poll() is None, proc.log()
    return proc


def test_upstream_and_addr_proxy_without_a_config_file(tmp_path: Path, backends) -> None:
    backend = backends("app")
    port = free_port()
    proc = _pingap(tmp_path, port, "--upstream", backend.addr, "--addr", f"127.0.0.1:{port}")
    try:
        reply = request(port, "GET", "/hello")
        assert reply.status == 200 and reply.header("X-Backend") == "app"
        assert backend.requests()[-1]["target"] == "/hello"
    finally:
        assert proc.stop() == 0


def test_cert_directory_serves_tls_and_domain_restricts_hosts(tmp_path: Path, backends
                                                              ) -> None:
    backend = backends("app")
    certs = make_certificates(tmp_path)
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir()
    (tls_dir / "fullchain.pem").write_bytes(certs["cert"].read_bytes())
    (tls_dir / "privkey.pem").write_bytes(certs["key"].read_bytes())
    port = free_port()
    proc = _pingap(tmp_path, port, "--upstream", backend.addr, "--addr", f"127.0.0.1:{port}",
                   "--cert", str(tls_dir), "--domain", "localhost")
    try:
        context = ssl.create_default_context(cafile=str(certs["ca"]))
        conn = http.client.HTTPSConnection("localhost", port, context=context, timeout=10)
        conn.request("GET", "/tls")
        reply = conn.getresponse()
        assert reply.status == 200 and reply.getheader("X-Backend") == "app"
        conn.close()
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
        context.check_hostname = False
        conn.request("GET", "/other", headers={"Host": "other.example"})
        assert conn.getresponse().status == 404  # location host = the domain only
        conn.close()
    finally:
        proc.stop()


def test_template_is_pingaps_and_valid(tmp_path: Path) -> None:
    run = subprocess.run(["pingap", "--template"], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0
    template = tomllib.loads(run.stdout)
    assert template["upstreams"]["httpUpstream"]["addrs"] == ["127.0.0.1:5000"]
    assert template["servers"]["httpServer"]["addr"] == "0.0.0.0:80"
    path = tmp_path / "template.toml"
    path.write_text(run.stdout)
    check = subprocess.run(["pingap", "-t", "-c", str(path)], capture_output=True, text=True,
                           timeout=30)
    assert check.returncode == 0, check.stderr


def test_wrong_quick_start_flags_are_refused(tmp_path: Path) -> None:
    cases = [
        (["--upstream", "127.0.0.1:1", "-c", str(tmp_path / "x.toml")], "cannot be used with"),
        (["--upstream", " , "], "--upstream should not be empty"),
        (["--upstream", "127.0.0.1:1", "--key", str(tmp_path / "k")], "--key should be used"),
        (["--upstream", "127.0.0.1:1", "--cert", str(tmp_path / "none")], "does not exist"),
        (["--addr", "127.0.0.1:1"], "go with --upstream"),
    ]
    for args, message in cases:
        run = subprocess.run(["pingap", *args], capture_output=True, text=True, timeout=30)
        assert run.returncode == 1 and message in run.stderr, (args, run.stderr)
