"""Tests for pingap.session.ProxySession driven by a real config (no sockets)."""

from __future__ import annotations

import json

import pytest

from pingap import __version__
from pingap.actions import Forward, Respond
from pingap.config import load_config_text
from pingap.context import ConnectionInfo
from pingap.errors import DownstreamError, NoBackendError, PingapError, UpstreamError
from pingap.events import RequestReceived
from pingap.runtime import DEFAULT_ERROR_TEMPLATE, Runtime, build_runtime
from pingap.session import ProxySession, client_ip, split_host, strip_hop_by_hop

UPSTREAMS = """
[upstreams.up]
addrs = ["127.0.0.1:9000", "127.0.0.1:9001", "127.0.0.1:9002"]

[upstreams.rest]
addrs = ["127.0.0.1:9101"]

[upstreams.grpc]
addrs = ["127.0.0.1:9102"]
"""


def runtime_of(locations: str, *, server_locations: list[str] | None = None, basic: str = "") -> Runtime:
    """A runtime with one server ``web`` over the given ``[locations.*]`` tables."""
    names = server_locations
    if names is None:
        names = [line.split(".", 1)[1].rstrip("]") for line in locations.splitlines()
                 if line.startswith("[locations.")]
    text = (f"[basic]\n{basic}\n" if basic else "") + (
        '[servers.web]\naddr = "127.0.0.1:8080"\n'
        f"locations = {json.dumps(names)}\n" + locations + UPSTREAMS)
    return build_runtime(load_config_text(text))


def conn(remote: str = "10.0.0.1", *, tls: bool = False) -> ConnectionInfo:
    return ConnectionInfo(connection_id=1, remote_addr=remote, remote_port=40000, server_addr="127.0.0.1",
                          server_port=8080, accepted_at=0.0, tls=tls, requests=1)


def request(target: bytes = b"/", *, method: bytes = b"GET", host: bytes = b"example.com",
            headers: list[tuple[bytes, bytes]] | None = None, content_length: int | None = None,
            chunked: bool = False) -> RequestReceived:
    path, _, query = target.partition(b"?")
    all_headers = [(b"Host", host), *(headers or [])]
    return RequestReceived(method=method, target=target, headers=all_headers, http_version=b"1.1",
                           keep_alive=True, expect_continue=False, content_length=content_length,
                           chunked=chunked, host=host, path=path, query=query)


def session(runtime: Runtime, req: RequestReceived | None = None, *, peer: ConnectionInfo | None = None,
            now: float = 100.0) -> ProxySession:
    return ProxySession(runtime, runtime.servers["web"], peer or conn(), req or request(), now=now, wall=1e9)


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name.lower():
            return value
    return None


SIMPLE = """
[locations.api]
upstream = "up"
path = "/api"
"""


# --- routing and errors ----------------------------------------------------------------


def test_route_forwards_to_the_location_upstream() -> None:
    rt = runtime_of(SIMPLE)
    s = session(rt, request(b"/api/x"))
    action = s.route()
    assert isinstance(action, Forward)
    assert action.upstream is rt.upstreams["up"]
    assert s.ctx.location == "api"
    assert s.location is rt.locations["api"]


def test_no_match_is_404_from_the_default_template() -> None:
    rt = runtime_of(SIMPLE)
    s = session(rt, request(b"/web/<b>", host=b"example.com:8080"))
    answer = s.route()
    assert isinstance(answer, Respond)
    assert answer.status == 404
    body = answer.body.decode()
    assert rt.error_template == DEFAULT_ERROR_TEMPLATE
    assert f"Pingap {__version__}" in body
    assert "No matching location, host:example.com path:/web/&lt;b&gt;" in body  # escaped, no port
    assert "<b>" not in body
    assert header(answer.headers, b"Content-Type") == b"text/html; charset=utf-8"
    assert header(answer.headers, b"X-Pingap-EType") == b"internal"
    assert header(answer.headers, b"Content-Length") == str(len(answer.body)).encode()
    assert s.ctx.status == 404
    assert s.ctx.location is None


def test_server_without_locations_answers_404() -> None:
    rt = build_runtime(load_config_text('[servers.web]\naddr = "127.0.0.1:8080"\n' + UPSTREAMS))
    answer = session(rt).route()
    assert isinstance(answer, Respond) and answer.status == 404


JSON_TEMPLATE = """error_template = '{"message":"{{content}}","type":"{{error_type}}","version":"{{version}}"}'"""


