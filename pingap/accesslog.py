"""Access-log directives (spec §6): parse ``servers.<n>.access_log``, check it, and compile
its template once into a fast ``RequestContext -> str`` line formatter.

Directive: ``"<format>"`` (lines go to the application logger) or
``"<file path>[?rolling=…&channel_buffer=…&flush_timeout=…] <format>"``, split at the first
space and only read as path + format when the format is a predefined name
(``combined|common|short|tiny``) or starts with ``{``. Writing the lines is someone else's
job (``workers/accesslog.py``); this module does no I/O, but it names the files: with
``?rolling=daily|hourly|minutely`` the lines of each period go to ``<path>.<UTC date>``
(``access.log.2025-01-31``, ``.2025-01-31-13``, ``.2025-01-31-13-05``: pingap's names,
from tracing-appender), ``never`` writes ``<path>`` itself.

Deliberate differences from pingap:

* ``common`` has no stray trailing ``"`` (pingap's template ends in ``{size_human}"``, §14.16).
* Without ``rolling`` the file is ``<path>`` itself (``never``), so logrotate and USR1
  keep working; pingap rolls daily by default. ``flush_timeout`` defaults to 1 s (pingap:
  10 s) and ``channel_buffer`` is how many lines may wait before a flush (pingap: the
  capacity of its queue, 1000).
* :func:`check_access_log` rejects what pingap silently accepts: unknown placeholders and
  ``{:key}`` names (pingap prints nothing for them; we report them with a did-you-mean
  hint), unknown ``rolling`` values (pingap falls back to daily), unknown query keys, a
  zero ``flush_timeout`` (pingap panics) and a directive without any placeholder (usually
  a bare file path that pingap would log literally on every request).
* Placeholder names may contain digits (``{>x-b3-traceid}``, ``{$VAR_1}``); pingap's token
  grammar has none, so it prints such tokens as literal text.
* ``{:tls_*}``, ``{:compression_*}`` and ``{:cache_*}`` print ``-`` when there is no value
  (features not built yet, or a plain-TCP connection); pingap prints nothing. Other missing
  ``{:key}`` timings print nothing, as in pingap.

:func:`compile_template` itself stays lenient like pingap: unknown placeholders are dropped
and malformed ``{`` runs are kept as literal text, so a template formats the way pingap
would whether or not it passed the check.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import attrgetter
from urllib.parse import parse_qsl

from pingap.context import RequestContext
from pingap.units import format_duration_human, format_size_human, parse_duration

LineFormatter = Callable[[RequestContext], str]
_Getter = Callable[[RequestContext], str]

#: Predefined formats of spec §6.2 (``common`` without pingap's stray trailing quote).
PREDEFINED_FORMATS: Mapping[str, str] = {
    "combined": '{remote} "{method} {uri} {proto}" {status} {size_human} "{referer}" "{user_agent}"',
    "common": '{remote} "{method} {uri} {proto}" {status} {size_human}',
    "short": "{remote} {method} {uri} {proto} {status} {size_human} - {latency}ms",
    "tiny": "{method} {uri} {status} {size_human} - {latency}ms",
}

#: Values of the ``rolling`` query parameter of a file access log (default ``daily``).
ROLLING_VALUES = ("daily", "hourly", "minutely", "never")
_QUERY_KEYS = ("rolling", "channel_buffer", "flush_timeout")
#: The file-name suffix of each rolling period (UTC), as tracing-appender writes it.
_ROLLING_SUFFIX = {"daily": "%Y-%m-%d", "hourly": "%Y-%m-%d-%H", "minutely": "%Y-%m-%d-%H-%M"}

_NAME_CHARS = r"A-Za-z0-9_<>\-~:$"
_TOKEN = re.compile(rf"\{{([{_NAME_CHARS}]+)\}}")
# An opening brace followed by name characters that never reach a closing brace, or ``{}``.
_MALFORMED = re.compile(rf"\{{(?:\}}|[{_NAME_CHARS}]+(?![{_NAME_CHARS}}}]))")


@dataclass(frozen=True, slots=True)
class AccessLogSpec:
    """A parsed ``access_log`` directive.

    ``path`` is None when lines go to the application logger; ``query`` holds the file's
    ``?rolling=…`` parameters; ``template`` has predefined names already expanded.
    """

    path: str | None
    query: dict[str, str]
    template: str


def parse_access_log(value: str) -> AccessLogSpec:
    """Split a directive into file path, file parameters and template (never raises)."""
    path: str | None = None
    template = value
    if not value.startswith("{"):
        head, sep, tail = value.partition(" ")
        if sep and (tail in PREDEFINED_FORMATS or tail.startswith("{")):
            path, template = head, tail
    query: dict[str, str] = {}
    if path is not None:
        path, _, raw_query = path.partition("?")
        query = dict(parse_qsl(raw_query, keep_blank_values=True))
    return AccessLogSpec(path, query, PREDEFINED_FORMATS.get(template, template))


@dataclass(frozen=True, slots=True)
class FileSinkSettings:
    """How a file access log is written: its query parameters, checked and defaulted."""

    rolling: str = "never"
    #: lines that may wait in memory before a flush is started (None: no count limit)
    channel_buffer: int | None = None
    #: seconds between flushes (None: the sink's default)
    flush_timeout: float | None = None


def file_sink_settings(spec: AccessLogSpec) -> FileSinkSettings:
    """The settings of a checked directive's file (``check_access_log`` passed)."""
    query = spec.query
    buffer = query.get("channel_buffer")
    timeout = query.get("flush_timeout")
    return FileSinkSettings(rolling=query.get("rolling", "never"),
                            channel_buffer=int(buffer) if buffer else None,
                            flush_timeout=parse_duration(timeout) if timeout else None)


