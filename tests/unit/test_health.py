"""Tests for pingap.health: health_check URL parsing, the flip rule and the HTTP probe."""

from __future__ import annotations

from typing import Any

import pytest

from pingap import __version__
from pingap.health import (
    DEFAULT_HEALTH_CHECK,
    HealthCheckSpec,
    HealthTracker,
    build_http_probe_request,
    is_healthy_status,
    parse_health_check,
)


def test_unset_health_check_is_a_tcp_connect_flipping_on_one_result() -> None:
    spec = parse_health_check(None)
    assert spec is DEFAULT_HEALTH_CHECK
    assert (spec.scheme, spec.host, spec.path) == ("tcp", "", "")
    assert (spec.connection_timeout, spec.read_timeout, spec.check_frequency) == (
        3,
        3,
        10,
    )
    assert (spec.success, spec.failure) == (1, 1)
    assert not (spec.reuse or spec.tls or spec.parallel or spec.service)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("tcp://upstream", {"scheme": "tcp", "host": "upstream", "path": ""}),
        ("tcp://127.0.0.1:3000?check_frequency=1s", {"check_frequency": 1.0}),
        (
            "http://example.com/ping",
            {
                "scheme": "http",
                "host": "example.com",
                "path": "/ping",
                "connection_timeout": 3.0,
                "read_timeout": 3.0,
                "check_frequency": 10.0,
                "success": 1,
                "failure": 2,
                "tls": False,
            },
        ),
        ("http://example.com", {"path": "/"}),
        ("http://example.com:8080/ping", {"host": "example.com", "path": "/ping"}),
        ("http://u:p@example.com/ping", {"host": "example.com"}),
        ("http://[::1]:8080/ping", {"host": "[::1]"}),
        ("http://h/health?x=1", {"path": "/health?x=1"}),
        (
            "http://h/health?x=1&success=3&flag&y=a%20b&failure=5",
            {"path": "/health?x=1&flag&y=a%20b", "success": 3, "failure": 5},
        ),
        (
            "http://h/p?connection_timeout=500ms&read_timeout=2s&check_frequency=1m",
            {
                "path": "/p",
                "connection_timeout": 0.5,
                "read_timeout": 2.0,
                "check_frequency": 60.0,
            },
        ),
        (
            "http://h/p?check_frequency=2s",
            {"check_frequency": 2.0},
        ),  # not rounded to 10s
        ("http://h/p?check_frequency=1m30s", {"check_frequency": 90.0}),
        ("http://h/p?reuse&parallel", {"reuse": True, "parallel": True, "path": "/p"}),
        ("http://h/p?tls", {"tls": False, "path": "/p"}),
        ("https://h/p", {"scheme": "https", "tls": True}),
        (
            "grpc://h?service=pingap.Health",
            {"scheme": "grpc", "service": "pingap.Health"},
        ),
        ("grpc://h:50051?service=a&tls", {"service": "a", "tls": True, "path": ""}),
        ("grpc://h?service=", {"service": ""}),
    ],
)
def test_parse_health_check(url: str, expected: dict[str, Any]) -> None:
    spec = parse_health_check(url)
    for field, value in expected.items():
        assert getattr(spec, field) == value, field


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("udp://h", "scheme"),
        ("h/ping", "scheme"),
        ("", "scheme"),
        ("http:///ping", "no host"),
        ("http://h:notaport/ping", "invalid health check url"),
        ("http://h/p?success=0", "success"),
        ("http://h/p?failure=x", "failure"),
        ("http://h/p?failure", "failure"),
        ("http://h/p?failure=%C2%B2", "failure"),
        ("http://h/p?check_frequency=0s", "check_frequency"),
        ("http://h/p?check_frequency=10", "check_frequency"),
        ("http://h/p?read_timeout=3x", "read_timeout"),
        ("http://h/p?connection_timeout=", "connection_timeout"),
        ("http://h/a b", "whitespace"),
        ("http://h/p\r\nX: y", "whitespace"),
        ("http://h/é", "ASCII"),
    ],
)
def test_parse_health_check_rejects(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_health_check(url)


def test_tracker_flips_after_consecutive_results() -> None:
    tracker = HealthTracker(success=2, failure=3)
    assert tracker.healthy
    assert [tracker.record(False), tracker.record(False)] == [None, None]
    assert tracker.record(True) is None  # a success breaks the failure streak
    assert [tracker.record(False), tracker.record(False)] == [None, None]
    assert tracker.healthy
    assert tracker.record(False) is False
    assert not tracker.healthy
    assert tracker.record(False) is None  # already unhealthy: no second flip
    assert tracker.record(True) is None
    assert tracker.record(False) is None  # a failure breaks the success streak
    assert tracker.record(True) is None
    assert tracker.record(True) is True
    assert tracker.healthy
    assert tracker.record(True) is None


def test_tracker_for_default_and_explicit_specs() -> None:
    default = HealthTracker.for_spec(parse_health_check(None))
    assert default.record(False) is False
    assert default.record(True) is True
    explicit = HealthTracker.for_spec(parse_health_check("tcp://h"))
    assert explicit.record(False) is None
    assert explicit.record(False) is False
    assert explicit.record(True) is True


def test_tracker_rejects_zero_thresholds() -> None:
    with pytest.raises(ValueError):
        HealthTracker(success=0, failure=1)


def test_http_probe_request() -> None:
    spec = parse_health_check("http://example.com/health?x=1&check_frequency=1s")
    assert build_http_probe_request(spec) == (
        b"GET /health?x=1 HTTP/1.1\r\n"
        b"Host: example.com\r\n"
        b"User-Agent: pingap/" + __version__.encode() + b"\r\n"
        b"Connection: close\r\n"
        b"\r\n"
    )
    assert build_http_probe_request(
        HealthCheckSpec(scheme="http", host="h")
    ).startswith(b"GET / HTTP/1.1\r\nHost: h\r\n")


@pytest.mark.parametrize(
    ("status", "healthy"),
    [(200, True), (204, False), (301, False), (404, False), (500, False), (503, False)],
)
def test_is_healthy_status(status: int, healthy: bool) -> None:
    assert is_healthy_status(status) is healthy


def test_down_upstreams_are_those_with_every_backend_down() -> None:
    from pingap.config import load_config_text
    from pingap.health import down_upstreams

    config = load_config_text("""
[upstreams.all_down]
addrs = ["10.0.0.1:80", "10.0.0.2"]
[upstreams.one_up]
addrs = ["10.0.0.3:80", "10.0.0.4:80"]
[upstreams.unprobed]
addrs = ["10.0.0.5:80"]
[upstreams.tls]
addrs = ["10.0.0.6"]
sni = "api.test"
[upstreams.transparent]
addrs = ["10.0.0.7:80"]
discovery = "transparent"
[locations.all]
upstream = "one_up"
[servers.s]
addr = "127.0.0.1:1"
locations = ["all"]
""")
    seen = {("all_down", "10.0.0.1:80"): False, ("all_down", "10.0.0.2:80"): False,
            ("one_up", "10.0.0.3:80"): False, ("one_up", "10.0.0.4:80"): True,
            ("tls", "10.0.0.6:443"): False, ("transparent", "10.0.0.7:80"): False}
    assert down_upstreams(config, lambda name, addr: seen.get((name, addr))) == \
        ["all_down", "tls"]
