"""``pingap -t``: every problem with file and key, exit codes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def run_test(conf: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["pingap", "-t", "-c", str(conf)], capture_output=True,
                          text=True, timeout=60)


def test_three_mistakes_in_two_files_are_all_reported(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "servers.toml").write_text(
        '[servers.web]\naddr = "127.0.0.1:16000"\nlocations = ["lo"]\n')
    (conf / "locations.toml").write_text(
        '[locations.lo]\nupstrem = "charts"\npath = "/"\n'          # typo
        '[locations.two]\nupstream = "missing"\n')                   # unknown upstream
    (conf / "upstreams.toml").write_text(
        '[upstreams.charts]\naddrs = ["127.0.0.1:5000"]\nread_timeout = "10x"\n')  # bad dur
    result = run_test(conf)
    assert result.returncode == 1, result.stdout + result.stderr
    err = result.stderr
    lines = [line.strip() for line in err.splitlines() if line.startswith("  ")]
    assert len(lines) == 3, err
    loc_file = str(conf / "locations.toml")
    up_file = str(conf / "upstreams.toml")
    assert any(loc_file in line and "locations.lo.upstrem" in line and "did you mean 'upstream'"
               in line for line in lines), err
    assert any(loc_file in line and "locations.two.upstream" in line and "missing" in line
               for line in lines), err
    assert any(up_file in line and "upstreams.charts.read_timeout" in line
               for line in lines), err


def test_valid_config_exits_zero(tmp_path: Path) -> None:
    conf = tmp_path / "pingap.toml"
    conf.write_text('[upstreams.u]\naddrs = ["127.0.0.1:5000"]\n'
                    '[locations.l]\nupstream = "u"\n'
                    '[servers.s]\naddr = "127.0.0.1:16001"\nlocations = ["l"]\n')
    result = run_test(conf)
    assert result.returncode == 0, result.stderr
    assert "is valid" in result.stdout


def test_unknown_header_variable_is_an_error(tmp_path: Path) -> None:
    conf = tmp_path / "pingap.toml"
    conf.write_text('[upstreams.u]\naddrs = ["127.0.0.1:5000"]\n'
                    '[locations.l]\nupstream = "u"\n'
                    'proxy_set_headers = ["X-Id:$no_such_variable_here"]\n'
                    '[servers.s]\naddr = "127.0.0.1:16002"\nlocations = ["l"]\n')
    result = run_test(conf)
    assert result.returncode == 1
    assert "locations.l.proxy_set_headers[0]" in result.stderr
    assert "no_such_variable_here" in result.stderr


def test_both_check_phases_report_in_one_run(tmp_path: Path) -> None:
    """A loader problem (unknown key) does not hide what only compiling finds (a plugin's
    own check, a certificate file, the built-in pingap:admin without --admin): one run
    lists all."""
    conf = tmp_path / "pingap.toml"
    conf.write_text(
        '[upstreams.u]\naddrs = ["127.0.0.1:5000"]\nalgo = "least_conn"\n'
        '[locations.l]\nupstream = "u"\nupstrem = "x"\nplugins = ["m", "pingap:admin"]\n'
        '[plugins.m]\ncategory = "mock"\nstatus = 100\n'
        f'[certificates.c]\ntls_cert = "{tmp_path}/missing.pem"\n'
        f'tls_key = "{tmp_path}/missing.key"\n'
        '[servers.s]\naddr = "127.0.0.1:16004"\nlocations = ["l"]\n')
    result = run_test(conf)
    assert result.returncode == 1
    lines = [line.strip() for line in result.stderr.splitlines() if line.startswith("  ")]
    keys = {line.split(": ")[1] for line in lines}
    assert {"locations.l.upstrem", "upstreams.u.algo", "plugins.m",
            "locations.l.plugins[1]"} <= keys, result.stderr
    assert any(key.startswith("certificates.c") for key in keys), result.stderr
    assert len(lines) == len(keys), result.stderr  # each problem once
    admin = next(line for line in lines if "locations.l.plugins[1]" in line)
    assert "'pingap:admin' exists only with --admin" in admin
    assert "not defined" not in result.stderr


def test_config_path_expands_home(tmp_path: Path) -> None:
    """``-c ~/…``, ``-c=~/…`` (pingap's docs) and ``PINGAP_CONF=~/…``."""
    (tmp_path / "pingap.toml").write_text(
        '[upstreams.u]\naddrs = ["127.0.0.1:5000"]\n[locations.l]\nupstream = "u"\n'
        '[servers.s]\naddr = "127.0.0.1:16005"\nlocations = ["l"]\n')
    env = {**os.environ, "HOME": str(tmp_path)}
    env.pop("PINGAP_CONF", None)
    for args, extra in ((["-c", "~/pingap.toml"], {}), (["-c=~/pingap.toml"], {}),
                        ([], {"PINGAP_CONF": "~/pingap.toml"})):
        result = subprocess.run(["pingap", "-t", *args], capture_output=True, text=True,
                                timeout=60, env={**env, **extra})
        assert result.returncode == 0, (args, extra, result.stderr)
        assert "is valid" in result.stdout
