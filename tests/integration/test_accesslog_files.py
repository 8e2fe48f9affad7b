"""Access-log files through the real binary: ``?rolling=`` names the files as pingap does,
and logrotate + USR1 (``pingapctl reopen``) still work with a rolling file."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

from tests.support.client import request
from tests.support.configs import proxy_config
from tests.support.proc import free_port, wait_for

MINUTELY = re.compile(r"access\.log\.\d{4}-\d\d-\d\d-\d\d-\d\d")


def logged(directory: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(directory.iterdir()) if p.is_file()}


def test_minutely_rolling_names_and_reopen(tmp_path: Path, backends, pingap) -> None:
    backend = backends()
    port = free_port()
    logs = tmp_path / "logs"
    directive = f"{logs}/access.log?rolling=minutely&flush_timeout=200ms {{method}} {{uri}}"
    proc = pingap(proxy_config(port, backend.addr, basic="threads = 1",
                               server=f'access_log = "{directive}"'),
                  port=port)
    before = time.gmtime()
    assert request(port, path="/one").status == 200
    after = time.gmtime()
    files = wait_for(lambda: logs.exists() and "GET /one\n" in "".join(logged(logs).values())
                     and logged(logs), what="the first access line")
    assert all(MINUTELY.fullmatch(name) for name in files), files
    minutes = {time.strftime("access.log.%Y-%m-%d-%H-%M", t) for t in (before, after)}
    (name,) = [n for n, text in files.items() if "GET /one\n" in text]
    assert name in minutes  # the UTC minute of the request, as tracing-appender names it
    # logrotate moves the file away; USR1 makes every worker reopen the current name
    (logs / name).rename(tmp_path / "rotated.log")
    os.kill(proc.pid, signal.SIGUSR1)
    wait_for(lambda: "SIGUSR1: reopening" in proc.log(), what="the reopen")
    wait_for(lambda: request(port, path="/two").status == 200 and any(
        "GET /two\n" in text for text in logged(logs).values()), timeout=15,
        what="a line in a reopened file")
    # reopened: from now on nothing goes to the rotated file
    assert request(port, path="/three").status == 200
    wait_for(lambda: any("GET /three\n" in text for text in logged(logs).values()),
             what="the next line in the reopened file")
    assert "GET /three" not in (tmp_path / "rotated.log").read_text()
    assert all(MINUTELY.fullmatch(n) for n in logged(logs)), logged(logs)
