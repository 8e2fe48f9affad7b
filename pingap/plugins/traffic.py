"""Plugins that send a request elsewhere: ``redirect`` (scheme and path prefix) and
``traffic_splitting`` (a share of a location's traffic to another upstream), with
pingap's semantics (pingap-plugin/docs/redirect.md, traffic_splitting.md)."""

from __future__ import annotations

import random
import zlib
from collections.abc import Mapping
from typing import Any

from pingap.actions import CONTINUE, Continue, Respond
from pingap.context import RequestContext
from pingap.plugins import OptionProblems, Plugin, plugin_response, register
from pingap.regexes import PingapRegex, compile_pingap_regex

_REDIRECT_STATUSES = (301, 302, 307, 308)


@register
class Redirect(Plugin):
    """Redirect to ``https`` (``http_to_https = true``) or ``http`` and/or under ``prefix``,
    unless the request already has that scheme and prefix. ``status``: 301, 302, 308,
    anything else 307."""

    category = "redirect"
    steps = ("request",)
    own_step_only = True

    def __init__(self, name: str, options: Mapping[str, Any], step: str | None = None) -> None:
        super().__init__(name, options, step)
        prefix = str(options.get("prefix") or "")
        if len(prefix) <= 1:
            prefix = ""
        elif not prefix.startswith("/"):
            prefix = "/" + prefix
        self.prefix = prefix
        self.https = options.get("http_to_https") is True
        status = options.get("status")
        self.status = status if status in _REDIRECT_STATUSES else 307

    def handle_request(self, step: str, ctx: RequestContext) -> Continue | Respond:
        if step != self.step:
            return CONTINUE
        prefixed = ctx.path.startswith(self.prefix)
        if ctx.conn.tls == self.https and prefixed:
            return CONTINUE
        scheme = "https" if self.https else "http"
        location = f"{scheme}://{ctx.host}{'' if prefixed else self.prefix}{ctx.uri}"
        return plugin_response(self.status, b"",
                               headers=[(b"Location", location.encode("latin-1", "replace"))])


@register
class TrafficSplitting(Plugin):
    """Send ``weight`` percent of the location's requests to ``upstream``: at random, or
    (``stickiness``) by the CRC32 of ``sticky_cookie``/``sticky_header`` so a client stays
    on one side; with ``matcher``, a sticky value that matches always goes. A request
    without the sticky value stays on the location's upstream."""

    category = "traffic_splitting"
    steps = ("request",)
    own_step_only = True

    def __init__(self, name: str, options: Mapping[str, Any], step: str | None = None) -> None:
        super().__init__(name, options, step)
        problems = OptionProblems()
        self.upstream = str(options.get("upstream") or "")
        if not self.upstream:
            problems.add("upstream", "required")
        weight = options.get("weight", 0)
        self.weight = min(max(weight, 0), 100) if isinstance(weight, int) else 0
        self.stickiness = options.get("stickiness") is True
        self.cookie = str(options.get("sticky_cookie") or "")
        self.header = str(options.get("sticky_header") or "")
        if self.stickiness and not (self.cookie or self.header):
            problems.add("stickiness", "needs sticky_cookie or sticky_header")
        self.matcher: PingapRegex | None = None
        if options.get("matcher"):
            try:
                self.matcher = compile_pingap_regex(str(options["matcher"]))
            except ValueError as exc:
                problems.add("matcher", str(exc))
        problems.check()

    def roll(self, ctx: RequestContext) -> int:
        """0-99 selects when below ``weight``; 255 never selects."""
        if not self.stickiness:
            return random.randrange(100)
        value = ctx.cookie(self.cookie) if self.cookie else ctx.request_header(self.header)
        if value is None:
            return 255
        if self.matcher is not None:
            return 0 if self.matcher.search(value) else 255
        return zlib.crc32(value.encode("latin-1", "replace")) % 100

    def handle_request(self, step: str, ctx: RequestContext) -> Continue | Respond:
        if step == self.step and self.roll(ctx) < self.weight:
            ctx.upstream_name = self.upstream
        return CONTINUE
