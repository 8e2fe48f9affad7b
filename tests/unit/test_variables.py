"""Tests for pingap.variables: ``$variables``, ``:context`` keys and header rules."""

from __future__ import annotations

import socket

import pytest

from pingap.accesslog import compile_template
from pingap.config import load_config_text
from pingap.context import ConnectionInfo, RequestContext
from pingap.events import RequestReceived
from pingap.runtime import build_runtime
from pingap.session import ProxySession
from pingap.variables import (
    CONTEXT_KEYS,
    REVERSE_PROXY_HEADERS,
    HeaderRule,
    check_header_rule,
    compile_value,
    parse_header_rule,
)


def make_ctx(**overrides: object) -> RequestContext:
    conn = ConnectionInfo(
        connection_id=7,
        remote_addr="10.0.0.1",
        remote_port=5555,
        server_addr="127.0.0.1",
        server_port=8080,
        accepted_at=0.0,
        tls=True,
        tls_version="TLSv1.3",
        tls_cipher="TLS_AES_128_GCM_SHA256",
        tls_handshake_time=0.012,
    )
    fields: dict[str, object] = {
        "conn": conn,
        "method": "GET",
        "path": "/p",
        "query": "a=1",
        "http_version": "1.1",
        "host": "example.com",
        "request_headers": [(b"X-Request-Id", b"abc"), (b"X-Forwarded-For", b"1.1.1.1")],
        "client_ip": "1.1.1.1",
        "start": 1.0,
        "start_wall": 1000.0,
        "processing": 3,
        "location": "lo",
        "upstream_addr": "10.1.1.1:80",
        "upstream_status": 200,
        "connection_reused": True,
        "end": 1.5,
    }
    fields.update(overrides)
    return RequestContext(**fields)  # type: ignore[arg-type]


def resolve(text: str, ctx: RequestContext | None = None, env: dict[str, str] | None = None) -> str | None:
    return compile_value(text, env=env if env is not None else {})(ctx or make_ctx())


# --- built-in variables ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "expected"),
    [
        ("$host", "example.com"),
        ("$scheme", "https"),
        ("$remote_addr", "10.0.0.1"),
        ("$remote_port", "5555"),
        ("$server_addr", "127.0.0.1"),
        ("$server_port", "8080"),
        ("$upstream_addr", "10.1.1.1:80"),
        ("$proxy_add_x_forwarded_for", "1.1.1.1, 10.0.0.1"),
        ("$client_ip", "1.1.1.1"),
        ("$request_uri", "/p?a=1"),
        ("$http_x_request_id", "abc"),  # _ converted to -
        ("$http_x-request-id", "abc"),  # pingap's verbatim spelling
        ("$http_X-REQUEST-ID", "abc"),  # header names are case-insensitive
        ("$http_missing", None),
    ],
)
def test_builtin_variables(variable: str, expected: str | None) -> None:
    assert resolve(variable) == expected


def test_hostname_variable() -> None:
    assert resolve("$hostname") == socket.gethostname()


def test_scheme_is_http_without_tls() -> None:
    ctx = make_ctx()
    ctx.conn.tls = False
    assert resolve("$scheme", ctx) == "http"


def test_host_empty_resolves_to_none() -> None:
    assert resolve("$host", make_ctx(host="")) is None


def test_upstream_addr_unset_resolves_to_none() -> None:
    assert resolve("$upstream_addr", make_ctx(upstream_addr=None)) is None


def test_proxy_add_x_forwarded_for_without_existing_header() -> None:
    assert resolve("$proxy_add_x_forwarded_for", make_ctx(request_headers=[])) == "10.0.0.1"


def test_request_uri_without_query() -> None:
    assert resolve("$request_uri", make_ctx(query="")) == "/p"


def test_builtins_take_precedence_over_environment() -> None:
    assert resolve("$host", env={"host": "from-env"}) == "example.com"


def test_environment_variables() -> None:
    assert resolve("$MY_VAR", env={"MY_VAR": "value"}) == "value"
    assert resolve("$EMPTY", env={"EMPTY": ""}) == ""


def test_environment_variable_from_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PINGAP_TEST_VAR", "from-os")
    assert compile_value("$PINGAP_TEST_VAR")(make_ctx()) == "from-os"
    rule = parse_header_rule("X-Env: $PINGAP_TEST_VAR")
    assert rule.value(make_ctx()) == b"from-os"


