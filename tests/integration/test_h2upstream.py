"""Upstream TLS, HTTP/2 (ALPN h2 and h2c) and gRPC health checks, against real servers.

The client side runs ``workers.pool``/``workers.h2upstream`` under gevent in a child
interpreter (``tests.support.h2_scenarios``: the test process is not monkey-patched); the
servers are real: ``tests.support.h2_backend`` (HTTP/2 on the h2 library, TLS with ALPN,
HTTP/1.1 fallback) and a grpcio server with the standard health service. The gRPC
health check is also exercised end to end through the real ``pingap`` binary.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.client import request
from tests.support.configs import proxy_config
from tests.support.grpc_health_server import GrpcHealthServer
from tests.support.h2_backend import make_certificates
from tests.support.proc import ROOT, Process, free_port, port_open, wait_for

MB = 1024 * 1024


class H2Backend(Process):
    """tests/support/h2_backend.py on a free port, recording to a JSON-lines file."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.port = free_port()
        self.record = tmp / f"h2-{self.port}.jsonl"
        self.record.touch()
        super().__init__([sys.executable, "-m", "tests.support.h2_backend", "--port",
                          str(self.port), "--record", str(self.record), *args],
                         log=tmp / f"h2-{self.port}.log")
        wait_for(lambda: port_open(self.port), what=f"h2 backend on {self.port}")

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def events(self, kind: str) -> list[dict[str, Any]]:
        lines = self.record.read_text().splitlines()
        return [e for e in map(json.loads, filter(None, lines)) if e.get("event") == kind]


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, Path]:
    return make_certificates(tmp_path)


@pytest.fixture
def h2_backend(tmp_path: Path) -> Iterator[Callable[..., H2Backend]]:
    started: list[H2Backend] = []

    def start(*args: str) -> H2Backend:
        backend = H2Backend(tmp_path, *args)
        started.append(backend)
        return backend

    yield start
    for backend in started:
        backend.stop()


