"""Prometheus metrics kept in the host's shared state, rendered as text exposition.

Every worker adds to its own column of ``SharedState`` (no locks on the hot path); a
scrape sums the live columns plus the column of retired workers, so totals are exact
across workers, including those that exited. Names follow pingap (spec §12.2); where
pingap's units break Prometheus conventions, time histograms carry ``_seconds`` and the
KB size histograms are not kept (the ``*_bytes`` counters hold the same information).
Every series has the ``server`` label, as in pingap. Requests that match no location
are not counted, as in pingap.
"""

from __future__ import annotations

import platform
import re
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pingap import __version__
from pingap.context import RequestContext
from pingap.state import SERIES, SeriesKind, SharedState

RESPONSE_TIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
UPSTREAM_TIME_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1)
UPSTREAM_PROCESSING_BUCKETS = (0.01, 0.02, 0.1, 0.5, 1, 5, 10)

HELP = {
    "pingap_http_requests_total": ("counter", "Requests received (matched a location)."),
    "pingap_http_requests_current": ("gauge", "Requests in flight."),
    "pingap_http_responses_codes": ("counter", "Responses by status class."),
    "pingap_http_response_time_seconds": ("histogram", "Time to serve a request."),
    "pingap_http_received_bytes": ("counter", "Request body bytes received."),
    "pingap_http_sent_bytes": ("counter", "Response body bytes sent."),
    "pingap_connection_reuses": ("counter", "Requests on a reused client connection."),
    "pingap_upstream_connections_current": ("gauge", "Requests in flight per upstream."),
    "pingap_upstream_reuses": ("counter", "Requests on a reused upstream connection."),
    "pingap_upstream_tcp_connect_time_seconds": ("histogram", "TCP connect to a backend."),
    "pingap_upstream_processing_time_seconds": ("histogram",
                                                "Request sent to response head received."),
    "pingap_upstream_response_time_seconds": ("histogram",
                                              "Response head to end of response body."),
}


def _labels(**labels: str) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass(slots=True)
class _Histogram:
    buckets: tuple[float, ...]
    bucket_index: tuple[int, ...]
    sum_index: int
    count_index: int