def test_no_match_with_a_json_error_template() -> None:
    rt = runtime_of(SIMPLE, basic=JSON_TEMPLATE)
    answer = session(rt, request(b'/x"y\\z')).route()
    assert isinstance(answer, Respond)
    assert answer.status == 404
    assert header(answer.headers, b"Content-Type") == b"application/json; charset=utf-8"
    assert header(answer.headers, b"X-Pingap-EType") == b"internal"
    assert header(answer.headers, b"Content-Length") == str(len(answer.body)).encode()
    data = json.loads(answer.body)
    assert data == {"message": 'No matching location, host:example.com path:/x"y\\z',
                    "type": "internal", "version": __version__}


def test_json_error_template_escapes_control_characters() -> None:
    rt = runtime_of(SIMPLE, basic=JSON_TEMPLATE)
    answer = session(rt).error(PingapError("line1\nline2\ttab"))
    assert json.loads(answer.body)["message"] == "line1\nline2\ttab"


def test_error_content_is_rendered_literally() -> None:
    rt = runtime_of(SIMPLE)
    answer = session(rt, request(b"/{{error_type}}")).route()
    assert isinstance(answer, Respond)
    assert "path:/{{error_type}}" in answer.body.decode()


@pytest.mark.parametrize(
    ("error", "status", "etype", "close"),
    [
        (PingapError("x", status=404), 404, "internal", None),  # close not pinned: §3.9 vs keep-alive
        (DownstreamError("bad"), 400, "downstream", True),
        (UpstreamError("down"), 502, "upstream", True),
        (NoBackendError("none"), 503, "upstream", True),
        (PingapError("boom"), 500, "internal", True),
    ],
)
def test_error_status_type_and_close(error: PingapError, status: int, etype: str,
                                     close: bool | None) -> None:
    rt = runtime_of(SIMPLE)
    s = session(rt)
    answer = s.error(error)
    assert answer.status == status
    assert header(answer.headers, b"X-Pingap-EType") == etype.encode()
    if close is not None:
        assert answer.close is close
    assert s.ctx.status == status
    assert s.ctx.response_headers == answer.headers


def test_location_without_upstream_is_503() -> None:
    rt = runtime_of('[locations.lo]\npath = "/"\n')
    answer = session(rt).route()
    assert isinstance(answer, Respond) and answer.status == 503


def test_host_match_ignores_port_and_case() -> None:
    rt = runtime_of('[locations.lo]\nupstream = "up"\nhost = "api.example.com"\n')
    assert isinstance(session(rt, request(host=b"API.Example.com:8443")).route(), Forward)
    assert isinstance(session(rt, request(host=b"www.example.com")).route(), Respond)


def test_conditions_read_the_request() -> None:
    rt = runtime_of("""
[locations.beta]
upstream = "rest"
match_headers = ["X-Env:beta"]
match_query = ["v:2"]
match_cookies = ["sid"]
weight = 100

[locations.all]
upstream = "up"
""")
    ok = request(b"/x?a=1&v=2", headers=[(b"x-env", b"beta"), (b"Cookie", b"a=1; sid=abc")])
    forward = session(rt, ok).route()
    assert isinstance(forward, Forward) and forward.upstream.name == "rest"
    missing_cookie = request(b"/x?v=2", headers=[(b"X-Env", b"beta")])
    forward = session(rt, missing_cookie).route()
    assert isinstance(forward, Forward) and forward.upstream.name == "up"


# --- rewrite and $upstream ---------------------------------------------------------------


def test_rewrite_strips_prefix_and_keeps_query() -> None:
    rt = runtime_of("""
[locations.api]
upstream = "up"
path = "/api"
rewrite = "^/api/(?<path>.+)$ /$1"
""")
    s = session(rt, request(b"/api/users/1?x=1&y=%20"))
    assert isinstance(s.route(), Forward)
    assert s.ctx.path == "/users/1"
    assert s.ctx.variables["path"] == "users/1"
    method, target, _ = s.upstream_request()
    assert (method, target) == (b"GET", b"/users/1?x=1&y=%20")


def test_upstream_selected_from_a_rewrite_capture() -> None:
    rt = runtime_of("""
[locations.users]
path = "/users/"
upstream = "$upstream"
rewrite = "^/users/(?<upstream>.*?)/(.*)$ /$2"
""")
    s = session(rt, request(b"/users/rest/me?q=1"))
    action = s.route()
    assert isinstance(action, Forward)
    assert action.upstream.name == "rest"
    assert s.upstream_request()[1] == b"/me?q=1"


