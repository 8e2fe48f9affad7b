"""Access-log directives: parsing, checking and every placeholder of spec §6.3."""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pingap.accesslog import (
    PREDEFINED_FORMATS,
    AccessLogSpec,
    FileSinkSettings,
    check_access_log,
    compile_template,
    file_sink_settings,
    parse_access_log,
    rolled_path,
)
from pingap.context import ConnectionInfo, RequestContext

# 2026-01-02T03:00:05.678Z, reached 250 ms after the request started.
START_WALL = 1767322805.428


def make_conn(**changes: object) -> ConnectionInfo:
    conn = ConnectionInfo(
        connection_id=7,
        remote_addr="10.0.0.1",
        remote_port=50123,
        server_addr="127.0.0.1",
        server_port=6188,
        accepted_at=90.0,
        tls=True,
        tls_version="TLSv1.3",
        tls_cipher="TLS_AES_128_GCM_SHA256",
        tls_handshake_time=0.0042,
        requests=3,
    )
    return dataclasses.replace(conn, **changes)  # type: ignore[arg-type]


def make_ctx(**changes: object) -> RequestContext:
    ctx = RequestContext(
        conn=make_conn(),
        method="POST",
        path="/api/items",
        query="page=2&q=x",
        http_version="2",
        host="example.com",
        request_headers=[
            (b"Host", b"example.com"),
            (b"Referer", b"https://example.com/list"),
            (b"User-Agent", b"curl/8.5.0"),
            (b"Cookie", b"session=abc123; theme=dark"),
            (b"X-Trace-Id", b"trace-9"),
            (b"X-Empty", b""),
        ],
        client_ip="203.0.113.9",
        start=100.0,
        start_wall=START_WALL,
        connection_reused=True,
        connection_time=1.5,
        processing=4,
        location="api",
        request_id="req-1",
        status=201,
        response_headers=[
            (b"Content-Type", b"application/json"),
            (b"X-Empty", b""),
        ],
        payload_size=512,
        size=1234,
        upstream_addr="192.168.1.10:8080",
        upstream_status=200,
        upstream_reused=False,
        upstream_connected=3,
        upstream_connect_time=0.012,
        upstream_tcp_connect_time=0.008,
        upstream_tls_handshake_time=0.004,
        upstream_connection_time=30.0,
        upstream_processing_time=0.1,
        upstream_response_time=2.5,
        end=100.25,
    )
    return dataclasses.replace(ctx, **changes)  # type: ignore[arg-type]


def make_bare_ctx(**changes: object) -> RequestContext:
    """A request that left almost nothing behind: no headers, no upstream, no TLS."""
    ctx = RequestContext(
        conn=ConnectionInfo(
            connection_id=1,
            remote_addr="",
            remote_port=0,
            server_addr="127.0.0.1",
            server_port=6188,
            accepted_at=100.0,
        ),
        method="",
        path="",
        query="",
        http_version="1.1",
        host="",
        request_headers=[],
        client_ip="",
        start=100.0,
        start_wall=START_WALL,
        end=100.0,
    )
    return dataclasses.replace(ctx, **changes)  # type: ignore[arg-type]


def render(template: str, ctx: RequestContext) -> str:
    return compile_template(template)(ctx)


@pytest.fixture
def utc_plus_8(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "CST-8")  # POSIX spelling of UTC+08:00
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# --- predefined formats --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "combined",
            (
                '10.0.0.1 "POST /api/items?page=2&q=x HTTP/2.0" 201 1.2KB '
                '"https://example.com/list" "curl/8.5.0"'
            ),
        ),
        ("common", '10.0.0.1 "POST /api/items?page=2&q=x HTTP/2.0" 201 1.2KB'),
        ("short", "10.0.0.1 POST /api/items?page=2&q=x HTTP/2.0 201 1.2KB - 250ms"),
        ("tiny", "POST /api/items?page=2&q=x 201 1.2KB - 250ms"),
    ],
)
def test_predefined_format(name: str, expected: str) -> None:
    assert render(name, make_ctx()) == expected
    assert render(PREDEFINED_FORMATS[name], make_ctx()) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("combined", '- "- - HTTP/1.1" - 0B "-" "-"'),
        ("common", '- "- - HTTP/1.1" - 0B'),
        ("short", "- - - HTTP/1.1 - 0B - 0ms"),
        ("tiny", "- - - 0B - 0ms"),
    ],
)
def test_predefined_format_with_nothing_known(name: str, expected: str) -> None:
    assert render(name, make_bare_ctx()) == expected


def test_common_has_no_stray_quote() -> None:
    assert not PREDEFINED_FORMATS["common"].endswith('"')