class MetricsRecorder:
    """One worker's writer: caches series indexes, adds to its own column."""

    def __init__(self, state: SharedState, column: int) -> None:
        self.state = state
        self.column = column
        self._counters: dict[tuple[str, str], int] = {}
        self._histograms: dict[tuple[str, str], _Histogram] = {}
        self._started_cache: dict[tuple[str, str], tuple[int, ...]] = {}
        self._finished_cache: dict[tuple[str, str, str],
                                   tuple[int, int, int, int, _Histogram]] = {}
        self._reuses: dict[str, int] = {}
        self._upstream_cache: dict[tuple[str, str], list[Any]] = {}

    def _index(self, name: str, labels: str, kind: SeriesKind = SeriesKind.COUNTER) -> int:
        key = (name, labels)
        index = self._counters.get(key)
        if index is None:
            index = self._counters[key] = self.state.series_index(name + labels, kind)
        return index

    def add(self, name: str, labels: str, amount: float = 1.0,
            kind: SeriesKind = SeriesKind.COUNTER) -> None:
        self.state.add(self.column, self._index(name, labels, kind), amount)

    def observe(self, name: str, labels: str, value: float, buckets: tuple[float, ...]) -> None:
        self._observe(self._histogram(name, labels, buckets), value)

    def _histogram(self, name: str, labels: str, buckets: tuple[float, ...]) -> _Histogram:
        key = (name, labels)
        hist = self._histograms.get(key)
        if hist is None:
            inner = labels[1:-1]
            sep = "," if inner else ""
            hist = self._histograms[key] = _Histogram(
                buckets,
                tuple(self.state.series_index(
                    f'{name}_bucket{{{inner}{sep}le="{b}"}}') for b in (*buckets, "+Inf")),
                self.state.series_index(f"{name}_sum{labels}"),
                self.state.series_index(f"{name}_count{labels}"))
        return hist

    def _observe(self, hist: _Histogram, value: float) -> None:
        values = self.state.values
        base = self.column * SERIES
        # buckets are stored per bound (not cumulative): the first bound >= value
        values[base + hist.bucket_index[bisect_left(hist.buckets, value)]] += 1
        values[base + hist.sum_index] += value
        values[base + hist.count_index] += 1

    # --- request hooks (hot path: every index list is computed once per label set) -----

    def _started(self, server: str, location: str) -> tuple[int, ...]:
        key = (server, location)
        found = self._started_cache.get(key)
        if found is None:
            labels = _labels(server=server, location=location)
            found = self._started_cache[key] = (
                self._index("pingap_http_requests_total", labels),
                self._index("pingap_http_requests_current", labels, SeriesKind.GAUGE))
        return found

    def request_started(self, server: str, location: str, reused: bool) -> None:
        values = self.state.values
        base = self.column * SERIES
        total, current = self._started(server, location)
        values[base + total] += 1
        values[base + current] += 1
        if reused:
            index = self._reuses.get(server)
            if index is None:
                index = self._reuses[server] = self._index("pingap_connection_reuses",
                                                           _labels(server=server))
            values[base + index] += 1

    def _finished(self, server: str, location: str, code: str
                  ) -> tuple[int, int, int, int, _Histogram]:
        key = (server, location, code)
        found = self._finished_cache.get(key)
        if found is None:
            labels = _labels(server=server, location=location)
            found = self._finished_cache[key] = (
                self._index("pingap_http_requests_current", labels, SeriesKind.GAUGE),
                self._index("pingap_http_responses_codes",
                            _labels(server=server, location=location, code=code)),
                self._index("pingap_http_received_bytes", labels),
                self._index("pingap_http_sent_bytes", labels),
                self._histogram("pingap_http_response_time_seconds", labels,
                                RESPONSE_TIME_BUCKETS))
        return found

    def request_finished(self, server: str, ctx: RequestContext, upstream: str | None) -> None:
        self.answered(server, ctx.location or "", ctx.status, ctx.payload_size, ctx.size,
                      (ctx.end or ctx.start) - ctx.start)
        if upstream:
            self._upstream_finished(server, upstream, ctx)

    def answered(self, server: str, location: str, status: int | None, received: int,
                 sent: int, elapsed: float) -> None:
        """A request ``request_started`` counted is over: its status class, bytes and
        time (``request_finished``, or the plain-file path with no request context)."""
        code = f"{status // 100}xx" if status and 100 <= status < 600 else "unknown"
        current, codes, received_at, sent_at, hist = self._finished(server, location, code)
        values = self.state.values
        base = self.column * SERIES
        values[base + current] -= 1
        values[base + codes] += 1
        if received:
            values[base + received_at] += received
        if sent:
            values[base + sent_at] += sent
        self._observe(hist, elapsed)

    #: the per-upstream series, in the order of ``_upstream_finished``'s slots
    _UPSTREAM_HISTOGRAMS = (
        ("pingap_upstream_tcp_connect_time_seconds", UPSTREAM_TIME_BUCKETS),
        ("pingap_upstream_processing_time_seconds", UPSTREAM_PROCESSING_BUCKETS),
        ("pingap_upstream_response_time_seconds", UPSTREAM_TIME_BUCKETS),
    )

    def _upstream_finished(self, server: str, upstream: str, ctx: RequestContext) -> None:
        # slots: [labels, reuses index, connect, processing, response histograms], each
        # series registered on first use only (a series never observed is not exported)
        key = (server, upstream)
        slots = self._upstream_cache.get(key)
        if slots is None:
            slots = self._upstream_cache[key] = [
                _labels(server=server, upstream=upstream), None, None, None, None]
        if ctx.upstream_reused:
            index = slots[1]
            if index is None:
                index = slots[1] = self._index("pingap_upstream_reuses", slots[0])
            self.state.values[self.column * SERIES + index] += 1
        for i, value in enumerate((ctx.upstream_tcp_connect_time,
                                   ctx.upstream_processing_time,
                                   ctx.upstream_response_time), 2):
            if value is not None:
                hist = slots[i]
                if hist is None:
                    name, buckets = self._UPSTREAM_HISTOGRAMS[i - 2]
                    hist = slots[i] = self._histogram(name, slots[0], buckets)
                self._observe(hist, value)


def _family(series: str) -> str:
    name = series.split("{", 1)[0]
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in HELP:
            return name[: -len(suffix)]
    return name


#: the families a request adds to under its location; the server's own series
#: (``location=""``) are their sums, made at scrape time rather than per request
_PER_LOCATION = frozenset({
    "pingap_http_requests_total", "pingap_http_requests_current",
    "pingap_http_responses_codes", "pingap_http_response_time_seconds",
    "pingap_http_received_bytes", "pingap_http_sent_bytes"})
#: a series up to its server label, then the location label's (escaped) value: matched
#: from the start, so a server name that reads like a location label is skipped whole
_LOCATION_LABEL = re.compile(r'^([^{]*\{server="(?:[^"\\]|\\.)*"),location="((?:[^"\\]|\\.)*)"')


def _server_series(series: str) -> str:
    """``series`` with an empty location label: the server-wide series it sums into."""
    return _LOCATION_LABEL.sub(r'\1,location=""', series, count=1)


