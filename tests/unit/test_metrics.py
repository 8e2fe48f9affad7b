"""Tests for pingap.metrics: MetricsRecorder writing into a SharedState column, the text
exposition rendered from the region, and the per-process lines."""

from __future__ import annotations

import re
import struct

import pytest

from pingap.context import ConnectionInfo, RequestContext
from pingap.metrics import (
    HELP,
    RESPONSE_TIME_BUCKETS,
    UPSTREAM_PROCESSING_BUCKETS,
    UPSTREAM_TIME_BUCKETS,
    MetricsRecorder,
    process_lines,
    render,
    request_counts,
)
from pingap.state import REGISTRY_AT, SERIES, SERIES_NAME, SIZE, SeriesKind, SharedState

# --- exposition parsing ------------------------------------------------------------------

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')

Sample = tuple[str, tuple[tuple[str, str], ...], float]


def _unescape(value: str) -> str:
    return re.sub(r'\\(.)', lambda m: {"n": "\n", "\\": "\\", '"': '"'}[m.group(1)], value)


def _parse_labels(text: str) -> tuple[tuple[str, str], ...]:
    out = []
    pos = 0
    while pos < len(text):
        m = _LABEL.match(text, pos)
        assert m is not None, f"bad label set: {text!r} at {pos}"
        out.append((m.group(1), _unescape(m.group(2))))
        pos = m.end()
    return tuple(out)


def parse(text: str) -> list[Sample]:
    """Every sample line of an exposition; fails on any line that is not well formed."""
    assert text.endswith("\n")
    out: list[Sample] = []
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        m = _SAMPLE.match(line)
        assert m is not None, f"bad sample line: {line!r}"
        value = m.group(3)
        out.append((m.group(1), _parse_labels(m.group(2) or ""),
                    float("inf") if value == "+Inf" else float(value)))
    return out


def value(samples: list[Sample], name: str, **labels: str) -> float | None:
    want = set(labels.items())
    found = [v for n, ls, v in samples if n == name and set(ls) == want]
    assert len(found) <= 1, f"{name}{labels} appears {len(found)} times"
    return found[0] if found else None


def buckets(samples: list[Sample], name: str, **labels: str) -> dict[float, float]:
    """le (as a number) -> cumulative count for one histogram series."""
    want = set(labels.items())
    out = {}
    for n, ls, v in samples:
        if n != name + "_bucket":
            continue
        ls_dict = dict(ls)
        le = ls_dict.pop("le")
        if set(ls_dict.items()) == want:
            bound = float("inf") if le == "+Inf" else float(le)
            assert bound not in out
            out[bound] = v
    return out


def expected_buckets(bounds: tuple[float, ...], observations: list[float]) -> dict[float, float]:
    return {b: float(sum(1 for o in observations if o <= b)) for b in (*bounds, float("inf"))}


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture
def state() -> SharedState:
    st = SharedState(bytearray(SIZE))
    st.initialise()
    return st


def make_ctx(**fields: object) -> RequestContext:
    conn = ConnectionInfo(connection_id=1, remote_addr="127.0.0.1", remote_port=40000,
                          server_addr="127.0.0.1", server_port=8080, accepted_at=0.0)
    base: dict[str, object] = dict(conn=conn, method="GET", path="/", query="",
                                   http_version="1.1", host="h", request_headers=[],
                                   client_ip="127.0.0.1", start=100.0, start_wall=0.0,
                                   location="api", status=200, end=100.0)
    base.update(fields)
    return RequestContext(**base)  # type: ignore[arg-type]


def one_request(rec: MetricsRecorder, server: str = "web", location: str = "api",
                upstream: str | None = None, reused: bool = False, **ctx: object) -> None:
    rec.request_started(server, location, reused)
    rec.request_finished(server, make_ctx(location=location, **ctx), upstream)


# --- recorder ----------------------------------------------------------------------------