# --- every placeholder ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{host}", "example.com"),
        ("{method}", "POST"),
        ("{path}", "/api/items"),
        ("{proto}", "HTTP/2.0"),
        ("{query}", "page=2&q=x"),
        ("{remote}", "10.0.0.1"),
        ("{client_ip}", "203.0.113.9"),
        ("{scheme}", "https"),
        ("{uri}", "/api/items?page=2&q=x"),
        ("{referer}", "https://example.com/list"),
        ("{user_agent}", "curl/8.5.0"),
        ("{when_utc_iso}", "2026-01-02T03:00:05.678Z"),
        ("{when_unix}", "1767322805678"),
        ("{size}", "1234"),
        ("{size_human}", "1.2KB"),
        ("{status}", "201"),
        ("{latency}", "250"),
        ("{latency_human}", "250ms"),
        ("{payload_size}", "512"),
        ("{payload_size_human}", "512B"),
        ("{request_id}", "req-1"),
        ("{~session}", "abc123"),
        ("{~theme}", "dark"),
        ("{>X-Trace-Id}", "trace-9"),
        ("{>x-trace-id}", "trace-9"),
        ("{>user-agent}", "curl/8.5.0"),
        ("{<Content-Type}", "application/json"),
        ("{<content-type}", "application/json"),
        ("{$hostname}", socket.gethostname()),
        ("{:connection_id}", "7"),
        ("{:connection_reused}", "true"),
        ("{:connection_time}", "1500"),
        ("{:connection_time_human}", "1.5s"),
        ("{:tls_version}", "TLSv1.3"),
        ("{:tls_cipher}", "TLS_AES_128_GCM_SHA256"),
        ("{:tls_handshake_time}", "4"),
        ("{:tls_handshake_time_human}", "4ms"),
        ("{:processing}", "4"),
        ("{:location}", "api"),
        ("{:upstream_addr}", "192.168.1.10:8080"),
        ("{:upstream_status}", "200"),
        ("{:upstream_reused}", "false"),
        ("{:upstream_connected}", "3"),
        ("{:upstream_connect_time}", "12"),
        ("{:upstream_connect_time_human}", "12ms"),
        ("{:upstream_tcp_connect_time}", "8"),
        ("{:upstream_tcp_connect_time_human}", "8ms"),
        ("{:upstream_tls_handshake_time}", "4"),
        ("{:upstream_tls_handshake_time_human}", "4ms"),
        ("{:upstream_connection_time}", "30000"),
        ("{:upstream_connection_time_human}", "30s"),
        ("{:upstream_processing_time}", "100"),
        ("{:upstream_processing_time_human}", "100ms"),
        ("{:upstream_response_time}", "2500"),
        ("{:upstream_response_time_human}", "2.5s"),
        ("{:compression_time}", "-"),
        ("{:compression_time_human}", "-"),
        ("{:compression_ratio}", "-"),
        ("{:cache_lookup_time}", "-"),
        ("{:cache_lookup_time_human}", "-"),
        ("{:cache_lock_time}", "-"),
        ("{:cache_lock_time_human}", "-"),
        ("{:service_time}", "250"),
        ("{:service_time_human}", "250ms"),
    ],
)
def test_placeholder(template: str, expected: str) -> None:
    assert render(template, make_ctx()) == expected


@pytest.mark.usefixtures("utc_plus_8")
def test_when_is_local_time_with_offset() -> None:
    assert render("{when}", make_ctx()) == "2026-01-02T11:00:05.678+08:00"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{host}", "-"),
        ("{method}", "-"),
        ("{path}", "-"),
        ("{query}", "-"),
        ("{remote}", "-"),
        ("{client_ip}", "-"),
        ("{scheme}", "http"),
        ("{uri}", "-"),
        ("{referer}", "-"),
        ("{user_agent}", "-"),
        ("{status}", "-"),
        ("{size}", "0"),
        ("{size_human}", "0B"),
        ("{payload_size}", "0"),
        ("{payload_size_human}", "0B"),
        ("{request_id}", "-"),
        ("{~session}", ""),
        ("{>x-trace-id}", "-"),
        ("{<content-type}", "-"),
        ("{:connection_reused}", "false"),
        ("{:connection_time}", "0"),
        ("{:tls_version}", "-"),
        ("{:tls_cipher}", "-"),
        ("{:tls_handshake_time}", "-"),
        ("{:tls_handshake_time_human}", "-"),
        ("{:location}", ""),
        ("{:upstream_addr}", ""),
        ("{:upstream_status}", "-"),
        ("{:upstream_reused}", "false"),
        ("{:upstream_connected}", ""),
        ("{:upstream_connect_time}", ""),
        ("{:upstream_connect_time_human}", ""),
        ("{:upstream_tcp_connect_time}", ""),
        ("{:upstream_tls_handshake_time}", ""),
        ("{:upstream_connection_time}", ""),
        ("{:upstream_processing_time}", ""),
        ("{:upstream_response_time_human}", ""),
        ("{:compression_time}", "-"),
        ("{:compression_ratio}", "-"),
        ("{:cache_lookup_time}", "-"),
        ("{:cache_lock_time}", "-"),
    ],
)
def test_missing_value(template: str, expected: str) -> None:
    assert render(template, make_bare_ctx()) == expected


