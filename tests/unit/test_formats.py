"""Tests for pingap.config.formats: pingap's HCL and KDL layouts read into the TOML
document they stand for, and loaded into the same model."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from pingap.config import ConfigError, config_as_toml, load_config
from pingap.config.formats import FormatError, hcl_document, kdl_document

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "pingap-examples"

# pingap's README config; conf/test.hcl and conf/test.kdl write the same, nested
README_TOML = """
[upstreams.api]
addrs = ["api.github.com:443"]
discovery = "dns"
sni = "api.github.com"

[plugins.staticServe]
category = "directory"
path = "~/Downloads"
step = "request"

[locations.github-api]
upstream = "api"
path = "/api"
proxy_set_headers = ["Host:api.github.com"]
rewrite = "^/api/(?<path>.+)$ /$1"

[locations.static]
plugins = ["staticServe"]

[servers.test]
addr = "127.0.0.1:6118"
locations = ["github-api", "static"]
"""


@pytest.mark.parametrize(("name", "reader"), [("test.hcl", hcl_document),
                                              ("test.kdl", kdl_document)])
def test_pingap_nested_samples_mean_the_readme_config(name: str, reader: object) -> None:
    document = reader((SAMPLES / "formats" / name).read_text())  # type: ignore[operator]
    assert document == tomllib.loads(README_TOML)


def test_hcl_flat_layout_and_value_types() -> None:
    document = hcl_document('''
basic {
  threads = 2
  grace_period = "1s"
  trusted_proxies = ["10.0.0.0/8"]
}
upstream "u" {
  addrs = ["127.0.0.1:5000", "127.0.0.1:5001 10"]
  verify_cert = false
}
location "l" {
  upstream = "u"
  path = "/api"
}
server "s" {
  addr = "127.0.0.1:6188"
  locations = ["l"]
}
storage "frag" {
  category = "config"
  value = <<EOT
read_timeout = "5s"
EOT
}
''')
    assert document == {
        "basic": {"threads": 2, "grace_period": "1s", "trusted_proxies": ["10.0.0.0/8"]},
        "upstreams": {"u": {"addrs": ["127.0.0.1:5000", "127.0.0.1:5001 10"],
                            "verify_cert": False}},
        "locations": {"l": {"upstream": "u", "path": "/api"}},
        "servers": {"s": {"addr": "127.0.0.1:6188", "locations": ["l"]}},
        "storages": {"frag": {"category": "config", "value": 'read_timeout = "5s"'}},
    }


def test_hcl_nested_explicit_upstream_wins_and_lists_merge() -> None:
    document = hcl_document('''
server "s" {
  addr = "127.0.0.1:1"
  locations = ["other"]
  location "l" {
    plugins = ["pingap:ping"]
    upstream "extra" { addrs = ["127.0.0.1:2"] }
    upstream "second" { addrs = ["127.0.0.1:3"] }
    plugin "p" { category = "mock" }
  }
  plugin "shared" { category = "ping" }
  certificate "c" { domains = "a.test" }
}
''')
    assert document["servers"]["s"]["locations"] == ["other", "l"]
    assert document["locations"]["l"] == {"upstream": "extra",  # the first nested one
                                          "plugins": ["pingap:ping", "p"]}
    assert set(document["upstreams"]) == {"extra", "second"}
    assert set(document["plugins"]) == {"p", "shared"}
    assert document["certificates"] == {"c": {"domains": "a.test"}}


def test_kdl_properties_lists_repeats_and_items() -> None:
    document = kdl_document('''
basic threads=2 {
    grace_period "1s"
}
upstream "u" sni="a.test" verify_cert=#false {
    addrs "127.0.0.1:1"
    addrs "127.0.0.1:2" "127.0.0.1:3"
}
location "l" upstream="u" plugins="p" {
    proxy_set_headers "X-A:1"
}
plugin "p" category="combined_auth" {
    authorizations {
        item app_id="a" secret="s" deviation=60
        item app_id="b" secret="t" deviation=60
    }
}
server "s" {
    addr "127.0.0.1:6188"
    location "l"
}
''')
    assert document == {
        "basic": {"threads": 2, "grace_period": "1s"},
        "upstreams": {"u": {"sni": "a.test", "verify_cert": False,
                            "addrs": ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]}},
        "locations": {"l": {"upstream": "u", "plugins": ["p"],
                            "proxy_set_headers": ["X-A:1"]}},
        "plugins": {"p": {"category": "combined_auth", "authorizations": [
            {"app_id": "a", "secret": "s", "deviation": 60},
            {"app_id": "b", "secret": "t", "deviation": 60}]}},
        "servers": {"s": {"addr": "127.0.0.1:6188", "locations": ["l"]}},
    }


def test_kdl_v1_booleans_and_inline_plugin_definition() -> None:
    document = kdl_document('''
server "s" {
    addr "127.0.0.1:1"
    enabled_h2 true
    location "l" {
        upstream "u"
        upstream "nested" { addrs "127.0.0.1:2"; }
        plugin "ping" category="ping" path="/ping"
    }
}
''')
    assert document["servers"]["s"] == {"addr": "127.0.0.1:1", "enabled_h2": True,
                                        "locations": ["l"]}
    assert document["locations"]["l"] == {"upstream": "u", "plugins": ["ping"]}
    assert document["plugins"] == {"ping": {"category": "ping", "path": "/ping"}}
    assert set(document["upstreams"]) == {"nested"}  # an explicit upstream wins


@pytest.mark.parametrize(
    ("reader", "text", "message"),
    [
        (hcl_document, 'service "s" {\n}\n', "unknown HCL block type 'service'"),
        (hcl_document, 'upstream {\n addrs = ["a:1"]\n}\n', "needs a name label"),
        (hcl_document, 'upstream "u" {\n}\nupstream "u" {\n}\n', "upstream 'u' is defined twice"),
        (hcl_document, 'server "s" {\n storage "x" {\n }\n}\n', "not allowed inside server 's'"),
        (hcl_document, 'server "s" {\n addr = \n}\n', "invalid HCL at line 2"),
        (kdl_document, 'service "s"\n', "unknown KDL node type 'service'"),
        (kdl_document, 'upstream {\n addrs "a:1"\n}\n', "needs a name"),
        (kdl_document, 'server "s" { location "a" { path "/"; }; }\nlocation "a" { }\n',
         "location 'a' is defined twice"),
        (kdl_document, 'server "s" {\n addr "x\n}\n', "invalid KDL (v1 or v2); read as KDL "
         "v1: line 2, column 7: Hit EOF while looking for the end of the string"),
    ],
)
def test_refused_layouts(reader: object, text: str, message: str) -> None:
    with pytest.raises(FormatError) as caught:
        reader(text)  # type: ignore[operator]
    assert message in str(caught.value)


def test_hcl_and_kdl_files_load_into_the_model(tmp_path: Path) -> None:
    hcl = tmp_path / "pingap.hcl"
    hcl.write_text('upstream "u" {\n addrs = ["127.0.0.1:5000"]\n}\n'
                   'server "s" {\n addr = "127.0.0.1:6188"\n'
                   ' location "l" {\n  upstream = "u"\n  path = "/"\n }\n}\n')
    config = load_config(str(hcl))
    assert config.servers["s"].locations == ("l",)
    assert config.locations["l"].upstream == "u"
    assert config.sources["locations.l"] == str(hcl)
    kdl = tmp_path / "conf"
    kdl.mkdir()
    (kdl / "a.kdl").write_text('upstream "u" { addrs "127.0.0.1:5000"; }\n')
    (kdl / "b.kdl").write_text('server "s" addr="127.0.0.1:6188" { location "l" { '
                               'upstream "u"; }; }\n')
    config = load_config(str(kdl))
    assert config.upstreams["u"].addrs == ("127.0.0.1:5000",)
    assert config.locations["l"].upstream == "u"


def test_a_format_error_names_the_file_and_other_files_are_still_checked(
        tmp_path: Path) -> None:
    (tmp_path / "a.hcl").write_text('server "s" {\n addr = \n}\n')
    (tmp_path / "b.hcl").write_text('upstream "u" {\n addrs = ["127.0.0.1:5000"]\n'
                                    ' algo = "least_conn"\n}\n')
    with pytest.raises(ConfigError) as caught:
        load_config(str(tmp_path))
    found = {(p.file, p.key) for p in caught.value.problems}
    assert found == {(str(tmp_path / "a.hcl"), "file"),
                     (str(tmp_path / "b.hcl"), "upstreams.u.algo")}


def test_toml_wins_over_hcl_and_kdl_in_a_directory(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('[upstreams.t]\naddrs = ["127.0.0.1:1"]\n')
    (tmp_path / "b.hcl").write_text('upstream "h" {\n addrs = ["127.0.0.1:2"]\n}\n')
    assert set(load_config(str(tmp_path)).upstreams) == {"t"}


def test_config_as_toml_round_trips(tmp_path: Path) -> None:
    text = config_as_toml(str(SAMPLES / "formats" / "test.hcl"))
    assert tomllib.loads(text) == tomllib.loads(README_TOML)
    target = tmp_path / "converted.toml"
    target.write_text(text)
    assert load_config(str(target)).locations["github-api"].upstream == "api"