@pytest.mark.parametrize("text", ["$nope", "$http_", "$NOT_SET_ANYWHERE"])
def test_unknown_variable_is_an_error_naming_it(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        compile_value(text, env={})
    assert text[1:] in str(caught.value)


def test_unknown_context_key_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match="nope"):
        compile_value(":nope", env={})


# --- :context keys ---------------------------------------------------------------------


def full_ctx() -> RequestContext:
    """Every field a ``:key`` can read is set."""
    return make_ctx(
        end=1.5,
        connection_time=0.25,
        upstream_reused=False,
        upstream_connected=4,
        upstream_connect_time=0.057,
        upstream_tcp_connect_time=0.001,
        upstream_tls_handshake_time=0.002,
        upstream_connection_time=3.0,
        upstream_processing_time=0.1,
        upstream_response_time=0.2,
        compression_time=0.003,
        compression_ratio=2.5,
        cache_lookup_time=0.004,
        cache_lock_time=0.005,
    )


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("connection_id", "7"),
        ("connection_reused", "true"),
        ("connection_time", "250"),
        ("tls_version", "TLSv1.3"),
        ("tls_cipher", "TLS_AES_128_GCM_SHA256"),
        ("tls_handshake_time", "12"),
        ("processing", "3"),
        ("location", "lo"),
        ("upstream_addr", "10.1.1.1:80"),
        ("upstream_status", "200"),
        ("upstream_reused", "false"),
        ("upstream_connected", "4"),
        ("upstream_connect_time", "57"),
        ("upstream_tcp_connect_time", "1"),
        ("upstream_tls_handshake_time", "2"),
        ("upstream_connection_time", "3000"),
        ("upstream_processing_time", "100"),
        ("upstream_response_time", "200"),
        ("compression_time", "3"),
        ("cache_lookup_time", "4"),
        ("cache_lock_time", "5"),
        ("service_time", "500"),
    ],
)
def test_context_keys(key: str, expected: str) -> None:
    assert resolve(":" + key, full_ctx()) == expected


def test_context_key_table_is_covered() -> None:
    # every documented key compiles (the table above plus compression_ratio)
    for key in CONTEXT_KEYS:
        compile_value(":" + key, env={})
    assert "compression_ratio" in CONTEXT_KEYS


def test_compression_ratio_context_key_is_a_ratio() -> None:
    assert resolve(":compression_ratio", full_ctx()) == "2.5"


def test_missing_context_values_resolve_to_none() -> None:
    ctx = make_ctx(location=None, upstream_addr=None, upstream_status=None)
    ctx.conn.tls_version = None
    for key in ("location", "upstream_addr", "upstream_status", "tls_version",
                "upstream_connect_time", "cache_lock_time", "compression_ratio"):
        assert resolve(":" + key, ctx) is None, key


def test_service_time_before_the_end_is_zero() -> None:
    assert resolve(":service_time", make_ctx(end=None)) == "0"


# The spec (§3.5, §6.3) says ``:key`` header values are the access log's ``{:key}``.
_AGREE_WITH_ACCESS_LOG = sorted(CONTEXT_KEYS - {"compression_ratio"})


@pytest.mark.parametrize("key", _AGREE_WITH_ACCESS_LOG)
def test_context_keys_agree_with_access_log(key: str) -> None:
    ctx = full_ctx()
    assert resolve(":" + key, ctx) == compile_template("{:" + key + "}")(ctx)


@pytest.mark.parametrize("key", ["connection_time", "service_time", "upstream_connect_time"])
def test_context_millis_absorb_float_noise(key: str) -> None:
    # 1.001 s is stored as 1.000999..., and 2.001 - 1.0 as 1.0009999...
    ctx = make_ctx(start=1.0, end=2.001, connection_time=1.001, upstream_connect_time=1.001)
    assert resolve(":" + key, ctx) == "1001"
    assert resolve(":" + key, ctx) == compile_template("{:" + key + "}")(ctx)


# --- header rules ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name", "static"),
    [
        ("X-A:1", b"X-A", b"1"),
        ("X-A: 1 ", b"X-A", b"1"),
        ("x-lower:v", b"x-lower", b"v"),  # name case kept
        ("X-A:a:b", b"X-A", b"a:b"),
        ("X-A:", b"X-A", b""),
        ("X-A:$", b"X-A", b"$"),  # a lone $ is static
        ("X-A::", b"X-A", b":"),
        ("X-A:prefix-$host", b"X-A", b"prefix-$host"),  # only a leading $ is dynamic
        ("X-A:a\tb", b"X-A", b"a\tb"),
    ],
)
def test_static_header_rules(text: str, name: bytes, static: bytes) -> None:
    rule = parse_header_rule(text)
    assert rule == HeaderRule(name, static)
    assert rule.value(make_ctx()) == static
    assert check_header_rule(text) is None


