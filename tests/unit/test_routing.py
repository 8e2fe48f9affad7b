"""Tests for pingap.routing: location weights and order, host/path/condition matching, rewrite."""

from __future__ import annotations

import pytest

from pingap.config import load_config_text
from pingap.routing import (
    Condition,
    HostMatcher,
    LocationMatcher,
    PathMatcher,
    Rewrite,
    check_host,
    check_path,
    check_rewrite,
    compile_route,
    location_weight,
)
from pingap.runtime import build_runtime


class Facts:
    """A minimal ``RequestFacts`` for condition matching."""

    def __init__(self, headers: dict[str, str] | None = None, query: dict[str, str] | None = None,
                 cookies: dict[str, str] | None = None) -> None:
        self.headers = {k.lower(): v for k, v in (headers or {}).items()}
        self.query = query or {}
        self.cookies = cookies or {}

    def request_header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def query_param(self, name: str) -> str | None:
        return self.query.get(name)

    def cookie(self, name: str) -> str | None:
        return self.cookies.get(name)


def matcher(*routes: dict) -> LocationMatcher:
    """Routes given as ``compile_route`` keyword dicts (``name`` included), in config order."""
    return LocationMatcher.build(
        compile_route(r["name"], **{"path": None, "host": None, **{k: v for k, v in r.items() if k != "name"}})
        for r in routes
    )


def matched_name(m: LocationMatcher, host: str, path: str, facts: Facts | None = None) -> str | None:
    found = m.match(host, path, facts)
    return None if found is None else found[0].name


# --- weights ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "host", "weight"),
    [
        ("=/api", None, 1029),
        ("/api", None, 516),
        ("~/api", None, 261),
        ("/", None, 0),
        ("", None, 0),
        (None, None, 0),
        (None, "github.com", 128),
        (None, "~github.com", 11),
        ("/api", "*.example.com", 516 + 128),
        ("=/api", "~github.com", 1029 + 11),
        # a list with any ~ element counts the whole string's length
        (None, "a.com,~b", len("a.com,~b")),
        # path length is capped at 64
        ("=/" + "a" * 100, None, 1024 + 64),
        ("/" + "a" * 63, None, 512 + 64),
        ("/" + "a" * 70, None, 512 + 64),
    ],
)
def test_location_weight_examples(path: str | None, host: str | None, weight: int) -> None:
    assert location_weight(path, host) == weight


def test_compile_route_uses_computed_weight_unless_explicit() -> None:
    assert compile_route("a", path="=/api", host=None).weight == 1029
    assert compile_route("a", path="=/api", host=None, weight=7).weight == 7
    assert compile_route("a", path="/", host=None, weight=0).weight == 0


def test_routes_sorted_by_descending_weight() -> None:
    m = matcher(
        {"name": "root", "path": "/"},
        {"name": "regex", "path": "~/api"},
        {"name": "prefix", "path": "/api"},
        {"name": "exact", "path": "=/api"},
    )
    assert [r.name for r in m.routes] == ["exact", "prefix", "regex", "root"]
    assert matched_name(m, "h", "/api") == "exact"
    assert matched_name(m, "h", "/api/x") == "prefix"
    assert matched_name(m, "h", "/v1/api") == "regex"
    assert matched_name(m, "h", "/other") == "root"


def test_ties_keep_config_order() -> None:
    m = matcher(
        {"name": "second", "path": "/b"},
        {"name": "first", "path": "/a"},
        {"name": "third", "path": "/c"},
    )
    assert [r.name for r in m.routes] == ["second", "first", "third"]
    both = matcher({"name": "one", "path": "/x"}, {"name": "two", "path": "/x"})
    assert matched_name(both, "h", "/x") == "one"
    both = matcher({"name": "two", "path": "/x"}, {"name": "one", "path": "/x"})
    assert matched_name(both, "h", "/x") == "two"


def test_explicit_weight_wins() -> None:
    m = matcher(
        {"name": "exact", "path": "=/api"},
        {"name": "catchall", "path": "/", "weight": 2000},
    )
    assert matched_name(m, "h", "/api") == "catchall"
    m = matcher(
        {"name": "low", "path": "=/api", "weight": 1},
        {"name": "any", "path": None},
    )
    # "any" computes 0 < 1
    assert matched_name(m, "h", "/api") == "low"


