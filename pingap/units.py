"""Parse and format the unit-bearing values of pingap's configuration and logs.

Parsing follows the Rust crates pingap uses, so a value valid here is valid there:

* durations: ``humantime`` — a sequence of ``<integer><unit>`` spans, optionally
  separated by spaces (``"500ms"``, ``"1h30m"``, ``"1h 30m"``); a TOML integer or
  float is a number of seconds (our extension: humantime itself needs a unit).
* byte sizes: ``bytesize`` — ``<number>[ ]<unit>``, unit case-insensitive, SI units
  (``kb`` = 1000) and binary units (``kib`` = 1024); a bare integer is bytes.

Formatting follows pingap's access-log helpers (``{size_human}``, ``{latency_human}``):
one decimal, truncated rather than rounded, dropped when it is zero.
"""

from __future__ import annotations

import math
import re

__all__ = [
    "format_duration_human",
    "format_size_human",
    "parse_bytesize",
    "parse_duration",
]

# humantime's unit table (case-sensitive: "m" is minutes, "M" months).
_DURATION_UNITS: dict[str, float] = {
    **dict.fromkeys(("nanos", "nsec", "ns"), 1e-9),
    **dict.fromkeys(("usec", "us", "µs"), 1e-6),
    **dict.fromkeys(("millis", "msec", "ms"), 1e-3),
    **dict.fromkeys(("seconds", "second", "secs", "sec", "s"), 1.0),
    **dict.fromkeys(("minutes", "minute", "mins", "min", "m"), 60.0),
    **dict.fromkeys(("hours", "hour", "hrs", "hr", "h"), 3600.0),
    **dict.fromkeys(("days", "day", "d"), 86_400.0),
    **dict.fromkeys(("weeks", "week", "w"), 604_800.0),
    **dict.fromkeys(("months", "month", "M"), 2_630_016.0),  # 30.44 days
    **dict.fromkeys(("years", "year", "y"), 31_557_600.0),  # 365.25 days
}

_DURATION_SPAN = re.compile(r"\s*(?P<number>[0-9]+)\s*(?P<unit>[A-Za-zµ]*)\s*")

# bytesize's unit table (matched case-insensitively).
_BYTE_UNITS: dict[str, int] = {
    "b": 1,
    **dict.fromkeys(("k", "kb"), 1000),
    **dict.fromkeys(("m", "mb"), 1000**2),
    **dict.fromkeys(("g", "gb"), 1000**3),
    **dict.fromkeys(("t", "tb"), 1000**4),
    **dict.fromkeys(("p", "pb"), 1000**5),
    **dict.fromkeys(("ki", "kib"), 1024),
    **dict.fromkeys(("mi", "mib"), 1024**2),
    **dict.fromkeys(("gi", "gib"), 1024**3),
    **dict.fromkeys(("ti", "tib"), 1024**4),
    **dict.fromkeys(("pi", "pib"), 1024**5),
}

_BYTESIZE = re.compile(r"\s*(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?P<unit>[A-Za-z]*)\s*")


def parse_duration(value: str | float) -> float:
    """Seconds in a humantime duration (``"1h30m"`` -> 5400.0); a number is seconds.

    Raises ``ValueError`` naming the value and what is wrong with it (``TypeError``
    for a value that is neither a string nor a number).
    """
    if isinstance(value, bool):
        raise TypeError(f"invalid duration {value!r}: expected a string like '10s'")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"invalid duration {value!r}: must be a non-negative number")
        return float(value)
    if not isinstance(value, str):
        raise TypeError(f"invalid duration {value!r}: expected a string like '10s'")
    text = value.strip()
    if not text:
        raise ValueError(f"invalid duration '{value}': empty")
    total = 0.0
    pos = 0
    while pos < len(text):
        span = _DURATION_SPAN.match(text, pos)
        if span is None or span.end() == pos:
            if text[pos] == ".":
                raise ValueError(
                    f"invalid duration '{value}': fractional numbers are not allowed, "
                    "use a smaller unit (e.g. '1500ms')"
                )
            raise ValueError(f"invalid duration '{value}': expected a number at '{text[pos:]}'")
        number, unit = span.group("number"), span.group("unit")
        if not unit:
            if span.end() < len(text) and text[span.end()] == ".":
                raise ValueError(
                    f"invalid duration '{value}': fractional numbers are not allowed, "
                    "use a smaller unit (e.g. '1500ms')"
                )
            raise ValueError(f"invalid duration '{value}': time unit needed, e.g. '{number}s'")
        factor = _DURATION_UNITS.get(unit)
        if factor is None:
            raise ValueError(f"invalid duration '{value}': unknown unit '{unit}'")
        total += int(number) * factor
        pos = span.end()
    return total


