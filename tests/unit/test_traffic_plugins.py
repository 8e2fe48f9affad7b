"""redirect and traffic_splitting decisions through the session, and their `-t` reports."""

from __future__ import annotations

import zlib
from collections import Counter

import pytest

from pingap.actions import Forward, Respond
from pingap.config import load_config_text
from pingap.context import ConnectionInfo
from pingap.errors import ConfigError
from pingap.events import RequestReceived
from pingap.runtime import Runtime, build_runtime
from pingap.session import ProxySession
from pingap.units import format_duration_spans


def runtime_of(plugin: str) -> Runtime:
    return build_runtime(load_config_text(
        '[servers.web]\naddr = "127.0.0.1:8080"\nlocations = ["lo"]\n'
        '[locations.lo]\nupstream = "v1"\nplugins = ["p"]\n'
        f"[plugins.p]\n{plugin}\n"
        '[upstreams.v1]\naddrs = ["127.0.0.1:9001"]\n[upstreams.v2]\naddrs = ["127.0.0.1:9002"]\n'))


def route(rt: Runtime, target: bytes = b"/a?b=1", headers: list[tuple[bytes, bytes]] | None = None,
          *, tls: bool = False) -> Respond | Forward:
    path, _, query = target.partition(b"?")
    req = RequestReceived(method=b"GET", target=target,
                          headers=[(b"Host", b"example.com:8080"), *(headers or [])],
                          http_version=b"1.1", keep_alive=True, expect_continue=False,
                          content_length=None, chunked=False, host=b"example.com:8080",
                          path=path, query=query)
    conn = ConnectionInfo(connection_id=1, remote_addr="10.0.0.1", remote_port=1,
                          server_addr="127.0.0.1", server_port=8080, accepted_at=0.0, tls=tls)
    return ProxySession(rt, rt.servers["web"], conn, req, now=1.0, wall=1.0).route()


def location(answer: Respond | Forward) -> tuple[int, bytes | None]:
    assert isinstance(answer, Respond)
    return answer.status, dict(answer.headers).get(b"Location")


# --- redirect ----------------------------------------------------------------------------


def test_redirect_http_to_https() -> None:
    rt = runtime_of('category = "redirect"\nhttp_to_https = true\nstatus = 301\n')
    assert location(route(rt)) == (301, b"https://example.com/a?b=1")
    assert isinstance(route(rt, tls=True), Forward)


@pytest.mark.parametrize(("prefix", "target", "tls", "expected"), [
    ("/api", b"/users", False, (307, b"https://example.com/api/users")),
    ("api", b"/users", True, (307, b"https://example.com/api/users")),
    ("/api", b"/api/users", False, (307, b"https://example.com/api/users")),
    ("/api", b"/api/users", True, None),
    ("/", b"/users", True, None),   # a prefix of length <= 1 is ignored
])
def test_redirect_prefix(prefix: str, target: bytes, tls: bool,
                         expected: tuple[int, bytes] | None) -> None:
    rt = runtime_of(f'category = "redirect"\nhttp_to_https = true\nprefix = "{prefix}"\n')
    answer = route(rt, target, tls=tls)
    if expected is None:
        assert isinstance(answer, Forward)
    else:
        assert location(answer) == expected


@pytest.mark.parametrize(("status", "expected"), [(302, 302), (308, 308), (404, 307)])
def test_redirect_status_and_https_to_http(status: int, expected: int) -> None:
    rt = runtime_of(f'category = "redirect"\nstatus = {status}\n')  # http_to_https = false
    assert location(route(rt, tls=True)) == (expected, b"http://example.com/a?b=1")
    assert isinstance(route(rt), Forward)


# --- traffic_splitting -------------------------------------------------------------------


def upstream(answer: Respond | Forward) -> str:
    assert isinstance(answer, Forward)
    return answer.upstream.name


def test_split_weight_bounds_and_random_share() -> None:
    assert upstream(route(runtime_of('category = "traffic_splitting"\nupstream = "v2"\n'
                                     'weight = 100\n'))) == "v2"
    assert upstream(route(runtime_of('category = "traffic_splitting"\nupstream = "v2"\n'
                                     'weight = 0\n'))) == "v1"
    rt = runtime_of('category = "traffic_splitting"\nupstream = "v2"\nweight = 30\n')
    share = Counter(upstream(route(rt)) for _ in range(2000))["v2"] / 2000
    assert 0.2 < share < 0.4


def test_split_sticky_cookie_keeps_a_client_on_one_side() -> None:
    rt = runtime_of('category = "traffic_splitting"\nupstream = "v2"\nweight = 20\n'
                    'stickiness = true\nsticky_cookie = "deviceId"\n')
    for device in ("a", "b", "device-123", "zz9"):
        expected = "v2" if zlib.crc32(device.encode()) % 100 < 20 else "v1"
        seen = {upstream(route(rt, headers=[(b"Cookie", f"x=1; deviceId={device}".encode())]))
                for _ in range(20)}
        assert seen == {expected}
    assert upstream(route(rt)) == "v1"  # no sticky value: never selected


def test_split_sticky_header_matcher() -> None:
    rt = runtime_of('category = "traffic_splitting"\nupstream = "v2"\nweight = 100\n'
                    'stickiness = true\nsticky_header = "X-User-Group"\n'
                    'matcher = "^(beta|internal)$"\n')
    assert upstream(route(rt, headers=[(b"X-User-Group", b"beta")])) == "v2"
    assert upstream(route(rt, headers=[(b"X-User-Group", b"public")])) == "v1"
    assert upstream(route(rt)) == "v1"


def test_split_bad_options_reported_with_key() -> None:
    with pytest.raises(ConfigError) as caught:
        runtime_of('category = "traffic_splitting"\nupstream = "v2"\nstickiness = true\n'
                   'matcher = "(unclosed"\n')
    keys = {p.key for p in caught.value.problems}
    assert {"plugins.p.stickiness", "plugins.p.matcher"} <= keys
    with pytest.raises(ConfigError) as caught:
        runtime_of('category = "traffic_splitting"\nupstream = "v3"\nweight = 5\n')
    assert "plugins.p.upstream" in {p.key for p in caught.value.problems}


def test_uptime_format_is_humantime() -> None:
    assert format_duration_spans(0) == "0s"
    assert format_duration_spans(303.9) == "5m 3s"
    assert format_duration_spans(86_400 + 7_384) == "1day 2h 3m 4s"
    assert format_duration_spans(2 * 86_400) == "2days"