def test_server_location_list_order_breaks_ties_in_runtime() -> None:
    # Both locations weigh the same; the *server's* list order decides, not the
    # order of the [locations.*] tables.
    config = load_config_text("""
[servers.web]
addr = "127.0.0.1:8080"
locations = ["b", "a"]

[locations.a]
upstream = "up"
path = "/x"

[locations.b]
upstream = "up"
path = "/y"

[upstreams.up]
addrs = ["127.0.0.1:9000"]
""")
    runtime = build_runtime(config)
    assert [r.name for r in runtime.servers["web"].matcher.routes] == ["b", "a"]


# --- paths -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "path", "matches"),
    [
        ("=/api", "/api", True),
        ("=/api", "/api/", False),
        ("=/api", "/apix", False),
        ("= /api", "/api", True),  # text after '=' is trimmed
        ("/api", "/api", True),
        ("/api", "/apix", True),  # plain string prefix
        ("/api", "/api/v1", True),
        ("/api", "/ap", False),
        ("/api", "/v1/api", False),
        ("~/api", "/v1/api/x", True),  # unanchored search
        ("~^/api$", "/api", True),
        ("~^/api$", "/api/x", False),
        ("", "/anything", True),
        (None, "/anything", True),
        ("~\\.(png|jpg)$", "/a/b.png", True),
        ("~\\.(png|jpg)$", "/a/b.gif", False),
    ],
)
def test_path_matching(spec: str | None, path: str, matches: bool) -> None:
    assert (PathMatcher.parse(spec).match(path) is not None) is matches


def test_path_is_matched_raw_not_decoded() -> None:
    assert PathMatcher.parse("=/a%20b").match("/a%20b") == {}
    assert PathMatcher.parse("=/a b").match("/a%20b") is None


def test_path_regex_named_groups_are_captured() -> None:
    m = PathMatcher.parse("~^/users/(?<user>[^/]+)/(?P<rest>.*)$")
    assert m.match("/users/bob/x/y") == {"user": "bob", "rest": "x/y"}
    assert m.group_names == {"user", "rest"}


def test_unmatched_optional_group_is_not_captured() -> None:
    m = PathMatcher.parse("~^/a(?<opt>/b)?$")
    assert m.match("/a") == {}
    assert m.match("/a/b") == {"opt": "/b"}


# --- hosts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "host", "matches"),
    [
        ("example.com", "example.com", True),
        ("example.com", "EXAMPLE.Com", True),
        ("Example.COM", "example.com", True),
        ("example.com", "www.example.com", False),
        ("example.com", "example.com.evil", False),
        ("*.example.com", "www.example.com", True),
        ("*.example.com", "a.b.example.com", True),
        ("*.example.com", "WWW.Example.COM", True),
        ("*.example.com", "example.com", False),  # not the apex
        ("*.example.com", "evil-example.com", False),  # boundary checked
        ("*.example.com", "example.com.evil", False),
        ("*.example.com", ".example.com", False),
        ("~^api\\.", "api.example.com", True),
        ("~^api\\.", "www.api.com", False),
        ("a.com, b.com", "b.com", True),
        ("a.com,b.com", "c.com", False),
        ("a.com, *.b.com, ~^c[0-9]\\.", "x.b.com", True),
        ("a.com, *.b.com, ~^c[0-9]\\.", "c1.org", True),
        ("a.com, *.b.com, ~^c[0-9]\\.", "b.com", False),
        ("", "anything", True),
        (None, "", True),
    ],
)
def test_host_matching(spec: str | None, host: str, matches: bool) -> None:
    assert (HostMatcher.parse(spec).match(host) is not None) is matches


def test_host_regex_named_captures() -> None:
    m = HostMatcher.parse("a.com, ~^(?<tenant>[a-z]+)\\.(?<zone>[a-z]+)\\.example\\.com$")
    assert m.match("acme.eu.example.com") == {"tenant": "acme", "zone": "eu"}
    assert m.match("a.com") == {}
    assert m.group_names == {"tenant", "zone"}


def test_host_and_path_captures_are_merged() -> None:
    m = matcher({"name": "lo", "host": "~^(?<tenant>[a-z]+)\\.example\\.com$",
                 "path": "~^/v(?<version>[0-9])/"})
    found = m.match("acme.example.com", "/v2/users")
    assert found is not None
    assert found[1] == {"tenant": "acme", "version": "2"}
    assert m.match("acme.example.org", "/v2/users") is None


