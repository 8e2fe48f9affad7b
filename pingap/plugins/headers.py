"""Plugins that read and write headers: ``request_id``, ``response_headers``, ``cors`` and
``accept_encoding`` (pingap's semantics; their docs are pingap-plugin/docs/*.md).

Differences from pingap: ``cors.allow_origin`` also takes a comma-separated list of
origins (and a single origin counts as a list of one): the request's ``Origin`` is echoed
when listed, with ``Vary: Origin``; a preflight from an origin not listed is refused with
403 and a real response to it carries no CORS headers. A ``response_headers`` value whose
variable resolves to nothing drops that header (pingap writes the literal text).
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Mapping
from typing import Any

from pingap.actions import CONTINUE, Continue, Respond
from pingap.context import RequestContext
from pingap.headers import Headers, header_value
from pingap.plugins import (
    OptionProblems,
    Plugin,
    plugin_response,
    register,
    remove_header,
    set_header,
    set_request_headers,
    str_list,
)
from pingap.regexes import PingapRegex, compile_pingap_regex
from pingap.units import parse_duration
from pingap.variables import BAD_VALUE, TOKEN, HeaderRule, Resolver, compile_value, parse_header_rule

#: nanoid's URL-safe alphabet
NANOID_ALPHABET = "_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


class _RandomBytes:
    """``os.urandom`` read 4,000 bytes at a time and handed out in pieces: one
    ``getrandom`` call per 400 request ids instead of one each. A forked child starts
    with an empty buffer, so two processes never hand out the same bytes. Not for
    threads: a worker's greenlets call ``take`` without yielding inside it."""

    SIZE = 4000

    def __init__(self) -> None:
        self.pool = b""
        self.at = 0
        os.register_at_fork(after_in_child=self.clear)

    def clear(self) -> None:
        self.pool = b""
        self.at = 0

    def take(self, n: int) -> bytes:
        at = self.at
        if at + n > len(self.pool):
            self.pool = os.urandom(self.SIZE)
            at = 0
        self.at = at + n
        return self.pool[at:at + n]


_random_bytes = _RandomBytes()
#: the variant nibble (RFC 9562 §4.1: binary 10xx) for each value of a random nibble
_VARIANT = "89ab" * 4


def uuid7() -> str:
    """A UUID version 7 (RFC 9562 §5.7) as text: 48 bits of Unix milliseconds, the version,
    74 random bits and the variant, written as hex directly (no ``uuid.UUID`` and no
    128-bit integer per request)."""
    r = _random_bytes.take(10).hex()  # 20 hex digits: 18 are used, and 2 bits of one more
    ms = f"{time.time_ns() // 1_000_000:012x}"
    return f"{ms[:8]}-{ms[8:]}-7{r[:3]}-{_VARIANT[int(r[3], 16)]}{r[4:7]}-{r[7:19]}"


def _header_name(value: str, key: str, problems: OptionProblems) -> bytes:
    if not TOKEN.match(value):
        problems.add(key, f"invalid header name {value!r}")
    return value.encode("latin-1", "replace")


@register
class RequestId(Plugin):
    """Keep the request's id (``header_name``, default ``X-Request-Id``) or make one
    (``algorithm``: ``nanoid`` of ``size`` characters, else UUID v7) and set it on the
    request. The session echoes it as ``X-Request-Id`` on the upstream's response and
    the access log's ``{request_id}`` shows it."""

    category = "request_id"
    steps = ("request", "proxy_upstream")
    own_step_only = True

    def __init__(self, name: str, options: Mapping[str, Any], step: str | None = None) -> None:
        super().__init__(name, options, step)
        problems = OptionProblems()
        self.header = _header_name(str(options.get("header_name") or "X-Request-Id"),
                                   "header_name", problems)
        self.header_low = self.header.lower()
        self.nanoid = str(options.get("algorithm") or "") == "nanoid"
        size = options.get("size") or 8
        if not isinstance(size, int) or not 1 <= size <= 256:
            problems.add("size", f"expected 1-256 characters, got {size!r}")
            size = 8
        self.size = size
        problems.check()

    def new_id(self) -> str:
        if self.nanoid:
            return "".join(secrets.choice(NANOID_ALPHABET) for _ in range(self.size))
        return uuid7()

    def handle_request(self, step: str, ctx: RequestContext) -> Continue | Respond:
        if step != self.step:
            return CONTINUE
        incoming = header_value(ctx.request_headers, self.header_low)
        if incoming is not None:
            ctx.request_id = incoming.decode("latin-1")
            return CONTINUE
        ctx.request_id = self.new_id()
        # absent (just looked up): appended to a copy, the client's list stays as sent
        ctx.request_headers = [*ctx.request_headers,
                               (self.header, ctx.request_id.encode("latin-1"))]
        return CONTINUE


