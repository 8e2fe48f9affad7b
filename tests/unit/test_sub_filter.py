"""sub_filter: rule parsing, literal and regex rewriting of streamed bodies, split at
every possible chunk boundary, and the plugin's scope."""

from __future__ import annotations

import pytest

from pingap.plugins import sub_filter as sf
from pingap.plugins.sub_filter import Rewriter, Rule, SubFilter
from tests.unit.body_support import header, make_ctx, run


def rewrite(rules: list[str], body: bytes, step: int) -> bytes:
    plugin = SubFilter("s", {"filters": rules})
    body_filter = plugin.body_filter(make_ctx(), 200, [])
    assert body_filter is not None
    return run(body_filter, [body[i:i + step] for i in range(0, len(body), step)] or [b""])


CASES = [
    (["sub_filter 'http://old.example.com' 'https://new.example.com' g"],
     b"a http://old.example.com/x b http://old.example.com/y",
     b"a https://new.example.com/x b https://new.example.com/y"),
    (["sub_filter 'foo' 'bar'"], b"foo foo foo", b"bar foo foo"),          # once
    (["subs_filter '<title>(.*?)</title>' '<title>$1 - Docs</title>' i"],
     b"<html><TITLE>Home</TITLE></html>", b"<html><title>Home - Docs</title></html>"),
    (["subs_filter 'a+' 'X' g"], b"baaab aa", b"bXb X"),                    # greedy across chunks
    (["subs_filter '(?P<w>wor)ld' '${w}m' g"], b"world world", b"worm worm"),
    (["sub_filter '</head>' '<script src=\"/a.js\"></script></head>'"],
     b"<head><meta></head><body>", b"<head><meta><script src=\"/a.js\"></script></head><body>"),
    (["sub_filter 'ab' 'b' g", "sub_filter 'bb' 'c' g"], b"abbabb", b"cc"),  # in order
    (["subs_filter 'x' '$$' g"], b"axbx", b"a$b$"),
    (["sub_filter 'é' 'e' g"], "café é".encode(), b"cafe e"),
    (["sub_filter 'gone' '' g"], b"a gone b gone", b"a  b "),
]


@pytest.mark.parametrize(("rules", "body", "expected"), CASES)
def test_rewrites_at_every_chunk_size(rules: list[str], body: bytes, expected: bytes) -> None:
    for step in range(1, len(body) + 1):
        assert rewrite(rules, body, step) == expected, step


def test_output_flows_before_the_end() -> None:
    rewriter = Rewriter(Rule("sub_filter 'needle' 'pin' g"))
    assert rewriter.feed(b"hay hay hay ne") == b"hay hay hay "
    assert rewriter.feed(b"edle and more") == b"pin and more"
    assert rewriter.end() == b""


def test_a_candidate_is_held_only_up_to_max_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sf, "MAX_HOLD", 10)
    rewriter = Rewriter(Rule("subs_filter 'a.*z' 'X'"))
    out = rewriter.feed(b"a" + b"b" * 30)
    assert len(out) == 21 and len(rewriter.held) == 10


@pytest.mark.parametrize("rule", [
    "sub_filter 'a'", "filter 'a' 'b'", "sub_filter a b", "subs_filter '(' 'x'",
    "subs_filter 'a' '$2'", "sub_filter 'a' 'b' x",
])
def test_invalid_rules_are_config_errors(rule: str) -> None:
    with pytest.raises(ValueError):
        SubFilter("s", {"filters": [rule]})


def test_scope_by_path_and_status_and_framing() -> None:
    plugin = SubFilter("s", {"filters": ["sub_filter 'a' 'b'"], "path": "^/docs",
                             "status_codes": "200,201"})
    headers = [(b"Content-Length", b"10"), (b"ETag", b'"e"')]
    assert plugin.body_filter(make_ctx("/docs/x"), 200, headers) is not None
    assert header(headers, "content-length") is None and header(headers, "etag") == b'W/"e"'
    assert plugin.body_filter(make_ctx("/other"), 200, []) is None
    assert plugin.body_filter(make_ctx("/docs"), 404, []) is None
    assert plugin.body_filter(make_ctx("/docs", method="HEAD"), 200, []) is None
    with pytest.raises(ValueError):
        SubFilter("s", {"status_codes": "ok"})