def test_empty_header_values_print_dash() -> None:
    assert render("{>x-empty} {<x-empty}", make_ctx()) == "- -"


@pytest.mark.parametrize(
    ("version", "expected"),
    [("1.0", "HTTP/1.1"), ("1.1", "HTTP/1.1"), ("2", "HTTP/2.0")],
)
def test_proto(version: str, expected: str) -> None:
    assert render("{proto}", make_ctx(http_version=version)) == expected


def test_features_not_built_yet_print_their_values_once_set() -> None:
    ctx = make_ctx(
        compression_time=0.0031,
        compression_ratio=3.27,
        cache_lookup_time=0.002,
        cache_lock_time=1.5,
    )
    template = (
        "{:compression_time} {:compression_time_human} {:compression_ratio} "
        "{:cache_lookup_time} {:cache_lock_time_human}"
    )
    assert render(template, ctx) == "3 3ms 3.3 2 1.5s"


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (0, "0B"),
        (512, "512B"),
        (999, "999B"),
        (1000, "1KB"),
        (1024, "1KB"),
        (1124, "1.1KB"),
        (1_220_000, "1.2MB"),
        (3_000_000_000, "3GB"),
    ],
)
def test_size_human(size: int, expected: str) -> None:
    assert render("{size_human}", make_ctx(size=size)) == expected
    assert render("{payload_size_human}", make_ctx(payload_size=size)) == expected


@pytest.mark.parametrize(
    ("elapsed", "ms", "human"),
    [
        (0.0, "0", "0ms"),
        (0.85, "850", "850ms"),
        (1.2, "1200", "1.2s"),
        (59.999, "59999", "59.9s"),
        (210.0, "210000", "3.5m"),
        (3600.0, "3600000", "1h"),
        (5400.0, "5400000", "1.5h"),
    ],
)
def test_latency(elapsed: float, ms: str, human: str) -> None:
    ctx = make_ctx(end=100.0 + elapsed)
    assert render("{latency} {latency_human}", ctx) == f"{ms} {human}"
    assert render("{:service_time} {:service_time_human}", ctx) == f"{ms} {human}"
    ctx = make_ctx(connection_time=elapsed)
    assert render("{:connection_time} {:connection_time_human}", ctx) == f"{ms} {human}"


def test_latency_of_an_unfinished_request_runs_to_now() -> None:
    ctx = make_ctx(start=time.monotonic() - 2.0, end=None)
    assert 2000 <= int(render("{latency}", ctx)) < 3000


def test_when_of_an_unfinished_request_is_now() -> None:
    ctx = make_ctx(start=time.monotonic(), start_wall=time.time(), end=None)
    assert abs(int(render("{when_unix}", ctx)) - time.time() * 1000) < 1000


# --- template compilation ------------------------------------------------------------


def test_literal_text_and_percent_signs_are_kept() -> None:
    assert render("100% {method} %s {status}%", make_ctx()) == "100% POST %s 201%"


def test_template_without_placeholders_is_constant() -> None:
    assert render("static 50%", make_ctx()) == "static 50%"


def test_unknown_placeholders_are_dropped_like_pingap() -> None:
    assert render("a{nope}b {:nope} {method}", make_ctx()) == "ab  POST"


def test_malformed_braces_stay_literal() -> None:
    template = '{"m":"{method}","x":{host {}}'
    assert render(template, make_ctx()) == '{"m":"POST","x":{host {}}'


def test_env_var_resolved_once_at_compile_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PINGAP_TEST_ZONE", "eu-1")
    monkeypatch.delenv("PINGAP_TEST_UNSET", raising=False)
    format_line = compile_template("{$PINGAP_TEST_ZONE}|{$PINGAP_TEST_UNSET}|{method}")
    monkeypatch.setenv("PINGAP_TEST_ZONE", "us-2")
    assert format_line(make_ctx()) == "eu-1||POST"


