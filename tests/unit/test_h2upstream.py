"""The pure parts of upstream TLS/HTTP/2 and gRPC health checks: header mapping, server
names and pool keys, the config → runtime fields, and the hand-encoded gRPC messages
(checked against the real protobuf classes of grpcio-health-checking)."""

from __future__ import annotations

import pytest
from grpc_health.v1 import health_pb2

from pingap.config import load_config_text
from pingap.health import (
    GRPC_SERVING,
    grpc_health_request,
    grpc_health_status,
    is_grpc_serving,
    parse_health_check,
)
from pingap.runtime import build_runtime
from pingap.upstream import Backend
from workers.h2upstream import request_headers, trailer_headers
from workers.pool import pool_key, server_name


def upstream(body: str):  # type: ignore[no-untyped-def]
    config = load_config_text(f'[upstreams.u]\naddrs = ["127.0.0.1:9000"]\n{body}\n'
                              '[locations.l]\nupstream = "u"\n'
                              '[servers.s]\naddr = "127.0.0.1:1"\nlocations = ["l"]\n')
    runtime = build_runtime(config)
    return runtime.upstreams["u"], config, runtime


# --- config and runtime ----------------------------------------------------------------


def test_upstream_tls_fields_reach_the_runtime_without_warnings() -> None:
    up, config, runtime = upstream('sni = "api.example"\nverify_cert = false\n'
                                   'alpn = "h2h1"\nmax_h2_streams = 20\n'
                                   'health_check = "grpc://h?service=s"\n')
    assert (up.tls, up.sni, up.verify_cert, up.alpn, up.max_h2_streams) == (
        True, "api.example", False, "H2H1", 20)
    assert config.warnings == ()
    assert runtime.warnings == []  # grpc checks are real now: no "probed as TCP" warning


def test_upstream_defaults_are_plain_http1() -> None:
    up, _, _ = upstream("")
    assert (up.tls, up.sni, up.verify_cert, up.alpn, up.max_h2_streams) == (
        False, None, True, "H1", 1)


# --- server names and pool keys ----------------------------------------------------------


@pytest.mark.parametrize(("host", "expected"), [
    ("app.example:8443", "app.example"),
    ("app.example", "app.example"),
    ("[::1]:443", "::1"),
    (None, "127.0.0.1"),      # no request host: the backend's
])
def test_sni_host_takes_the_request_host_without_port(host: str | None,
                                                      expected: str) -> None:
    up, _, _ = upstream('sni = "$host"\n')
    assert server_name(up, up.backends[0], host) == expected


def test_pool_keys_separate_tls_settings_and_server_names() -> None:
    plain, _, _ = upstream("")
    h2c, _, _ = upstream('alpn = "H2"\n')
    by_host, _, _ = upstream('sni = "$host"\n')
    backend = Backend("127.0.0.1", 9000)
    assert pool_key(plain, backend) == "127.0.0.1:9000"  # HTTP/1.1 as before
    assert pool_key(h2c, backend) != pool_key(plain, backend)
    assert pool_key(by_host, backend, "a.example") != pool_key(by_host, backend, "b.example")
    assert server_name(plain, backend, "a.example") is None


# --- HTTP/1 headers to HTTP/2 ------------------------------------------------------------


def test_request_headers_drop_connection_specific_fields() -> None:
    block = request_headers(b"POST", b"https", b"", b"/p?q=1", [
        (b"Host", b"api.example"), (b"Connection", b"keep-alive, x-hop"),
        (b"Keep-Alive", b"timeout=5"), (b"Proxy-Connection", b"keep-alive"),
        (b"Transfer-Encoding", b"chunked"), (b"Upgrade", b"h2c"), (b"TE", b"gzip"),
        (b"X-Trace", b"1"), (b"Content-Type", b"text/plain"),
    ])
    assert block == [(b":method", b"POST"), (b":scheme", b"https"),
                     (b":authority", b"api.example"), (b":path", b"/p?q=1"),
                     (b"x-trace", b"1"), (b"content-type", b"text/plain")]


def test_te_trailers_survives_and_an_explicit_authority_wins() -> None:
    block = request_headers(b"GET", b"http", b"backend:80", b"/", [
        (b"Host", b"client.example"), (b"TE", b"Trailers")])
    assert (b":authority", b"backend:80") in block
    assert (b"te", b"trailers") in block


def test_trailer_headers_are_lower_case_without_hop_fields() -> None:
    assert trailer_headers([(b"X-Sum", b"1"), (b"Connection", b"close")]) == [
        (b"x-sum", b"1")]


# --- gRPC health messages ----------------------------------------------------------------


@pytest.mark.parametrize("service", ["", "svc", "pingap.Health", "s" * 300])
def test_health_request_is_a_framed_health_check_request(service: str) -> None:
    framed = grpc_health_request(service)
    assert framed[0] == 0 and int.from_bytes(framed[1:5], "big") == len(framed) - 5
    message = health_pb2.HealthCheckRequest()
    message.ParseFromString(framed[5:])
    assert message.service == service


def frame(message: bytes) -> bytes:
    return b"\x00" + len(message).to_bytes(4, "big") + message


@pytest.mark.parametrize("status", ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"])
def test_health_response_status_is_read_from_the_real_message(status: str) -> None:
    value = health_pb2.HealthCheckResponse.ServingStatus.Value(status)
    body = frame(health_pb2.HealthCheckResponse(status=value).SerializeToString())
    assert grpc_health_status(body) == value
    assert is_grpc_serving(200, b"0", body) is (status == "SERVING")


def test_health_response_skips_unknown_fields_and_rejects_garbage() -> None:
    # field 2 (string "x"), field 3 (fixed64), then status = SERVING
    message = b"\x12\x01x" + b"\x19" + bytes(8) + b"\x08\x01"
    assert grpc_health_status(frame(message)) == GRPC_SERVING
    assert grpc_health_status(b"\x01" + frame(b"\x08\x01")[1:]) is None  # compressed
    assert grpc_health_status(frame(b"\x08")) is None                  # truncated varint
    assert grpc_health_status(frame(b"\x08\x01")[:-1]) is None         # short message
    assert grpc_health_status(b"") is None


def test_serving_needs_http_200_and_grpc_status_0() -> None:
    body = frame(b"\x08\x01")
    assert is_grpc_serving(200, b"0", body)
    assert not is_grpc_serving(200, b"5", body)
    assert not is_grpc_serving(200, None, body)
    assert not is_grpc_serving(503, b"0", body)


def test_grpc_url_with_tls_flag() -> None:
    spec = parse_health_check("grpc://api.local?service=svc&tls&check_frequency=1s")
    assert (spec.scheme, spec.host, spec.service, spec.tls) == ("grpc", "api.local", "svc",
                                                                True)
