"""Tests for the plugin registry and the ``ping``/``mock`` plugins, driven through the session."""

from __future__ import annotations

import json

import pytest

from pingap.actions import CONTINUE, Forward, Respond
from pingap.config import load_config_text
from pingap.context import ConnectionInfo
from pingap.errors import ConfigError
from pingap.events import RequestReceived
from pingap.plugins import (
    BUILTIN_PLUGINS,
    GUARD_CATEGORIES,
    REGISTRY,
    REQUEST_STEPS,
    Plugin,
    build_plugin,
    plugin_response,
    plugins_by_step,
)
from pingap.plugins.builtin import Mock, Ping
from pingap.runtime import Runtime, build_runtime
from pingap.session import ProxySession


def runtime_of(locations: str, plugins: str = "") -> Runtime:
    names = [line.split(".", 1)[1].rstrip("]") for line in locations.splitlines()
             if line.startswith("[locations.")]
    return build_runtime(load_config_text(
        '[servers.web]\naddr = "127.0.0.1:8080"\n'
        f"locations = {json.dumps(names)}\n" + locations + plugins
        + '\n[upstreams.up]\naddrs = ["127.0.0.1:9000"]\n'))


def route(runtime: Runtime, target: bytes = b"/", *, method: bytes = b"GET") -> tuple[ProxySession, object]:
    path, _, query = target.partition(b"?")
    req = RequestReceived(method=method, target=target, headers=[(b"Host", b"example.com")],
                          http_version=b"1.1", keep_alive=True, expect_continue=False,
                          content_length=None, chunked=False, host=b"example.com", path=path, query=query)
    conn = ConnectionInfo(connection_id=1, remote_addr="10.0.0.1", remote_port=40000,
                          server_addr="127.0.0.1", server_port=8080, accepted_at=0.0)
    s = ProxySession(runtime, runtime.servers["web"], conn, req, now=1.0, wall=1.0)
    return s, s.route()


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name.lower():
            return value
    return None


# --- ping ------------------------------------------------------------------------------


PING = """
[locations.lo]
upstream = "up"
plugins = ["pong"]
"""


@pytest.mark.parametrize("method", [b"GET", b"POST", b"HEAD", b"DELETE"])
def test_ping_answers_pong_on_its_path_for_any_method(method: bytes) -> None:
    rt = runtime_of(PING, '[plugins.pong]\ncategory = "ping"\npath = "/health"\n')
    s, answer = route(rt, b"/health", method=method)
    assert isinstance(answer, Respond)
    assert answer.status == 200
    assert answer.body == b"pong"
    assert header(answer.headers, b"Content-Length") == b"4"
    assert header(answer.headers, b"Cache-Control") == b"private, no-cache"
    assert header(answer.headers, b"Content-Type") == b"text/plain; charset=utf-8"
    assert s.ctx.status == 200
    assert s.ctx.response_headers == answer.headers


@pytest.mark.parametrize("target", [b"/health/", b"/healthz", b"/", b"/x/health"])
def test_ping_other_paths_continue(target: bytes) -> None:
    rt = runtime_of(PING, '[plugins.pong]\ncategory = "ping"\npath = "/health"\n')
    assert isinstance(route(rt, target)[1], Forward)


def test_ping_query_does_not_matter() -> None:
    rt = runtime_of(PING, '[plugins.pong]\ncategory = "ping"\npath = "/health"\n')
    answer = route(rt, b"/health?x=1")[1]
    assert isinstance(answer, Respond) and answer.body == b"pong"


def test_ping_without_path_never_matches() -> None:
    rt = runtime_of(PING, '[plugins.pong]\ncategory = "ping"\n')
    assert isinstance(route(rt, b"/")[1], Forward)
    assert isinstance(route(rt, b"/ping")[1], Forward)


def test_ping_sees_the_rewritten_path() -> None:
    rt = runtime_of("""
[locations.lo]
upstream = "up"
rewrite = "^/api/(.*)$ /$1"
plugins = ["pingap:ping"]
""")
    answer = route(rt, b"/api/ping")[1]
    assert isinstance(answer, Respond) and answer.body == b"pong"


def test_builtin_pingap_ping() -> None:
    rt = runtime_of('[locations.lo]\nupstream = "up"\nplugins = ["pingap:ping"]\n')
    answer = route(rt, b"/ping")[1]
    assert isinstance(answer, Respond)
    assert (answer.status, answer.body) == (200, b"pong")
    assert isinstance(route(rt, b"/other")[1], Forward)
    assert rt.warnings == []


