"""Location matching: pingap's host/path syntax, weight order, rewrite and captures.

A server's locations are compiled once into ``Route`` objects sorted by pingap's weight
(explicit ``weight`` wins, ties keep the configured order); ``LocationMatcher.match``
returns the first route whose host, path and extra conditions all hold, together with
the variables its named regex groups captured.

Regexes are pingap's (Rust ``regex`` crate syntax), compiled by ``pingap.regexes``.

Difference from pingap (documented in README): rewrite replacements may use captured
variables as ``$name``/``${name}`` (pingap substitutes the bare name text, which breaks
interpolation).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pingap.regexes import PingapRegex, compile_pingap_regex

Captures = dict[str, str]


def _error(fn: Callable[[str], object], value: str) -> str | None:
    try:
        fn(value)
    except ValueError as exc:
        return str(exc)
    return None


# --- path -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PathMatcher:
    """``=/exact``, ``~regex`` (unanchored search) or a plain prefix; empty matches all."""

    kind: str  # "any" | "exact" | "regex" | "prefix"
    value: str
    regex: PingapRegex | None = None

    @classmethod
    def parse(cls, path: str | None) -> PathMatcher:
        path = (path or "").strip()
        if not path:
            return cls("any", "")
        if path.startswith("="):
            return cls("exact", path[1:].strip())
        if path.startswith("~"):
            try:
                regex = compile_pingap_regex(path[1:].strip())
            except ValueError as exc:
                raise ValueError(f"invalid path regex: {exc}") from None
            return cls("regex", path[1:].strip(), regex)
        return cls("prefix", path)

    def match(self, path: str) -> Captures | None:
        kind = self.kind
        if kind == "prefix":
            return {} if path.startswith(self.value) else None
        if kind == "exact":
            return {} if path == self.value else None
        if kind == "regex":
            assert self.regex is not None
            found = self.regex.search(path)
            if found is None:
                return None
            return {k: v for k, v in found.groupdict().items() if v is not None}
        return {}

    @property
    def group_names(self) -> set[str]:
        return set(self.regex.groupindex) if self.regex else set()


def check_path(value: str) -> str | None:
    """Config validator: an error message when ``value`` is not a valid location path."""
    return _error(PathMatcher.parse, value)


# --- host -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostMatcher:
    """Comma list of ``exact.host``, ``*.suffix`` (not the apex) and ``~regex``."""

    exact: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()
    regexes: tuple[PingapRegex, ...] = ()
    any: bool = True

    @classmethod
    def parse(cls, host: str | None) -> HostMatcher:
        exact: set[str] = set()
        suffixes: list[str] = []
        regexes: list[PingapRegex] = []
        for item in (host or "").split(","):
            item = item.strip()
            if not item:
                continue
            if item.startswith("~"):
                try:
                    regexes.append(compile_pingap_regex(item[1:].strip()))
                except ValueError as exc:
                    raise ValueError(f"invalid host regex: {exc}") from None
            elif item.startswith("*."):
                suffixes.append(item[1:].lower())
            elif item.startswith("*"):
                raise ValueError(f"invalid wildcard host {item!r}: write it as '*.example.com'")
            else:
                exact.add(item.lower())
        return cls(frozenset(exact), tuple(suffixes), tuple(regexes),
                   not (exact or suffixes or regexes))

    def match(self, host: str) -> Captures | None:
        if self.any:
            return {}
        lowered = host.lower()
        if lowered in self.exact:
            return {}
        for suffix in self.suffixes:
            if lowered.endswith(suffix) and len(lowered) > len(suffix):
                return {}
        for regex in self.regexes:
            found = regex.search(host)
            if found is not None:
                return {k: v for k, v in found.groupdict().items() if v is not None}
        return None

    @property
    def group_names(self) -> set[str]:
        return {name for regex in self.regexes for name in regex.groupindex}


def check_host(value: str) -> str | None:
    """Config validator: an error message when ``value`` is not a valid location host."""
    return _error(HostMatcher.parse, value)


# --- weight -----------------------------------------------------------------------


def location_weight(path: str | None, host: str | None) -> int:
    """pingap's computed priority: exact > prefix > regex paths, longer first, hosts count."""
    weight = 0
    path = (path or "").strip()
    if len(path) > 1:
        if path.startswith("="):
            weight += 1024
        elif path.startswith("~"):
            weight += 256
        else:
            weight += 512
        weight += min(len(path), 64)
    host = (host or "").strip()
    if host:
        weight += len(host) if "~" in host else 128
    return weight


# --- rewrite ----------------------------------------------------------------------

_REPLACEMENT_REF = re.compile(r"\$(?:\$|\{([^}]*)\}|([A-Za-z0-9_]+))")