def test_first_matching_route_by_host_and_path() -> None:
    m = matcher(
        {"name": "api-host", "host": "api.example.com", "path": "/"},
        {"name": "wild", "host": "*.example.com"},
        {"name": "fallback"},
    )
    assert matched_name(m, "api.example.com", "/x") == "api-host"
    assert matched_name(m, "www.example.com", "/x") == "wild"
    assert matched_name(m, "example.com", "/x") == "fallback"
    assert matched_name(m, "evil-example.com", "/x") == "fallback"


def test_no_route_matches() -> None:
    m = matcher({"name": "only", "host": "a.com", "path": "/api"})
    assert m.match("a.com", "/web") is None
    assert m.match("b.com", "/api") is None
    assert LocationMatcher.build([]).match("a.com", "/") is None


# --- conditions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "entries", "facts", "matches"),
    [
        ("match_headers", ["X-Env"], Facts(headers={"x-env": "prod"}), True),
        ("match_headers", ["X-Env"], Facts(), False),
        ("match_headers", ["x-env:prod"], Facts(headers={"X-Env": "prod"}), True),
        ("match_headers", ["x-env:prod"], Facts(headers={"X-Env": "dev"}), False),
        ("match_headers", ["x-env: prod"], Facts(headers={"X-Env": "prod"}), True),
        ("match_headers", ["X-A", "X-B:1"], Facts(headers={"X-A": "", "X-B": "1"}), True),
        ("match_headers", ["X-A", "X-B:1"], Facts(headers={"X-B": "1"}), False),  # AND
        ("match_query", ["debug"], Facts(query={"debug": ""}), True),
        ("match_query", ["debug"], Facts(query={}), False),
        ("match_query", ["v:2"], Facts(query={"v": "2"}), True),
        ("match_query", ["v:2"], Facts(query={"v": "3"}), False),
        ("match_query", ["q:a%20b"], Facts(query={"q": "a%20b"}), True),  # raw value
        ("match_cookies", ["sid"], Facts(cookies={"sid": "x"}), True),
        ("match_cookies", ["sid"], Facts(cookies={"other": "x"}), False),
        ("match_cookies", ["beta:1"], Facts(cookies={"beta": "1"}), True),
        ("match_cookies", ["beta:1"], Facts(cookies={"beta": "0"}), False),
        ("match_headers", ["X-Url:http://a"], Facts(headers={"X-Url": "http://a"}), True),
    ],
)
def test_conditions(kind: str, entries: list[str], facts: Facts, matches: bool) -> None:
    m = matcher({"name": "cond", "path": "/", kind: entries}, {"name": "other"})
    assert matched_name(m, "h", "/x", facts) == ("cond" if matches else "other")


def test_conditions_without_facts_do_not_match() -> None:
    m = matcher({"name": "cond", "match_headers": ["X-A"]})
    assert m.match("h", "/") is None


def test_condition_parse() -> None:
    assert Condition.parse("header", "X-A") == Condition("header", "X-A", None)
    assert Condition.parse("header", "X-A:1:2") == Condition("header", "X-A", "1:2")
    assert Condition.parse("query", "a:") == Condition("query", "a", "")
    with pytest.raises(ValueError, match="empty name"):
        Condition.parse("cookie", ":v")


# --- rewrite ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "path", "variables", "expected"),
    [
        ("^/api/(?<path>.+)$ /$1", "/api/users/1", {}, "/users/1"),
        ("^/api/(?<path>.+)$ /${path}", "/api/users/1", {}, "/users/1"),
        ("^/api/(?<path>.+)$ /$path", "/api/users/1", {}, "/users/1"),
        ("^/api/(.+)$ /v2/${1}", "/api/x", {}, "/v2/x"),
        ("^/x$ /a$$b", "/x", {}, "/a$b"),  # $$ is a literal $
        ("^/x$ /price$", "/x", {}, "/price$"),  # a lone trailing $ is literal
        ("^/x(.*)$ /y${1}z", "/x12", {}, "/y12z"),
        ("^/x(.*)$ /y$1z", "/x12", {}, "/y"),  # like Rust: $1z names group "1z" (empty)
        ("^/(.*)$ /$0", "/a", {}, "//a"),
        ("^/(.*)$ /$9", "/a", {}, "/"),  # unknown group index is empty
        ("a b", "/a/a", {}, "/b/a"),  # only the first match is replaced
        ("/ /", "/a/b/c", {}, "/a/b/c"),
        ("o 0", "/foo/boo", {}, "/f0o/boo"),
        ("^/nomatch /y", "/x", {}, "/x"),  # no match: unchanged
        # captured host/path variables in the replacement
        ("^/(.*)$ /${tenant}/$1", "/x", {"tenant": "acme"}, "/acme/x"),
        ("^/(.*)$ /$tenant/$1", "/x", {"tenant": "acme"}, "/acme/x"),
        ("^/(.*)$ /$missing/$1", "/x", {}, "//x"),
        # the rewrite's own group wins over a variable of the same name
        ("^/(?<t>[a-z]+)$ /${t}", "/own", {"t": "var"}, "/own"),
    ],
)
def test_rewrite_apply(rule: str, path: str, variables: dict[str, str], expected: str) -> None:
    assert Rewrite.parse(rule).apply(path, variables)[0] == expected