def test_user_plugin_shadows_builtin_of_same_name() -> None:
    rt = runtime_of('[locations.lo]\nupstream = "up"\nplugins = ["pingap:ping"]\n',
                    '[plugins."pingap:ping"]\ncategory = "ping"\npath = "/alive"\n')
    assert isinstance(route(rt, b"/ping")[1], Forward)
    answer = route(rt, b"/alive")[1]
    assert isinstance(answer, Respond) and answer.body == b"pong"


def test_ping_plugin_answers_without_an_upstream() -> None:
    rt = runtime_of('[locations.lo]\nplugins = ["pingap:ping"]\n')
    answer = route(rt, b"/ping")[1]
    assert isinstance(answer, Respond) and answer.status == 200
    other = route(rt, b"/x")[1]
    assert isinstance(other, Respond) and other.status == 503


# --- mock ------------------------------------------------------------------------------


MOCK_LOCATION = """
[locations.lo]
upstream = "up"
plugins = ["m"]
"""


def test_mock_full_options() -> None:
    rt = runtime_of(MOCK_LOCATION, """
[plugins.m]
category = "mock"
path = "/api/test"
status = 201
headers = ["Content-Type: application/json", "Cache-Control: public, max-age=60", "X-Mock:yes"]
data = '{"ok":true}'
delay = "1s"
""")
    s, answer = route(rt, b"/api/test")
    assert isinstance(answer, Respond)
    assert answer.status == 201
    assert answer.body == b'{"ok":true}'
    assert answer.delay == 1.0
    assert answer.headers == [
        (b"Content-Type", b"application/json"),
        (b"Cache-Control", b"public, max-age=60"),
        (b"X-Mock", b"yes"),
        (b"Content-Length", b"11"),
    ]
    assert s.ctx.status == 201
    assert isinstance(route(rt, b"/api/test/x")[1], Forward)  # path is exact
    assert isinstance(route(rt, b"/api")[1], Forward)


def test_mock_defaults_answer_every_request() -> None:
    rt = runtime_of(MOCK_LOCATION, '[plugins.m]\ncategory = "mock"\n')
    for target in (b"/", b"/anything?x=1"):
        answer = route(rt, target)[1]
        assert isinstance(answer, Respond)
        assert answer.status == 200
        assert answer.body == b""
        assert answer.delay is None
        assert header(answer.headers, b"Content-Length") == b"0"
        assert header(answer.headers, b"Cache-Control") == b"private, no-cache"
        assert header(answer.headers, b"Content-Type") == b"text/plain; charset=utf-8"


@pytest.mark.parametrize(("delay", "seconds"), [('"500ms"', 0.5), ('"1m"', 60.0), ('"1h30m"', 5400.0)])
def test_mock_delay(delay: str, seconds: float) -> None:
    rt = runtime_of(MOCK_LOCATION, f'[plugins.m]\ncategory = "mock"\ndelay = {delay}\n')
    answer = route(rt)[1]
    assert isinstance(answer, Respond) and answer.delay == pytest.approx(seconds)