def _rules(options: Mapping[str, Any], key: str, problems: OptionProblems) -> list[HeaderRule]:
    rules = []
    for i, item in enumerate(str_list(options, key)):
        try:
            rules.append(parse_header_rule(item))
        except ValueError as exc:
            problems.add(f"{key}[{i}]", str(exc))
    return rules


@register
class ResponseHeaders(Plugin):
    """add, remove, set, set-if-absent, rename — always in that order — on the response
    (``mode = "upstream"``: on the upstream's response, before other response plugins)."""

    category = "response_headers"
    steps = ("response", "upstream_response")

    def __init__(self, name: str, options: Mapping[str, Any], step: str | None = None) -> None:
        super().__init__(name, options, step)
        self.acts_in = frozenset()
        problems = OptionProblems()
        self.upstream_mode = str(options.get("mode") or "").lower() == "upstream"
        self.add = _rules(options, "add_headers", problems)
        self.set = _rules(options, "set_headers", problems)
        self.set_absent = _rules(options, "set_headers_not_exists", problems)
        self.remove = [_header_name(item, f"remove_headers[{i}]", problems)
                       for i, item in enumerate(str_list(options, "remove_headers"))]
        self.remove_low = frozenset(name.lower() for name in self.remove)
        self.rename: list[tuple[bytes, bytes]] = []
        for i, item in enumerate(options.get("rename_headers") or []):
            old, sep, new = str(item).partition(":")
            key = f"rename_headers[{i}]"
            if not sep:
                problems.add(key, f"expected 'Old-Name: New-Name', got {item!r}")
                continue
            self.rename.append((_header_name(old.strip(), key, problems),
                                _header_name(new.strip(), key, problems)))
        problems.check()
        #: (names to drop, headers to append) when no set rule has a variable: worked
        #: out once here instead of on every response
        self.fixed: tuple[frozenset[bytes], list[tuple[bytes, bytes]]] | None = None
        if all(rule.resolver is None for rule in self.set):
            self.fixed = self._remove_and_set(None)

    def _remove_and_set(self, ctx: RequestContext | None
                        ) -> tuple[frozenset[bytes], list[tuple[bytes, bytes]]]:
        """The lowercase names to drop and the headers to append for ``remove_headers``
        and ``set_headers``: each set name replaced, a later rule for a name winning."""
        chosen: dict[bytes, tuple[bytes, bytes]] = {}
        for rule in self.set:
            value = rule.value(ctx)  # type: ignore[arg-type]  # None only when static
            if value is not None:
                low = rule.name.lower()
                chosen.pop(low, None)  # a later rule for a name takes its place at the end
                chosen[low] = (rule.name, value)
        drop = self.remove_low.union(chosen) if chosen else self.remove_low
        return drop, list(chosen.values())

    def apply(self, ctx: RequestContext, headers: Headers) -> None:
        for rule in self.add:
            value = rule.value(ctx)
            if value is not None:
                headers.append((rule.name, value))
        # remove, then set: one pass over the headers for both
        drop, chosen = self.fixed or self._remove_and_set(ctx)
        if drop:
            headers[:] = [item for item in headers if item[0].lower() not in drop]
            headers.extend(chosen)
        for rule in self.set_absent:
            low = rule.name.lower()
            if not any(n.lower() == low for n, _ in headers):
                value = rule.value(ctx)
                if value is not None:
                    headers.append((rule.name, value))
        for old, new in self.rename:
            value = remove_header(headers, old)
            if value is not None:
                headers.append((new, value))

    def handle_upstream_response(self, ctx: RequestContext, status: int,
                                 headers: Headers) -> None:
        if self.upstream_mode:
            self.apply(ctx, headers)

    def handle_response(self, ctx: RequestContext, status: int, headers: Headers) -> None:
        if not self.upstream_mode:
            self.apply(ctx, headers)