def test_request_counted_for_all_locations_and_the_location(state: SharedState) -> None:
    rec = MetricsRecorder(state, 0)
    rec.request_started("web", "api", False)
    s = parse(render(state, [0]))
    for loc in ("", "api"):
        assert value(s, "pingap_http_requests_total", server="web", location=loc) == 1
        assert value(s, "pingap_http_requests_current", server="web", location=loc) == 1
    rec.request_finished("web", make_ctx(), None)
    s = parse(render(state, [0]))
    for loc in ("", "api"):
        assert value(s, "pingap_http_requests_total", server="web", location=loc) == 1
        assert value(s, "pingap_http_requests_current", server="web", location=loc) == 0
        assert value(s, "pingap_http_responses_codes", server="web", location=loc,
                     code="2xx") == 1


def test_locations_are_counted_apart_and_summed_in_the_empty_location(
        state: SharedState) -> None:
    rec = MetricsRecorder(state, 0)
    for loc, n in (("api", 3), ("static", 2)):
        for _ in range(n):
            one_request(rec, location=loc)
    s = parse(render(state, [0]))
    assert value(s, "pingap_http_requests_total", server="web", location="api") == 3
    assert value(s, "pingap_http_requests_total", server="web", location="static") == 2
    assert value(s, "pingap_http_requests_total", server="web", location="") == 5
    assert value(s, "pingap_http_requests_current", server="web", location="") == 0


def test_servers_are_counted_apart(state: SharedState) -> None:
    rec = MetricsRecorder(state, 0)
    one_request(rec, server="a")
    one_request(rec, server="b")
    one_request(rec, server="b")
    s = parse(render(state, [0]))
    assert value(s, "pingap_http_requests_total", server="a", location="") == 1
    assert value(s, "pingap_http_requests_total", server="b", location="") == 2


@pytest.mark.parametrize("status, code", [
    (200, "2xx"), (204, "2xx"), (299, "2xx"), (101, "1xx"), (301, "3xx"), (304, "3xx"),
    (404, "4xx"), (499, "4xx"), (500, "5xx"), (502, "5xx"), (599, "5xx"),
    (None, "unknown"), (0, "unknown"), (99, "unknown"), (600, "unknown"), (999, "unknown"),
])
def test_response_code_classes(state: SharedState, status: int | None, code: str) -> None:
    rec = MetricsRecorder(state, 0)
    one_request(rec, status=status)
    s = parse(render(state, [0]))
    codes = {dict(ls)["code"]: v for n, ls, v in s
             if n == "pingap_http_responses_codes" and dict(ls)["location"] == "api"}
    assert codes == {code: 1}
    assert value(s, "pingap_http_responses_codes", server="web", location="",
                 code=code) == 1


def test_response_codes_accumulate_per_class(state: SharedState) -> None:
    rec = MetricsRecorder(state, 0)
    for status in (200, 201, 404, 502, 503, 503, None):
        one_request(rec, status=status)
    s = parse(render(state, [0]))
    got = {dict(ls)["code"]: v for n, ls, v in s
           if n == "pingap_http_responses_codes" and dict(ls)["location"] == ""}
    assert got == {"2xx": 2, "4xx": 1, "5xx": 3, "unknown": 1}


def test_response_time_histogram_is_cumulative(state: SharedState) -> None:
    rec = MetricsRecorder(state, 0)
    times = [0.003, 0.005, 0.3, 0.3, 2.0, 20.0]  # 0.005: on a bound, counted in it
    for elapsed in times:
        one_request(rec, start=0.0, end=elapsed)
    s = parse(render(state, [0]))
    for loc in ("", "api"):
        got = buckets(s, "pingap_http_response_time_seconds", server="web", location=loc)
        want = expected_buckets(RESPONSE_TIME_BUCKETS, times)
        assert got.keys() == want.keys()
        for bound in want:
            assert got[bound] == want[bound], bound
        assert value(s, "pingap_http_response_time_seconds_count", server="web",
                     location=loc) == len(times)
        assert value(s, "pingap_http_response_time_seconds_sum", server="web",
                     location=loc) == pytest.approx(sum(times))


