"""The options of every plugin category (spec §5), and the check of a plugin table.

``PLUGIN_SCHEMAS`` maps each category to its option names and kinds, the ``step``
values it accepts, enumerated values, ranges and required options. ``check_plugin``
reports every problem of one ``[plugins.<name>]`` table.

pingap reads plugin options leniently: a value of the wrong type (an integer where a
duration string is expected, an array where a comma string is expected) is silently
replaced by the default, an unknown key is ignored, and a plugin that fails to build
is dropped from every location at startup. We report all of these as config errors.
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pingap.units import parse_bytesize, parse_duration

__all__ = ["PLUGIN_SCHEMAS", "STEPS", "Opt", "PluginSchema", "check_plugin"]

STEPS = ("early_request", "request", "proxy_upstream", "upstream_response", "response")
"""Every plugin step name (pingap's ``PluginStep``)."""


class Opt(enum.Enum):
    """The type of a plugin option, as pingap's plugins read it."""

    STR = "a string"
    BOOL = "a boolean"
    INT = "an integer"
    DURATION = 'a duration string like "10s"'
    BYTESIZE = 'a byte size string like "1mb"'
    STR_LIST = "an array of strings"
    AUTHORIZATIONS = "an array of [[authorizations]] tables"


@dataclass(frozen=True, slots=True, kw_only=True)
class PluginSchema:
    """What one plugin category accepts."""

    steps: tuple[str, ...]
    """Accepted ``step`` values; the first is the default."""
    options: Mapping[str, Opt]
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """String options limited to these values (compared case-insensitively)."""
    ranges: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    """Inclusive bounds of integer options."""
    required: tuple[str, ...] = ()
    """Options that must be set and non-empty."""
    one_of: tuple[tuple[str, ...], ...] = ()
    """Groups of options of which at least one must be set."""
    renamed: Mapping[str, str] = field(default_factory=dict)
    """Known wrong keys (e.g. from stale pingap samples) and the option meant."""


_RESTRICTION = ("allow", "deny")

PLUGIN_SCHEMAS: Mapping[str, PluginSchema] = {
    "accept_encoding": PluginSchema(
        steps=("early_request",),
        options={"encodings": Opt.STR, "only_one_encoding": Opt.BOOL},
    ),
    "admin": PluginSchema(
        steps=("request",),
        options={
            "path": Opt.STR,
            "authorizations": Opt.STR_LIST,
            "max_age": Opt.DURATION,
            "ip_fail_limit": Opt.INT,
        },
    ),
    "basic_auth": PluginSchema(
        steps=("request",),
        options={
            "authorizations": Opt.STR_LIST,
            "delay": Opt.DURATION,
            "hide_credentials": Opt.BOOL,
        },
        required=("authorizations",),
    ),
    "cache": PluginSchema(
        steps=("request",),
        options={
            "directory": Opt.STR,
            "namespace": Opt.STR,
            "headers": Opt.STR_LIST,
            "max_ttl": Opt.DURATION,
            "max_file_size": Opt.BYTESIZE,
            "lock": Opt.DURATION,
            "eviction": Opt.BOOL,
            "predictor": Opt.BOOL,
            "check_cache_control": Opt.BOOL,
            "purge_ip_list": Opt.STR_LIST,
            "skip": Opt.STR,
        },
    ),
    "combined_auth": PluginSchema(
        steps=("request",),
        options={"authorizations": Opt.AUTHORIZATIONS},
        required=("authorizations",),
    ),
    "compression": PluginSchema(
        steps=("early_request", "upstream_response"),
        options={
            "gzip_level": Opt.INT,
            "br_level": Opt.INT,
            "zstd_level": Opt.INT,
            "mode": Opt.STR,
            "min_length": Opt.INT,
            "decompression": Opt.BOOL,
        },
        ranges={"gzip_level": (0, 9), "br_level": (0, 11), "zstd_level": (0, 22)},
    ),
    "cors": PluginSchema(
        steps=("request", "response"),
        options={
            "path": Opt.STR,
            "allow_origin": Opt.STR,
            "allow_methods": Opt.STR,
            "allow_headers": Opt.STR,
            "allow_credentials": Opt.BOOL,
            "expose_headers": Opt.STR,
            "max_age": Opt.DURATION,
        },
    ),
    "csrf": PluginSchema(
        steps=("request",),
        options={"token_path": Opt.STR, "key": Opt.STR, "name": Opt.STR, "ttl": Opt.DURATION},
        required=("token_path", "key"),
    ),
    "directory": PluginSchema(
        steps=("request", "proxy_upstream"),
        options={
            "path": Opt.STR,
            "index": Opt.STR,
            "autoindex": Opt.BOOL,
            "chunk_size": Opt.BYTESIZE,
            "max_age": Opt.DURATION,
            "private": Opt.BOOL,
            "charset": Opt.STR,
            "download": Opt.BOOL,
            "follow_symlinks": Opt.BOOL,
            "headers": Opt.STR_LIST,
        },
        required=("path",),
    ),
    "forward_auth": PluginSchema(
        steps=("request",),
        options={
            "auth_url": Opt.STR,
            "request_headers": Opt.STR_LIST,
            "add_headers": Opt.STR_LIST,
            "timeout": Opt.DURATION,
        },
        required=("auth_url",),
    ),
    "geo_restriction": PluginSchema(
        steps=("request",),
        options={"type": Opt.STR, "country_codes": Opt.STR_LIST, "message": Opt.STR},
        choices={"type": ("allow", "deny", "reporting")},
        required=("type",),
    ),
    "image_optim": PluginSchema(
        steps=("request", "upstream_response"),
        options={
            "output_types": Opt.STR,
            "png_quality": Opt.INT,
            "jpeg_quality": Opt.INT,
            "avif_quality": Opt.INT,
            "avif_speed": Opt.INT,
        },
        ranges={
            "png_quality": (0, 100),
            "jpeg_quality": (0, 100),
            "avif_quality": (0, 100),
            "avif_speed": (1, 10),
        },
    ),
    "ip_restriction": PluginSchema(
        steps=("request",),
        options={"ip_list": Opt.STR_LIST, "type": Opt.STR, "message": Opt.STR},
        choices={"type": _RESTRICTION},
    ),
    "jwt": PluginSchema(
        steps=("request", "response"),
        options={
            "header": Opt.STR,
            "cookie": Opt.STR,
            "query": Opt.STR,
            "secret": Opt.STR,
            "algorithm": Opt.STR,
            "public_key": Opt.STR,
            "jwks_url": Opt.STR,
            "jwks_ttl": Opt.DURATION,
            "auth_path": Opt.STR,
            "delay": Opt.DURATION,
        },
        one_of=(("header", "cookie", "query"), ("secret", "public_key", "jwks_url")),
    ),
    "key_auth": PluginSchema(
        steps=("request",),
        options={
            "header": Opt.STR,
            "query": Opt.STR,
            "keys": Opt.STR_LIST,
            "delay": Opt.DURATION,
            "hide_credentials": Opt.BOOL,
        },
        required=("keys",),
        one_of=(("header", "query"),),
    ),
    "limit": PluginSchema(
        steps=("request", "proxy_upstream"),
        options={
            "type": Opt.STR,
            "tag": Opt.STR,
            "key": Opt.STR,
            "max": Opt.INT,
            "interval": Opt.DURATION,
            "weight": Opt.INT,
        },
        choices={"type": ("rate", "inflight"), "tag": ("ip", "header", "cookie", "query")},
        ranges={"weight": (0, 100)},
    ),
    "mock": PluginSchema(
        steps=("request", "proxy_upstream"),
        options={
            "path": Opt.STR,
            "status": Opt.INT,
            "headers": Opt.STR_LIST,
            "data": Opt.STR,
            "delay": Opt.DURATION,
        },
        ranges={"status": (100, 999)},
    ),
    "ping": PluginSchema(steps=("request",), options={"path": Opt.STR}),
    "redirect": PluginSchema(
        steps=("request",),
        options={"http_to_https": Opt.BOOL, "prefix": Opt.STR, "status": Opt.INT},
    ),
    "referer_restriction": PluginSchema(
        steps=("request",),
        options={"referer_list": Opt.STR_LIST, "type": Opt.STR, "message": Opt.STR},
        choices={"type": _RESTRICTION},
    ),
    "request_id": PluginSchema(
        steps=("request", "proxy_upstream"),
        options={"algorithm": Opt.STR, "size": Opt.INT, "header_name": Opt.STR},
    ),
    "response_headers": PluginSchema(
        steps=("response", "upstream_response"),
        options={
            "add_headers": Opt.STR_LIST,
            "set_headers": Opt.STR_LIST,
            "set_headers_not_exists": Opt.STR_LIST,
            "remove_headers": Opt.STR_LIST,
            "rename_headers": Opt.STR_LIST,
            "mode": Opt.STR,
        },
    ),
    "stats": PluginSchema(
        steps=("request", "proxy_upstream"),
        options={"path": Opt.STR},
        renamed={"value": "path"},  # pingap's conf/plugins.toml still says `value` (spec §14.2)
    ),
    "sub_filter": PluginSchema(
        steps=("response",),
        options={"filters": Opt.STR_LIST, "path": Opt.STR, "status_codes": Opt.STR},
    ),
    "traffic_splitting": PluginSchema(
        steps=("request",),
        options={
            "upstream": Opt.STR,
            "weight": Opt.INT,
            "stickiness": Opt.BOOL,
            "sticky_cookie": Opt.STR,
            "sticky_header": Opt.STR,
            "matcher": Opt.STR,
        },
        ranges={"weight": (0, 100)},
        required=("upstream",),
    ),
    "ua_restriction": PluginSchema(
        steps=("request",),
        options={"ua_list": Opt.STR_LIST, "type": Opt.STR, "message": Opt.STR},
        choices={"type": _RESTRICTION},
    ),
}

# Keys of one [[plugins.<name>.authorizations]] table of combined_auth.
_AUTHORIZATION_KEYS: Mapping[str, Opt] = {
    "app_id": Opt.STR,
    "secret": Opt.STR,
    "deviation": Opt.INT,
    "ip_list": Opt.STR_LIST,
}

Report = Callable[[str, str], None]
"""``report(key, message)``: record a problem about option ``key`` of the plugin."""


def did_you_mean(word: str, candidates: Any) -> str:
    """``"; did you mean 'x'?"`` for the closest candidate, or ``""``."""
    close = difflib.get_close_matches(word, list(candidates), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def describe(value: Any) -> str:
    """A TOML value as a user would write it, for "expected X, got Y" messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def check_plugin(category: str, step: Any, options: Mapping[str, Any], report: Report) -> None:
    """Report every problem of a plugin of a known ``category`` through ``report``."""
    schema = PLUGIN_SCHEMAS[category]
    if step is not None:
        if not isinstance(step, str):
            report("step", f"expected a string, got {describe(step)}")
        elif step not in schema.steps:
            hint = did_you_mean(step, STEPS) if step not in STEPS else ""
            report(
                "step",
                f"{category} cannot run at step '{step}'; expected one of: {', '.join(schema.steps)}{hint}",
            )
    for key, value in options.items():
        kind = schema.options.get(key)
        if kind is None:
            if key in schema.renamed:
                hint = f"; did you mean '{schema.renamed[key]}'?"
            else:
                hint = did_you_mean(key, [*schema.options, "step", "remark"])
            report(key, f"unknown option of a {category} plugin{hint}")
            continue
        _check_option(key, kind, value, schema, report)
    for key in schema.required:
        if key not in options or options[key] in ("", []):
            report(key, f"required by a {category} plugin")
    for group in schema.one_of:
        if not any(options.get(key) for key in group):
            report(group[0], f"a {category} plugin needs one of: {', '.join(group)}")


def _check_option(key: str, kind: Opt, value: Any, schema: PluginSchema, report: Report) -> None:
    if kind is Opt.AUTHORIZATIONS:
        _check_authorizations(key, value, report)
        return
    message = check_value(kind, value)
    if message is not None:
        report(key, message)
        return
    if key in schema.choices and value.lower() not in schema.choices[key]:
        allowed = ", ".join(schema.choices[key])
        report(key, f"invalid value {describe(value)}; expected one of: {allowed}")
    if key in schema.ranges:
        low, high = schema.ranges[key]
        if not low <= value <= high:
            report(key, f"{value} is out of range {low}-{high}")


def check_value(kind: Opt, value: Any) -> str | None:
    """Why ``value`` is not a valid ``kind`` plugin option, or None."""
    if kind in (Opt.STR, Opt.DURATION, Opt.BYTESIZE) and not isinstance(value, str):
        note = " (pingap ignores non-string values here)" if kind is not Opt.STR else ""
        if kind is Opt.STR and isinstance(value, list) and all(isinstance(v, str) for v in value):
            note = f"; write one comma-separated string: {describe(', '.join(value))}"
        return f"expected {kind.value}, got {describe(value)}{note}"
    try:
        if kind is Opt.DURATION:
            parse_duration(value)
        elif kind is Opt.BYTESIZE:
            parse_bytesize(value)
    except ValueError as exc:
        return str(exc)
    if kind is Opt.BOOL and not isinstance(value, bool):
        return f"expected a boolean, got {describe(value)}"
    if kind is Opt.INT and (isinstance(value, bool) or not isinstance(value, int)):
        return f"expected an integer, got {describe(value)}"
    if kind is Opt.STR_LIST:
        if not isinstance(value, list):
            return f"expected an array of strings, got {describe(value)}"
        for index, item in enumerate(value):
            if not isinstance(item, str):
                return f"item {index}: expected a string, got {describe(item)}"
    return None


def _check_authorizations(key: str, value: Any, report: Report) -> None:
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        report(key, f"expected {Opt.AUTHORIZATIONS.value}, got {describe(value)}")
        return
    for index, table in enumerate(value):
        where = f"{key}[{index}]"
        for name, item in table.items():
            kind = _AUTHORIZATION_KEYS.get(name)
            if kind is None:
                report(f"{where}.{name}", f"unknown key{did_you_mean(name, _AUTHORIZATION_KEYS)}")
                continue
            message = check_value(kind, item)
            if message is not None:
                report(f"{where}.{name}", message)
        for name in ("app_id", "secret"):
            if not table.get(name):
                report(f"{where}.{name}", "required")
        deviation = table.get("deviation", 0)
        if table.get("secret") != "*" and isinstance(deviation, int) and deviation <= 0:
            report(
                f"{where}.deviation",
                "must be > 0 (seconds of allowed clock skew) unless secret is '*'",
            )
