"""Heavy libraries load only where a configured feature needs them.

Every worker and the master import the plugin families, the config readers and the
storage code; PyJWT with cryptography, Pillow, python-hcl2 (lark), tomlkit and the rest
would add ~18 MB to each process if they came with those imports. Each check runs a
fresh interpreter (``sys.modules`` of this test process holds whatever other tests
loaded) and reads the top-level modules it ended up with.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pingap.runtime import load_runtime
from pingap.tls import dump_facts
from tests.support.h2_backend import make_certificates

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "etc" / "pingap.toml"

#: what no process may load before its config asks for it
HEAVY = frozenset({"PIL", "jwt", "cryptography", "maxminddb", "brotli", "zstandard",
                   "tomlkit", "etcd3gw", "hcl2", "lark", "kdl", "ckdl", "regex", "redis",
                   "acme", "josepy", "OpenSSL", "dns", "selenium"})


def run_python(code: str) -> str:
    """The output of ``code`` run by a fresh interpreter on this checkout."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def loaded_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``: each full name and
    each top-level package name."""
    output = run_python(textwrap.dedent(code) + "\nimport json as _j, sys as _s\n"
                        "print(_j.dumps(sorted(_s.modules)))\n")
    names = set(json.loads(output.splitlines()[-1]))
    return names | {name.partition(".")[0] for name in names}


def test_a_worker_on_the_example_config_loads_no_heavy_library() -> None:
    # what a worker does before it serves: patch, import its modules, compile the config
    found = loaded_after(f"""
        from gevent import monkey
        monkey.patch_all()
        import workers.worker
        from pingap.runtime import load_runtime
        load_runtime({str(EXAMPLE)!r})
    """)
    assert "workers" in found and "gevent" in found  # the imports did happen
    assert found & HEAVY == set()
    # stdlib modules with a cost of their own (html's entity table, decimal) that a
    # worker needs only for an error page, a plugin's HTTP request or config parsing
    assert found & {"html", "decimal", "http.client", "urllib.request"} == set()
    # nor h11 (only the "h11" HTTP/1 codec uses it) and psutil (the stats plugin, the
    # admin dashboard and the metrics' process lines load it when asked)
    assert found & {"h11", "psutil"} == set()


def test_the_master_on_the_example_config_loads_no_heavy_library() -> None:
    found = loaded_after(f"""
        import master.arbiter, master.cli, master.storage, master.quickstart
        from pingap.runtime import load_runtime
        load_runtime({str(EXAMPLE)!r})
    """)
    assert "master" in found
    # nor what only a sent webhook needs (psutil, urllib's http.client and ssl)
    assert found & (HEAVY | {"gevent", "psutil", "urllib.request", "http.client", "ssl"}) \
        == set()


FEATURES = {
    "jwt": ('category = "jwt"\nheader = "Authorization"\nsecret = "123123"',
            {"jwt", "cryptography"}),
    "image_optim": ('category = "image_optim"\noutput_types = "webp"', {"PIL"}),
    "compression": ('category = "compression"\ngzip_level = 6\nbr_level = 6\nzstd_level = 6',
                    {"brotli", "zstandard"}),
    "sub_filter": ('category = "sub_filter"\nfilters = ["subs_filter \'a+\' \'b\' g"]',
                   {"regex"}),
}


CONFIG = """
[upstreams.up]
addrs = ["127.0.0.1:9"]

[locations.lo]
upstream = "up"
plugins = ["p"]

[plugins.p]
{options}