def test_response_time_buckets_are_in_increasing_order(state: SharedState) -> None:
    rec = MetricsRecorder(state, 0)
    one_request(rec, end=100.07)
    s = parse(render(state, [0]))
    les = [dict(ls)["le"] for n, ls, _ in s
           if n == "pingap_http_response_time_seconds_bucket" and dict(ls)["location"] == "api"]
    numbers = [float("inf") if le == "+Inf" else float(le) for le in les]
    assert numbers == sorted(numbers)
    assert les[-1] == "+Inf"


def test_response_time_without_end_is_zero(state: SharedState) -> None:
    rec = MetricsRecorder(state, 0)
    one_request(rec, end=None)
    s = parse(render(state, [0]))
    got = buckets(s, "pingap_http_response_time_seconds", server="web", location="api")
    assert set(got.values()) == {1.0}
    assert value(s, "pingap_http_response_time_seconds_sum", server="web", location="api") == 0


def test_received_and_sent_bytes(state: SharedState) -> None:
    rec = MetricsRecorder(state, 0)
    one_request(rec, payload_size=10, size=1000)
    one_request(rec, payload_size=0, size=24)
    one_request(rec, payload_size=5, size=0)
    s = parse(render(state, [0]))
    for loc in ("", "api"):
        assert value(s, "pingap_http_received_bytes", server="web", location=loc) == 15
        assert value(s, "pingap_http_sent_bytes", server="web", location=loc) == 1024


def test_connection_reuses(state: SharedState) -> None:
    rec = MetricsRecorder(state, 0)
    one_request(rec, reused=False)
    one_request(rec, reused=True)
    one_request(rec, reused=True)
    s = parse(render(state, [0]))
    assert value(s, "pingap_connection_reuses", server="web") == 2


def test_no_upstream_no_upstream_series(state: SharedState) -> None:
    rec = MetricsRecorder(state, 0)
    one_request(rec, upstream=None, upstream_reused=True, upstream_tcp_connect_time=0.1,
                upstream_processing_time=0.1, upstream_response_time=0.1)
    assert not [n for n, _, _ in parse(render(state, [0])) if n.startswith("pingap_upstream")]


def test_upstream_histograms_and_reuses(state: SharedState) -> None:
    rec = MetricsRecorder(state, 0)
    observed = {"tcp": [0.002, 0.07], "processing": [0.03, 7.0], "response": [0.2, 0.0005]}
    for i, reused in enumerate((True, False)):
        one_request(rec, upstream="backend", upstream_reused=reused,
                    upstream_tcp_connect_time=observed["tcp"][i],
                    upstream_processing_time=observed["processing"][i],
                    upstream_response_time=observed["response"][i])
    s = parse(render(state, [0]))
    labels = {"server": "web", "upstream": "backend"}
    assert value(s, "pingap_upstream_reuses", **labels) == 1
    for family, key, bounds in (
            ("pingap_upstream_tcp_connect_time_seconds", "tcp", UPSTREAM_TIME_BUCKETS),
            ("pingap_upstream_processing_time_seconds", "processing",
             UPSTREAM_PROCESSING_BUCKETS),
            ("pingap_upstream_response_time_seconds", "response", UPSTREAM_TIME_BUCKETS)):
        assert buckets(s, family, **labels) == expected_buckets(bounds, observed[key])
        assert value(s, family + "_count", **labels) == 2
        assert value(s, family + "_sum", **labels) == pytest.approx(sum(observed[key]))


def test_upstream_timings_not_measured_are_not_observed(state: SharedState) -> None:
    rec = MetricsRecorder(state, 0)
    one_request(rec, upstream="backend", upstream_reused=False,
                upstream_tcp_connect_time=None, upstream_processing_time=0.05,
                upstream_response_time=None)
    s = parse(render(state, [0]))
    names = {n for n, _, _ in s if n.startswith("pingap_upstream")}
    assert not any(n.startswith("pingap_upstream_tcp_connect_time_seconds") for n in names)
    assert not any(n.startswith("pingap_upstream_response_time_seconds") for n in names)
    assert value(s, "pingap_upstream_processing_time_seconds_count", server="web",
                 upstream="backend") == 1
    assert value(s, "pingap_upstream_reuses", server="web", upstream="backend") in (None, 0)