@register
class Cors(Plugin):
    """Answer preflight ``OPTIONS`` with 204 and the CORS headers; add them to responses
    of requests that carry ``Origin``. ``path`` (regex) limits both to matching paths."""

    category = "cors"
    steps = ("request", "response")

    def __init__(self, name: str, options: Mapping[str, Any], step: str | None = None) -> None:
        super().__init__(name, options, step)
        self.step = "request"  # the preflight; the response part runs at the response step
        self.acts_in = frozenset({"request"})
        problems = OptionProblems()
        self.path: PingapRegex | None = None
        if options.get("path"):
            try:
                self.path = compile_pingap_regex(str(options["path"]))
            except ValueError as exc:
                problems.add("path", str(exc))
        origin = str(options.get("allow_origin") or "*").strip()
        self.origin_resolver: Resolver | None = None
        self.origins: frozenset[str] | None = None  # the allow-list, when one is given
        self.any_origin = origin == "*"
        if origin[:1] in ("$", ":") and len(origin) > 1:
            try:
                self.origin_resolver = compile_value(origin)
            except ValueError as exc:
                problems.add("allow_origin", str(exc))
        elif not self.any_origin:
            self.origins = frozenset(o.strip().rstrip("/").lower()
                                     for o in origin.split(",") if o.strip())
        headers: Headers = []
        for key, header, default in (
                ("allow_methods", b"Access-Control-Allow-Methods",
                 "GET, POST, PUT, PATCH, DELETE, OPTIONS"),
                ("allow_headers", b"Access-Control-Allow-Headers", ""),
                ("expose_headers", b"Access-Control-Expose-Headers", "")):
            value = str(options.get(key) or default)
            if BAD_VALUE.search(value):
                problems.add(key, "control characters in the value")
            elif value:
                headers.append((header, value.encode("latin-1", "replace")))
        try:
            max_age = int(parse_duration(str(options.get("max_age") or "1h")))
        except ValueError as exc:
            problems.add("max_age", str(exc))
            max_age = 0
        if max_age:
            headers.append((b"Access-Control-Max-Age", str(max_age).encode()))
        if options.get("allow_credentials") is True:
            headers.append((b"Access-Control-Allow-Credentials", b"true"))
        self.headers = headers
        self.vary = self.origin_resolver is not None or self.origins is not None
        self.refused = plugin_response(403, b"Origin is not allowed")
        problems.check()

    def _allow_origin(self, ctx: RequestContext) -> bytes | None:
        """The Access-Control-Allow-Origin value for this request, or None to refuse."""
        if self.any_origin:
            return b"*"
        if self.origin_resolver is not None:
            value = self.origin_resolver(ctx)
            return None if value is None else value.encode("latin-1", "replace")
        origin = ctx.request_header("origin")
        assert self.origins is not None
        if origin is not None and origin.strip().rstrip("/").lower() in self.origins:
            return origin.strip().encode("latin-1", "replace")
        return None

    def _cors_headers(self, ctx: RequestContext) -> Headers | None:
        allow = self._allow_origin(ctx)
        if allow is None:
            return None
        out = [*self.headers, (b"Access-Control-Allow-Origin", allow)]
        if self.vary:
            out.append((b"Vary", b"Origin"))
        return out

    def _applies(self, ctx: RequestContext) -> bool:
        return self.path is None or self.path.search(ctx.path) is not None

    def handle_request(self, step: str, ctx: RequestContext) -> Continue | Respond:
        if step != "request" or ctx.method != "OPTIONS" or not self._applies(ctx):
            return CONTINUE
        headers = self._cors_headers(ctx)
        if headers is None:
            if ctx.request_header("origin") is not None:
                return self.refused
            headers = list(self.headers)  # no Origin: not a browser preflight
        return Respond(status=204, headers=headers, body=b"")

    def handle_response(self, ctx: RequestContext, status: int, headers: Headers) -> None:
        if ctx.request_header("origin") is None or not self._applies(ctx):
            return
        cors = self._cors_headers(ctx)
        if cors is None:
            return
        for name, value in cors:
            if name == b"Vary":
                _add_vary(headers, value)
            else:
                set_header(headers, name, value)


def _add_vary(headers: Headers, token: bytes) -> None:
    for name, value in headers:
        if name.lower() == b"vary":
            tokens = {t.strip().lower() for t in value.split(b",")}
            if token.lower() in tokens or b"*" in tokens:
                return
    headers.append((b"Vary", token))


def accepts(accept_encoding: str, coding: str) -> bool:
    """True if ``accept_encoding`` lists ``coding`` with a weight above 0."""
    for part in accept_encoding.split(","):
        name, *params = part.split(";")
        if name.strip().lower() != coding.lower():
            continue
        refused = False
        for param in params:
            key, _, q = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    refused = float(q) <= 0
                except ValueError:
                    refused = False
        if not refused:
            return True
    return False


@register
class AcceptEncoding(Plugin):
    """Rewrite ``Accept-Encoding`` to the ``encodings`` (in their order) the client accepts;
    ``only_one_encoding`` keeps the first. None accepted: the header is removed."""

    category = "accept_encoding"
    steps = ("early_request",)
    own_step_only = True

    def __init__(self, name: str, options: Mapping[str, Any], step: str | None = None) -> None:
        super().__init__(name, options, step)
        self.encodings = str_list(options, "encodings")
        self.only_one = options.get("only_one_encoding") is True

    def handle_request(self, step: str, ctx: RequestContext) -> Continue | Respond:
        if step != self.step:
            return CONTINUE
        sent = ctx.request_header("accept-encoding")
        if sent is None:
            return CONTINUE
        kept = [e for e in self.encodings if accepts(sent, e)]
        if self.only_one:
            kept = kept[:1]
        value = ", ".join(kept).encode("latin-1") if kept else None
        set_request_headers(ctx, [(b"Accept-Encoding", value)])
        return CONTINUE