def _number(value: float) -> str:
    return repr(int(value)) if value == int(value) else repr(value)


def render(state: SharedState, columns: Iterable[int],
           process_lines: Iterable[str] = ()) -> str:
    """The text exposition of every series, summed over ``columns`` (+ retired); each
    server's ``location=""`` series are the sums of its locations'."""
    totals = state.totals(list(columns))
    by_family: dict[str, list[str]] = {}
    server_wide: dict[str, float] = {}
    for index, series, _kind in state.series():
        value = totals.get(index, 0.0)
        family = _family(series)
        if family in _PER_LOCATION:
            whole = _server_series(series)
            server_wide[whole] = server_wide.get(whole, 0.0) + value
            if whole == series:
                continue  # a server-wide series of its own (none is written any more)
        by_family.setdefault(family, []).append(f"{series} {_number(value)}")
    for series, value in server_wide.items():
        by_family.setdefault(_family(series), []).append(f"{series} {_number(value)}")
    out: list[str] = []
    for family in sorted(by_family):
        kind, doc = HELP.get(family, ("untyped", ""))
        out.append(f"# HELP {family} {doc}")
        out.append(f"# TYPE {family} {kind}")
        lines = by_family[family]
        if kind == "histogram":
            lines = _cumulative(lines)
        out.extend(lines)
    out.append("# HELP pingap_build_info Version information.")
    out.append("# TYPE pingap_build_info gauge")
    out.append(f"pingap_build_info{_labels(version=__version__, python=platform.python_version())} 1")
    out.extend(process_lines)
    return "\n".join(out) + "\n"


_REQUEST_FAMILIES = (("pingap_http_requests_total{", "accepted"),
                     ("pingap_http_requests_current{", "processing"))


def request_counts(state: SharedState, columns: Iterable[int], location: str | None
                   ) -> dict[str, int]:
    """Host-wide ``processing``/``accepted`` over every server, and the same for
    ``location`` (the ``stats`` plugin's counts), summed over ``columns`` (+ retired)."""
    totals = state.totals(list(columns))
    wanted = None if location is None else _escape(location)
    out = {"processing": 0, "accepted": 0, "location_processing": 0, "location_accepted": 0}
    for index, series, _kind in state.series():
        for prefix, key in _REQUEST_FAMILIES:
            if series.startswith(prefix):
                count = int(totals.get(index, 0))
                out[key] += count  # every request is counted under its location
                found = _LOCATION_LABEL.match(series)
                if found and found.group(2) == wanted:
                    out["location_" + key] += count
    return out


def _cumulative(lines: list[str]) -> list[str]:
    """Histogram buckets are stored per bucket; the exposition wants them cumulative."""
    running: dict[str, float] = {}
    out = []

    def bound(line: str) -> float:
        if "_bucket{" not in line:
            return float("inf")
        le = line.rsplit('le="', 1)[1].split('"', 1)[0]
        return float("inf") if le == "+Inf" else float(le)

    def series_key(line: str) -> str:  # label values may hold spaces: split at the last
        return line.rsplit(" ", 1)[0].rsplit('le="', 1)[0] if "_bucket{" in line else ""

    buckets = sorted((ln for ln in lines if "_bucket{" in ln), key=lambda ln: (series_key(ln),
                                                                             bound(ln)))
    for line in buckets:
        key = series_key(line)
        name, value = line.rsplit(" ", 1)
        running[key] = running.get(key, 0.0) + float(value)
        total = running[key]
        out.append(f"{name} {int(total) if total == int(total) else total}")
    out.extend(ln for ln in lines if "_bucket{" not in ln)
    return out


def process_lines(samples: Iterable[tuple[str, int, float, int, float]]) -> list[str]:
    """Per-process lines from (role, pid, rss bytes, open fds, cpu seconds) samples."""
    samples = list(samples)
    out = ["# HELP pingap_process_resident_memory_bytes Resident memory per process.",
           "# TYPE pingap_process_resident_memory_bytes gauge"]
    out += [f"pingap_process_resident_memory_bytes{_labels(role=r, pid=str(p))} {int(m)}"
            for r, p, m, _, _ in samples]
    out += ["# HELP pingap_process_open_fds Open file descriptors per process.",
            "# TYPE pingap_process_open_fds gauge"]
    out += [f"pingap_process_open_fds{_labels(role=r, pid=str(p))} {f}"
            for r, p, _, f, _ in samples]
    out += ["# HELP pingap_process_cpu_seconds_total CPU time per process.",
            "# TYPE pingap_process_cpu_seconds_total counter"]
    out += [f"pingap_process_cpu_seconds_total{_labels(role=r, pid=str(p))} {c:.2f}"
            for r, p, _, _, c in samples]
    return out