def inflight(rec: MetricsRecorder, server: str, upstream: str, delta: float) -> None:
    """A per-upstream gauge, written through the recorder's generic ``add``."""
    rec.add("pingap_upstream_connections_current",
            f'{{server="{server}",upstream="{upstream}"}}', delta, SeriesKind.GAUGE)


def test_gauge_series_add_up(state: SharedState) -> None:
    rec = MetricsRecorder(state, 0)
    for delta in (1, 1, 1, -1):
        inflight(rec, "web", "backend", delta)
    s = parse(render(state, [0]))
    assert value(s, "pingap_upstream_connections_current", server="web",
                 upstream="backend") == 2


# --- columns -----------------------------------------------------------------------------


def test_two_recorders_on_different_columns_sum_in_render(state: SharedState) -> None:
    r0 = MetricsRecorder(state, 0)
    r5 = MetricsRecorder(state, 5)
    one_request(r0, payload_size=1, size=10, end=100.001)
    one_request(r5, payload_size=2, size=20, end=100.3)
    one_request(r5, status=500, end=100.3)
    r5.request_started("web", "api", False)  # still in flight
    s = parse(render(state, [0, 5]))
    assert value(s, "pingap_http_requests_total", server="web", location="api") == 4
    assert value(s, "pingap_http_requests_current", server="web", location="api") == 1
    assert value(s, "pingap_http_received_bytes", server="web", location="api") == 3
    assert value(s, "pingap_http_sent_bytes", server="web", location="api") == 30
    assert value(s, "pingap_http_responses_codes", server="web", location="api",
                 code="5xx") == 1
    assert buckets(s, "pingap_http_response_time_seconds", server="web", location="api") == \
        expected_buckets(RESPONSE_TIME_BUCKETS, [0.001, 0.3, 0.3])
    # a column that is not listed (and not retired) is not counted
    s0 = parse(render(state, [0]))
    assert value(s0, "pingap_http_requests_total", server="web", location="api") == 1
    assert value(s0, "pingap_http_requests_current", server="web", location="api") == 0


def test_recorders_share_the_registry(state: SharedState) -> None:
    r0 = MetricsRecorder(state, 0)
    r1 = MetricsRecorder(state, 1)
    one_request(r0)
    before = state.series_count()
    one_request(r1)
    assert state.series_count() == before  # same label sets: same series


def test_retired_column_still_counts(state: SharedState) -> None:
    live = MetricsRecorder(state, 0)
    dead = MetricsRecorder(state, 7)
    one_request(live)
    one_request(dead, size=100, end=100.2)
    dead.request_started("web", "api", False)  # in flight when the worker died
    inflight(dead, "web", "backend", 1)
    state.retire(7)
    s = parse(render(state, [0]))
    assert value(s, "pingap_http_requests_total", server="web", location="api") == 3
    assert value(s, "pingap_http_sent_bytes", server="web", location="api") == 100
    assert value(s, "pingap_http_response_time_seconds_count", server="web",
                 location="api") == 2
    # gauges of the dead worker are dropped
    assert value(s, "pingap_http_requests_current", server="web", location="api") == 0
    assert value(s, "pingap_upstream_connections_current", server="web",
                 upstream="backend") == 0
    # a new worker on the same column starts from zero and adds to the retired totals
    reborn = MetricsRecorder(state, 7)
    one_request(reborn)
    s = parse(render(state, [0, 7]))
    assert value(s, "pingap_http_requests_total", server="web", location="api") == 4
    assert value(s, "pingap_http_requests_current", server="web", location="api") == 0


