"""Turn raw TOML entries into the typed model, checking every key against its field.

One job: for each raw entry, check each key exists (else "unknown key; did you mean")
and has the right type (else "expected an integer, got ..."), convert durations and
byte sizes, and construct the frozen dataclass. A bad value is reported and the field
keeps its default, so later cross-checks still see every entry. Setting a field listed
in ``NOT_YET_SUPPORTED`` to a non-default value adds one warning.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import MISSING
from types import MappingProxyType
from typing import Any, TypeVar

from pingap.config.model import (
    INERT_VALUES,
    NOT_YET_SUPPORTED,
    OBSOLETE_KEYS,
    OBSOLETE_TLS_KEYS,
    BasicConfig,
    CertificateConfig,
    Kind,
    LocationConfig,
    PingapConfig,
    PluginConfig,
    ServerConfig,
    StorageConfig,
    UpstreamConfig,
)
from pingap.config.plugin_schema import (
    PLUGIN_SCHEMAS,
    Opt,
    check_plugin,
    check_value,
    describe,
    did_you_mean,
)
from pingap.config.sources import RawConfig, RawEntry, Report
from pingap.plugins import GUARD_CATEGORIES, REGISTRY
from pingap.units import parse_bytesize, parse_duration

__all__ = ["build_config"]

SECTION_CLASSES: Mapping[str, type] = {
    "servers": ServerConfig,
    "locations": LocationConfig,
    "upstreams": UpstreamConfig,
    "certificates": CertificateConfig,
    "storages": StorageConfig,
}

T = TypeVar("T")


class _BadValue(ValueError):
    """A TOML value that does not fit its field; the message is for the user."""


def _convert(kind: Kind, bounds: tuple[int, int], value: Any) -> Any:
    """The model value of a TOML ``value`` for a field of ``kind``; raises _BadValue."""
    got = describe(value)
    if kind is Kind.STR:
        if not isinstance(value, str):
            raise _BadValue(f"expected a string, got {got}")
        return value
    if kind is Kind.BOOL:
        if not isinstance(value, bool):
            raise _BadValue(f"expected a boolean (true or false), got {got}")
        return value
    if kind is Kind.INT:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _BadValue(f"expected an integer, got {got}")
        low, high = bounds
        if not low <= value <= high:
            raise _BadValue(f"{value} is out of range {low}-{high}")
        return value
    if kind is Kind.DURATION:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise _BadValue(f'expected a duration like "10s", got {got}')
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise _BadValue(str(exc)) from None
    if kind is Kind.BYTESIZE:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise _BadValue(f'expected a byte size like "1mb", got {got}')
        try:
            return parse_bytesize(value)
        except ValueError as exc:
            raise _BadValue(str(exc)) from None
    if not isinstance(value, list):
        raise _BadValue(f"expected an array of strings, got {got}")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise _BadValue(f"item {index}: expected a string, got {describe(item)}")
    return tuple(value)


def _is_inert(dotted: str, value: Any, default: Any) -> bool:
    """True when a not-yet-supported field's value leaves the feature off."""
    if isinstance(value, str) and isinstance(default, str):
        if value.lower() == default.lower():
            return True
    elif value == default:
        return True
    if default is None and value in (False, "", ()):
        return True
    return isinstance(value, str) and value.lower() in INERT_VALUES.get(dotted, ())


def _build(cls: type[T], entry: RawEntry, report: Report, extra: Mapping[str, Any]) -> T:
    """Check and convert every key of ``entry`` into a ``cls`` instance."""
    fields = {f.name: f for f in dataclasses.fields(cls) if "kind" in f.metadata}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = dict(extra)
    for key, value in entry.values.items():
        spec = fields.get(key)
        dotted = f"{entry.section}.{key}"
        if spec is None:
            if dotted in OBSOLETE_KEYS:
                report.warnings.append(entry.problem(
                    key, f"obsolete pingap key, ignored (as pingap does): {OBSOLETE_KEYS[dotted]}"))
            elif dotted in OBSOLETE_TLS_KEYS:
                report.errors.append(entry.problem(
                    key, "obsolete pingap key: pingap ignores it and would serve plain HTTP; "
                    f"{OBSOLETE_TLS_KEYS[dotted]}"))
            else:
                report.errors.append(entry.problem(key, f"unknown key{did_you_mean(key, fields)}"))
            continue
        if value == "" and spec.metadata["kind"] is Kind.STR:
            if spec.default is MISSING:
                report.errors.append(entry.problem(key, "must not be empty"))
            continue  # pingap (and its web admin) write "" for an unset optional string
        try:
            kwargs[key] = _convert(spec.metadata["kind"], spec.metadata["bounds"], value)
        except _BadValue as exc:
            report.errors.append(entry.problem(key, str(exc)))
            continue
        if dotted in NOT_YET_SUPPORTED and not _is_inert(dotted, kwargs[key], spec.default):
            report.warnings.append(entry.problem(key, "accepted but not supported yet; ignored"))
    for key, spec in fields.items():
        if spec.default is MISSING and key not in kwargs:
            if key not in entry.values:  # else present but mistyped or empty: reported
                report.errors.append(entry.problem(key, "required key is missing"))
            kwargs[key] = ""  # a placeholder, so the entry still exists for cross-checks
    return cls(**kwargs)