def test_upstream_selected_from_a_path_capture() -> None:
    rt = runtime_of("""
[locations.svc]
path = "~^/svc/(?<backend>[a-z]+)/"
upstream = "$backend"
""")
    action = session(rt, request(b"/svc/grpc/x")).route()
    assert isinstance(action, Forward) and action.upstream.name == "grpc"
    missing = session(rt, request(b"/svc/nosuch/x")).route()
    assert isinstance(missing, Respond) and missing.status == 503


def test_upstream_selected_from_a_host_capture_and_used_in_rewrite() -> None:
    rt = runtime_of("""
[locations.tenant]
host = "~^(?<svc>[a-z]+)\\\\.example\\\\.com$"
upstream = "$svc"
rewrite = "^/(.*)$ /${svc}/$1"
""")
    s = session(rt, request(b"/a?b=c", host=b"rest.example.com"))
    action = s.route()
    assert isinstance(action, Forward) and action.upstream.name == "rest"
    assert s.upstream_request()[1] == b"/rest/a?b=c"


# --- limits ----------------------------------------------------------------------------


LIMITED = """
[locations.lo]
upstream = "up"
client_max_body_size = "10b"
max_processing = 2
"""


def test_content_length_over_client_max_body_size_is_413() -> None:
    rt = runtime_of(LIMITED)
    s = session(rt, request(method=b"POST", content_length=11))
    answer = s.route()
    assert isinstance(answer, Respond)
    assert answer.status == 413
    assert b"Request Entity Too Large, max:10" in answer.body
    assert header(answer.headers, b"X-Pingap-EType") == b"downstream"
    assert answer.close
    assert rt.locations["lo"].processing == 0  # not counted
    s.finish(now=101.0, size=0)
    assert rt.locations["lo"].processing == 0


def test_content_length_at_the_limit_is_ok() -> None:
    rt = runtime_of(LIMITED)
    assert isinstance(session(rt, request(method=b"POST", content_length=10)).route(), Forward)


def test_check_body_size_on_a_streamed_total() -> None:
    rt = runtime_of(LIMITED)
    s = session(rt, request(method=b"POST", chunked=True))
    assert isinstance(s.route(), Forward)
    s.check_body_size(4)
    s.check_body_size(10)
    assert s.ctx.payload_size == 10
    with pytest.raises(DownstreamError) as caught:
        s.check_body_size(11)
    assert caught.value.status == 413
    assert "max:10" in caught.value.message
    assert s.ctx.payload_size == 11


def test_check_body_size_without_a_limit() -> None:
    rt = runtime_of(SIMPLE)
    s = session(rt, request(b"/api", method=b"POST", chunked=True))
    s.route()
    s.check_body_size(10**9)
    assert s.ctx.payload_size == 10**9


def test_client_max_body_size_zero_means_unlimited() -> None:
    rt = runtime_of('[locations.lo]\nupstream = "up"\nclient_max_body_size = 0\n')
    s = session(rt, request(method=b"POST", content_length=5))
    assert isinstance(s.route(), Forward)
    s.check_body_size(5)


def test_max_processing_is_429_and_finish_releases_the_counter() -> None:
    rt = runtime_of(LIMITED)
    location = rt.locations["lo"]
    first, second, third = (session(rt) for _ in range(3))
    assert isinstance(first.route(), Forward)
    assert isinstance(second.route(), Forward)
    assert location.processing == 2
    answer = third.route()
    assert isinstance(answer, Respond)
    assert answer.status == 429
    assert b"Too Many Requests, max:2" in answer.body
    assert header(answer.headers, b"X-Pingap-EType") == b"downstream"
    third.finish(now=101.0, size=len(answer.body))
    assert location.processing == 2
    first.finish(now=101.0, size=0)
    first.finish(now=102.0, size=0)  # idempotent
    assert location.processing == 1
    fourth = session(rt)
    assert isinstance(fourth.route(), Forward)
    second.finish(now=101.0, size=0)
    fourth.finish(now=101.0, size=0)
    assert location.processing == 0


def test_finish_returns_the_access_log_record() -> None:
    rt = runtime_of(SIMPLE)
    s = session(rt, request(b"/api"), now=100.0)
    s.route()
    ctx = s.finish(now=100.25, size=123)
    assert ctx is s.ctx
    assert (ctx.end, ctx.size, ctx.location) == (100.25, 123, "api")