def test_recorders_in_different_views_of_the_region() -> None:
    buf = bytearray(SIZE)
    master = SharedState(buf)
    master.initialise()
    w1 = MetricsRecorder(SharedState(buf), 1)
    w2 = MetricsRecorder(SharedState(buf), 2)
    one_request(w1, location="a")
    one_request(w2, location="b")
    one_request(w1, location="b")
    s = parse(render(master, [1, 2]))
    assert value(s, "pingap_http_requests_total", server="web", location="a") == 1
    assert value(s, "pingap_http_requests_total", server="web", location="b") == 2
    assert value(s, "pingap_http_requests_total", server="web", location="") == 3


# --- exposition format -------------------------------------------------------------------


def _types(text: str) -> list[tuple[str, str]]:
    return [tuple(line.split(" ", 3)[2:4]) for line in text.split("\n")  # type: ignore[misc]
            if line.startswith("# TYPE ")]


def test_help_and_type_once_per_family(state: SharedState) -> None:
    rec = MetricsRecorder(state, 0)
    for loc in ("a", "b"):
        one_request(rec, location=loc, upstream="u", upstream_reused=True,
                    upstream_tcp_connect_time=0.01, upstream_processing_time=0.01,
                    upstream_response_time=0.01, payload_size=1, size=1, reused=True)
    inflight(rec, "web", "u", 1)
    text = render(state, [0])
    types = _types(text)
    families = [f for f, _ in types]
    assert len(families) == len(set(families))
    helps = [line.split(" ", 3)[2] for line in text.split("\n") if line.startswith("# HELP ")]
    assert helps == families
    for family, kind in types:
        if family in HELP:
            assert kind == HELP[family][0], family
    for family in HELP:
        assert family in families, family  # every documented family was recorded here


def test_samples_follow_their_family_header(state: SharedState) -> None:
    rec = MetricsRecorder(state, 0)
    one_request(rec, upstream="u", upstream_reused=True, upstream_tcp_connect_time=0.01,
                upstream_processing_time=0.01, upstream_response_time=0.01)
    text = render(state, [0])
    family = kind = None
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(" ")
            continue
        assert family is not None
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if kind == "histogram":
            assert name in (family + "_bucket", family + "_sum", family + "_count"), line
        else:
            assert name == family, line


def test_build_info_always_present(state: SharedState) -> None:
    text = render(state, [])
    assert "# TYPE pingap_build_info gauge" in text
    s = parse(text)
    (info,) = [(ls, v) for n, ls, v in s if n == "pingap_build_info"]
    assert dict(info[0]).keys() == {"version", "python"}
    assert info[1] == 1


def test_integer_values_render_without_a_fraction(state: SharedState) -> None:
    rec = MetricsRecorder(state, 0)
    one_request(rec, size=1024)
    text = render(state, [0])
    assert 'pingap_http_sent_bytes{server="web",location="api"} 1024\n' in text
    assert 'pingap_http_requests_total{server="web",location=""} 1\n' in text


@pytest.mark.parametrize("raw, escaped", [
    ('a"b', 'a\\"b'),
    ("a\\b", "a\\\\b"),
    ("a\nb", "a\\nb"),
    ('\\"\n', '\\\\\\"\\n'),
    ("plain", "plain"),
    ("é/ü", "é/ü"),
])
def test_label_values_are_escaped(state: SharedState, raw: str, escaped: str) -> None:
    rec = MetricsRecorder(state, 0)
    one_request(rec, server=raw, location=raw, upstream=raw, upstream_reused=True,
                upstream_processing_time=0.01)
    text = render(state, [0])
    assert f'pingap_http_requests_total{{server="{escaped}",location="{escaped}"}} 1\n' in text
    assert f'pingap_upstream_reuses{{server="{escaped}",upstream="{escaped}"}} 1\n' in text
    s = parse(text)  # every line is still one well-formed sample
    assert value(s, "pingap_http_requests_total", server=raw, location=raw) == 1
    assert value(s, "pingap_http_requests_total", server=raw, location="") == 1
    assert value(s, "pingap_upstream_processing_time_seconds_count", server=raw,
                 upstream=raw) == 1


