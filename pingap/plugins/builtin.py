"""Plugins that need no I/O: ``ping`` and ``mock``."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from pingap.actions import CONTINUE, Continue, Respond
from pingap.context import RequestContext
from pingap.plugins import Plugin, plugin_response, register
from pingap.state import StateFull
from pingap.units import parse_duration
from pingap.variables import BAD_VALUE as _BAD_VALUE
from pingap.variables import TOKEN as _TOKEN

log = logging.getLogger("pingap.plugins")


@register
class Ping(Plugin):
    """``path`` (exact, any method) answers 200 ``pong``."""

    category = "ping"
    steps = ("request",)
    own_step_only = True

    def __init__(self, name: str, options: Mapping[str, Any], step: str | None = None) -> None:
        super().__init__(name, options, step)
        self.path = str(options.get("path", ""))
        self.response = plugin_response(200, b"pong")

    def handle_request(self, step: str, ctx: RequestContext) -> Continue | Respond:
        if step == self.step and self.path and ctx.path == self.path:
            return self.response
        return CONTINUE


@register
class Mock(Plugin):
    """A canned response: ``path`` (exact, empty = all), ``status``, ``headers``, ``data``."""

    category = "mock"
    steps = ("request", "proxy_upstream")
    own_step_only = True

    def __init__(self, name: str, options: Mapping[str, Any], step: str | None = None) -> None:
        super().__init__(name, options, step)
        self.path = str(options.get("path", ""))
        status = options.get("status", 200)
        if not isinstance(status, int) or not 200 <= status <= 999:
            raise ValueError(f"status must be a final status code (200-999), got {status!r}")
        headers = []
        for item in options.get("headers", ()) or ():
            key, sep, value = str(item).partition(":")
            if not sep or not _TOKEN.match(key.strip()):
                raise ValueError(f"invalid header {item!r}: expected 'Name: value'")
            if _BAD_VALUE.search(value):
                raise ValueError(f"invalid header {item!r}: control characters in the value")
            headers.append((key.strip().encode("latin-1"), value.strip().encode("latin-1")))
        body = str(options.get("data", "")).encode("utf-8")
        delay = options.get("delay")
        response = plugin_response(status, body, headers=headers)
        self.response = Respond(status=response.status, headers=response.headers,
                                body=response.body,
                                delay=parse_duration(delay) if delay else None)

    def handle_request(self, step: str, ctx: RequestContext) -> Continue | Respond:
        if step == self.step and (not self.path or ctx.path == self.path):
            return self.response
        return CONTINUE


@register
class Limit(Plugin):
    """Rate (sliding window over ``interval``) or in-flight limit per key, host- or
    fleet-wide through the worker's counter store.

    pingap blends the previous and current windows with a fixed ``weight``, which lets a
    window admit up to twice the rate and the next one nothing; we weight the previous
    window by the share of it still inside the sliding interval, which holds the
    configured rate. ``weight`` is accepted and ignored (documented)."""

    category = "limit"
    steps = ("request", "proxy_upstream")
    own_step_only = True

    def __init__(self, name: str, options: Mapping[str, Any], step: str | None = None) -> None:
        super().__init__(name, options, step)
        self.inflight = str(options.get("type", "rate")).lower() == "inflight"
        self.tag = str(options.get("tag", "ip")).lower()
        self.key = str(options.get("key", ""))
        if self.tag in ("header", "cookie", "query") and not self.key:
            raise ValueError(f"a limit with tag = {self.tag!r} needs `key`")
        max_ = options.get("max", 0)
        if not isinstance(max_, int) or max_ <= 0:
            raise ValueError(f"`max` must be a positive integer, got {max_!r}")
        self.max = max_
        self.interval = max(parse_duration(options.get("interval", "10s")), 0.001)
        self.counters: Any = None

    def bind(self, services: Any) -> None:
        if services.counters is None:
            raise ValueError("the limit plugin needs the worker's counter store")
        self.counters = services.counters

    def _value(self, ctx: RequestContext) -> str | None:
        if self.tag == "header":
            return ctx.request_header(self.key)
        if self.tag == "cookie":
            return ctx.cookie(self.key)
        if self.tag == "query":
            return ctx.query_param(self.key)
        return ctx.client_ip

    def handle_request(self, step: str, ctx: RequestContext) -> Continue | Respond:
        if step != self.step:
            return CONTINUE
        value = self._value(ctx)
        if not value:
            return CONTINUE  # as pingap: no key, no limit
        name = f"limit|{self.name}|{value}"
        try:
            return self._check(ctx, name, value)
        except StateFull:
            # every slot of the host's counter table is live: admit rather than fail
            log.error("limit %s: the shared counter table is full; request admitted",
                      self.name)
            return CONTINUE

    def _check(self, ctx: RequestContext, name: str, value: str) -> Continue | Respond:
        if self.inflight:
            if self.counters.inflight_acquire(name, self.max):
                counters = self.counters
                ctx.on_finish(lambda: counters.inflight_release(name))
                return CONTINUE
        elif self.counters.rate_acquire(name, self.interval, self.max):
            return CONTINUE
        return plugin_response(429, f"Plugin limit, exceed limit {value}/{self.max}".encode())


@register
class Stats(Plugin):
    """``path`` (exact, any method) answers the worker's stats as JSON."""

    category = "stats"
    steps = ("request", "proxy_upstream")
    own_step_only = True

    def __init__(self, name: str, options: Mapping[str, Any], step: str | None = None) -> None:
        super().__init__(name, options, step)
        self.path = str(options.get("path", ""))
        self.stats: Any = None

    def bind(self, services: Any) -> None:
        self.stats = services.stats

    def handle_request(self, step: str, ctx: RequestContext) -> Continue | Respond:
        if step != self.step or not self.path or ctx.path != self.path or self.stats is None:
            return CONTINUE
        body = json.dumps(self.stats(ctx), sort_keys=True).encode()
        return plugin_response(200, body, b"application/json")