# --- upstream request headers ------------------------------------------------------------


def test_upstream_request_strips_hop_by_hop_and_connection_named_headers() -> None:
    rt = runtime_of(SIMPLE)
    req = request(b"/api", method=b"POST", chunked=True, headers=[
        (b"Connection", b"keep-alive, X-Secret, x-other"),
        (b"X-Secret", b"1"),
        (b"x-OTHER", b"2"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Proxy-Connection", b"keep-alive"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Upgrade", b"h2c"),
        (b"HTTP2-Settings", b"AAA"),
        (b"TE", b"trailers, deflate"),
        (b"Expect", b"100-continue"),
        (b"x-Custom-CASE", b"kept"),
        (b"Accept", b"*/*"),
    ])
    s = session(rt, req)
    s.route()
    method, target, headers = s.upstream_request()
    assert (method, target) == (b"POST", b"/api")
    assert headers == [
        (b"Host", b"example.com"),
        (b"x-Custom-CASE", b"kept"),
        (b"Accept", b"*/*"),
        (b"TE", b"trailers"),
        (b"Transfer-Encoding", b"chunked"),
    ]


def test_upstream_request_te_without_trailers_is_dropped() -> None:
    rt = runtime_of(SIMPLE)
    s = session(rt, request(b"/api", headers=[(b"TE", b"gzip")]))
    s.route()
    assert header(s.upstream_request()[2], b"te") is None


def test_upstream_request_options_asterisk() -> None:
    rt = runtime_of('[locations.lo]\nupstream = "up"\n')
    req = RequestReceived(method=b"OPTIONS", target=b"*", headers=[(b"Host", b"h")], http_version=b"1.1",
                          keep_alive=True, expect_continue=False, content_length=None, chunked=False,
                          host=b"h", path=b"*", query=b"")
    s = session(rt, req)
    s.route()
    assert s.upstream_request()[:2] == (b"OPTIONS", b"*")


HEADER_RULES = """
[locations.lo]
upstream = "up"
enable_reverse_proxy_headers = true
proxy_set_headers = ["X-Forwarded-Proto:https", "x-real-ip:1.2.3.4", "X-Replace:new", "X-Gone:$http_x_none"]
proxy_add_headers = ["X-Add:1", "x-add:2", "X-Replace:extra"]
"""


def test_header_rules_in_pingaps_order() -> None:
    rt = runtime_of(HEADER_RULES)
    req = request(b"/p?q", host=b"example.com:8080", headers=[
        (b"X-Forwarded-For", b"9.9.9.9"),
        (b"X-Forwarded-Proto", b"http"),
        (b"X-Replace", b"old"),
        (b"X-Gone", b"client"),
        (b"X-Keep", b"k"),
    ])
    s = session(rt, req, peer=conn("192.168.1.5"))
    s.route()
    _, target, headers = s.upstream_request()
    assert target == b"/p?q"
    assert headers == [
        (b"Host", b"example.com:8080"),  # forwarded unchanged
        (b"X-Keep", b"k"),
        # reverse-proxy defaults (as set) ...
        (b"X-Forwarded-For", b"9.9.9.9, 192.168.1.5"),
        (b"X-Forwarded-Host", b"example.com"),
        (b"X-Forwarded-Port", b"8080"),
        # ... then proxy_set_headers replace (X-Real-IP and X-Forwarded-Proto overridden) ...
        (b"X-Forwarded-Proto", b"https"),
        (b"x-real-ip", b"1.2.3.4"),
        (b"X-Replace", b"new"),
        # ... X-Gone resolved to nothing: removed, not sent literally ...
        # ... then proxy_add_headers append
        (b"X-Add", b"1"),
        (b"x-add", b"2"),
        (b"X-Replace", b"extra"),
    ]


def test_reverse_proxy_headers_values() -> None:
    rt = runtime_of('[locations.lo]\nupstream = "up"\nenable_reverse_proxy_headers = true\n')
    s = session(rt, request(b"/", host=b"example.com"), peer=conn("10.1.2.3", tls=True))
    s.route()
    headers = s.upstream_request()[2]
    assert header(headers, b"X-Real-IP") == b"10.1.2.3"
    assert header(headers, b"X-Forwarded-For") == b"10.1.2.3"
    assert header(headers, b"X-Forwarded-Proto") == b"https"
    assert header(headers, b"X-Forwarded-Host") == b"example.com"
    assert header(headers, b"X-Forwarded-Port") == b"8080"


