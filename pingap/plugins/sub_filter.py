"""The ``sub_filter`` plugin: search and replace in a streamed response body.

Rules as pingap writes them: ``sub_filter '<literal>' '<replacement>' [g]`` and
``subs_filter '<regex>' '<replacement>' [gi]`` (``g`` every occurrence, else only the
first; ``i`` case-insensitive, regex only; ``$1`` / ``${name}`` in a regex
replacement). Rules run in order, each on the output of the one before.

pingap buffers the whole body and substitutes at the end; here each rule streams:
the `regex` library's partial matching says where a match might continue into the
next chunk, and only from there on is held back, so matches across chunk boundaries
are found while the rest flows on. A candidate longer than ``MAX_HOLD`` bytes is given
up (the bytes pass unchanged) so that one body cannot pin unbounded memory.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pingap.context import BodyFilter, RequestContext
from pingap.headers import Headers
from pingap.plugins import Plugin, register, remove_header
from pingap.plugins.compression import weaken_etag
from pingap.regexes import compile_pingap_regex

MAX_HOLD = 65536

_RULE = re.compile(r"\s*(subs_filter|sub_filter)\s+'([^']+)'\s+'([^']*)'(?:\s+([ig]+))?\s*")
_REF = re.compile(r"\$(?:\{(\w+)\}|(\w+)|(\$))")


class Rule:
    """One parsed rule: a compiled pattern and its replacement template."""

    __slots__ = ("pattern", "template", "every")

    def __init__(self, text: str) -> None:
        import regex  # loaded when a sub_filter plugin is built

        found = _RULE.fullmatch(text)
        if found is None:
            raise ValueError(f"invalid filter {text!r}: expected "
                             "\"sub_filter|subs_filter '<pattern>' '<replacement>' [flags]\"")
        kind, pattern, replacement, flags = found.groups()
        flags = flags or ""
        self.every = "g" in flags
        if kind == "subs_filter":
            try:
                # pingap's dialect (Rust's regex crate) checked and translated, then
                # compiled for bytes: bodies are bytes, as in pingap
                checked = compile_pingap_regex(pattern)
                self.pattern = regex.compile(
                    checked.pattern.encode("utf-8"),
                    regex.VERSION1 | (regex.IGNORECASE if "i" in flags else 0))
            except (ValueError, regex.error) as exc:
                raise ValueError(f"invalid regex in filter {text!r}: {exc}") from exc
            self.template = _template(replacement, self.pattern)
        else:
            self.pattern = regex.compile(regex.escape(pattern.encode("utf-8")))
            self.template = [replacement.encode("utf-8")]

    def expand(self, match: Any) -> bytes:
        return b"".join(part if isinstance(part, bytes) else (match.group(part) or b"")
                        for part in self.template)


def _template(replacement: str, pattern: Any) -> list[bytes | int | str]:
    """The regex crate's replacement syntax: ``$1``, ``$name``, ``${name}``, ``$$``.
    A reference to a group the pattern lacks is an error (the crate would expand it
    to nothing, silently)."""
    parts: list[bytes | int | str] = []
    pos = 0
    for ref in _REF.finditer(replacement):
        if ref.start() > pos:
            parts.append(replacement[pos:ref.start()].encode("utf-8"))
        pos = ref.end()
        if ref.group(3):
            parts.append(b"$")
            continue
        name = ref.group(1) or ref.group(2)
        key: int | str = int(name) if name.isdigit() else name
        if (isinstance(key, int) and key > pattern.groups) or \
                (isinstance(key, str) and key not in pattern.groupindex):
            raise ValueError(f"replacement {replacement!r} names group {name!r}, "
                             "which the pattern does not have")
        parts.append(key)
    if pos < len(replacement):
        parts.append(replacement[pos:].encode("utf-8"))
    return parts


class Rewriter:
    """One rule applied to a streamed body (a ``BodyFilter``)."""

    __slots__ = ("rule", "held", "done")

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.held = b""
        self.done = False

    def feed(self, data: bytes) -> bytes:
        if self.done:
            return data
        return self._scan(self.held + data, final=False)

    def end(self) -> bytes:
        if self.done or not self.held:
            return b""
        return self._scan(self.held, final=True)

    def _scan(self, buf: bytes, final: bool) -> bytes:
        rule = self.rule
        out = []
        pos = 0
        self.held = b""
        while pos <= len(buf):
            match = rule.pattern.search(buf, pos, partial=not final)
            if match is None:
                break
            start, end = match.span()
            if not final and (match.partial or end == len(buf)):
                # it may go on in the next chunk: hold it back (within bounds)
                if len(buf) - start > MAX_HOLD:
                    start = len(buf) - MAX_HOLD
                out.append(buf[pos:start])
                self.held = buf[start:]
                return b"".join(out)
            out.append(buf[pos:start])
            out.append(rule.expand(match))
            if end == start:  # an empty match: keep the byte and move on
                out.append(buf[start:start + 1])
                end += 1
            pos = end
            if not rule.every:
                self.done = True
                break
        out.append(buf[pos:])
        return b"".join(out)


class RuleChain:
    """The rules of one plugin, each on the output of the one before."""

    __slots__ = ("rewriters",)

    def __init__(self, rewriters: list[Rewriter]) -> None:
        self.rewriters = rewriters

    def feed(self, data: bytes) -> bytes:
        for rewriter in self.rewriters:
            if not data:
                break
            data = rewriter.feed(data)
        return data

    def end(self) -> bytes:
        out = b""
        for rewriter in self.rewriters:
            out = (rewriter.feed(out) if out else b"") + rewriter.end()
        return out


@register
class SubFilter(Plugin):
    """Rewrites matching response bodies (see the module docstring)."""

    category = "sub_filter"
    steps = ("response",)
    filter_rank = 20

    def __init__(self, name: str, options: Mapping[str, Any], step: str | None = None) -> None:
        super().__init__(name, options, step)
        self.rules = [Rule(str(text)) for text in options.get("filters", ()) or ()]
        path = options.get("path")
        try:
            self.path = compile_pingap_regex(str(path)) if path else None
        except ValueError as exc:
            raise ValueError(f"invalid `path` regex {path!r}: {exc}") from exc
        codes = str(options.get("status_codes", "") or "")
        try:
            self.status_codes = frozenset(int(c) for c in codes.split(",") if c.strip())
        except ValueError as exc:
            raise ValueError(f"`status_codes` must be comma-separated status codes, "
                             f"got {codes!r}") from exc
        self.acts_in = frozenset()

    def body_filter(self, ctx: RequestContext, status: int,
                    headers: Headers) -> BodyFilter | None:
        if not self.rules or ctx.method == "HEAD" or status in (204, 304):
            return None
        if self.status_codes and status not in self.status_codes:
            return None
        if self.path is not None and not self.path.search(ctx.path):
            return None
        remove_header(headers, b"content-length")
        weaken_etag(headers)
        return RuleChain([Rewriter(rule) for rule in self.rules])