def test_dynamic_header_rule_resolves_per_request() -> None:
    rule = parse_header_rule("X-Host: $host")
    assert rule.name == b"X-Host"
    assert rule.static is None
    assert rule.value(make_ctx(host="a.com")) == b"a.com"
    assert rule.value(make_ctx(host="b.com")) == b"b.com"
    assert parse_header_rule("X-Loc::location").value(make_ctx()) == b"lo"


def test_dynamic_header_rule_resolving_to_none() -> None:
    assert parse_header_rule("X-Id:$http_x_missing").value(make_ctx()) is None


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("X-A", "expected 'Name:value'"),
        (":value", "expected 'Name:value'"),
        ("Bad Name:1", "invalid header name"),
        ("X(A):1", "invalid header name"),
        ("X-A:a\r\nX-Injected: 1", "control characters"),
        ("X-A:a\nb", "control characters"),
        ("X-A:a\x00b", "control characters"),
        ("X-A:$nope_not_a_var", "nope_not_a_var"),
        ("X-A::nope", "nope"),
    ],
)
def test_bad_header_rules_are_rejected(text: str, fragment: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_header_rule(text)
    assert fragment in str(caught.value)
    message = check_header_rule(text)
    assert message is not None and fragment in message


@pytest.mark.parametrize("char", ["\x01", "\x1b", "\x7f"])
def test_header_rule_value_with_other_control_characters_is_rejected(char: str) -> None:
    with pytest.raises(ValueError):
        parse_header_rule(f"X-A:a{char}b")


def test_reverse_proxy_headers_in_pingap_order() -> None:
    names = [parse_header_rule(h).name for h in REVERSE_PROXY_HEADERS]
    assert names == [b"X-Real-IP", b"X-Forwarded-For", b"X-Forwarded-Proto",
                     b"X-Forwarded-Host", b"X-Forwarded-Port"]
    values = [parse_header_rule(h).value(make_ctx()) for h in REVERSE_PROXY_HEADERS]
    assert values == [b"10.0.0.1", b"1.1.1.1, 10.0.0.1", b"https", b"example.com", b"8080"]


# --- through the session ---------------------------------------------------------------


def test_header_rule_resolving_to_none_drops_the_header() -> None:
    runtime = build_runtime(load_config_text("""
[servers.web]
addr = "127.0.0.1:8080"
locations = ["lo"]

[locations.lo]
upstream = "up"
proxy_set_headers = ["X-Request-Id:$http_x_request_id", "X-Trace:$http_x_trace"]
proxy_add_headers = ["X-Added:$http_x_absent", "X-Static:yes"]

[upstreams.up]
addrs = ["127.0.0.1:9000"]
"""))
    conn = ConnectionInfo(connection_id=1, remote_addr="10.0.0.1", remote_port=1, server_addr="127.0.0.1",
                          server_port=8080, accepted_at=0.0)
    headers = [(b"Host", b"h"), (b"X-Trace", b"t1")]
    request = RequestReceived(method=b"GET", target=b"/", headers=headers, http_version=b"1.1",
                              keep_alive=True, expect_continue=False, content_length=None,
                              chunked=False, host=b"h", path=b"/", query=b"")
    session = ProxySession(runtime, runtime.servers["web"], conn, request, now=1.0, wall=1.0)
    session.route()
    _, _, out = session.upstream_request()
    names = [n.lower() for n, _ in out]
    assert b"x-request-id" not in names  # resolved to None: not sent, not sent literally
    assert b"x-added" not in names
    assert (b"X-Trace", b"t1") in out
    assert (b"X-Static", b"yes") in out
    assert not any(b"$" in v for _, v in out)


def test_human_context_keys_are_header_values() -> None:
    """``:service_time_human`` and the other ``*_human`` timings work in header rules
    (pingap accepts them there, with the access log's values)."""
    assert check_header_rule("X-Took::service_time_human") is None
    assert check_header_rule("X-Up::upstream_response_time_human") is None
    ctx = full_ctx()
    rule = parse_header_rule("X-Took::service_time_human")
    assert rule.value(ctx) == compile_template("{:service_time_human}")(ctx).encode()
    assert rule.value(ctx) == b"500ms"
    assert resolve(":cache_lock_time_human", make_ctx()) is None