def test_connection_cannot_strip_headers_the_proxy_adds() -> None:
    rt = runtime_of(HEADER_RULES)
    s = session(rt, request(headers=[(b"Connection", b"X-Real-IP, X-Forwarded-For, X-Add")]))
    s.route()
    headers = s.upstream_request()[2]
    assert header(headers, b"X-Real-IP") == b"1.2.3.4"
    assert header(headers, b"X-Forwarded-For") == b"10.0.0.1"
    assert header(headers, b"X-Add") == b"1"


def test_upstream_addr_variable_after_backend_selection() -> None:
    rt = runtime_of('[locations.lo]\nupstream = "rest"\nproxy_set_headers = ["X-Backend:$upstream_addr"]\n')
    s = session(rt)
    s.route()
    assert header(s.upstream_request()[2], b"X-Backend") is None
    backend = s.next_backend()
    assert backend.addr == "127.0.0.1:9101"
    assert s.ctx.upstream_addr == "127.0.0.1:9101"
    assert header(s.upstream_request()[2], b"X-Backend") == b"127.0.0.1:9101"


# --- response headers ------------------------------------------------------------------


def test_response_headers_strip_hop_by_hop() -> None:
    rt = runtime_of(SIMPLE)
    s = session(rt, request(b"/api"))
    s.route()
    out = s.response_headers(200, [
        (b"Content-Length", b"1"),
        (b"Connection", b"keep-alive, X-Hop"),
        (b"X-Hop", b"1"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Upgrade", b"websocket"),
        (b"Set-Cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
        (b"X-Case-Kept", b"v"),
    ])
    assert out == [(b"Content-Length", b"1"), (b"Set-Cookie", b"a=1"), (b"set-cookie", b"b=2"),
                   (b"X-Case-Kept", b"v")]
    assert s.ctx.upstream_status == 200
    assert s.ctx.status == 200
    assert s.ctx.response_headers == out


def test_strip_hop_by_hop_helper() -> None:
    headers = [(b"CONNECTION", b"Foo"), (b"foo", b"1"), (b"Bar", b"2"), (b"TE", b"trailers")]
    assert strip_hop_by_hop(headers) == [(b"Bar", b"2")]


# --- client IP -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trusted", "peer", "headers", "expected"),
    [
        ((), "10.0.0.1", [], "10.0.0.1"),
        ((), "10.0.0.1", [(b"X-Forwarded-For", b"1.1.1.1, 2.2.2.2")], "1.1.1.1"),
        ((), "10.0.0.1", [(b"x-forwarded-for", b" , 3.3.3.3,4.4.4.4")], "3.3.3.3"),
        ((), "10.0.0.1", [(b"X-Real-IP", b"5.5.5.5")], "5.5.5.5"),
        ((), "10.0.0.1", [(b"X-Real-IP", b"5.5.5.5"), (b"X-Forwarded-For", b"1.1.1.1")], "1.1.1.1"),
        ((), "10.0.0.1", [(b"X-Forwarded-For", b""), (b"X-Real-IP", b"5.5.5.5")], "5.5.5.5"),
        ((), "10.0.0.1", [(b"X-Real-IP", b"  ")], "10.0.0.1"),
        (("10.0.0.0/8",), "10.0.0.1", [(b"X-Forwarded-For", b"1.1.1.1")], "1.1.1.1"),
        (("10.0.0.0/8",), "10.0.0.1", [(b"X-Real-IP", b"5.5.5.5")], "5.5.5.5"),
        (("10.0.0.0/8",), "192.168.0.9", [(b"X-Forwarded-For", b"1.1.1.1")], "192.168.0.9"),
        (("10.0.0.0/8",), "192.168.0.9", [(b"X-Real-IP", b"5.5.5.5")], "192.168.0.9"),
        (("192.168.0.9",), "192.168.0.9", [(b"X-Forwarded-For", b"1.1.1.1")], "1.1.1.1"),
        (("::1",), "::1", [(b"X-Forwarded-For", b"2001:db8::1")], "2001:db8::1"),
        (("10.0.0.0/8",), "::1", [(b"X-Forwarded-For", b"1.1.1.1")], "::1"),
    ],
)
def test_client_ip(trusted: tuple[str, ...], peer: str, headers: list[tuple[bytes, bytes]],
                   expected: str) -> None:
    basic = ("trusted_proxies = " + json.dumps(list(trusted))) if trusted else ""
    rt = runtime_of(SIMPLE, basic=basic)
    s = session(rt, request(b"/api", headers=headers), peer=conn(peer))
    assert s.ctx.client_ip == expected
    assert client_ip(peer, headers, rt.trusted_proxies) == expected


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("example.com", "example.com"),
        ("example.com:8080", "example.com"),
        ("[::1]:8080", "[::1]"),
        ("[::1]", "[::1]"),
        ("", ""),
    ],
)
def test_split_host(host: str, expected: str) -> None:
    assert split_host(host) == expected


