"""``pingapctl``: control a running pingap and wait for the outcome.

Finds the master through its pid file (``basic.pid_file`` of ``-c CONF``, or
``--pid-file``), sends the signal, then watches the status file the master keeps beside
the pid file until the result is known. Exits 0 on success, 1 with the reason otherwise.

    reload   SIGHUP; waits for the new generation (or prints the config problems)
    reopen   SIGUSR1; log files reopened
    stop     SIGTERM; waits for the master to exit (graceful: in-flight requests finish)
    quit     SIGQUIT; hand the sockets to a `pingap -u` (or stop gracefully), wait for exit
    upgrade  SIGUSR2; waits until a new master serves and the old one has exited
    status   master pid, workers, generation, uptime, config digest, last reload
    test     validate the config (like ``pingap -t``)
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from typing import Any

import psutil

from master import files
from master.cli import check_config, load_plugins, normalize_conf, print_problems


def pid_alive(pid: int) -> bool:
    """True for a live process; a zombie (exited, not yet reaped) counts as gone."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def find_pid_file(args: argparse.Namespace) -> str:
    if args.pid_file:
        return str(args.pid_file)
    if args.conf:
        from pingap.config import load_config
        config = load_config(normalize_conf(args.conf))
        return config.basic.pid_file or files.default_pid_file()
    return files.default_pid_file()


def wait(condition: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    return None


def format_status(status: dict[str, Any]) -> str:
    uptime = time.time() - status.get("started", time.time())
    lines = [
        f"master pid:  {status['pid']}",
        f"uptime:      {uptime:.0f}s",
        f"generation:  {status['generation']}",
        f"config:      {status['config']}",
        f"digest:      {status['digest'][:16]}",
        f"listeners:   {', '.join(status.get('listeners', []))}",
    ]
    last = status.get("last_reload") or {}
    if last:
        outcome = "ok" if last.get("ok") else "FAILED"
        lines.append(f"last reload: {outcome} ({last.get('reason')}, "
                     f"{time.time() - last.get('at', time.time()):.0f}s ago)")
        lines += [f"  {p}" for p in last.get("problems", [])]
    lines.append("workers:")
    for w in status.get("workers", []):
        lines.append(f"  pid {w['pid']:>7}  gen {w['generation']:>3}  {w['state']:<9} "
                     f"connections {w['connections']:>5}  accepted {w['accepted']:>8}  "
                     f"requests {w['requests']:>9}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pingapctl", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["reload", "reopen", "stop", "quit", "upgrade",
                                            "status", "test"])
    parser.add_argument("-c", "--conf", default=os.environ.get("PINGAP_CONF"))
    parser.add_argument("--pid-file", default=None)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    load_plugins()

    if args.command == "test":
        if not args.conf:
            print("pingapctl: test needs -c CONF", file=sys.stderr)
            return 1
        config, problems, _ = check_config(normalize_conf(args.conf))
        if config is None:
            print_problems(args.conf, problems)
            return 1
        print(f"pingapctl: configuration {args.conf} is valid")
        return 0

    try:
        pid_file = find_pid_file(args)
    except Exception as exc:
        print(f"pingapctl: cannot find the pid file: {exc}", file=sys.stderr)
        return 1
    pid = files.read_pid_file(pid_file)
    if pid is None or not pid_alive(pid):
        print(f"pingapctl: no running pingap (pid file {pid_file})", file=sys.stderr)
        return 1
    status = files.read_status(pid_file) or {}

    if args.command == "status":
        if not status or status.get("pid") != pid:
            print(f"pingapctl: pingap {pid} is running but wrote no status", file=sys.stderr)
            return 1
        print(format_status(status))
        return 0

    if args.command == "reopen":
        os.kill(pid, signal.SIGUSR1)
        print(f"pingapctl: asked pingap {pid} to reopen its log files")
        return 0

    if args.command == "reload":
        before = (status.get("last_reload") or {}).get("seq", 0)
        if args.conf:
            config, problems, _ = check_config(normalize_conf(args.conf))
            if config is None:
                print_problems(args.conf, problems)
                print("pingapctl: not reloaded; the running config keeps serving",
                      file=sys.stderr)
                return 1
        os.kill(pid, signal.SIGHUP)

        def done() -> dict[str, Any] | None:
            current = files.read_status(pid_file) or {}
            last = current.get("last_reload") or {}
            return last if last.get("seq", 0) > before and current.get("pid") == pid else None
        last = wait(done, args.timeout)
        if last is None:
            print("pingapctl: reload did not finish in time", file=sys.stderr)
            return 1
        if not last.get("ok"):
            print("pingapctl: reload failed; the running config keeps serving:",
                  file=sys.stderr)
            for problem in last.get("problems", []):
                print(f"  {problem}", file=sys.stderr)
            return 1
        print(f"pingapctl: reloaded (generation {last.get('generation')})")
        return 0

    if args.command in ("stop", "quit"):
        os.kill(pid, signal.SIGTERM if args.command == "stop" else signal.SIGQUIT)
        if wait(lambda: not pid_alive(pid), args.timeout) is None:
            print(f"pingapctl: pingap {pid} still running after {args.timeout:.0f}s",
                  file=sys.stderr)
            return 1
        print(f"pingapctl: pingap {pid} stopped")
        return 0

    # upgrade
    os.kill(pid, signal.SIGUSR2)

    def upgraded() -> str | None:
        new_pid = files.read_pid_file(pid_file)
        if new_pid and new_pid != pid and pid_alive(new_pid) and not pid_alive(pid):
            return "ok"
        current = files.read_status(pid_file) or {}
        if current.get("pid") == pid and current.get("upgrade_failed"):
            return "failed"
        return None
    outcome = wait(upgraded, args.timeout)
    if outcome != "ok":
        print("pingapctl: upgrade failed; the old master keeps serving" if outcome
              else "pingapctl: upgrade did not finish in time", file=sys.stderr)
        return 1
    print(f"pingapctl: upgraded: pingap {files.read_pid_file(pid_file)} replaced {pid}")
    return 0