@dataclass(frozen=True, slots=True)
class Rewrite:
    """``"<regex> <replacement>"``: rewrites the first match in the path, query kept."""

    regex: PingapRegex
    parts: tuple[tuple[str, str], ...]  # ("lit", text) | ("group", name-or-index)

    @classmethod
    def parse(cls, value: str) -> Rewrite:
        tokens = [t for t in value.strip().split(" ") if t]
        if len(tokens) == 1 and "$" in tokens[0]:
            pattern, replacement = ".*", tokens[0]
        elif len(tokens) == 2:
            pattern, replacement = tokens
        elif len(tokens) == 1:
            pattern, replacement = tokens[0], ""
        else:
            raise ValueError(
                f"invalid rewrite {value!r}: expected '<regex> <replacement>'")
        try:
            regex = compile_pingap_regex(pattern)
        except ValueError as exc:
            raise ValueError(f"invalid rewrite regex: {exc}") from None
        parts: list[tuple[str, str]] = []
        pos = 0
        for ref in _REPLACEMENT_REF.finditer(replacement):
            if ref.start() > pos:
                parts.append(("lit", replacement[pos:ref.start()]))
            name = ref.group(1) if ref.group(1) is not None else ref.group(2)
            parts.append(("lit", "$") if name is None else ("group", name))
            pos = ref.end()
        if pos < len(replacement):
            parts.append(("lit", replacement[pos:]))
        return cls(regex, tuple(parts))

    @property
    def group_names(self) -> set[str]:
        return set(self.regex.groupindex)

    def references(self) -> set[str]:
        return {value for kind, value in self.parts if kind == "group"}

    def apply(self, path: str, variables: Captures) -> tuple[str, Captures]:
        """Rewritten path and the rewrite regex's named groups (unchanged path if no match).

        ``$1``/``${name}`` refer to the rewrite regex's groups first, then to variables
        captured by the location's host/path regexes; an unknown reference is empty.
        """
        found = self.regex.search(path)
        if found is None:
            return path, {}
        groups = found.groupdict()
        out: list[str] = []
        for kind, value in self.parts:
            if kind == "lit":
                out.append(value)
            elif value.isdigit():
                index = int(value)
                out.append((found.group(index) or "") if index <= self.regex.groups else "")
            elif value in groups:
                out.append(groups[value] or "")
            else:
                out.append(variables.get(value, ""))
        new_path = path[:found.start()] + "".join(out) + path[found.end():]
        return new_path, {k: v for k, v in groups.items() if v is not None}


def check_rewrite(value: str) -> str | None:
    """Config validator: an error message when ``value`` is not a valid rewrite."""
    return _error(Rewrite.parse, value)


# --- conditions and routes ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Condition:
    """One ``match_headers``/``match_query``/``match_cookies`` entry: name[:value]."""

    source: str  # "header" | "query" | "cookie"
    name: str
    value: str | None

    @classmethod
    def parse(cls, source: str, text: str) -> Condition:
        name, sep, value = text.partition(":")
        name = name.strip()
        if not name:
            raise ValueError(f"invalid match_{source} entry {text!r}: empty name")
        return cls(source, name, value.strip() if sep else None)


@dataclass(frozen=True, slots=True)
class Route:
    """One location, compiled for matching."""

    name: str
    path: PathMatcher
    host: HostMatcher
    conditions: tuple[Condition, ...]
    weight: int
    rewrite: Rewrite | None = None
    payload: object = None  # the worker's per-location runtime object

    @property
    def capture_names(self) -> set[str]:
        names = self.path.group_names | self.host.group_names
        if self.rewrite is not None:
            names |= self.rewrite.group_names
        return names


class RequestFacts(Protocol):
    """What conditions may look at (``RequestContext`` provides these)."""

    def request_header(self, name: str) -> str | None: ...
    def query_param(self, name: str) -> str | None: ...
    def cookie(self, name: str) -> str | None: ...


def _conditions_hold(conditions: Sequence[Condition], facts: RequestFacts) -> bool:
    for cond in conditions:
        getter = (facts.request_header if cond.source == "header"
                  else facts.query_param if cond.source == "query" else facts.cookie)
        found = getter(cond.name)
        if found is None or (cond.value is not None and found != cond.value):
            return False
    return True


@dataclass(slots=True)
class LocationMatcher:
    """A server's routes in match order (descending weight, stable)."""

    routes: list[Route] = field(default_factory=list)

    @classmethod
    def build(cls, routes: Iterable[Route]) -> LocationMatcher:
        return cls(sorted(routes, key=lambda r: -r.weight))

    def match(self, host: str, path: str,
              facts: RequestFacts | None = None) -> tuple[Route, Captures] | None:
        for route in self.routes:
            path_caps = route.path.match(path)
            if path_caps is None:
                continue
            host_caps = route.host.match(host)
            if host_caps is None:
                continue
            if route.conditions and (facts is None
                                     or not _conditions_hold(route.conditions, facts)):
                continue
            if host_caps:  # as in pingap, a host capture wins over a same-named path one
                path_caps = {**path_caps, **host_caps}
            return route, path_caps
        return None


def compile_route(name: str, *, path: str | None, host: str | None,
                  weight: int | None = None, rewrite: str | None = None,
                  match_headers: Iterable[str] = (), match_query: Iterable[str] = (),
                  match_cookies: Iterable[str] = (), payload: object = None) -> Route:
    """Build a ``Route`` from a location's fields; raises ValueError on bad syntax."""
    conditions = tuple(
        [Condition.parse("header", t) for t in match_headers]
        + [Condition.parse("query", t) for t in match_query]
        + [Condition.parse("cookie", t) for t in match_cookies])
    return Route(
        name=name,
        path=PathMatcher.parse(path),
        host=HostMatcher.parse(host),
        conditions=conditions,
        weight=weight if weight is not None else location_weight(path, host),
        rewrite=Rewrite.parse(rewrite) if rewrite else None,
        payload=payload,
    )