# --- backends and retries ---------------------------------------------------------------


RETRY = """
[locations.lo]
upstream = "up"
max_retries = 2
max_retry_window = "1s"
"""


def test_next_backend_never_repeats_and_raises_when_exhausted() -> None:
    rt = runtime_of(RETRY)
    s = session(rt)
    assert isinstance(s.route(), Forward)
    picked = [s.next_backend().addr for _ in range(3)]
    assert sorted(picked) == ["127.0.0.1:9000", "127.0.0.1:9001", "127.0.0.1:9002"]
    with pytest.raises(NoBackendError) as caught:
        s.next_backend()
    assert caught.value.status == 503


def test_next_backend_skips_unhealthy_backends() -> None:
    rt = runtime_of(RETRY)
    upstream = rt.upstreams["up"]
    upstream.health["127.0.0.1:9000"] = False
    upstream.health["127.0.0.1:9002"] = False
    s = session(rt)
    s.route()
    assert s.next_backend().addr == "127.0.0.1:9001"
    with pytest.raises(NoBackendError):
        s.next_backend()


def test_backends_are_fresh_per_session() -> None:
    rt = runtime_of('[locations.lo]\nupstream = "rest"\n')
    for _ in range(3):
        s = session(rt)
        s.route()
        assert s.next_backend().addr == "127.0.0.1:9101"


def test_may_retry_honours_max_retries() -> None:
    rt = runtime_of(RETRY)
    s = session(rt, now=100.0)
    s.route()
    s.next_backend()
    assert s.may_retry(100.1)  # first retry
    s.next_backend()
    assert s.may_retry(100.2)  # second retry
    s.next_backend()
    assert not s.may_retry(100.3)  # max_retries = 2 used up


def test_may_retry_honours_max_retry_window() -> None:
    rt = runtime_of(RETRY)
    s = session(rt, now=100.0)
    s.route()
    s.next_backend()
    assert s.may_retry(101.0)  # exactly at the window
    assert not s.may_retry(101.01)


@pytest.mark.parametrize("extra", ["", "max_retries = 0\n"])
def test_no_retry_without_max_retries(extra: str) -> None:
    rt = runtime_of('[locations.lo]\nupstream = "up"\n' + extra)
    s = session(rt)
    s.route()
    s.next_backend()
    assert not s.may_retry(100.0)


def test_retry_without_window_is_unbounded_in_time() -> None:
    rt = runtime_of('[locations.lo]\nupstream = "up"\nmax_retries = 1\n')
    s = session(rt, now=100.0)
    s.route()
    s.next_backend()
    assert s.may_retry(10_000.0)


def test_may_retry_without_a_location() -> None:
    rt = runtime_of(SIMPLE)
    s = session(rt, request(b"/nomatch"))
    s.route()
    assert not s.may_retry(100.0)


@pytest.mark.parametrize(("headers", "expected"), [
    ([(b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")], b"websocket"),
    ([(b"Connection", b"keep-alive, Upgrade"), (b"Upgrade", b"websocket")], b"websocket"),
    ([(b"Upgrade", b"websocket")], None),                      # Connection must name it
    ([(b"Connection", b"Upgrade"), (b"Upgrade", b"h2c")], None),  # never h2c
])
def test_upgrade_requests_are_recognised(headers, expected) -> None:
    from pingap.session import _upgrade_of
    req = RequestReceived(method=b"GET", target=b"/", headers=[(b"Host", b"h"), *headers],
                          http_version=b"1.1", keep_alive=True, expect_continue=False,
                          content_length=None, chunked=False, host=b"h", path=b"/")
    assert _upgrade_of(req) == expected