def _build_plugin(entry: RawEntry, report: Report) -> PluginConfig:
    values = dict(entry.values)
    category = values.pop("category", None)
    # "" means unset, as for every optional string (pingap's web admin writes them)
    step = values.pop("step", None)
    step = None if step == "" else step
    remark = values.pop("remark", None)
    remark = None if remark == "" else remark
    if remark is not None and not isinstance(remark, str):
        report.errors.append(entry.problem("remark", f"expected a string, got {describe(remark)}"))
        remark = None
    if category is None:
        report.errors.append(entry.problem("category", "required key is missing"))
    elif not isinstance(category, str):
        report.errors.append(
            entry.problem("category", f"expected a string, got {describe(category)}")
        )
    elif category not in PLUGIN_SCHEMAS:
        if category in REGISTRY:  # a third-party plugin (entry point): it checks itself
            pass
        else:
            hint = did_you_mean(category, [*PLUGIN_SCHEMAS, *REGISTRY])
            report.errors.append(
                entry.problem("category", f"unknown plugin category '{category}'{hint}")
            )
    else:
        _check_plugin_options(entry, category, step, values, report)
    return PluginConfig(
        name=entry.name,
        category=category if isinstance(category, str) else "",
        step=step if isinstance(step, str) else None,
        options=MappingProxyType(values),
        remark=remark,
    )


def _wrong_type(kind: Opt, value: Any) -> bool:
    """The TOML type does not fit (a value pingap's plugins replace by the default), as
    opposed to a string that does not parse (which fails the plugin there too)."""
    if kind in (Opt.STR, Opt.DURATION, Opt.BYTESIZE):
        return not isinstance(value, str)
    if kind in (Opt.BOOL, Opt.INT, Opt.STR_LIST):
        return check_value(kind, value) is not None
    return False


def _check_plugin_options(
    entry: RawEntry, category: str, step: Any, values: dict[str, Any], report: Report
) -> None:
    """Check a known category's options; outside the access guards, an unknown or
    mistyped option is a warning and is dropped (pingap ignores it, or uses the default:
    its own conf/ samples carry such stale keys). In a guard a typo must not open a
    location, so there it stays an error."""
    schema = PLUGIN_SCHEMAS[category]
    strict = category in GUARD_CATEGORIES
    ignored: list[str] = []

    def problem(key: str, message: str) -> None:
        top = key.partition("[")[0]
        kind = schema.options.get(top)
        lenient = not strict and top in values and top == key and (
            kind is None or _wrong_type(kind, values[top]))
        if lenient:
            ignored.append(key)
            report.warnings.append(entry.problem(key, f"{message}; ignored, as pingap does"))
        else:
            report.errors.append(entry.problem(key, message))

    check_plugin(category, step, values, problem)
    for key in ignored:
        values.pop(key, None)


def build_config(raw: RawConfig, report: Report) -> PingapConfig:
    """The typed config of ``raw``; every problem goes to ``report`` (never raises)."""
    sources: dict[str, str] = {}
    origins: dict[str, tuple[str, str]] = {}
    basic = BasicConfig()
    if raw.basic is not None:
        basic = _build(BasicConfig, raw.basic, report, {})
        sources["basic"] = raw.basic.file
        origins.update((f"basic.{key}", where) for key, where in raw.basic.origins.items())
    built: dict[str, dict[str, Any]] = {}
    for section, entries in raw.sections.items():
        built[section] = {}
        for name, entry in entries.items():
            sources[entry.path] = entry.file
            origins.update((f"{entry.path}.{key}", where) for key, where in entry.origins.items())
            if section == "plugins":
                built[section][name] = _build_plugin(entry, report)
            else:
                built[section][name] = _build(
                    SECTION_CLASSES[section], entry, report, {"name": name}
                )
    return PingapConfig(
        basic=basic,
        servers=built["servers"],
        locations=built["locations"],
        upstreams=built["upstreams"],
        plugins=built["plugins"],
        certificates=built["certificates"],
        storages=built["storages"],
        sources=sources,
        origins=origins,
        digest=raw.digest,
        warnings=tuple(report.warnings),
    )
