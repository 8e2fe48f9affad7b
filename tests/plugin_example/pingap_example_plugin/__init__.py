"""A worked example of an out-of-tree pingap plugin.

Install it next to pingap (``pip install ./tests/plugin_example``) and name its category
in a config::

    [plugins.stamp]
    category = "phase_stamp"
    step = "proxy_upstream"      # or "request" (the default) or "early_request"
    header = "X-Phase"           # plugin option, checked by the constructor

    [locations.api]
    plugins = ["stamp"]

At its step it appends ``<header>: <step>`` to the request sent upstream, and on the way
back it adds ``<header>-Seen: <steps it ran in>`` to the response — so a test can see
both that it loaded and in which phase it ran.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pingap.actions import CONTINUE, Continue, Respond
from pingap.context import RequestContext
from pingap.plugins import Plugin


class PhaseStamp(Plugin):
    category = "phase_stamp"
    steps = ("request", "early_request", "proxy_upstream")

    def __init__(self, name: str, options: Mapping[str, Any], step: str | None = None) -> None:
        super().__init__(name, options, step)
        unknown = set(options) - {"header"}
        if unknown:
            raise ValueError(f"unknown option(s): {', '.join(sorted(unknown))}")
        self.header = str(options.get("header", "X-Phase")).encode()

    def handle_request(self, step: str, ctx: RequestContext) -> Continue | Respond:
        if step == self.step:
            ctx.request_headers.append((self.header, step.encode()))
            ctx.variables[f"{self.name}.ran"] = step
        return CONTINUE

    def handle_response(self, ctx: RequestContext, status: int,
                        headers: list[tuple[bytes, bytes]]) -> None:
        ran = ctx.variables.get(f"{self.name}.ran", "none")
        headers.append((self.header + b"-Seen", ran.encode()))