def test_env_and_hostname_can_be_injected() -> None:
    format_line = compile_template(
        "{$hostname} {$ZONE} {$HOSTNAME}", env={"ZONE": "z%1"}, hostname="edge-1"
    )
    assert format_line(make_ctx()) == "edge-1 z%1 "


def test_header_placeholder_names_may_contain_digits() -> None:
    ctx = make_ctx(request_headers=[(b"X-B3-TraceId", b"b3")])
    assert render("{>x-b3-traceid}", ctx) == "b3"


def test_compiled_formatter_is_reusable() -> None:
    format_line = compile_template("combined")
    assert format_line(make_ctx()) == format_line(make_ctx())
    assert format_line(make_bare_ctx()) != format_line(make_ctx())


# --- directive parsing ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("combined", AccessLogSpec(None, {}, PREDEFINED_FORMATS["combined"])),
        ("{method} {uri}", AccessLogSpec(None, {}, "{method} {uri}")),
        (
            "/var/log/pingap/access.log tiny",
            AccessLogSpec("/var/log/pingap/access.log", {}, PREDEFINED_FORMATS["tiny"]),
        ),
        (
            "/var/log/a.log {when} {host} {method} {path}",
            AccessLogSpec("/var/log/a.log", {}, "{when} {host} {method} {path}"),
        ),
        (
            "/var/log/a.log?rolling=hourly&channel_buffer=500&flush_timeout=5s common",
            AccessLogSpec(
                "/var/log/a.log",
                {"rolling": "hourly", "channel_buffer": "500", "flush_timeout": "5s"},
                PREDEFINED_FORMATS["common"],
            ),
        ),
        # The second part is not a format, so the whole value is the template.
        ("/var/log/a.log method", AccessLogSpec(None, {}, "/var/log/a.log method")),
        ("/var/log/a.log", AccessLogSpec(None, {}, "/var/log/a.log")),
        # A template that starts with "{" is never split, even when it has spaces.
        ("{host} {method}", AccessLogSpec(None, {}, "{host} {method}")),
        ("short", AccessLogSpec(None, {}, PREDEFINED_FORMATS["short"])),
        ('GET "{uri}"', AccessLogSpec(None, {}, 'GET "{uri}"')),
    ],
)
def test_parse_access_log(value: str, expected: AccessLogSpec) -> None:
    assert parse_access_log(value) == expected


# --- checking ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "combined",
        "common",
        "short",
        "tiny",
        "{when} {remote} {:upstream_addr} {>X-B3-TraceId} {$HOME} {$hostname} {~sid}",
        "/var/log/pingap/access.log?rolling=never&channel_buffer=500&flush_timeout=1m30s tiny",
        # pingap's own example (pingap-config/src/hcl.rs).
        (
            '/opt/pingap/access_logs?flush_timeout=10s {when} {remote} "{method} {uri} {proto}" '
            '{status} {size_human} {latency_human} "{referer}" "{user_agent}" '
            '"tls:{:tls_version}-{:tls_cipher}-{:tls_handshake_time}" '
            '"{:connection_time} {:connection_reused}" {:upstream_addr}'
        ),
        '{"method":"{method}","uri":"{uri}"}',
    ],
)
def test_check_accepts(value: str) -> None:
    assert check_access_log(value) is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "access log format is empty"),
        ("   ", "access log format is empty"),
        (
            "/var/log/a.log?rolling=weekly tiny",
            "access log rolling='weekly' is not one of daily, hourly, minutely, never",
        ),
        (
            "/var/log/a.log?channel_buffer=0 tiny",
            "access log channel_buffer='0' is not a positive integer",
        ),
        (
            "/var/log/a.log?channel_buffer=lots tiny",
            "access log channel_buffer='lots' is not a positive integer",
        ),
        (
            "/var/log/a.log?flush_timeout=0s tiny",
            "access log flush_timeout='0s' is not a positive duration like 10s",
        ),
        (
            "/var/log/a.log?flush_timeout=soon tiny",
            "access log flush_timeout='soon' is not a positive duration like 10s",
        ),
        (
            "/var/log/a.log?roling=daily tiny",
            "unknown access log parameter 'roling' (did you mean 'rolling'?)",
        ),
        ("?rolling=daily tiny", "access log file path is empty"),
        ("{usr_agent}", "unknown placeholder {usr_agent} (did you mean {user_agent}?)"),
        (
            "{user-agent}",
            "unknown placeholder {user-agent} (did you mean {user_agent}?)",
        ),
        ("{zzz}", "unknown placeholder {zzz}"),
        (
            "{upstream_addr}",
            "unknown placeholder {upstream_addr} (did you mean {:upstream_addr}?)",
        ),
        (
            "{:upstream_adr}",
            "unknown context key {:upstream_adr} (did you mean {:upstream_addr}?)",
        ),
        ("{method} {host", "malformed placeholder '{host' at offset 9"),
        ("{method} {}", "malformed placeholder '{}' at offset 9"),
        ("{method} {>}", "placeholder {>} needs a name after '>'"),
        ("{method} {:}", "placeholder {:} needs a name after ':'"),
        ("{method} {$}", "placeholder {$} needs a name after '$'"),
        (
            "/var/log/a.log",
            (
                "access log format '/var/log/a.log' has no placeholder; to log to a file write "
                "'<path> <format>' with a format of combined, common, short, tiny or '{...}'"
            ),
        ),
        (
            "/var/log/a.log?rolling=weekly {methd} {host",
            (
                "access log rolling='weekly' is not one of daily, hourly, minutely, never; "
                "malformed placeholder '{host' at offset 8; "
                "unknown placeholder {methd} (did you mean {method}?)"
            ),
        ),
    ],
)
def test_check_rejects(value: str, message: str) -> None:
    assert check_access_log(value) == message