def test_rewrite_returns_its_named_groups() -> None:
    new, groups = Rewrite.parse("^/users/(?<upstream>.*?)/(.*)$ /$2").apply("/users/rest/me", {})
    assert new == "/me"
    assert groups == {"upstream": "rest"}
    assert Rewrite.parse("^/users/(?<upstream>.*?)/(.*)$ /$2").apply("/other", {}) == ("/other", {})


def test_rewrite_one_token_with_dollar_replaces_whole_path() -> None:
    rewrite = Rewrite.parse("/new/${rest}")
    assert rewrite.regex.pattern == ".*"
    assert rewrite.apply("/old/x/y", {"rest": "x/y"})[0] == "/new/x/y"
    assert Rewrite.parse("/static$").apply("/anything/here", {})[0] == "/static$"


def test_rewrite_one_token_without_dollar_deletes_the_match() -> None:
    # pingap: a single token without '$' is the pattern with an empty replacement
    assert Rewrite.parse("^/prefix").apply("/prefix/x", {})[0] == "/x"


def test_rewrite_references() -> None:
    rewrite = Rewrite.parse("^/(?<a>x)/(.*)$ /${a}/$2/$tenant$$")
    assert rewrite.references() == {"a", "2", "tenant"}
    assert rewrite.group_names == {"a"}


def test_rewrite_with_host_capture_end_to_end() -> None:
    m = matcher({"name": "lo", "host": "~^(?<tenant>[a-z]+)\\.example\\.com$",
                 "rewrite": "^/(.*)$ /tenants/${tenant}/$1"})
    found = m.match("acme.example.com", "/x/y")
    assert found is not None
    route, captures = found
    assert route.rewrite is not None
    assert route.rewrite.apply("/x/y", captures)[0] == "/tenants/acme/x/y"
    assert route.capture_names == {"tenant"}


# --- validators ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("check", "value", "fragment"),
    [
        (check_path, "~(", "invalid path regex"),
        (check_path, "~[a-", "invalid path regex"),
        (check_host, "*example.com", "invalid wildcard host"),
        (check_host, "a.com, ~([", "invalid host regex"),
        (check_rewrite, "a b c", "invalid rewrite"),
        (check_rewrite, "( /x", "invalid rewrite regex"),
    ],
)
def test_validators_report_bad_input(check, value: str, fragment: str) -> None:
    message = check(value)
    assert message is not None
    assert fragment in message


@pytest.mark.parametrize(
    ("check", "value"),
    [
        (check_path, "/ok"),
        (check_path, "=/ok"),
        (check_path, "~^/(?<name>[a-z]+)$"),
        (check_path, ""),
        (check_host, "a.com, *.b.com, ~^(?<x>c)"),
        (check_host, ""),
        (check_rewrite, "^/a/(.*)$ /b/$1"),
        (check_rewrite, "/new$1"),
    ],
)
def test_validators_accept_good_input(check, value: str) -> None:
    assert check(value) is None


def test_compile_route_raises_on_bad_syntax() -> None:
    with pytest.raises(ValueError):
        compile_route("x", path="~(", host=None)
    with pytest.raises(ValueError):
        compile_route("x", path=None, host="*bad")
    with pytest.raises(ValueError):
        compile_route("x", path=None, host=None, rewrite="a b c")
    with pytest.raises(ValueError):
        compile_route("x", path=None, host=None, match_query=[":v"])
