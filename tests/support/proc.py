"""Start real processes for the integration tests and wait on conditions, never on sleeps."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[2]


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on, and never one this process handed out before:
    the kernel can give the same free port to two picks in a row (pebble and its DNS
    server once both got 59005 and one failed to listen)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
             what: str = "condition") -> Any:
    """Poll ``condition`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class Process:
    """A child process in its own process group, stopped (and reaped) on ``stop``."""

    def __init__(self, cmd: list[str], *, log: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.cmd = cmd
        self.log_path = log
        self._log = open(log, "ab")
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=full_env, cwd=cwd or ROOT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # stragglers of the group
        except (ProcessLookupError, PermissionError):
            pass
        self._log.close()
        return self.proc.returncode


class Origin(Process):
    """tests/support/content_backend.py on a free port, recording its requests."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.record = tmp / f"origin-{self.port}.jsonl"
        self.record.touch()
        super().__init__([sys.executable, "-m", "tests.support.content_backend", "--port",
                          str(self.port), "--record", str(self.record)],
                         log=tmp / f"origin-{self.port}.log")
        wait_for(lambda: port_open(self.port), what="content origin")

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def requests(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.record.read_text().splitlines() if line]


def hits(origin: Origin, path: str) -> int:
    """How many requests for ``path`` reached ``origin``."""
    return sum(1 for r in origin.requests() if r["path"] == path)


class BackendProcess(Process):
    """tests/support/backend.py on a free port, recording what it receives."""

    def __init__(self, tmp: Path, name: str = "backend", port: int | None = None) -> None:
        self.name = name
        self.port = port or free_port()
        self.record = tmp / f"{name}-{self.port}.jsonl"
        self.record.touch()
        super().__init__([sys.executable, "-m", "tests.support.backend", "--port",
                          str(self.port), "--name", name, "--record", str(self.record)],
                         log=tmp / f"{name}-{self.port}.log")
        wait_for(lambda: port_open(self.port), what=f"backend {name} on {self.port}")

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def requests(self) -> list[dict[str, Any]]:
        text = self.record.read_text()
        # the backend may be halfway through writing the last line: complete lines only
        return [json.loads(line) for line in text.split("\n")[:-1] if line.strip()]


class PingapProcess(Process):
    """The real ``pingap`` command on a config, ready once ``port`` accepts."""

    def __init__(self, config: Path | str, port: int, tmp: Path, args: list[str] | None = None,
                 env: dict[str, str] | None = None, ready: bool = True) -> None:
        self.port = port
        self.config = config
        super().__init__(["pingap", "-c", str(config), *(args or [])],
                         log=tmp / f"pingap-{port}.log", env=env)
        if ready:
            wait_for(lambda: port_open(port) or self.proc.poll() is not None,
                     what=f"pingap on {port}")
            if self.proc.poll() is not None:
                raise AssertionError(f"pingap exited {self.proc.returncode}:\n{self.log()}")

    def worker_pids(self) -> list[int]:
        """Workers that accept connections (not the booted spare). A child the master
        has forked but not yet exec'd still shows the master's command line: only
        ``python -m workers`` ones count."""
        pids = []
        try:
            children = psutil.Process(self.pid).children()
        except psutil.Error:
            return []
        for child in children:
            try:
                cmdline = child.cmdline()
            except psutil.Error:
                continue
            if "workers" in cmdline and "--standby" not in cmdline:
                pids.append(child.pid)
        return pids


class AuthServerProcess(Process):
    """tests/support/auth_server.py on a free port, recording what it receives."""

    def __init__(self, tmp: Path, jwks: Path | None = None) -> None:
        self.port = free_port()
        self.record = tmp / f"auth-{self.port}.jsonl"
        self.record.touch()
        cmd = [sys.executable, "-m", "tests.support.auth_server", "--port", str(self.port),
               "--record", str(self.record)]
        if jwks is not None:
            cmd += ["--jwks", str(jwks)]
        super().__init__(cmd, log=tmp / f"auth-{self.port}.log")
        wait_for(lambda: port_open(self.port), what=f"auth server on {self.port}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self) -> list[dict[str, Any]]:
        text = self.record.read_text()
        return [json.loads(line) for line in text.split("\n")[:-1] if line.strip()]