# --- file sinks: rolling, buffering, reopen --------------------------------------------------

# 2025-01-31 13:05:59 UTC
ROLL_AT = 1738328759.0


@pytest.mark.parametrize(
    ("rolling", "now", "expected"),
    [
        ("never", ROLL_AT, "/l/access.log"),
        ("daily", ROLL_AT, "/l/access.log.2025-01-31"),
        ("hourly", ROLL_AT, "/l/access.log.2025-01-31-13"),
        ("minutely", ROLL_AT, "/l/access.log.2025-01-31-13-05"),
        ("minutely", ROLL_AT + 1, "/l/access.log.2025-01-31-13-06"),
        ("hourly", ROLL_AT + 3241, "/l/access.log.2025-01-31-14"),
        ("daily", ROLL_AT + 39841, "/l/access.log.2025-02-01"),
    ],
)
def test_rolled_file_names_are_pingaps(rolling: str, now: float, expected: str) -> None:
    assert rolled_path("/l/access.log", rolling, now) == expected


def test_file_sink_settings_from_the_query() -> None:
    spec = parse_access_log("/l/a.log?rolling=hourly&channel_buffer=5&flush_timeout=2s tiny")
    assert file_sink_settings(spec) == FileSinkSettings("hourly", 5, 2.0)
    assert file_sink_settings(parse_access_log("/l/a.log tiny")) == FileSinkSettings()


def test_minutely_sink_moves_to_the_next_file_as_the_clock_passes_the_minute(
        tmp_path: Path) -> None:
    from workers.accesslog import FileAccessLog

    now = [ROLL_AT]
    base = tmp_path / "logs" / "access.log"
    sink = FileAccessLog(str(base), FileSinkSettings(rolling="minutely"), clock=lambda: now[0])
    try:
        sink.write("first")
        sink.flush()
        now[0] += 1  # 13:06:00
        sink.write("second")
        sink.write("third")
        sink.flush()
        first = tmp_path / "logs" / "access.log.2025-01-31-13-05"
        second = tmp_path / "logs" / "access.log.2025-01-31-13-06"
        assert first.read_text() == "first\n"
        assert second.read_text() == "second\nthird\n"
        assert sink.current == str(second)
        # logrotate moves the file away, USR1 reopens: the period's name again, fresh
        second.rename(tmp_path / "logs" / "rotated")
        sink.write("fourth")
        sink.reopen()
        sink.write("fifth")
        sink.flush()
        assert (tmp_path / "logs" / "rotated").read_text() == "second\nthird\nfourth\n"
        assert second.read_text() == "fifth\n"
    finally:
        sink.close()
    assert not base.exists()  # rolling never writes the bare name


def test_channel_buffer_starts_a_flush_after_that_many_lines(tmp_path: Path) -> None:
    import gevent

    from workers.accesslog import FileAccessLog

    path = tmp_path / "a.log"
    sink = FileAccessLog(str(path), FileSinkSettings(channel_buffer=3, flush_timeout=3600.0))
    try:
        sink.write("1")
        sink.write("2")
        gevent.sleep(0.05)
        assert path.read_text() == ""  # below the buffer, and the timeout is an hour away
        sink.write("3")
        deadline = time.monotonic() + 5
        while path.read_text() != "1\n2\n3\n" and time.monotonic() < deadline:
            gevent.sleep(0.01)
        assert path.read_text() == "1\n2\n3\n"
    finally:
        sink.close()
