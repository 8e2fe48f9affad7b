"""The ``admin`` plugin (pingap's): serve the admin API under ``path``.

Options as pingap: ``path`` (prefix, default ``/``), ``authorizations`` (base64
``user:pass``), ``max_age`` (how long a login token lasts, default ``2d``),
``ip_fail_limit`` (failed logins per IP before it is refused, default 10; counted for the
whole host in the worker's counter store). The plugin
only decides that a request is the admin's; the worker's admin service answers it
(``workers/admin.py``), because reading a body and asking the master are I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pingap.actions import CONTINUE, Continue, Respond
from pingap.admin.api import AdminCall
from pingap.admin.auth import AdminAuth
from pingap.context import RequestContext
from pingap.plugins import OptionProblems, Plugin, Services, register, str_list
from pingap.units import parse_duration

DEFAULT_MAX_AGE = 2 * 24 * 3600.0


@register
class Admin(Plugin):
    category = "admin"
    steps = ("request",)

    def __init__(self, name: str, options: Mapping[str, Any], step: str | None = None) -> None:
        super().__init__(name, options, step)
        problems = OptionProblems()
        path = str(options.get("path") or "/")
        if not path.startswith("/"):
            problems.add("path", "must start with '/'")
        self.prefix = path.rstrip("/") if len(path) > 1 else "/"
        max_age = DEFAULT_MAX_AGE
        if options.get("max_age"):
            try:
                max_age = parse_duration(options["max_age"])
            except (TypeError, ValueError) as exc:
                problems.add("max_age", str(exc))
        problems.check()
        self.auth = AdminAuth(str_list(options, "authorizations"), max_age,
                              int(options.get("ip_fail_limit") or 0), name)

    def bind(self, services: Services) -> None:
        if services.counters is None:
            raise ValueError("the admin plugin needs the worker's counter store")
        self.auth.counters = services.counters

    def handle_request(self, step: str, ctx: RequestContext) -> Continue | Respond:
        path = ctx.path
        if self.prefix != "/" and path != self.prefix and \
                not path.startswith(self.prefix + "/"):
            return CONTINUE
        return AdminCall(status=503, headers=[(b"Content-Type", b"text/plain")],
                         body=b"the admin is served over HTTP/1.1 only\n",
                         prefix=self.prefix, auth=self.auth)
