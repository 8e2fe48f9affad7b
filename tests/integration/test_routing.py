"""Routing of a pingap conf/ directory: weight order, host and path forms, rewrite."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.client import request
from tests.support.proc import PingapProcess, free_port


def write_conf_dir(root: Path, port: int, addrs: dict[str, str]) -> Path:
    conf = root / "conf"
    conf.mkdir()
    (conf / "basic.toml").write_text('[basic]\nname = "routing"\ngrace_period = "1s"\n')
    (conf / "servers.toml").write_text(f"""
[servers.web]
addr = "127.0.0.1:{port}"
locations = ["root", "prefix", "exact", "regex", "hostre", "wild", "pinned"]
""")
    (conf / "upstreams.toml").write_text("".join(
        f'[upstreams.{name}]\naddrs = ["{addr}"]\n\n' for name, addr in addrs.items()))
    (conf / "locations.toml").write_text(r"""
[locations.root]
upstream = "root"
path = "/"

[locations.prefix]
upstream = "prefix"
path = "/api"

[locations.exact]
upstream = "exact"
path = "=/api/users"

[locations.regex]
upstream = "regex"
path = "~^/items/(?<id>[0-9]+)$"
rewrite = "^/items/(?<num>.+)$ /v2/items/$num"

[locations.hostre]
upstream = "hostre"
host = "~^(?<tenant>[a-z]+)\\.example\\.com$"
rewrite = "^/(.*)$ /${tenant}/$1"

[locations.wild]
upstream = "wild"
host = "*.wild.test, other.test"
path = "/w"

[locations.pinned]
upstream = "pinned"
path = "/p"
weight = 2000
""")
    return conf


def test_conf_directory_routes_by_weight(tmp_path: Path, backends) -> None:
    names = ["root", "prefix", "exact", "regex", "hostre", "wild", "pinned"]
    started = {n: backends(n) for n in names}
    port = free_port()
    conf = write_conf_dir(tmp_path, port, {n: b.addr for n, b in started.items()})
    proxy = PingapProcess(conf, port, tmp_path)
    try:
        cases = [
            ("/api/users", "any.host", "exact", "/api/users"),
            ("/api/users2", "any.host", "prefix", "/api/users2"),
            ("/apix", "any.host", "prefix", "/apix"),            # plain prefix, no boundary
            ("/items/42", "acme.example.com", "regex", "/v2/items/42"),  # 256+ beats host
            ("/items/x", "acme.example.com", "hostre", "/acme/items/x"),
            ("/other", "acme.example.com", "hostre", "/acme/other"),
            ("/other", "ACME.example.org", "root", "/other"),
            ("/w/1", "a.wild.test", "wild", "/w/1"),
            ("/w/1", "wild.test", "root", "/w/1"),                # apex is not a sub-domain
            ("/w/1", "evil-wild.test", "root", "/w/1"),
            ("/w", "other.test:8080", "wild", "/w"),             # port ignored for matching
            ("/p/api/users", "x", "pinned", "/p/api/users"),
            ("/api/users?q=1", "any.host", "prefix", "/api/users?q=1"),  # '=' ignores query? no
        ]
        for path, host, expected, target in cases[:-1]:
            reply = request(port, path=path, headers={"Host": host})
            assert reply.status == 200, (path, host, reply.body)
            info = reply.json()
            assert (info["backend"], info["target"]) == (expected, target), (path, host)
        # the exact match compares the path only; the query is kept on the way through
        reply = request(port, path="/api/users?q=1", headers={"Host": "h"})
        assert (reply.json()["backend"], reply.json()["target"]) == ("exact", "/api/users?q=1")
    finally:
        proxy.stop()


def test_no_location_renders_the_error_template(tmp_path: Path, backends, pingap) -> None:
    backend = backends()
    port = free_port()
    pingap(f"""
[basic]
error_template = '{{"error": "{{{{content}}}}", "type": "{{{{error_type}}}}"}}'
[upstreams.u]
addrs = ["{backend.addr}"]
[locations.only]
upstream = "u"
path = "/only"
[servers.s]
addr = "127.0.0.1:{port}"
locations = ["only"]
""", port=port)
    reply = request(port, path="/elsewhere", headers={"Host": "h.test"})
    assert reply.status == 404
    assert reply.header("Content-Type").startswith("application/json")
    assert reply.header("X-Pingap-EType")
    assert reply.json()["error"] == "No matching location, host:h.test path:/elsewhere"
    assert backend.requests() == []


def test_rust_regex_syntax_routes(tmp_path: Path, backends, pingap) -> None:
    """Unicode and POSIX classes, \\z and both named-group spellings route as in pingap
    (Rust's regex crate); Python's re would reject \\p{L} and never match [[:digit:]]."""
    names = ["root", "digits", "letters", "tenant"]
    started = {n: backends(n) for n in names}
    port = free_port()
    upstreams = "".join(f'[upstreams.{n}]\naddrs = ["{b.addr}"]\n' for n, b in started.items())
    pingap(upstreams + rf"""
[locations.root]
upstream = "root"
[locations.digits]
upstream = "digits"
path = '~^/n/[[:digit:]]+\z'
[locations.letters]
upstream = "letters"
path = '~^/w/\p{{L}}+$'
[locations.tenant]
upstream = "tenant"
host = '~^(?<tenant>\p{{Ll}}+)\.example\.com\z'
rewrite = '^/(?P<rest>[[:alnum:]]*)\z /${{tenant}}/$rest'
[servers.s]
addr = "127.0.0.1:{port}"
locations = ["root", "digits", "letters", "tenant"]
""", port=port)
    cases = [
        ("/n/123", "h.test", "digits", "/n/123"),
        ("/n/12a", "h.test", "root", "/n/12a"),
        ("/n/123/", "h.test", "root", "/n/123/"),   # \z: end of text
        ("/w/abc", "h.test", "letters", "/w/abc"),
        ("/w/ab1", "h.test", "root", "/w/ab1"),
        ("/x1", "acme.example.com", "tenant", "/acme/x1"),
        ("/x1", "Acme.example.com", "root", "/x1"),      # \p{Ll}: lower case only
    ]
    for path, host, expected, target in cases:
        reply = request(port, path=path, headers={"Host": host})
        assert reply.status == 200, (path, host, reply.body)
        info = reply.json()
        assert (info["backend"], info["target"]) == (expected, target), (path, host)


def test_regex_rust_refuses_is_a_config_error(tmp_path: Path) -> None:
    conf = tmp_path / "pingap.toml"
    conf.write_text('[upstreams.u]\naddrs = ["127.0.0.1:5000"]\n'
                    "[locations.l]\nupstream = \"u\"\npath = '~^/a(?=b)'\n"
                    "[locations.m]\nupstream = \"u\"\nhost = '~(a)\\1'\n"
                    '[servers.s]\naddr = "127.0.0.1:16003"\nlocations = ["l", "m"]\n')
    result = subprocess.run(["pingap", "-t", "-c", str(conf)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1
    assert "locations.l.path" in result.stderr and "look-around" in result.stderr
    assert "locations.m.host" in result.stderr and "backreference" in result.stderr