@pytest.fixture
def grpc_server(tmp_path: Path) -> Iterator[Callable[..., GrpcHealthServer]]:
    started: list[GrpcHealthServer] = []

    def start(tls: tuple[Path, Path] | None = None) -> GrpcHealthServer:
        server = GrpcHealthServer(tmp_path / f"grpc-{len(started)}.log", tls=tls)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def scenario(name: str, *, trust: Path | None = None, **args: Any) -> dict[str, Any]:
    """Run one scenario of tests.support.h2_scenarios; its JSON result.

    ``trust`` is the CA bundle the client verifies against (SSL_CERT_FILE); without it
    the system store is used, which does not know the test CA.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    if trust is not None:
        env["SSL_CERT_FILE"] = str(trust)
    done = subprocess.run([sys.executable, "-m", "tests.support.h2_scenarios", name,
                           json.dumps(args)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def upstream(addr: str, extra: str = "") -> str:
    return f'addrs = ["{addr}"]\n{extra}'


# --- TLS ---------------------------------------------------------------------------------


def test_tls_verified_against_a_trusted_ca_negotiates_h2(h2_backend, certs) -> None:
    backend = h2_backend("--tls", str(certs["cert"]), str(certs["key"]))
    out = scenario("request", trust=certs["ca"],
                   upstream=upstream(backend.addr, 'sni = "localhost"\nalpn = "H2H1"\n'))
    assert out["status"] == 200
    assert (out["protocol"], out["http_version"]) == ("h2", "2")
    assert out["json"]["scheme"] == "https" and out["json"]["protocol"] == "h2"
    assert out["tls_handshake_time"] > 0
    assert [c["protocol"] for c in backend.events("connection")] == ["h2"]


def test_tls_hostname_mismatch_fails_before_any_request(h2_backend, certs) -> None:
    backend = h2_backend("--tls", str(certs["cert"]), str(certs["key"]))
    out = scenario("request", trust=certs["ca"],
                   upstream=upstream(backend.addr, 'sni = "wrong.example"\n'))
    assert out["type"] == "UpstreamConnectError" and out["retryable"] is True
    assert "certificate verify failed" in out["error"] and "wrong.example" in out["error"]
    assert backend.events("request") == []


def test_tls_untrusted_ca_fails_when_verifying(h2_backend, certs) -> None:
    backend = h2_backend("--tls", str(certs["cert"]), str(certs["key"]))
    out = scenario("request", upstream=upstream(backend.addr, 'sni = "localhost"\n'))
    assert out["type"] == "UpstreamConnectError"
    assert "certificate verify failed" in out["error"]


def test_verify_cert_false_accepts_a_self_signed_certificate(h2_backend, certs) -> None:
    backend = h2_backend("--tls", str(certs["self_cert"]), str(certs["self_key"]))
    verified = scenario("request", trust=certs["ca"],
                        upstream=upstream(backend.addr, 'sni = "localhost"\n'))
    assert "self-signed certificate" in verified["error"]
    out = scenario("request", trust=certs["ca"], upstream=upstream(
        backend.addr, 'sni = "localhost"\nverify_cert = false\nalpn = "h2"\n'))
    assert out["status"] == 200 and out["protocol"] == "h2"


def test_sni_host_uses_the_request_host(h2_backend, certs) -> None:
    backend = h2_backend("--tls", str(certs["cert"]), str(certs["key"]))
    config = upstream(backend.addr, 'sni = "$host"\nalpn = "H2H1"\n')
    good = scenario("request", trust=certs["ca"], upstream=config, host="localhost:8443")
    assert good["status"] == 200 and good["json"]["authority"] == "localhost:8443"
    bad = scenario("request", trust=certs["ca"], upstream=config, host="other.example")
    assert "other.example" in bad["error"] and "certificate verify failed" in bad["error"]


def test_h2h1_falls_back_to_http1_on_an_h1_only_server(h2_backend, certs) -> None:
    backend = h2_backend("--tls", str(certs["cert"]), str(certs["key"]), "--alpn",
                         "http/1.1")
    out = scenario("bodies", trust=certs["ca"],
                   upstream=upstream(backend.addr, 'sni = "localhost"\nalpn = "H2H1"\n'))
    echo = out["echo"]
    assert (echo["status"], echo["protocol"], echo["http_version"]) == (200, "http/1.1", "1.1")
    assert echo["json"]["http_version"] == "1.1"  # the HTTP/1.1 backend answered
    assert echo["json"]["trailers"] == [["X-Sum", "s1"]]
    assert out["upload"]["json"]["sha256"] == out["expected_upload"]["sha256"]
    assert out["trailers"]["trailers"] == [["X-Checksum", "abc123"]]
    # the TLS keep-alive connection went back to the pool and carried all three
    assert out["upload"]["reused"] and out["trailers"]["reused"]
    assert [c["protocol"] for c in backend.events("connection")] == ["http/1.1"]


# --- h2c: bodies, trailers, flow control ---------------------------------------------------


def test_h2c_bodies_and_trailers_both_ways_on_one_connection(h2_backend) -> None:
    backend = h2_backend()
    out = scenario("bodies", upstream=upstream(backend.addr, 'alpn = "H2"\n'))
    echo = out["echo"]
    assert (echo["status"], echo["protocol"], echo["http_version"]) == (200, "h2", "2")
    seen = echo["json"]
    assert (seen["protocol"], seen["method"], seen["path"]) == ("h2c", "POST", "/echo?x=1")
    assert seen["length"] == 100_000 and seen["sha256"] == out["expected_echo_sha256"]
    assert seen["trailers"] == [["x-sum", "s1"]]
    # connection-specific headers are gone, TE: trailers survives, names are lower-case
    assert seen["headers"] == [["x-custom", "yes"], ["te", "trailers"]]
    assert out["upload"]["json"]["length"] == out["expected_upload"]["length"] == 5 * MB
    assert out["upload"]["json"]["sha256"] == out["expected_upload"]["sha256"]
    trailers = out["trailers"]
    assert trailers["text"] == "hello" and trailers["trailers"] == [["x-checksum", "abc123"]]
    assert out["upload"]["reused"] and trailers["reused"]
    assert len(backend.events("connection")) == 1


def test_slow_consumer_holds_the_backend_at_the_flow_control_window(h2_backend) -> None:
    backend = h2_backend()
    out = scenario("slow_consumer", record=str(backend.record),
                   upstream=upstream(backend.addr, 'alpn = "H2"\n'))
    window = out["stream_window"]
    # nothing consumed: the backend blocked after exactly one window, all of it held here
    assert out["first_block_sent"] == window
    assert out["buffered_while_stalled"] == window
    assert out["most_buffered"] <= window
    assert out["blocks"] >= 2  # it blocked again as the slow reader went on
    assert out["total"] == 5 * MB and out["sha256"] == out["expected_sha256"]


def test_twenty_concurrent_streams_share_one_connection(h2_backend) -> None:
    backend = h2_backend()
    out = scenario("multiplex", n=20, barrier=20,
                   upstream=upstream(backend.addr, 'alpn = "H2"\nmax_h2_streams = 100\n'))
    # every answer needed all twenty requests to be in flight at the same time
    assert out["statuses"] == [200] * 20
    assert out["protocols"] == ["h2"]
    assert len(out["connections"]) == 1
    assert len(backend.events("connection")) == 1


def test_the_backends_stream_limit_spreads_requests_over_connections(h2_backend) -> None:
    backend = h2_backend("--max-streams", "5")
    out = scenario("multiplex", n=20, barrier=5,
                   upstream=upstream(backend.addr, 'alpn = "H2"\nmax_h2_streams = 100\n'))
    assert out["statuses"] == [200] * 20  # no stream over the limit (h2 would refuse)
    assert len(out["connections"]) == 4


def test_default_max_h2_streams_is_one_stream_per_connection(h2_backend) -> None:
    backend = h2_backend()
    out = scenario("multiplex", n=4, barrier=4, upstream=upstream(backend.addr, 'alpn = "H2"\n'))
    assert out["statuses"] == [200] * 4
    assert len(out["connections"]) == 4


def test_goaway_lets_accepted_streams_finish_and_moves_new_ones(h2_backend) -> None:
    backend = h2_backend()
    out = scenario("goaway", upstream=upstream(backend.addr, 'alpn = "H2"\nmax_h2_streams = 10\n'))
    assert out["doomed"]["retryable"] is True and out["doomed"]["response_started"] is False
    assert "GOAWAY" in out["doomed"]["error"]
    assert out["available_after_goaway"] is False
    # stream 1's answer came in the same read as the GOAWAY, and still got through
    held = out["held"]
    assert held["status"] == 200 and held["json"] == {"held": 1}
    after = out["after"]
    assert after["status"] == 200 and after["reused"] is False
    first, second = backend.events("connection")
    assert after["json"]["connection"] == second["connection"] != first["connection"]


def test_refused_stream_is_retryable_and_the_connection_lives_on(h2_backend) -> None:
    backend = h2_backend()
    out = scenario("refused", upstream=upstream(backend.addr, 'alpn = "H2"\n'))
    assert out["refused"]["retryable"] is True
    assert "REFUSED_STREAM" in out["refused"]["error"]
    assert out["again"]["status"] == 200 and out["again"]["reused"] is True
    assert len(backend.events("connection")) == 1


def test_h2c_to_an_http1_only_backend_fails_to_connect(backends) -> None:
    h1 = backends()
    out = scenario("request", upstream=upstream(h1.addr, 'alpn = "H2"\n'))
    assert out["type"] == "UpstreamConnectError" and out["retryable"] is True
    assert "HTTP/2 preface" in out["error"]


def test_a_burst_to_a_silent_backend_fails_together_not_in_turn() -> None:
    # a listener nobody accepts from: TCP connects (the kernel completes the handshake)
    # but no SETTINGS ever come back
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        addr = f"127.0.0.1:{silent.getsockname()[1]}"
        out = scenario("burst_failure", n=10, upstream=upstream(
            addr, 'alpn = "H2"\nconnection_timeout = "500ms"\n'))
    assert out["errors"] == [f"UpstreamConnectError: {addr} did not answer the HTTP/2 "
                             "preface"] * 10
    # one connect attempt timed out and the nine requests waiting on it failed with it
    # (in turn, they would take ten timeouts)
    assert out["elapsed"] < 2.5


# --- gRPC health checks --------------------------------------------------------------------


def test_grpc_probe_follows_the_serving_status(grpc_server) -> None:
    server = grpc_server()
    server.set("svc", "SERVING")
    server.set("down", "NOT_SERVING")

    def healthy(url: str, addr: str = server.addr) -> bool:
        return bool(scenario("grpc_probe", url=url, addr=addr)["healthy"])

    assert healthy("grpc://127.0.0.1?service=svc")
    assert not healthy("grpc://127.0.0.1?service=down")
    assert not healthy("grpc://127.0.0.1?service=missing")  # NOT_FOUND from the server
    server.set("down", "SERVING")
    assert healthy("grpc://127.0.0.1?service=down")
    assert not healthy("grpc://127.0.0.1?service=svc&connection_timeout=500ms",
                       addr=f"127.0.0.1:{free_port()}")  # nothing listens


def test_grpc_probe_over_tls_with_the_tls_flag(grpc_server, certs) -> None:
    server = grpc_server(tls=(certs["self_cert"], certs["self_key"]))
    server.set("svc", "SERVING")
    assert scenario("grpc_probe", url="grpc://localhost?service=svc&tls",
                    addr=server.addr)["healthy"]
    # without the flag the probe speaks h2c to a TLS port: unhealthy, and quickly
    plain = scenario("grpc_probe", url="grpc://localhost?service=svc&read_timeout=1s",
                     addr=server.addr)
    assert plain["healthy"] is False and plain["elapsed"] < 2


def test_grpc_health_check_through_pingap(grpc_server, pingap) -> None:
    server = grpc_server()
    server.set("svc", "NOT_SERVING")
    port = free_port()
    proxy = pingap(proxy_config(port, server.addr, upstream=(
        'health_check = "grpc://127.0.0.1?service=svc&check_frequency=200ms'
        '&success=1&failure=1"\n')), port=port)
    flip = f"upstream u({server.addr}) becomes"
    wait_for(lambda: f"{flip} unhealthy" in proxy.log(), what="the backend to go unhealthy")
    reply = request(port, path="/x")
    assert reply.status == 503  # no healthy backend left
    server.set("svc", "SERVING")
    wait_for(lambda: f"{flip} healthy" in proxy.log(), what="the backend to recover")
    # back in rotation: the proxy now tries it (an HTTP/1.1 request a gRPC server rejects)
    assert request(port, path="/x").status != 503
    assert "grpc:// health checks are not supported" not in proxy.log()


def test_proxy_retries_a_refused_stream_once_then_answers_502(h2_backend, pingap) -> None:
    """Through the real proxy, alpn = "H2": a stream the backend refuses never reached it,
    so it goes again once (its connection may have been going away) even with the default
    max_retries = 0; refused again, the client gets 502 and the retries stop there."""
    backend = h2_backend()
    port = free_port()
    pingap(proxy_config(port, backend.addr, upstream='alpn = "H2"'), port=port)
    assert request(port, path="/echo").status == 200  # h2c to the backend works
    before = len(backend.events("request"))
    reply = request(port, path="/refuse")
    assert reply.status == 502
    refused = [e for e in backend.events("request")[before:] if e.get("path") == "/refuse"]
    assert len(refused) == 2
