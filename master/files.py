"""The master's files: pid file, status file (read by ``pingapctl``), daemonising."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from pingap.system.files import write_atomic


def default_pid_file() -> str:
    """pingap's default: /run, else /var/run if writable, else /tmp."""
    for directory in ("/run", "/var/run"):
        if os.access(directory, os.W_OK):
            return os.path.join(directory, "pingap.pid")
    return "/tmp/pingap.pid"


def status_path(pid_file: str) -> str:
    return pid_file + ".status"


def write_pid_file(path: str) -> None:
    write_atomic(path, f"{os.getpid()}\n")


def read_pid_file(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


def remove_pid_file(path: str) -> None:
    """Remove ``path`` only if it still names this process (an upgrade may own it now)."""
    if read_pid_file(path) == os.getpid():
        try:
            os.unlink(path)
        except OSError:
            pass


def write_status(pid_file: str, status: dict[str, Any]) -> None:
    write_atomic(status_path(pid_file), json.dumps(status, indent=1, sort_keys=True))


def read_status(pid_file: str) -> dict[str, Any] | None:
    try:
        with open(status_path(pid_file)) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def daemonize(error_log: str | None) -> int:
    """Detach (double fork, setsid). Returns the write end of a pipe in the daemon: write
    ``b"ok"`` once ready or an error text; the original process waits on it and exits 0/1.
    """
    rfd, wfd = os.pipe()
    if os.fork() > 0:  # the original process: report the daemon's outcome
        os.close(wfd)
        with os.fdopen(rfd, "rb") as pipe:
            message = pipe.read()
        if message.startswith(b"ok"):
            os._exit(0)
        sys.stderr.write(message.decode(errors="replace") or "pingap: daemon failed to start\n")
        os._exit(1)
    os.close(rfd)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    os.umask(0o022)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    target = devnull
    if error_log:
        target = os.open(error_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(target, 1)
    os.dup2(target, 2)
    return wfd
