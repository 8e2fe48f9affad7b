"""Plugins that need no I/O: ``ping`` and ``mock``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pingap.actions import CONTINUE, Continue, Respond
from pingap.context import RequestContext
from pingap.plugins import Plugin, plugin_response, register
from pingap.units import parse_duration
from pingap.variables import BAD_VALUE as _BAD_VALUE
from pingap.variables import TOKEN as _TOKEN


@register
class Ping(Plugin):
    """``path`` (exact, any method) answers 200 ``pong``."""

    category = "ping"
    steps = ("request",)

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