def rolled_path(path: str, rolling: str, now: float) -> str:
    """The file that lines written at ``now`` (seconds since the epoch) go to."""
    suffix = _ROLLING_SUFFIX.get(rolling)
    if suffix is None:
        return path
    return f"{path}.{time.strftime(suffix, time.gmtime(now))}"


def check_access_log(value: str) -> str | None:
    """Every problem of a directive, joined with ``"; "``, or None when it is valid."""
    if not value.strip():
        return "access log format is empty"
    spec = parse_access_log(value)
    problems: list[str] = []
    if spec.path is not None:
        if not spec.path:
            problems.append("access log file path is empty")
        problems.extend(_check_query(spec.query))
    problems.extend(_check_template(spec.template))
    if spec.path is None and not _TOKEN.search(spec.template):
        problems.append(
            f"access log format {spec.template!r} has no placeholder; to log to a file write "
            "'<path> <format>' with a format of combined, common, short, tiny or '{...}'"
        )
    return "; ".join(problems) or None


def compile_template(
    template: str,
    *,
    env: Mapping[str, str] | None = None,
    hostname: str | None = None,
) -> LineFormatter:
    """Compile ``template`` (a predefined name or ``{placeholder}`` text) into a formatter.

    ``{$NAME}`` reads ``env`` (default ``os.environ``) and ``{$hostname}`` the machine's
    name (or ``hostname``) here, once. Unknown placeholders are dropped.
    """
    template = PREDEFINED_FORMATS.get(template, template)
    environ = os.environ if env is None else env
    fmt_parts: list[str] = []
    getters: list[_Getter] = []
    for literal, name in _split(template):
        if name is None:
            fmt_parts.append(literal.replace("%", "%%"))
            continue
        if name == "$hostname":
            constant: str | None = (
                socket.gethostname() if hostname is None else hostname
            )
        elif name.startswith("$"):
            constant = environ.get(name[1:], "")
        else:
            constant = None
        if constant is not None:
            fmt_parts.append(constant.replace("%", "%%"))
            continue
        getter = _getter(name)
        if getter is not None:
            fmt_parts.append("%s")
            getters.append(getter)
    fmt = "".join(fmt_parts)
    if not getters:
        line = fmt.replace("%%", "%")
        return lambda ctx: line
    getter_tuple = tuple(getters)

    def format_line(ctx: RequestContext) -> str:
        return fmt % tuple([get(ctx) for get in getter_tuple])

    return format_line


# --- template scanning (compile time only) -------------------------------------------


def _split(template: str) -> list[tuple[str, str | None]]:
    """``(literal, None)`` and ``("", name)`` pieces of a template, in order."""
    pieces: list[tuple[str, str | None]] = []
    end = 0
    for match in _TOKEN.finditer(template):
        if match.start() > end:
            pieces.append((template[end : match.start()], None))
        pieces.append(("", match.group(1)))
        end = match.end()
    if end < len(template):
        pieces.append((template[end:], None))
    return pieces


