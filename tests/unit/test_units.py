"""Durations and byte sizes as pingap's crates parse them, and pingap's human formats."""

from __future__ import annotations

import re

import pytest

from pingap.units import (
    format_duration_human,
    format_size_human,
    parse_bytesize,
    parse_duration,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("10s", 10.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("2d", 172_800.0),
        ("7d", 604_800.0),
        ("1w", 604_800.0),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("2h 37min", 9420.0),
        ("3 hours", 10_800.0),
        ("90sec", 90.0),
        ("2hr", 7200.0),
        ("1M", 2_630_016.0),  # humantime: M = month (30.44 d), m = minute
        ("  10s  ", 10.0),
    ],
)
def test_parse_duration_humantime_strings(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250us", 250e-6), ("250µs", 250e-6), ("1500ns", 1.5e-6), ("1s 500ms", 1.5)],
)
def test_parse_duration_sub_second_units(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_parse_duration_numbers_are_seconds() -> None:
    assert parse_duration(30) == 30.0
    assert parse_duration(1.5) == 1.5
    assert isinstance(parse_duration(30), float)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("10x", "invalid duration '10x': unknown unit 'x'"),
        ("10", "invalid duration '10': time unit needed, e.g. '10s'"),
        ("", "invalid duration '': empty"),
        ("1.5h", "fractional numbers are not allowed"),
        ("-1s", "expected a number at '-1s'"),
        ("5s5", "time unit needed"),
        ("ten seconds", "expected a number"),
        (-3, "must be a non-negative number"),
    ],
)
def test_parse_duration_rejects_bad_input(value: str | int, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_duration(value)


def test_parse_duration_rejects_non_values() -> None:
    with pytest.raises(TypeError):
        parse_duration(True)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1mb", 1_000_000),
        ("1mib", 1_048_576),
        ("4kb", 4000),
        ("1kib", 1024),
        ("1KB", 1000),
        ("1MiB", 1_048_576),
        ("1 mb", 1_000_000),
        ("1.5mb", 1_500_000),
        ("4.1kb", 4100),
        ("2gb", 2_000_000_000),
        ("1gib", 1024**3),
        ("1tb", 10**12),
        ("1tib", 1024**4),
        ("10b", 10),
        ("1k", 1000),
        ("4096", 4096),
    ],
)
def test_parse_bytesize_units(text: str, size: int) -> None:
    assert parse_bytesize(text) == size


def test_parse_bytesize_integer_is_bytes() -> None:
    assert parse_bytesize(1_048_576) == 1_048_576


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1xb", "unknown unit 'xb'"),
        ("abc", "expected a number and a unit"),
        ("", "expected a number and a unit"),
        ("1 2kb", "expected a number and a unit"),
        ("1.5", "a fraction needs a unit"),
        (-1, "must not be negative"),
    ],
)
def test_parse_bytesize_rejects_bad_input(value: str | int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_bytesize(value)


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0B"),
        (512, "512B"),
        (999, "999B"),
        (1000, "1KB"),
        (1024, "1KB"),
        (1124, "1.1KB"),
        (1_220_000, "1.2MB"),
        (1_999_999, "1.9MB"),  # truncated, not rounded, like pingap
        (3_000_000_000, "3GB"),
    ],
)
def test_format_size_human(size: int, text: str) -> None:
    assert format_size_human(size) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0ms"),
        (0.85, "850ms"),
        (0.999, "999ms"),
        (1.0, "1s"),
        (1.2, "1.2s"),
        (4.35, "4.3s"),
        (62.0, "1m"),
        (110.0, "1.8m"),
        (210.0, "3.5m"),
        (3600.0, "1h"),
        (3600.0 + 3500.0, "1.9h"),
        (3600.0 + 1800.0, "1.5h"),
    ],
)
def test_format_duration_human(seconds: float, text: str) -> None:
    assert format_duration_human(seconds) == text
