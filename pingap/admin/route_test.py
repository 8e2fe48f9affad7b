"""The admin's route tester: which location of a server would serve a request, with its
rewrite and upstream, and why every other location did not (pingap has no such tool).

It walks the server's locations in match order exactly as ``LocationMatcher.match``
does, asking the same matchers, and records a reason for each one."""

from __future__ import annotations

from collections.abc import Mapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pingap.routing import LocationMatcher, _conditions_hold


class _Facts:
    def __init__(self, headers: Mapping[str, str], query: str) -> None:
        self.headers = {k.lower(): v for k, v in headers.items()}
        self.query = dict(parse_qsl(query, keep_blank_values=True))
        jar: SimpleCookie = SimpleCookie()
        jar.load(self.headers.get("cookie", ""))
        self.cookies = {k: m.value for k, m in jar.items()}

    def request_header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def query_param(self, name: str) -> str | None:
        return self.query.get(name)

    def cookie(self, name: str) -> str | None:
        return self.cookies.get(name)


def explain(matcher: LocationMatcher, url: str, headers: Mapping[str, str]) -> dict[str, Any]:
    """``{"location", "upstream", "path", "steps": [{"location", "weight", "result"}]}``."""
    parts = urlsplit(url if "://" in url else f"http://placeholder{url}")
    host = (headers.get("host") or headers.get("Host") or parts.hostname or "").split(":")[0]
    path = parts.path or "/"
    facts = _Facts(headers, parts.query)
    steps: list[dict[str, Any]] = []
    chosen: dict[str, Any] = {"location": None, "upstream": None, "path": path}
    for route in matcher.routes:
        step: dict[str, Any] = {"location": route.name, "weight": route.weight}
        steps.append(step)
        if chosen["location"] is not None:
            step["result"] = "not tried: a location before it matched"
            continue
        path_caps = route.path.match(path)
        if path_caps is None:
            step["result"] = f"path '{path}' does not match"
            continue
        host_caps = route.host.match(host)
        if host_caps is None:
            step["result"] = f"host '{host}' does not match"
            continue
        if route.conditions and not _conditions_hold(route.conditions, facts):
            wanted = ", ".join(f"{c.source} {c.name}" + (f"={c.value}" if c.value else "")
                               for c in route.conditions)
            step["result"] = f"conditions not met (needs {wanted})"
            continue
        captures = {**path_caps, **host_caps}
        rewritten = route.rewrite.apply(path, captures)[0] if route.rewrite else path
        step["result"] = "matches: serves the request"
        chosen = {"location": route.name, "path": rewritten, "captures": captures,
                  "upstream": getattr(route.payload, "upstream", None)}
    return {**chosen, "host": host, "steps": steps}