def _check_template(template: str) -> list[str]:
    problems = [
        f"malformed placeholder {m.group(0)!r} at offset {m.start()}"
        for m in _MALFORMED.finditer(template)
    ]
    for _, name in _split(template):
        if name is None or (name.startswith("$") and len(name) > 1):
            continue
        if name[0] in "~<>:$" and len(name) == 1:
            problems.append(f"placeholder {{{name}}} needs a name after {name!r}")
        elif name.startswith(":"):
            if name[1:] not in _CONTEXT_GETTERS:
                problems.append(
                    f"unknown context key {{{name}}}"
                    + _hint(name[1:], list(_CONTEXT_GETTERS), "{{:{}}}")
                )
        elif name[0] not in "~<>" and name not in _PLAIN_GETTERS:
            candidates = [
                *_PLAIN_GETTERS,
                *(f":{k}" for k in _CONTEXT_GETTERS),
                "$hostname",
            ]
            problems.append(
                f"unknown placeholder {{{name}}}" + _hint(name, candidates, "{{{}}}")
            )
    return problems


def _check_query(query: Mapping[str, str]) -> list[str]:
    problems: list[str] = []
    for key, value in query.items():
        if key == "rolling":
            if value not in ROLLING_VALUES:
                problems.append(
                    f"access log rolling={value!r} is not one of {', '.join(ROLLING_VALUES)}"
                )
        elif key == "channel_buffer":
            if not value.isdigit() or int(value) == 0:
                problems.append(
                    f"access log channel_buffer={value!r} is not a positive integer"
                )
        elif key == "flush_timeout":
            if not _positive_duration(value):
                problems.append(
                    f"access log flush_timeout={value!r} is not a positive duration like 10s"
                )
        else:
            problems.append(
                f"unknown access log parameter {key!r}"
                + _hint(key, list(_QUERY_KEYS), "'{}'")
            )
    return problems


def _positive_duration(value: str) -> bool:
    try:
        return parse_duration(value) > 0
    except ValueError:
        return False


def _hint(name: str, candidates: list[str], render: str) -> str:
    """`` (did you mean …?)`` with the closest candidate put into ``render``, or ``""``."""
    close = difflib.get_close_matches(name, candidates, n=1)
    return f" (did you mean {render.format(close[0])}?)" if close else ""


# --- value formatting --------------------------------------------------------------


def millis(seconds: float) -> int:
    """Whole milliseconds (truncated like pingap's ``as_millis``), float noise absorbed."""
    return max(0, int(seconds * 1000 + 1e-6))


def _elapsed(ctx: RequestContext) -> float:
    end = ctx.end
    return (time.monotonic() if end is None else end) - ctx.start


def _log_time(ctx: RequestContext) -> datetime:
    """Wall-clock time of the end of the request (pingap stamps the line when it is written)."""
    when = ctx.start_wall + _elapsed(ctx)
    return datetime.fromtimestamp(when, UTC)


def _when(ctx: RequestContext) -> str:
    return _log_time(ctx).astimezone().isoformat(timespec="milliseconds")


def _when_utc_iso(ctx: RequestContext) -> str:
    return _log_time(ctx).isoformat(timespec="milliseconds")[:-6] + "Z"