def test_histograms_of_several_label_sets_stay_apart(state: SharedState) -> None:
    rec = MetricsRecorder(state, 0)
    one_request(rec, location="a", end=100.001)
    one_request(rec, location="b", end=100.3)
    one_request(rec, location="b", end=100.3)
    s = parse(render(state, [0]))
    assert buckets(s, "pingap_http_response_time_seconds", server="web", location="a") == \
        expected_buckets(RESPONSE_TIME_BUCKETS, [0.001])
    assert buckets(s, "pingap_http_response_time_seconds", server="web", location="b") == \
        expected_buckets(RESPONSE_TIME_BUCKETS, [0.3, 0.3])


def test_histograms_whose_labels_contain_spaces_stay_apart(state: SharedState) -> None:
    rec = MetricsRecorder(state, 0)
    one_request(rec, location="a b", end=100.001)
    one_request(rec, location="a c", end=100.3)
    s = parse(render(state, [0]))
    assert buckets(s, "pingap_http_response_time_seconds", server="web", location="a b") == \
        expected_buckets(RESPONSE_TIME_BUCKETS, [0.001])
    assert buckets(s, "pingap_http_response_time_seconds", server="web", location="a c") == \
        expected_buckets(RESPONSE_TIME_BUCKETS, [0.3])


def test_render_of_an_empty_region(state: SharedState) -> None:
    text = render(state, [])
    assert [n for n, _, _ in parse(text)] == ["pingap_build_info"]


# --- never failing a request -------------------------------------------------------------


def test_too_long_label_values_never_fail_a_request(state: SharedState) -> None:
    rec = MetricsRecorder(state, 0)
    one_request(rec, location="ok")
    long = "x" * 400
    one_request(rec, server="web", location=long, upstream=long, upstream_reused=True,
                upstream_processing_time=0.1)
    inflight(rec, "web", long, 1)
    s = parse(render(state, [0]))
    assert value(s, "pingap_http_requests_total", server="web", location="ok") == 1


def fill_registry(state: SharedState) -> None:
    """Register filler series up to the registry's size, as other workers would. Written
    straight into the documented layout (header: registered count u32 at byte 12;
    REGISTRY: SERIES x (kind u8, length u8, name[SERIES_NAME])): registering 4,000 names
    through series_index costs seconds, as each new name rescans the registry."""
    entry = struct.Struct(f"<BB{SERIES_NAME}s")
    count = state.series_count()
    for i in range(count, SERIES):
        name = f'filler{{n="{i}"}}'.encode()
        entry.pack_into(state.buf, REGISTRY_AT + i * entry.size, 1, len(name), name)
    struct.pack_into("<I", state.buf, 12, SERIES)
    names = [n for _, n, _ in state.series()]
    assert names[count] == f'filler{{n="{count}"}}', "registry layout changed: update helper"


def test_full_registry_never_fails_a_request(state: SharedState) -> None:
    """Series are registered on first use, on the request path: once the registry is
    full, new label sets must not raise (and must not disturb registered series)."""
    rec = MetricsRecorder(state, 0)
    one_request(rec, location="first")
    fill_registry(state)
    assert state.series_count() >= SERIES - 1
    for n in range(3):
        one_request(rec, location=f"late{n}", upstream=f"up{n}", upstream_reused=True,
                    upstream_tcp_connect_time=0.01)
        inflight(rec, "web", f"up{n}", 1)
    one_request(rec, location="first")
    s = parse(render(state, [0]))
    assert value(s, "pingap_http_requests_total", server="web", location="first") == 2
    assert value(s, "pingap_http_requests_current", server="web", location="first") == 0


# --- process lines -----------------------------------------------------------------------


