"""Routing of a pingap conf/ directory: weight order, host and path forms, rewrite."""

from __future__ import annotations

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