[servers.web]
addr = "127.0.0.1:6188"
locations = ["lo"]
"""


@pytest.mark.parametrize("category", sorted(FEATURES))
def test_building_a_plugin_loads_its_library(tmp_path: Path, category: str) -> None:
    """The library comes with the plugin's build (so ``pingap -t`` fails on a broken
    install), not later with its first request."""
    options, libraries = FEATURES[category]
    conf = tmp_path / "pingap.toml"
    conf.write_text(CONFIG.format(options=options))
    found = loaded_after(f"""
        from pingap.runtime import load_runtime
        runtime = load_runtime({str(conf)!r})
        assert runtime.locations["lo"].plugins, "the plugin was not built"
    """)
    assert libraries <= found
    assert found & HEAVY == libraries  # and nothing another feature needs


def test_a_missing_library_is_a_config_error_of_its_plugin(tmp_path: Path) -> None:
    """What ``pingap -t`` reports on an install without Pillow: the plugin that needs it,
    at load, not a traceback and not a failure at the first image."""
    conf = tmp_path / "pingap.toml"
    conf.write_text(CONFIG.format(options=FEATURES["image_optim"][0]))
    output = run_python(f"""
        import sys
        sys.modules["PIL"] = None  # as if Pillow were not installed
        from pingap.errors import ConfigError
        from pingap.runtime import load_runtime
        try:
            load_runtime({str(conf)!r})
        except ConfigError as exc:
            print(exc)
        else:
            raise SystemExit("the config loaded without Pillow")
    """)
    assert f"{conf}: plugins.p: a library this plugin needs is missing" in output


def test_an_hcl_config_loads_the_hcl_reader(tmp_path: Path) -> None:
    conf = tmp_path / "pingap.hcl"
    conf.write_text('upstream "up" {\n  addrs = ["127.0.0.1:9"]\n}\n')
    found = loaded_after(f"""
        from pingap.config import load_config
        load_config({str(conf)!r})
    """)
    assert {"hcl2", "lark"} <= found
    assert not {"kdl", "ckdl"} & found


@pytest.mark.parametrize("with_facts", [True, False], ids=["master's facts", "no facts"])
def test_a_worker_serving_certificates_loads_cryptography_only_without_facts(
        tmp_path: Path, with_facts: bool) -> None:
    """The master parses the certificates (``cryptography``, ~10 MB) and hands its workers
    the facts (``--certificates``); a worker given none parses them itself."""
    pems = make_certificates(tmp_path)
    conf = tmp_path / "pingap.toml"
    conf.write_text(f'[certificates.site]\ntls_cert = "{pems["cert"]}"\n'
                    f'tls_key = "{pems["key"]}"\nis_default = true\n'
                    + CONFIG.format(options='category = "ping"\npath = "/ping"'))
    facts = tmp_path / "facts.json"
    facts.write_text(dump_facts(load_runtime(str(conf)).certificates))
    found = loaded_after(f"""
        from gevent import monkey
        monkey.patch_all()
        from pingap.config import load_config
        from workers.worker import build_runtime, certificate_facts
        runtime = build_runtime(load_config({str(conf)!r}),
                                certificate_facts({str(facts) if with_facts else None!r}))
        assert runtime.certificates.select("localhost").names == ("localhost",)
    """)
    assert ("cryptography" in found) is not with_facts
    assert found & HEAVY - {"cryptography"} == set()


@pytest.mark.parametrize("serves_files", [True, False], ids=["directory", "proxy-only"])
def test_a_worker_reads_the_mime_tables_at_boot_only_when_it_serves_files(
        tmp_path: Path, serves_files: bool) -> None:
    """``mimetypes`` reads /etc/mime.types and seven other paths (~13 ms) at its first
    lookup: a worker with a ``directory`` location does that at boot, not inside its first
    file request; a worker without one never does."""
    plugin = ('[plugins.files]\ncategory = "directory"\npath = "/tmp"\n'
              if serves_files else "")
    plugins = '["files"]' if serves_files else "[]"
    config = tmp_path / "pingap.toml"
    config.write_text(f'[upstreams.up]\naddrs = ["127.0.0.1:9"]\n{plugin}'
                      f'[locations.all]\nupstream = "up"\nplugins = {plugins}\n'
                      '[servers.web]\naddr = "127.0.0.1:8080"\nlocations = ["all"]\n')
    output = run_python(f"""
        from gevent import monkey
        monkey.patch_all()
        import mimetypes
        from pingap.runtime import load_runtime
        from workers.worker import load_file_types
        needed = load_file_types(load_runtime({str(config)!r}))
        print(needed, mimetypes.inited)
    """)
    assert output.split() == [str(serves_files), str(serves_files)]