def parse_bytesize(value: str | int) -> int:
    """Bytes in a bytesize value (``"1mb"`` -> 1_000_000, ``"1mib"`` -> 1_048_576).

    Decimals are allowed and truncated (``"1.5kb"`` -> 1500). Raises ``ValueError``
    (``TypeError`` for a value that is neither a string nor an integer).
    """
    if isinstance(value, bool):
        raise TypeError(f"invalid byte size {value!r}: expected a size like '1mb'")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"invalid byte size {value}: must not be negative")
        return value
    if not isinstance(value, str):
        raise TypeError(f"invalid byte size {value!r}: expected a size like '1mb'")
    match = _BYTESIZE.fullmatch(value)
    if match is None:
        raise ValueError(f"invalid byte size '{value}': expected a number and a unit like '1mb'")
    number, unit = match.group("number"), match.group("unit")
    if not unit:
        if "." in number:
            raise ValueError(
                f"invalid byte size '{value}': a fraction needs a unit, e.g. '{number}kb'"
            )
        return int(number)
    factor = _BYTE_UNITS.get(unit.lower())
    if factor is None:
        raise ValueError(
            f"invalid byte size '{value}': unknown unit '{unit}' "
            "(use b, kb, mb, gb, tb, kib, mib, gib, tib)"
        )
    # integers, not float: "4.1kb" is 4100 bytes, not 4099 (and no decimal module,
    # ~0.5 MB, in every process for this one product)
    whole, _, fraction = number.partition(".")
    return int(whole or "0") * factor + int(fraction or "0") * factor // 10 ** len(fraction)


def _with_one_decimal(value: int, divisor: int, unit: str) -> str:
    whole, rest = divmod(value, divisor)
    decimal = rest * 10 // divisor
    return f"{whole}.{decimal}{unit}" if decimal else f"{whole}{unit}"


def format_size_human(n: int) -> str:
    """pingap's ``{size_human}``: ``512B``, ``1KB``, ``1.1KB``, ``1.2MB``, ``3GB`` (SI units)."""
    n = max(n, 0)
    for divisor, unit in ((1000**3, "GB"), (1000**2, "MB"), (1000, "KB")):
        if n >= divisor:
            return _with_one_decimal(n, divisor, unit)
    return f"{n}B"


def format_duration_human(seconds: float) -> str:
    """pingap's human duration: ``850ms``, ``1.2s``, ``3.5m``, ``1h`` (whole ms, truncated)."""
    # The epsilon keeps e.g. 4.35 s (4349.999... ms in binary) at 4350 ms.
    ms = max(math.floor(seconds * 1000 + 1e-6), 0)
    if ms < 1000:
        return f"{ms}ms"
    if ms < 60_000:
        return _with_one_decimal(ms, 1000, "s")
    if ms < 3_600_000:
        return _with_one_decimal(ms, 60_000, "m")
    return _with_one_decimal(ms, 3_600_000, "h")


def format_duration_spans(seconds: float) -> str:
    """``humantime::format_duration`` of whole seconds (pingap's stats ``uptime``):
    ``"0s"``, ``"5m 3s"``, ``"1day 2h 3m 4s"``, ``"2months 3days"``, ``"1year ..."``."""
    left = max(int(seconds), 0)
    if not left:
        return "0s"
    parts = []
    for size, singular, plural in ((31_557_600, "year", "years"), (2_630_016, "month", "months"),
                                   (86_400, "day", "days"), (3600, "h", "h"), (60, "m", "m"),
                                   (1, "s", "s")):
        count, left = divmod(left, size)
        if count:
            parts.append(f"{count}{singular if count == 1 else plural}")
    return " ".join(parts)