def _when_unix(ctx: RequestContext) -> str:
    stamp = _log_time(ctx)
    return str(int(stamp.timestamp()) * 1000 + stamp.microsecond // 1000)


def _header(attr: str, name: bytes) -> _Getter:
    """Getter of the first ``name`` header (lower-case bytes) of ``ctx.<attr>``, or ``-``."""
    read = attrgetter(attr)
    size = len(name)

    def get(ctx: RequestContext) -> str:
        for key, value in read(ctx):
            if len(key) == size and key.lower() == name:
                return value.decode("latin-1") or "-"
        return "-"

    return get


def _cookie(name: str) -> _Getter:
    def get(ctx: RequestContext) -> str:
        return ctx.cookie(name) or ""

    return get


def _text(attr: str, missing: str) -> _Getter:
    read = attrgetter(attr)

    def get(ctx: RequestContext) -> str:
        value = read(ctx)
        return missing if value is None or value == "" else str(value)

    return get


def _timing(attr: str, human: bool, missing: str) -> _Getter:
    read = attrgetter(attr)
    if human:

        def get_human(ctx: RequestContext) -> str:
            value = read(ctx)
            return missing if value is None else format_duration_human(value)

        return get_human

    def get(ctx: RequestContext) -> str:
        value = read(ctx)
        return missing if value is None else str(millis(value))

    return get


def _flag(attr: str) -> _Getter:
    read = attrgetter(attr)
    return lambda ctx: "true" if read(ctx) else "false"


def _compression_ratio(ctx: RequestContext) -> str:
    ratio = ctx.compression_ratio
    return "-" if ratio is None else f"{ratio:.1f}"


# pingap logs HTTP/1.0 requests as HTTP/1.1 too.
_PROTO = {"2": "HTTP/2.0", "2.0": "HTTP/2.0"}
_STATUS: dict[int | None, str] = {
    None: "-",
    **{code: str(code) for code in range(100, 600)},
}

_PLAIN_GETTERS: dict[str, _Getter] = {
    "host": lambda c: c.host or "-",
    "method": lambda c: c.method or "-",
    "path": lambda c: c.path or "-",
    "proto": lambda c: _PROTO.get(c.http_version, "HTTP/1.1"),
    "query": lambda c: c.query or "-",
    "remote": lambda c: c.conn.remote_addr or "-",
    "client_ip": lambda c: c.client_ip or "-",
    "scheme": lambda c: "https" if c.conn.tls else "http",
    "uri": lambda c: (f"{c.path}?{c.query}" if c.query else c.path) or "-",
    "referer": _header("request_headers", b"referer"),
    "user_agent": _header("request_headers", b"user-agent"),
    "when": _when,
    "when_utc_iso": _when_utc_iso,
    "when_unix": _when_unix,
    "size": lambda c: str(c.size),
    "size_human": lambda c: format_size_human(c.size),
    "status": lambda c: _STATUS.get(c.status) or str(c.status),
    "latency": lambda c: str(millis(_elapsed(c))),
    "latency_human": lambda c: format_duration_human(_elapsed(c)),
    "payload_size": lambda c: str(c.payload_size),
    "payload_size_human": lambda c: format_size_human(c.payload_size),
    "request_id": lambda c: c.request_id or "-",
}

# ``{:key}`` timings and where they live; the second item is what a missing value prints.
_CONTEXT_TIMINGS: dict[str, tuple[str, str]] = {
    "connection_time": ("connection_time", ""),
    "tls_handshake_time": ("conn.tls_handshake_time", "-"),
    "upstream_connect_time": ("upstream_connect_time", ""),
    "upstream_tcp_connect_time": ("upstream_tcp_connect_time", ""),
    "upstream_tls_handshake_time": ("upstream_tls_handshake_time", ""),
    "upstream_connection_time": ("upstream_connection_time", ""),
    "upstream_processing_time": ("upstream_processing_time", ""),
    "upstream_response_time": ("upstream_response_time", ""),
    "compression_time": ("compression_time", "-"),
    "cache_lookup_time": ("cache_lookup_time", "-"),
    "cache_lock_time": ("cache_lock_time", "-"),
}

_CONTEXT_GETTERS: dict[str, _Getter] = {
    "connection_id": lambda c: str(c.conn.connection_id),
    "connection_reused": _flag("connection_reused"),
    "tls_version": _text("conn.tls_version", "-"),
    "tls_cipher": _text("conn.tls_cipher", "-"),
    "processing": lambda c: str(c.processing),
    "location": _text("location", ""),
    "upstream_addr": _text("upstream_addr", ""),
    "upstream_status": _text("upstream_status", "-"),
    "upstream_reused": _flag("upstream_reused"),
    "upstream_connected": _text("upstream_connected", ""),
    "compression_ratio": _compression_ratio,
    "service_time": lambda c: str(millis(_elapsed(c))),
    "service_time_human": lambda c: format_duration_human(_elapsed(c)),
}
_CONTEXT_GETTERS.update(
    (f"{key}{suffix}", _timing(attr, suffix == "_human", missing))
    for key, (attr, missing) in _CONTEXT_TIMINGS.items()
    for suffix in ("", "_human")
)


def _getter(name: str) -> _Getter | None:
    """The per-request getter of placeholder ``name`` (without braces), None if unknown."""
    prefix, rest = name[0], name[1:]
    if prefix == ":":
        return _CONTEXT_GETTERS.get(rest)
    if not rest and prefix in "~<>":
        return None
    if prefix == "~":
        return _cookie(rest)
    if prefix == ">":
        return _header("request_headers", rest.lower().encode("latin-1"))
    if prefix == "<":
        return _header("response_headers", rest.lower().encode("latin-1"))
    return _PLAIN_GETTERS.get(name)