def test_process_lines_format() -> None:
    lines = process_lines([("master", 10, 1048576.7, 12, 1.234),
                           ("worker", 11, 2e6, 30, 0.25)])
    assert lines == [
        "# HELP pingap_process_resident_memory_bytes Resident memory per process.",
        "# TYPE pingap_process_resident_memory_bytes gauge",
        'pingap_process_resident_memory_bytes{role="master",pid="10"} 1048576',
        'pingap_process_resident_memory_bytes{role="worker",pid="11"} 2000000',
        "# HELP pingap_process_open_fds Open file descriptors per process.",
        "# TYPE pingap_process_open_fds gauge",
        'pingap_process_open_fds{role="master",pid="10"} 12',
        'pingap_process_open_fds{role="worker",pid="11"} 30',
        "# HELP pingap_process_cpu_seconds_total CPU time per process.",
        "# TYPE pingap_process_cpu_seconds_total counter",
        'pingap_process_cpu_seconds_total{role="master",pid="10"} 1.23',
        'pingap_process_cpu_seconds_total{role="worker",pid="11"} 0.25',
    ]


def test_process_lines_without_samples_keep_the_headers() -> None:
    lines = process_lines(iter([]))
    assert len(lines) == 6
    assert all(line.startswith("# ") for line in lines)


def test_process_lines_accept_a_generator_and_are_appended_by_render(
        state: SharedState) -> None:
    samples = (s for s in [("worker", 42, 100.0, 3, 0.5)])
    lines = process_lines(samples)
    text = render(state, [], lines)
    assert text.endswith('pingap_process_cpu_seconds_total{role="worker",pid="42"} 0.50\n')
    s = parse(text)
    assert value(s, "pingap_process_open_fds", role="worker", pid="42") == 3
    assert _types(text).count(("pingap_process_open_fds", "gauge")) == 1


def test_the_server_series_sum_every_location_and_worker_at_scrape_time(
        state: SharedState) -> None:
    """A request writes its location's series only; the server's (``location=""``) are
    summed when rendered: counters, codes, bytes and histogram buckets, over locations
    and over workers' columns, one sample per label set."""
    first, second = MetricsRecorder(state, 0), MetricsRecorder(state, 1)
    one_request(first, location="a", end=100.001, size=10, payload_size=1)
    one_request(second, location="b", end=100.3, size=20, status=404)
    one_request(second, location="b", end=100.3, size=30)
    registered = [series for _index, series, _kind in state.series()]
    assert not [series for series in registered if 'location=""' in series]
    s = parse(render(state, [0, 1]))
    server = {"server": "web", "location": ""}
    assert value(s, "pingap_http_requests_total", **server) == 3
    assert value(s, "pingap_http_requests_current", **server) == 0
    assert value(s, "pingap_http_responses_codes", code="2xx", **server) == 2
    assert value(s, "pingap_http_responses_codes", code="4xx", **server) == 1
    assert value(s, "pingap_http_sent_bytes", **server) == 60
    assert value(s, "pingap_http_received_bytes", **server) == 1
    assert value(s, "pingap_http_response_time_seconds_count", **server) == 3
    assert buckets(s, "pingap_http_response_time_seconds", **server) == \
        expected_buckets(RESPONSE_TIME_BUCKETS, [0.001, 0.3, 0.3])
    assert value(s, "pingap_http_response_time_seconds_sum", **server) == \
        pytest.approx(0.601)


@pytest.mark.parametrize("server", ["s,location=", "location=", 'x",location="y', "s,"])
def test_a_server_name_that_reads_like_a_location_label_is_summed_as_a_server(
        state: SharedState, server: str) -> None:
    """The server-wide series and the stats plugin's counts find a series' location
    label after its whole server label, whatever the server is called."""
    rec = MetricsRecorder(state, 0)
    one_request(rec, server=server, location="api")
    one_request(rec, server=server, location="web")
    s = parse(render(state, [0]))
    assert value(s, "pingap_http_requests_total", server=server, location="") == 2
    assert value(s, "pingap_http_requests_total", server=server, location="api") == 1
    assert value(s, "pingap_http_response_time_seconds_count", server=server, location="") == 2
    assert request_counts(state, [0], "api") == {
        "processing": 0, "accepted": 2, "location_processing": 0, "location_accepted": 1}