def test_mock_utf8_body_length() -> None:
    rt = runtime_of(MOCK_LOCATION, '[plugins.m]\ncategory = "mock"\ndata = "héllo"\n')
    answer = route(rt)[1]
    assert isinstance(answer, Respond)
    assert answer.body == "héllo".encode()
    assert header(answer.headers, b"Content-Length") == b"6"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("status = 1000", "out of range"),
        ('step = "response"', "cannot run at step"),
    ],
)
def test_mock_invalid_options_are_config_errors(options: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        runtime_of(MOCK_LOCATION, f'[plugins.m]\ncategory = "mock"\n{options}\n')
    assert any(message in p.message and p.key.startswith("plugins.m") for p in caught.value.problems)


def test_mock_mistyped_option_is_a_warning_and_dropped() -> None:
    # pingap reads a mistyped option as its default; outside the guards: a warning
    config = runtime_of(MOCK_LOCATION, '[plugins.m]\ncategory = "mock"\nstatus = "abc"\n').config
    assert any(w.key == "plugins.m.status" and "expected an integer" in w.message
               for w in config.warnings)
    assert "status" not in config.plugins["m"].options


@pytest.mark.parametrize(
    "options",
    ['headers = ["X-A: a\\r\\nX-Injected: b"]', 'headers = ["Bad Name: v"]', "status = 100"],
    ids=["crlf-in-value", "bad-name", "interim-status"],
)
def test_mock_unsendable_response_is_a_config_error(options: str) -> None:
    with pytest.raises(ConfigError):
        runtime_of(MOCK_LOCATION, f'[plugins.m]\ncategory = "mock"\n{options}\n')


def test_mock_invalid_status_built_directly_is_rejected() -> None:
    # pingap falls back to 200; we refuse, so the config check reports it
    with pytest.raises(ValueError, match="status"):
        Mock("m", {"status": 42})
    with pytest.raises(ValueError, match="status"):
        Mock("m", {"status": "404"})
    assert Mock("m", {"status": 404}).response.status == 404


def test_mock_at_proxy_upstream_step_runs_after_request_plugins() -> None:
    rt = runtime_of("""
[locations.lo]
upstream = "up"
plugins = ["late", "pingap:ping"]
""", '[plugins.late]\ncategory = "mock"\nstep = "proxy_upstream"\ndata = "late"\n')
    # the request-step ping answers first although it is listed second
    answer = route(rt, b"/ping")[1]
    assert isinstance(answer, Respond) and answer.body == b"pong"
    answer = route(rt, b"/x")[1]
    assert isinstance(answer, Respond) and answer.body == b"late"


def test_first_responding_plugin_wins() -> None:
    rt = runtime_of("""
[locations.lo]
upstream = "up"
plugins = ["a", "b"]
""", '[plugins.a]\ncategory = "mock"\npath = "/a"\ndata = "A"\n'
     '[plugins.b]\ncategory = "mock"\ndata = "B"\n')
    a = route(rt, b"/a")[1]
    b = route(rt, b"/b")[1]
    assert isinstance(a, Respond) and a.body == b"A"
    assert isinstance(b, Respond) and b.body == b"B"


def test_plugin_response_keeps_location_counter_until_finish() -> None:
    rt = runtime_of('[locations.lo]\nupstream = "up"\nmax_processing = 1\nplugins = ["pingap:ping"]\n')
    s, answer = route(rt, b"/ping")
    assert isinstance(answer, Respond)
    assert rt.locations["lo"].processing == 1
    s.finish(now=2.0, size=4)
    assert rt.locations["lo"].processing == 0


# --- unimplemented categories --------------------------------------------------------


def test_unimplemented_non_guard_plugin_is_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    # as a build without these categories sees it
    monkeypatch.delitem(REGISTRY, "request_id", raising=False)
    monkeypatch.delitem(REGISTRY, "compression", raising=False)
    rt = runtime_of('[locations.lo]\nupstream = "up"\nplugins = ["rid", "pingap:compression"]\n',
                    '[plugins.rid]\ncategory = "request_id"\n')
    assert rt.locations["lo"].plugins == ()
    keys = {w.key: w.message for w in rt.warnings}
    assert set(keys) == {"locations.lo.plugins[0]", "locations.lo.plugins[1]"}
    assert "'rid' (request_id) is not implemented" in keys["locations.lo.plugins[0]"]
    assert "'pingap:compression' (compression)" in keys["locations.lo.plugins[1]"]
    assert isinstance(route(rt)[1], Forward)


def test_unused_unimplemented_plugin_is_not_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(REGISTRY, "request_id", raising=False)
    rt = runtime_of('[locations.lo]\nupstream = "up"\n', '[plugins.rid]\ncategory = "request_id"\n')
    assert rt.warnings == []


@pytest.mark.parametrize(
    ("category", "options"),
    [
        ("key_auth", 'header = "X-Key"\nkeys = ["abc"]'),
        ("ip_restriction", 'ip_list = ["10.0.0.0/8"]\ntype = "deny"'),
    ],
)
def test_unimplemented_guard_plugin_is_a_config_error(category: str, options: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(REGISTRY, category, raising=False)  # a build without the category
    with pytest.raises(ConfigError) as caught:
        runtime_of('[locations.lo]\nupstream = "up"\nplugins = ["guard"]\n',
                   f'[plugins.guard]\ncategory = "{category}"\n{options}\n')
    problems = {p.key: p.message for p in caught.value.problems}
    assert "locations.lo.plugins[0]" in problems
    assert "not implemented" in problems["locations.lo.plugins[0]"]
    assert category in problems["locations.lo.plugins[0]"]


def test_guard_categories() -> None:
    assert {"key_auth", "basic_auth", "jwt", "ip_restriction", "limit"} <= GUARD_CATEGORIES
    assert "mock" not in GUARD_CATEGORIES and "request_id" not in GUARD_CATEGORIES


# --- registry and helpers ------------------------------------------------------------


def test_registry_and_build_plugin() -> None:
    assert REGISTRY["ping"] is Ping
    assert REGISTRY["mock"] is Mock
    assert build_plugin("x", "no_such_category", {}) is None
    plugin = build_plugin("p", "ping", {"path": "/p"})
    assert isinstance(plugin, Ping)
    assert plugin.step == "request"
    mock = build_plugin("m", "mock", {}, "proxy_upstream")
    assert isinstance(mock, Mock) and mock.step == "proxy_upstream"


def test_builtin_plugin_table() -> None:
    assert BUILTIN_PLUGINS["pingap:ping"] == ("ping", {"path": "/ping"})
    assert set(BUILTIN_PLUGINS) >= {"pingap:ping", "pingap:stats", "pingap:compression",
                                    "pingap:requestId", "pingap:acceptEncodingAdjustment"}


def test_plugin_acts_only_in_its_step() -> None:
    from pingap.context import RequestContext

    conn = ConnectionInfo(connection_id=1, remote_addr="1.1.1.1", remote_port=1, server_addr="127.0.0.1",
                          server_port=1, accepted_at=0.0)
    ctx = RequestContext(conn=conn, method="GET", path="/ping", query="", http_version="1.1", host="h",
                         request_headers=[], client_ip="1.1.1.1", start=0.0, start_wall=0.0)
    ping = Ping("p", {"path": "/ping"})
    assert isinstance(ping.handle_request("request", ctx), Respond)
    assert ping.handle_request("early_request", ctx) is CONTINUE
    assert ping.handle_request("proxy_upstream", ctx) is CONTINUE
    assert Plugin("base", {}).handle_request("request", ctx) is CONTINUE


def test_plugin_response_helper() -> None:
    answer = plugin_response(418, b"tea")
    assert answer.headers == [(b"Content-Type", b"text/plain; charset=utf-8"),
                              (b"Cache-Control", b"private, no-cache"), (b"Content-Length", b"3")]
    custom = plugin_response(200, b"{}", headers=[(b"content-type", b"application/json"),
                                                  (b"cache-control", b"no-store")])
    assert custom.headers == [(b"content-type", b"application/json"), (b"cache-control", b"no-store"),
                              (b"Content-Length", b"2")]


@pytest.mark.parametrize(("category", "options"), [
    ("basic_auth", {"authorizations": ["YWRtaW46MTIzMTIz"]}),
    ("key_auth", {"query": "apikey", "keys": ["a"]}),
    ("combined_auth", {"authorizations": [{"app_id": "a", "secret": "s", "deviation": 60}]}),
    ("csrf", {"token_path": "/csrf-token", "key": "secret"}),
    ("forward_auth", {"auth_url": "http://127.0.0.1:9/auth"}),
    ("ip_restriction", {"ip_list": ["10.0.0.0/8"], "type": "deny"}),
    ("ua_restriction", {"ua_list": ["curl"], "type": "deny"}),
    ("referer_restriction", {"referer_list": ["*.bad.test"], "type": "deny"}),
])
def test_a_guard_is_asked_in_its_own_step_only(category: str, options: dict) -> None:
    """A request runs a location's plugins step by step; a guard that acts in one step is
    not called at the other two to return CONTINUE."""
    for step in (None, "early_request", "proxy_upstream"):
        plugin = build_plugin("g", category, options, step)
        assert plugin is not None
        table = plugins_by_step((plugin,))
        assert [s for s in REQUEST_STEPS if plugin in table[s]] == [step or "request"]


def test_jwt_is_asked_in_the_request_step_only() -> None:
    plugin = build_plugin("j", "jwt", {"secret": "s" * 32, "header": "Authorization"})
    assert plugin is not None
    table = plugins_by_step((plugin,))
    assert [s for s in REQUEST_STEPS if plugin in table[s]] == ["request"]
